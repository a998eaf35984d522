"""The SQLite store against its floor: a raw autocommit UPDATE of one JSON row.

Both run in the same process on the same disk, in WAL mode with
``synchronous=NORMAL``. The floor updates a row holding a JSON text of the same
size as docstatus's record (encoding it each time, as any status write must);
docstatus does the whole ``update_status`` through the manager: validation,
the lifecycle rules, one ``BEGIN IMMEDIATE`` transaction that reads the
record, writes it back, indexes it and appends it to the change log.
Listings are measured at 100,000 documents, 10 of them active.

Concurrent writers (4 and 10 threads, each updating a document of its own) share
transactions (group commit); beside them, the same store giving each change a
transaction of its own (``GROUP_COMMIT = False``: as before, but on the one
write connection), and a floor: the same threads doing raw autocommit UPDATEs
on one shared connection under a lock, as a hand-rolled store would. These
rows are medians of interleaved rounds (threads make the best of a few runs
too lucky). What a shared commit saves in SQLite itself is the row of the
store's SQL run for 10 changes in one transaction, a savepoint each.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from docstatus import StatusManager
from docstatus.records import Record
from docstatus.stores.sqlite import SQLiteStore

from ._harness import Row, Table, best_interleaved, median_interleaved
from ._stores import DOCS, META, listing_rows, open_manager, population, update_fn

TARGET_UPDATE = "≤ 1.5× floor"
FLOOR = "raw autocommit UPDATE"
THREAD_COUNTS = (4, 10)
#: Updates each thread makes in one timed round of the threaded rows.
THREAD_UPDATES = 300
THREAD_ROUNDS = 7
#: Changes in the group of the group-commit SQL row.
GROUP_SQL = 10


class _OneTransactionEach(SQLiteStore):
    """The store as it was before group commit: every change a transaction of its own."""

    GROUP_COMMIT = False


def _manager(path: Path) -> StatusManager:
    return open_manager(f"sqlite:///{path}")


def _floor_fn(path: Path, record: Record) -> Callable[[], None]:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("CREATE TABLE docs (doc_id TEXT PRIMARY KEY, record TEXT NOT NULL)")
    conn.execute("INSERT INTO docs VALUES (?, ?)", (record["doc_id"], json.dumps(record)))
    row = dict(record)
    pages = itertools.count(1)

    def update() -> None:
        row["page"] = next(pages)
        conn.execute("UPDATE docs SET record = ? WHERE doc_id = ?", (json.dumps(row), record["doc_id"]))

    return update


def _store_sql_fn(path: Path, record: Record) -> Callable[[], None]:
    """The statements the store runs for one update, with no rules and no Python layer."""
    SQLiteStore.from_url(f"sqlite:///{path}").create(record)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = NORMAL")
    row = dict(record)
    doc_id = record["doc_id"]
    pages = itertools.count(1)

    def update() -> None:
        row["page"] = next(pages)
        text = json.dumps(row)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("SELECT seq, record FROM docs WHERE doc_id = ?", (doc_id,)).fetchone()
        seq = conn.execute(
            "INSERT INTO changes (type, doc_id, record) VALUES ('updated', ?, ?)", (doc_id, text)
        ).lastrowid
        conn.execute("UPDATE docs SET seq = ?, record = ? WHERE doc_id = ?", (seq, text, doc_id))
        conn.execute("COMMIT")

    return update


def _store_sql_group_fn(path: Path, record: Record, size: int) -> Callable[[], None]:
    """The statements of one group commit: ``size`` changes of distinct documents, a savepoint each."""
    store = SQLiteStore.from_url(f"sqlite:///{path}")
    docs = [f"group-doc-{i}" for i in range(size)]
    for doc_id in docs:
        store.create({**record, "doc_id": doc_id})
    store.close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = NORMAL")
    rows = {doc_id: {**record, "doc_id": doc_id} for doc_id in docs}
    pages = itertools.count(1)

    def commit_group() -> None:
        conn.execute("BEGIN IMMEDIATE")
        for doc_id, row in rows.items():
            row["page"] = next(pages)
            text = json.dumps(row)
            conn.execute("SAVEPOINT grouped_write")
            conn.execute("SELECT seq, record FROM docs WHERE doc_id = ?", (doc_id,)).fetchone()
            seq = conn.execute(
                "INSERT INTO changes (type, doc_id, record) VALUES ('updated', ?, ?)", (doc_id, text)
            ).lastrowid
            conn.execute("UPDATE docs SET seq = ?, record = ? WHERE doc_id = ?", (seq, text, doc_id))
            conn.execute("RELEASE grouped_write")
        conn.execute("COMMIT")

    return commit_group


def _update_rows(table: Table, tmp: Path) -> None:
    manager = _manager(tmp / "status.db")
    update = update_fn(manager, "doc-0")
    record = manager.store.get("doc-0")
    if record is None:
        raise RuntimeError("benchmark document vanished")
    size = len(json.dumps(record))
    coalesced = open_manager(f"sqlite:///{tmp / 'coalesced.db'}", progress_interval=0.1)
    contenders = {
        "docstatus": update,
        "coalesced": update_fn(coalesced, "doc-0"),
        "floor": _floor_fn(tmp / "floor.db", record),
        "store SQL": _store_sql_fn(tmp / "sql.db", record),
        "group SQL": _store_sql_group_fn(tmp / "group-sql.db", record, GROUP_SQL),
    }
    best = best_interleaved(contenders, 2000, rounds=6)
    best["group SQL"] /= GROUP_SQL  # per change
    floor = best["floor"]
    table.add(
        Row(f"update_status, every report written (record {size} B JSON)", best["docstatus"], FLOOR, floor)
    )
    table.add(
        Row(
            "update_status, progress held (progress_interval=0.1)",
            best["coalesced"],
            FLOOR,
            floor,
            TARGET_UPDATE,
        )
    )
    coalesced.close()
    table.add(
        Row(
            "its SQL alone: BEGIN IMMEDIATE, SELECT, log INSERT, UPDATE, COMMIT",
            best["store SQL"],
            FLOOR,
            floor,
        )
    )
    table.add(
        Row(
            f"the same SQL, {GROUP_SQL} changes in one transaction, a savepoint each (per change)",
            best["group SQL"],
            FLOOR,
            floor,
        )
    )
    manager.close()


def _timed_threads(updates: list[Callable[[], None]], number: int) -> float:
    """Wall microseconds per update while each of ``updates`` runs ``number`` times on a thread of its own."""
    barrier = threading.Barrier(len(updates) + 1)

    def work(update: Callable[[], None]) -> None:
        barrier.wait()
        for _ in range(number):
            update()

    pool = [threading.Thread(target=work, args=(u,)) for u in updates]
    for thread in pool:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in pool:
        thread.join()
    return (time.perf_counter() - started) / (len(updates) * number) * 1e6


def _shared_floor_fns(path: Path, record: Record, threads: int) -> list[Callable[[], None]]:
    """Raw autocommit UPDATEs of one row per thread, on one connection that a lock guards."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("CREATE TABLE docs (doc_id TEXT PRIMARY KEY, record TEXT NOT NULL)")
    lock = threading.Lock()

    def one(doc_id: str) -> Callable[[], None]:
        row = {**record, "doc_id": doc_id}
        conn.execute("INSERT INTO docs VALUES (?, ?)", (doc_id, json.dumps(row)))
        pages = itertools.count(1)

        def update() -> None:
            row["page"] = next(pages)
            text = json.dumps(row)
            with lock:
                conn.execute("UPDATE docs SET record = ? WHERE doc_id = ?", (text, doc_id))

        return update

    return [one(f"floor-doc-{i}") for i in range(threads)]


