"""The store contract: what every persistence backend must do.

A store keeps records (see :mod:`docstatus.records`) and a log of changes; it
owns persistence and atomicity, never the rules. The manager passes each change
as a pure function of the stored record; the store applies it atomically with
respect to every other change to the same store, from any thread and, for
shared stores, any process.

Every change gets a sequence number (``seq``) from one counter per store:
strictly increasing, never reused, shared by every process using the store.
The store keeps the most recent changes in a log so that event streams can
resume from a sequence number.

Failures of the backend itself (a server down, a file unwritable) raise
:class:`~docstatus.errors.StoreUnavailableError`; the change is then not made.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..records import Record, changed_at
from .query import Entry, Page, Position, Query, Sort, run_query, scan_records

__all__ = [
    "Change",
    "ChangeType",
    "LeaseEntry",
    "OutboxEntry",
    "Page",
    "Query",
    "Store",
    "Tally",
    "WorkerEntry",
]

ChangeType = Literal["created", "updated", "removed"]


# Not frozen, for the same reason as Mutation: treat it as immutable.
@dataclass(slots=True)
class Change:
    """One entry of a store's change log.

    ``record`` is the document's record right after the change (``None`` when
    it was removed). It must not be mutated: it may be the stored object.
    """

    seq: int
    type: ChangeType
    doc_id: str
    record: Record | None


@dataclass(frozen=True, slots=True)
class LeaseEntry:
    """One entry of a store's lease index: who holds ``doc_id`` and until when (store clock)."""

    doc_id: str
    epoch: int
    worker: str
    expires: float


@dataclass(frozen=True, slots=True)
class WorkerEntry:
    """One live entry of a store's worker registry (times on the store clock, epoch seconds).

    ``info`` is the JSON the worker sent with its last heartbeat, a private copy.
    """

    worker_id: str
    info: dict[str, Any]
    last_seen: float
    expires: float


