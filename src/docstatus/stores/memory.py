"""The in-memory store: a plain dict of records, with indexes kept beside it.

It wraps a dict the caller owns (``processing_status``, or any dict), so code
that reads ``d[doc_id]["status"]`` keeps working. Every manager that wraps the
same dict object shares one store, hence one lock and one set of indexes.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

from ..errors import DocumentNotFoundError, DuplicateDocumentError, StatusError, UnreadableEntryError
from ..records import Record, copy_json, finished_at, is_finished, is_valid_record, lease_of, tally_of
from .adopt import Reconciliation, direct_change, fingerprint, read_entry
from .base import Change, LeaseEntry, OutboxEntry, Store, Tally, WorkerEntry
from .query import Entry, Position, Sort, name_key, started_of

__all__ = ["MemoryStore"]

log = logging.getLogger(__name__)

# id(dict) -> the store wrapping it. The store holds the dict, so while an
# entry is alive its id cannot be reused by another object.
_by_dict: dict[int, weakref.ReferenceType[MemoryStore]] = {}
_by_dict_lock = threading.Lock()


def _forget(key: int, _ref: object) -> None:
    _by_dict.pop(key, None)


class MemoryStore(Store):
    """Records in a dict; O(limit) listing, O(active) active list, O(removed) expiry."""

    url = "memory://"

    #: Changes kept for event streams to resume from.
    LOG_SIZE = 10_000

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        self._data: dict[str, Any] = {} if data is None else data
        self._lock = threading.Lock()
        self._seq = 0
        # A ring: change ``seq`` sits at ``seq % LOG_SIZE`` (one store per change, no eviction step).
        self._log: list[Change | None] = [None] * self.LOG_SIZE
        # Insertion order is change order: the last key changed most recently. Plain
        # dicts, moved to the end by delete and re-insert: as fast as OrderedDict's
        # move_to_end, and without a method call (see modify).
        self._order: dict[str, None] = {}
        self._active: dict[str, None] = {}
        # Finished ids in the order they finished, with when.
        self._finished: OrderedDict[str, float] = OrderedDict()
        self._counts: dict[str, int] = {}
        # The lease index: doc_id -> [epoch, worker, expires].
        self._leases: dict[str, tuple[int, str, float]] = {}
        # The worker registry: worker_id -> (info, last_seen, expires).
        self._workers: dict[str, tuple[dict[str, Any], float, float]] = {}
        # The throughput counters: minute -> [completed, failed, pages].
        self._tallies: dict[int, list[int]] = {}
        # Direct writes to a wrapped dict (see "direct writes" below); None for a private
        # dict, which nobody else can write. doc_id -> fingerprint() of the record as written.
        self._seen: dict[str, tuple[Any, ...]] | None = None if data is None else {}
        # Entries that cannot be read as a status: key -> (their fingerprint, why).
        self._rejected: dict[Any, tuple[tuple[Any, ...], UnreadableEntryError]] = {}
        # doc_ids whose assumptions (a mapped status, a naive time) were logged.
        self._noted: set[str] = set()
        self._listeners: list[Callable[[], Callable[[], object] | None]] = []
        # Named cursors: name -> [position, owner, expires]; and their outboxes: name -> key -> entry.
        self._cursors: dict[str, list[Any]] = {}
        self._outboxes: dict[str, dict[str, OutboxEntry]] = {}
        self._init_listing()
        self._index_existing()

    @classmethod
    def from_url(cls, url: str) -> MemoryStore:
        """``memory://``: a new private store (nothing after the scheme is used)."""
        return cls()

    @classmethod
    def wrapping(cls, data: dict[str, Any]) -> MemoryStore:
        """The store for ``data``: the same store for every caller with the same dict."""
        if not isinstance(data, dict):
            raise TypeError(f"status_dict must be a dict, not {type(data).__name__}")
        with _by_dict_lock:
            ref = _by_dict.get(id(data))
            store = ref() if ref is not None else None
            if store is None:
                store = cls(data)
                _by_dict[id(data)] = weakref.ref(store, partial(_forget, id(data)))
            return store

    def _index_existing(self) -> None:
        records = []
        others = []
        for doc_id, record in self._data.items():
            if is_valid_record(record) and record["doc_id"] == doc_id:
                records.append(record)
            else:
                others.append(doc_id)
        records.sort(key=lambda r: (r["updated_at"], r["doc_id"]))
        for rank, record in enumerate(records):
            # Documents that ended before the dict was wrapped were not seen ending: no counts.
            self._index(record["doc_id"], record, tally=False)
            self._move_lease(record["doc_id"], None, record)
            # Before any change of this store: numbers below every seq it will hand out.
            self._list(record["doc_id"], None, record, rank - len(records))
            if self._seen is not None:
                self._seen[record["doc_id"]] = fingerprint(record)
        if others:
            # Entries that existing code wrote before the dict was wrapped.
            self._adopt_new(others, Reconciliation())

    def _move_lease(self, doc_id: str, old: Record | None, new: Record) -> None:
        # With the lock held: the lease index follows the record (see Store).
        before, after = None if old is None else lease_of(old), lease_of(new)
        if after is None:
            if before is not None:
                self._leases.pop(doc_id, None)
        elif before is None or before[0] != after[0]:
            self._leases[doc_id] = (after[0], after[1], self.now() + after[2])

    def _index(self, doc_id: str, record: Record, old: Record | None = None, tally: bool = True) -> None:
        # Called with the lock held (or before the store is shared); modify handles
        # a progress update (same status, still active) itself.
        if old is not None:
            self._counts[old["status"]] -= 1
        self._counts[record["status"]] = self._counts.get(record["status"], 0) + 1
        self._order.pop(doc_id, None)
        self._order[doc_id] = None
        if is_finished(record):
            self._active.pop(doc_id, None)
            if doc_id not in self._finished:
                self._finished[doc_id] = finished_at(record) or 0.0
                if tally:
                    self._tally(old, record)
        else:
            self._finished.pop(doc_id, None)
            self._active.pop(doc_id, None)
            self._active[doc_id] = None

    def _logged(self, kind: Any, doc_id: str, record: Record | None) -> Change:
        self._seq = seq = self._seq + 1
        self._log[seq % self.LOG_SIZE] = change = Change(seq, kind, doc_id, record)
        return change

    def create(self, record: Record) -> Change:
        doc_id, status = record["doc_id"], record["status"]
        active = not is_finished(record)
        logged = Change(0, "created", doc_id, record)  # numbered when written
        counts = self._counts
        seen = self._seen
        written = None if seen is None else (record, status, record["progress"], record["updated_at"])
        with self._lock:
            # As in modify: no call under the lock when an active document is created.
            if doc_id in self._data:
                self._refuse_create(doc_id)
            self._data[doc_id] = record
            if written is not None:
                seen[doc_id] = written  # type: ignore[index]
            if "_lease" in record:
                self._move_lease(doc_id, None, record)
            if active:
                # A new id is in no index yet (they only hold ids that are in _data).
                counts[status] = counts[status] + 1 if status in counts else 1
                self._order[doc_id] = None
                self._active[doc_id] = None
            else:
                self._index(doc_id, record)
            self._seq = logged.seq = self._seq + 1
            self._log[logged.seq % self.LOG_SIZE] = logged
            self._list(doc_id, None, record, logged.seq)
            return logged

    def modify(self, doc_id: str, change: Callable[[Record], Record]) -> Change:  # noqa: C901 - inline on purpose
        # ``change`` is pure, so it runs before the lock is taken, and its result is
        # written only if the record is still the one it was computed from (else it
        # runs again on the newer one). Under the lock, a progress update then calls
        # no function at all, not even a C method: CPython switches threads only at
        # calls and loop jumps, and a thread switched out while holding the lock
        # makes the others queue behind it, a convoy in which every later update
        # costs a thread switch (measured: 3x slower with 10 threads).
        data = self._data
        seen = self._seen
        while True:
            old = data.get(doc_id)
            # (Or written directly: _missing adopts that first, rules and all.)
            if (
                old is None
                or doc_id not in self._order
                or (seen is not None and not self._as_written(doc_id, old))
            ):
                if self._missing(doc_id):
                    raise DocumentNotFoundError(doc_id)
                continue  # seen while another change moved it in the index: look again
            new = change(old)
            written = None if seen is None else (new, new["status"], new["progress"], new["updated_at"])
            logged = Change(0, "updated", doc_id, new)  # numbered when written
            # The lease index moves only when the lease object was replaced (a plain
            # update copies the reference): no call under the lock otherwise.
            lease_moved = "_lease" in new and ("_lease" not in old or new["_lease"] is not old["_lease"])
            with self._lock:
                if doc_id not in data or data[doc_id] is not old:
                    continue
                data[doc_id] = new
                if written is not None:
                    seen[doc_id] = written  # type: ignore[index]
                if lease_moved:
                    self._move_lease(doc_id, old, new)
                # (A queued record is listed by the seq of its last change: see _list.)
                relist = new["status"] != old["status"] or new["status"] == "queued"
                if not relist and doc_id in self._active:
                    # A progress update moves only the recency order.
                    del self._order[doc_id]
                    self._order[doc_id] = None
                    del self._active[doc_id]
                    self._active[doc_id] = None
                else:
                    self._index(doc_id, new, old)
                self._seq = logged.seq = self._seq + 1
                self._log[logged.seq % self.LOG_SIZE] = logged
                self._seq_of[doc_id] = logged.seq
                if relist:
                    self._list(doc_id, old, new, logged.seq)
                return logged

    def renew_lease(self, doc_id: str, epoch: int, seconds: float) -> bool:
        with self._lock:
            entry = self._leases.get(doc_id)
            if entry is None or entry[0] != epoch:
                return False
            self._leases[doc_id] = (epoch, entry[1], self.now() + seconds)
            return True

    def expired_leases(self, limit: int) -> list[tuple[str, int]]:
        # O(leases): a memory store's leases are its own process's workers, a handful.
        now = self.now()
        with self._lock:
            expired = sorted((e[2], doc_id, e[0]) for doc_id, e in self._leases.items() if e[2] < now)
        return [(doc_id, epoch) for _, doc_id, epoch in expired[:limit]]

    def leases(self) -> list[LeaseEntry]:
        with self._lock:
            entries = [LeaseEntry(doc_id, *entry) for doc_id, entry in self._leases.items()]
        return sorted(entries, key=lambda e: (e.expires, e.doc_id))

    def expire_lease(self, doc_id: str, epoch: int, change: Callable[[Record], Record]) -> Change | None:
        while True:
            old = self._data.get(doc_id)
            if old is None or not self._lease_expired(doc_id, epoch):
                return None
            new = change(old)
            with self._lock:
                if self._data.get(doc_id) is not old:
                    continue
                if not self._lease_expired(doc_id, epoch):
                    return None
                self._data[doc_id] = new
                if self._seen is not None:
                    self._seen[doc_id] = fingerprint(new)
                self._move_lease(doc_id, old, new)
                self._index(doc_id, new, old)
                logged = self._logged("updated", doc_id, new)
                self._list(doc_id, old, new, logged.seq)
                return logged

    def _lease_expired(self, doc_id: str, epoch: int) -> bool:
        entry = self._leases.get(doc_id)
        return entry is not None and entry[0] == epoch and entry[2] < self.now()

    def heartbeat(self, worker_id: str, info: Mapping[str, Any], seconds: float) -> None:
        now = self.now()
        entry = (copy_json(dict(info)), now, now + seconds)
        with self._lock:
            self._workers[worker_id] = entry

    def workers(self) -> list[WorkerEntry]:
        now = self.now()
        with self._lock:
            for worker_id in [w for w, entry in self._workers.items() if entry[2] < now]:
                del self._workers[worker_id]
            entries = sorted(self._workers.items())
        return [WorkerEntry(w, copy_json(info), seen, expires) for w, (info, seen, expires) in entries]

    def forget_worker(self, worker_id: str) -> None:
        with self._lock:
            self._workers.pop(worker_id, None)

    def claim_cursor(self, name: str, owner: str, seconds: float, start: int) -> int | None:
        now = self.now()
        with self._lock:
            cursor = self._cursors.setdefault(name, [start, "", 0.0])
            if cursor[1] != owner and cursor[1] and cursor[2] >= now:
                return None
            cursor[1:] = [owner, now + seconds]
            return int(cursor[0])

    def _holds(self, name: str, owner: str) -> bool:
        # With the lock held.
        cursor = self._cursors.get(name)
        return cursor is not None and cursor[1] == owner and cursor[2] >= self.now()

    def move_cursor(self, name: str, owner: str, position: int, add: Sequence[OutboxEntry]) -> bool:
        copies = [OutboxEntry(e.key, e.seq, copy_json(e.data)) for e in add]
        with self._lock:
            if not self._holds(name, owner):
                return False
            self._cursors[name][0] = position
            box = self._outboxes.setdefault(name, {})
            for entry in copies:
                box[entry.key] = entry
            return True

    def outbox(self, name: str, limit: int) -> list[OutboxEntry]:
        with self._lock:
            entries = sorted(self._outboxes.get(name, {}).values(), key=lambda e: (e.seq, e.key))
        return [OutboxEntry(e.key, e.seq, copy_json(e.data)) for e in entries[: max(limit, 0)]]

    def settle(self, name: str, owner: str, key: str, data: dict[str, Any] | None) -> bool:
        copied = None if data is None else copy_json(data)
        with self._lock:
            if not self._holds(name, owner):
                return False
            box = self._outboxes.get(name, {})
            if key in box:
                if copied is None:
                    del box[key]
                else:
                    box[key] = OutboxEntry(key, box[key].seq, copied)
            return True

    def release_cursor(self, name: str, owner: str) -> None:
        with self._lock:
            cursor = self._cursors.get(name)
            if cursor is not None and cursor[1] == owner:
                cursor[1:] = ["", 0.0]

    def now(self) -> float:
        """``time.time()``: the host's clock."""
        return time.time()

    def _missing(self, doc_id: str) -> bool:
        # The unlocked check in modify can catch the recency index mid-move (a status change
        # removes and re-inserts the id under the lock, with calls in between); under the
        # lock the answer is settled. An entry written directly is adopted here.
        with self._lock:
            found = self._settle([doc_id]) if self._seen is not None else None
            missing = doc_id not in self._data or doc_id not in self._order
        self._tell(found)
        return missing

    def get(self, doc_id: str) -> Record | None:
        record = self._data.get(doc_id)
        if record is None:
            return None
        if self._seen is None:
            return record if "_track" in record else None
        if self._as_written(doc_id, record):
            return record  # type: ignore[no-any-return]
        return self._look_again(doc_id)

    def _records(self, ids: Any) -> list[Record]:
        data = self._data
        return [data[i] for i in ids if i in data]

    def recent(self, limit: int) -> list[Record]:
        found = None
        with self._lock:
            if self._seen is not None:
                found = self._settle(list(itertools.islice(reversed(self._order), limit)))
            records = self._records(itertools.islice(reversed(self._order), limit))
        self._tell(found)
        return records

    def active(self) -> list[Record]:
        found = None
        with self._lock:
            if self._seen is not None:
                found = self._settle(list(self._active))
            records = self._records(reversed(self._active))
        self._tell(found)
        return records

    def counts(self) -> dict[str, int]:
        found = None
        with self._lock:
            if self._seen is not None:
                # Finished documents cannot change (a direct write to one is undone), so
                # the active ones are all that a direct write can have moved.
                found = self._settle(list(self._active))
            counts = {status: n for status, n in self._counts.items() if n}
        self._tell(found)
        return counts

    def expire(self, before: float, limit: int) -> list[Change]:
        removed: list[Change] = []
        found = None
        with self._lock:
            if self._seen is not None:
                found = self._settle(list(self._active))  # finished directly: due for cleanup too
            finished = self._finished
            while finished and len(removed) < limit:
                doc_id, at = next(iter(finished.items()))
                if at >= before:
                    break
                if found is not None and not self._as_written(doc_id, self._data.get(doc_id)):
                    self._adopt(doc_id, found)  # undone (a finished document stays finished)
                    continue
                removed.append(self._remove(doc_id))
        self._tell(found)
        return removed

    def remove_finished(self, doc_id: str) -> Change | None:
        found = None
        with self._lock:
            if self._seen is not None:
                found = self._settle([doc_id])
            change = self._remove(doc_id) if doc_id in self._finished else None
        self._tell(found)
        return change

    def _remove(self, doc_id: str) -> Change:
        # With the lock held, for a finished doc_id.
        del self._finished[doc_id]
        record = self._data.pop(doc_id, None)
        self._order.pop(doc_id, None)
        # The status the index counted: the one written (an entry can be changed in place).
        written = self._seen.pop(doc_id, None) if self._seen is not None else None
        self._noted.discard(doc_id)
        if written is not None:
            self._counts[written[1]] -= 1
        elif record is not None:
            self._counts[record["status"]] -= 1
            self._unlist(doc_id, record)
        return self._logged("removed", doc_id, None)

    # -- throughput counters -------------------------------------------------------

    def _tally(self, old: Record | None, new: Record) -> None:
        # With the lock held: the counters follow records.tally_of (see Store).
        counted = tally_of(old, new)
        if counted is None:
            return
        minute, status, pages = counted
        entry = self._tallies.get(minute)
        if entry is None:
            # A new minute is the moment to drop the ones past keeping: O(kept) once a minute.
            oldest = minute - self.TALLY_SECONDS
            for gone in [m for m in self._tallies if m < oldest]:
                del self._tallies[gone]
            entry = self._tallies[minute] = [0, 0, 0]
        entry[0 if status == "completed" else 1] += 1
        entry[2] += pages

    def tallies(self, since: float, until: float) -> list[Tally]:
        # The kept minutes are a day's at most: looking through them all is cheap.
        with self._lock:
            found = sorted((m, tuple(entry)) for m, entry in self._tallies.items() if since <= m < until)
        return [Tally(m, *entry) for m, entry in found]

    def changes_since(self, seq: int, limit: int) -> list[Change]:
        with self._lock:
            first = max(seq + 1, self._seq - self.LOG_SIZE + 1, 1)
            last = min(self._seq, first + limit - 1)
            log, size = self._log, self.LOG_SIZE
            return [log[s % size] for s in range(first, last + 1)]  # type: ignore[misc]  # all logged

    def last_seq(self) -> int:
        return self._seq

    # -- direct writes -----------------------------------------------------------
    # Code written before docstatus writes the wrapped dict itself. The store keeps,
    # per document, fingerprint() of the record as it wrote it, and compares it with
    # the entry whenever it touches or lists one: the documents listed, the active ones
    # for counts and cleanup, one per lookup or change; a full scan only when the dict's
    # size disagrees with the index. What differs is adopted (stores.adopt says what it
    # means), logged as a change with a seq of its own, and the listeners are told.

    def add_listener(self, callback: Callable[[], object]) -> None:
        """Call ``callback()`` (outside the lock) after direct writes were adopted and logged.

        ``callback`` is a bound method, held weakly: a manager listening is not kept alive by its store.
        """
        ref = weakref.WeakMethod(callback)
        with self._lock:
            # Those of managers gone since are dropped here: a long-lived dict sees many managers.
            self._listeners = [*(r for r in self._listeners if r() is not None), ref]

    def reconcile(self) -> Reconciliation:
        """Look at every entry of the wrapped dict now; what was written directly is adopted.

        Returns what was found; ``unreadable`` lists every entry that cannot be
        read as a status (not only those found now). Costs O(entries).
        """
        found = Reconciliation()
        if self._seen is not None:
            with self._lock:
                self._full_scan(found)
                found.unreadable.update((str(k), str(e)) for k, (_, e) in self._rejected.items())
        self._tell(found)
        return found

    def _as_written(self, doc_id: str, record: Any) -> bool:
        # fingerprint(record) == the one written, inline (this is on every change's path).
        try:
            return self._seen[doc_id] == (  # type: ignore[index]
                record,
                record["status"],
                record["progress"],
                record["updated_at"],
            )
        except (KeyError, TypeError):
            return False

    def _look_again(self, doc_id: str) -> Record | None:
        """Adopt what was written directly to ``doc_id``; its record then, if it is a document."""
        with self._lock:
            found = self._settle([doc_id])
            record = self._data.get(doc_id) if doc_id in self._order else None
        self._tell(found)
        return record

    def _tell(self, found: Reconciliation | None) -> None:
        if found is None or not found.logged:
            return
        for ref in self._listeners:
            callback = ref()
            if callback is None:
                continue
            try:
                callback()
            except Exception:
                log.exception("telling %r about direct writes failed", callback)

    def _settle(self, ids: list[str]) -> Reconciliation:
        # With the lock held: the cheap check over ``ids``, a full scan if the sizes disagree.
        found = Reconciliation()
        if len(self._data) != len(self._order) + len(self._rejected):
            self._full_scan(found)
            return found
        data = self._data
        for doc_id in ids:
            if not self._as_written(doc_id, data.get(doc_id, _GONE)):
                self._adopt(doc_id, found)
        return found

    def _full_scan(self, found: Reconciliation) -> None:
        # With the lock held: O(entries).
        data = self._data
        for doc_id in [d for d in self._order if d not in data]:
            self._drop(doc_id, found)
        for key in [k for k in self._rejected if k not in data]:
            del self._rejected[key]
        for doc_id in [d for d in self._order if not self._as_written(d, data[d])]:
            self._adopt(doc_id, found)
        fresh = [k for k in data if k not in self._order]
        self._adopt_new(fresh, found)

    def _adopt(self, doc_id: str, found: Reconciliation) -> None:
        # With the lock held: bring the index in line with the entry of doc_id.
        entry = self._data.get(doc_id, _GONE)
        before = self._seen.get(doc_id) if self._seen is not None else None
        if entry is _GONE:
            self._rejected.pop(doc_id, None)
            if doc_id in self._order:
                self._drop(doc_id, found)
        elif before is None:
            self._adopt_new([doc_id], found)
        elif fingerprint(entry) != before:
            self._adopt_edit(doc_id, entry, before, found)

    def _adopt_new(self, keys: list[Any], found: Reconciliation) -> None:
        # With the lock held: entries of the dict that are no document yet (oldest first).
        now = self.now()
        read = [entry for entry in (self._read_new(key, now, found) for key in keys) if entry is not None]
        read.sort(key=lambda item: (item[1]["updated_at"], item[0]))
        for doc_id, record, notes in read:
            self._index(doc_id, record)
            self._seen[doc_id] = fingerprint(record)  # type: ignore[index]
            logged = self._logged("created", doc_id, dict(record))
            self._list(doc_id, None, record, logged.seq)
            found.adopted.append(doc_id)
            self._note(doc_id, "adopted an entry written directly into the wrapped dict", notes)

    def _read_new(self, key: Any, now: float, found: Reconciliation) -> tuple[str, Record, list[str]] | None:
        # With the lock held: a new entry as a record, written back into it; None if it is none.
        entry = self._data[key]
        for _ in range(_TRIES):
            mark = fingerprint(entry)
            known = self._rejected.get(key)
            if known is not None and known[0] == mark:
                return None  # the same unreadable entry as before
            try:
                record, notes = read_entry(key, entry, now)
            except UnreadableEntryError as exc:
                self._reject(key, mark, exc, found)
                return None
            if record is entry or _rewrite(entry, record, mark):
                self._rejected.pop(key, None)
                return key, entry, notes
        return None  # still being written to: a later look adopts it

    def _reject(
        self, key: Any, mark: tuple[Any, ...], exc: UnreadableEntryError, found: Reconciliation
    ) -> None:
        known = self._rejected.get(key)
        if known is None or str(known[1]) != str(exc):
            log.warning("%s; it is no document until it can be (see docstatus.stores.adopt)", exc)
        self._rejected[key] = (mark, exc)
        found.unreadable[str(key)] = str(exc)

    def _note(self, doc_id: str, what: str, notes: list[str]) -> None:
        # Once per document: a processor that writes naive times writes them on every step.
        if notes and doc_id not in self._noted:
            self._noted.add(doc_id)
            log.warning("%s for %r: %s", what, doc_id, "; ".join(notes))

    def _adopt_edit(self, doc_id: str, entry: Any, before: tuple[Any, ...], found: Reconciliation) -> None:
        # With the lock held: the entry of a document was changed (or replaced) directly.
        written: Record = before[0]
        previous = {**written, "status": before[1], "progress": before[2], "updated_at": before[3]}
        for _ in range(_TRIES):
            mark = fingerprint(entry)
            try:
                record, notes = direct_change(previous, entry, self.now())
            except (StatusError, ValueError, TypeError) as exc:
                self._keep(doc_id, written, before, exc, found)
                return
            if _rewrite(entry, record, mark):
                break
        else:
            return  # still being written to: a later look adopts it
        self._move_lease(doc_id, previous, entry)
        self._index(doc_id, entry, previous)
        self._seen[doc_id] = fingerprint(entry)  # type: ignore[index]
        logged = self._logged("updated", doc_id, dict(entry))
        self._list(doc_id, previous, entry, logged.seq)
        found.changed.append(doc_id)
        self._note(doc_id, "read a direct write to the wrapped dict", notes)

    def _keep(
        self, doc_id: str, written: Record, before: tuple[Any, ...], exc: Exception, found: Reconciliation
    ) -> None:
        # With the lock held: a direct write the rules refuse is undone; the stored status stays.
        entry = self._data.get(doc_id)
        changed_status = not isinstance(entry, dict) or entry.get("status") != before[1]
        written.update(status=before[1], progress=before[2], updated_at=before[3])
        self._data[doc_id] = written
        if changed_status:
            found.refused[doc_id] = str(exc)
            log.warning(
                "a direct write to %r in the wrapped dict was undone: %s; it stays %r", doc_id, exc, before[1]
            )

    def _drop(self, doc_id: str, found: Reconciliation) -> None:
        # With the lock held: the entry of a document was deleted directly.
        before = self._seen.pop(doc_id, None) if self._seen is not None else None
        self._noted.discard(doc_id)
        self._order.pop(doc_id, None)
        self._active.pop(doc_id, None)
        self._finished.pop(doc_id, None)
        self._leases.pop(doc_id, None)
        if before is not None:
            self._counts[before[1]] -= 1
            self._unlist(doc_id, {**before[0], "status": before[1]})
        self._logged("removed", doc_id, None)
        found.removed.append(doc_id)

    def _refuse_create(self, doc_id: str) -> None:
        # With the lock held: create over an existing entry. One written directly is
        # adopted first; one that cannot be read says why.
        if self._seen is not None and doc_id not in self._order:
            self._adopt(doc_id, Reconciliation())
            known = self._rejected.get(doc_id)
            if known is not None:
                raise UnreadableEntryError(doc_id, known[1].field, known[1].reason)
        raise DuplicateDocumentError(doc_id)

    # -- listing -------------------------------------------------------------------
    # Beside the dict, per status: the doc_ids by the seq of their last change (for
    # the statuses whose records change mostly by leaving them: queued, completed,
    # failed), by the start of their attempt, and by filename. Records of the busy
    # statuses (parsing ... storing) are updated all the time, so they are not kept
    # in a seq order that every update would have to move: the few of them are
    # sorted when listed, from the active index (O(active)).

    def _init_listing(self) -> None:
        self._seq_of: dict[str, int] = {}
        self._by_seq: dict[str, _SeqIndex] = {status: _SeqIndex() for status in _BY_SEQ}
        self._by_start: dict[str, _SortedList] = {}
        self._by_name: dict[str, _SortedList] = {}

    def _list(self, doc_id: str, old: Record | None, new: Record, seq: int) -> None:
        # With the lock held, after a change of doc_id that may move it in the listing indexes.
        self._seq_of[doc_id] = seq
        status = new["status"]
        if old is None or old["status"] != status or started_of(old) != started_of(new):
            if old is not None:
                self._unsort(doc_id, old)
            self._by_start.setdefault(status, _SortedList()).add((started_of(new), doc_id))
            self._by_name.setdefault(status, _SortedList()).add((name_key(new["filename"]), doc_id))
        if status in _BY_SEQ:
            self._by_seq[status].add(seq, doc_id, self._seq_of)

    def _unsort(self, doc_id: str, record: Record) -> None:
        status = record["status"]
        for index, key in (
            (self._by_start, started_of(record)),
            (self._by_name, name_key(record["filename"])),
        ):
            if status in index:
                index[status].discard((key, doc_id))

    def _unlist(self, doc_id: str, record: Record) -> None:
        # The seq index entry dies with the seq_of entry.
        self._seq_of.pop(doc_id, None)
        self._unsort(doc_id, record)

    def scan(
        self,
        status: str | None,
        sort: Sort,
        descending: bool,
        after: Position | None,
        limit: int,
        text: str | None,
    ) -> list[Entry]:
        """A walk of the listing indexes: O(limit), and O(active) for a busy status by ``updated``.

        Entries whose record changed since they were indexed are skipped in
        the seq index (each change appends one; the index is compacted when
        more than half of it is such entries, so a walk skips fewer than it
        returns on average).
        """
        if status is None:
            raise ValueError("the memory store walks one status at a time")
        adopted = None
        with self._lock:
            found = self._walk(status, sort, descending, after, limit)
            if self._seen is not None:
                # Direct writes to what is listed (or a dict whose size changed) are adopted
                # first; then the walk is made again over the indexes they moved.
                adopted = self._settle([doc_id for _, doc_id in found])
                if adopted.logged:
                    found = self._walk(status, sort, descending, after, limit)
            data = self._data
            entries = [(key, doc_id, data[doc_id]) for key, doc_id in found if doc_id in data]
        self._tell(adopted)
        return entries

    def _walk(
        self, status: str, sort: Sort, descending: bool, after: Position | None, limit: int
    ) -> list[tuple[Any, str]]:
        # With the lock held: (key, doc_id) of up to limit entries of one status, in order.
        if sort != "updated":
            index = (self._by_start if sort == "started" else self._by_name).get(status)
            return [] if index is None else index.walk(after, limit, descending)
        if status in _BY_SEQ:
            return self._by_seq[status].walk(after, limit, descending, self._seq_of)
        return self._busy(status, after, limit, descending)

    def _busy(
        self, status: str, after: Position | None, limit: int, descending: bool
    ) -> list[tuple[Any, str]]:
        data, seq_of = self._data, self._seq_of
        keyed = sorted(
            ((seq_of[i], i) for i in self._active if i in data and data[i]["status"] == status),
            reverse=descending,
        )
        if after is not None:
            keyed = [e for e in keyed if (e < after if descending else e > after)]
        return keyed[:limit]


