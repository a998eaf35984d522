"""Code that writes the wrapped dict itself: the manager notices, adopts, keeps the rules, tells others."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from docstatus import DuplicateDocumentError, Status, StatusManager
from docstatus.errors import UnreadableEntryError
from docstatus.events import Event
from docstatus.stores.adopt import STATUS_ALIASES, fingerprint
from docstatus.stores.memory import MemoryStore


def _wrapped() -> tuple[dict[str, Any], StatusManager, list[Event]]:
    data: dict[str, Any] = {}
    manager = StatusManager(data, cleanup_interval_seconds=None)
    events: list[Event] = []
    manager.subscribe(events.append)
    return data, manager, events


def _legacy(doc_id: str, status: str = "parsing", **fields: Any) -> dict[str, Any]:
    """An entry as the processor code docstatus replaces writes it: naive local times, its own statuses."""
    now = datetime.now().isoformat()
    return {
        "doc_id": doc_id,
        "filename": f"{doc_id}.pdf",
        "status": status,
        "progress": 0.0,
        "started_at": now,
        "updated_at": now,
        **fields,
    }


def test_the_issue_example_an_entry_written_directly_is_a_document() -> None:
    data, manager, events = _wrapped()
    data["x"] = {"doc_id": "x", "filename": "a.pdf", "status": "parsing", "progress": 0.0}
    status = manager.get_status("x")
    assert status is not None
    assert status.status == Status.PARSING and status.filename == "a.pdf"
    with pytest.raises(DuplicateDocumentError, match="already exists"):
        manager.create_status("x", "a.pdf", {})
    assert manager.flush_events()
    assert [(e["type"], e["doc_id"]) for e in events] == [("created", "x")]
    assert events[0]["status"] is not None and events[0]["status"]["status"] == "parsing"


def test_a_new_entry_is_adopted_by_every_call_that_could_see_it() -> None:
    for call in ("list_all", "list_active", "count_by_status", "update_status", "get_status_json"):
        data, manager, events = _wrapped()
        manager.create_status("made", "m.pdf")
        data["direct"] = _legacy("direct")
        if call == "list_all":
            assert [s.doc_id for s in manager.list_all()] == ["direct", "made"]
        elif call == "list_active":
            assert {s.doc_id for s in manager.list_active()} == {"direct", "made"}
        elif call == "count_by_status":
            assert manager.count_by_status()["parsing"] == 1
        elif call == "update_status":
            manager.update_status("direct", "embedding_text", chunk=1, total_chunks=4)
            assert manager.require_status("direct").progress == pytest.approx(0.675)
        else:
            body = manager.get_status_json("direct")
            assert body is not None and body["status"] == "parsing"
        assert manager.flush_events()
        assert ("created", "direct") in [(e["type"], e["doc_id"]) for e in events], call
        assert manager.count_by_status()["total"] == 2


def test_an_in_place_edit_reaches_the_listing_counts_cleanup_and_subscribers() -> None:
    data, manager, events = _wrapped()
    manager.create_status("doc", "a.pdf")
    manager.update_status("doc", "parsing")
    data["doc"]["status"] = "completed"
    data["doc"]["updated_at"] = datetime.now(UTC).isoformat()
    assert manager.list_active() == []
    counts = manager.count_by_status()
    assert counts["completed"] == 1 and counts["parsing"] == 0 and counts["active"] == 0
    assert manager.require_status("doc").progress == 1.0  # completed is 1.0, as mark_completed makes it
    assert manager.require_status("doc").completed_at is not None
    assert manager.flush_events()
    assert [e["type"] for e in events][-1] == "updated"
    assert events[-1]["status"] is not None and events[-1]["status"]["status"] == "completed"
    assert manager.cleanup_old_entries(0) == 1
    assert "doc" not in data and manager.get_status("doc") is None
    assert manager.flush_events()
    assert events[-1]["type"] == "removed"


def test_cleanup_sees_a_document_completed_in_place_without_any_read_first() -> None:
    data, manager, _ = _wrapped()
    manager.create_status("doc", "a.pdf")
    manager.create_status("quiet", "b.pdf")
    data["doc"]["status"] = "completed"
    data["doc"]["updated_at"] = datetime.now().isoformat()  # naive: UTC, as on a server
    data["quiet"]["status"] = "completed"  # no time said: it finished when the store noticed
    assert manager.cleanup_old_entries(0) == 1
    assert list(data) == ["quiet"]
    assert manager.cleanup_old_entries(0) == 1
    assert data == {}


def test_a_finished_document_made_active_again_keeps_its_status_and_the_violation_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    data, manager, events = _wrapped()
    manager.create_status("doc", "a.pdf")
    manager.mark_completed("doc")
    assert manager.flush_events()
    seen = len(events)
    data["doc"]["status"] = "queued"
    data["doc"]["progress"] = 0.0
    with caplog.at_level(logging.WARNING, "docstatus"):
        assert manager.require_status("doc").status == Status.COMPLETED
    assert data["doc"]["status"] == "completed" and data["doc"]["progress"] == 1.0
    assert "undone" in caplog.text and "completed is final" in caplog.text and "'doc'" in caplog.text
    assert manager.flush_events()
    assert len(events) == seen  # nothing changed
    assert manager.list_active() == []
    found = manager.reconcile()
    assert not found  # already undone
    data["doc"]["status"] = "parsing"
    assert "completed is final" in manager.reconcile().refused["doc"]


def test_a_replaced_finished_entry_is_put_back() -> None:
    data, manager, _ = _wrapped()
    manager.create_status("doc", "a.pdf")
    manager.mark_completed("doc", chunks=3)
    data["doc"] = _legacy("doc", "queued")  # the old code's "process it again"
    found = manager.reconcile()
    assert "doc" in found.refused
    assert data["doc"]["status"] == "completed" and data["doc"]["metadata"] == {"chunks": 3}
    assert manager.count_by_status()["completed"] == 1


def test_a_failed_document_set_to_queued_directly_is_requeued() -> None:
    data, manager, _ = _wrapped()
    manager.create_status("doc", "a.pdf")
    manager.mark_failed("doc", "broken")
    data["doc"]["status"] = "queued"
    status = manager.require_status("doc")
    assert status.status == Status.QUEUED and status.error is None
    assert status.metadata["attempt"] == 2
    assert [s.doc_id for s in manager.list_active()] == ["doc"]


def test_statuses_outside_the_model_are_read_by_the_documented_mapping(
    caplog: pytest.LogCaptureFixture,
) -> None:
    data, manager, _ = _wrapped()
    with caplog.at_level(logging.WARNING, "docstatus"):
        for alias, status in STATUS_ALIASES.items():
            data[f"a-{alias}"] = _legacy(f"a-{alias}", alias.upper())
            assert manager.require_status(f"a-{alias}").status == status
            assert data[f"a-{alias}"]["status"] == status.value  # written back: the dict holds records
    assert "status 'PROCESSING' read as 'parsing'" in caplog.text
    assert "updated_at has no time zone: read as UTC" in caplog.text


def test_naive_times_are_utc_and_missing_fields_come_from_the_others() -> None:
    data, manager, _ = _wrapped()
    started = datetime(2025, 10, 7, 19, 0, 0)
    data["old"] = {
        "status": "done",
        "filename": "r.pdf",
        "started_at": started.isoformat(),
        "updated_at": (started + timedelta(seconds=90)).isoformat(),
        "result_path": "/out/r.json",  # the old code's own key: kept
    }
    status = manager.require_status("old")
    assert status.started_at == started.replace(tzinfo=UTC)
    assert status.completed_at == (started + timedelta(seconds=90)).replace(tzinfo=UTC)
    assert status.elapsed_time == 90.0 and status.progress == 1.0 and status.stage == "completed"
    assert data["old"]["result_path"] == "/out/r.json"
    assert data["old"]["doc_id"] == "old"
    json.dumps(data["old"])
    data["bare"] = {"status": "queued"}
    bare = manager.require_status("bare")
    assert bare.filename == "" and bare.progress == 0.0 and bare.started_at is not None


@pytest.mark.parametrize(
    ("entry", "field", "says"),
    [
        ({"status": "weird"}, "status", "'weird'"),
        ({"filename": "a.pdf"}, "status", "missing"),
        ({"status": "parsing", "progress": 50}, "progress", "0.0-1.0"),
        ({"status": "parsing", "progress": "half"}, "progress", "not a number"),
        ({"status": "parsing", "updated_at": "yesterday"}, "updated_at", "ISO-8601"),
        ({"status": "parsing", "page": -1}, "page", "negative"),
        ({"status": "parsing", "metadata": {"when": datetime.now()}}, "metadata", "JSON"),
        ({"status": "parsing", "doc_id": "other"}, "doc_id", "its key"),
        ("parsing", None, "not a dict"),
    ],
)
def test_an_entry_that_cannot_be_read_names_the_entry_and_field_once_and_blocks_create(
    entry: Any, field: str | None, says: str, caplog: pytest.LogCaptureFixture
) -> None:
    data, manager, events = _wrapped()
    data["bad"] = entry
    with caplog.at_level(logging.WARNING, "docstatus"):
        assert manager.get_status("bad") is None
        assert manager.list_all() == []
        assert manager.get_status("bad") is None
    assert len([r for r in caplog.records if "'bad'" in r.getMessage()]) == 1  # logged once
    assert says in caplog.text
    with pytest.raises(UnreadableEntryError) as info:
        manager.create_status("bad", "a.pdf")
    assert isinstance(info.value, DuplicateDocumentError) and isinstance(info.value, ValueError)
    assert info.value.doc_id == "bad" and info.value.field == field
    assert "'bad'" in str(info.value) and "already exists" not in str(info.value)
    assert manager.reconcile().unreadable == {"bad": str(info.value)}
    assert manager.flush_events()
    assert manager.count_by_status()["total"] == 0 and events == []
    assert data["bad"] == entry  # left as it is


def test_an_unreadable_entry_fixed_later_is_adopted() -> None:
    data, manager, _ = _wrapped()
    data["doc"] = {"status": "processing", "progress": 40}
    assert manager.get_status("doc") is None
    data["doc"]["progress"] = 0.4
    assert manager.require_status("doc").progress == 0.4
    assert manager.reconcile().unreadable == {}


def test_a_direct_progress_write_is_a_change_and_progress_never_goes_down() -> None:
    data, manager, events = _wrapped()
    manager.create_status("doc", "a.pdf")
    manager.update_status("doc", "parsing")
    manager.update_status("doc", "embedding_visual", progress=0.3)
    data["doc"]["progress"] = 0.5
    assert manager.require_status("doc").progress == 0.5
    assert manager.flush_events()
    assert events[-1]["type"] == "updated" and events[-1]["status"]["progress"] == 0.5  # type: ignore[index]
    data["doc"]["progress"] = 0.2
    assert manager.require_status("doc").progress == 0.5  # as update_status does with a lower value
    manager.update_status("doc", "embedding_visual", progress=0.55)
    assert manager.flush_events()
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))


def test_a_direct_write_racing_with_the_rules_of_update_status_is_checked_before_the_update() -> None:
    data, manager, _ = _wrapped()
    manager.create_status("doc", "a.pdf")
    manager.update_status("doc", "parsing")
    data["doc"]["status"] = "failed"
    data["doc"]["error"] = "the old code gave up"
    with pytest.raises(ValueError, match="cannot go from 'failed'"):
        manager.update_status("doc", "embedding_text")
    status = manager.require_status("doc")
    assert status.status == Status.FAILED and status.error == "the old code gave up"


def test_a_directly_deleted_entry_is_removed_from_the_index() -> None:
    data, manager, events = _wrapped()
    manager.create_status("a", "a.pdf")
    manager.create_status("b", "b.pdf")
    del data["a"]
    assert [s.doc_id for s in manager.list_all()] == ["b"]
    assert manager.count_by_status()["total"] == 1
    assert manager.flush_events()
    assert ("removed", "a") in [(e["type"], e["doc_id"]) for e in events]
    manager.create_status("a", "again.pdf")  # the id is free again


def test_reconcile_returns_what_it_found() -> None:
    data, manager, _ = _wrapped()
    manager.create_status("edited", "e.pdf")
    manager.create_status("deleted", "d.pdf")
    data["edited"]["status"] = "parsing"
    del data["deleted"]
    data["new"] = _legacy("new")
    data["junk"] = {"not": "a record"}
    found = manager.reconcile()
    assert found.adopted == ["new"] and found.changed == ["edited"] and found.removed == ["deleted"]
    assert list(found.unreadable) == ["junk"] and found.refused == {}
    assert not manager.reconcile().logged


def test_a_store_without_a_wrapped_dict_has_nothing_to_reconcile(tmp_path: Any) -> None:
    with StatusManager(store=f"sqlite:///{tmp_path / 's.db'}", cleanup_interval_seconds=None) as manager:
        assert not manager.reconcile()
    assert not StatusManager(cleanup_interval_seconds=None).reconcile()


def test_entries_there_before_the_dict_was_wrapped_are_adopted_too() -> None:
    data = {"early": _legacy("early", "processing"), "junk": {"not": "a record"}}
    manager = StatusManager(data, cleanup_interval_seconds=None)
    assert manager.require_status("early").status == Status.PARSING
    assert manager.get_status("junk") is None
    assert manager.count_by_status()["total"] == 1


def test_listing_costs_stay_with_the_listed_records() -> None:
    # A direct write to a document that is not listed waits for a call that sees it.
    data, manager, _ = _wrapped()
    for i in range(50):
        manager.create_status(f"d{i}", "f.pdf")
        manager.mark_completed(f"d{i}")
    data["d0"]["progress"] = 0.5  # a finished one, not among the 5 listed: not looked at
    assert len(manager.list_all(5)) == 5
    assert data["d0"]["progress"] == 0.5
    assert manager.require_status("d0").progress == 1.0  # touched: undone (completed is final)


def test_the_inline_fingerprint_is_fingerprint() -> None:
    data: dict[str, Any] = {}
    manager = StatusManager(data, cleanup_interval_seconds=None)
    manager.create_status("doc", "a.pdf")
    manager.update_status("doc", "parsing")
    store = manager.store
    assert isinstance(store, MemoryStore)
    assert store._seen is not None and store._seen["doc"] == fingerprint(data["doc"])


def _process_directly(data: dict[str, Any], doc_id: str) -> None:
    data[doc_id] = _legacy(doc_id, "queued")
    for step in range(1, 11):
        data[doc_id]["status"] = "processing"
        data[doc_id]["progress"] = step / 10
        data[doc_id]["updated_at"] = datetime.now().isoformat()
    data[doc_id]["status"] = "completed"
    data[doc_id]["updated_at"] = datetime.now().isoformat()


def test_threads_writing_directly_while_others_use_the_manager_keep_the_index_whole() -> None:
    import threading

    data, manager, events = _wrapped()
    stop = time.monotonic() + 1.0

    def processor(n: int) -> None:
        _process_directly(data, f"legacy-{n}")

    def reader() -> None:
        while time.monotonic() < stop:
            manager.list_all(20)
            manager.count_by_status()
            manager.list_active()

    def worker(n: int) -> None:
        doc_id = f"managed-{n}"
        manager.create_status(doc_id, "m.pdf")
        manager.update_status(doc_id, "parsing")
        for page in range(1, 21):
            manager.update_status(doc_id, "embedding_visual", page=page, total_pages=20)
        manager.mark_completed(doc_id)

    threads = [threading.Thread(target=processor, args=(n,)) for n in range(8)]
    threads += [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    threads += [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    manager.reconcile()
    counts = manager.count_by_status()
    assert counts["total"] == 12 and counts["completed"] == 12, counts
    assert manager.list_active() == []
    assert manager.flush_events()
    assert {e["doc_id"] for e in events if e["type"] == "created"} == set(data)
    assert manager.cleanup_old_entries(0) == 12 and data == {}


def test_every_manager_wrapping_the_dict_tells_its_subscribers() -> None:
    import gc

    data: dict[str, Any] = {}
    first, second = StatusManager(data), StatusManager(data)
    got: list[tuple[str, str]] = []
    first.subscribe(lambda e: got.append(("first", e["doc_id"])))
    second.subscribe(lambda e: got.append(("second", e["doc_id"])))
    data["x"] = _legacy("x")
    assert first.get_status("x") is not None  # adopted through one of them
    assert first.flush_events() and second.flush_events()
    assert sorted(got) == [("first", "x"), ("second", "x")]
    store = first.store
    assert isinstance(store, MemoryStore)
    for _ in range(20):
        StatusManager(data, cleanup_interval_seconds=None).close()
    gc.collect()
    StatusManager(data, cleanup_interval_seconds=None)
    assert len(store._listeners) <= 4  # the live ones; those of managers gone are dropped
