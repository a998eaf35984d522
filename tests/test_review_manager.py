"""Manager-level findings of the review, run against every store."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest

from docstatus import DocumentNotFoundError, InvalidTransitionError, StatusManager


def nested(depth: int) -> dict[str, Any]:
    top: dict[str, Any] = {}
    level = top
    for _ in range(depth):
        level["a"] = {}
        level = level["a"]
    return top


@pytest.mark.parametrize("depth", [900, 5000])
def test_metadata_nested_too_deep_is_a_valueerror_and_stores_nothing(
    manager: StatusManager, depth: int
) -> None:
    # Deep enough that copying or encoding it recursively would blow the stack: the
    # document would be stored, then fail every read (and every listing with it).
    with pytest.raises(ValueError, match="nested"):
        manager.create_status("deep", "deep.txt", nested(depth))
    assert manager.get_status("deep") is None
    assert manager.list_all() == []
    manager.create_status("doc", "doc.txt")
    with pytest.raises(ValueError, match="nested"):
        manager.update_status("doc", "parsing", metadata=nested(depth))
    with pytest.raises(ValueError, match="nested"):
        manager.mark_completed("doc", result=nested(depth))
    status = manager.require_status("doc")
    assert status.status == "queued" and status.metadata == {}
    assert [s.doc_id for s in manager.list_all()] == ["doc"]


def test_metadata_nested_moderately_is_kept(manager: StatusManager) -> None:
    manager.create_status("doc", "doc.txt", nested(30))
    assert manager.require_status("doc").metadata == nested(30)


def run_switching_often(*targets: Callable[[], None]) -> None:
    """Run ``targets`` on threads at once, with the interpreter switching threads as often as it can."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=target) for target in targets]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)


def test_concurrent_updates_never_report_an_existing_document_as_missing() -> None:
    # The memory store checks that a document exists before it takes its lock; a change of
    # status moves the document in the recency index (remove, re-insert) under the lock, and
    # a thread switch in between made that unlocked check see a document that exists as missing.
    manager = StatusManager(cleanup_interval_seconds=None)
    manager.create_status("d", "d.txt")
    done = threading.Event()
    missing: list[Exception] = []

    def flip() -> None:
        try:
            for _ in range(20_000):
                manager.mark_failed("d", "again")
                manager.requeue("d")
        finally:
            done.set()

    def update() -> None:
        while not done.is_set():
            try:
                manager.update_status("d", "queued")
            except InvalidTransitionError:
                pass  # failed at that moment: a legitimate refusal
            except DocumentNotFoundError as exc:
                missing.append(exc)

    run_switching_often(flip, update, update)
    assert missing == []
    assert manager.require_status("d").metadata["attempt"] == 20_001
