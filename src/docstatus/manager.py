"""StatusManager: the rules (validation, lifecycle, progress, timing), over a store.

The manager validates everything it is given before touching the store, then
hands the store a pure function of the stored record (see
:mod:`docstatus.records`), which the store applies atomically. Rejected input
therefore never changes stored status. Events are delivered after the store's
lock is released (see :mod:`docstatus.events`).
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from . import janitor
from .coalesce import ProgressBuffer
from .errors import DocumentActiveError, DocumentNotFoundError, InvalidTransitionError, LeaseLostError
from .events import Event, EventFeed, EventHub, Subscriber, to_event
from .models import (
    FINISHED,
    KEYWORD_CHECKS,
    MANAGED_FIELDS,
    MAX_ERROR,
    MAX_FILENAME,
    UPDATE_PARAMETERS,
    ProcessingStatus,
    Status,
    check_count,
    check_metadata,
    check_seconds,
    check_text,
)
from .records import Mutation, Record, new_record, status_json, to_model
from .stores import Change, Store, open_store
from .stores.adopt import Reconciliation
from .stores.base import LeaseEntry, Page, Query, WorkerEntry
from .stores.memory import MemoryStore

# MAX_ERROR is the model's limit, named here too for callers that cut error messages to fit.
__all__ = [
    "MAX_ERROR",
    "MAX_LIMIT",
    "DocRef",
    "Lease",
    "StatusManager",
    "get_status_manager",
    "processing_status",
]

#: A document reference: its doc_id, or a snapshot of it.
DocRef = str | ProcessingStatus

#: The process-wide dict that the singleton manager wraps (the contract's
#: global). Read it freely; change it only through the manager.
processing_status: dict[str, Any] = {}

MAX_DOC_ID = 256
MAX_LIMIT = 100_000

# Which keywords update_status accepts and how each is checked come from the
# model's field roles (docstatus.models). Keywords that check_count checks:
# page and chunk counters, the bulk of all updates.
_COUNT_FIELDS = frozenset(name for name, check in KEYWORD_CHECKS.items() if check is check_count)
# Status name -> the same name as a plain str: the hot path compares and hashes
# plain strings, which is several times cheaper than going through the enum.
_STATUS_BY_NAME: dict[str, str] = {s.value: s.value for s in Status}


def _doc_id_of(doc: object) -> str:
    """The doc_id a document reference names (no validation: lookups never validate)."""
    if isinstance(doc, str):
        return doc
    if isinstance(doc, ProcessingStatus):
        return doc.doc_id
    raise TypeError(f"a document is a doc_id string or a ProcessingStatus, not {type(doc).__name__}")


def validate_doc_id(doc_id: object) -> str:
    """``doc_id`` if it is a non-empty string of at most 256 printable characters."""
    if not isinstance(doc_id, str):
        raise TypeError(f"doc_id must be a string, not {type(doc_id).__name__}")
    if not doc_id:
        raise ValueError("doc_id must not be empty")
    if len(doc_id) > MAX_DOC_ID:
        raise ValueError(f"doc_id is {len(doc_id)} characters long; the limit is {MAX_DOC_ID}")
    if not doc_id.isprintable():
        raise ValueError("doc_id must contain only printable characters")
    return doc_id


def _worker_id(value: object) -> str:
    """``value`` if it can name a worker: like a doc_id, 1 to 256 printable characters."""
    worker_id = check_text("worker_id", value, MAX_DOC_ID, empty_ok=False)
    if not worker_id.isprintable():
        raise ValueError("worker_id must contain only printable characters")
    return worker_id


def _progress(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"progress must be a number, not {type(value).__name__}")
    if not 0.0 <= value <= 1.0:  # also false for NaN
        raise ValueError(f"progress must be between 0.0 and 1.0, got {value!r}")
    return float(value)


def _status(value: object) -> str:
    status = _STATUS_BY_NAME.get(value) if isinstance(value, str) else None
    if status is None:
        raise ValueError(f"unknown status {value!r}; expected one of {', '.join(_STATUS_BY_NAME)}")
    return status


def _fields(status: str, fields: dict[str, Any]) -> dict[str, Any]:
    """Checked copies of ``update_status``'s keywords."""
    clean: dict[str, Any] = {}
    for name, value in fields.items():
        check = KEYWORD_CHECKS.get(name)
        if check is None:
            _unknown_field(name)
        clean[name] = check(name, value)  # type: ignore[misc]
    if "error" in clean and status != "failed":
        raise ValueError("error= is only accepted with status 'failed'")
    if status == "failed" and not clean.get("error"):
        raise ValueError("status 'failed' needs error= with a message")
    return clean


