"""The singleton wraps ``processing_status``; code reading that dict sees the contract's fields."""

from __future__ import annotations

import json
import threading
from datetime import datetime
from typing import Any

from docstatus import StatusManager, get_status_manager, processing_status
from docstatus.stores.memory import MemoryStore

CONTRACT_FIELDS = {
    "doc_id",
    "filename",
    "status",
    "progress",
    "stage",
    "page",
    "total_pages",
    "started_at",
    "updated_at",
    "completed_at",
    "elapsed_time",
    "estimated_remaining",
    "metadata",
    "error",
}


def test_singleton_is_one_manager_over_processing_status() -> None:
    managers: list[StatusManager] = []
    threads = [threading.Thread(target=lambda: managers.append(get_status_manager())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(m) for m in managers}) == 1
    manager = managers[0]
    manager.create_status("legacy-reader", "scan.pdf", {"format": "pdf"})
    try:
        manager.update_status("legacy-reader", "parsing")
        manager.update_status("legacy-reader", "embedding_visual", page=2, total_pages=4)
        entry = processing_status["legacy-reader"]
        # Existing code reads the dict directly, as before docstatus.
        assert entry["status"] == "embedding_visual"
        assert entry["page"] == 2 and entry["total_pages"] == 4
        assert entry["progress"] == 0.35
        assert set(entry) >= CONTRACT_FIELDS
        assert datetime.fromisoformat(entry["started_at"]).tzinfo is not None
        json.dumps(entry)  # plain JSON-compatible values
    finally:
        manager.mark_completed("legacy-reader")
        manager.cleanup_old_entries(0)


def test_managers_wrapping_one_dict_share_its_store() -> None:
    data: dict[str, Any] = {}
    first, second = StatusManager(data), StatusManager(data)
    assert first.store is second.store
    first.create_status("x", "f.pdf", {})
    second.update_status("x", "parsing")
    assert first.require_status("x").status == "parsing"
    assert data["x"]["status"] == "parsing"
    assert StatusManager().store is not StatusManager().store


def test_wrapping_a_dict_with_existing_records_indexes_them() -> None:
    source: dict[str, Any] = {}
    writer = StatusManager(source)
    writer.create_status("old", "a.pdf", {})
    writer.create_status("new", "b.pdf", {})
    writer.mark_completed("old")
    copied = json.loads(json.dumps(source))  # e.g. reloaded from a JSON file
    copied["junk"] = {"not": "a record"}
    reader = StatusManager(copied)
    assert [s.doc_id for s in reader.list_all()] == ["old", "new"]
    assert [s.doc_id for s in reader.list_active()] == ["new"]
    assert reader.get_status("junk") is None
    assert reader.count_by_status()["total"] == 2
    assert isinstance(reader.store, MemoryStore)


def test_status_dict_and_store_are_exclusive() -> None:
    import pytest

    with pytest.raises(ValueError, match="either"):
        StatusManager({}, store="memory://")
    with pytest.raises(TypeError):
        StatusManager([])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown store URL") as info:
        StatusManager(store="postgres://admin:hunter2@db/status")
    assert "hunter2" not in str(info.value)  # a URL's password never reaches a message


def test_an_entry_without_every_field_of_the_model_is_not_taken_for_a_record() -> None:
    source: dict[str, Any] = {}
    StatusManager(source).create_status("whole", "a.pdf", {})
    copied = json.loads(json.dumps(source))
    partial = dict(copied["whole"], doc_id="partial")
    del partial["stage"]  # would fail every later read of it
    copied["partial"] = partial
    reader = StatusManager(copied)
    assert [s.doc_id for s in reader.list_all()] == ["whole"]
    assert reader.get_status("partial") is None
