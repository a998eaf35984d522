"""SQLite files the way docstatus uses them, for the status store and the output store alike.

A :class:`Database` is one file, opened with the project's settings: WAL (so
readers go on while a process writes), ``synchronous`` ``normal`` or ``full``,
a bounded WAL on disk, foreign keys enforced. It gives each thread a
connection of its own, opened (and its schema migrated) on first use; after
``fork()`` the child opens its own and never touches the parent's. A call that
finds the file locked by another writer is retried, with jittered backoff,
until a deadline. Writes are ``BEGIN IMMEDIATE`` transactions, taken in turn by
the threads of one process so that they never spin on SQLite's lock against
each other.

The schema version is SQLite's ``user_version``; :func:`migrate` brings a file
up to a tuple of migration scripts, once, even when several processes open it
at the same moment.

Failures of the file come out as the :class:`sqlite3.Error` that SQLite gave
(callers turn them into their own errors); after one, the thread's connection
is dropped, so its next call reconnects and works again once the file does.
"""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, TypeVar

__all__ = ["Connection", "Database", "migrate", "schema_version"]

T = TypeVar("T")

#: Builds the error for a file whose schema is newer than the code: ``newer(found, supported)``.
NewerSchema = Callable[[int, int], Exception]

_SYNCHRONOUS = ("normal", "full")

# SQLite result codes (the low byte of an extended code) that mean "another
# connection holds the lock": worth waiting for, unlike every other error.
_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6


class Connection(sqlite3.Connection):
    """A connection that can be weakly referenced (the base class cannot).

    ``guard`` is held while the connection is in use: closing a connection
    that another thread is using crashes the interpreter, so ``close()``
    waits for it.
    """

    guard: threading.Lock


def schema_version(conn: sqlite3.Connection) -> int:
    """The schema version recorded in the database file (0 for a new file)."""
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def migrate(conn: sqlite3.Connection, migrations: Sequence[str], *, newer: NewerSchema) -> None:
    """Bring the file to version ``len(migrations)`` in one transaction.

    ``migrations[v]`` takes a file from version ``v`` to ``v + 1`` (SQL
    statements separated by ``;``). A file of a newer version raises
    ``newer(found, supported)`` and is left as it is; a failing migration
    changes nothing. Safe when several processes open the file at once: the
    version is read again under the write lock, so each migration runs exactly
    once.
    """
    target = len(migrations)
    if schema_version(conn) == target:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = schema_version(conn)
        if found > target:
            raise newer(found, target)
        for script in migrations[found:]:
            for statement in _statements(script):
                conn.execute(statement)
        # PRAGMA takes no parameters; target is an int we computed.
        conn.execute(f"PRAGMA user_version = {int(target)}")
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise


def _statements(script: str) -> list[str]:
    # executescript() would commit the open transaction first; split instead, at the
    # semicolons that end a statement (not those inside a trigger's BEGIN ... END).
    statements, current = [], ""
    for part in script.split(";"):
        current += part + ";"
        if sqlite3.complete_statement(current):
            if current.strip(" \t\n;"):
                statements.append(current.strip())
            current = ""
    if current.strip(" \t\n;"):
        statements.append(current.strip())  # incomplete: executing it says what is wrong
    return statements


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        # The error that brought us here is the one worth reporting.
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


# How a call uses its connection: as it is, inside a read transaction (one
# snapshot for all its statements), or inside a write transaction.
_Mode = Literal["plain", "snapshot", "write"]


