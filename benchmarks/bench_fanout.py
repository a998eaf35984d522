"""What a writer pays for its subscribers: ``update_status`` (memory store) with 0 to 1,000 of them.

The floor is the same call with no subscriber, in the same run. Each turn
writes one batch of changes and waits (untimed) until every subscriber has had
them, so no turn leaves work behind for the next; the turns go A B A B
(:func:`~benchmarks._harness.median_interleaved`) and the median is shown.

Two readings per row: the *writer's CPU* (``time.thread_time`` of the writing
thread: what the change costs the code that makes it, the goal's measure) and
the *wall time* of the batch (which also holds what the event thread takes
from the writer through the GIL while it calls 1,000 callbacks: one process,
one interpreter lock).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from docstatus import StatusManager

from ._harness import Row, Table, median_interleaved

COUNTS = (0, 10, 100, 1000)
BATCH = 2000
ROUNDS = 9


def _manager(subscribers: int) -> StatusManager:
    # Every report written: each update is a change that every subscriber is given.
    manager = StatusManager(cleanup_interval_seconds=None, progress_interval=0)
    manager.create_status("doc", "doc.pdf")
    manager.update_status("doc", "parsing")
    manager.update_status("doc", "embedding_visual", page=0, total_pages=10**9)
    seen = [0]

    def on_event(event: object) -> None:
        seen[0] += 1

    for _ in range(subscribers):
        manager.subscribe(on_event)
    return manager


def _turn(manager: StatusManager, clock: Callable[[], float], pages: list[int]) -> Callable[[], float]:
    def turn() -> float:
        update = manager.update_status
        start_page = pages[0]
        start = clock()
        for page in range(start_page, start_page + BATCH):
            update("doc", "embedding_visual", page=page, total_pages=10**9)
        spent = clock() - start
        pages[0] += BATCH
        if not manager.flush_events(120):
            raise RuntimeError("the subscribers did not catch up")
        return spent / BATCH * 1e6

    return turn


def run() -> list[Table]:
    table = Table("Fan-out: update_status (memory store) against its subscribers")
    managers = {n: _manager(n) for n in COUNTS}
    pages = {n: [1] for n in COUNTS}  # progress only grows: each manager's next page
    try:
        for label, clock in (("writer CPU", time.thread_time), ("wall", time.perf_counter)):
            turns = {n: _turn(m, clock, pages[n]) for n, m in managers.items()}
            result = median_interleaved({str(n): t for n, t in turns.items()}, ROUNDS)
            floor = result["0"]
            for n in COUNTS:
                target = "≤ 1.2× the 0-subscriber cost" if n == 1000 and label == "writer CPU" else ""
                name = f"update_status with {n:,} subscribers, {label} (median of {ROUNDS} × {BATCH:,})"
                table.add(Row(name, result[str(n)], "0 subscribers, same run", floor, target))
    finally:
        for manager in managers.values():
            manager.close()
    return [table]


if __name__ == "__main__":
    for result in run():
        print(result.markdown())
