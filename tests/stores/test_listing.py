"""Listing queries on every store: filters, sort orders, cursors while documents change, O(page) cost."""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from docstatus import Status, StatusManager
from docstatus.records import Record
from docstatus.stores import Store
from docstatus.stores.memory import _SortedList
from docstatus.stores.query import STATUSES, Page, Query, started_of
from docstatus.stores.sqlite import MIGRATIONS, SQLiteStore, _scan_sql


def _ids(page: Page) -> list[str]:
    return [r["doc_id"] for r in page.records]


def _everything(store: Store, query: Query) -> list[str]:
    """Every doc_id of ``query``, page after page."""
    found: list[str] = []
    after = None
    while True:
        page = store.query(Query(**{**_fields(query), "after": after}))
        found += _ids(page)
        if page.next is None:
            return found
        after = page.next


def _fields(query: Query) -> dict[str, Any]:
    return {name: getattr(query, name) for name in Query.__slots__}


def _mixed(manager: StatusManager) -> None:
    """Nine documents in three statuses, with known filenames."""
    names = ["Report-A.pdf", "notes.txt", "REPORT-b.PDF", "scan.png", "invoice.pdf"]
    for i in range(9):
        manager.create_status(f"doc{i}", names[i % len(names)])
    for i in (1, 4, 7):
        manager.mark_completed(f"doc{i}")
    for i in (2, 5):
        manager.mark_failed(f"doc{i}", "broken")
    manager.update_status("doc8", Status.PARSING)


def test_the_default_listing_is_the_recent_order(manager: StatusManager) -> None:
    _mixed(manager)
    recent = [d["doc_id"] for d in manager.list_all_json(100)]
    assert _ids(manager.store.query(Query())) == recent
    assert _ids(manager.store.query(Query(descending=False))) == recent[::-1]
    assert _everything(manager.store, Query(limit=2)) == recent


def test_status_filters_one_or_several(manager: StatusManager) -> None:
    _mixed(manager)
    store = manager.store
    assert _ids(store.query(Query(statuses=("failed",)))) == ["doc5", "doc2"]
    assert _ids(store.query(Query(statuses=("completed", "failed")))) == [
        "doc5",
        "doc2",
        "doc7",
        "doc4",
        "doc1",
    ]
    assert _ids(store.query(Query(statuses=("parsing",)))) == ["doc8"]
    assert _ids(store.query(Query(statuses=("queued",), descending=False))) == ["doc0", "doc3", "doc6"]
    assert _ids(store.query(Query(statuses=("storing",)))) == []


def test_text_matches_filenames_ignoring_case_and_ids_by_their_start(manager: StatusManager) -> None:
    _mixed(manager)
    store = manager.store
    assert sorted(_ids(store.query(Query(text="report")))) == ["doc0", "doc2", "doc5", "doc7"]
    assert sorted(_ids(store.query(Query(text=".PDF")))) == ["doc0", "doc2", "doc4", "doc5", "doc7"]
    assert _ids(store.query(Query(text="doc3"))) == ["doc3"]
    assert _ids(store.query(Query(text="oc3"))) == []  # ids match by their start only
    assert _ids(store.query(Query(text="report", statuses=("failed",)))) == ["doc5", "doc2"]
    assert _everything(store, Query(text="pdf", limit=1)) == _ids(store.query(Query(text="pdf")))


def _records(store: Store, n: int) -> list[Record]:
    return [r for r in (store.get(f"doc{i}") for i in range(n)) if r is not None]


def test_sort_by_filename_and_by_start(manager: StatusManager) -> None:
    _mixed(manager)
    store = manager.store
    records = _records(store, 9)
    by_name = [r["doc_id"] for r in sorted(records, key=lambda r: (str(r["filename"]).lower(), r["doc_id"]))]
    assert _ids(store.query(Query(sort="filename", descending=False))) == by_name
    assert _everything(store, Query(sort="filename", limit=2)) == by_name[::-1]
    by_start = [r["doc_id"] for r in sorted(records, key=lambda r: (started_of(r), r["doc_id"]))]
    assert _everything(store, Query(sort="started", descending=False, limit=4)) == by_start
    failed = _ids(store.query(Query(sort="filename", statuses=("failed",), descending=False)))
    assert failed == ["doc5", "doc2"]  # invoice.pdf, REPORT-b.PDF


