"""Progress within a stage, written at most once per interval per document.

A pipeline reports every page and every chunk; written one by one, those
reports cost a store transaction and an event each, many times a second, for
a change no reader needs at that rate. A manager therefore holds a report
back when it only moves progress within the document's stage (see
:func:`~docstatus.records.is_progress`) and the document was written less than
``interval`` seconds ago. What is held is never lost and never reordered:

* it is checked at once, against the manager's view of the record (the record
  its last write stored, with every held report applied), so a bad report
  raises to its caller exactly as a direct write would and is not held;
* it is written when the interval has passed (on the scheduler's progress
  thread), or before the document's next change that is not held (in the same
  write: a transition carries the progress reported before it), or when this
  manager reads the document or lists, or at :meth:`ProgressBuffer.flush`;
* the held reports are applied to the stored record in order, as one
  :class:`~docstatus.records.Chain`: the stored result is exactly what writing
  them one by one would have stored.

Transitions, completion, failure and metadata are never held, so a killed
process loses at most the last interval of progress, never a transition. A
held report that can no longer be applied (the document was cancelled or
removed meanwhile, its lease was lost) is dropped, and the document's next
report is written directly, so its writer learns why at once.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing.util
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

from . import janitor
from .errors import StoreUnavailableError
from .models import FINISHED
from .records import Chain, Mutation, Record, is_progress
from .stores.base import Change

__all__ = ["ProgressBuffer"]

log = logging.getLogger(__name__)

_FINAL = frozenset(s.value for s in FINISHED)

#: Writes a change of one document: ``write(doc_id, change)`` (a store's ``modify``).
Writer = Callable[[str, Callable[[Record], Record]], Change]


@dataclass(slots=True)
class _Doc:
    #: The record as this manager last wrote it, with every held report applied.
    record: Record
    #: ``time.monotonic()`` of that write.
    written: float
    #: The record as this manager last wrote it (``record`` before the held reports).
    base: Record
    #: Reports not written yet, oldest first.
    held: list[Callable[[Record], Record]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Held:
    """The held reports of one document as one change: the view when the store still holds
    the record they were applied to (the common case: no rule runs twice), else each again."""

    base: Record
    view: Record
    chain: Chain

    def __call__(self, record: Record) -> Record:
        if record is self.base or record == self.base:
            return self.view
        return self.chain(record)


class ProgressBuffer:
    """The progress reports one manager holds back, per document (see the module docstring).

    ``write`` stores a change (the store's ``modify``), ``changed`` is told of
    every change written from here (the manager delivers its events). Safe
    from any thread.
    """

    #: Reports held for one document at most; one more is written at once, with them.
    MAX_HELD = 1000
    #: Writes between sweeps of documents whose last write is too old to hold anything.
    SWEEP_EVERY = 256

    def __init__(self, interval: float, write: Writer, changed: Callable[[Change], None]) -> None:
        if not interval > 0:
            raise ValueError(f"progress_interval must be positive to hold reports, not {interval!r}")
        self.interval = interval
        self._write = write
        self._changed = changed
        self._docs: dict[str, _Doc] = {}
        #: The doc_ids with held reports.
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._writes = 0
        _live.add(self)

    def hold(self, doc_id: str, mutation: Mutation) -> bool:
        """Hold ``mutation`` back if it only reports progress within a stage written lately.

        ``False``: it must be written now (with :meth:`write`). Raises what the
        mutation raises on this manager's view of the record, holding nothing.
        """
        now = time.monotonic()
        with self._lock:
            doc = self._docs.get(doc_id)
            if (
                doc is None
                or now - doc.written >= self.interval
                or len(doc.held) >= self.MAX_HELD
                or not is_progress(mutation, doc.record)
            ):
                return False
            doc.record = mutation(doc.record)
            doc.held.append(mutation)
            first = doc_id not in self._pending
            self._pending.add(doc_id)
            due_in = doc.written + self.interval - now
        if first:
            janitor.call_later(due_in, self, _write_due, doc_id)
        return True

    def holds(self, doc_id: str) -> bool:
        """Whether reports of ``doc_id`` are held (unlocked: a hint, exact for this thread's own)."""
        return doc_id in self._pending

    @property
    def pending(self) -> bool:
        """Whether any report is held."""
        return bool(self._pending)

    def write(self, doc_id: str, mutation: Callable[[Record], Record]) -> Change:
        """Write ``mutation`` now, after the reports held for ``doc_id``, as one change.

        When the held reports can no longer be applied (the document changed
        elsewhere), ``mutation`` is written alone, and raises what it raises.
        """
        held = self._take(doc_id)
        if held is None:
            change = self._write(doc_id, mutation)
        else:
            try:
                change = self._write(doc_id, Chain((held, mutation)))
            except StoreUnavailableError:
                self._give_back(doc_id, held)
                raise
            except Exception:
                # One of them is refused: write what can be written, in order, and let
                # the caller's own change raise its own error.
                self._write_held(doc_id, held)
                change = self._write(doc_id, mutation)
        self.wrote(doc_id, change)
        return change

    def wrote(self, doc_id: str, change: Change) -> None:
        """Remember the record ``change`` stored: reports within its stage may be held for a while."""
        record = change.record
        with self._lock:
            if record is None or record["status"] in _FINAL:
                self._docs.pop(doc_id, None)
            elif doc_id not in self._pending:
                self._docs[doc_id] = _Doc(record, time.monotonic(), record)
            self._writes += 1
            if self._writes % self.SWEEP_EVERY == 0:
                self._sweep()

    def flush(self, doc_id: str | None = None) -> None:
        """Write the reports held for ``doc_id`` (``None``: for every document) now."""
        for name in [doc_id] if doc_id is not None else list(self._pending):
            held = self._take(name)
            if held is not None:
                self._write_held(name, held)

    def _take(self, doc_id: str) -> _Held | None:
        # The held reports of doc_id as one change, no longer held.
        with self._lock:
            if doc_id not in self._pending:
                return None
            self._pending.discard(doc_id)
            doc = self._docs.get(doc_id)
            if doc is None or not doc.held:
                return None
            held, doc.held = doc.held, []
            return _Held(doc.base, doc.record, Chain(tuple(held)))

    def _give_back(self, doc_id: str, held: _Held) -> None:
        # The store did not answer: hold them again, before anything held since.
        with self._lock:
            doc = self._docs.get(doc_id)
            if doc is None:
                return
            doc.held[:0] = held.chain.changes
            doc.base = held.base
            first = doc_id not in self._pending
            self._pending.add(doc_id)
        if first:
            janitor.call_later(max(self.interval, 1.0), self, _write_due, doc_id)

    def _write_held(self, doc_id: str, held: _Held) -> None:
        try:
            change = self._write(doc_id, held)
        except StoreUnavailableError as exc:
            log.warning("%s; progress of document %s is written when it answers", exc, doc_id)
            self._give_back(doc_id, held)
            return
        except Exception as exc:
            # Cancelled, removed or taken over since: the reports no longer apply. Forget the
            # view, so that the writer's next report goes to the store and learns why.
            log.info("progress reports of document %s were not written: %s", doc_id, exc)
            with self._lock:
                self._docs.pop(doc_id, None)
            return
        self.wrote(doc_id, change)
        self._changed(change)

    def _sweep(self) -> None:
        # Called with the lock held: forget views too old to hold a report.
        oldest = time.monotonic() - self.interval
        stale = [d for d, doc in self._docs.items() if doc.written < oldest and d not in self._pending]
        for doc_id in stale:
            del self._docs[doc_id]


def _write_due(buffer: ProgressBuffer, doc_id: str) -> None:
    buffer.flush(doc_id)


_live: weakref.WeakSet[ProgressBuffer] = weakref.WeakSet()


def _flush_at_exit() -> None:
    # A process that ends normally writes what it held (a killed one loses one interval).
    for buffer in list(_live):
        try:
            buffer.flush()
        except Exception as exc:  # the store may already be closed
            log.info("held progress reports were not written at exit: %s", exc)


atexit.register(_flush_at_exit)
# A multiprocessing child ends with os._exit(), which skips atexit: its exit finalizers run.
multiprocessing.util.Finalize(None, _flush_at_exit, exitpriority=100)
