"""Manager-level findings of the review, run against every store."""

from __future__ import annotations

from typing import Any

import pytest

from docstatus import StatusManager


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