@dataclass(frozen=True, slots=True)
class Tally:
    """The documents that ended in one UTC minute, from a store's throughput counters.

    ``minute`` is the minute's start (epoch seconds, a multiple of 60).
    """

    minute: int
    completed: int
    failed: int
    pages: int


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One pending item of a named outbox (see :meth:`Store.move_cursor`).

    ``key`` is unique within the outbox; entries are ordered by ``(seq, key)``.
    ``data`` is JSON-compatible; the store keeps and returns private copies.
    """

    key: str
    seq: int
    data: dict[str, Any]


class Store(ABC):
    """Persistence and atomicity for document records.

    Implementations must be safe to call from many threads at once. Methods
    that change data are atomic: either the whole change (record, indexes,
    sequence number, log entry) is made and durable to the store's standard,
    or none of it is.

    A store may commit the changes that several threads make at the same
    moment together (group commit, as the SQLite store does). Callers may
    still rely on every change on its own: it is durable when its call
    returns, never before; one that raises (its ``change`` refused, the
    document missing, a duplicate) leaves no trace and is raised in its own
    caller's thread only, while the others are made; sequence numbers follow
    the order in which the changes were made; only a failure of the backend
    itself may fail several changes at once, each with its own
    ``StoreUnavailableError``.
    """

    #: True when other processes may change the data, so the manager must
    #: watch the change log for changes it did not make itself.
    shared: bool = False

    #: How the store was opened, without credentials.
    url: str = ""

    @abstractmethod
    def create(self, record: Record) -> Change:
        """Insert ``record`` if no record has its ``doc_id``.

        Atomic insert-if-absent: of any number of concurrent creates of one
        doc_id, exactly one succeeds. Raises ``DuplicateDocumentError`` for the
        others, leaving the stored record untouched.
        """

    @abstractmethod
    def modify(self, doc_id: str, change: Callable[[Record], Record]) -> Change:
        """Replace the record of ``doc_id`` by ``change(record)``, atomically.

        ``change`` is pure and may raise; then nothing is written and the
        exception propagates. No other change to this document may happen
        between the read and the write (the read-modify-write is atomic).
        Raises ``DocumentNotFoundError`` when there is no such record.
        ``change`` may be called on another thread than the caller's (the
        one that commits a group) and more than once (a retry after the
        backend was busy); only its last result is written.

        The manager passes a :class:`~docstatus.records.Mutation`; every store
        calls it, in this process, and never re-implements what it does. A
        store that shares data with other processes makes the call atomic by
        a compare-and-set on the record's version (see the Redis store).
        """

    @abstractmethod
    def get(self, doc_id: str) -> Record | None:
        """The record of ``doc_id``, or ``None``. The caller must not mutate it."""

    @abstractmethod
    def recent(self, limit: int) -> list[Record]:
        """Up to ``limit`` records, most recently changed first (by ``seq``).

        Must cost O(limit), not O(number of records).
        """

    #: How many of the most recent records the default :meth:`with_prefix` looks through.
    PREFIX_SCAN = 100_000

    def with_prefix(self, prefix: str, limit: int) -> list[Record]:
        """Up to ``limit`` records whose doc_id starts with ``prefix``, most recently changed first.

        For short ids. The default looks through the :attr:`PREFIX_SCAN` most
        recent records; a store with an index on doc_id answers from it instead.
        """
        found: list[Record] = []
        for record in self.recent(self.PREFIX_SCAN):
            if len(found) >= limit:
                break
            if str(record["doc_id"]).startswith(prefix):
                found.append(record)
        return found

    @abstractmethod
    def active(self) -> list[Record]:
        """Every record whose status is not final, most recently changed first.

        Must cost O(active records), not O(all records).
        """

    @abstractmethod
    def counts(self) -> dict[str, int]:
        """The number of records in each status (statuses with none may be absent)."""

    @abstractmethod
    def expire(self, before: float, limit: int) -> list[Change]:
        """Remove up to ``limit`` finished records that finished before ``before``.

        ``before`` is epoch seconds. Each removal is a ``removed`` change with
        its own sequence number. Must cost O(removed), and must not block
        other changes for longer than one batch of ``limit``.
        """

    @abstractmethod
    def remove_finished(self, doc_id: str) -> Change | None:
        """Remove the record of ``doc_id`` if it is finished (completed or failed), atomically.

        What :meth:`expire` does for one record, whatever its age: a ``removed``
        change with its own sequence number. ``None``, and nothing changes,
        when there is no such record or it is not finished (checked in the
        same atomic step as the removal, so an active record is never removed).
        """

    @abstractmethod
    def changes_since(self, seq: int, limit: int) -> list[Change]:
        """Up to ``limit`` logged changes with a sequence number above ``seq``, in order.

        Changes older than the store's retention are gone; the caller sees a
        gap in the numbers.
        """

    def moves_since(self, seq: int, limit: int) -> tuple[list[Change], int]:
        """The changes of ``changes_since(seq, limit)`` less those known to keep their document's status.

        Also the sequence number of the last change looked at (``seq`` when
        there was none), to go on from. For a reader that cares only about
        documents being created, moved to another status or removed (a
        metrics counter, a cleaner of files): a store that can tell a
        progress report from a move in its log, without reading the record,
        leaves the reports out; the default leaves nothing out.
        """
        changes = self.changes_since(seq, limit)
        return changes, changes[-1].seq if changes else seq

    @abstractmethod
    def last_seq(self) -> int:
        """The sequence number of the most recent change (0 for none)."""

    def epoch(self) -> str:
        """An id of the store's history: it changes when the sequence numbers start again.

        A server that restarts empty (Redis without persistence) hands out
        numbers already used, so a reader that compares only numbers would wait
        forever for ones above its last; a changed epoch says to start over.
        Equal epochs mean the numbers continue. The default, for stores whose
        history lives as long as the store object or its file, never changes.
        """
        return ""

    # -- leases ----------------------------------------------------------------
    # The lease index follows the records: after every create and modify (and
    # expire_lease) the store compares records.lease_of(old) with lease_of(new),
    # atomically with the record write. Newly held, or a new epoch: an entry
    # (epoch, worker, expires = now() + seconds). No longer held: no entry.

    def now(self) -> float:
        """The store's clock, in epoch seconds: the only clock lease times use."""
        return time.time()

    @abstractmethod
    def renew_lease(self, doc_id: str, epoch: int, seconds: float) -> bool:
        """If the index entry of ``doc_id`` has ``epoch``: expires = now() + ``seconds``, True.

        Otherwise False. Changes no record, logs no change, takes no ``seq``.
        """

    @abstractmethod
    def expired_leases(self, limit: int) -> list[tuple[str, int]]:
        """Up to ``limit`` ``(doc_id, epoch)`` whose lease expired (expires < now()), oldest first.

        Must cost O(expired), not O(leases).
        """

    @abstractmethod
    def leases(self) -> list[LeaseEntry]:
        """Every entry of the lease index, soonest to expire first."""

    @abstractmethod
    def expire_lease(self, doc_id: str, epoch: int, change: Callable[[Record], Record]) -> Change | None:
        """Apply ``change`` as :meth:`modify` does, if lease ``epoch`` of ``doc_id`` has expired.

        Atomic: only when the index entry still has ``epoch`` and has expired at
        the moment of the write; otherwise (renewed, released, passed on, or the
        record is gone) nothing changes and the result is ``None``.
        """

    # -- the worker registry -----------------------------------------------------
    # Beside the records, not part of them: heartbeats change no record, log no
    # change and take no seq, so a worker's liveness costs the change log nothing.

    @abstractmethod
    def heartbeat(self, worker_id: str, info: Mapping[str, Any], seconds: float) -> None:
        """Register ``worker_id`` or refresh its entry: ``info`` replaces the stored one.

        ``last_seen`` = now() and ``expires`` = now() + ``seconds`` (the store's
        clock, so clock skew between machines cannot expire a live worker).
        ``info`` is JSON-compatible (the manager checks it). Atomic per entry;
        may also drop entries that have expired.
        """

    @abstractmethod
    def workers(self) -> list[WorkerEntry]:
        """Every live entry (``expires >= now()``), ordered by ``worker_id``.

        An expired entry is never listed; the store may drop it now or later.
        """

    @abstractmethod
    def forget_worker(self, worker_id: str) -> None:
        """Remove the entry of ``worker_id`` at once (a clean shutdown); no error if there is none."""

    # -- named cursors and their outboxes --------------------------------------------
    # For readers of the change log that must not lose their place across restarts
    # (the completion webhooks): a named position in the log, held by one owner at a
    # time under an expiring lease (store clock), and beside it an outbox of pending
    # items that the owner adds to as it moves the cursor and settles one by one.
    # Nothing here changes a record, logs a change or takes a seq. Every write is
    # fenced by the lease: an owner whose lease passed to another changes nothing.

    @abstractmethod
    def claim_cursor(self, name: str, owner: str, seconds: float, start: int) -> int | None:
        """Take or renew the lease on cursor ``name`` for ``owner``; the cursor's position.

        The lease is taken when the cursor has no live lease (none, released, or
        expired: ``expires < now()``) or ``owner`` holds it already; then
        expires = now() + ``seconds`` and the stored position is returned (a new
        cursor starts at ``start``). While another owner's lease is alive: ``None``,
        nothing changes. Atomic: of concurrent claims of a free cursor, one wins.
        """

    @abstractmethod
    def move_cursor(self, name: str, owner: str, position: int, add: Sequence[OutboxEntry]) -> bool:
        """If ``owner`` holds a live lease on ``name``: set its position, add ``add`` to its outbox.

        Atomic: the position and every entry are written together, or (the lease
        is another's or expired) nothing is, and the result is False. An added
        entry whose key is in the outbox already replaces it.
        """

    @abstractmethod
    def outbox(self, name: str, limit: int) -> list[OutboxEntry]:
        """Up to ``limit`` entries of the outbox of cursor ``name``, in ``(seq, key)`` order.

        Must cost O(limit) on the shared stores (memory: O(entries)).
        """

    @abstractmethod
    def settle(self, name: str, owner: str, key: str, data: dict[str, Any] | None) -> bool:
        """If ``owner`` holds a live lease on ``name``: entry ``key`` gets ``data`` (``None``: removed).

        True then (also when there is no entry ``key``: nothing to change; a new
        ``data`` is not added then); False, and nothing changes, without the lease.
        """

    @abstractmethod
    def release_cursor(self, name: str, owner: str) -> None:
        """End ``owner``'s lease on ``name`` now (a clean shutdown); position and outbox stay.

        Nothing happens when another owner holds it, or nobody does.
        """

    # -- throughput counters ---------------------------------------------------------
    # An index that follows the records, as the lease index does: in the same atomic
    # step as every create and modify (and expire_lease), the store asks
    # records.tally_of(old, new); a (minute, status, pages) answer adds 1 to that
    # minute's completed or failed count and pages to its pages. Removing records
    # (expire, remove_finished) never touches the counters, so they outlive cleanup;
    # on a shared store every process adds to, and reads, the same counters.

    #: Seconds of counters a store keeps at least (older minutes may be dropped).
    TALLY_SECONDS = 86_400

    @abstractmethod
    def tallies(self, since: float, until: float) -> list[Tally]:
        """The counters of the minutes starting in ``[since, until)``, oldest first.

        Minutes in which nothing ended may be absent. Costs O(minutes asked
        for, or kept), whatever the number of records.
        """

    def wait_for_change(self, after_seq: int, timeout: float) -> None:
        """Block until ``last_seq() > after_seq`` or ``timeout`` seconds pass.

        Only shared stores are asked: it is how changes made by other
        processes reach this one's subscribers. The default polls; a store
        with a notification channel (Redis pub/sub) should override it.
        """
        deadline = time.monotonic() + timeout
        while self.last_seq() <= after_seq:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(self.POLL_INTERVAL, left))

    #: Seconds between polls of the default ``wait_for_change``.
    POLL_INTERVAL = 0.05

    # -- listing -------------------------------------------------------------------
    # A page of a listing (see docstatus.stores.query) walks the store's indexes:
    # per status, in each sort order, from a position. The merging and filtering
    # are shared (run_query); a store provides the walk.

    #: Sort orders in which :meth:`scan` can walk every status at once (``status=None``).
    GLOBAL_SORTS: frozenset[str] = frozenset()

    def query(self, query: Query) -> Page:
        """One page of a listing: the records that match ``query``, in its order, and where to go on.

        A store with indexes for its walks (every store of docstatus) costs
        O(page) per status walked, plus the scanning that
        :func:`~docstatus.stores.query.run_query` describes for ``text`` and
        for a time bound the walk does not start from. Reads only; a page is
        not a snapshot: records changed meanwhile appear where they are now.
        """
        return run_query(query, self.scan, global_sorts=self.GLOBAL_SORTS)

    def scan(
        self,
        status: str | None,
        sort: Sort,
        descending: bool,
        after: Position | None,
        limit: int,
        text: str | None,
    ) -> list[Entry]:
        """Up to ``limit`` entries ``(key, doc_id, record)`` of ``status``, in order, after ``after``.

        The walk :meth:`query` merges (see :data:`~docstatus.stores.query.Scan`).
        The key of ``updated`` is the ``seq`` of the record's last change.
        ``text`` may be used to leave out records that do not match it. The
        default sorts the :attr:`PREFIX_SCAN` most recent records on every
        call, with the time of the last change as the ``updated`` key: a
        store should override it with a walk of its indexes.
        """
        records = [r for r in self.recent(self.PREFIX_SCAN) if status is None or r["status"] == status]
        keyed = [(changed_at(r), r) for r in records]
        return scan_records(keyed, sort, descending, after, limit)

    def close(self) -> None:  # noqa: B027 - a store with nothing to release need not override
        """Release connections and files. The store is unusable afterwards."""
