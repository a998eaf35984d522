"""The shared SQLite helper: pragmas, a connection per thread and per process, waiting out
writers, transactions and schema migrations, on real files.

The stores built on it (the status store, the output store) are tested in their own modules.
"""

from __future__ import annotations

import multiprocessing
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

import pytest

from docstatus.stores.sqlitedb import Connection, Database, migrate, schema_version
from helpers import Held, outcomes_on_threads, wait_until

SCHEMA = ("CREATE TABLE items (name TEXT PRIMARY KEY)",)


class NewerFile(Exception):
    def __init__(self, found: int, supported: int) -> None:
        super().__init__(f"found {found}, supported {supported}")
        self.found, self.supported = found, supported


def _open(path: Path, migrations: tuple[str, ...] = SCHEMA, **options: Any) -> Database:
    return Database(path, migrations, newer=NewerFile, **options)


def _insert(name: str) -> Callable[[Connection], object]:
    return lambda conn: conn.execute("INSERT INTO items VALUES (?)", (name,))


def _names(conn: sqlite3.Connection) -> list[str]:
    return [row[0] for row in conn.execute("SELECT name FROM items ORDER BY name")]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "helper.db"


@pytest.mark.parametrize(("synchronous", "level"), [("normal", 1), ("full", 2)])
def test_connections_have_the_projects_pragmas(path: Path, synchronous: str, level: int) -> None:
    db = _open(path, synchronous=synchronous)
    try:
        conn = db.connection()
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == level
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA journal_size_limit").fetchone()[0] == Database.WAL_SIZE_LIMIT
        assert schema_version(conn) == len(SCHEMA)
    finally:
        db.close()


def test_an_unknown_synchronous_level_is_refused(path: Path) -> None:
    with pytest.raises(ValueError, match="synchronous must be normal or full"):
        _open(path, synchronous="off")


def test_each_thread_has_its_own_connection_and_close_closes_them_all(path: Path) -> None:
    db = _open(path)
    opened = [db.connection()]
    thread = threading.Thread(target=lambda: opened.append(db.connection()))
    thread.start()
    thread.join()
    assert db.connection() is opened[0]
    assert opened[0] is not opened[1]
    db.close()
    assert db.closed
    for conn in opened:
        with pytest.raises(sqlite3.ProgrammingError):
            conn.execute("SELECT 1")
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        db.read(_names)


def _child_uses(db: Database, parent_conn: int, out: Pipe) -> None:
    conn = db.connection()
    db.write(_insert("from the child"))
    out.send((id(conn) != parent_conn, db.read(_names), RESETS))


RESETS: list[int] = []


def test_a_forked_child_opens_its_own_connection_and_resets_the_callers_state(path: Path) -> None:
    db = _open(path, after_fork=lambda: RESETS.append(1))
    try:
        parent_conn = db.connection()
        fork = multiprocessing.get_context("fork")
        reader, writer = fork.Pipe(duplex=False)
        child = fork.Process(target=_child_uses, args=(db, id(parent_conn), writer))
        child.start()
        own_connection, names, resets = reader.recv()
        child.join(30)
        assert child.exitcode == 0
        assert own_connection and names == ["from the child"] and resets == [1]
        assert RESETS == []  # the parent is untouched: same connection, no reset
        assert db.connection() is parent_conn
        assert db.read(_names) == ["from the child"]
    finally:
        db.close()


def test_a_write_waits_for_another_writer_until_its_deadline(path: Path) -> None:
    db = _open(path, timeout=0.3)
    db.connection()
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        holder.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            db.write(_insert("late"))
        assert time.monotonic() - started >= 0.3
        assert db.read(_names) == []  # reads go on under WAL
        # A lock released within the deadline is waited for.
        threading.Timer(0.1, holder.execute, ("ROLLBACK",)).start()
        db.write(_insert("patient"))
        assert db.read(_names) == ["patient"]
    finally:
        holder.close()
        db.close()


def test_a_write_that_raises_is_rolled_back(path: Path) -> None:
    db = _open(path)
    try:

        def half_done(conn: Connection) -> None:
            conn.execute("INSERT INTO items VALUES ('half')")
            raise RuntimeError("changed my mind")

        with pytest.raises(RuntimeError, match="changed my mind"):
            db.write(half_done)
        assert db.read(_names) == []
        assert not db.connection().in_transaction
        assert db.write(lambda conn: conn.execute("INSERT INTO items VALUES ('whole')").rowcount) == 1
        assert db.read(_names) == ["whole"]
    finally:
        db.close()


@pytest.mark.parametrize("snapshot", [True, False])
def test_a_snapshot_read_sees_one_state_of_the_file(path: Path, snapshot: bool) -> None:
    db = _open(path)
    other = _open(path)

    def twice(conn: Connection) -> tuple[list[str], list[str]]:
        first = _names(conn)
        # Another connection (of another thread) commits between the two statements.
        writer = threading.Thread(target=other.write, args=(_insert("between"),))
        writer.start()
        writer.join(10)
        return first, _names(conn)

    try:
        first, second = db.read(twice, snapshot=snapshot)
        assert first == []
        assert second == ([] if snapshot else ["between"])
        assert db.read(_names) == ["between"]
    finally:
        other.close()
        db.close()


