"""SQLite files the way docstatus uses them, for the status store and the output store alike.

A :class:`Database` is one file, opened with the project's settings: WAL (so
readers go on while a process writes), ``synchronous`` ``normal`` or ``full``,
a bounded WAL on disk, foreign keys enforced. It gives each thread a
connection of its own for reads, and the process one connection for writes
(so that one thread's write never makes another's page cache stale), each
opened (and the schema migrated) on first use; after ``fork()`` the child opens
its own and never touches the parent's. A call that finds the file locked by
another writer is retried, with jittered backoff, until a deadline. Writes are
``BEGIN IMMEDIATE`` transactions, taken in turn by the threads of one process
so that they never spin on SQLite's lock against each other.

Writes may also be *grouped* (``write(op, group=True)``): a thread that finds
another's grouped write waiting or in progress queues its op instead of
waiting for a transaction of its own, and one thread runs every queued op (up
to :attr:`Database.GROUP_LIMIT`) in one transaction, each in a savepoint of its
own. Many concurrent small changes then share one commit, and each caller
still returns only once its op is committed. A thread that writes alone runs
its op at once, on its own thread, exactly like an ungrouped write.

The schema version is SQLite's ``user_version``; :func:`migrate` brings a file
up to a tuple of migration scripts, once, even when several processes open it
at the same moment.

Failures of the file come out as the :class:`sqlite3.Error` that SQLite gave
(callers turn them into their own errors); after one, the connection it came
from is dropped, so the next call reconnects and works again once the file does.
"""

from __future__ import annotations

import contextlib
import copy
import os
import random
import sqlite3
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Literal, TypeVar

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

    #: Most grouped writes that one transaction holds (the rest wait for the next).
    GROUP_LIMIT = 64
    #: Seconds the oldest grouped write waits for as many others as the last group
    #: had, before its group starts with fewer: under the GIL, the threads that one
    #: commit wakes would otherwise each start a transaction alone. A writer alone
    #: (last group of one) never waits.
    GROUP_WAIT = 0.0002

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

    @property
    def queued_writes(self) -> int:
        """Grouped writes of this process not settled yet: waiting, or in the running transaction."""
        return len(self._groups)

    def _reset_process_state(self) -> None:
        # Connections, thread-locals and locks inherited through fork() belong to
        # the parent; the child leaves them alone and starts afresh.
        self._pid = os.getpid()
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._groups = _GroupQueue(self.GROUP_LIMIT, self.GROUP_WAIT)
        # The connection every write of this process uses, under the write lock: one
        # page cache that other threads' writes never invalidate.
        self._writer: Connection | None = None
        self._connections: weakref.WeakSet[Connection] = weakref.WeakSet()
        self._connections_lock = threading.Lock()

    def _check_usable(self) -> None:
        if self._closed:
            raise sqlite3.ProgrammingError(f"the database {self.path} has been closed")
        if self._pid != os.getpid():
            self._reset_process_state()
            if self._after_fork is not None:
                self._after_fork()

    def connection(self) -> Connection:
        """This thread's connection for reads, opened (and the file migrated) on first use.

        Raises ``sqlite3.ProgrammingError`` once the database is closed, and
        whatever opening the file raises (a ``sqlite3.Error``, or ``newer``'s
        error). Writes use the process's write connection instead
        (:meth:`write_connection`).
        """
        self._check_usable()
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

    def write_connection(self) -> Connection:
        """The connection that every write of this process runs on, opened on first use.

        For inspection (its pragmas, a trace of its statements): use it only
        through :meth:`write`. Raises as :meth:`connection` does.
        """
        self._check_usable()
        conn = self._writer
        if conn is None:
            conn = self._writer = self._open()
        return conn

    def _discard_writer(self, conn: Connection) -> None:
        if self._writer is conn:
            self._writer = None
        with conn.guard, contextlib.suppress(sqlite3.Error):
            conn.close()

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

    def write(self, op: Callable[[Connection], T], *, group: bool = False) -> T:
        """``op(connection)`` in a ``BEGIN IMMEDIATE`` transaction, committed if it returns.

        If ``op`` raises, the transaction is rolled back and the exception
        passes through. Threads of this process take turns; other processes
        are waited for up to ``timeout`` seconds, after which the call raises
        ``sqlite3.OperationalError`` (database is locked).

        With ``group``, ``op`` may share its transaction with the grouped
        writes of other threads (see the module docstring), in arrival order.
        The call still returns (or raises) only once that transaction is
        committed (or rolled back), with ``op``'s own result. If ``op`` raises
        an exception that is not a ``sqlite3.Error``, only ``op``'s savepoint
        is rolled back and the exception is raised here; the others of the
        group are committed. A ``sqlite3.Error`` (of any op, or of the
        transaction) rolls the whole group back and is raised to every one of
        its callers (each gets its own copy). A grouped ``op`` may run on
        another thread and its connection, and again when another process held
        the file: it must use only the connection it is given, open no
        transaction or savepoint of its own, and be safe to run twice.
        """
        if not group:
            return self._run(op, "write")
        self._check_usable()  # a forked child starts with a queue of its own
        queued = _Queued(op, time.monotonic() + self.timeout)
        self._groups.submit(queued, self._run_group)
        outcome: T = queued.outcome()
        return outcome

    def _run_group(self, group: list[_Queued], runner: _Queued) -> None:
        """Every write of ``group`` in one transaction, on this (``runner``'s) thread; never raises."""
        first = group[0]  # the oldest: its deadline is the group's
        try:
            if len(group) == 1:
                # Alone: the op's own transaction, exactly as an ungrouped write.
                first.result = self._run(first.op, "write", first.deadline)
            else:
                self._run(lambda conn: _apply_each(conn, group), "write", first.deadline)
        except BaseException as exc:
            for queued in group:
                queued.result, queued.error = None, exc if queued is runner else _error_for_follower(exc)

    def _run(self, op: Callable[[Connection], T], mode: _Mode, deadline: float | None = None) -> T:
        if deadline is None:
            deadline = time.monotonic() + self.timeout
        pause = 0.0002
        while True:
            try:
                if mode == "write":
                    return self._write_once(op, deadline)
                conn = self.connection()
                with conn.guard:
                    return op(conn) if mode == "plain" else _in_transaction(conn, "BEGIN", op)
            except sqlite3.Error as exc:
                if not (_is_busy(exc) and time.monotonic() < deadline):
                    if mode != "write":
                        self._discard()
                    raise
            # Jittered backoff: writers of several processes must not retry in lockstep.
            time.sleep(pause * random.uniform(0.5, 1.5))
            pause = min(pause * 2, 0.01)

    def _write_once(self, op: Callable[[Connection], T], deadline: float) -> T:
        self._check_usable()  # before the lock: a forked child gets locks of its own
        if not self._write_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            # A wait for the lock that ran out, as SQLite reports its own.
            raise sqlite3.OperationalError("database is locked: another thread's change took too long")
        try:
            conn = self.write_connection()
            try:
                with conn.guard:
                    return _in_transaction(conn, "BEGIN IMMEDIATE", op)
            except sqlite3.Error as exc:
                if not (_is_busy(exc) and time.monotonic() < deadline):
                    self._discard_writer(conn)  # the next write reconnects
                raise
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