def _only_counts(fields: dict[str, Any]) -> bool:
    """Whether every keyword is a counter holding a value ``check_count`` returns unchanged.

    Such keywords need neither a check call each nor a copy (``**fields`` is
    already the call's own dict, and ints are immutable), which is most of
    what validating a page update costs.
    """
    for name, value in fields.items():
        if type(value) is not int or value < 0 or name not in _COUNT_FIELDS:
            return False
    return True


def _unknown_field(name: str) -> None:
    if name in MANAGED_FIELDS:
        raise TypeError(f"{name} is set by the StatusManager and cannot be passed to update_status")
    raise TypeError(
        f"update_status() got an unexpected keyword {name!r}; accepted: {', '.join(UPDATE_PARAMETERS)}"
    )


class StatusManager:
    """Thread-safe tracker of document processing status.

    Every method may be called from any thread. Changes are atomic: a call
    either makes its whole change or raises and changes nothing. Methods that
    take a document accept its doc_id or a :class:`ProcessingStatus` of it.

    ``StatusManager()`` keeps statuses in a new private dict;
    ``StatusManager(d)`` wraps the dict ``d`` (managers wrapping the same dict
    share its lock); ``store=`` takes a :class:`~docstatus.stores.Store` or a
    store URL (``memory://``, ``sqlite:///path.db``, ``redis://host:port/db``).
    Finished documents older than ``cleanup_max_age_seconds`` are removed every
    ``cleanup_interval_seconds`` (``None`` turns that off).

    Progress within a stage (pages, chunks, the caller's ETA) is written at
    most every ``progress_interval`` seconds per document (``0``: every
    report): a report that comes sooner is checked at once and held back, and
    written when the interval has passed, before the document's next
    transition (in the same write), or when this manager reads or lists. The
    latest value is never lost and transitions, completion, failure and
    metadata are written at once; other processes and the wrapped dict see the
    stored state, at most one interval behind. See :mod:`docstatus.coalesce`.
    """

    def __init__(
        self,
        status_dict: dict[str, Any] | None = None,
        *,
        store: Store | str | None = None,
        cleanup_interval_seconds: float | None = 900,
        cleanup_max_age_seconds: float = 3600,
        progress_interval: float = 0.1,
    ) -> None:
        if status_dict is not None and store is not None:
            raise ValueError("pass either status_dict or store, not both")
        self._owns_store = isinstance(store, str) or (store is None and status_dict is None)
        if isinstance(store, str):
            self._store: Store = open_store(store)
        elif store is not None:
            if not isinstance(store, Store):
                raise TypeError(f"store must be a Store or a URL, not {type(store).__name__}")
            self._store = store
        elif status_dict is not None:
            self._store = MemoryStore.wrapping(status_dict)
        else:
            self._store = MemoryStore()
        self._hub = _hub_for(self._store)
        self._closed = False
        interval = check_seconds("progress_interval", progress_interval) or 0.0
        self._progress = ProgressBuffer(interval, self._store.modify, self._changed) if interval > 0 else None
        self.cleanup_max_age_seconds = check_seconds("cleanup_max_age_seconds", cleanup_max_age_seconds)
        cleanup = check_seconds("cleanup_interval_seconds", cleanup_interval_seconds)
        if cleanup is not None:
            if cleanup <= 0:
                raise ValueError("cleanup_interval_seconds must be positive, or None to disable")
            janitor.schedule(self, cleanup)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> StatusManager:
        """A manager over the store that ``url`` names (see the class docstring)."""
        return cls(store=url, **kwargs)

    @property
    def store(self) -> Store:
        """The store this manager keeps statuses in."""
        return self._store

    @property
    def progress_interval(self) -> float:
        """Seconds between writes of one document's progress within a stage (0: every report)."""
        return 0.0 if self._progress is None else self._progress.interval

    # -- changes ---------------------------------------------------------------

    def _changed(self, change: Change) -> None:
        if self._hub.active:
            self._hub.pump(change)

    def _modify(self, doc_id: str, mutation: Mutation) -> Change:
        """Write ``mutation`` now (after what is held for the document, in the same write)."""
        progress = self._progress
        if progress is None:
            return self._store.modify(doc_id, mutation)
        return progress.write(doc_id, mutation)

    def flush(self) -> None:
        """Write every progress report held back (see ``progress_interval``) now."""
        if self._progress is not None:
            self._progress.flush()

    def _settle(self, doc_id: str) -> None:
        # A read by this manager sees every report made through it.
        progress = self._progress
        if progress is not None and progress.holds(doc_id):
            progress.flush(doc_id)

    def _settle_all(self) -> None:
        progress = self._progress
        if progress is not None and progress.pending:
            progress.flush()

    def create_status(
        self, doc_id: str, filename: str, metadata: dict[str, Any] | None = None
    ) -> ProcessingStatus:
        """Queue a new document and return its status.

        Raises ``DuplicateDocumentError`` (a ``ValueError``) if ``doc_id``
        exists, ``ValueError``/``TypeError`` for an invalid doc_id, filename or
        non-JSON metadata.
        """
        validate_doc_id(doc_id)
        check_text("filename", filename, MAX_FILENAME, empty_ok=False)
        meta = check_metadata("metadata", {} if metadata is None else metadata)
        now = time.time()
        record = new_record(doc_id, filename, meta, now)
        change = self._store.create(record)
        self._changed(change)
        return to_model(record, now)

    def update_status(self, doc: DocRef, status: str, progress: float | None = None, **fields: Any) -> None:
        """Move the document to ``status`` (or stay in it, reporting progress).

        ``progress=None`` computes it with :func:`progress_for` from ``page``/
        ``total_pages`` or ``chunk``/``total_chunks``; a value lower than the
        stored one keeps the stored one. Accepted keywords: ``stage``,
        ``page``, ``total_pages``, ``estimated_remaining``, ``metadata``
        (merged), ``chunk``, ``total_chunks``, ``error`` (only with
        ``failed``). Raises ``DocumentNotFoundError`` (a ``KeyError``),
        ``InvalidTransitionError`` (a ``ValueError``), ``ValueError`` for
        values out of range and ``TypeError`` for unknown keywords.
        """
        # The common cases of _doc_id_of and _status inline: this is the hot path.
        doc_id = doc if type(doc) is str else _doc_id_of(doc)
        target = _STATUS_BY_NAME.get(status) if isinstance(status, str) else None
        if target is None:
            target = _status(status)
        if progress is not None:
            progress = _progress(progress)
        clean = fields if target != "failed" and _only_counts(fields) else _fields(target, fields)
        now = time.time()
        buffer = self._progress
        if buffer is None:
            change = self._store.modify(doc_id, Mutation("update", now, target, progress, clean))
        elif buffer.hold(doc_id, target, progress, clean, now):
            return
        else:
            change = buffer.write(doc_id, Mutation("update", now, target, progress, clean))
        if self._hub.active:
            self._hub.pump(change)

    def mark_completed(self, doc: DocRef, **metadata: Any) -> None:
        """Complete the document from any non-final status; ``metadata`` is merged in."""
        doc_id = _doc_id_of(doc)
        extra = check_metadata("metadata", metadata) if metadata else {}
        now = time.time()
        self._changed(self._modify(doc_id, Mutation("complete", now, fields=extra)))

    def mark_failed(self, doc: DocRef, error: str) -> None:
        """Fail the document from any non-final status, keeping its progress."""
        doc_id = _doc_id_of(doc)
        message = check_text("error", error, MAX_ERROR, empty_ok=False)
        now = time.time()
        self._changed(self._modify(doc_id, Mutation("fail", now, fields={"error": message})))

    def cancel(self, doc: DocRef) -> None:
        """Stop an active document: it fails with the error ``"cancelled"``, keeping its progress.

        Works from ``queued`` and from every active stage. A lease on the
        document is released, so its worker's next fenced write (or renewal)
        raises ``LeaseLostError`` and the worker stops. A finished document
        raises ``InvalidTransitionError`` (it has already finished) and
        nothing changes; an unknown one ``DocumentNotFoundError``.
        """
        doc_id = _doc_id_of(doc)
        self._changed(self._modify(doc_id, Mutation("cancel", time.time())))

    def requeue(self, doc: DocRef) -> None:
        """Start a new attempt of a *failed* document: queued, progress 0, error cleared.

        ``metadata["attempt"]`` counts attempts (a missing one counts as 1).
        Any other status raises ``InvalidTransitionError``.
        """
        doc_id = _doc_id_of(doc)
        now = time.time()
        self._changed(self._modify(doc_id, Mutation("requeue", now)))

    # -- leases ----------------------------------------------------------------

    def claim(self, doc: DocRef, *, worker: str | None = None, seconds: float = 30.0) -> Lease | None:
        """Claim a queued document for ``worker``: atomically ``parsing``, held by a new lease.

        ``worker`` defaults to ``"<hostname>:<pid>"`` and is ``metadata["worker"]``
        while the lease is held. Returns ``None`` when the document is not
        queued (another worker holds it, or it has finished); of any number of
        concurrent claims from any process, exactly one gets the lease. Raises
        ``DocumentNotFoundError`` when there is no such document.
        """
        doc_id = _doc_id_of(doc)
        holder = worker if worker is not None else f"{socket.gethostname()}:{os.getpid()}"
        if not seconds > 0:
            raise ValueError(f"a lease lasts a positive number of seconds, not {seconds!r}")
        mutation = Mutation("claim", time.time(), fields={"worker": holder, "seconds": float(seconds)})
        try:
            change = self._modify(doc_id, mutation)
        except InvalidTransitionError:
            return None
        self._changed(change)
        epoch = int(change.record["_lease"]["epoch"]) if change.record else 0
        return Lease(doc_id, epoch, holder, float(seconds), self)

    def expire_leases(self, *, max_attempts: int = 3, limit: int = 100) -> list[str]:
        """Recover the documents whose lease expired: requeue them, or fail them after ``max_attempts``.

        A document is requeued as attempt + 1 with ``metadata["recovery"]``
        saying which worker was lost; once its attempt reaches
        ``max_attempts`` it fails with an error that says so. A lease renewed
        or released meanwhile is left alone. Returns the doc_ids handled.
        """
        handled = []
        for doc_id, epoch in self._store.expired_leases(limit):
            fields = {"max_attempts": _max_attempts(max_attempts)}
            mutation = Mutation("lease_lost", time.time(), fields=fields, epoch=epoch)
            try:
                change = self._store.expire_lease(doc_id, epoch, mutation)
            except (LeaseLostError, DocumentNotFoundError):
                continue  # released or passed on since it was listed
            if change is not None:
                self._changed(change)
                handled.append(doc_id)
        return handled

    def leases(self) -> list[LeaseEntry]:
        """Every lease held now: doc_id, epoch, worker and expiry (store clock), soonest first."""
        return self._store.leases()

    def _fenced(self, doc_id: str, mutation: Mutation) -> None:
        self._changed(self._modify(doc_id, mutation))

    def _fenced_update(
        self, doc_id: str, epoch: int, target: str, progress: float | None, fields: dict[str, Any]
    ) -> None:
        now = time.time()
        buffer = self._progress
        if buffer is None or not buffer.hold(doc_id, target, progress, fields, now, epoch):
            self._fenced(doc_id, Mutation("update", now, target, progress, fields, epoch=epoch))

    def _renew(self, lease: Lease) -> None:
        if not self._store.renew_lease(lease.doc_id, lease.epoch, lease.seconds):
            raise LeaseLostError(lease.doc_id, lease.epoch)

    # -- the worker registry ---------------------------------------------------

    def heartbeat(self, worker_id: str, info: Mapping[str, Any], seconds: float) -> None:
        """Register the worker process ``worker_id``, or refresh it: alive for ``seconds`` from now.

        ``info`` (JSON-compatible, e.g. ``{"host", "pid", "engine", "processes",
        "started_at", "children"}``) replaces what the last heartbeat sent.
        Times are the store's clock, so every process of a shared store sees
        the same entries. A worker that stops beating vanishes from
        :meth:`workers` ``seconds`` after its last heartbeat. Heartbeats are
        not changes: no event, no ``seq``. ``ValueError``/``TypeError`` for an
        invalid id, non-JSON info or seconds that are not positive.
        """
        name = _worker_id(worker_id)
        data = check_metadata("info", dict(info) if isinstance(info, Mapping) else info)
        if check_seconds("seconds", seconds) is None or not seconds > 0:
            raise ValueError(f"a heartbeat lasts a positive number of seconds, not {seconds!r}")
        self._store.heartbeat(name, data, float(seconds))

    def workers(self) -> list[WorkerEntry]:
        """Every live worker process of the store (any host), ordered by ``worker_id``."""
        return self._store.workers()

    def forget_worker(self, worker_id: str) -> None:
        """Remove ``worker_id`` from the registry at once (at a clean shutdown); none: nothing happens."""
        self._store.forget_worker(_worker_id(worker_id))

    # -- reads -----------------------------------------------------------------

    def get_status(self, doc: DocRef) -> ProcessingStatus | None:
        """A snapshot of the document's status, or ``None`` if there is none."""
        doc_id = _doc_id_of(doc)
        self._settle(doc_id)
        record = self._store.get(doc_id)
        return None if record is None else to_model(record, time.time())

    def get_status_json(self, doc: DocRef) -> dict[str, Any] | None:
        """The document's status as JSON-ready data (the body of ``GET /status/{doc_id}``:
        the model's JSON plus ``timestamp``), or ``None``. Built straight from the stored
        record, without a :class:`ProcessingStatus` in between."""
        doc_id = _doc_id_of(doc)
        self._settle(doc_id)
        record = self._store.get(doc_id)
        return None if record is None else status_json(record, time.time())

    def require_status(self, doc: DocRef) -> ProcessingStatus:
        """Like :meth:`get_status`, but ``DocumentNotFoundError`` instead of ``None``."""
        doc_id = _doc_id_of(doc)
        self._settle(doc_id)
        record = self._store.get(doc_id)
        if record is None:
            raise DocumentNotFoundError(doc_id)
        return to_model(record, time.time())

    def _models(self, records: list[Record]) -> list[ProcessingStatus]:
        now = time.time()
        return [to_model(r, now) for r in records]

    def _bodies(self, records: list[Record]) -> list[dict[str, Any]]:
        now = time.time()
        return [status_json(r, now) for r in records]

    def list_active(self) -> list[ProcessingStatus]:
        """Documents not yet completed or failed, most recently updated first."""
        self._settle_all()
        return self._models(self._store.active())

    def list_active_json(self) -> list[dict[str, Any]]:
        """:meth:`list_active` as status JSON (as :meth:`get_status_json` gives it)."""
        self._settle_all()
        return self._bodies(self._store.active())

    def list_all(self, limit: int = 100) -> list[ProcessingStatus]:
        """Up to ``limit`` documents, most recently updated first."""
        self._settle_all()
        return self._models(self._store.recent(_limit(limit)))

    def list_all_json(self, limit: int = 100) -> list[dict[str, Any]]:
        """:meth:`list_all` as status JSON (as :meth:`get_status_json` gives it)."""
        self._settle_all()
        return self._bodies(self._store.recent(_limit(limit)))

    def find_by_prefix_json(self, prefix: str, limit: int = 10) -> list[dict[str, Any]]:
        """Up to ``limit`` documents whose doc_id starts with ``prefix`` (status JSON), most recent first.

        What resolves a short id: one result is the document, several mean the
        prefix is ambiguous. Like every lookup it never validates: an empty
        or impossible prefix simply finds what starts with it.
        """
        self._settle_all()
        return self._bodies(self._store.with_prefix(str(prefix), _limit(limit)))

    def query(self, query: Query) -> Page:
        """One page of a listing (see :meth:`Store.query <docstatus.stores.Store.query>`):
        filters, sort order and the cursor to go on from; costs O(page)."""
        self._settle_all()
        return self._store.query(query)

    def count_by_status(self) -> dict[str, int]:
        """Counts per status plus ``active``, ``completed``, ``failed`` and ``total``."""
        self._settle_all()
        stored = self._store.counts()
        counts = {s.value: stored.get(s.value, 0) for s in Status}
        counts["active"] = sum(n for s, n in counts.items() if Status(s) not in FINISHED)
        counts["total"] = sum(stored.get(s.value, 0) for s in Status)
        return counts

    # -- cleanup ---------------------------------------------------------------

    CLEANUP_BATCH = 1000

    def cleanup_old_entries(self, max_age_seconds: float = 3600) -> int:
        """Remove completed/failed documents that finished over ``max_age_seconds`` ago.

        Returns how many were removed. Works in batches, releasing the store
        between them, so updates keep flowing during a large cleanup.
        """
        age = check_seconds("max_age_seconds", max_age_seconds)
        before = time.time() - (age or 0.0)
        removed = 0
        while True:
            changes = self._store.expire(before, self.CLEANUP_BATCH)
            removed += len(changes)
            if changes:
                self._changed(changes[-1])
            if len(changes) < self.CLEANUP_BATCH:
                return removed
            # Releasing the lock alone is not enough: a thread waiting for it
            # also needs the GIL, and this thread would take the lock again
            # before the waiter ever ran. Yielding the GIL lets it in.
            time.sleep(0)

    def remove(self, doc: DocRef) -> ProcessingStatus:
        """Remove a finished (completed or failed) document now, whatever its age; returns its last status.

        The removal is a ``removed`` event, as a cleanup's are. Raises
        ``DocumentNotFoundError`` when there is no such document and
        ``DocumentActiveError`` (an ``InvalidTransitionError``) while it is
        queued or active: cancel it first. Checked and removed atomically, so
        a document that is active at that moment is never removed.
        """
        doc_id = _doc_id_of(doc)
        last = self.require_status(doc_id)
        for _ in range(3):
            change = self._store.remove_finished(doc_id)
            if change is not None:
                self._changed(change)
                return last
            last = self.require_status(doc_id)
            if last.status not in FINISHED:
                break
            # It finished between the read and the removal: try again.
        raise DocumentActiveError(doc_id, last.status.value)

    def run_scheduled_cleanup(self) -> None:
        """The janitor's entry point (automatic cleanup)."""
        if not self._closed:
            self.cleanup_old_entries(self.cleanup_max_age_seconds or 0.0)

    # -- events ----------------------------------------------------------------

    def subscribe(self, callback: Subscriber, *, progress: bool = True) -> Callable[[], None]:
        """Call ``callback(event)`` after every change; returns a function that unsubscribes.

        Every change reaches the callback once, in sequence order, on the
        manager's event thread, soon after the change (the writer never waits
        for its subscribers: :meth:`flush_events` waits until they have had the
        changes so far). The event is read-only and shared by every subscriber
        (see :class:`~docstatus.events.Event`). A callback may use the manager;
        the change it makes comes after the current callback returns. An
        exception in a callback is logged and does not affect the change. A
        callback that stays busy with one event for longer than
        ``EventHub.STALL_SECONDS`` (0.5 s) no longer holds the others up: it
        goes on alone, fed from the store's change log, until it has caught up.

        ``progress=False`` is for a callback that ignores changes which keep
        the document's status (progress reports): it may be spared those that
        other processes made, which a shared store then need not read for it
        (the SQLite and Redis stores' logs say which they are). It still gets every
        change that creates, moves or removes a document, in order.
        """
        return self._hub.subscribe(callback, progress=progress)

    def flush_events(self, timeout: float | None = 10.0) -> bool:
        """Wait until every subscriber has had every change made so far; ``False`` after ``timeout``.

        ``True`` at once when there is no subscriber. A subscriber that is
        being fed alone (it was too slow) is not waited for; called from a
        subscriber, it answers at once (it cannot wait for its own thread).
        """
        return self._hub.wait_delivered(self._store.last_seq(), timeout)

    def changes_since(self, seq: int, limit: int = 1000) -> list[Event]:
        """Logged changes after ``seq`` (for resuming a stream), oldest first."""
        return [to_event(c) for c in self._store.changes_since(seq, _limit(limit))]

    @property
    def last_seq(self) -> int:
        """The sequence number of the most recent change."""
        return self._store.last_seq()

    #: Events an async stream keeps for a slow consumer exactly as they came; past
    #: that it keeps only each document's latest state (see :class:`~docstatus.events.Mailbox`).
    STREAM_EXACT = 100
    #: Events an async stream buffers for a slow consumer at most; past that it stops
    #: buffering and catches up from the store's change log instead.
    STREAM_BUFFER = 1000
    #: Changes a catching-up stream reads from the log at a time.
    STREAM_BATCH = 100

    async def events(
        self, since: int | None = None, *, until: asyncio.Future[Any] | None = None
    ) -> AsyncIterator[Event]:
        """Every change as an async stream; with ``since``, first the logged changes after it.

        Stops when the consumer stops iterating, or once ``until`` (a future
        of the consumer's loop) is done.
        Every stream of one event loop shares one subscription and receives
        the same read-only event objects. Events are never repeated
        and arrive in ``seq`` order. A consumer that falls more than
        ``STREAM_EXACT`` events behind gets the latest state of each document
        instead of every change; one more than ``STREAM_BUFFER`` behind costs no
        more memory: it is served from the store's change log until it has
        caught up. A ``reset`` event (see :class:`~docstatus.events.Event`) says
        that changes were missed: the store restarted empty, ``since`` is ahead
        of the store, or the changes after it are no longer in the log; the
        consumer should read the listing again. Events go on after it.
        """
        feed = self.event_feed(since)
        if until is not None:
            until.add_done_callback(lambda _: feed.close())
        try:
            while (event := await feed.next()) is not None:
                yield event
        finally:
            feed.close()

    def event_feed(self, since: int | None = None) -> EventFeed:
        """What :meth:`events` iterates, as an object: ``await feed.next()`` per change, no generator.

        Call it on the event loop that will consume it; the same promises as
        :meth:`events` (order, no repeats, coalescing and the log for a slow
        consumer, ``reset``). :meth:`EventFeed.close` when done (it leaves the
        shared subscription). For servers that hold many streams: a change then
        costs each one wake-up of its consumer.
        """
        loop = asyncio.get_running_loop()
        return EventFeed(
            lambda offer: self._hub.join_stream(loop, offer),
            self.changes_since,
            lambda: self.last_seq,
            since,
            exact=self.STREAM_EXACT,
            limit=self.STREAM_BUFFER,
            batch=self.STREAM_BATCH,
        )

    # -- direct writes ---------------------------------------------------------

    def reconcile(self) -> Reconciliation:
        """Adopt now whatever code wrote straight into the wrapped dict, and say what that was.

        The manager notices such writes by itself whenever it touches or lists a
        document (see the README, "Adopting docstatus in existing code"); this
        looks at every entry at once (O(entries)). Adopted writes are changes:
        subscribers get their events. Stores other than a wrapped dict have
        nothing to reconcile (an empty result).
        """
        if isinstance(self._store, MemoryStore):
            return self._store.reconcile()
        return Reconciliation()

    # -- lifetime --------------------------------------------------------------

    def close(self) -> None:
        """Stop events and automatic cleanup; close the store if this manager opened it."""
        if self._closed:
            return
        self._closed = True
        self.flush()
        self._hub.close()
        if self._owns_store:
            self._store.close()

    def __enter__(self) -> StatusManager:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<StatusManager store={self._store.url!r}>"


