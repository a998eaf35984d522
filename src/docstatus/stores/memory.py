"""The in-memory store: a plain dict of records, with indexes kept beside it.

It wraps a dict the caller owns (``processing_status``, or any dict), so code
that reads ``d[doc_id]["status"]`` keeps working. Every manager that wraps the
same dict object shares one store, hence one lock and one set of indexes.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from ..errors import DocumentNotFoundError, DuplicateDocumentError
from ..records import Record, copy_json, finished_at, is_finished, is_valid_record, lease_of, tally_of
from .base import Change, LeaseEntry, Store, Tally, WorkerEntry

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
        # Entries of the wrapped dict that were there before it was wrapped and are not records.
        self._foreign: frozenset[str] = frozenset()
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
        foreign = []
        for doc_id, record in self._data.items():
            if is_valid_record(record) and record["doc_id"] == doc_id:
                records.append(record)
            else:
                foreign.append(doc_id)
                log.warning("ignoring entry %r of the wrapped dict: not a docstatus record", doc_id)
        self._foreign = frozenset(foreign)
        records.sort(key=lambda r: (r["updated_at"], r["doc_id"]))
        for record in records:
            # Documents that ended before the dict was wrapped were not seen ending: no counts.
            self._index(record["doc_id"], record, tally=False)
            self._move_lease(record["doc_id"], None, record)

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
        with self._lock:
            # As in modify: no call under the lock when an active document is created.
            if doc_id in self._data:
                raise DuplicateDocumentError(doc_id)
            self._data[doc_id] = record
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
            return logged

    def modify(self, doc_id: str, change: Callable[[Record], Record]) -> Change:
        # ``change`` is pure, so it runs before the lock is taken, and its result is
        # written only if the record is still the one it was computed from (else it
        # runs again on the newer one). Under the lock, a progress update then calls
        # no function at all, not even a C method: CPython switches threads only at
        # calls and loop jumps, and a thread switched out while holding the lock
        # makes the others queue behind it, a convoy in which every later update
        # costs a thread switch (measured: 3x slower with 10 threads).
        data = self._data
        while True:
            old = data.get(doc_id)
            if old is None or doc_id not in self._order:
                if self._missing(doc_id):
                    raise DocumentNotFoundError(doc_id)
                continue  # seen while another change moved it in the index: look again
            new = change(old)
            logged = Change(0, "updated", doc_id, new)  # numbered when written
            # The lease index moves only when the lease object was replaced (a plain
            # update copies the reference): no call under the lock otherwise.
            lease_moved = "_lease" in new and ("_lease" not in old or new["_lease"] is not old["_lease"])
            with self._lock:
                if doc_id not in data or data[doc_id] is not old:
                    continue
                data[doc_id] = new
                if lease_moved:
                    self._move_lease(doc_id, old, new)
                if new["status"] == old["status"] and doc_id in self._active:
                    # A progress update moves only the recency order.
                    del self._order[doc_id]
                    self._order[doc_id] = None
                    del self._active[doc_id]
                    self._active[doc_id] = None
                else:
                    self._index(doc_id, new, old)
                self._seq = logged.seq = self._seq + 1
                self._log[logged.seq % self.LOG_SIZE] = logged
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
                self._move_lease(doc_id, old, new)
                self._index(doc_id, new, old)
                return self._logged("updated", doc_id, new)

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

    def now(self) -> float:
        """``time.time()``: the host's clock."""
        return time.time()

    def _missing(self, doc_id: str) -> bool:
        # The unlocked check in modify can catch the recency index mid-move (a status change
        # removes and re-inserts the id under the lock, with calls in between); under the
        # lock the answer is settled.
        with self._lock:
            return doc_id not in self._data or doc_id not in self._order

    def get(self, doc_id: str) -> Record | None:
        record = self._data.get(doc_id)
        # Entries that were in the dict before it was wrapped and are not
        # records are not documents docstatus knows.
        if record is None or "_track" not in record or doc_id in self._foreign:
            return None
        return record  # type: ignore[no-any-return]

    def _records(self, ids: Any) -> list[Record]:
        data = self._data
        return [data[i] for i in ids if i in data]

    def recent(self, limit: int) -> list[Record]:
        with self._lock:
            return self._records(itertools.islice(reversed(self._order), limit))

    def active(self) -> list[Record]:
        with self._lock:
            return self._records(reversed(self._active))

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {status: n for status, n in self._counts.items() if n}

    def expire(self, before: float, limit: int) -> list[Change]:
        removed: list[Change] = []
        with self._lock:
            finished = self._finished
            while finished and len(removed) < limit:
                doc_id, at = next(iter(finished.items()))
                if at >= before:
                    break
                removed.append(self._remove(doc_id))
        return removed

    def remove_finished(self, doc_id: str) -> Change | None:
        with self._lock:
            return self._remove(doc_id) if doc_id in self._finished else None

    def _remove(self, doc_id: str) -> Change:
        # With the lock held, for a finished doc_id.
        del self._finished[doc_id]
        record = self._data.pop(doc_id, None)
        self._order.pop(doc_id, None)
        if record is not None:
            self._counts[record["status"]] -= 1
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
