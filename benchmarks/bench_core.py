"""Core StatusManager (memory store) beside a bare dict + threading.Lock: the floor.

The floor is the contract's own "safe pattern": take the lock, check the
document exists, set the fields, stamp ``updated_at``. docstatus does that plus
validation, the lifecycle check, progress, the ETA and the change log.
"""

from __future__ import annotations

import itertools
import threading
import time
from datetime import UTC, datetime
from typing import Any

from docstatus import StatusManager

from ._harness import Row, Table, best_interleaved, per_op, per_op_threads

N = 20_000


class Floor:
    """A hand-rolled status dict behind a lock, as users write before docstatus."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.data: dict[str, dict[str, Any]] = {}

    def create(self, doc_id: str) -> None:
        with self.lock:
            if doc_id in self.data:
                raise ValueError(doc_id)
            now = datetime.now(UTC)
            self.data[doc_id] = {
                "doc_id": doc_id,
                "status": "queued",
                "progress": 0.0,
                "started_at": now,
                "updated_at": now,
                "page": None,
                "total_pages": None,
            }

    def update(self, doc_id: str, status: str, progress: float, page: int, total: int) -> None:
        with self.lock:
            if doc_id not in self.data:
                raise KeyError(doc_id)
            record = self.data[doc_id]
            record["status"] = status
            record["progress"] = progress
            record["page"] = page
            record["total_pages"] = total
            record["updated_at"] = datetime.now(UTC)

    def get(self, doc_id: str) -> dict[str, Any]:
        with self.lock:
            return dict(self.data[doc_id])


def _visual(manager: StatusManager, doc: str) -> None:
    manager.create_status(doc, f"{doc}.pdf", {})
    manager.update_status(doc, "parsing")
    manager.update_status(doc, "embedding_visual", page=0, total_pages=N)


def _update_rows(table: Table) -> None:
    # Every report written (progress_interval=0): the change itself, then the default's held report.
    manager = StatusManager(cleanup_interval_seconds=None, progress_interval=0)
    coalesced = StatusManager(cleanup_interval_seconds=None)
    floor = Floor()
    _visual(manager, "doc")
    _visual(coalesced, "doc")
    floor.create("doc")
    pages = itertools.cycle(range(1, N + 1))
    best = best_interleaved(
        {
            "ours": lambda: manager.update_status("doc", "embedding_visual", page=next(pages), total_pages=N),
            "coalesced": lambda: coalesced.update_status(
                "doc", "embedding_visual", page=next(pages), total_pages=N
            ),
            "floor": lambda: floor.update("doc", "embedding_visual", 0.3, next(pages), N),
        },
        N // 4,
        rounds=4,
    )
    base = best["floor"]
    # The target is the default's: progress within a stage held (progress_interval=0.1).
    table.add(
        Row(
            "update_status (1 thread, progress_interval=0.1, the default)",
            best["coalesced"],
            "dict+Lock update",
            base,
            "≤ 3×",
        )
    )
    table.add(
        Row(
            "update_status (1 thread, every report written: progress_interval=0)",
            best["ours"],
            "dict+Lock update",
            base,
        )
    )
    coalesced.close()
    ours = per_op(lambda: manager.get_status("doc"), N)
    base = per_op(lambda: floor.get("doc"), N)
    table.add(Row("get_status (1 thread)", ours, "dict+Lock copy", base))
    counter = itertools.count()
    ours = per_op(lambda: manager.create_status(f"c{next(counter)}", "f.pdf", {}), N)
    base = per_op(lambda: floor.create(f"c{next(counter)}"), N)
    table.add(Row("create_status (1 thread)", ours, "dict+Lock insert", base))


def _threaded_rows(table: Table, threads: int = 10, number: int = 2000) -> None:
    manager = StatusManager(cleanup_interval_seconds=None, progress_interval=0)
    coalesced = StatusManager(cleanup_interval_seconds=None)
    floor = Floor()
    for i in range(threads):
        _visual(manager, f"t{i}")
        _visual(coalesced, f"t{i}")
        floor.create(f"t{i}")

    def ours(of: StatusManager) -> Any:
        def make(i: int) -> Any:
            pages = itertools.cycle(range(1, N + 1))
            return lambda: of.update_status(f"t{i}", "embedding_visual", page=next(pages), total_pages=N)

        return make

    def base(i: int) -> Any:
        pages = itertools.cycle(range(1, N + 1))
        return lambda: floor.update(f"t{i}", "embedding_visual", 0.3, next(pages), N)

    # Interleaved rounds, the best of each: the threads' wall time per call.
    runs: dict[str, list[float]] = {"coalesced": [], "ours": [], "floor": []}
    for _ in range(3):
        runs["coalesced"].append(per_op_threads(ours(coalesced), threads, number, repeat=1))
        runs["ours"].append(per_op_threads(ours(manager), threads, number, repeat=1))
        runs["floor"].append(per_op_threads(base, threads, number, repeat=1))
    floor_us = min(runs["floor"])
    table.add(
        Row(
            f"update_status ({threads} threads, progress_interval=0.1, the default)",
            min(runs["coalesced"]),
            "dict+Lock update",
            floor_us,
            "≤ 4×",
        )
    )
    table.add(
        Row(
            f"update_status ({threads} threads, every report written)",
            min(runs["ours"]),
            "dict+Lock update",
            floor_us,
        )
    )
    coalesced.close()
    counter = itertools.count()
    table.add(
        Row(
            f"create_status ({threads} threads)",
            per_op_threads(
                lambda i: lambda: manager.create_status(f"x{next(counter)}", "f.pdf", {}), threads, number
            ),
            "dict+Lock insert",
            per_op_threads(lambda i: lambda: floor.create(f"x{next(counter)}"), threads, number),
        )
    )


def _populated(total: int, active: int) -> StatusManager:
    manager = StatusManager(cleanup_interval_seconds=None)
    for i in range(total - active):
        manager.create_status(f"done-{i}", "f.txt", {})
        manager.mark_completed(f"done-{i}")
    for i in range(active):
        manager.create_status(f"active-{i}", "f.txt", {})
    return manager


def _listing_rows(table: Table) -> None:
    small: dict[str, float] = {}
    for total in (1_000, 10_000, 100_000):
        manager = _populated(total, 10)
        list_all = per_op(lambda m=manager: m.list_all(100), 200)
        list_active = per_op(lambda m=manager: m.list_active(), 2000)
        if total == 1_000:
            small = {"all": list_all, "active": list_active}
        target_all = "≤ 2× the 1k cost" if total == 100_000 else ""
        table.add(Row(f"list_all(100) at {total:,}", list_all, "same at 1,000", small["all"], target_all))
        table.add(
            Row(f"list_active() 10 of {total:,}", list_active, "same at 1,000", small["active"], target_all)
        )
        manager.close()


def _cleanup_row(table: Table) -> None:
    manager = _populated(100_000, 0)
    start = time.perf_counter()
    removed = manager.cleanup_old_entries(0)
    elapsed = time.perf_counter() - start
    if removed != 100_000:
        raise RuntimeError(f"cleanup removed {removed}, expected 100000")
    floor = {f"done-{i}": {"completed_at": 0.0} for i in range(100_000)}
    lock = threading.Lock()
    start = time.perf_counter()
    with lock:
        for key in [k for k, v in floor.items() if v["completed_at"] < 1.0]:
            del floor[key]
    floor_elapsed = time.perf_counter() - start
    table.add(
        Row(
            "cleanup of 100,000 (per entry)",
            elapsed / removed * 1e6,
            "dict scan + del under one lock",
            floor_elapsed / removed * 1e6,
        )
    )


def run() -> list[Table]:
    table = Table("Core: StatusManager (memory store) vs dict + threading.Lock")
    _update_rows(table)
    _threaded_rows(table)
    _listing_rows(table)
    _cleanup_row(table)
    return [table]
