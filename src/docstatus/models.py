"""The status model: states, the lifecycle table, the progress formula and the ETA.

Everything here is pure: no locks, no storage, no clocks read. The manager and
the stores build on these definitions; users import ``Status``,
``ProcessingStatus`` and ``progress_for`` from :mod:`docstatus`.
"""

from __future__ import annotations

import enum
import math
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "ACTIVE",
    "DEFAULT_STAGE",
    "FINISHED",
    "TRANSITIONS",
    "ProcessingStatus",
    "RateEstimator",
    "Status",
    "LEGAL_PAIRS",
    "can_transition",
    "progress_for",
]


class Status(enum.StrEnum):
    """Where a document is in the pipeline; members are plain strings too."""

    QUEUED = "queued"
    PARSING = "parsing"
    EMBEDDING_VISUAL = "embedding_visual"
    EMBEDDING_TEXT = "embedding_text"
    STORING = "storing"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def is_finished(self) -> bool:
        """``completed`` and ``failed`` are final."""
        return self in FINISHED


FINISHED: frozenset[Status] = frozenset({Status.COMPLETED, Status.FAILED})
ACTIVE: frozenset[Status] = frozenset(Status) - FINISHED

# The contract's valid transitions plus ``queued -> failed`` (DESIGN §2): a
# document can fail before a worker ever parses it (unreadable upload).
# Staying in the same non-final status is a progress update and always allowed.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.QUEUED: frozenset({Status.PARSING, Status.FAILED}),
    Status.PARSING: frozenset({Status.EMBEDDING_VISUAL, Status.EMBEDDING_TEXT, Status.FAILED}),
    Status.EMBEDDING_VISUAL: frozenset({Status.EMBEDDING_TEXT, Status.FAILED}),
    Status.EMBEDDING_TEXT: frozenset({Status.STORING, Status.FAILED}),
    Status.STORING: frozenset({Status.COMPLETED, Status.FAILED}),
    Status.COMPLETED: frozenset(),
    Status.FAILED: frozenset(),
}

# The human-readable stage a status gets when the caller names none.
DEFAULT_STAGE: dict[Status, str] = {
    Status.QUEUED: "queued",
    Status.PARSING: "parsing",
    Status.EMBEDDING_VISUAL: "visual_embeddings",
    Status.EMBEDDING_TEXT: "text_embeddings",
    Status.STORING: "storing",
    Status.COMPLETED: "completed",
    Status.FAILED: "failed",
}


# Every allowed (current, target) pair as plain strings: the hot path checks a
# transition with one set lookup instead of two enum conversions.
LEGAL_PAIRS: frozenset[tuple[str, str]] = frozenset(
    {(a.value, b.value) for a, targets in TRANSITIONS.items() for b in targets}
    | {(s.value, s.value) for s in Status if s not in FINISHED}
)


def can_transition(current: str, target: str) -> bool:
    """Whether ``update_status`` may move a document from ``current`` to ``target``."""
    return (current, target) in LEGAL_PAIRS


# (start, width) of each status's share of the progress bar (the contract's table).
# In thousandths, so that progress is computed in exact integer arithmetic with
# one final division: 0.6 + 2/2 * 0.3 in floats is 0.8999999999999999, while
# (600*2 + 300*2) / 2000 is exactly the double nearest 0.9. The Redis store's
# Lua does the same operations and so gets the same bits.
_RANGES: dict[str, tuple[int, int]] = {
    "queued": (0, 0),
    "parsing": (100, 0),
    "embedding_visual": (100, 500),
    "embedding_text": (600, 300),
    "storing": (950, 0),
    "completed": (1000, 0),
}


def progress_for(status: str, done: int | None = None, total: int | None = None) -> float:
    """The contract's progress for ``status`` after ``done`` of ``total`` units.

    Units are pages for ``embedding_visual`` and chunks for ``embedding_text``;
    other statuses have a fixed value. A missing or zero ``total`` gives the
    start of the stage's range and ``done`` is clipped to ``[0, total]``.
    ``failed`` has no formula (a failed document keeps its last progress), so
    it raises ``ValueError``, as does an unknown status.
    """
    span = _RANGES.get(status) if isinstance(status, str) else None
    if span is None:
        raise ValueError(f"no progress formula for status {status!r}")
    start, width = span
    if not width or not total or total <= 0:
        return start / 1000
    # min(max(done or 0, 0), total) without the two calls (this runs on every update).
    done = done or 0
    if done < 0:
        done = 0
    elif total < done:
        done = total
    return (start * total + width * done) / (1000 * total)


