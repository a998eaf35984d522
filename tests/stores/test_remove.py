"""Removing one finished document on demand, over every store (``StatusManager.remove``)."""

from __future__ import annotations

from typing import Any

import pytest

from docstatus import DocumentNotFoundError, InvalidTransitionError, Status, StatusManager
from docstatus.errors import DocumentActiveError


@pytest.mark.parametrize("finish", ["completed", "failed"])
def test_a_finished_document_is_removed_whatever_its_age(manager: StatusManager, finish: str) -> None:
    manager.create_status("doc", "doc.pdf")
    manager.create_status("other", "other.pdf")
    manager.mark_completed("doc") if finish == "completed" else manager.mark_failed("doc", "broken")
    seen: list[Any] = []
    manager.subscribe(seen.append)
    seq = manager.last_seq

    last = manager.remove("doc")

    assert last.doc_id == "doc" and last.status == finish
    assert manager.get_status("doc") is None
    assert [d.doc_id for d in manager.list_all()] == ["other"]
    counts = manager.count_by_status()
    assert (counts["total"], counts[finish], counts["queued"]) == (1, 0, 1)
    assert manager.last_seq == seq + 1
    assert manager.flush_events()  # subscribers are called on the event thread
    assert seen == [{"seq": seq + 1, "type": "removed", "doc_id": "doc", "status": None}]
    assert [(e["type"], e["doc_id"]) for e in manager.changes_since(seq)] == [("removed", "doc")]
    assert manager.cleanup_old_entries(0) == 0  # gone from the finished index too


@pytest.mark.parametrize("stage", ["queued", "parsing", "embedding_visual"])
def test_an_active_document_is_refused_and_kept(manager: StatusManager, stage: str) -> None:
    manager.create_status("doc", "doc.pdf")
    if stage != "queued":
        manager.update_status("doc", "parsing")
    if stage == "embedding_visual":
        manager.update_status("doc", stage, page=1, total_pages=3)
    seq = manager.last_seq
    with pytest.raises(DocumentActiveError, match="cancel it first") as caught:
        manager.remove("doc")
    assert isinstance(caught.value, InvalidTransitionError)
    assert caught.value.current == stage
    assert manager.require_status("doc").status == stage
    assert manager.last_seq == seq


def test_an_unknown_document_is_not_found(manager: StatusManager) -> None:
    with pytest.raises(DocumentNotFoundError):
        manager.remove("nothing")
    manager.create_status("doc", "doc.pdf")
    manager.mark_completed("doc")
    manager.remove(manager.require_status("doc"))  # a snapshot names its document too
    with pytest.raises(DocumentNotFoundError):
        manager.remove("doc")


def test_a_removed_document_can_be_created_again(manager: StatusManager) -> None:
    manager.create_status("doc", "doc.pdf")
    manager.mark_failed("doc", "broken")
    manager.remove("doc")
    manager.create_status("doc", "again.pdf")
    assert manager.require_status("doc").status is Status.QUEUED
