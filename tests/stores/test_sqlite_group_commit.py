"""Group commit in the SQLite store: concurrent changes share a transaction, never their fate.

Real threads and processes. A change that queues behind another is committed
with the others of its group, each in a savepoint: a refused one raises in its
own thread only, a failure of the file fails the whole group, and a change
returned to its caller is committed (a SIGKILL never loses it). To know that
changes shared a group, the tests hold the writer's turn with a change that
waits for an event, let the others queue, release it, and count the commits.
"""

from __future__ import annotations

import multiprocessing
import os
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
    LeaseLostError,
    Status,
    StoreUnavailableError,
)
from docstatus.records import Mutation, Record, new_record
from docstatus.stores.base import Change
from docstatus.stores.sqlite import SQLiteStore
from helpers import Held, outcomes_on_threads, wait_until

ctx = multiprocessing.get_context("forkserver")
ctx.set_forkserver_preload(["docstatus", "docstatus.stores.sqlite"])

DEADLINE = 60.0
BIG = 10**9  # total_pages large enough that the page can keep growing


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'status.db'}"


@pytest.fixture
def store(url: str) -> Iterator[SQLiteStore]:
    opened = SQLiteStore.from_url(url)
    yield opened
    opened.close()


def _create(store: SQLiteStore, doc_id: str) -> Change:
    return store.create(new_record(doc_id, f"{doc_id}.pdf", {}, time.time()))


def _started(store: SQLiteStore, doc_id: str) -> Change:
    """Create ``doc_id`` and move it to parsing (two changes), ready for pages."""
    _create(store, doc_id)
    return store.modify(doc_id, Mutation("update", time.time(), target=Status.PARSING.value))


def _page(page: int) -> Mutation:
    fields = {"page": page, "total_pages": BIG}
    return Mutation("update", time.time(), target=Status.EMBEDDING_VISUAL.value, fields=fields)


def _note(key: str, value: int) -> Mutation:
    return Mutation("update", time.time(), target=Status.PARSING.value, fields={"metadata": {key: value}})


def _traced(store: SQLiteStore) -> list[str]:
    """Every statement the store's write connection runs from now on."""
    statements: list[str] = []
    store._db.write_connection().set_trace_callback(statements.append)
    return statements


class _Held(Held):
    """A change of ``doc_id``, on a thread of its own, that holds the writer's turn until released."""

    def __init__(self, store: SQLiteStore, doc_id: str) -> None:
        super().__init__(store.modify, doc_id, self._wait)
        self.store = store

    def _wait(self, record: Record) -> Record:
        self.wait_for_release()
        return _note("held", 1)(record)


def _queue_behind(held: _Held, calls: list[Callable[[], Any]]) -> list[Any]:
    """Each of ``calls`` on a thread of its own, all queued behind ``held``; what each returned or raised."""

    def queued() -> None:
        wait_until(lambda: held.store._db.queued_writes == 1 + len(calls))
        held.release.set()

    return outcomes_on_threads(calls, queued)


# -- many threads ---------------------------------------------------------------------


def _hammer(calls: list[Callable[[], Change]], times: int) -> list[list[Change]]:
    """Each of ``calls`` ``times`` times on a thread of its own, started together; the changes of each."""
    barrier = threading.Barrier(len(calls))
    got: list[list[Change]] = [[] for _ in calls]
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            for _ in range(times):
                got[i].append(calls[i]())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE)
    assert not errors, errors
    return got


def _pager(store: SQLiteStore, doc_id: str) -> Callable[[], Change]:
    pages = iter(range(1, BIG))
    return lambda: store.modify(doc_id, _page(next(pages)))


def test_threads_changing_distinct_documents_lose_nothing_and_number_every_change_once(
    store: SQLiteStore,
) -> None:
    threads, times = 8, 150
    docs = [f"doc-{i}" for i in range(threads)]
    for doc_id in docs:
        _started(store, doc_id)
    got = _hammer([_pager(store, d) for d in docs], times)
    for doc_id, changes in zip(docs, got, strict=True):
        record = store.get(doc_id)
        assert record is not None and record["page"] == times
        assert [c.record["page"] for c in changes if c.record] == list(range(1, times + 1))
        seqs = [c.seq for c in changes]
        assert seqs == sorted(seqs)
    every = sorted(c.seq for changes in got for c in changes)
    assert every == list(range(2 * threads + 1, threads * (times + 2) + 1))  # after the starts, no gap
    log = store.changes_since(0, 10_000)
    assert [c.seq for c in log] == list(range(1, threads * (times + 2) + 1))
    for doc_id in docs:
        pages = [c.record["page"] for c in log if c.doc_id == doc_id and c.type == "updated" and c.record]
        assert pages == [None, *range(1, times + 1)]  # in the log, each document's changes in order


