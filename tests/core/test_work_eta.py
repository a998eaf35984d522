"""The ETA from the work left: pages and chunks at their observed rates, later stages from priors.

Driven through the pure record functions with explicit times: never the wall clock.
"""

from __future__ import annotations

import pytest

from docstatus.models import Stages, WorkEstimator
from docstatus.records import Mutation, Record, new_record, status_json

T0 = 1_700_000_000.0
TEXT, STORING = WorkEstimator.TEXT_PER_VISUAL, WorkEstimator.STORING_SHARE


def _step(record: Record, at: float, status: str, **fields: object) -> Record:
    return Mutation("update", T0 + at, status, None, dict(fields))(record)


def _paged(pages: int, per_page: float, done: int) -> Record:
    """A PDF claimed at 1 s, parsed in 0.5 s, its first page at 1.5 s, then ``per_page`` s a page."""
    record = new_record("p" * 64, "big.pdf", {"format": "pdf"}, T0)
    record = Mutation("claim", T0 + 1.0, fields={"worker": "h:1", "seconds": 30.0})(record)
    record = _step(record, 1.5, "embedding_visual", page=1, total_pages=pages)
    for page in range(2, done + 1):
        record = _step(record, 1.5 + (page - 1) * per_page, "embedding_visual", page=page, total_pages=pages)
    return record


def test_nothing_to_go_on_while_parsing_or_at_the_first_page() -> None:
    record = Mutation("claim", T0 + 1.0, fields={"worker": "h:1", "seconds": 30.0})(
        new_record("p" * 64, "big.pdf", {}, T0)
    )
    assert status_json(record, T0 + 2.0)["estimated_remaining"] is None
    assert status_json(_paged(300, 0.02, 1), T0 + 2.0)["estimated_remaining"] is None


def test_the_pages_left_at_the_observed_page_rate_dominate_a_long_pdf() -> None:
    # The issue's case: at page 280 of 299 the fixed weights say 57 %, and the ETA came from them.
    record = _paged(299, 0.02, 280)
    eta = record["estimated_remaining"]
    whole = 299 * 0.02
    expected = 19 * 0.02 + TEXT * whole + STORING * (0.5 + whole + TEXT * whole)
    assert eta == pytest.approx(expected)
    assert record["progress"] == pytest.approx(0.1 + 280 / 299 * 0.5)  # the contract's bar is kept
    later = status_json(record, T0 + 1.5 + 279 * 0.02 + 0.2)["estimated_remaining"]
    assert later == pytest.approx(expected - 0.2)  # live between changes: less the time since


def test_a_change_in_page_rate_is_followed() -> None:
    record = _paged(100, 0.1, 50)
    slower = _step(record, 1.5 + 49 * 0.1 + 10 * 0.5, "embedding_visual", page=60, total_pages=100)
    per_page = (49 * 0.1 + 10 * 0.5) / 59
    assert slower["estimated_remaining"] == pytest.approx(
        40 * per_page + TEXT * 100 * per_page + STORING * (0.5 + 100 * per_page * (1 + TEXT))
    )


def test_the_text_stage_uses_the_prior_until_a_chunk_is_done_then_the_chunk_rate() -> None:
    visual_end = 1.5 + 9 * 0.2  # 10 pages at 0.2 s: the visual stage took 1.8 s
    record = _step(_paged(10, 0.2, 10), visual_end, "embedding_text", chunk=0, total_chunks=40)
    prior = TEXT * 1.8
    assert record["estimated_remaining"] == pytest.approx(prior + STORING * (0.5 + 1.8 + prior))
    record = _step(record, visual_end + 0.5, "embedding_text", chunk=10, total_chunks=40)
    text_whole = 0.5 + 30 * 0.05
    assert record["estimated_remaining"] == pytest.approx(30 * 0.05 + STORING * (0.5 + 1.8 + text_whole))


def test_storing_counts_down_its_share_of_the_work_before_it() -> None:
    record = _step(_paged(10, 0.2, 10), 3.3, "embedding_text", chunk=0, total_chunks=2)
    record = _step(record, 3.5, "embedding_text", chunk=2, total_chunks=2)
    record = _step(record, 3.7, "storing")
    before = 0.5 + 1.8 + 0.4  # parsing, the visual stage, the text stage
    assert record["estimated_remaining"] == pytest.approx(STORING * before)
    assert status_json(record, T0 + 3.7 + 10.0)["estimated_remaining"] == 0.0  # overdue: never negative


def test_a_text_document_has_no_eta_before_its_first_chunk() -> None:
    record = Mutation("claim", T0 + 1.0, fields={"worker": "h:1", "seconds": 30.0})(
        new_record("t" * 64, "notes.md", {"format": "md"}, T0)
    )
    record = _step(record, 1.2, "embedding_text", chunk=0, total_chunks=20)
    assert record["estimated_remaining"] is None
    record = _step(record, 1.6, "embedding_text", chunk=4, total_chunks=20)
    assert record["estimated_remaining"] == pytest.approx(
        16 * 0.1 + STORING * (0.2 + 0.4 + 16 * 0.1)
    )  # parsing, text


def test_progress_given_without_units_falls_back_to_the_progress_rate() -> None:
    record = new_record("x" * 64, "custom.bin", {}, T0)
    record = _step(record, 1.0, "parsing")
    record = Mutation("update", T0 + 2.0, "embedding_visual", 0.3, {})(record)
    record = Mutation("update", T0 + 3.0, "embedding_visual", 0.5, {})(record)
    assert record["estimated_remaining"] is not None and record["estimated_remaining"] > 0


def test_the_callers_eta_still_wins() -> None:
    record = _step(
        _paged(10, 0.2, 5), 2.5, "embedding_visual", page=6, total_pages=10, estimated_remaining=42.0
    )
    assert record["estimated_remaining"] == 42.0
    assert status_json(record, T0 + 9.0)["estimated_remaining"] == 42.0


def test_stages_are_stored_as_five_numbers_and_keep_each_stage_duration() -> None:
    stages = Stages.start(10.0)
    assert stages.stored() == [10.0, 0, 0.0, 0.0, 0.0]
    stages.enter("parsing", 1, 10.5)
    stages.enter("embedding_visual", 0, 12.5)
    stages.enter("embedding_text", 0, 13.0)
    assert Stages(*stages.stored()) == stages == Stages(13.0, 0, 0.5, 2.0, 0.5)
    assert WorkEstimator.remaining(stages, "parsing", None, None, 13.0, 14.0) is None