def _shown(record: Record, name: str) -> float:
    """A time of ``record`` as its status JSON shows it (whole microseconds), in epoch seconds."""
    return datetime.fromisoformat(record[name]).timestamp()


def test_since_and_until_bound_the_sorted_time(manager: StatusManager) -> None:
    _mixed(manager)
    store = manager.store
    records = _records(store, 9)
    starts = sorted(_shown(r, "started_at") for r in records)
    middle = starts[4]
    expect = {r["doc_id"] for r in records if _shown(r, "started_at") >= middle}
    assert set(_everything(store, Query(sort="started", since=middle, limit=2))) == expect
    assert set(_everything(store, Query(sort="started", since=middle, descending=False, limit=2))) == expect
    early = {r["doc_id"] for r in records if _shown(r, "started_at") <= middle}
    assert set(_everything(store, Query(sort="started", until=middle, limit=2))) == early
    changes = sorted(_shown(r, "updated_at") for r in records)
    recent = {r["doc_id"] for r in records if _shown(r, "updated_at") >= changes[5]}
    assert set(_everything(store, Query(since=changes[5], limit=2))) == recent
    old = {r["doc_id"] for r in records if _shown(r, "updated_at") <= changes[5]}
    assert set(_everything(store, Query(until=changes[5], descending=False, limit=2))) == old
    assert set(_everything(store, Query(until=changes[5], limit=2))) == old


@pytest.mark.parametrize("sort", ["updated", "started", "filename"])
def test_a_cursor_is_stable_while_documents_change(manager: StatusManager, sort: Any) -> None:
    for i in range(30):
        manager.create_status(f"d{i:02}", f"file-{i % 7}.pdf")
        if i % 3:
            manager.mark_completed(f"d{i:02}")
    store = manager.store
    seen: list[str] = []
    changed: set[str] = set()
    page = store.query(Query(sort=sort, limit=4))
    while True:
        seen += _ids(page)
        # Change documents on both sides of the position: the rest must come exactly once.
        for doc_id in (seen[0], f"d{29 - len(seen):02}"):
            record = store.get(doc_id)
            if record is not None and record["status"] == "queued":
                manager.update_status(doc_id, Status.PARSING)
                changed.add(doc_id)
            elif record is not None and record["status"] == "completed" and len(changed) % 2:
                manager.remove(doc_id)
                changed.add(doc_id)
        if page.next is None:
            break
        page = store.query(Query(sort=sort, limit=4, after=page.next))
    unchanged = [d for d in seen if d not in changed]
    assert len(unchanged) == len(set(unchanged))  # never twice
    assert {f"d{i:02}" for i in range(30)} - changed <= set(seen)  # never skipped


def test_a_requeued_document_moves_to_the_front_of_started(manager: StatusManager) -> None:
    for doc_id in ("a", "b", "c"):
        manager.create_status(doc_id, f"{doc_id}.pdf")
    manager.mark_failed("a", "broken")
    manager.requeue("a")
    assert _ids(manager.store.query(Query(sort="started", limit=1))) == ["a"]
    assert _ids(manager.store.query(Query(statuses=("queued",)))) == ["a", "c", "b"]
    assert _ids(manager.store.query(Query(statuses=("failed",)))) == []


def test_a_progress_update_of_a_queued_document_keeps_it_listed(manager: StatusManager) -> None:
    manager.create_status("q", "q.pdf")
    manager.create_status("r", "r.pdf")
    manager.update_status("q", Status.QUEUED, metadata={"note": 1})
    assert _ids(manager.store.query(Query(statuses=("queued",)))) == ["q", "r"]


