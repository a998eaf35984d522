"""records.timeline and records.tally_of: a record's stages, and what a store's counters follow."""

from __future__ import annotations

from typing import Any

import pytest

from docstatus.records import Mutation, Record, new_record, tally_of, timeline

T0 = 1_700_000_000.0  # a whole minute: 1_700_000_000 // 60 * 60 == T0 - 20


def _walk(*steps: tuple[str, float, dict[str, Any]]) -> Record:
    record = new_record("d", "d.pdf", {}, T0)
    for kind, at, fields in steps:
        if kind in ("complete", "fail", "cancel", "requeue"):
            record = Mutation(kind, T0 + at, fields=fields)(record)
        else:
            record = Mutation("update", T0 + at, target=kind, fields=fields)(record)
    return record


def _shape(record: Record) -> list[tuple[str, float, float, Any, Any]]:
    return [
        (s["status"], round(_epoch(s["started_at"]) - T0, 3), round(s["seconds"], 3), s["done"], s["total"])
        for s in timeline(record)
    ]


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


def test_a_completed_document_has_every_stage_with_its_start_and_duration() -> None:
    record = _walk(
        ("parsing", 2, {}),
        ("embedding_visual", 5, {"page": 0, "total_pages": 4}),
        ("embedding_visual", 9, {"page": 4}),
        ("embedding_text", 11, {"chunk": 3, "total_chunks": 3}),
        ("storing", 12, {}),
        ("complete", 12.5, {}),
    )
    assert _shape(record) == [
        ("queued", 0, 2, None, None),
        ("parsing", 2, 3, None, None),
        ("embedding_visual", 5, 6, 4, 4),
        ("embedding_text", 11, 1, 3, 3),
        ("storing", 12, 0.5, None, None),
    ]


def test_a_document_without_pages_skips_the_visual_stage() -> None:
    record = _walk(("parsing", 1, {}), ("embedding_text", 2, {"chunk": 1, "total_chunks": 2}))
    assert _shape(record) == [
        ("queued", 0, 1, None, None),
        ("parsing", 1, 1, None, None),
        ("embedding_text", 2, 0, 1, 2),  # in progress: as of its last change
    ]


def test_a_failed_document_ends_in_the_stage_it_failed_in() -> None:
    record = _walk(("parsing", 1, {}), ("embedding_visual", 3, {"page": 1, "total_pages": 9}))
    failed = Mutation("fail", T0 + 7, fields={"error": "boom"})(record)
    assert _shape(failed)[-1] == ("embedding_visual", 3, 4, 1, 9)
    assert [s[0] for s in _shape(failed)] == ["queued", "parsing", "embedding_visual"]


def test_a_queued_document_and_a_new_attempt_have_the_wait_only() -> None:
    assert _shape(new_record("d", "d.pdf", {}, T0)) == [("queued", 0, 0, None, None)]
    failed = _walk(("parsing", 1, {}), ("fail", 2, {"error": "x"}))
    again = Mutation("requeue", T0 + 10)(failed)
    assert [s["status"] for s in timeline(again)] == ["queued"]


def test_tally_of_counts_the_change_that_ends_a_document_in_its_minute() -> None:
    active = _walk(("parsing", 1, {}), ("embedding_visual", 2, {"page": 3, "total_pages": 3}))
    done = Mutation("complete", T0 + 50)(active)
    assert tally_of(active, done) == ((T0 + 50) // 60 * 60, "completed", 3)
    assert tally_of(None, done) == ((T0 + 50) // 60 * 60, "completed", 3)  # created finished
    assert tally_of(done, done) is None  # already ended
    assert tally_of(None, active) is None and tally_of(active, active) is None
    failed = Mutation("fail", T0 + 3, fields={"error": "x"})(new_record("e", "e.txt", {}, T0))
    assert tally_of(new_record("e", "e.txt", {}, T0), failed) == (int(T0 // 60 * 60), "failed", 0)


@pytest.mark.parametrize("page", [None, 0, -1])
def test_tally_of_counts_no_pages_for_a_document_without_any(page: Any) -> None:
    record = {**_walk(("complete", 1, {})), "page": page}
    counted = tally_of({**record, "status": "storing"}, record)
    assert counted is not None and counted[2] == 0