# What data.get() gives for an entry that is not there (None is a value an entry can have).
_GONE: Any = object()


# How often an entry is read again when code writes it while the store reads it.
_TRIES = 3


def _rewrite(entry: dict[str, Any], record: Record, mark: tuple[Any, ...]) -> bool:
    """Make ``entry`` hold ``record`` in place (code that holds the entry sees the record).

    Only if it is still as ``mark`` says, which is what ``record`` was read from:
    a write by other code meanwhile would be lost. (The check and the write are
    a few bytecodes apart; code that writes the dict without the lock cannot be
    excluded for longer than that.)
    """
    if fingerprint(entry) != mark:
        return False
    entry.update(record)
    for key in [k for k in entry if k not in record]:
        del entry[key]
    return True


#: Statuses listed by ``updated`` from a seq index (the others are few and busy).
_BY_SEQ = frozenset({"queued", "completed", "failed"})


class _SortedList:
    """A sorted list kept as a list of short sorted lists (each at most ``2 * LOAD`` long).

    An insert or removal moves at most ``2 * LOAD`` entries, not all of them (what
    ``bisect.insort`` into one long list would), at any size.
    """

    LOAD = 256
    __slots__ = ("lists", "maxes")

    def __init__(self) -> None:
        self.lists: list[list[Any]] = []
        self.maxes: list[Any] = []

    def add(self, item: Any) -> None:
        lists, maxes = self.lists, self.maxes
        if not lists:
            lists.append([item])
            maxes.append(item)
            return
        i = bisect.bisect_left(maxes, item)
        if i == len(maxes):
            i -= 1
            lists[i].append(item)
            maxes[i] = item
        else:
            bisect.insort(lists[i], item)
        if len(lists[i]) > 2 * self.LOAD:
            half = lists[i]
            lists[i : i + 1] = [half[: self.LOAD], half[self.LOAD :]]
            maxes[i : i + 1] = [half[self.LOAD - 1], half[-1]]

    def discard(self, item: Any) -> None:
        i = bisect.bisect_left(self.maxes, item)
        if i == len(self.maxes):
            return
        part = self.lists[i]
        j = bisect.bisect_left(part, item)
        if j < len(part) and part[j] == item:
            del part[j]
            if part:
                self.maxes[i] = part[-1]
            else:
                del self.lists[i], self.maxes[i]

    def walk(self, after: Any, limit: int, descending: bool) -> list[Any]:
        """Up to ``limit`` items strictly beyond ``after`` (``None``: from the start), in order."""
        return self._down(after, limit) if descending else self._up(after, limit)

    def _down(self, before: Any, limit: int) -> list[Any]:
        lists = self.lists
        found: list[Any] = []
        if not lists:
            return found
        i = len(lists) if before is None else bisect.bisect_left(self.maxes, before)
        if i == len(lists):  # every item is before it
            i -= 1
            j = len(lists[i])
        else:
            j = bisect.bisect_left(lists[i], before)
        while i >= 0 and len(found) < limit:
            found.extend(reversed(lists[i][max(j - (limit - len(found)), 0) : j]))
            i -= 1
            j = len(lists[i]) if i >= 0 else 0
        return found

    def _up(self, after: Any, limit: int) -> list[Any]:
        lists = self.lists
        found: list[Any] = []
        i = 0 if after is None else bisect.bisect_right(self.maxes, after)
        j = 0 if after is None or i == len(lists) else bisect.bisect_right(lists[i], after)
        while i < len(lists) and len(found) < limit:
            found.extend(lists[i][j : j + limit - len(found)])
            i, j = i + 1, 0
        return found


