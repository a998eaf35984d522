"""Keeping leases alive: one thread per worker process renews every lease it holds.

A worker holds a lease for each document it is processing (see
:meth:`docstatus.manager.StatusManager.claim`). The :class:`LeaseKeeper`
renews each one every third of its duration, so a live worker keeps its
documents through two missed renewals, and says at once when a renewal is
refused (the lease expired and passed on, or the document was cancelled):
the holder then stops working on it. The same thread runs the process's
periodic chores (expiring other workers' leases, looking for queued work),
so a worker process has one background thread for all of it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import LeaseLostError
from ..manager import Lease

__all__ = ["LeaseKeeper"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Held:
    lease: Lease
    on_lost: Callable[[], None]
    due: float
    failing: bool = False


class LeaseKeeper:
    """Renews held leases every ``seconds / 3`` and runs ``chore`` every ``chore_interval`` seconds.

    :meth:`hold` a lease once it is claimed and :meth:`release` it when the
    document is finished. ``on_lost`` is called (on the keeper's thread) when
    a renewal is refused; a store that cannot be reached is retried at the
    next tick, and the lease simply expires if it stays unreachable. Errors in
    ``chore`` are logged and the chore runs again at its next interval.
    """

    def __init__(self, chore: Callable[[], None] | None = None, chore_interval: float = 5.0) -> None:
        self._cond = threading.Condition()
        self._held: dict[tuple[str, int], _Held] = {}
        self._chore = chore
        self._chore_interval = chore_interval
        # The pool looks at the queue itself at start; the chore's first run is one interval later.
        self._next_chore = time.monotonic() + chore_interval
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the keeper's thread. Idempotent."""
        with self._cond:
            if self._thread is None:
                self._stopping = False
                self._thread = threading.Thread(target=self._run, name="docstatus-leases", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        """Stop renewing (held leases then expire unless released) and join the thread."""
        with self._cond:
            thread, self._thread = self._thread, None
            self._stopping = True
            self._cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(10.0)

    def hold(self, lease: Lease, on_lost: Callable[[], None]) -> None:
        """Renew ``lease`` until :meth:`release`; ``on_lost()`` when a renewal is refused."""
        with self._cond:
            self._held[(lease.doc_id, lease.epoch)] = _Held(lease, on_lost, self._due(lease))
            self._cond.notify_all()

    def release(self, lease: Lease) -> None:
        """Stop renewing ``lease`` (the document is finished, or given up)."""
        with self._cond:
            self._held.pop((lease.doc_id, lease.epoch), None)

    def held(self) -> list[Lease]:
        """The leases being renewed now."""
        with self._cond:
            return [h.lease for h in self._held.values()]

    def run_chore_soon(self) -> None:
        """Run the chore at the next tick instead of waiting for its interval."""
        with self._cond:
            self._next_chore = time.monotonic()
            self._cond.notify_all()

    @staticmethod
    def _due(lease: Lease) -> float:
        return time.monotonic() + lease.seconds / 3

    def _run(self) -> None:
        while True:
            with self._cond:
                due = self._wait_for_work()
                if due is None:
                    return
            for held in due:
                self._renew(held)
            if time.monotonic() >= self._next_chore and self._chore is not None:
                self._next_chore = time.monotonic() + self._chore_interval
                self._run_chore()

    def _wait_for_work(self) -> list[_Held] | None:
        # Called with the condition held: the renewals due now, or None when stopping.
        while not self._stopping:
            now = time.monotonic()
            due = [h for h in self._held.values() if h.due <= now]
            chore_due = self._chore is not None and self._next_chore <= now
            if due or chore_due:
                for held in due:
                    held.due = self._due(held.lease)
                return due
            soonest = min([h.due for h in self._held.values()] + [self._next_chore], default=now + 1)
            self._cond.wait(max(0.01, soonest - now))
        return None

    def _renew(self, held: _Held) -> None:
        lease = held.lease
        try:
            lease.renew()
        except LeaseLostError:
            self.release(lease)
            log.warning("lost the lease on %s (epoch %d): stopping its processing", lease.doc_id, lease.epoch)
            held.on_lost()
            return
        except Exception as exc:
            if not held.failing:
                log.warning("could not renew the lease on %s: %s; retrying", lease.doc_id, exc)
            held.failing = True
            return
        held.failing = False

    def _run_chore(self) -> None:
        assert self._chore is not None
        try:
            self._chore()
        except Exception as exc:
            log.warning("worker maintenance failed: %s; retrying in %gs", exc, self._chore_interval)
