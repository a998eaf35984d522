"""The SQLite store: real files, real processes, real failures.

The behaviour every store shares is in ``test_conformance.py``; here is what
only a durable, multi-process store promises: one winner across processes,
no lost update, a subscriber that sees other processes' changes, survival of
SIGKILL, clear failures when the file cannot be used, and schema migrations.
Child processes come from a forkserver (never plain fork) with docstatus
preloaded, so each starts in milliseconds.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import resource
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest

from docstatus import (
    DocumentNotFoundError,
    DuplicateDocumentError,
    InvalidTransitionError,
    Status,
    StatusManager,
    StoreUnavailableError,
)
from docstatus.errors import StoreSchemaError
from docstatus.events import Event
from docstatus.records import Mutation, Record, new_record
from docstatus.stores import open_store
from docstatus.stores.base import Change
from docstatus.stores.sqlite import MIGRATIONS, SQLiteSettings, SQLiteStore
from helpers import wait_until

ctx = multiprocessing.get_context("forkserver")
ctx.set_forkserver_preload(["docstatus", "docstatus.stores.sqlite"])

DEADLINE = 60.0
BIG = 10**9  # total_pages large enough that the page can keep growing


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "status.db"


@pytest.fixture
def url(db: Path) -> str:
    return f"sqlite:///{db}"


@pytest.fixture
def manager(url: str) -> Iterator[StatusManager]:
    with StatusManager(store=url, cleanup_interval_seconds=None, progress_interval=0) as m:
        yield m


def _open(url: str) -> StatusManager:
    return StatusManager(store=url, cleanup_interval_seconds=None, progress_interval=0)


def _raw(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(db, isolation_level=None)


def _pragma(db: Path, name: str) -> Any:
    """The first value ``PRAGMA <name>`` answers on a connection of its own (closed afterwards)."""
    conn = _raw(db)
    try:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        conn.close()


def _integrity(db: Path) -> str:
    return str(_pragma(db, "integrity_check"))


def _page(manager: StatusManager, doc_id: str) -> int | None:
    return manager.require_status(doc_id).page


def _start(target: Callable[..., None], *args: Any) -> multiprocessing.process.BaseProcess:
    process = ctx.Process(target=target, args=args, daemon=True)
    process.start()
    return process


def _join(processes: list[multiprocessing.process.BaseProcess]) -> None:
    for p in processes:
        p.join(DEADLINE)
        assert p.exitcode == 0, f"child {p.pid} ended with {p.exitcode}"


# -- URLs and settings ----------------------------------------------------------


def test_url_forms() -> None:
    assert SQLiteSettings.from_url("sqlite:///rel/status.db").path == "rel/status.db"
    assert SQLiteSettings.from_url("sqlite:////abs/status.db").path == "/abs/status.db"
    assert SQLiteSettings.from_url("sqlite:///a%20b.db").path == "a b.db"
    full = SQLiteSettings.from_url("sqlite:///x.db?synchronous=FULL&timeout=2.5")
    assert (full.synchronous, full.timeout) == ("full", 2.5)
    assert SQLiteSettings.from_url("sqlite:///x.db").synchronous == "normal"


@pytest.mark.parametrize(
    "bad",
    [
        "sqlite://host/x.db",
        "sqlite:///",
        "sqlite:///dir/",
        "sqlite:///:memory:",
        "sqlite:///x.db?synchronous=off",
        "sqlite:///x.db?journal=delete",
        "sqlite:///x.db?timeout=-1",
        "sqlite:///x.db?timeout=soon",
        "sqlite:///x.db?timeout=1&timeout=2",
        "sqlite:///x.db?synchronous",
    ],
)
def test_bad_urls_are_refused_with_the_reason(bad: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="invalid SQLite store URL"):
        open_store(bad)


def test_relative_path_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with _open("sqlite:///sub.db") as m:
        m.create_status("a", "a.pdf")
    assert (tmp_path / "sub.db").is_file()


@pytest.mark.parametrize(("query", "level"), [("", 1), ("?synchronous=full", 2)])
def test_wal_and_synchronous(db: Path, query: str, level: int) -> None:
    store = SQLiteStore.from_url(f"sqlite:///{db}{query}")
    try:
        conn = store._db.connection()
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == level
        assert store.shared is True
    finally:
        store.close()


def test_listing_queries_use_indexes(manager: StatusManager) -> None:
    for i in range(30):
        manager.create_status(f"d{i}", "f.pdf")
        if i % 3:
            manager.mark_completed(f"d{i}")
    store = manager.store
    assert isinstance(store, SQLiteStore)
    conn, writer = store._db.connection(), store._db.write_connection()
    statements: list[str] = []
    for traced in (conn, writer):  # reads run on this thread's connection, writes on the writer
        traced.set_trace_callback(statements.append)
    store.recent(5)
    store.active()
    store.counts()
    store.expire(0.0, 10)
    for traced in (conn, writer):
        traced.set_trace_callback(None)
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 4
    for sql in selects:
        plan = " / ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))
        assert "INDEX" in plan, f"{sql!r} reads the whole table: {plan}"


# -- atomicity within one process -------------------------------------------------


def test_a_change_that_raises_writes_nothing(manager: StatusManager) -> None:
    manager.create_status("a", "a.pdf")
    store = manager.store
    seq = store.last_seq()
    before = store.get("a")

    def explode(record: Record) -> Record:
        raise RuntimeError("rules said no")

    with pytest.raises(RuntimeError, match="rules said no"):
        store.modify("a", explode)
    with pytest.raises(InvalidTransitionError):
        store.modify("a", Mutation("update", time.time(), target=Status.COMPLETED))
    assert store.last_seq() == seq
    assert store.get("a") == before


def test_a_change_builds_on_changes_made_through_another_store(url: str, manager: StatusManager) -> None:
    with _open(url) as other:
        manager.create_status("a", "a.pdf", {"first": 1})
        manager.update_status("a", "parsing", metadata={"mine": 1})
        other.update_status("a", "parsing", metadata={"theirs": 2})
        manager.update_status("a", "embedding_text", chunk=1, total_chunks=4)
        other.update_status("a", "embedding_text", chunk=2, total_chunks=4)
        manager.update_status("a", "embedding_text", metadata={"last": 3})
    status = manager.require_status("a")
    assert status.metadata == {"first": 1, "mine": 1, "theirs": 2, "chunk": 2, "total_chunks": 4, "last": 3}
    assert status.progress == pytest.approx(0.75)


def test_text_without_a_utf8_form_is_stored_or_simply_not_found(manager: StatusManager) -> None:
    # Lone surrogates pass JSON validation but SQLite stores UTF-8 only.
    manager.create_status("s", "\ud800.pdf", {"k": "\udcff", "ok": "é😀"})
    manager.update_status("s", "parsing", stage="\udfff")
    status = manager.require_status("s")
    assert (status.filename, status.stage, status.metadata) == (
        "\ud800.pdf",
        "\udfff",
        {"k": "\udcff", "ok": "é😀"},
    )
    assert [s.filename for s in manager.list_all()] == ["\ud800.pdf"]
    assert manager.get_status("\ud800") is None
    with pytest.raises(DocumentNotFoundError):
        manager.update_status("\ud800", "parsing")
    assert manager.last_seq == 2


def test_duplicates_and_missing_documents(manager: StatusManager) -> None:
    store = manager.store
    record = new_record("a", "a.pdf", {}, time.time())
    store.create(record)
    with pytest.raises(DuplicateDocumentError):
        store.create(record)
    with pytest.raises(DocumentNotFoundError):
        store.modify("nope", Mutation("complete", time.time()))
    assert store.last_seq() == 1


def test_import_records_is_all_or_nothing(manager: StatusManager) -> None:
    store = manager.store
    assert isinstance(store, SQLiteStore)
    now = time.time()
    assert store.import_records(new_record(f"i{n}", "f.pdf", {}, now) for n in range(5)) == 5
    again = [new_record("new", "f.pdf", {}, now), new_record("i3", "f.pdf", {}, now)]
    with pytest.raises(DuplicateDocumentError, match="i3"):
        store.import_records(again)
    assert store.get("new") is None
    assert [c.seq for c in store.changes_since(0, 100)] == [1, 2, 3, 4, 5]
    manager.update_status("i0", "parsing")
    assert manager.list_all(1)[0].doc_id == "i0"
    assert store.last_seq() == 6


class _ShortLog(SQLiteStore):
    LOG_SIZE = 50
    PRUNE_EVERY = 10


def test_change_log_is_pruned_to_its_retention(url: str) -> None:
    store = _ShortLog.from_url(url)
    try:
        with StatusManager(store=store, cleanup_interval_seconds=None, progress_interval=0) as m:
            m.create_status("a", "a.pdf")
            m.update_status("a", "parsing")
            for page in range(1, 500):
                m.update_status("a", "embedding_visual", page=page, total_pages=BIG)
        assert store.last_seq() == 501
        kept = store.changes_since(0, 10_000)
        assert 50 <= len(kept) < 50 + 10
        assert [c.seq for c in kept] == list(range(kept[0].seq, 502))
        rows = store._db.connection().execute("SELECT count(*) FROM changes").fetchone()[0]
        assert rows == len(kept)
    finally:
        store.close()


def test_close_closes_every_threads_connection(url: str) -> None:
    store = SQLiteStore.from_url(url)
    opened: list[sqlite3.Connection] = [store._db.connection()]
    thread = threading.Thread(target=lambda: opened.append(store._db.connection()))
    thread.start()
    thread.join()
    assert opened[0] is not opened[1]
    store.close()
    for conn in opened:
        with pytest.raises(sqlite3.ProgrammingError):
            conn.execute("SELECT 1")
    with pytest.raises(StoreUnavailableError):
        store.get("a")


# -- several processes --------------------------------------------------------------


def _create_race(url: str, ids: list[str], barrier: Any, out: Connection) -> None:
    with _open(url) as m:
        won = []
        for doc_id in ids:
            barrier.wait()
            try:
                m.create_status(doc_id, f"{os.getpid()}.pdf", {"pid": os.getpid()})
                won.append(doc_id)
            except DuplicateDocumentError:
                pass
        out.send(won)


def test_exactly_one_of_8_processes_creates_each_document(url: str, manager: StatusManager) -> None:
    ids = [f"contested-{i}" for i in range(10)]
    barrier = ctx.Barrier(8)
    pipes = [ctx.Pipe(duplex=False) for _ in range(8)]
    children = [_start(_create_race, url, ids, barrier, w) for _, w in pipes]
    wins = [r.recv() for r, _ in pipes]
    _join(children)
    for doc_id in ids:
        winners = [i for i, won in enumerate(wins) if doc_id in won]
        assert len(winners) == 1, f"{doc_id} was created by {len(winners)} processes"
        assert manager.require_status(doc_id).metadata["pid"] == children[winners[0]].pid
    assert manager.count_by_status()["total"] == len(ids)
    assert manager.last_seq == len(ids)


def _pages(url: str, doc_id: str, count: int, complete: bool = False) -> None:
    """(In a child process) create ``doc_id``, report pages 1 to ``count``, then complete it if asked."""
    with _open(url) as m:
        m.create_status(doc_id, "f.pdf")
        m.update_status(doc_id, "parsing")
        for page in range(1, count + 1):
            m.update_status(doc_id, "embedding_visual", page=page, total_pages=count)
        if complete:
            m.mark_completed(doc_id, pages=count)


def test_8_processes_updating_distinct_documents_lose_nothing(url: str, manager: StatusManager) -> None:
    updates = 1000
    children = [_start(_pages, url, f"doc-{i}", updates, True) for i in range(8)]
    _join(children)
    for i in range(8):
        status = manager.require_status(f"doc-{i}")
        assert (status.status, status.progress, status.page) == ("completed", 1.0, updates)
        assert status.metadata["pages"] == updates
    counts = manager.count_by_status()
    assert (counts["completed"], counts["active"], counts["total"]) == (8, 0, 8)
    per_doc = updates + 3  # create, parsing, the updates, completed
    assert manager.last_seq == 8 * per_doc
    log = manager.changes_since(8 * per_doc - 5000, 5000)
    assert [e["seq"] for e in log] == list(range(8 * per_doc - 4999, 8 * per_doc + 1))


def test_a_subscriber_sees_every_change_of_other_processes_in_order(url: str, manager: StatusManager) -> None:
    events: list[Event] = []
    seen = threading.Condition()

    def collect(event: Event) -> None:
        with seen:
            events.append(event)
            seen.notify_all()

    manager.subscribe(collect)
    children = [_start(_pages, url, f"w{i}", 150) for i in range(4)]
    expected = 4 * 152
    with seen:
        assert seen.wait_for(lambda: len(events) >= expected, timeout=DEADLINE), f"{len(events)} events"
    _join(children)
    assert [e["seq"] for e in events] == list(range(1, expected + 1))
    for i in range(4):
        mine = [e for e in events if e["doc_id"] == f"w{i}"]
        assert [e["type"] for e in mine[:2]] == ["created", "updated"]
        assert [e["status"]["page"] for e in mine[2:]] == list(range(1, 151))  # type: ignore[index]


def test_a_subscriber_of_moves_gets_every_move_of_other_processes_and_none_of_their_reports(
    url: str, manager: StatusManager
) -> None:
    moves: list[Event] = []
    manager.subscribe(moves.append, progress=False)
    finished = [_start(_pages, url, f"m{i}", 150, True) for i in range(3)]
    _join([*finished, _start(_pages, url, "open", 150)])  # the log ends with its reports
    # Delivered, the reports left out too: nothing is waited for, nothing is behind.
    assert manager.flush_events(timeout=DEADLINE)
    assert [e["seq"] for e in moves] == sorted(e["seq"] for e in moves)
    for doc_id in ("m0", "m1", "m2", "open"):
        mine = [(e["type"], e["status"]["status"]) for e in moves if e["doc_id"] == doc_id]  # type: ignore[index]
        path = [("created", "queued"), ("updated", "parsing"), ("updated", "embedding_visual")]
        assert mine == path + ([("updated", "completed")] if doc_id != "open" else [])


def test_a_subscriber_of_reports_that_comes_while_the_log_is_read_for_moves_gets_the_reports_after_it(
    url: str, manager: StatusManager
) -> None:
    other = _open(url)  # another store of the file: its changes reach this hub through the log
    other.create_status("a", "a.pdf")
    other.update_status("a", "parsing")
    reports: list[Event] = []
    joined: list[int] = []
    read_moves = manager.store.moves_since

    def read_while_one_subscribes(seq: int, limit: int) -> tuple[list[Change], int]:
        if not joined:  # the dispatcher chose to read moves only; now one wants reports
            manager.subscribe(reports.append)
            joined.append(manager.last_seq)
            other.update_status("a", "embedding_visual", page=2, total_pages=9)
            other.update_status("a", "embedding_visual", page=3, total_pages=9)
        return read_moves(seq, limit)

    manager.store.moves_since = read_while_one_subscribes  # type: ignore[method-assign]
    moves: list[Event] = []
    manager.subscribe(moves.append, progress=False)
    other.update_status("a", "embedding_visual", page=1, total_pages=9)  # the watcher wakes up
    wait_until(lambda: bool(joined), DEADLINE)
    other.mark_completed("a")
    assert manager.flush_events(timeout=DEADLINE)
    after = [c for c in manager.changes_since(joined[0]) if c["seq"] > joined[0]]
    assert [e["seq"] for e in reports] == [c["seq"] for c in after]
    assert [e["status"]["page"] for e in reports][:2] == [2, 3]  # type: ignore[index]
    assert [e["status"]["status"] for e in moves][-1] == "completed"  # type: ignore[index]
    other.close()


def _documents(url: str, prefix: str, docs: int, pages: int) -> None:
    """(In a child process) ``docs`` documents one after another, each through three stages."""
    with _open(url) as m:
        for n in range(docs):
            doc_id = f"{prefix}-{n}"
            m.create_status(doc_id, "f.pdf")
            m.update_status(doc_id, "parsing")
            for stage in ("embedding_visual", "embedding_text"):
                for page in range(1, pages + 1):
                    m.update_status(doc_id, stage, page=page, total_pages=pages)
            m.mark_completed(doc_id)


def test_a_subscriber_of_reports_detached_and_rejoining_again_and_again_misses_none(
    url: str, manager: StatusManager
) -> None:
    # A subscriber of moves alone makes the hub read moves only whenever the slow subscriber
    # of reports goes on alone; it rejoins at any point of a window read that way.
    hub = manager._hub
    hub.STALL_SECONDS, hub.BATCH = 0.05, 7
    start = manager.last_seq
    got: list[int] = []

    def slow(event: Event) -> None:
        got.append(event["seq"])
        if len(got) % 25 == 0:
            time.sleep(0.1)  # busy past STALL_SECONDS: detached; it catches up alone, then rejoins

    def moves(event: Event) -> None:
        time.sleep(0.008)  # each move held a while: the slow one catches up meanwhile

    manager.subscribe(slow)
    manager.subscribe(moves, progress=False)
    _join([_start(_documents, url, f"p{i}", 25, 4) for i in range(2)])
    want = [c.seq for c in manager.store.changes_since(start, 10**6)]
    assert manager.flush_events(timeout=DEADLINE)  # the subscriber of moves has had them all
    wait_until(lambda: bool(got) and got[-1] >= want[-1], DEADLINE)  # and the slow one
    assert got == want, (len(got), len(want), sorted(set(want) - set(got))[:20])


def test_a_change_of_another_process_right_after_subscribing_is_delivered(tmp_path: Path) -> None:
    # The watcher of the log starts from the change the subscriber starts from, not from
    # whatever the store's last change is when its thread first runs.
    for attempt in range(10):
        url = f"sqlite:///{tmp_path / f'{attempt}.db'}"
        with _open(url) as mine, _open(url) as other:
            other.create_status("a", "a.pdf")
            got: list[Event] = []
            mine.subscribe(got.append)
            other.update_status("a", "parsing")
            assert mine.flush_events(timeout=DEADLINE)
            assert [(e["type"], e["status"]["status"]) for e in got] == [("updated", "parsing")]  # type: ignore[index]


# -- crash safety ---------------------------------------------------------------------


def _write_until_killed(url: str, round_no: int, out: Connection) -> None:
    m = _open(url)
    doc_id = f"crash-{round_no}"
    m.create_status(doc_id, "f.pdf")
    out.send(("created", doc_id, 0))
    m.update_status(doc_id, "parsing")
    for page in range(1, BIG):
        m.update_status(doc_id, "embedding_visual", page=page, total_pages=BIG)
        out.send(("page", doc_id, page))
        if page % 50 == 0:
            extra = f"{doc_id}-{page}"
            m.create_status(extra, "f.pdf")
            out.send(("created", extra, 0))


def _acknowledged(reader: Connection) -> list[tuple[str, str, int]]:
    acks = []
    try:
        while reader.poll():
            acks.append(reader.recv())
    except (EOFError, OSError):
        pass  # the child died in the middle of a message it had not acknowledged yet
    return acks


def test_every_acknowledged_change_survives_sigkill(url: str, db: Path) -> None:
    rng = random.Random(20)
    _open(url).close()  # create the file before the first child races to
    for round_no in range(20):
        acks = _kill_after_some_acks(url, round_no, wanted=rng.randint(1, 250))
        assert _integrity(db) == "ok"
        _check_acknowledged(url, acks)


def _kill_after_some_acks(url: str, round_no: int, wanted: int) -> list[tuple[str, str, int]]:
    """Run a writer, SIGKILL it once it has acknowledged ``wanted`` changes; all its acknowledgements."""
    reader, writer = ctx.Pipe(duplex=False)
    child = _start(_write_until_killed, url, round_no, writer)
    writer.close()
    acks: list[tuple[str, str, int]] = []
    try:
        while len(acks) < wanted:
            assert reader.poll(DEADLINE), "the child stopped acknowledging"
            acks.append(reader.recv())
    finally:
        os.kill(child.pid or 0, signal.SIGKILL)
        child.join(DEADLINE)
    acks += _acknowledged(reader)
    reader.close()
    assert len(acks) >= wanted
    return acks


def _check_acknowledged(url: str, acks: list[tuple[str, str, int]]) -> None:
    with _open(url) as m:
        for kind, doc_id, page in acks:
            status = m.get_status(doc_id)
            assert status is not None, f"acknowledged {kind} of {doc_id} is lost"
            if kind == "page":
                assert (status.page or 0) >= page, f"{doc_id}: page {page} acknowledged, {status.page} stored"


# -- failures -------------------------------------------------------------------------


def test_a_path_under_a_regular_file_is_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    url = f"sqlite:///{blocker / 'status.db'}"
    with pytest.raises(StoreUnavailableError) as info:
        _open(url)
    assert info.value.store == url
    assert isinstance(info.value.__cause__, sqlite3.Error)
    assert blocker.read_text() == "x"


def test_a_missing_directory_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailableError):
        _open(f"sqlite:///{tmp_path / 'missing' / 'status.db'}")
    assert not (tmp_path / "missing").exists()


def test_a_directory_in_place_of_the_file_is_unavailable(db: Path) -> None:
    db.mkdir()
    with pytest.raises(StoreUnavailableError):
        _open(f"sqlite:///{db}")
    assert list(db.iterdir()) == []


def test_a_file_that_is_not_a_database_is_unavailable_and_untouched(db: Path) -> None:
    db.write_bytes(b"definitely not sqlite" * 100)
    with pytest.raises(StoreUnavailableError):
        _open(f"sqlite:///{db}")
    assert db.read_bytes() == b"definitely not sqlite" * 100


def _write_past_a_file_size_limit(url: str, db: Path, out: Connection) -> None:
    m = _open(url)
    m.update_status("doc", "embedding_visual", page=1, total_pages=10)
    raw = sqlite3.connect(db)
    raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw.close()
    # RLIMIT_FSIZE stops even root from growing a file: the WAL cannot take a frame.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1, hard))
    try:
        m.update_status("doc", "embedding_visual", page=2, total_pages=10)
        outcome = "written"
    except StoreUnavailableError as exc:
        outcome = f"unavailable: {exc.__cause__!r}"
    page_after_failure = _page(m, "doc")
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    m.update_status("doc", "embedding_visual", page=3, total_pages=10)
    out.send((outcome, page_after_failure))
    m.close()


def test_an_unwritable_file_fails_cleanly_and_recovers(url: str, db: Path, manager: StatusManager) -> None:
    manager.create_status("doc", "f.pdf")
    manager.update_status("doc", "parsing")
    reader, writer = ctx.Pipe(duplex=False)
    child = _start(_write_past_a_file_size_limit, url, db, writer)
    outcome, page_after_failure = reader.recv()
    _join([child])
    assert outcome.startswith("unavailable"), outcome
    assert page_after_failure == 1
    assert _integrity(db) == "ok"
    assert _page(manager, "doc") == 3
    pages = [e["status"]["page"] for e in manager.changes_since(0) if e["status"]]
    assert pages == [None, None, 1, 3]  # the failed change left no trace


def test_a_lock_held_too_long_is_unavailable_then_recovers(db: Path, manager: StatusManager) -> None:
    manager.create_status("doc", "f.pdf")
    impatient = _open(f"sqlite:///{db}?timeout=0.2")
    holder = _raw(db)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreUnavailableError) as info:
            impatient.update_status("doc", "parsing")
        assert "locked" in str(info.value)
        assert impatient.require_status("doc").status == "queued"  # reads go on under WAL
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    impatient.update_status("doc", "parsing")
    assert manager.require_status("doc").status == "parsing"
    impatient.close()


# -- fork ---------------------------------------------------------------------------


def _use_inherited_store(store: SQLiteStore, inherited: int, out: Connection) -> None:
    conn = store._db.connection()
    store.modify("forked", Mutation("complete", time.time(), fields={"by": "child"}))
    out.send(id(conn) != inherited and conn.execute("SELECT 1").fetchone() == (1,))


def test_a_store_opened_before_fork_reconnects_in_the_child(url: str, db: Path) -> None:
    store = SQLiteStore.from_url(url)
    try:
        store.create(new_record("forked", "f.pdf", {}, time.time()))
        parent_conn = store._db.connection()
        reader, writer = multiprocessing.get_context("fork").Pipe(duplex=False)
        child = multiprocessing.get_context("fork").Process(
            target=_use_inherited_store, args=(store, id(parent_conn), writer)
        )
        child.start()
        assert reader.recv() is True
        child.join(DEADLINE)
        assert child.exitcode == 0
        assert store._db.connection() is parent_conn
        record = store.get("forked")
        assert record is not None
        assert record["metadata"] == {"by": "child"}
        assert _integrity(db) == "ok"
    finally:
        store.close()


# -- schema versions ----------------------------------------------------------------


class _NextVersion(SQLiteStore):
    MIGRATIONS = (
        *MIGRATIONS,
        "ALTER TABLE docs ADD COLUMN note TEXT; CREATE INDEX docs_by_note ON docs (note)",
    )


def _user_version(db: Path) -> int:
    return int(_pragma(db, "user_version"))


def test_a_new_file_gets_the_current_schema_version(url: str, db: Path) -> None:
    _open(url).close()
    assert _user_version(db) == len(MIGRATIONS) >= 1


def test_an_older_file_is_migrated_and_keeps_its_data(url: str, db: Path) -> None:
    with _open(url) as m:
        m.create_status("kept", "f.pdf", {"k": 1})
        m.update_status("kept", "parsing")
    newer = _NextVersion.from_url(url)
    try:
        assert _user_version(db) == len(MIGRATIONS) + 1
        columns = [row[1] for row in newer._db.connection().execute("PRAGMA table_info(docs)")]
        assert "note" in columns
        with StatusManager(store=newer, cleanup_interval_seconds=None, progress_interval=0) as m:
            assert m.require_status("kept").metadata == {"k": 1}
            m.update_status("kept", "embedding_text")
            assert m.last_seq == 3
    finally:
        newer.close()
    _NextVersion.from_url(url).close()  # already current: nothing to do
    assert _user_version(db) == len(MIGRATIONS) + 1


def test_a_newer_unknown_version_is_refused_clearly(url: str, db: Path) -> None:
    _NextVersion.from_url(url).close()
    refused = rf"schema version {len(MIGRATIONS) + 1}, but .* supports up to {len(MIGRATIONS)}"
    with pytest.raises(StoreSchemaError, match=refused) as info:
        _open(url)
    assert isinstance(info.value, StoreUnavailableError)
    assert (info.value.found, info.value.supported) == (len(MIGRATIONS) + 1, len(MIGRATIONS))
    assert info.value.to_dict()["code"] == "STORE_SCHEMA"
    assert _user_version(db) == len(MIGRATIONS) + 1


def test_a_failing_migration_changes_nothing(url: str, db: Path) -> None:
    class Broken(SQLiteStore):
        MIGRATIONS = (*MIGRATIONS, "ALTER TABLE docs ADD COLUMN x TEXT; THIS IS NOT SQL")

    _open(url).close()
    with pytest.raises(StoreUnavailableError):
        Broken.from_url(url)
    assert _user_version(db) == len(MIGRATIONS)
    columns = [row[1] for row in _raw(db).execute("PRAGMA table_info(docs)")]
    assert "x" not in columns


class _FirstVersion(SQLiteStore):
    MIGRATIONS = MIGRATIONS[:1]


def test_a_file_from_before_leases_gets_the_leases_table(url: str, db: Path) -> None:
    _FirstVersion.from_url(url).close()
    assert _user_version(db) == 1
    with _open(url) as m:
        assert _user_version(db) == len(MIGRATIONS)
        m.create_status("doc", "doc.pdf")
        lease = m.claim("doc", worker="host:1")
        assert lease is not None
        assert [(e.doc_id, e.epoch) for e in m.leases()] == [("doc", 1)]


class _LeasesVersion(SQLiteStore):
    MIGRATIONS = MIGRATIONS[:2]


def test_a_file_from_before_the_worker_registry_gets_the_workers_table(url: str, db: Path) -> None:
    with StatusManager(
        store=_LeasesVersion.from_url(url), cleanup_interval_seconds=None, progress_interval=0
    ) as m:
        m.create_status("kept", "kept.pdf")
    assert _user_version(db) == 2
    with _open(url) as m:
        assert _user_version(db) == len(MIGRATIONS)
        assert m.require_status("kept").status == "queued"
        m.heartbeat("host:1", {"host": "host", "pid": 1}, 30)
        assert [(e.worker_id, e.info) for e in m.workers()] == [("host:1", {"host": "host", "pid": 1})]


def test_expired_workers_are_deleted_by_the_next_heartbeat(url: str, db: Path) -> None:
    with _open(url) as m:
        m.heartbeat("gone", {}, 0.05)
        deadline = time.monotonic() + 10
        while m.workers():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        m.heartbeat("live", {}, 60)
        rows = _raw(db).execute("SELECT worker_id FROM workers").fetchall()
        assert rows == [("live",)]