def test_threads_changing_one_document_each_build_on_the_last(store: SQLiteStore) -> None:
    threads, times = 6, 100
    _create(store, "shared")
    counters = [iter(range(1, times + 1)) for _ in range(threads)]
    calls = [lambda i=i: store.modify("shared", _note(f"t{i}", next(counters[i]))) for i in range(threads)]
    got = _hammer(calls, times)
    record = store.get("shared")
    assert record is not None
    assert record["metadata"] == {f"t{i}": times for i in range(threads)}
    log = [c for c in store.changes_since(1, 10_000) if c.record]
    assert len(log) == threads * times
    seen: dict[str, int] = {}
    for change in log:
        assert change.record is not None
        notes = change.record["metadata"]
        # Each change adds exactly its own note to everything before it: no update is lost.
        moved = {k: v for k, v in notes.items() if seen.get(k) != v}
        assert len(moved) == 1 and all(v == seen.get(k, 0) + 1 for k, v in moved.items()), (seen, notes)
        seen = dict(notes)
    for changes in got:
        assert [c.seq for c in changes] == sorted(c.seq for c in changes)


# -- one group ------------------------------------------------------------------------------


def test_changes_queued_behind_another_share_one_commit(store: SQLiteStore) -> None:
    for doc_id in ("held", "a", "b", "c"):
        _started(store, doc_id)
    statements = _traced(store)
    first = store.last_seq()
    with _Held(store, "held") as held:
        changes = _queue_behind(
            held,
            [
                lambda: store.modify("a", _page(1)),
                lambda: store.modify("b", _page(1)),
                lambda: _create(store, "d"),
                lambda: store.modify("c", _page(1)),
            ],
        )
    assert all(isinstance(c, Change) for c in changes), changes
    assert [c.doc_id for c in changes] == ["a", "b", "d", "c"]  # each caller got its own change
    assert sorted(c.seq for c in changes) == list(range(first + 2, first + 6))
    assert statements.count("COMMIT") == 2  # the held change's and the group's
    assert statements.count("SAVEPOINT grouped_write") == 4
    for doc_id in ("a", "b", "c"):
        record = store.get(doc_id)
        assert record is not None and record["page"] == 1
    assert store.get("d") is not None


def test_a_refused_change_raises_in_its_own_thread_and_the_rest_of_its_group_commits(
    store: SQLiteStore,
) -> None:
    for doc_id in ("held", "ok-1", "done", "ok-2", "ok-3"):
        _started(store, doc_id)
    store.modify("done", Mutation("complete", time.time()))
    statements = _traced(store)
    before = store.last_seq()
    calls: list[Callable[[], Any]] = [
        lambda: store.modify("ok-1", _page(5)),
        lambda: store.modify("done", _page(1)),  # completed is final
        lambda: store.modify("missing", _page(1)),
        lambda: store.modify("ok-2", _page(6)),
        lambda: _create(store, "ok-2"),
        lambda: store.modify("ok-3", _page(7)),
        lambda: store.modify("ok-3", Mutation("update", time.time(), target="parsing", epoch=7)),
    ]
    with _Held(store, "held") as held:
        outcomes = _queue_behind(held, calls)
    made = [outcomes[i] for i in (0, 3, 5)]
    refused = [outcomes[i] for i in (1, 2, 4, 6)]
    assert [type(e) for e in refused] == [
        InvalidTransitionError,
        DocumentNotFoundError,
        DuplicateDocumentError,
        LeaseLostError,
    ]
    assert all(isinstance(c, Change) for c in made), outcomes
    assert statements.count("COMMIT") == 2  # all seven were in one group
    assert statements.count("ROLLBACK TO grouped_write") == 4
    pages = {d: (store.get(d) or {}).get("page") for d in ("ok-1", "ok-2", "ok-3", "done")}
    assert pages == {"ok-1": 5, "ok-2": 6, "ok-3": 7, "done": None}
    assert store.get("missing") is None
    # The refused left no trace: four numbers only, for the held change and the three made.
    assert store.last_seq() == before + 4
    assert [c.seq for c in store.changes_since(before, 100)] == list(range(before + 1, before + 5))


