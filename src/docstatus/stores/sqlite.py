"""The SQLite store: durable, embedded, shared by every process that opens the file.

``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``, with optional
query parameters ``synchronous`` (``normal``, the default, or ``full``) and
``timeout`` (seconds a change may wait for other writers, default 10).

Layout (schema version ``len(MIGRATIONS)``, kept in ``PRAGMA user_version``):

* ``docs``: one row per document; the record as JSON text beside the columns
  that the listings need (``status``, the ``seq`` of its last change, and
  ``finished_at`` once it has completed or failed). Indexes on ``seq``, on
  ``doc_id`` of active rows only, on ``finished_at`` of finished rows only, and on
  ``status`` keep ``recent``, ``active``, ``expire`` and ``counts`` from reading
  every row.
* Listing indexes (``scan``), partial so that a progress update writes none: per status
  by ``seq``, by the attempt's start and by lower(filename), over finished rows and over
  queued rows (rows in work are few: they are sorted from the active index).
* ``changes``: the change log. Its ``INTEGER PRIMARY KEY`` is the sequence
  number. SQLite gives a new row the largest key plus one, and pruning never
  removes the newest row, so numbers are strictly increasing and never reused,
  for every process using the file. ``moved`` is 0 for an update that kept the
  document's status (``moves_since`` skips those without decoding them).
* ``leases``: the lease index (doc_id, epoch, worker, expires), written in the
  transaction of the record it follows; indexed by expiry.
* ``tallies``: the throughput counters (minute, completed, failed, pages), written
  in the transaction of the record that ended; minutes older than
  ``TALLY_SECONDS`` are deleted as new ones are written.
* ``workers``: the worker registry (worker_id, info as JSON, last_seen,
  expires), on the host's clock like the leases; expired rows are deleted by
  the next heartbeat.
* ``cursors`` (name, position, owner, expires) and ``outbox`` (name, key, seq,
  data as JSON): named cursors on the change log and their pending items,
  indexed in ``(seq, key)`` order.

Every change is made in a transaction (``BEGIN IMMEDIATE``, so the
read-modify-write cannot interleave with another writer) in WAL mode: once a
call returns, its change is in the WAL and survives the process being killed;
``synchronous=full`` also survives power loss. Changes of records that threads
of one process make at the same moment share a transaction (group commit),
each in a savepoint of its own, so that one refused change is undone alone;
every call still returns only after the commit that holds its change. A
thread writing alone has its transaction to itself at once. Connections,
retries, transactions and migrations are :mod:`docstatus.stores.sqlitedb`'s,
shared with the output store.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote

from pydantic_core import PydanticSerializationError, from_json, to_json

from ..errors import (
    DocumentNotFoundError,
    DuplicateDocumentError,
    StoreSchemaError,
    StoreUnavailableError,
)
from ..records import Record, finished_at, lease_of, tally_of
from .base import Change, ChangeType, LeaseEntry, OutboxEntry, Store, Tally, WorkerEntry
from .query import Entry, Position, Sort, matches_text
from .sqlitedb import Connection, Database

__all__ = ["MIGRATIONS", "SQLiteSettings", "SQLiteStore"]

T = TypeVar("T")

#: Schema migrations: ``MIGRATIONS[v]`` takes a database from version ``v`` to
#: ``v + 1``. Append only; never edit a released one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE docs (
        doc_id TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        seq INTEGER NOT NULL,
        finished_at REAL,
        record TEXT NOT NULL
    );
    CREATE INDEX docs_by_seq ON docs (seq);
    CREATE INDEX docs_active ON docs (doc_id) WHERE finished_at IS NULL;
    CREATE INDEX docs_finished_by_time ON docs (finished_at) WHERE finished_at IS NOT NULL;
    CREATE INDEX docs_by_status ON docs (status);
    CREATE TABLE changes (
        seq INTEGER PRIMARY KEY,
        type TEXT NOT NULL,
        doc_id TEXT NOT NULL,
        record TEXT
    );
    """,
    """
    CREATE TABLE leases (
        doc_id TEXT PRIMARY KEY,
        epoch INTEGER NOT NULL,
        worker TEXT NOT NULL,
        expires REAL NOT NULL
    );
    CREATE INDEX leases_by_expiry ON leases (expires);
    """,
    """
    CREATE TABLE workers (
        worker_id TEXT PRIMARY KEY,
        info TEXT NOT NULL,
        last_seen REAL NOT NULL,
        expires REAL NOT NULL
    );
    CREATE INDEX workers_by_expiry ON workers (expires);
    """,
    # The listing indexes (see SQLiteStore.scan): per status, by the seq of the last change,
    # the start of the attempt and the filename, for the statuses whose rows rarely change
    # without leaving them (finished and queued rows). Partial, and on columns that triggers
    # set when a row is inserted or changes status, so that a progress update (which sets
    # neither status nor these columns) writes none of them and the writes stay as they are.
    """
    ALTER TABLE docs ADD COLUMN started REAL;
    ALTER TABLE docs ADD COLUMN name TEXT;
    UPDATE docs SET started = json_extract(record, '$._track[0]'),
        name = lower(json_extract(record, '$.filename'));
    CREATE TRIGGER docs_listed_when_inserted AFTER INSERT ON docs BEGIN
        UPDATE docs SET started = json_extract(NEW.record, '$._track[0]'),
            name = lower(json_extract(NEW.record, '$.filename'))
            WHERE doc_id = NEW.doc_id;
    END;
    CREATE TRIGGER docs_listed_when_moved AFTER UPDATE OF status ON docs BEGIN
        UPDATE docs SET started = json_extract(NEW.record, '$._track[0]'),
            name = lower(json_extract(NEW.record, '$.filename'))
            WHERE doc_id = NEW.doc_id;
    END;
    CREATE INDEX docs_finished_by_seq ON docs (status, seq) WHERE finished_at IS NOT NULL;
    CREATE INDEX docs_finished_by_start ON docs (status, started, doc_id) WHERE finished_at IS NOT NULL;
    CREATE INDEX docs_finished_by_name ON docs (status, name, doc_id) WHERE finished_at IS NOT NULL;
    CREATE INDEX docs_queued_by_seq ON docs (seq) WHERE status = 'queued';
    CREATE INDEX docs_queued_by_start ON docs (started, doc_id) WHERE status = 'queued';
    CREATE INDEX docs_queued_by_name ON docs (name, doc_id) WHERE status = 'queued';
    """,
    """
    CREATE TABLE cursors (
        name TEXT PRIMARY KEY,
        position INTEGER NOT NULL,
        owner TEXT NOT NULL,
        expires REAL NOT NULL
    );
    CREATE TABLE outbox (
        name TEXT NOT NULL,
        key TEXT NOT NULL,
        seq INTEGER NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (name, key)
    );
    CREATE INDEX outbox_in_order ON outbox (name, seq, key);
    """,
    """
    CREATE TABLE tallies (
        minute INTEGER PRIMARY KEY,
        completed INTEGER NOT NULL DEFAULT 0,
        failed INTEGER NOT NULL DEFAULT 0,
        pages INTEGER NOT NULL DEFAULT 0
    );
    """,
    # Rows logged before it are taken as moves: a reader of moves gets them, as before.
    """
    ALTER TABLE changes ADD COLUMN moved INTEGER NOT NULL DEFAULT 1;
    """,
)

