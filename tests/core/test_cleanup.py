"""Automatic and large cleanups (memory store; the other stores share the conformance suite)."""

from __future__ import annotations

import gc
import threading
import weakref

import pytest

from docstatus import Status, StatusManager
from helpers import wait_until


def test_automatic_cleanup_runs_on_its_interval() -> None:
    with StatusManager(cleanup_interval_seconds=0.05, cleanup_max_age_seconds=0) as manager:
        manager.create_status("done", "f.pdf", {})
        manager.mark_completed("done")
        manager.create_status("busy", "g.pdf", {})
        wait_until(lambda: manager.get_status("done") is None)
        assert manager.get_status("busy") is not None


def test_automatic_cleanup_respects_the_max_age() -> None:
    with StatusManager(cleanup_interval_seconds=0.02, cleanup_max_age_seconds=3600) as manager:
        manager.create_status("done", "f.pdf", {})
        manager.mark_completed("done")
        runs = threading.Event()
        original = manager.cleanup_old_entries

        def counting(max_age_seconds: float = 3600) -> int:
            runs.set()
            return original(max_age_seconds)

        manager.cleanup_old_entries = counting  # type: ignore[method-assign]
        assert runs.wait(10)
        assert manager.get_status("done") is not None


def test_disabled_automatic_cleanup_never_runs() -> None:
    manager = StatusManager(cleanup_interval_seconds=None, cleanup_max_age_seconds=0)
    manager.create_status("done", "f.pdf", {})
    manager.mark_completed("done")
    # The janitor thread is shared; give it a chance to (wrongly) run.
    probe = StatusManager(cleanup_interval_seconds=0.01, cleanup_max_age_seconds=0)
    probe.create_status("p", "f.pdf", {})
    probe.mark_completed("p")
    wait_until(lambda: probe.get_status("p") is None)
    assert manager.get_status("done") is not None


def test_scheduled_cleanup_does_not_keep_a_manager_alive() -> None:
    manager = StatusManager(cleanup_interval_seconds=0.01)
    ref = weakref.ref(manager)
    del manager
    gc.collect()
    assert ref() is None


@pytest.mark.parametrize(("interval", "age"), [(0, 1), (-5, 1), (float("nan"), 1), (1, -1)])
def test_bad_cleanup_settings_are_refused(interval: float, age: float) -> None:
    with pytest.raises(ValueError, match="cleanup"):
        StatusManager(cleanup_interval_seconds=interval, cleanup_max_age_seconds=age)


def test_large_cleanup_lets_updates_flow() -> None:
    """100,000 finished documents are removed while another thread keeps updating."""
    data: dict[str, object] = {}
    manager = StatusManager(data, cleanup_interval_seconds=None)
    for i in range(100_000):
        manager.create_status(f"old-{i}", "f.txt", {})
        manager.mark_completed(f"old-{i}")
    manager.create_status("live", "live.pdf", {})
    manager.update_status("live", "parsing")
    manager.update_status("live", "embedding_visual", page=0, total_pages=1_000_000)

    started = threading.Event()
    cleanup_done = threading.Event()
    updates_during_cleanup = 0

    def cleanup() -> None:
        started.set()
        assert manager.cleanup_old_entries(max_age_seconds=0) == 100_000
        cleanup_done.set()

    thread = threading.Thread(target=cleanup)
    thread.start()
    started.wait()
    page = 0
    while not cleanup_done.is_set():
        page += 1
        manager.update_status("live", "embedding_visual", page=page, total_pages=1_000_000)
        if manager.count_by_status()["completed"] not in (0, 100_000):
            updates_during_cleanup += 1
    thread.join()
    # Updates were interleaved with the cleanup's batches, not queued behind all of it.
    assert updates_during_cleanup > 0
    assert manager.require_status("live").page == page
    assert manager.count_by_status() == {
        **{s.value: 0 for s in Status},
        "embedding_visual": 1,
        "active": 1,
        "total": 1,
    }
    assert list(data) == ["live"]
