"""The SQLite store against its floor: a raw autocommit UPDATE of one JSON row.

Both run in the same process on the same disk, in WAL mode with
``synchronous=NORMAL``. The floor updates a row holding a JSON text of the same
size as docstatus's record (encoding it each time, as any status write must);
docstatus does the whole ``update_status`` through the manager: validation,
the lifecycle rules, one ``BEGIN IMMEDIATE`` transaction that reads the
record, writes it back, indexes it and appends it to the change log.
Listings are measured at 100,000 documents, 10 of them active.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from docstatus import StatusManager
from docstatus.records import Record
from docstatus.stores.sqlite import SQLiteStore

from ._harness import Row, Table, best_interleaved
from ._stores import DOCS, listing_rows, open_manager, population, threaded_row, update_fn

TARGET_UPDATE = "≤ 1.5× floor"
FLOOR = "raw autocommit UPDATE"


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
    }
    best = best_interleaved(contenders, 2000, rounds=6)
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
    threaded_row(table, manager)
    manager.close()


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
        _listing_rows(table, Path(tmp))
    return [table]
