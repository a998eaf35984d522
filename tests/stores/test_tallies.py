"""The throughput counters in the store contract, over every store.

They follow documents that end (completed or failed) in the minute they end,
outlive the documents' removal, and on a shared store are one set of counters
for every process.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from docstatus import StatusManager
from docstatus.stores.base import Tally


def _minute_of(manager: StatusManager, doc_id: str) -> int:
    status = manager.get_status(doc_id)
    assert status is not None and status.completed_at is not None
    return int(status.completed_at.timestamp() // 60) * 60


def _all(manager: StatusManager) -> list[Tally]:
    now = time.time()
    return manager.store.tallies(now - 3600, now + 120)


def _sum(tallies: list[Tally]) -> tuple[int, int, int]:
    return (sum(t.completed for t in tallies), sum(t.failed for t in tallies), sum(t.pages for t in tallies))


def _processed(manager: StatusManager, doc_id: str, pages: int) -> None:
    manager.create_status(doc_id, f"{doc_id}.pdf")
    manager.update_status(doc_id, "parsing")
    manager.update_status(doc_id, "embedding_visual", page=pages, total_pages=pages)
    manager.update_status(doc_id, "embedding_text", chunk=1, total_chunks=1)
    manager.update_status(doc_id, "storing")
    manager.mark_completed(doc_id)


def test_an_empty_store_has_no_counts(manager: StatusManager) -> None:
    assert _all(manager) == []


def test_documents_that_end_are_counted_in_their_minute(manager: StatusManager) -> None:
    _processed(manager, "a", pages=3)
    _processed(manager, "b", pages=4)
    manager.create_status("c", "c.pdf")
    manager.update_status("c", "parsing")
    manager.update_status("c", "embedding_visual", page=2, total_pages=9)
    manager.mark_failed("c", "boom")
    manager.create_status("d", "d.pdf")
    manager.update_status("d", "parsing")  # still active: not counted
    tallies = _all(manager)
    assert _sum(tallies) == (2, 1, 3 + 4 + 2)
    minutes = {_minute_of(manager, d) for d in "abc"}
    assert {t.minute for t in tallies} == minutes
    assert all(t.minute % 60 == 0 for t in tallies)
    assert [t.minute for t in tallies] == sorted(t.minute for t in tallies)


def test_progress_updates_and_refused_changes_count_nothing_more(manager: StatusManager) -> None:
    _processed(manager, "a", pages=2)
    with pytest.raises(ValueError):
        manager.mark_completed("a")
    with pytest.raises(ValueError):
        manager.mark_failed("a", "late")
    assert _sum(_all(manager)) == (1, 0, 2)


def test_counts_outlive_cleanup_and_removal(manager: StatusManager) -> None:
    _processed(manager, "a", pages=5)
    manager.create_status("b", "b.pdf")
    manager.mark_failed("b", "boom")
    manager.remove("b")
    assert manager.cleanup_old_entries(max_age_seconds=0) == 1
    assert manager.get_status("a") is None
    assert _sum(_all(manager)) == (1, 1, 5)


def test_each_attempt_that_ends_counts(manager: StatusManager) -> None:
    manager.create_status("a", "a.pdf")
    manager.mark_failed("a", "first")
    manager.requeue("a")
    manager.update_status("a", "parsing")
    manager.mark_completed("a")
    assert _sum(_all(manager)) == (1, 1, 0)


def test_a_cancel_counts_as_a_failure(manager: StatusManager) -> None:
    manager.create_status("a", "a.pdf")
    manager.cancel("a")
    assert _sum(_all(manager)) == (0, 1, 0)


def test_a_lost_worker_retried_is_no_failure_until_it_gives_up(manager: StatusManager) -> None:
    manager.create_status("a", "a.pdf")
    lease = manager.claim("a", worker="host:1", seconds=0.05)
    assert lease is not None
    deadline = time.monotonic() + 10
    while not manager.expire_leases(max_attempts=2) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _all(manager) == []  # requeued as attempt 2
    lease = manager.claim("a", worker="host:1", seconds=0.05)
    assert lease is not None
    while not manager.expire_leases(max_attempts=2) and time.monotonic() < deadline:
        time.sleep(0.02)
    status = manager.get_status("a")
    assert status is not None and status.status == "failed"
    assert _sum(_all(manager)) == (0, 1, 0)


def test_the_range_is_half_open_and_by_minute_start(manager: StatusManager) -> None:
    _processed(manager, "a", pages=1)
    minute = _minute_of(manager, "a")
    assert [t.minute for t in manager.store.tallies(minute, minute + 60)] == [minute]
    assert [t.minute for t in manager.store.tallies(minute - 0.5, minute + 0.5)] == [minute]
    assert manager.store.tallies(minute + 0.5, minute + 60) == []
    assert manager.store.tallies(minute - 60, minute) == []
    assert manager.store.tallies(minute + 60, minute) == []


def test_a_shared_store_has_one_set_of_counters(make_manager: Callable[..., StatusManager]) -> None:
    # Two managers on one URL: one store for SQLite and Redis, two private ones for memory://.
    first, second = make_manager(), make_manager()
    if not first.store.shared:
        _processed(first, "a", pages=2)
        assert _all(second) == []
        return
    _processed(first, "a", pages=2)
    _processed(second, "b", pages=3)
    assert _sum(_all(first)) == _sum(_all(second)) == (2, 0, 5)


def test_managers_wrapping_one_dict_share_the_counters() -> None:
    shared: dict[str, object] = {}
    with StatusManager(shared) as one, StatusManager(shared) as two:
        _processed(one, "a", pages=1)
        assert _sum(_all(two)) == (1, 0, 1)