class Database:
    """One SQLite file, safe to use from every thread; see the module docstring.

    ``migrations`` is the schema (see :func:`migrate`), applied when a
    connection is opened; ``newer`` builds the error for a file of a newer
    schema. ``timeout`` is how many seconds a call may wait for other writers.
    ``after_fork`` runs in a child process before its first call, for state
    of the caller's that must not be shared with the parent either (locks).
    """

    #: Bytes of WAL kept on disk after a checkpoint: after a large
    #: transaction the WAL shrinks back instead of keeping its peak size.
    WAL_SIZE_LIMIT = 64 * 1024 * 1024

    def __init__(
        self,
        path: str | Path,
        migrations: Sequence[str],
        *,
        newer: NewerSchema,
        synchronous: str = "normal",
        timeout: float = 10.0,
        after_fork: Callable[[], None] | None = None,
    ) -> None:
        if synchronous not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be normal or full, not {synchronous!r}")
        self.path = str(path)
        self.migrations = tuple(migrations)
        self.synchronous = synchronous
        self.timeout = timeout
        self._newer = newer
        self._after_fork = after_fork
        self._closed = False
        self._reset_process_state()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called (every later call raises)."""
        return self._closed

    def _reset_process_state(self) -> None:
        # Connections, thread-locals and locks inherited through fork() belong to
        # the parent; the child leaves them alone and starts afresh.
        self._pid = os.getpid()
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._connections: weakref.WeakSet[Connection] = weakref.WeakSet()
        self._connections_lock = threading.Lock()

    def connection(self) -> Connection:
        """This thread's connection, opened (and the file migrated) on first use.

        Raises ``sqlite3.ProgrammingError`` once the database is closed, and
        whatever opening the file raises (a ``sqlite3.Error``, or ``newer``'s
        error).
        """
        if self._closed:
            raise sqlite3.ProgrammingError(f"the database {self.path} has been closed")
        if self._pid != os.getpid():
            self._reset_process_state()
            if self._after_fork is not None:
                self._after_fork()
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._open()
            self._local.conn = conn
        return conn

    def _open(self) -> Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=0,  # waiting is done by _run, with shorter sleeps than SQLite's
            isolation_level=None,  # transactions are explicit
            check_same_thread=False,  # close() may run on another thread
            factory=Connection,
        )
        conn.guard = threading.Lock()
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                # Another connection kept the file from switching: retried like a lock.
                raise sqlite3.OperationalError(f"database is locked: journal mode stays {mode!r}, not WAL")
            conn.execute(f"PRAGMA synchronous = {self.synchronous.upper()}")
            conn.execute(f"PRAGMA journal_size_limit = {self.WAL_SIZE_LIMIT}")
            conn.execute("PRAGMA foreign_keys = ON")
            migrate(conn, self.migrations, newer=self._newer)
        except BaseException:
            conn.close()
            raise
        with self._connections_lock:
            self._connections.add(conn)
        return conn

    def _discard(self) -> None:
        conn: Connection | None = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with conn.guard, contextlib.suppress(sqlite3.Error):
                conn.close()

    def read(self, op: Callable[[Connection], T], *, snapshot: bool = False) -> T:
        """``op(connection)``, waiting out other writers; its result.

        With ``snapshot``, every statement of ``op`` reads the same state of
        the file (one read transaction). A ``sqlite3.Error`` means the file
        cannot be used now; anything ``op`` raises for its own reasons passes
        through unchanged.
        """
        return self._run(op, "snapshot" if snapshot else "plain")

    def write(self, op: Callable[[Connection], T]) -> T:
        """``op(connection)`` in a ``BEGIN IMMEDIATE`` transaction, committed if it returns.

        If ``op`` raises, the transaction is rolled back and the exception
        passes through. Threads of this process take turns; other processes
        are waited for up to ``timeout`` seconds, after which the call raises
        ``sqlite3.OperationalError`` (database is locked).
        """
        return self._run(op, "write")

    def _run(self, op: Callable[[Connection], T], mode: _Mode) -> T:
        deadline = time.monotonic() + self.timeout
        pause = 0.0002
        while True:
            try:
                conn = self.connection()
                with conn.guard:
                    return op(conn) if mode == "plain" else self._transaction(conn, op, mode, deadline)
            except sqlite3.Error as exc:
                if not (_is_busy(exc) and time.monotonic() < deadline):
                    self._discard()
                    raise
            # Jittered backoff: writers of several processes must not retry in lockstep.
            time.sleep(pause * random.uniform(0.5, 1.5))
            pause = min(pause * 2, 0.01)

    def _transaction(
        self, conn: Connection, op: Callable[[Connection], T], mode: _Mode, deadline: float
    ) -> T:
        if mode == "snapshot":
            return _in_transaction(conn, "BEGIN", op)
        if not self._write_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            # A wait for the lock that ran out, as SQLite reports its own.
            raise sqlite3.OperationalError("database is locked: another thread's change took too long")
        try:
            return _in_transaction(conn, "BEGIN IMMEDIATE", op)
        finally:
            self._write_lock.release()

    def close(self) -> None:
        """Close every connection this process opened; later calls raise ``sqlite3.ProgrammingError``."""
        self._closed = True
        if self._pid != os.getpid():
            return  # the parent's connections are not ours to close
        with self._connections_lock:
            connections = list(self._connections)
            self._connections.clear()
        for conn in connections:
            with conn.guard, contextlib.suppress(sqlite3.Error):
                conn.close()

    def __repr__(self) -> str:
        return f"<Database {self.path!r}>"


def _in_transaction(conn: Connection, begin: str, op: Callable[[Connection], T]) -> T:
    conn.execute(begin)
    try:
        result = op(conn)
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise
    return result
