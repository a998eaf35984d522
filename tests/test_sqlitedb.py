"""The shared SQLite helper: pragmas, a connection per thread and per process, waiting out
writers, transactions and schema migrations, on real files.

The stores built on it (the status store, the output store) are tested in their own modules.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

import pytest

from docstatus.stores.sqlitedb import Connection, Database, migrate, schema_version

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
