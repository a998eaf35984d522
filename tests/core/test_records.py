"""The record-level functions: the fast status JSON equals the model's, for any record."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from docstatus import ProcessingStatus
from docstatus.models import WorkEstimator
from docstatus.records import Mutation, changed_at, new_record, status_json, to_model

# Whole seconds too: a zero fraction is where pydantic's datetime format differs most.
TIMES = st.one_of(st.integers(1_600_000_000, 1_900_000_000).map(float), st.floats(1.6e9, 1.9e9))
STEPS = st.lists(
    st.tuples(
        st.sampled_from(["parsing", "embedding_visual", "embedding_text", "storing", "complete", "fail"]),
        st.integers(0, 50),
        st.floats(0.0, 30.0),
        st.booleans(),
    ),
    max_size=12,
)


def _model_json(record: dict[str, object], now: float) -> dict[str, object]:
    """The status JSON the long way: through the pydantic model and its own serializer."""
    body = to_model(record, now).model_dump(mode="json")
    body["timestamp"] = body["updated_at"]
    return body


def _walk(start: float, steps: list[tuple[str, int, float, bool]]) -> list[dict[str, object]]:
    record = new_record("d" * 64, "r.pdf", {"format": "pdf", "nested": {"k": [1, 2]}}, start)
    seen = [record]
    now = start
    for kind, count, gap, give_eta in steps:
        now += gap
        if kind == "complete":
            mutation = Mutation("complete", now, fields={"num_chunks": count})
        elif kind == "fail":
            mutation = Mutation("fail", now, fields={"error": f"broke at {count}"})
        else:
            fields: dict[str, object] = {"page": count, "total_pages": 50}
            if give_eta:
                fields["estimated_remaining"] = gap
            mutation = Mutation("update", now, kind, None, fields)
        try:
            record = mutation(record)
        except ValueError:
            continue  # an illegal step: the record stays as it was
        seen.append(record)
    return seen


@settings(max_examples=300, deadline=None)
@given(start=TIMES, steps=STEPS, later=st.floats(0.0, 100.0))
def test_status_json_equals_the_models_json(
    start: float, steps: list[tuple[str, int, float, bool]], later: float
) -> None:
    for record in _walk(start, steps):
        assert status_json(record) == _model_json(record, changed_at(record))
        now = changed_at(record) + later
        assert status_json(record, now) == _model_json(record, now)


def test_keys_a_store_keeps_beside_the_fields_are_no_part_of_the_status() -> None:
    record = Mutation("update", 1_700_000_001.0, "parsing", None, {})(
        new_record("d", "f.pdf", {}, 1_700_000_000.0)
    )
    with_private = {**record, "_version": 7}
    assert status_json(with_private) == status_json(record)
    assert "_version" not in status_json(with_private, 1_700_000_002.0)
    assert to_model(with_private, 1_700_000_002.0) == to_model(record, 1_700_000_002.0)


def test_the_stored_track_keeps_its_six_number_form_and_its_arithmetic() -> None:
    # Expected values as the positional-list implementation computed them: stored
    # records (SQLite files, Redis data) continue with the same numbers.
    record = new_record("old", "old.pdf", {"format": "pdf"}, 1_700_000_000.25)
    assert record["_track"] == [1_700_000_000.25, 1_700_000_000.25, 0.0, 0.0, 0, 0]
    steps = [
        (Mutation("update", 1_700_000_001.0, "parsing", None, {}), [1.0, 0.1, 0.04, 1, 0]),
        (
            Mutation("update", 1_700_000_002.0, "embedding_visual", None, {"page": 1, "total_pages": 4}),
            [2.0, 0.225, 0.0655, 2, 0],
        ),
        (
            Mutation("update", 1_700_000_003.5, "embedding_visual", None, {"page": 2, "total_pages": 4}),
            [3.5, 0.35, 0.07085, 3, 0],
        ),
        (
            Mutation(
                "update",
                1_700_000_004.0,
                "embedding_text",
                None,
                {"chunk": 1, "total_chunks": 3, "estimated_remaining": 7.5},
            ),
            [4.0, 0.7, 0.25959499999999996, 4, 1],  # the caller's ETA: flagged
        ),
        (
            Mutation("update", 1_700_000_006.0, "embedding_text", None, {"chunk": 2, "total_chunks": 3}),
            [6.0, 0.8, 0.1967165, 5, 0],
        ),
        (
            Mutation("complete", 1_700_000_009.0, fields={"num_chunks": 3}),
            [9.0, 1.0, 0.15770154999999997, 6, 0],
        ),
    ]
    etas = []
    for mutation, (at, progress, rate, samples, eta_given) in steps:
        record = mutation(json.loads(json.dumps(record)))  # as a store reads it back
        assert record["_track"] == [1_700_000_000.25, 1_700_000_000 + at, progress, rate, samples, eta_given]
        assert [type(v) for v in record["_track"][4:]] == [int, int]
        etas.append(record["estimated_remaining"])
    # The ETA itself comes from the work left (pages and chunks at their observed rates, the
    # stages to come from the priors), not from the track: nothing to go on while parsing or
    # at the first page; then 2 pages left at 1.5 s + the text and storing priors; the
    # caller's 7.5; 1 chunk left at 2 s + storing's prior.
    assert etas[0] is None and etas[1] is None and etas[3] == 7.5 and etas[5] is None
    text, storing = WorkEstimator.TEXT_PER_VISUAL, WorkEstimator.STORING_SHARE
    assert etas[2] == pytest.approx(2 * 1.5 + text * 6 + storing * (1 + 6 + text * 6))
    assert etas[4] == pytest.approx(2 + storing * (1 + 2 + 4))


def test_snapshots_are_whole_models_that_share_nothing() -> None:
    record = new_record("d", "f.pdf", {"nested": {"k": [1]}}, 1_700_000_000.0)
    first, second = to_model(record, 1_700_000_001.0), to_model(record, 1_700_000_001.0)
    values = {name: getattr(first, name) for name in ProcessingStatus.model_fields}
    assert first == ProcessingStatus.model_construct(**values)
    assert first.model_fields_set == set(ProcessingStatus.model_fields)
    first.metadata["nested"]["k"].append(2)
    first.stage = "changed"
    assert second.metadata == {"nested": {"k": [1]}} and second.stage == "queued"
    assert record["metadata"] == {"nested": {"k": [1]}}
    assert to_model(record, 1_700_000_001.0) == second
