"""The worker registry in the store contract, over every store: heartbeat, expiry, forget."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path
from typing import Any

import pytest

from docstatus import StatusManager
from docstatus.stores.base import WorkerEntry

_spawn = multiprocessing.get_context("spawn")

SHORT = 0.3

INFO: dict[str, Any] = {
    "host": "node-a",
    "pid": 4242,
    "engine": "local",
    "processes": 2,
    "started_at": "2025-10-07T19:00:00Z",
    "children": ["node-a:4243", "node-a:4244"],
}


def _ids(manager: StatusManager) -> list[str]:
    return [entry.worker_id for entry in manager.workers()]


def _wait_gone(manager: StatusManager, worker_id: str, deadline: float = 10.0) -> None:
    end = time.monotonic() + deadline
    while worker_id in _ids(manager):
        assert time.monotonic() < end, f"{worker_id} never expired"
        time.sleep(0.02)


def test_a_heartbeat_registers_a_worker_on_the_store_clock(manager: StatusManager) -> None:
    assert manager.workers() == []
    before = manager.store.now()
    manager.heartbeat("node-a:4242", INFO, 30)
    after = manager.store.now()
    [entry] = manager.workers()
    assert isinstance(entry, WorkerEntry)
    assert (entry.worker_id, entry.info) == ("node-a:4242", INFO)
    assert before - 0.01 <= entry.last_seen <= after + 0.01
    assert entry.expires == pytest.approx(entry.last_seen + 30, abs=1e-3)


def test_a_heartbeat_changes_no_record_and_no_seq(manager: StatusManager) -> None:
    seen: list[Any] = []
    manager.subscribe(seen.append)
    manager.create_status("doc", "doc.pdf")
    seq = manager.last_seq
    manager.heartbeat("w", INFO, 30)
    manager.forget_worker("w")
    assert manager.flush_events()  # subscribers are called on the event thread
    assert manager.last_seq == seq and len(seen) == 1
    assert manager.changes_since(seq, 10) == []


def test_a_refresh_replaces_the_info_and_moves_the_times(manager: StatusManager) -> None:
    manager.heartbeat("w", {**INFO, "processes": 1}, 30)
    [first] = manager.workers()
    time.sleep(0.01)
    manager.heartbeat("w", INFO, 60)
    [second] = manager.workers()
    assert second.info == INFO
    assert second.last_seen > first.last_seen
    assert second.expires == pytest.approx(second.last_seen + 60, abs=1e-3)


def test_workers_are_listed_by_id_and_info_is_a_private_copy(manager: StatusManager) -> None:
    info = {"host": "h", "children": ["h:1"]}
    for worker_id in ("w-c", "w-a", "w-b"):
        manager.heartbeat(worker_id, info, 30)
    info["children"].append("h:2")
    assert _ids(manager) == ["w-a", "w-b", "w-c"]
    entries = manager.workers()
    assert all(entry.info == {"host": "h", "children": ["h:1"]} for entry in entries)
    entries[0].info["children"].append("mutated")
    assert manager.workers()[0].info == {"host": "h", "children": ["h:1"]}


def test_a_worker_that_stops_beating_vanishes(manager: StatusManager) -> None:
    manager.heartbeat("short", INFO, SHORT)
    manager.heartbeat("long", INFO, 60)
    _wait_gone(manager, "short")
    assert _ids(manager) == ["long"]
    # Beating again after expiry registers it anew.
    manager.heartbeat("short", INFO, 60)
    assert _ids(manager) == ["long", "short"]


def test_beating_keeps_a_worker_alive(manager: StatusManager) -> None:
    end = time.monotonic() + 3 * SHORT
    while time.monotonic() < end:
        manager.heartbeat("w", INFO, SHORT)
        assert _ids(manager) == ["w"]
        time.sleep(SHORT / 4)


def test_forget_removes_at_once_and_an_unknown_id_is_fine(manager: StatusManager) -> None:
    manager.heartbeat("a", INFO, 60)
    manager.heartbeat("b", INFO, 60)
    manager.forget_worker("a")
    assert _ids(manager) == ["b"]
    manager.forget_worker("a")
    manager.forget_worker("never-seen")
    assert _ids(manager) == ["b"]


@pytest.mark.parametrize(
    ("worker_id", "info", "seconds", "error"),
    [
        ("", INFO, 30, ValueError),
        ("x" * 257, INFO, 30, ValueError),
        ("bad\nid", INFO, 30, ValueError),
        (7, INFO, 30, TypeError),
        ("w", {"when": object()}, 30, ValueError),
        ("w", ["not", "a", "mapping"], 30, TypeError),
        ("w", INFO, 0, ValueError),
        ("w", INFO, -1, ValueError),
        ("w", INFO, float("nan"), ValueError),
        ("w", INFO, "30", TypeError),
    ],
)
def test_invalid_heartbeats_are_refused_and_register_nothing(
    manager: StatusManager, worker_id: Any, info: Any, seconds: Any, error: type[Exception]
) -> None:
    with pytest.raises(error):
        manager.heartbeat(worker_id, info, seconds)
    assert manager.workers() == []


# -- processes on one shared store ------------------------------------------------------


@pytest.fixture(params=["sqlite", "redis"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'status.db'}"
    return str(request.getfixturevalue("redis_url"))


def _beat(url: str, worker_id: str, seconds: float) -> None:
    with StatusManager(store=url, cleanup_interval_seconds=None) as manager:
        manager.heartbeat(worker_id, {**INFO, "pid": multiprocessing.current_process().pid}, seconds)


def test_every_process_sees_every_worker(shared_url: str) -> None:
    processes = [_spawn.Process(target=_beat, args=(shared_url, f"w{i}", 60)) for i in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    assert [p.exitcode for p in processes] == [0, 0]
    with StatusManager(store=shared_url, cleanup_interval_seconds=None) as manager:
        entries = manager.workers()
        assert [e.worker_id for e in entries] == ["w0", "w1"]
        assert [e.info["pid"] for e in entries] == [p.pid for p in processes]
        manager.forget_worker("w0")
    with StatusManager(store=shared_url, cleanup_interval_seconds=None) as other:
        assert _ids(other) == ["w1"]