#: A change to the log; one that kept the document's status is marked as a report.
_LOG_MOVE = "INSERT INTO changes (type, doc_id, record) VALUES (?, ?, ?)"
_LOG_REPORT = "INSERT INTO changes (type, doc_id, record, moved) VALUES (?, ?, ?, 0)"

_SYNCHRONOUS = ("normal", "full")
_DEFAULT_TIMEOUT = 10.0

_json_encode = json.JSONEncoder(separators=(",", ":")).encode


def _encode(record: Record) -> str:
    """The record as JSON text (pydantic-core's encoder: a few times faster than json's)."""
    try:
        return to_json(record).decode()
    except PydanticSerializationError:
        # Lone surrogates have no UTF-8 form: keep them as \u escapes, as json does.
        return _json_encode(record)


def _logged(row: tuple[Any, ...]) -> Change:
    seq, kind, doc_id, _moved, text = row
    return Change(seq, kind, doc_id, None if text is None else _decode(text))


def _decode(text: str) -> Any:
    try:
        return from_json(text)
    except ValueError:
        return json.loads(text)  # \u escapes of lone surrogates, which pydantic-core refuses


def _key(doc_id: str) -> str | None:
    """``doc_id`` if SQLite can hold it; ``None`` for text with lone surrogates (no UTF-8 form)."""
    if doc_id.isascii():
        return doc_id
    try:
        doc_id.encode()
    except UnicodeEncodeError:
        return None
    return doc_id


@dataclass(frozen=True, slots=True)
class SQLiteSettings:
    """What a ``sqlite://`` URL says: the file, its durability and the lock wait."""

    path: str
    synchronous: str = "normal"
    timeout: float = _DEFAULT_TIMEOUT

    @classmethod
    def from_url(cls, url: str) -> SQLiteSettings:
        """Parse ``sqlite:///path.db?synchronous=full&timeout=5``; ``ValueError`` says what is wrong."""
        prefix = "sqlite:///"
        if not isinstance(url, str) or not url.startswith(prefix):
            raise ValueError(
                f"invalid SQLite store URL {url!r}: expected sqlite:///relative/path.db "
                "or sqlite:////absolute/path.db"
            )
        raw_path, _, query = url[len(prefix) :].partition("?")
        path = unquote(raw_path)
        if not path or path.endswith("/") or path == ":memory:" or "\x00" in path:
            raise ValueError(f"invalid SQLite store URL {url!r}: it names no database file")
        options = _options(url, query)
        return cls(path, _synchronous(url, options), _timeout(url, options))


