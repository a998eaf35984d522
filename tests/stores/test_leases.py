"""Leases in the store contract, over every store: claim, fencing, renewal, expiry."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from docstatus import DocumentNotFoundError, Status, StatusManager
from docstatus.errors import LeaseLostError
from docstatus.manager import Lease
from docstatus.models import DEFAULT_STAGE
from docstatus.records import Mutation, copy_json

_spawn = multiprocessing.get_context("spawn")

SHORT = 0.3


def _wait_expired(manager: StatusManager, doc_id: str, deadline: float = 10.0) -> None:
    """Poll until the store lists ``doc_id``'s lease as expired."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if any(d == doc_id for d, _ in manager._store.expired_leases(100)):
            return
        time.sleep(0.02)
    raise AssertionError(f"the lease of {doc_id!r} never expired")


def _claimed(manager: StatusManager, doc_id: str = "doc", seconds: float = SHORT) -> Lease:
    manager.create_status(doc_id, f"{doc_id}.pdf")
    lease = manager.claim(doc_id, worker="host:1", seconds=seconds)
    assert lease is not None
    return lease


def _expire(manager: StatusManager, doc_id: str = "doc", **kw: Any) -> list[str]:
    _wait_expired(manager, doc_id)
    return manager.expire_leases(**kw)


def test_claim_moves_to_parsing_with_a_first_epoch(manager: StatusManager) -> None:
    lease = _claimed(manager)
    status = manager.get_status("doc")
    assert status is not None and status.status is Status.PARSING
    assert status.stage == DEFAULT_STAGE[Status.PARSING]
    assert status.metadata["worker"] == "host:1"
    assert (lease.doc_id, lease.epoch, lease.worker) == ("doc", 1, "host:1")
    assert [(e.doc_id, e.epoch, e.worker) for e in manager.leases()] == [("doc", 1, "host:1")]


def test_the_default_worker_is_host_and_pid(manager: StatusManager) -> None:
    import os
    import socket

    manager.create_status("doc", "doc.pdf")
    lease = manager.claim("doc")
    assert lease is not None and lease.worker == f"{socket.gethostname()}:{os.getpid()}"


def test_a_second_claim_or_a_finished_document_gets_none(manager: StatusManager) -> None:
    _claimed(manager)
    assert manager.claim("doc") is None
    manager.create_status("done", "done.pdf")
    manager.mark_completed("done")
    assert manager.claim("done") is None
    with pytest.raises(DocumentNotFoundError):
        manager.claim("missing")


def test_sixteen_threads_claim_one_document_once(manager: StatusManager) -> None:
    manager.create_status("doc", "doc.pdf")
    barrier = threading.Barrier(16)
    won: list[Lease] = []

    def claim(i: int) -> None:
        barrier.wait(10)
        lease = manager.claim("doc", worker=f"t{i}")
        if lease is not None:
            won.append(lease)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(won) == 1
    assert len(manager.leases()) == 1


def test_fenced_writes_work_while_held_and_completion_releases(manager: StatusManager) -> None:
    lease = _claimed(manager, seconds=30)
    lease.update_status("embedding_visual", page=1, total_pages=2)
    lease.renew()
    lease.mark_completed(pages=2)
    status = manager.get_status("doc")
    assert status is not None and status.status is Status.COMPLETED and status.metadata["pages"] == 2
    assert manager.leases() == []


def _dump(manager: StatusManager) -> Any:
    """The stored record, lease included (not the live status JSON, whose elapsed time moves)."""
    return copy_json(manager._store.get("doc"))


def test_after_expiry_the_old_lease_changes_nothing(manager: StatusManager) -> None:
    lease = _claimed(manager)
    assert _expire(manager) == ["doc"]
    before, seq = _dump(manager), manager.last_seq
    writes: list[Callable[[], None]] = [
        lambda: lease.update_status("parsing", progress=0.05),
        lambda: lease.mark_completed(),
        lambda: lease.mark_failed("boom"),
        lease.renew,
    ]
    for write in writes:
        with pytest.raises(LeaseLostError):
            write()
    assert _dump(manager) == before and manager.last_seq == seq


