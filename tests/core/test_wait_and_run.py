"""Elapsed time split into the queue wait and the run: the rules, driven with explicit times."""

from __future__ import annotations

import pytest

from docstatus.records import Mutation, Record, iso, new_record, status_json, to_model

T0 = 1_700_000_000.0


def _queued() -> Record:
    return new_record("d" * 64, "scan.pdf", {"format": "pdf"}, T0)


def _claimed(at: float) -> Record:
    return Mutation("claim", at, fields={"worker": "host:1", "seconds": 30.0})(_queued())


def test_a_queued_document_is_all_wait_and_no_run() -> None:
    body = status_json(_queued(), T0 + 4.0)
    assert body["processing_started_at"] is None
    assert (body["elapsed_time"], body["wait_time"], body["run_time"]) == (4.0, 4.0, None)


def test_the_claim_ends_the_wait_and_starts_the_run() -> None:
    record = _claimed(T0 + 3.0)
    at_claim = status_json(record)
    assert at_claim["processing_started_at"] == at_claim["updated_at"] == "2023-11-14T22:13:23Z"
    assert at_claim["started_at"] == "2023-11-14T22:13:20Z"  # started_at keeps the queue time
    assert (at_claim["wait_time"], at_claim["run_time"]) == (3.0, 0.0)
    later = status_json(record, T0 + 5.5)
    assert (later["elapsed_time"], later["wait_time"], later["run_time"]) == (5.5, 3.0, 2.5)
    model = to_model(record, T0 + 5.5)
    assert (model.wait_time, model.run_time) == (3.0, 2.5)
    assert model.processing_started_at is not None and model.processing_started_at.timestamp() == T0 + 3.0


def test_a_plain_update_out_of_the_queue_starts_processing_too() -> None:
    record = Mutation("update", T0 + 2.0, "parsing")(_queued())
    record = Mutation("update", T0 + 6.0, "embedding_visual", None, {"page": 1, "total_pages": 4})(record)
    assert (record["wait_time"], record["run_time"]) == (2.0, 4.0)
    assert record["processing_started_at"] == iso(T0 + 2.0)


def test_finished_times_are_frozen() -> None:
    done = Mutation("complete", T0 + 10.0)(_claimed(T0 + 3.0))
    for now in (T0 + 10.0, T0 + 99.0):
        body = status_json(done, now)
        assert (body["elapsed_time"], body["wait_time"], body["run_time"]) == (10.0, 3.0, 7.0)


def test_failing_in_the_queue_never_ran() -> None:
    failed = Mutation("fail", T0 + 4.0, fields={"error": "cancelled"})(_queued())
    body = status_json(failed, T0 + 50.0)
    assert (body["processing_started_at"], body["wait_time"], body["run_time"]) == (None, 4.0, None)


def test_completing_straight_from_the_queue_ran_for_no_time() -> None:
    done = Mutation("complete", T0 + 4.0)(_queued())
    body = status_json(done)
    assert body["processing_started_at"] == body["completed_at"]
    assert (body["wait_time"], body["run_time"]) == (4.0, 0.0)


def test_a_requeued_attempt_waits_again() -> None:
    failed = Mutation("fail", T0 + 9.0, fields={"error": "boom"})(_claimed(T0 + 3.0))
    again = Mutation("requeue", T0 + 20.0)(failed)
    body = status_json(again, T0 + 21.0)
    assert (body["processing_started_at"], body["wait_time"], body["run_time"]) == (None, 1.0, None)
    restarted = status_json(Mutation("claim", T0 + 25.0, fields={"worker": "h:2", "seconds": 30.0})(again))
    assert (restarted["wait_time"], restarted["run_time"]) == (5.0, 0.0)


def test_a_record_stored_before_the_split_still_reads() -> None:
    record = _claimed(T0 + 3.0)
    for name in ("processing_started_at", "wait_time", "run_time"):
        del record[name]
    body = status_json(record, T0 + 5.0)
    assert body["elapsed_time"] == 5.0 and body["run_time"] is None
    updated = Mutation("update", T0 + 6.0, "embedding_text", None, {"chunk": 1, "total_chunks": 2})(record)
    assert status_json(updated)["elapsed_time"] == pytest.approx(6.0)


def test_wait_and_run_are_the_managers_own() -> None:
    from docstatus import StatusManager

    manager = StatusManager(cleanup_interval_seconds=None)
    manager.create_status("x", "x.pdf", {})
    for name in ("processing_started_at", "wait_time", "run_time"):
        with pytest.raises(TypeError, match=name):
            manager.update_status("x", "parsing", **{name: 1.0})