def _options(url: str, query: str) -> dict[str, str]:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ValueError(f"invalid SQLite store URL {url!r}: malformed query {query!r}") from None
    options: dict[str, str] = {}
    for name, value in pairs:
        if name not in ("synchronous", "timeout"):
            raise ValueError(
                f"invalid SQLite store URL {url!r}: unknown option {name!r}; accepted: synchronous, timeout"
            )
        if name in options:
            raise ValueError(f"invalid SQLite store URL {url!r}: option {name!r} given twice")
        options[name] = value
    return options


def _synchronous(url: str, options: dict[str, str]) -> str:
    value = options.get("synchronous", "normal").lower()
    if value not in _SYNCHRONOUS:
        raise ValueError(
            f"invalid SQLite store URL {url!r}: synchronous must be normal or full, not {value!r}"
        )
    return value


def _timeout(url: str, options: dict[str, str]) -> float:
    raw = options.get("timeout")
    if raw is None:
        return _DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise ValueError(f"invalid SQLite store URL {url!r}: timeout must be a number of seconds >= 0")
    return value


def _first_duplicate(conn: sqlite3.Connection, doc_ids: list[str], first_new_seq: int) -> str:
    seen: set[str] = set()
    for doc_id in doc_ids:
        stored = conn.execute("SELECT 1 FROM docs WHERE doc_id = ? AND seq < ?", (doc_id, first_new_seq))
        if doc_id in seen or stored.fetchone():
            return doc_id
        seen.add(doc_id)
    return doc_ids[0]


def _tallied(records: Iterable[Record]) -> dict[int, list[int]]:
    """The throughput counts of new ``records``, by minute: ``[completed, failed, pages]``."""
    by_minute: dict[int, list[int]] = {}
    for record in records:
        counted = tally_of(None, record)
        if counted is not None:
            minute, status, pages = counted
            entry = by_minute.setdefault(minute, [0, 0, 0])
            entry[0 if status == "completed" else 1] += 1
            entry[2] += pages
    return by_minute


