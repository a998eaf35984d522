"""Cancel over every store: an active document fails with "cancelled" and its lease holder is fenced off."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from docstatus import DocumentNotFoundError, InvalidTransitionError, Status, StatusManager
from docstatus.errors import LeaseLostError
from docstatus.manager import Lease
from docstatus.records import copy_json
from helpers import wait_until

ACTIVE_STAGES = ["parsing", "embedding_visual", "embedding_text", "storing"]


def _held(manager: StatusManager, stage: str, doc_id: str = "doc") -> Lease:
    """A document claimed for real and moved on to ``stage`` through its lease."""
    manager.create_status(doc_id, f"{doc_id}.pdf")
    lease = manager.claim(doc_id, worker="host:7", seconds=30)
    assert lease is not None
    if stage in ("embedding_visual", "embedding_text", "storing"):
        lease.update_status("embedding_visual", page=1, total_pages=4)
    if stage in ("embedding_text", "storing"):
        lease.update_status("embedding_text", chunk=1, total_chunks=3)
    if stage == "storing":
        lease.update_status("storing")
    return lease


def _stored(manager: StatusManager, doc_id: str = "doc") -> Any:
    return copy_json(manager.store.get(doc_id))


def test_a_queued_document_is_simply_failed(manager: StatusManager) -> None:
    seen: list[Any] = []
    manager.subscribe(seen.append)
    manager.create_status("doc", "doc.pdf")
    manager.cancel("doc")
    status = manager.require_status("doc")
    assert status.status is Status.FAILED and status.error == "cancelled"
    assert status.completed_at is not None and status.estimated_remaining is None
    # Delivery may be on the shared store's watcher thread when it was pumping at that moment.
    wait_until(lambda: len(seen) >= 2, 10)
    assert [(e["type"], e["status"]["status"]) for e in seen] == [
        ("created", "queued"),
        ("updated", "failed"),
    ]
    assert manager.claim("doc") is None


@pytest.mark.parametrize("stage", ACTIVE_STAGES)
def test_a_held_document_fails_and_its_holder_is_refused(manager: StatusManager, stage: str) -> None:
    lease = _held(manager, stage)
    progress = manager.require_status("doc").progress
    manager.cancel("doc")
    status = manager.require_status("doc")
    assert (status.status, status.error, status.progress) == (Status.FAILED, "cancelled", progress)
    assert manager.leases() == []
    before, seq = _stored(manager), manager.last_seq
    writes: list[Callable[[], None]] = [
        lambda: lease.update_status(stage, progress=0.99),
        lambda: lease.update_status("storing"),
        lambda: lease.mark_completed(pages=4),
        lambda: lease.mark_failed("the worker's own error"),
        lease.renew,
    ]
    for write in writes:
        with pytest.raises(LeaseLostError):
            write()
    assert _stored(manager) == before and manager.last_seq == seq
    assert manager.expire_leases() == []


def test_a_cancelled_document_can_be_retried_under_a_new_lease(manager: StatusManager) -> None:
    old = _held(manager, "embedding_visual")
    manager.cancel("doc")
    manager.requeue("doc")
    status = manager.require_status("doc")
    assert status.status is Status.QUEUED and status.error is None and status.metadata["attempt"] == 2
    new = manager.claim("doc", worker="host:8", seconds=30)
    assert new is not None and new.epoch == old.epoch + 1
    with pytest.raises(LeaseLostError):
        old.update_status("parsing", progress=0.05)
    new.mark_completed()
    assert manager.require_status("doc").status is Status.COMPLETED


@pytest.mark.parametrize("finish", ["complete", "fail", "cancel"])
def test_a_finished_document_is_refused_and_unchanged(manager: StatusManager, finish: str) -> None:
    manager.create_status("doc", "doc.pdf")
    if finish == "complete":
        manager.mark_completed("doc")
    elif finish == "fail":
        manager.mark_failed("doc", "broken")
    else:
        manager.cancel("doc")
    before, seq = _stored(manager), manager.last_seq
    with pytest.raises(InvalidTransitionError) as info:
        manager.cancel("doc")
    assert "already finished" in str(info.value)
    assert info.value.current == before["status"]
    assert _stored(manager) == before and manager.last_seq == seq


def test_an_unknown_document_is_not_found(manager: StatusManager) -> None:
    with pytest.raises(DocumentNotFoundError):
        manager.cancel("missing")
    assert manager.last_seq == 0


@pytest.fixture(params=["sqlite", "redis"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'status.db'}"
    return str(request.getfixturevalue("redis_url"))


def test_a_cancel_through_another_store_object_fences_the_holder(shared_url: str) -> None:
    # The holder's store knows the record from its own writes (Redis caches it): the cancel made
    # elsewhere must still refuse its next write.
    with (
        StatusManager(store=shared_url, cleanup_interval_seconds=None, progress_interval=0) as worker,
        StatusManager(store=shared_url, cleanup_interval_seconds=None) as api,
    ):
        lease = _held(worker, "embedding_visual")
        api.cancel("doc")
        with pytest.raises(LeaseLostError):
            lease.update_status("embedding_visual", page=2, total_pages=4)
        status = worker.require_status("doc")
        assert (status.status, status.error, status.page) == (Status.FAILED, "cancelled", 1)