def test_expiry_requeues_with_a_recovery_note(manager: StatusManager) -> None:
    _claimed(manager)
    _expire(manager)
    status = manager.get_status("doc")
    assert status is not None and status.status is Status.QUEUED
    assert status.metadata["attempt"] == 2
    assert "host:1" in status.metadata["recovery"] and "attempt 2" in status.metadata["recovery"]
    assert "worker" not in status.metadata
    assert manager.leases() == []
    again = manager.claim("doc", worker="host:2", seconds=SHORT)
    assert again is not None and again.epoch == 2


def test_the_last_attempt_fails_saying_the_worker_was_lost(manager: StatusManager) -> None:
    _claimed(manager)
    _expire(manager, max_attempts=2)
    assert manager.claim("doc", worker="host:2", seconds=SHORT) is not None
    _expire(manager, max_attempts=2)
    status = manager.get_status("doc")
    assert status is not None and status.status is Status.FAILED
    assert status.error == (
        f"The worker host:2 was lost while processing this document ({DEFAULT_STAGE[Status.PARSING]}); "
        "gave up after 2 attempts"
    )


def test_renewing_keeps_a_lease_alive(manager: StatusManager) -> None:
    lease = _claimed(manager)
    end = time.monotonic() + 3 * SHORT
    while time.monotonic() < end:
        lease.renew()
        assert manager._store.expired_leases(10) == []
        time.sleep(SHORT / 4)
    assert manager.expire_leases() == []


def test_a_lease_renewed_after_its_time_is_not_expired(manager: StatusManager) -> None:
    lease = _claimed(manager)
    _wait_expired(manager, "doc")
    lease.renew()
    mutation = Mutation("lease_lost", time.time(), fields={"max_attempts": 3}, epoch=lease.epoch)
    assert manager._store.expire_lease("doc", lease.epoch, mutation) is None
    assert manager.expire_leases() == []
    lease.update_status("parsing", progress=0.05)


def test_a_cancel_without_the_lease_makes_its_next_write_fail(manager: StatusManager) -> None:
    lease = _claimed(manager, seconds=30)
    manager.mark_failed("doc", "cancelled")
    assert manager.leases() == []
    before = _dump(manager)
    with pytest.raises(LeaseLostError):
        lease.update_status("embedding_visual", page=1, total_pages=2)
    with pytest.raises(LeaseLostError):
        lease.renew()
    assert _dump(manager) == before


def test_lease_is_never_in_status_json_or_events(manager: StatusManager) -> None:
    seen: list[Any] = []
    manager.subscribe(seen.append)
    lease = _claimed(manager)
    lease.update_status("embedding_visual", page=1, total_pages=2)
    _expire(manager)
    body = manager.get_status_json("doc")
    assert body is not None and "_lease" not in body
    assert manager.flush_events()  # subscribers are called on the event thread
    assert all("_lease" not in (event["status"] or {}) for event in seen)
    assert seen and all("_lease" not in str(event) for event in seen)
    assert all("_lease" not in (e["status"] or {}) for e in manager.changes_since(0, 100))


# -- processes on one shared store ------------------------------------------------------


@pytest.fixture(params=["sqlite", "redis"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'status.db'}"
    return str(request.getfixturevalue("redis_url"))


def _claim_all(url: str, doc_ids: list[str], barrier: Any, results: Any) -> None:
    with StatusManager(store=url, cleanup_interval_seconds=None) as manager:
        barrier.wait(60)
        won = [d for d in doc_ids if manager.claim(d, seconds=30) is not None]
        results.put(won)


def test_two_processes_claim_each_document_once(shared_url: str) -> None:
    doc_ids = [f"doc-{i}" for i in range(40)]
    with StatusManager(store=shared_url, cleanup_interval_seconds=None) as manager:
        for doc_id in doc_ids:
            manager.create_status(doc_id, f"{doc_id}.pdf")
        barrier, results = _spawn.Barrier(2), _spawn.Queue()
        processes = [
            _spawn.Process(target=_claim_all, args=(shared_url, doc_ids, barrier, results)) for _ in range(2)
        ]
        for process in processes:
            process.start()
        won = [results.get(timeout=120) for _ in processes]
        for process in processes:
            process.join(60)
        assert [p.exitcode for p in processes] == [0, 0]
        assert sorted(won[0] + won[1]) == sorted(doc_ids)
        assert len(manager.leases()) == len(doc_ids)
        workers = {manager.get_status(d).metadata["worker"] for d in doc_ids}  # type: ignore[union-attr]
        assert len(workers) <= 2