class SQLiteStore(Store):
    """Records in a SQLite file, shared by every thread and process that opens it.

    Each thread reads on its own connection; writers in one process take
    turns on a lock and one connection (so they never spin on SQLite's file
    lock against each other), concurrent changes of records sharing a commit
    (see the module docstring), and writers in different processes wait for
    SQLite's lock with retries for up to ``timeout`` seconds. Every failure
    of the file (missing directory, unwritable, disk I/O error, locked for
    too long) raises :class:`~docstatus.errors.StoreUnavailableError`, and
    the change is not made; the next call reconnects, so the store works
    again once the file does. A store opened before ``fork()`` opens new
    connections in the child.
    """

    shared = True

    #: Changes kept in the log for streams to resume from (at least this many).
    LOG_SIZE = 10_000
    #: The log is pruned once per this many changes, so a change costs O(1).
    PRUNE_EVERY = 100
    #: Seconds between checks of the file in :meth:`wait_for_change`.
    POLL_INTERVAL = 0.02
    #: Records kept decoded, so that a process updating its own documents
    #: skips decoding the stored JSON.
    CACHED_RECORDS = 4096
    #: The schema this class writes (overridable to test migrations).
    MIGRATIONS: tuple[str, ...] = MIGRATIONS
    #: Whether concurrent changes of records share transactions (group commit, see
    #: the module docstring); False gives each its own (to measure what sharing saves).
    GROUP_COMMIT = True

    def __init__(self, settings: SQLiteSettings, url: str | None = None) -> None:
        self.settings = settings
        self.url = url or f"sqlite:///{settings.path}"
        self._db = Database(
            settings.path,
            self.MIGRATIONS,
            newer=self._newer_schema,
            synchronous=settings.synchronous,
            timeout=settings.timeout,
            after_fork=self._reset_cache,
        )
        self._reset_cache()
        # Fail fast: a store that cannot be opened is reported by the constructor.
        self._run(lambda conn: None)

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        """The store for a ``sqlite://`` URL (see the module docstring)."""
        return cls(SQLiteSettings.from_url(url), url)

    def _newer_schema(self, found: int, supported: int) -> StoreSchemaError:
        return StoreSchemaError(self.url, found, supported)

    def _reset_cache(self) -> None:
        # doc_id -> (JSON text, record) of records this process wrote lately. Reset
        # in a forked child too: the parent's lock may have been held at the fork.
        self._latest: dict[str, tuple[str, Record]] = {}
        self._latest_lock = threading.Lock()

    def _run(self, op: Callable[[Connection], T], *, write: bool = False) -> T:
        """Run ``op`` on this thread's connection (in a write transaction if ``write``).

        Errors of the database become ``StoreUnavailableError``; anything
        ``op`` raises for its own reasons passes through unchanged.
        """
        try:
            return self._db.write(op) if write else self._db.read(op)
        except sqlite3.Error as exc:
            raise StoreUnavailableError(self.url, exc) from exc

    def _change(self, op: Callable[[Connection], T]) -> T:
        """Run ``op`` as :meth:`_run` does a write, in a transaction it may share with other threads'.

        For the changes of records, which concurrent writers make most:
        ``Database.write(group=True)`` says how they share one commit.
        """
        try:
            return self._db.write(op, group=self.GROUP_COMMIT)
        except sqlite3.Error as exc:
            raise StoreUnavailableError(self.url, exc) from exc

    # -- changes ---------------------------------------------------------------

    def _log(
        self, conn: Connection, kind: ChangeType, doc_id: str, text: str | None, moved: bool = True
    ) -> int:
        # Only a report is marked: every other row takes the column's default (a move).
        sql = _LOG_MOVE if moved else _LOG_REPORT
        cursor = conn.execute(sql, (kind, doc_id, text))
        seq = cursor.lastrowid
        if seq is None:  # cannot happen after an INSERT; keeps the type exact
            raise sqlite3.DatabaseError("no sequence number for a logged change")
        if seq % self.PRUNE_EVERY == 0:
            conn.execute("DELETE FROM changes WHERE seq <= ?", (seq - self.LOG_SIZE,))
        return seq

    def create(self, record: Record) -> Change:
        doc_id = record["doc_id"]
        if _key(doc_id) is None:
            raise ValueError(f"doc_id {doc_id!r} is not valid Unicode text")
        text = _encode(record)

        def insert(conn: Connection) -> Change:
            if conn.execute("SELECT 1 FROM docs WHERE doc_id = ?", (doc_id,)).fetchone():
                raise DuplicateDocumentError(doc_id)
            seq = self._log(conn, "created", doc_id, text)
            conn.execute(
                "INSERT INTO docs (doc_id, status, seq, finished_at, record) VALUES (?, ?, ?, ?, ?)",
                (doc_id, record["status"], seq, finished_at(record), text),
            )
            if "_lease" in record:
                self._move_lease(conn, doc_id, None, record)
            self._tally(conn, None, record)
            return Change(seq, "created", doc_id, record)

        done = self._change(insert)
        self._remember(doc_id, text, record)
        return done

    def modify(self, doc_id: str, change: Callable[[Record], Record]) -> Change:
        if _key(doc_id) is None:
            raise DocumentNotFoundError(doc_id)

        def rewrite(conn: Connection) -> tuple[Change, str]:
            row = conn.execute("SELECT record FROM docs WHERE doc_id = ?", (doc_id,)).fetchone()
            if row is None:
                raise DocumentNotFoundError(doc_id)
            return self._rewrite(conn, doc_id, self._decoded(doc_id, row[0]), change)

        done, text = self._change(rewrite)
        self._remember(doc_id, text, new=done.record)
        return done

    def _rewrite(
        self, conn: Connection, doc_id: str, old: Record, change: Callable[[Record], Record]
    ) -> tuple[Change, str]:
        new = change(old)
        text = _encode(new)
        same = new["status"] == old["status"]
        seq = self._log(conn, "updated", doc_id, text, moved=not same)
        if same:
            # The usual progress update: leave the status and active
            # indexes alone (SQLite skips indexes on columns not assigned).
            conn.execute("UPDATE docs SET seq = ?, record = ? WHERE doc_id = ?", (seq, text, doc_id))
        else:
            conn.execute(
                "UPDATE docs SET status = ?, seq = ?, finished_at = ?, record = ? WHERE doc_id = ?",
                (new["status"], seq, finished_at(new), text, doc_id),
            )
            self._tally(conn, old, new)
        if "_lease" in new:
            self._move_lease(conn, doc_id, old, new)
        return Change(seq, "updated", doc_id, new), text

    def _move_lease(self, conn: Connection, doc_id: str, old: Record | None, new: Record) -> None:
        # In the record's transaction: the lease index follows the record (see Store).
        before, after = None if old is None else lease_of(old), lease_of(new)
        if after is None:
            if before is not None:
                conn.execute("DELETE FROM leases WHERE doc_id = ?", (doc_id,))
        elif before is None or before[0] != after[0]:
            conn.execute(
                "INSERT OR REPLACE INTO leases (doc_id, epoch, worker, expires) VALUES (?, ?, ?, ?)",
                (doc_id, after[0], after[1], self.now() + after[2]),
            )

    # -- throughput counters -----------------------------------------------------

    def _tally(self, conn: Connection, old: Record | None, new: Record) -> None:
        # In the record's transaction: the counters follow records.tally_of (see Store).
        counted = tally_of(old, new)
        if counted is not None:
            minute, status, pages = counted
            done = status == "completed"
            self._add_tally(conn, minute, int(done), int(not done), pages)

    def _add_tally(self, conn: Connection, minute: int, done: int, failed: int, pages: int) -> None:
        conn.execute(
            "INSERT INTO tallies (minute, completed, failed, pages) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (minute) DO UPDATE SET completed = completed + excluded.completed, "
            "failed = failed + excluded.failed, pages = pages + excluded.pages",
            (minute, done, failed, pages),
        )
        # A probe of the primary key: nothing to delete but once a minute.
        conn.execute("DELETE FROM tallies WHERE minute < ?", (minute - self.TALLY_SECONDS,))

    def tallies(self, since: float, until: float) -> list[Tally]:
        rows = self._run(
            lambda conn: conn.execute(
                "SELECT minute, completed, failed, pages FROM tallies WHERE minute >= ? AND minute < ? "
                "ORDER BY minute",
                (since, until),
            ).fetchall()
        )
        return [Tally(int(m), int(c), int(f), int(p)) for m, c, f, p in rows]

    # -- leases ----------------------------------------------------------------

    def now(self) -> float:
        """``time.time()``: the host's clock (every process of one file is on one host)."""
        return time.time()

    def renew_lease(self, doc_id: str, epoch: int, seconds: float) -> bool:
        def renew(conn: Connection) -> bool:
            cursor = conn.execute(
                "UPDATE leases SET expires = ? WHERE doc_id = ? AND epoch = ?",
                (self.now() + seconds, doc_id, epoch),
            )
            return cursor.rowcount > 0

        return self._run(renew, write=True)

    def expired_leases(self, limit: int) -> list[tuple[str, int]]:
        rows = self._run(
            lambda conn: conn.execute(
                "SELECT doc_id, epoch FROM leases WHERE expires < ? ORDER BY expires LIMIT ?",
                (self.now(), limit),
            ).fetchall()
        )
        return [(str(doc_id), int(epoch)) for doc_id, epoch in rows]

    def leases(self) -> list[LeaseEntry]:
        rows = self._run(
            lambda conn: conn.execute(
                "SELECT doc_id, epoch, worker, expires FROM leases ORDER BY expires, doc_id"
            ).fetchall()
        )
        return [LeaseEntry(str(d), int(e), str(w), float(x)) for d, e, w, x in rows]

    def expire_lease(self, doc_id: str, epoch: int, change: Callable[[Record], Record]) -> Change | None:
        def expire(conn: Connection) -> tuple[Change, str] | None:
            row = conn.execute(
                "SELECT d.record FROM docs d JOIN leases l ON l.doc_id = d.doc_id "
                "WHERE d.doc_id = ? AND l.epoch = ? AND l.expires < ?",
                (doc_id, epoch, self.now()),
            ).fetchone()
            if row is None:
                return None
            return self._rewrite(conn, doc_id, self._decoded(doc_id, row[0]), change)

        done = self._change(expire)
        if done is None:
            return None
        self._remember(doc_id, done[1], new=done[0].record)
        return done[0]

    # -- the worker registry -------------------------------------------------------

    def heartbeat(self, worker_id: str, info: Mapping[str, Any], seconds: float) -> None:
        text = _encode(dict(info))

        def beat(conn: Connection) -> None:
            now = self.now()
            # Expired entries go here, in a write that is happening anyway (and by the index).
            conn.execute("DELETE FROM workers WHERE expires < ?", (now,))
            conn.execute(
                "INSERT OR REPLACE INTO workers (worker_id, info, last_seen, expires) VALUES (?, ?, ?, ?)",
                (worker_id, text, now, now + seconds),
            )

        self._run(beat, write=True)

    def workers(self) -> list[WorkerEntry]:
        rows = self._run(
            lambda conn: conn.execute(
                "SELECT worker_id, info, last_seen, expires FROM workers WHERE expires >= ? "
                "ORDER BY worker_id",
                (self.now(),),
            ).fetchall()
        )
        return [WorkerEntry(str(w), _decode(info), float(seen), float(x)) for w, info, seen, x in rows]

    def forget_worker(self, worker_id: str) -> None:
        self._run(
            lambda conn: conn.execute("DELETE FROM workers WHERE worker_id = ?", (worker_id,)), write=True
        )

    # -- named cursors and their outboxes -------------------------------------------

    def claim_cursor(self, name: str, owner: str, seconds: float, start: int) -> int | None:
        def claim(conn: Connection) -> int | None:
            now = self.now()
            row = conn.execute(
                "SELECT position, owner, expires FROM cursors WHERE name = ?", (name,)
            ).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO cursors (name, position, owner, expires) VALUES (?, ?, ?, ?)",
                    (name, start, owner, now + seconds),
                )
                return start
            if row[1] != owner and row[1] and row[2] >= now:
                return None
            conn.execute(
                "UPDATE cursors SET owner = ?, expires = ? WHERE name = ?", (owner, now + seconds, name)
            )
            return int(row[0])

        return self._run(claim, write=True)

    def _holds(self, conn: Connection, name: str, owner: str) -> bool:
        row = conn.execute(
            "SELECT 1 FROM cursors WHERE name = ? AND owner = ? AND expires >= ?", (name, owner, self.now())
        ).fetchone()
        return row is not None

    def move_cursor(self, name: str, owner: str, position: int, add: Sequence[OutboxEntry]) -> bool:
        rows = [(name, e.key, e.seq, _encode(e.data)) for e in add]

        def move(conn: Connection) -> bool:
            if not self._holds(conn, name, owner):
                return False
            conn.execute("UPDATE cursors SET position = ? WHERE name = ?", (position, name))
            conn.executemany("INSERT OR REPLACE INTO outbox (name, key, seq, data) VALUES (?, ?, ?, ?)", rows)
            return True

        return self._run(move, write=True)

    def outbox(self, name: str, limit: int) -> list[OutboxEntry]:
        rows = self._run(
            lambda conn: conn.execute(
                "SELECT key, seq, data FROM outbox WHERE name = ? ORDER BY seq, key LIMIT ?",
                (name, max(limit, 0)),
            ).fetchall()
        )
        return [OutboxEntry(str(key), int(seq), _decode(data)) for key, seq, data in rows]

    def settle(self, name: str, owner: str, key: str, data: dict[str, Any] | None) -> bool:
        def write(conn: Connection) -> bool:
            if not self._holds(conn, name, owner):
                return False
            if data is None:
                conn.execute("DELETE FROM outbox WHERE name = ? AND key = ?", (name, key))
            else:
                conn.execute(
                    "UPDATE outbox SET data = ? WHERE name = ? AND key = ?", (_encode(data), name, key)
                )
            return True

        return self._run(write, write=True)

    def release_cursor(self, name: str, owner: str) -> None:
        self._run(
            lambda conn: conn.execute(
                "UPDATE cursors SET owner = '', expires = 0 WHERE name = ? AND owner = ?", (name, owner)
            ),
            write=True,
        )

    def _decoded(self, doc_id: str, text: str) -> Record:
        # A record this process wrote with exactly this text needs no decoding
        # (comparing the strings costs far less than parsing one).
        with self._latest_lock:
            cached = self._latest.get(doc_id)
        if cached is not None and cached[0] == text:
            return cached[1]
        record: Record = _decode(text)
        return record

    def _remember(self, doc_id: str, text: str | None, new: Record | None) -> None:
        latest = self._latest
        with self._latest_lock:
            if text is None or new is None:
                latest.pop(doc_id, None)
                return
            latest[doc_id] = (text, new)
            if len(latest) > self.CACHED_RECORDS:
                del latest[next(iter(latest))]

    def expire(self, before: float, limit: int) -> list[Change]:
        def remove(conn: Connection) -> list[Change]:
            rows = conn.execute(
                "SELECT doc_id FROM docs WHERE finished_at IS NOT NULL AND finished_at < ? "
                "ORDER BY finished_at LIMIT ?",
                (before, limit),
            ).fetchall()
            removed = []
            for (doc_id,) in rows:
                conn.execute("DELETE FROM docs WHERE doc_id = ?", (doc_id,))
                removed.append(Change(self._log(conn, "removed", doc_id, None), "removed", doc_id, None))
            return removed

        if limit <= 0:
            return []
        removed = self._run(remove, write=True)
        for change in removed:
            self._remember(change.doc_id, None, None)
        return removed

    def remove_finished(self, doc_id: str) -> Change | None:
        if _key(doc_id) is None:
            return None

        def remove(conn: Connection) -> Change | None:
            gone = conn.execute(
                "DELETE FROM docs WHERE doc_id = ? AND finished_at IS NOT NULL", (doc_id,)
            ).rowcount
            return Change(self._log(conn, "removed", doc_id, None), "removed", doc_id, None) if gone else None

        change = self._change(remove)
        if change is not None:
            self._remember(doc_id, None, None)
        return change

    def import_records(self, records: Iterable[Record]) -> int:
        """Insert many new records in one transaction, each logged as ``created``.

        For loading data (and benchmarks): all or nothing, and
        ``DuplicateDocumentError`` if any doc_id exists. Records are stored as
        given, so they must be valid records (see :mod:`docstatus.records`).
        """
        records = list(records)
        texts = [(r["doc_id"], r["status"], finished_at(r), _encode(r)) for r in records]

        def insert(conn: Connection) -> int:
            first = int(conn.execute("SELECT coalesce(max(seq), 0) FROM changes").fetchone()[0]) + 1
            seqs = range(first, first + len(texts))
            conn.executemany(
                "INSERT INTO changes (seq, type, doc_id, record) VALUES (?, 'created', ?, ?)",
                [(seq, doc_id, text) for seq, (doc_id, _, _, text) in zip(seqs, texts, strict=True)],
            )
            try:
                conn.executemany(
                    "INSERT INTO docs (doc_id, status, seq, finished_at, record) VALUES (?, ?, ?, ?, ?)",
                    [(d, s, seq, f, t) for seq, (d, s, f, t) in zip(seqs, texts, strict=True)],
                )
            except sqlite3.IntegrityError:
                raise DuplicateDocumentError(_first_duplicate(conn, [t[0] for t in texts], first)) from None
            conn.execute("DELETE FROM changes WHERE seq <= ?", (first + len(texts) - 1 - self.LOG_SIZE,))
            for minute, (done, failed, pages) in sorted(tallied.items()):
                self._add_tally(conn, minute, done, failed, pages)
            return len(texts)

        tallied = _tallied(records)
        return self._run(insert, write=True) if texts else 0

    # -- reads -----------------------------------------------------------------

    def _records(self, sql: str, params: tuple[Any, ...]) -> list[Record]:
        rows = self._run(lambda conn: conn.execute(sql, params).fetchall())
        return [_decode(text) for (text,) in rows]

    def get(self, doc_id: str) -> Record | None:
        if _key(doc_id) is None:
            return None
        rows = self._records("SELECT record FROM docs WHERE doc_id = ?", (doc_id,))
        return rows[0] if rows else None

    def recent(self, limit: int) -> list[Record]:
        return self._records("SELECT record FROM docs ORDER BY seq DESC LIMIT ?", (limit,))

    def with_prefix(self, prefix: str, limit: int) -> list[Record]:
        # A range of the primary key: every id that starts with the prefix sorts between the
        # prefix and the prefix followed by the highest code point (never in a valid doc_id).
        return self._records(
            "SELECT record FROM docs WHERE doc_id >= ? AND doc_id < ? AND substr(doc_id, 1, ?) = ?"
            " ORDER BY seq DESC LIMIT ?",
            (prefix, prefix + "\U0010ffff", len(prefix), prefix, limit),
        )

    def active(self) -> list[Record]:
        # The active index is keyed by doc_id so that progress updates never
        # touch it; the few active rows are sorted here.
        return self._records(
            "SELECT record FROM docs INDEXED BY docs_active WHERE finished_at IS NULL ORDER BY seq DESC", ()
        )

    def counts(self) -> dict[str, int]:
        rows = self._run(
            lambda conn: conn.execute("SELECT status, count(*) FROM docs GROUP BY status").fetchall()
        )
        return dict(rows)

    def changes_since(self, seq: int, limit: int) -> list[Change]:
        return [_logged(row) for row in self._log_window(seq, limit, "record")]

    def moves_since(self, seq: int, limit: int) -> tuple[list[Change], int]:
        # The same window of the log as changes_since, the records of reports left unread.
        rows = self._log_window(seq, limit, "CASE WHEN moved THEN record END")
        return [_logged(row) for row in rows if row[3]], rows[-1][0] if rows else seq

    def _log_window(self, seq: int, limit: int, record: str) -> list[tuple[Any, ...]]:
        # Rows (seq, type, doc_id, moved, the record's text as `record` selects it).
        sql = f"SELECT seq, type, doc_id, moved, {record} FROM changes WHERE seq > ? ORDER BY seq LIMIT ?"
        return self._run(lambda conn: conn.execute(sql, (seq, limit)).fetchall())

    def last_seq(self) -> int:
        row = self._run(lambda conn: conn.execute("SELECT max(seq) FROM changes").fetchone())
        return int(row[0] or 0)

    def wait_for_change(self, after_seq: int, timeout: float) -> None:
        """Poll the file every :attr:`POLL_INTERVAL` seconds (SQLite has no notifications)."""
        deadline = time.monotonic() + timeout
        while not self._db.closed and self.last_seq() <= after_seq:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(self.POLL_INTERVAL, left))

    # -- listing -----------------------------------------------------------------

    GLOBAL_SORTS = frozenset({"updated"})

    def scan(
        self,
        status: str | None,
        sort: Sort,
        descending: bool,
        after: Position | None,
        limit: int,
        text: str | None,
    ) -> list[Entry]:
        """A walk of one listing index, ``LIMIT limit``: O(limit) rows for finished and queued rows.

        Rows in work (parsing ... storing) are few and change all the time: they
        are sorted from the active index (O(active)). With ``text``, the walk
        first reads on up to :attr:`TEXT_WALK` rows in order, comparing their
        filenames and ids without decoding them; if that does not fill the page
        (rare matches), the rest comes from the matches found by a scan of the
        status's filename index, which holds the filenames themselves (about
        0.5 µs a row), then ordered: so a search costs the smaller of the two.
        """
        if text is not None and status in _INDEXES:
            return self._run(lambda conn: _text_walk(conn, status, sort, descending, after, limit, text))
        sql, params = _scan_sql(status, sort, descending, after, limit, text)

        def walk(conn: Connection) -> list[Any]:
            if text is not None:
                _add_functions(conn)
            return conn.execute(sql, params).fetchall()

        return [(key, doc_id, _decode(record)) for key, doc_id, record in self._run(walk)]

    #: Rows a text search walks in order before it looks for the matches in the filename index.
    TEXT_WALK = 1000

    # -- lifetime --------------------------------------------------------------

    def close(self) -> None:
        """Close every connection this process opened; later calls raise ``StoreUnavailableError``."""
        self._db.close()

    def __repr__(self) -> str:
        return f"<SQLiteStore {self.url!r}>"