_EXAMPLE: dict[str, Any] = {
    "doc_id": "abc123...",
    "filename": "report.pdf",
    "status": "embedding_visual",
    "progress": 0.65,
    "stage": "visual_embeddings",
    "page": 13,
    "total_pages": 20,
    "started_at": "2025-10-07T19:00:00Z",
    "updated_at": "2025-10-07T19:01:30Z",
    "completed_at": None,
    "elapsed_time": 90.0,
    "estimated_remaining": 48.5,
    "metadata": {"format": "pdf", "format_type": "visual", "file_size": 2458624},
    "error": None,
}


class ProcessingStatus(BaseModel):
    """A snapshot of one document's processing status.

    Snapshots are copies: changing one never changes what is stored. Times are
    timezone-aware UTC; a naive datetime given to the model is read as UTC.
    """

    model_config = ConfigDict(json_schema_extra={"example": _EXAMPLE})

    doc_id: str = Field(..., description="SHA-256 document hash")
    filename: str = Field(..., description="Original filename")
    status: Status = Field(..., description="Current status")
    progress: float = Field(..., ge=0.0, le=1.0, description="Progress 0.0-1.0")
    stage: str = Field(..., description="Human-readable current stage")
    page: int | None = Field(None, description="Current page number")
    total_pages: int | None = Field(None, description="Total pages")
    started_at: datetime = Field(..., description="Processing start time (UTC)")
    updated_at: datetime = Field(..., description="Last update time (UTC)")
    completed_at: datetime | None = Field(None, description="Completion time (UTC)")
    elapsed_time: float = Field(..., description="Seconds since start")
    estimated_remaining: float | None = Field(None, description="Estimated seconds remaining")
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="Document metadata (format, size, etc.)"
    )
    error: str | None = Field(None, description="Error message if failed")

    @field_validator("started_at", "updated_at", "completed_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    @property
    def is_finished(self) -> bool:
        """Whether the document has completed or failed."""
        return self.status in FINISHED


class RateEstimator:
    """Smoothed progress rate, as tqdm smooths its iteration rate.

    An exponential moving average of the observed rate (progress per second)
    with bias correction, so early samples are not dragged towards zero by the
    average's initial value. Its state lives in a record's *track*, a list of
    six numbers that any process can continue:
    ``[started, at, progress_at, ema, samples, eta_given]`` — when the attempt
    started, when progress was last sampled and its value then, the average,
    how many samples it holds, and whether the caller gave the ETA itself.
    """

    SMOOTHING = 0.3
    #: Progress that arrives faster than this is pooled into one sample, as
    #: tqdm's ``mininterval``: a burst of microsecond-apart steps says nothing
    #: about the rate and would make the first estimates absurdly small.
    MIN_INTERVAL = 0.05

    @staticmethod
    def advance(track: list[float], progress: float, now: float) -> list[float]:
        """The track after progress reached ``progress`` at ``now`` (``track`` itself if no sample)."""
        dt = now - track[1]
        gained = progress - track[2]
        if gained <= 0 or dt < RateEstimator.MIN_INTERVAL:
            # No signal yet: keep measuring from the last sample point.
            return track
        alpha = RateEstimator.SMOOTHING
        ema = alpha * (gained / dt) + (1 - alpha) * track[3]
        return [track[0], now, progress, ema, track[4] + 1, track[5]]

    @staticmethod
    def remaining(track: list[float], progress: float, now: float) -> float | None:
        """Seconds left at ``now``, or ``None`` while there is no signal."""
        samples = track[4]
        if samples < 1:
            return None
        rate = track[3] / (1.0 - _DECAY**samples)
        if not 0.0 < rate < math.inf:  # also false for NaN
            return None
        # max(0.0, x) spelled out: this runs on every update and the calls cost more
        # than the arithmetic. The values (and their order of operations) are unchanged.
        waited = now - track[1]
        left = (1.0 - progress) / rate - (waited if waited > 0.0 else 0.0)
        return left if left > 0.0 else 0.0


# The bias correction's base, computed once (SMOOTHING is a constant: the Redis
# script is built with it too) as ``remaining`` computed it on every call.
_DECAY = 1 - RateEstimator.SMOOTHING