def _hub_for(store: Store) -> EventHub:
    hub = EventHub(store)
    if isinstance(store, MemoryStore):
        # What code writes into a wrapped dict directly becomes changes too, logged as the
        # store adopts them: the hub then delivers them like the manager's own.
        store.add_listener(hub.pump)
    return hub


def _max_attempts(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"max_attempts must be an integer >= 1, not {value!r}")
    return value


def _limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"limit must be an integer, not {type(limit).__name__}")
    if limit < 0:
        raise ValueError(f"limit must not be negative, got {limit}")
    return min(limit, MAX_LIMIT)


_singleton: StatusManager | None = None
_singleton_lock = threading.Lock()


def get_status_manager() -> StatusManager:
    """The process-wide manager, wrapping :data:`processing_status`."""
    global _singleton
    with _singleton_lock:
        if _singleton is None:
            _singleton = StatusManager(processing_status)
        return _singleton


@dataclass(frozen=True)
class Lease:
    """A worker's hold on one document, from :meth:`StatusManager.claim`.

    Each write carries ``epoch``, the fencing token: once the lease has
    expired and passed on, or the document was finished by someone else (a
    cancel), every write and :meth:`renew` raises ``LeaseLostError`` and
    changes nothing. Completing or failing the document releases the lease.
    """

    doc_id: str
    epoch: int
    worker: str
    seconds: float
    manager: StatusManager

    def update_status(self, status: str, progress: float | None = None, **fields: Any) -> None:
        """:meth:`StatusManager.update_status`, fenced by this lease."""
        target = _status(status)
        if progress is not None:
            progress = _progress(progress)
        clean = fields if target != "failed" and _only_counts(fields) else _fields(target, fields)
        self.manager._fenced_update(self.doc_id, self.epoch, target, progress, clean)

    def mark_completed(self, **metadata: Any) -> None:
        """:meth:`StatusManager.mark_completed`, fenced by this lease; releases it."""
        extra = check_metadata("metadata", metadata) if metadata else {}
        self.manager._fenced(self.doc_id, Mutation("complete", time.time(), fields=extra, epoch=self.epoch))

    def mark_failed(self, error: str) -> None:
        """:meth:`StatusManager.mark_failed`, fenced by this lease; releases it."""
        message = check_text("error", error, MAX_ERROR, empty_ok=False)
        mutation = Mutation("fail", time.time(), fields={"error": message}, epoch=self.epoch)
        self.manager._fenced(self.doc_id, mutation)

    def renew(self) -> None:
        """Extend the lease by ``seconds`` from now (store clock); ``LeaseLostError`` if it is gone."""
        self.manager._renew(self)

    def abandon(self, note: str = "", *, max_attempts: int = 3) -> None:
        """Give the document up at once, as an expired lease would be: a new attempt, or failed.

        For a holder that knows its work was lost (its process died, it was
        stopped): the document is requeued as attempt + 1 with
        ``metadata["recovery"]`` (``note`` added), or failed once its attempt
        reached ``max_attempts``, without waiting for the lease to expire.
        """
        text = check_text("note", note, MAX_ERROR, empty_ok=True)
        fields = {"max_attempts": _max_attempts(max_attempts), "note": text}
        self.manager._fenced(
            self.doc_id, Mutation("lease_lost", time.time(), fields=fields, epoch=self.epoch)
        )
