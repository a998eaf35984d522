"""The lease rules in docstatus.records, as pure functions of a record."""

from __future__ import annotations

import pytest

from docstatus import InvalidTransitionError
from docstatus.errors import LeaseLostError
from docstatus.records import CANCELLED, Mutation, lease_of, new_record, status_json


def _claimed(epoch_before: int | None = None) -> dict[str, object]:
    record = new_record("doc", "doc.pdf", {}, 1000.0)
    if epoch_before is not None:
        record["_lease"] = {"epoch": epoch_before, "worker": None, "seconds": 5.0}
    return Mutation("claim", 1001.0, fields={"worker": "w", "seconds": 5.0})(record)


def test_a_claim_starts_parsing_like_update_status() -> None:
    record = new_record("doc", "doc.pdf", {}, 1000.0)
    claimed = _claimed()
    plain = Mutation("update", 1001.0, "parsing")(record)
    assert {k: v for k, v in claimed.items() if k not in ("_lease", "metadata")} == {
        k: v for k, v in plain.items() if k != "metadata"
    }
    assert claimed["metadata"] == {"worker": "w"}
    assert lease_of(claimed) == (1, "w", 5.0)
    assert "_lease" not in status_json(claimed)


def test_the_epoch_grows_across_releases() -> None:
    assert lease_of(_claimed(epoch_before=4)) == (5, "w", 5.0)


def test_only_a_queued_document_is_claimed() -> None:
    with pytest.raises(InvalidTransitionError):
        Mutation("claim", 1002.0, fields={"worker": "x", "seconds": 5.0})(_claimed())


def test_a_write_with_another_epoch_is_refused() -> None:
    claimed = _claimed()
    with pytest.raises(LeaseLostError) as info:
        Mutation("update", 1002.0, "parsing", 0.05, epoch=2)(claimed)
    assert (info.value.doc_id, info.value.epoch) == ("doc", 2)
    assert Mutation("update", 1002.0, "parsing", 0.15, epoch=1)(claimed)["progress"] == 0.15


def test_finishing_releases_and_keeps_the_epoch() -> None:
    done = Mutation("complete", 1002.0, epoch=1)(_claimed())
    assert lease_of(done) is None and done["_lease"]["epoch"] == 1
    failed = Mutation("fail", 1002.0, fields={"error": "cancelled"})(_claimed())
    assert lease_of(failed) is None
    requeued = Mutation("requeue", 1003.0)(failed)
    assert lease_of(requeued) is None and requeued["_lease"]["epoch"] == 1


def test_a_lost_lease_requeues_then_fails() -> None:
    lost = Mutation("lease_lost", 1002.0, fields={"max_attempts": 2}, epoch=1)
    requeued = lost(_claimed())
    assert requeued["status"] == "queued" and requeued["metadata"]["attempt"] == 2
    assert "worker" not in requeued["metadata"] and "w" in requeued["metadata"]["recovery"]
    again = Mutation("claim", 1003.0, fields={"worker": "v", "seconds": 5.0})(requeued)
    failed = Mutation("lease_lost", 1004.0, fields={"max_attempts": 2}, epoch=2)(again)
    assert failed["status"] == "failed" and "gave up after 2 attempts" in failed["error"]
    with pytest.raises(LeaseLostError):
        lost(requeued)


@pytest.mark.parametrize("status", ["queued", "parsing", "embedding_visual", "embedding_text", "storing"])
def test_a_cancel_fails_an_active_document_and_releases_it(status: str) -> None:
    record = new_record("doc", "doc.pdf", {}, 1000.0) if status == "queued" else _claimed()
    stages = ["embedding_visual", "embedding_text", "storing"]
    for stage in stages[: stages.index(status) + 1] if status in stages else []:
        record = Mutation("update", 1002.0, stage)(record)
    cancelled = Mutation("cancel", 1003.0)(record)
    assert cancelled["status"] == "failed" and cancelled["error"] == CANCELLED == "cancelled"
    assert cancelled["progress"] == record["progress"] and cancelled["completed_at"] is not None
    assert lease_of(cancelled) is None
    with pytest.raises(LeaseLostError):
        Mutation("update", 1004.0, status if status != "queued" else "parsing", epoch=1)(cancelled)


@pytest.mark.parametrize("kind", ["complete", "fail"])
def test_a_finished_document_cannot_be_cancelled(kind: str) -> None:
    fields = {"error": "broken"} if kind == "fail" else {}
    finished = Mutation(kind, 1002.0, fields=fields)(_claimed())  # type: ignore[arg-type]
    with pytest.raises(InvalidTransitionError) as info:
        Mutation("cancel", 1003.0)(finished)
    assert info.value.current == finished["status"] and info.value.target == "failed"
    assert "already finished" in str(info.value)