#: The key of each sort order: the column the listing indexes hold.
_SORT_KEYS: dict[str, str] = {"updated": "seq", "started": "started", "filename": "name"}

#: Which rows of a status each index holds: the partial indexes' own terms, so that
#: SQLite can tell the index serves the query.
_ROWS_OF = {
    "queued": "status = 'queued'",
    "completed": "status = 'completed' AND finished_at IS NOT NULL",
    "failed": "status = 'failed' AND finished_at IS NOT NULL",
}


#: The index of each walk that has one (named: SQLite's planner cannot know how few rows
#: a listing reads, and would rather sort the rows of a status than walk an index).
_INDEXES = {
    "queued": {
        "updated": "docs_queued_by_seq",
        "started": "docs_queued_by_start",
        "filename": "docs_queued_by_name",
    },
    **{
        status: {
            "updated": "docs_finished_by_seq",
            "started": "docs_finished_by_start",
            "filename": "docs_finished_by_name",
        }
        for status in ("completed", "failed")
    },
}


def _match(doc_id: str, filename: object, text: str) -> bool:
    return matches_text({"doc_id": doc_id, "filename": filename}, text)


def _add_functions(conn: sqlite3.Connection) -> None:
    conn.create_function("docstatus_match", 3, _match, deterministic=True)