@dataclass(slots=True, eq=False)
class _Queued:
    """A grouped write: its op, and once its group is done, what the op gave or raised."""

    op: Callable[[Connection], Any]
    deadline: float
    #: What the writer's thread sleeps on: a lock held while no wake-up is pending (made
    #: when it first sleeps). A raw lock: a thread switch through an Event costs twice as much.
    turn: threading.Lock | None = None
    #: A wake-up is pending (``turn`` released, not acquired again yet). Under the queue's lock.
    woken: bool = False
    #: In a group that a thread runs (under the queue's lock): no longer to be withdrawn.
    taken: bool = False
    settled: bool = False
    result: Any = None
    error: BaseException | None = field(default=None, repr=False)

    def outcome(self) -> Any:
        error, self.error = self.error, None  # no cycle through the traceback's frames
        if error is not None:
            raise error
        return self.result


#: How a group is run: ``run(group, runner)`` (see :meth:`_GroupQueue.submit`).
_RunGroup = Callable[[list["_Queued"], "_Queued"], None]


class _GroupQueue:
    """Grouped writes waiting for their transaction, and whose thread runs the next one.

    A group starts when none is running and the queue holds as many writes as
    the last group had (so a writer alone starts at once), or when the write
    at the head of the queue has waited ``wait`` seconds for the others. The
    thread whose write completes the count runs the group itself, without a
    thread switch; it runs groups until its own write is settled, then wakes
    the settled writers and the new head of the queue.
    """

    def __init__(self, limit: int, wait: float) -> None:
        self.limit = limit
        self.wait = wait
        self._lock = threading.Lock()
        self._queue: deque[_Queued] = deque()
        self._running = False
        self._claimant: _Queued | None = None  # the write whose thread runs (or is to run) groups
        self._expected = 1  # the size of the last group: how many writes the next one waits for

    def __len__(self) -> int:
        return len(self._queue)

    def submit(self, queued: _Queued, run: _RunGroup) -> None:
        """Return once ``queued`` is settled, by a group that this thread or another ran.

        ``run(group, queued)`` runs ``group`` on ``queued``'s thread: it sets the
        result or error of every write of ``group`` and never raises.
        """
        with self._lock:
            self._queue.append(queued)
            claimed = self._claim(queued, waited=False)
        try:
            claimed = claimed or self._wait(queued)
        except BaseException:
            self._withdraw(queued)  # interrupted (a signal's exception): the others go on
            raise
        if claimed:
            self._run_until_settled(queued, run)

    def _claim(self, queued: _Queued, waited: bool) -> bool:
        # Under the lock: whether this thread is to run the next group now.
        if self._running or queued.settled:
            return False
        if len(self._queue) >= self._expected or (waited and self._queue[0] is queued):
            self._running, self._claimant = True, queued
            return True
        return False

    def _wait(self, queued: _Queued) -> bool:
        """Sleep until ``queued`` is settled (False) or this thread is to run a group (True).

        Every wake-up is followed by a look at the state under the lock, so a
        wake-up skipped because one was pending loses nothing.
        """
        woke = waited = False
        while True:
            with self._lock:
                if woke:
                    queued.woken = False  # the acquire consumed it
                if queued.settled:
                    return False
                if self._claim(queued, waited):
                    return True
                idle_head = not self._running and self._queue[0] is queued
                turn = self._turn(queued)
            woke = turn.acquire(True, self.wait if idle_head else -1)
            waited = not woke

    def _withdraw(self, queued: _Queued) -> None:
        """Take ``queued`` off the queue unless a group has it, and wake the head it leaves."""
        with self._lock:
            if queued.taken or queued.settled:
                return  # its group runs, and commits it: the caller's exception says nothing of it
            if self._running and self._claimant is queued:
                self._running = False  # it had claimed the next group, and will not run it
            self._queue.remove(queued)
            if self._queue and not self._running:
                self._wake(self._queue[0])

    @staticmethod
    def _turn(queued: _Queued) -> threading.Lock:
        # Under the lock: ``queued``'s turn, held, with no wake-up pending.
        if queued.turn is None:
            queued.turn = threading.Lock()
            queued.turn.acquire()
        elif queued.woken:
            queued.turn.acquire()  # released: returns at once
            queued.woken = False
        return queued.turn

    @staticmethod
    def _wake(queued: _Queued) -> None:
        # Under the lock. A writer that has not slept yet looks at the state before it does.
        if queued.turn is not None and not queued.woken:
            queued.woken = True
            queued.turn.release()

    def _run_until_settled(self, queued: _Queued, run: _RunGroup) -> None:
        done = False
        while not done:
            with self._lock:
                group = list(islice(self._queue, self.limit))
                for member in group:
                    member.taken = True
                self._expected = len(group)
            try:
                run(group, queued)
            finally:
                done = self._settle(queued, group)

    def _settle(self, queued: _Queued, group: list[_Queued]) -> bool:
        """Take ``group`` off the queue and wake its writers; whether ``queued`` was among them."""
        with self._lock:
            for member in group:
                self._queue.popleft()
                member.settled = True
            done = queued.settled
            self._running = not done  # a write beyond the limit runs the next group too
            for member in group:
                if member is not queued:
                    self._wake(member)
            if done and self._queue:
                self._wake(self._queue[0])
        return done


def _apply_each(conn: Connection, group: list[_Queued]) -> None:
    """Every op of ``group`` in a savepoint of its own: one that raises is rolled back alone."""
    for queued in group:
        conn.execute("SAVEPOINT grouped_write")
        try:
            queued.result, queued.error = queued.op(conn), None
        except sqlite3.Error:
            raise  # the file's failure is the whole group's
        except Exception as exc:
            conn.execute("ROLLBACK TO grouped_write")
            queued.result, queued.error = None, exc
        conn.execute("RELEASE grouped_write")


def _error_for_follower(exc: BaseException) -> BaseException:
    """What a write whose group failed with ``exc`` raises in its own thread."""
    if isinstance(exc, sqlite3.Error):
        return copy.copy(exc)  # its own instance: one error raised in many threads would mix tracebacks
    # An interruption of the thread that ran the group (KeyboardInterrupt, ...) is its own.
    return sqlite3.OperationalError(f"the transaction of this change was rolled back: {exc!r}")
