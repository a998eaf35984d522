"""Timed work for every manager of the process: automatic cleanup, and writing held progress.

A manager registers itself with an interval (cleanup) or a delay (a progress
report held back, see :mod:`docstatus.coalesce`); the scheduler holds it only
by a weak reference, so a manager nobody uses is collected and simply drops
out. Each kind of work has one daemon thread serving all managers (no thread
per manager), started once some manager first needs it; cleanup and progress
have separate threads, so a long cleanup never delays a progress write.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["Cleanable", "call_later", "schedule"]

log = logging.getLogger(__name__)


class Cleanable(Protocol):
    def run_scheduled_cleanup(self) -> None: ...


#: What a scheduled entry calls: ``work(target, arg)``; it must hold no reference to the target.
Work = Callable[[Any, Any], None]


class _Scheduler:
    """One daemon thread calling due entries, each holding its target by a weak reference."""

    def __init__(self, name: str, failure: str) -> None:
        self._name = name
        self._failure = failure
        self._cond = threading.Condition()
        # (due, tiebreak, interval or None for once, weakref to the target, work, arg)
        self._queue: list[tuple[float, int, float | None, weakref.ReferenceType[Any], Work, Any]] = []
        self._counter = itertools.count()
        self._thread: threading.Thread | None = None

    def add(self, target: object, work: Work, arg: Any, delay: float, interval: float | None) -> None:
        """Call ``work(target, arg)`` in ``delay`` seconds, then every ``interval`` (``None``: once)."""
        with self._cond:
            self._push(time.monotonic() + delay, interval, weakref.ref(target), work, arg)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify()

    def _push(
        self, due: float, interval: float | None, ref: weakref.ReferenceType[Any], work: Work, arg: Any
    ) -> None:
        heapq.heappush(self._queue, (due, next(self._counter), interval, ref, work, arg))

    def _next_due(self) -> tuple[weakref.ReferenceType[Any], Work, Any]:
        # Waits with the condition held until an entry is due.
        while True:
            if not self._queue:
                self._cond.wait(60.0)
                continue
            due, _, interval, ref, work, arg = self._queue[0]
            wait = due - time.monotonic()
            if wait > 0:
                self._cond.wait(wait)
                continue
            heapq.heappop(self._queue)
            if ref() is None:
                continue
            if interval is not None:
                self._push(time.monotonic() + interval, interval, ref, work, arg)
            return ref, work, arg

    def _run(self) -> None:
        while True:
            with self._cond:
                ref, work, arg = self._next_due()
            target = ref()
            if target is None:
                continue
            try:
                work(target, arg)
            except Exception:
                log.exception(self._failure)
            del target


def _new_schedulers() -> tuple[_Scheduler, _Scheduler]:
    return (
        _Scheduler("docstatus-cleanup", "automatic status cleanup failed; will retry at the next interval"),
        _Scheduler("docstatus-progress", "writing held progress reports failed"),
    )


_cleanup, _progress = _new_schedulers()


def _reset_after_fork() -> None:
    # The child has no scheduler threads; managers it creates start new ones.
    global _cleanup, _progress
    _cleanup, _progress = _new_schedulers()


os.register_at_fork(after_in_child=_reset_after_fork)


def _clean(target: Cleanable, _: object) -> None:
    target.run_scheduled_cleanup()


def schedule(target: Cleanable, interval: float) -> None:
    """Call ``target.run_scheduled_cleanup()`` every ``interval`` seconds while it lives."""
    _cleanup.add(target, _clean, None, interval, interval)


def call_later(delay: float, target: object, work: Work, arg: Any) -> None:
    """Call ``work(target, arg)`` once, ``delay`` seconds from now, on the progress thread, if
    ``target`` still lives then. ``work`` must not hold ``target`` (a plain function, not a bound
    method), or the target could never be collected."""
    _progress.add(target, work, arg, delay, None)
