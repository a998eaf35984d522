"""The pure parts: Status, the lifecycle table, progress_for, the model, the ETA estimator."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from docstatus import ProcessingStatus, Status, progress_for
from docstatus.models import (
    FIELD_ROLES,
    KEYWORD_CHECKS,
    MANAGED_FIELDS,
    TRANSITIONS,
    UPDATE_PARAMETERS,
    RateEstimator,
    Track,
    can_transition,
    check_count,
)
from docstatus.records import new_record, status_json

ALL = [s.value for s in Status]

# The contract's "Valid Transitions" list plus DESIGN's queued -> failed,
# written out independently of the implementation's table.
LEGAL = {
    ("queued", "parsing"),
    ("queued", "failed"),
    ("parsing", "embedding_visual"),
    ("parsing", "embedding_text"),
    ("parsing", "failed"),
    ("embedding_visual", "embedding_text"),
    ("embedding_visual", "failed"),
    ("embedding_text", "storing"),
    ("embedding_text", "failed"),
    ("storing", "completed"),
    ("storing", "failed"),
}


def test_status_members_are_the_plain_strings() -> None:
    assert ALL == [
        "queued",
        "parsing",
        "embedding_visual",
        "embedding_text",
        "storing",
        "completed",
        "failed",
    ]
    assert Status.EMBEDDING_TEXT == "embedding_text"
    assert str(Status.COMPLETED) == "completed"
    assert f"{Status.FAILED}" == "failed"


@pytest.mark.parametrize("current", ALL)
@pytest.mark.parametrize("target", ALL)
def test_transition_table(current: str, target: str) -> None:
    finished = current in ("completed", "failed")
    expected = (current, target) in LEGAL or (current == target and not finished)
    assert can_transition(Status(current), Status(target)) is expected


def test_finished_states_have_no_way_out() -> None:
    assert TRANSITIONS[Status.COMPLETED] == frozenset()
    assert TRANSITIONS[Status.FAILED] == frozenset()


@pytest.mark.parametrize(
    ("status", "done", "total", "expected"),
    [
        ("queued", None, None, 0.0),
        ("parsing", None, None, 0.1),
        ("embedding_visual", 13, 20, 0.1 + 13 / 20 * 0.5),
        ("embedding_visual", 0, 20, 0.1),
        ("embedding_visual", 20, 20, 0.6),
        ("embedding_visual", 25, 20, 0.6),  # clipped to total
        ("embedding_visual", -3, 20, 0.1),  # clipped to 0
        ("embedding_visual", 5, None, 0.1),  # no total: start of range
        ("embedding_visual", 5, 0, 0.1),
        ("embedding_text", 1, 4, 0.6 + 0.25 * 0.3),
        ("embedding_text", 4, 4, 0.9),
        ("storing", None, None, 0.95),
        ("completed", None, None, 1.0),
    ],
)
def test_progress_for_follows_the_contract_table(
    status: str, done: int | None, total: int | None, expected: float
) -> None:
    assert progress_for(status, done, total) == pytest.approx(expected)


@pytest.mark.parametrize("status", ["failed", "bogus", ""])
def test_progress_for_has_no_formula_for_failed_or_unknown(status: str) -> None:
    with pytest.raises(ValueError, match="no progress formula"):
        progress_for(status)


def _model(**overrides: object) -> ProcessingStatus:
    fields: dict[str, object] = {
        "doc_id": "d",
        "filename": "f.pdf",
        "status": "parsing",
        "progress": 0.1,
        "stage": "parsing",
        "started_at": datetime(2025, 1, 1, 12, 0, 0),
        "updated_at": datetime(2025, 1, 1, 12, 0, 5),
        "elapsed_time": 5.0,
    }
    fields.update(overrides)
    return ProcessingStatus.model_validate(fields)


def test_naive_datetimes_are_read_as_utc() -> None:
    model = _model()
    assert model.started_at == datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    aware = _model(updated_at=datetime(2025, 1, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))))
    assert aware.updated_at == datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
    assert aware.updated_at.tzinfo == UTC


@pytest.mark.parametrize(
    "bad",
    [{"progress": 1.5}, {"progress": -0.1}, {"status": "done"}, {"doc_id": None}],
)
def test_model_rejects_invalid_values(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        _model(**bad)


def test_model_example_is_valid_and_in_the_schema() -> None:
    schema = ProcessingStatus.model_json_schema()
    example = schema["example"]
    assert ProcessingStatus.model_validate(example).page == 13
    assert example["status"] == "embedding_visual"


def test_status_field_serializes_as_plain_string() -> None:
    assert _model(status=Status.STORING).model_dump(mode="json")["status"] == "storing"


def test_rate_estimator_needs_a_sample_before_it_estimates() -> None:
    track = Track.start(0.0)
    assert RateEstimator.remaining(track, 0.0, 1.0) is None
    assert not RateEstimator.advance(track, 0.1, 0.001)  # too soon after the last point: pooled
    assert track.samples == 0


def test_rate_estimator_converges_on_a_steady_rate() -> None:
    track = Track.start(0.0)
    for step in range(1, 11):  # 0.05 progress per second
        assert RateEstimator.advance(track, step * 0.05, float(step))
    assert track.started == 0.0  # the start of the attempt is kept
    assert track.samples == 10
    remaining = RateEstimator.remaining(track, 0.5, 10.0)
    assert remaining is not None
    assert remaining == pytest.approx(10.0)  # bias correction: exact on a steady rate
    later = RateEstimator.remaining(track, 0.5, 12.0)
    assert later == pytest.approx(8.0)


def test_rate_estimator_ignores_non_progress() -> None:
    track = Track(0.0, 1.0, 0.2, 0.1, 3, 0)
    assert not RateEstimator.advance(track, 0.2, 5.0)
    assert not RateEstimator.advance(track, 0.1, 5.0)
    assert track == Track(0.0, 1.0, 0.2, 0.1, 3, 0)
    assert not math.isnan(RateEstimator.remaining(track, 0.2, 5.0) or 0.0)


def test_a_track_is_stored_as_the_six_numbers_records_have_always_held() -> None:
    track = Track(10.0, 12.5, 0.25, 0.01, 4, 1)
    assert track.stored() == [10.0, 12.5, 0.25, 0.01, 4, 1]
    assert Track(*track.stored()) == track
    assert Track(*[10.0, 10.0, 0.0, 0.0, 0, 0]) == Track.start(10.0)
    assert Track.start(10.0).stored() == [10.0, 10.0, 0.0, 0.0, 0, 0]
    assert [type(v) for v in Track.start(1.0).stored()] == [float, float, float, float, int, int]


@pytest.mark.parametrize(
    ("status", "done", "total", "exact"),
    [("embedding_text", 2, 2, 0.9), ("embedding_visual", 13, 20, 0.425), ("embedding_text", 1, 4, 0.675)],
)
def test_progress_for_has_no_float_noise(status: str, done: int, total: int, exact: float) -> None:
    # Shown in dashboards and JSON: 0.9, not 0.8999999999999999.
    assert progress_for(status, done, total) == exact


def test_errors_read_as_their_message() -> None:
    from docstatus.errors import DocumentNotFoundError, PathOutsideUploadsError

    # KeyError and OSError format themselves differently; StatusError's __str__ wins.
    assert str(DocumentNotFoundError("x")) == "Document 'x' not found"
    assert str(PathOutsideUploadsError("/etc/passwd")) == "Path '/etc/passwd' is outside the uploads folder"
    assert DocumentNotFoundError("x").to_dict() == {
        "error": "Document 'x' not found",
        "code": "DOCUMENT_NOT_FOUND",
        "details": {"doc_id": "x"},
    }


# -- one declaration per field: what is derived from the model ------------------------------


def test_every_field_declares_who_sets_it() -> None:
    assert list(FIELD_ROLES) == list(ProcessingStatus.model_fields)
    # DESIGN §2, written out: the fields the manager owns, the arguments, the keywords.
    owned = {"doc_id", "filename", "started_at", "updated_at", "completed_at", "elapsed_time"}
    # Beside them, the split of elapsed time into the queue wait and the run.
    owned |= {"processing_started_at", "wait_time", "run_time"}
    assert owned == MANAGED_FIELDS
    assert UPDATE_PARAMETERS == (
        "status",
        "progress",
        "stage",
        "page",
        "total_pages",
        "estimated_remaining",
        "metadata",
        "chunk",
        "total_chunks",
        "error",
    )
    assert set(KEYWORD_CHECKS) == set(UPDATE_PARAMETERS) - {"status", "progress"}
    assert {n for n, c in KEYWORD_CHECKS.items() if c is check_count} == {
        "page",
        "total_pages",
        "chunk",
        "total_chunks",
    }


def test_records_and_status_json_have_the_models_fields_in_its_order() -> None:
    record = new_record("d", "f.pdf", {}, 1_700_000_000.0)
    fields = list(ProcessingStatus.model_fields)
    assert list(record) == [*fields, "_track"]
    assert list(status_json(record)) == [*fields, "timestamp"]
    assert ProcessingStatus.model_validate(status_json(record)).filename == "f.pdf"
