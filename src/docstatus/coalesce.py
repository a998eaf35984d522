"""Progress within a stage, written at most once per interval per document.

A pipeline reports every page and every chunk; written one by one, those
reports cost a store transaction and an event each, many times a second, for
a change no reader needs at that rate. A manager therefore holds a report
back when it only moves progress within the document's stage (see
:func:`~docstatus.records.is_progress`) and the document was written less than
``interval`` seconds ago. Like tqdm's ``mininterval``, the reports held
meanwhile are folded into one: each counter keeps its latest value, and the
write is the last report's, with every counter it was given since. So:

* a report is checked at once against the record as last written plus what is
  held (:func:`~docstatus.records.check_progress`, and the lease of a fenced
  one), so a bad one raises to its caller exactly as a direct write would, and
  is not held;
* what is held is written when the interval has passed (on the scheduler's
  progress thread), or before the document's next change that is not held (in
  the same write: a transition carries the progress reported before it), or
  when this manager reads the document or lists, or at
  :meth:`ProgressBuffer.flush`; the latest value is never lost;
* transitions, completion, failure and metadata are never held, so a killed
  process loses at most the last interval of progress, never a transition.

A held report that can no longer be applied (the document was cancelled or
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
from dataclasses import dataclass
from typing import Any

from . import janitor
from .errors import StoreUnavailableError
from .models import FINISHED
from .records import Chain, Mutation, Record, check_lease, check_progress, is_progress_report
from .stores.base import Change

__all__ = ["ProgressBuffer"]

log = logging.getLogger(__name__)

_FINAL = frozenset(s.value for s in FINISHED)

#: Writes a change of one document: ``write(doc_id, change)`` (a store's ``modify``).
Writer = Callable[[str, Callable[[Record], Record]], Change]


@dataclass(slots=True)
class _Doc:
    #: The record as this manager last wrote it.
    record: Record
    #: ``time.time()`` of that write (reports carry that clock; a jump of it only
    #: changes whether a report is held, never for longer than the interval).
    written: float
    #: The held reports folded into one (``None``: nothing held).
    held: Mutation | None = None


def _foldable(held: Mutation, progress: float | None, epoch: int | None) -> bool:
    """Whether a later report (given ``progress``, under lease ``epoch``) can be folded into ``held``.

    They fold when both give progress or neither does (a given progress beside
    one computed from pages would lose one of them), under one lease.
    """
    return (held.progress is None) == (progress is None) and held.epoch == epoch


def _fold(held: Mutation, progress: float | None, fields: dict[str, Any], now: float) -> None:
    """Fold a later report into ``held``, in place (``_foldable`` said they fold).

    In place because this runs once per held report: ``held`` belongs to the
    buffer, so nothing else sees it change.
    """
    held.fields.update(fields)
    held.now = now
    if progress is not None and held.progress is not None and progress > held.progress:
        held.progress = progress


class ProgressBuffer:
    """The progress reports one manager holds back, per document (see the module docstring).

    ``write`` stores a change (the store's ``modify``), ``changed`` is told of
    every change written from here (the manager delivers its events). Safe
    from any thread.
    """

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

    def hold(
        self,
        doc_id: str,
        target: str,
        progress: float | None,
        fields: dict[str, Any],
        now: float,
        epoch: int | None = None,
    ) -> bool:
        """Hold back ``update_status(doc_id, target, progress, **fields)`` made at ``now``
        (fenced by lease ``epoch``) if it only reports progress within a stage written lately.

        ``False``: it must be written now (with :meth:`write`). Raises what
        storing it would raise on the record as last written plus what is
        held, holding nothing. ``fields`` becomes the buffer's (it is the
        caller's own keywords).
        """
        with self._lock:
            doc = self._docs.get(doc_id)
            if doc is None or now - doc.written >= self.interval:
                return False
            record = doc.record
            if not is_progress_report(target, fields, record):
                return False
            held = doc.held
            if held is not None and not _foldable(held, progress, epoch):
                return False
            if epoch is not None:
                check_lease(record, epoch)
            if held is not None:
                check_progress(record, fields, held.fields)
                _fold(held, progress, fields, now)
                return True
            check_progress(record, fields)
            doc.held = Mutation("update", now, target, progress, fields, epoch=epoch)
            self._pending.add(doc_id)
            due_in = min(doc.written + self.interval - now, self.interval)
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
        """Write ``mutation`` now, after the report held for ``doc_id``, as one change.

        When the held report can no longer be applied (the document changed
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
                self._docs[doc_id] = _Doc(record, time.time())
            self._writes += 1
            if self._writes % self.SWEEP_EVERY == 0:
                self._sweep()

    def flush(self, doc_id: str | None = None) -> None:
        """Write the reports held for ``doc_id`` (``None``: for every document) now."""
        for name in [doc_id] if doc_id is not None else list(self._pending):
            held = self._take(name)
            if held is not None:
                self._write_held(name, held)

    def _take(self, doc_id: str) -> Mutation | None:
        # The report held for doc_id, no longer held.
        with self._lock:
            if doc_id not in self._pending:
                return None
            self._pending.discard(doc_id)
            doc = self._docs.get(doc_id)
            if doc is None:
                return None
            held, doc.held = doc.held, None
            return held

    def _give_back(self, doc_id: str, held: Mutation) -> None:
        # The store did not answer: hold it again, folded with anything held since.
        with self._lock:
            doc = self._docs.get(doc_id)
            if doc is None:
                return
            later = doc.held
            if later is None:
                doc.held = held
            elif _foldable(held, later.progress, later.epoch):
                _fold(held, later.progress, later.fields, later.now)
                doc.held = held
            first = doc_id not in self._pending
            self._pending.add(doc_id)
        if first:
            janitor.call_later(max(self.interval, 1.0), self, _write_due, doc_id)

    def _write_held(self, doc_id: str, held: Mutation) -> None:
        try:
            change = self._write(doc_id, held)
        except StoreUnavailableError as exc:
            log.warning("%s; progress of document %s is written when it answers", exc, doc_id)
            self._give_back(doc_id, held)
            return
        except Exception as exc:
            # Cancelled, removed or taken over since: the report no longer applies. Forget the
            # record, so that the writer's next report goes to the store and learns why.
            log.info("progress reports of document %s were not written: %s", doc_id, exc)
            with self._lock:
                self._docs.pop(doc_id, None)
            return
        self.wrote(doc_id, change)
        self._changed(change)

    def _sweep(self) -> None:
        # Called with the lock held: forget records too old to hold a report on.
        oldest = time.time() - self.interval
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