def _unstorable(record: Record) -> Record:
    # A record the schema refuses (status is NOT NULL): SQLite fails the statement itself.
    return {**record, "status": None}


def test_a_failure_of_the_file_fails_every_change_of_the_group_and_writes_none(store: SQLiteStore) -> None:
    for doc_id in ("held", "a", "b"):
        _started(store, doc_id)
    before = store.last_seq()
    with _Held(store, "held") as held:
        outcomes = _queue_behind(
            held,
            [
                lambda: store.modify("a", _page(1)),
                lambda: store.modify("b", _unstorable),
                lambda: _create(store, "c"),
            ],
        )
    assert all(isinstance(o, StoreUnavailableError) for o in outcomes), outcomes
    assert all(isinstance(o.__cause__, sqlite3.IntegrityError) for o in outcomes)
    assert len({id(o.__cause__) for o in outcomes}) == 3  # each caller has its own error
    assert store.last_seq() == before + 1  # only the held change
    assert (store.get("a") or {}).get("page") is None
    assert store.get("c") is None
    assert store.modify("a", _page(2)).record is not None  # and the store goes on


def test_writers_kept_out_by_another_process_all_fail_unavailable_and_write_nothing(
    tmp_path: Path,
) -> None:
    db = tmp_path / "busy.db"
    store = SQLiteStore.from_url(f"sqlite:///{db}?timeout=0.3")
    for i in range(6):
        _started(store, f"d{i}")
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        writes = [lambda i=i: store.modify(f"d{i}", _page(1)) for i in range(6)]
        got = outcomes_on_threads(writes, timeout=DEADLINE)
        assert all(isinstance(o, StoreUnavailableError) and "locked" in str(o) for o in got), got
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert store.last_seq() == 12
    assert store.modify("d0", _page(1)).seq == 13
    store.close()


# -- a process killed in the middle -------------------------------------------------------


def _write_from_threads_until_killed(url: str, threads: int, out: Connection) -> None:
    """(In a child) ``threads`` writers, each sending the seq of every change it got back."""
    store = SQLiteStore.from_url(url)
    sending = threading.Lock()

    def write(i: int) -> None:
        doc_id = f"{os.getpid()}-{i}"
        change = _started(store, doc_id)
        with sending:
            out.send((change.seq, doc_id, 0))
        for page in range(1, BIG):
            change = store.modify(doc_id, _page(page))
            with sending:
                out.send((change.seq, doc_id, page))

    for i in range(threads):
        threading.Thread(target=write, args=(i,), daemon=True).start()
    threading.Event().wait()


def _received(reader: Connection, wanted: int) -> list[tuple[int, str, int]]:
    acks: list[tuple[int, str, int]] = []
    while len(acks) < wanted:
        assert reader.poll(DEADLINE), "the child stopped acknowledging"
        acks.append(reader.recv())
    return acks


def _drain(reader: Connection) -> list[tuple[int, str, int]]:
    acks = []
    try:
        while reader.poll():
            acks.append(reader.recv())
    except (EOFError, OSError):
        pass  # the child died in the middle of a message it had not acknowledged yet
    return acks


@pytest.mark.parametrize("round_no", range(4))
def test_a_change_returned_to_any_writer_thread_survives_sigkill(tmp_path: Path, round_no: int) -> None:
    url = f"sqlite:///{tmp_path / 'killed.db'}"
    SQLiteStore.from_url(url).close()  # the file exists before the child's threads race to it
    reader, writer = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_write_from_threads_until_killed, args=(url, 8, writer), daemon=True)
    child.start()
    writer.close()
    try:
        acks = _received(reader, 200 + 300 * round_no)
    finally:
        os.kill(child.pid or 0, signal.SIGKILL)
        child.join(DEADLINE)
    acks += _drain(reader)
    reader.close()
    store = SQLiteStore.from_url(url)
    try:
        assert sqlite3.connect(tmp_path / "killed.db").execute("PRAGMA integrity_check").fetchone() == ("ok",)
        logged = {c.seq: c for c in store.changes_since(0, 100_000)}
        for seq, doc_id, page in acks:
            change = logged.get(seq)
            assert change is not None, f"change {seq} of {doc_id} was returned, then lost"
            assert change.doc_id == doc_id and change.record is not None
            assert change.record.get("page") == (page or None)
        assert sorted(logged) == list(range(1, len(logged) + 1))
    finally:
        store.close()