def _count_scans(store: Store, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of records each walk of ``store`` returned, and each recent() (a full read)."""
    counts: list[int] = []

    def counting(read: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any) -> Any:
            found = read(*args)
            counts.append(len(found))
            return found

        return counted

    monkeypatch.setattr(store, "scan", counting(store.scan))
    monkeypatch.setattr(store, "recent", counting(store.recent))
    return counts


def _many(manager: StatusManager, n: int) -> None:
    for i in range(n):
        manager.create_status(f"m{i:05}", f"file-{i}.pdf")
        if i % 50 == 7:
            manager.mark_failed(f"m{i:05}", "broken")
        elif i % 10:
            manager.mark_completed(f"m{i:05}")


@pytest.mark.parametrize("sort", ["updated", "started", "filename"])
def test_a_page_costs_the_page_not_the_store(
    manager: StatusManager, sort: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _many(manager, 1500)
    store = manager.store
    counts = _count_scans(store, monkeypatch)
    page = store.query(Query(sort=sort, statuses=("failed",), limit=5))
    assert len(page.records) == 5
    assert sum(counts) <= 6 and page.examined <= 6
    counts.clear()
    page = store.query(Query(sort=sort, statuses=("failed",), limit=5, after=page.next))
    assert len(page.records) == 5 and sum(counts) <= 6
    counts.clear()
    page = store.query(Query(sort=sort, limit=10))
    assert len(page.records) == 10
    assert sum(counts) <= 11 * len(STATUSES)
    counts.clear()
    store.query(Query(sort=sort, statuses=("queued", "failed", "completed"), limit=10, after=page.next))
    assert sum(counts) <= 11 * 3


def test_since_ends_the_walk_at_the_bound(manager: StatusManager, monkeypatch: pytest.MonkeyPatch) -> None:
    _many(manager, 600)
    store = manager.store
    latest = store.recent(3)
    counts = _count_scans(store, monkeypatch)
    page = store.query(Query(since=_shown(latest[-1], "updated_at"), limit=50))
    assert set(_ids(page)) >= {r["doc_id"] for r in latest}
    assert sum(counts) <= 51 * len(STATUSES)
    assert page.next is None


def test_bad_queries_are_refused() -> None:
    with pytest.raises(ValueError, match="sort must be one of"):
        Query(sort="size")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown status 'lost'"):
        Query(statuses=("lost",))
    with pytest.raises(ValueError, match="limit"):
        Query(limit=0)


# -- what the indexes are, store by store -------------------------------------------------


def test_sqlite_walks_use_an_index_and_never_sort(tmp_path: Path) -> None:
    store = SQLiteStore.from_url(f"sqlite:///{tmp_path / 'plans.db'}")
    try:
        conn = store._db.connection()
        conn.create_function("docstatus_match", 3, lambda *a: True, deterministic=True)
        for status in ("queued", "completed", "failed", None):
            for sort in ("updated",) if status is None else ("updated", "started", "filename"):
                for after in (None, (1, "x")):
                    sql, params = _scan_sql(status, sort, True, after, 10, "q")  # type: ignore[arg-type]
                    plan = " / ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params))
                    assert "USING INDEX" in plan and "TEMP B-TREE" not in plan, (status, sort, plan)
    finally:
        store.close()


def test_redis_removals_leave_nothing_in_the_listing_indexes(redis_url: str) -> None:
    server, _, prefix = redis_url.partition("?prefix=")
    client = redis.Redis.from_url(server)
    with StatusManager(store=redis_url, cleanup_interval_seconds=None) as manager:
        for doc_id in ("a", "b", "c"):
            manager.create_status(doc_id, f"{doc_id}.pdf")
            manager.update_status(doc_id, Status.PARSING)
            manager.mark_completed(doc_id)
        indexes = sorted(k.decode() for k in client.keys(f"{prefix}:[qtn]:*"))
        assert indexes == [f"{prefix}:{i}:completed" for i in "nqt"]
        assert [client.zcard(k) for k in indexes] == [3, 3, 3]
        manager.remove("a")
        assert manager.cleanup_old_entries(0) == 2
        assert client.keys(f"{prefix}:[qtn]:*") == []  # a sorted set that empties is deleted
    client.close()


def test_a_wrapped_dict_lists_the_records_it_held_before() -> None:
    held: dict[str, Any] = {}
    with StatusManager(held, cleanup_interval_seconds=None) as first:
        for doc_id in ("old-a", "old-b", "old-c"):
            first.create_status(doc_id, f"{doc_id}.pdf")
        first.mark_failed("old-b", "broken")
    copy = {k: dict(v) for k, v in held.items()}
    with StatusManager(copy, cleanup_interval_seconds=None) as second:
        assert _ids(second.store.query(Query())) == [d["doc_id"] for d in second.list_all_json()]
        assert _ids(second.store.query(Query(statuses=("queued",)))) == ["old-c", "old-a"]
        second.create_status("new", "new.pdf")
        second.mark_failed("old-a", "broken")
        assert _ids(second.store.query(Query(statuses=("failed",)))) == ["old-a", "old-b"]
        assert _ids(second.store.query(Query(sort="filename", descending=False))) == [
            "new",
            "old-a",
            "old-b",
            "old-c",
        ]


@pytest.mark.parametrize("sort", ["updated", "started", "filename"])
def test_rare_matches_are_found_beyond_the_walk(
    manager: StatusManager, sort: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SQLiteStore, "TEXT_WALK", 3)  # the SQLite store's second way, soon
    manager.create_status("oldest-id", "The NEEDLE.pdf")
    manager.create_status("german", "Straße.PDF")
    manager.create_status("kelvin", "\u212aelvin.txt")  # KELVIN SIGN: folds to k
    for i in range(12):
        manager.create_status(f"hay{i:02}", f"hay-{i}.pdf")
    for doc_id in ("oldest-id", "german", "kelvin", *(f"hay{i:02}" for i in range(0, 12, 2))):
        manager.mark_completed(doc_id)
    store = manager.store
    for order in (True, False):
        assert _ids(store.query(Query(text="needle", sort=sort, descending=order))) == ["oldest-id"]
        assert _ids(store.query(Query(text="strasse", sort=sort, descending=order))) == ["german"]
        assert _ids(store.query(Query(text="KELVIN", sort=sort, descending=order))) == ["kelvin"]
        assert _ids(store.query(Query(text="oldest-", sort=sort, descending=order))) == ["oldest-id"]
    found = _everything(store, Query(text=".pdf", sort=sort, limit=2))
    assert sorted(found) == sorted(["oldest-id", "german", *(f"hay{i:02}" for i in range(12))])


def test_the_memory_stores_sorted_lists_agree_with_one_sorted_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_SortedList, "LOAD", 2)
    chunked, plain = _SortedList(), []
    rng = random.Random(13)
    for step in range(3000):
        item = (rng.randrange(60), f"d{rng.randrange(5)}")
        if rng.random() < 0.6:
            if item not in plain:
                chunked.add(item)
                bisect.insort(plain, item)
        else:
            chunked.discard(item)
            if item in plain:
                plain.remove(item)
        assert [x for part in chunked.lists for x in part] == plain, step
        at = (rng.randrange(62) - 1, f"d{rng.randrange(6)}") if rng.random() < 0.8 else None
        n = rng.randrange(1, 8)
        assert chunked.walk(at, n, False) == [x for x in plain if at is None or x > at][:n]
        assert chunked.walk(at, n, True) == [x for x in reversed(plain) if at is None or x < at][:n]


class _BeforeListing(SQLiteStore):
    MIGRATIONS = MIGRATIONS[:3]

    def _add_tally(self, *args: object) -> None:
        pass  # the code of that schema kept no throughput counters (a later migration adds them)


def test_an_sqlite_file_from_before_the_listing_indexes_is_listed_after_its_migration(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    with StatusManager(store=_BeforeListing.from_url(url), cleanup_interval_seconds=None) as old:
        for doc_id, name in (("b", "Beta.pdf"), ("a", "alpha.pdf"), ("c", "Gamma.pdf")):
            old.create_status(doc_id, name)
        old.mark_failed("a", "broken")
    with StatusManager(store=url, cleanup_interval_seconds=None) as new:
        store = new.store
        assert _ids(store.query(Query(sort="filename", descending=False))) == ["a", "b", "c"]
        assert _ids(store.query(Query(sort="started", statuses=("queued",)))) == ["c", "b"]
        assert _ids(store.query(Query(statuses=("failed",), text="ALPHA"))) == ["a"]
        new.requeue("a")  # a status change keeps the columns up to date
        assert _ids(store.query(Query(sort="started", statuses=("queued",), limit=1))) == ["a"]