def _text_walk(
    conn: sqlite3.Connection,
    status: str,
    sort: Sort,
    descending: bool,
    after: Position | None,
    limit: int,
    text: str,
) -> list[Entry]:
    """:meth:`SQLiteStore.scan` with ``text`` for a status with indexes (see there)."""
    _add_functions(conn)
    walk = SQLiteStore.TEXT_WALK
    sql, params = _scan_sql(
        status,
        sort,
        descending,
        after,
        walk,
        None,
        columns="doc_id, name, record",
    )
    found: list[tuple[Any, str, str]] = []
    walked, last = 0, after
    # SQLite steps the walk as rows are fetched: it stops when the page is full.
    for key, doc_id, name, record in conn.execute(sql, params):
        walked, last = walked + 1, (key, doc_id)
        if _match(doc_id, name, text):
            found.append((key, doc_id, record))
            if len(found) == limit:
                break
    if len(found) < limit and walked == walk:
        # Rare matches: the rest are among those of the filename index, after the walk.
        rest_sql, rest_params = _scan_sql(
            status, sort, descending, last, limit - len(found), text, matches=True
        )
        found += conn.execute(rest_sql, rest_params).fetchall()
    return [(key, doc_id, _decode(record)) for key, doc_id, record in found[:limit]]


def _scan_sql(
    status: str | None,
    sort: Sort,
    descending: bool,
    after: Position | None,
    limit: int,
    text: str | None,
    *,
    columns: str = "doc_id, record",
    matches: bool = False,
) -> tuple[str, tuple[Any, ...]]:
    """The SQL of one walk. With ``matches``, ``text`` is looked for in the status's filename index."""
    key = _SORT_KEYS[sort]
    where: list[str] = []
    params: list[Any] = []
    if status is not None:
        where.append(_ROWS_OF.get(status, "status = ? AND finished_at IS NULL"))
        params.extend(() if status in _ROWS_OF else (status,))
    op = "<" if descending else ">"
    if after is not None and sort == "updated":
        where.append(f"seq {op} ?")  # seq is unique: no tie to break
        params.append(after[0])
    elif after is not None:
        # The key alone bounds the index range (SQLite does not with a row value over an
        # expression); the row value then skips the ties before the position.
        where.append(f"{key} {op}= ? AND ({key}, doc_id) {op} (?, ?)")
        params.extend((after[0], *after))
    source = "docs"
    if text is not None and matches and status in _INDEXES:
        # The few matches, from the filename index (which holds name, lower(filename): a
        # match of it is a match of the filename, whose case is folded anyway), drive the walk. An
        # ASCII filename is compared in SQL (its folded case is its lower case), another in
        # Python.
        name = _SORT_KEYS["filename"]
        source = (
            f"(SELECT doc_id AS id FROM docs INDEXED BY {_INDEXES[status]['filename']}"
            f" WHERE {_ROWS_OF[status]} AND (instr({name}, ?) > 0 OR substr(doc_id, 1, ?) = ?"
            f" OR ({name} GLOB '*[^ -~]*' AND docstatus_match(doc_id, {name}, ?))))"
            " CROSS JOIN docs ON docs.doc_id = id"
        )
        params[:0] = (text.casefold(), len(text), text, text)
    if text is not None and not matches:
        where.append("docstatus_match(doc_id, json_extract(record, '$.filename'), ?)")
        params.append(text)
    order = "DESC" if descending else "ASC"
    index = f" INDEXED BY {_INDEXES[status][sort]}" if status in _INDEXES and not matches else ""
    sql = (
        f"SELECT {key}, {columns} FROM {source}{index} {'WHERE ' + ' AND '.join(where) if where else ''}"
        f" ORDER BY {key} {order}{'' if sort == 'updated' else f', doc_id {order}'} LIMIT ?"
    )
    return sql, (*params, limit)