def test_an_error_of_the_file_drops_the_connection_and_the_next_call_reconnects(path: Path) -> None:
    db = _open(path)
    try:
        first = db.connection()
        with pytest.raises(sqlite3.OperationalError):
            db.read(lambda conn: conn.execute("SELECT * FROM no_such_table"))
        assert db.connection() is not first
        assert db.read(_names) == []
    finally:
        db.close()


def test_migrations_run_once_in_order_and_a_newer_file_is_refused(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        migrate(conn, SCHEMA, newer=NewerFile)
        conn.execute("INSERT INTO items VALUES ('kept')")
        later = (*SCHEMA, "ALTER TABLE items ADD COLUMN size INTEGER; CREATE INDEX by_size ON items (size)")
        migrate(conn, later, newer=NewerFile)
        migrate(conn, later, newer=NewerFile)  # already current: nothing to do
        assert schema_version(conn) == 2
        assert [row[1] for row in conn.execute("PRAGMA table_info(items)")] == ["name", "size"]
        assert _names(conn) == ["kept"]
        with pytest.raises(NewerFile) as info:
            migrate(conn, SCHEMA, newer=NewerFile)
        assert (info.value.found, info.value.supported) == (2, 1)
        assert schema_version(conn) == 2
        with pytest.raises(sqlite3.OperationalError):
            migrate(conn, (*later, "ALTER TABLE items ADD COLUMN x TEXT; NOT SQL"), newer=NewerFile)
        assert schema_version(conn) == 2  # the failing migration changed nothing
        assert "x" not in [row[1] for row in conn.execute("PRAGMA table_info(items)")]
    finally:
        conn.close()


def test_a_newer_file_is_refused_when_a_connection_opens(path: Path) -> None:
    newer = _open(path, (*SCHEMA, "CREATE TABLE more (x)"))
    newer.connection()  # opened lazily: this creates the file
    newer.close()
    db = _open(path)
    with pytest.raises(NewerFile):
        db.connection()
    db.close()


# -- grouped writes -----------------------------------------------------------------


class _Held(Held):
    """A grouped write, on a thread of its own, that holds the turn until released.

    While it waits inside its transaction, other grouped writes can only queue:
    released, they run as one group (see ``Database.write``).
    """

    def __init__(self, db: Database) -> None:
        super().__init__(db.write, self._hold, group=True)
        self.db = db

    def _hold(self, conn: Connection) -> None:
        conn.execute("INSERT INTO items VALUES ('held')")
        self.wait_for_release()


def _queue_behind(held: _Held, writes: list[Callable[[], Any]]) -> list[Any]:
    """Run each of ``writes`` on a thread of its own, queued behind ``held``; what each gave or raised."""

    def queued() -> None:
        wait_until(lambda: held.db.queued_writes == 1 + len(writes))
        held.release.set()

    return outcomes_on_threads(writes, queued)


def _traced(db: Database) -> list[str]:
    statements: list[str] = []
    db.write_connection().set_trace_callback(statements.append)
    return statements


def _insert_and_note(name: str, ran_on: list[int]) -> Callable[[Connection], str]:
    def op(conn: Connection) -> str:
        ran_on.append(threading.get_ident())
        conn.execute("INSERT INTO items VALUES (?)", (name,))
        return f"{name} done"

    return op


def test_grouped_writes_that_queue_share_one_transaction_and_each_gets_its_result(path: Path) -> None:
    db = _open(path)
    try:
        statements = _traced(db)
        ran_on: list[int] = []
        names = [f"w{i}" for i in range(8)]
        with _Held(db) as held:
            outcomes = _queue_behind(
                held, [lambda n=n: db.write(_insert_and_note(n, ran_on), group=True) for n in names]
            )
        assert outcomes == [f"{n} done" for n in names]
        assert db.read(_names) == sorted([*names, "held"])
        # One transaction for the held write, one for the eight: on one thread, a savepoint each.
        assert [s for s in statements if s in ("BEGIN IMMEDIATE", "COMMIT")] == [
            "BEGIN IMMEDIATE",
            "COMMIT",
        ] * 2
        assert sum(s.startswith("SAVEPOINT") for s in statements) == 8
        assert len(set(ran_on)) == 1 and len(ran_on) == 8
        assert db.queued_writes == 0
    finally:
        db.close()


def test_a_grouped_write_that_raises_is_undone_alone_and_raised_in_its_own_thread(path: Path) -> None:
    db = _open(path)

    def refused(conn: Connection) -> None:
        conn.execute("INSERT INTO items VALUES ('refused')")
        raise LookupError("no such thing")

    try:
        statements = _traced(db)
        writes: list[Callable[[], Any]] = [
            lambda: db.write(_insert("before"), group=True).rowcount,
            lambda: db.write(refused, group=True),
            lambda: db.write(_insert("after"), group=True).rowcount,
        ]
        with _Held(db) as held:
            before, error, after = _queue_behind(held, writes)
        assert (before, after) == (1, 1)
        assert isinstance(error, LookupError) and str(error) == "no such thing"
        assert db.read(_names) == ["after", "before", "held"]
        assert statements.count("COMMIT") == 2  # the three shared one transaction
        assert not db.write_connection().in_transaction
    finally:
        db.close()


def test_a_database_error_in_a_group_fails_every_write_of_it_and_writes_nothing(path: Path) -> None:
    db = _open(path)
    try:
        writes: list[Callable[[], Any]] = [
            lambda: db.write(_insert("first"), group=True),
            lambda: db.write(_insert("held"), group=True),  # the primary key is taken: IntegrityError
            lambda: db.write(_insert("last"), group=True),
        ]
        with _Held(db) as held:
            outcomes = _queue_behind(held, writes)
        assert all(isinstance(o, sqlite3.IntegrityError) for o in outcomes), outcomes
        assert len({id(o) for o in outcomes}) == 3  # each caller has an error of its own
        assert db.read(_names) == ["held"]
        db.write(_insert("later"), group=True)  # and the next write works
        assert db.read(_names) == ["held", "later"]
    finally:
        db.close()


def test_a_grouped_write_alone_is_its_own_transaction_on_its_own_thread(path: Path) -> None:
    db = _open(path)
    try:
        statements = _traced(db)
        ran_on: list[int] = []
        assert db.write(_insert_and_note("alone", ran_on), group=True) == "alone done"
        assert ran_on == [threading.get_ident()]
        assert statements == ["BEGIN IMMEDIATE", "INSERT INTO items VALUES ('alone')", "COMMIT"]
    finally:
        db.close()


def test_more_grouped_writes_than_a_group_holds_all_commit(path: Path) -> None:
    class Small(Database):
        GROUP_LIMIT = 3

    db = Small(path, SCHEMA, newer=NewerFile)
    try:
        statements = _traced(db)
        names = [f"w{i:02}" for i in range(10)]
        with _Held(db) as held:
            outcomes = _queue_behind(
                held, [lambda n=n: db.write(_insert(n), group=True).rowcount for n in names]
            )
        assert outcomes == [1] * 10
        assert db.read(_names) == sorted([*names, "held"])
        assert statements.count("COMMIT") == 1 + 4  # groups of at most 3
    finally:
        db.close()


def _grouped_write_in_child(db: Database, out: Pipe) -> None:
    db.write(_insert("from the child"), group=True)
    out.send(db.read(_names))


def test_a_child_forked_while_a_group_waits_writes_with_a_queue_and_locks_of_its_own(path: Path) -> None:
    db = _open(path)
    db.connection()
    fork = multiprocessing.get_context("fork")
    reader, writer = fork.Pipe(duplex=False)
    # The process's write lock taken from outside SQLite: the grouped write below
    # starts its group and waits for the lock, holding no lock of the file (a fork
    # in the middle of a transaction leaves SQLite itself unusable in the child).
    db._write_lock.acquire()
    parent = threading.Thread(target=db.write, args=(_insert("from the parent"),), kwargs={"group": True})
    try:
        parent.start()
        wait_until(lambda: db.queued_writes == 1)
        child = fork.Process(target=_grouped_write_in_child, args=(db, writer))
        child.start()
        assert reader.poll(30), "the child's grouped write never ran"
        assert reader.recv() == ["from the child"]
        child.join(30)
        assert child.exitcode == 0
    finally:
        db._write_lock.release()
        parent.join(30)
    assert db.read(_names) == ["from the child", "from the parent"]
    db.close()


class _Interrupted(Exception):
    pass


def _raise_interrupted(signum: int, frame: object) -> None:
    raise _Interrupted


def test_a_grouped_write_interrupted_while_it_waits_is_withdrawn_and_the_others_go_on(path: Path) -> None:
    db = _open(path)
    main = threading.get_ident()
    behind = threading.Thread(target=db.write, args=(_insert("behind"),), kwargs={"group": True})

    def queue_one_more_then_interrupt() -> None:
        wait_until(lambda: db.queued_writes == 2)  # the held write, then this thread's
        behind.start()
        wait_until(lambda: db.queued_writes == 3)
        signal.pthread_kill(main, signal.SIGUSR1)

    previous = signal.signal(signal.SIGUSR1, _raise_interrupted)
    try:
        with _Held(db):
            interrupter = threading.Thread(target=queue_one_more_then_interrupt)
            interrupter.start()
            with pytest.raises(_Interrupted):
                db.write(_insert("interrupted"), group=True)
            interrupter.join(30)
            assert db.queued_writes == 2  # withdrawn: the held write and the one behind remain
        behind.join(30)
        assert not behind.is_alive(), "the write behind the interrupted one never ran"
        assert db.read(_names) == ["behind", "held"]
        assert db.queued_writes == 0
    finally:
        signal.signal(signal.SIGUSR1, previous)
        db.close()
