"""Automatic cleanup for every manager of the process, on one shared thread.

A manager registers itself with an interval; the janitor holds it only by a
weak reference, so a manager nobody uses is collected and simply drops out.
One daemon thread serves all managers (no thread per manager), and it is only
started once some manager asks for automatic cleanup.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
import time
import weakref
from typing import Protocol

__all__ = ["Cleanable", "schedule"]

log = logging.getLogger(__name__)


class Cleanable(Protocol):
    def run_scheduled_cleanup(self) -> None: ...


class _Janitor:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        # (due, tiebreak, interval, weakref)
        self._queue: list[tuple[float, int, float, weakref.ReferenceType[Cleanable]]] = []
        self._counter = itertools.count()
        self._thread: threading.Thread | None = None

    def schedule(self, target: Cleanable, interval: float) -> None:
        with self._cond:
            self._push(time.monotonic() + interval, interval, weakref.ref(target))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="docstatus-cleanup", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _push(self, due: float, interval: float, ref: weakref.ReferenceType[Cleanable]) -> None:
        heapq.heappush(self._queue, (due, next(self._counter), interval, ref))

    def _next_due(self) -> tuple[float, weakref.ReferenceType[Cleanable]] | None:
        # Waits with the condition held until an entry is due; None when idle.
        while True:
            if not self._queue:
                self._cond.wait(60.0)
                if not self._queue:
                    continue
            due, _, interval, ref = self._queue[0]
            wait = due - time.monotonic()
            if wait > 0:
                self._cond.wait(wait)
                continue
            heapq.heappop(self._queue)
            if ref() is None:
                continue
            self._push(time.monotonic() + interval, interval, ref)
            return due, ref

    def _run(self) -> None:
        while True:
            with self._cond:
                _, ref = self._next_due()  # type: ignore[misc]
            target = ref()
            if target is None:
                continue
            try:
                target.run_scheduled_cleanup()
            except Exception:
                log.exception("automatic status cleanup failed; will retry at the next interval")
            del target


_janitor = _Janitor()


def _reset_after_fork() -> None:
    # The child has no janitor thread; managers it creates start a new one.
    global _janitor
    _janitor = _Janitor()


os.register_at_fork(after_in_child=_reset_after_fork)


def schedule(target: Cleanable, interval: float) -> None:
    """Call ``target.run_scheduled_cleanup()`` every ``interval`` seconds while it lives."""
    _janitor.schedule(target, interval)