def _threaded_manager(path: Path, store_class: type[SQLiteStore]) -> StatusManager:
    store = store_class.from_url(f"sqlite:///{path}")
    return StatusManager(store=store, cleanup_interval_seconds=None, progress_interval=0)


def _threaded_rows(table: Table, tmp: Path, threads: int) -> None:
    """``threads`` writers of distinct documents: grouped, one transaction each, and the floor."""
    grouped = _threaded_manager(tmp / f"grouped-{threads}.db", SQLiteStore)
    alone = _threaded_manager(tmp / f"alone-{threads}.db", _OneTransactionEach)
    record = grouped.store.get(grouped.create_status("probe", "report.pdf", META).doc_id)
    if record is None:
        raise RuntimeError("benchmark document vanished")
    contenders = {
        name: [update_fn(m, f"thread-doc-{i}") for i in range(threads)]
        for name, m in (("grouped", grouped), ("alone", alone))
    }
    contenders["floor"] = _shared_floor_fns(tmp / f"floor-{threads}.db", record, threads)
    timed = median_interleaved(
        {name: lambda fns=fns: _timed_threads(fns, THREAD_UPDATES) for name, fns in contenders.items()},
        rounds=THREAD_ROUNDS,
    )
    floor = f"{FLOOR}s, {threads} threads, one connection + lock"
    for name, label in (("grouped", "group commit"), ("alone", "a transaction each (before)")):
        row = f"update_status, {threads} threads, distinct docs, {label}"
        table.add(Row(row, timed[name], floor, timed["floor"]))
    grouped.close()
    alone.close()


def _listing_rows(table: Table, tmp: Path) -> None:
    path = tmp / "large.db"
    loader = SQLiteStore.from_url(f"sqlite:///{path}")
    started = time.perf_counter()
    loader.import_records(population(time.time()))
    loader.close()
    print(f"  (loaded {DOCS:,} documents in {time.perf_counter() - started:.1f} s)", flush=True)
    manager = _manager(path)
    listing_rows(table, manager, counts=20)
    manager.close()


def run() -> list[Table]:
    table = Table("SQLite store (WAL, synchronous=NORMAL)")
    with tempfile.TemporaryDirectory(prefix="docstatus-bench-") as tmp:
        _update_rows(table, Path(tmp))
        for threads in THREAD_COUNTS:
            _threaded_rows(table, Path(tmp), threads)
        _listing_rows(table, Path(tmp))
    return [table]