class _SeqIndex:
    """The doc_ids of one status in the order of the seq of their last change.

    Append-only arrays (a change appends its seq, which is above every other),
    so a position is found by bisection. An entry is live while it is its
    doc_id's last change (``seq_of``); the others are skipped, and compacted
    away when the arrays are full and at most half live.
    """

    __slots__ = ("ids", "n", "seqs")

    def __init__(self) -> None:
        self.seqs: list[int] = [0] * 64
        self.ids: list[str] = [""] * 64
        self.n = 0

    def add(self, seq: int, doc_id: str, seq_of: dict[str, int]) -> None:
        if self.n == len(self.seqs):
            self._make_room(seq_of)
        self.seqs[self.n] = seq
        self.ids[self.n] = doc_id
        self.n += 1

    def _make_room(self, seq_of: dict[str, int]) -> None:
        live = [(s, i) for s, i in zip(self.seqs, self.ids, strict=True) if seq_of.get(i) == s]
        size = len(self.seqs) if len(live) * 2 <= len(self.seqs) else len(self.seqs) * 2
        self.seqs = [s for s, _ in live] + [0] * (size - len(live))
        self.ids = [i for _, i in live] + [""] * (size - len(live))
        self.n = len(live)

    def walk(
        self, after: Position | None, limit: int, descending: bool, seq_of: dict[str, int]
    ) -> list[tuple[int, str]]:
        seqs, ids = self.seqs, self.ids
        found: list[tuple[int, str]] = []
        if descending:
            i = (self.n if after is None else bisect.bisect_left(seqs, after[0], 0, self.n)) - 1
            step, stop = -1, -1
        else:
            i = 0 if after is None else bisect.bisect_right(seqs, after[0], 0, self.n)
            step, stop = 1, self.n
        while i != stop and len(found) < limit:
            if seq_of.get(ids[i]) == seqs[i]:
                found.append((seqs[i], ids[i]))
            i += step
        return found
