"""Event delivery findings of the review: once every change call has returned, every change is delivered."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable

from docstatus import StatusManager

WRITERS = 3
ROUNDS = 15_000


def in_rounds(writers: list[Callable[[], None]], after_round: Callable[[int], None]) -> None:
    """Run each writer once per round, all at once, then ``after_round`` with every writer stopped."""
    barrier = threading.Barrier(len(writers) + 1)

    def loop(write: Callable[[], None]) -> None:
        for _ in range(ROUNDS):
            barrier.wait()
            write()
            barrier.wait()

    threads = [threading.Thread(target=loop, args=(write,)) for write in writers]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        for thread in threads:
            thread.start()
        for round_ in range(ROUNDS):
            barrier.wait()
            barrier.wait()
            after_round(round_)
    except BaseException:
        barrier.abort()  # release the writers
        raise
    finally:
        sys.setswitchinterval(interval)
        for thread in threads:
            thread.join()


def test_no_change_is_left_undelivered_when_writers_race() -> None:
    # A writer that finds another thread pumping leaves its change to that one; if that
    # hand-over is lost, the change stays undelivered until some later change.
    manager = StatusManager(cleanup_interval_seconds=None)
    seen: list[int] = []
    manager.subscribe(lambda event: seen.append(event["seq"]))
    for i in range(WRITERS):
        manager.create_status(f"d{i}", "d.txt")
    stranded: list[tuple[int, int, int]] = []

    def check(round_: int) -> None:
        if len(seen) != manager.last_seq:
            stranded.append((round_, len(seen), manager.last_seq))

    writers = [lambda doc_id=f"d{i}": manager.update_status(doc_id, "queued") for i in range(WRITERS)]
    in_rounds(writers, check)
    assert stranded == []
    assert seen == list(range(1, manager.last_seq + 1))
