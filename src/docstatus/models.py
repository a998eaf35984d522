"""The status model: its fields and who sets each, the states, the lifecycle table,
the progress formula and the ETA.

Everything here is pure: no locks, no storage, no clocks read. The manager and
the stores build on these definitions; users import ``Status``,
``ProcessingStatus`` and ``progress_for`` from :mod:`docstatus`.

A status field is declared once, in :class:`ProcessingStatus`, with a
:class:`Role` that says who sets it and how a caller's value is checked. What
``update_status`` accepts, what the manager owns, the stored record's keys and
the status JSON are all derived from those declarations when this module is
imported (see :data:`FIELD_ROLES`).
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "ARGUMENT",
    "DEFAULT_STAGE",
    "FIELD_ROLES",
    "FINISHED",
    "KEYWORD_CHECKS",
    "LEGAL_PAIRS",
    "MANAGED",
    "MANAGED_FIELDS",
    "TRANSITIONS",
    "UPDATE_PARAMETERS",
    "Check",
    "ProcessingStatus",
    "RateEstimator",
    "Role",
    "Stages",
    "Status",
    "Track",
    "WorkEstimator",
    "can_transition",
    "check_count",
    "check_metadata",
    "check_seconds",
    "check_text",
    "keyword",
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
# (600*2 + 300*2) / 2000 is exactly the double nearest 0.9.
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


# -- checks: what a caller may give for a field ----------------------------------------

#: A check of a caller's value for the named field: returns the value to store
#: (a private copy where the value is mutable), or raises ``TypeError`` or
#: ``ValueError`` with a message that says why.
Check = Callable[[str, Any], Any]

MAX_FILENAME = 1024
MAX_STAGE = 200
MAX_ERROR = 10_000
MAX_METADATA_BYTES = 64 * 1024
#: Deepest nesting of dicts/lists in metadata: records are copied and encoded recursively,
#: so deeper metadata would be stored and then make every read of it fail.
MAX_METADATA_DEPTH = 64


def check_text(name: str, value: object, limit: int, *, empty_ok: bool = True) -> str:
    """``value`` if it is a string of at most ``limit`` characters (and not empty, unless ``empty_ok``)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, not {type(value).__name__}")
    if not value and not empty_ok:
        raise ValueError(f"{name} must not be empty")
    if len(value) > limit:
        raise ValueError(f"{name} is {len(value)} characters long; the limit is {limit}")
    return value


def check_count(name: str, value: object) -> int | None:
    """``value`` if it is ``None`` or an integer >= 0 (a bool is not a count)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must not be negative, got {value}")
    return value


def check_seconds(name: str, value: object) -> float | None:
    """``value`` as a float if it is ``None`` or a finite number of seconds >= 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return float(value)


def check_metadata(name: str, value: object) -> dict[str, Any]:
    """A private JSON copy of the dict ``value`` (snapshots in), or ``ValueError`` saying why not.

    The copy is at most :data:`MAX_METADATA_BYTES` as JSON and nests at most
    :data:`MAX_METADATA_DEPTH` levels.
    """
    if not isinstance(value, dict):
        raise TypeError(f"{name} must be a dict, not {type(value).__name__}")
    try:
        encoded = json.dumps(value, allow_nan=False)
    except RecursionError:
        raise _too_deep(name) from None
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be JSON-serializable: {exc}") from None
    if len(encoded) > MAX_METADATA_BYTES:
        raise ValueError(f"{name} is {len(encoded)} bytes as JSON; the limit is {MAX_METADATA_BYTES}")
    copy: dict[str, Any] = json.loads(encoded)
    # Counting brackets is cheap and bounds the depth: only then is the walk needed.
    if encoded.count("{") + encoded.count("[") > MAX_METADATA_DEPTH and _depth(copy) > MAX_METADATA_DEPTH:
        raise _too_deep(name)
    return copy


def _too_deep(name: str) -> ValueError:
    return ValueError(f"{name} is nested too deeply; the limit is {MAX_METADATA_DEPTH} levels")


def _depth(value: Any) -> int:
    """How deeply dicts and lists nest in ``value`` (a loop: no recursion limit to hit)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in item)
    return deepest


# -- roles: who sets each field ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Role:
    """Who sets a field of :class:`ProcessingStatus`, declared beside the field.

    Every field has exactly one: :data:`MANAGED` (only the StatusManager sets
    it; ``update_status`` refuses it), :data:`ARGUMENT` (a parameter of
    ``update_status`` of its own) or :func:`keyword` (an ``update_status``
    keyword, validated by ``check``).
    """

    set_by: Literal["manager", "argument", "keyword"]
    #: Validates a caller's value of a keyword field.
    check: Check | None = None
    #: More ``update_status`` keywords that are kept inside this (dict) field, with their checks.
    inner: tuple[tuple[str, Check], ...] = ()


MANAGED = Role("manager")
ARGUMENT = Role("argument")


def keyword(check: Check, **inner: Check) -> Role:
    """The role of a field that ``update_status`` accepts as a keyword, checked by ``check``.

    ``inner`` names more keywords whose values are stored inside this field
    (``metadata`` keeps ``chunk`` and ``total_chunks``), each with its check.
    """
    return Role("keyword", check, tuple(inner.items()))


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
    "processing_started_at": "2025-10-07T19:00:03Z",
    "wait_time": 3.0,
    "run_time": 87.0,
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

    doc_id: Annotated[str, MANAGED] = Field(..., description="SHA-256 document hash")
    filename: Annotated[str, MANAGED] = Field(..., description="Original filename")
    status: Annotated[Status, ARGUMENT] = Field(..., description="Current status")
    progress: Annotated[float, ARGUMENT] = Field(..., ge=0.0, le=1.0, description="Progress 0.0-1.0")
    stage: Annotated[str, keyword(partial(check_text, limit=MAX_STAGE))] = Field(
        ..., description="Human-readable current stage"
    )
    page: Annotated[int | None, keyword(check_count)] = Field(None, description="Current page number")
    total_pages: Annotated[int | None, keyword(check_count)] = Field(None, description="Total pages")
    started_at: Annotated[datetime, MANAGED] = Field(
        ..., description="Processing start time (UTC): when this attempt was queued"
    )
    updated_at: Annotated[datetime, MANAGED] = Field(..., description="Last update time (UTC)")
    completed_at: Annotated[datetime | None, MANAGED] = Field(None, description="Completion time (UTC)")
    elapsed_time: Annotated[float, MANAGED] = Field(
        ..., description="Seconds since start (started_at): wait_time + run_time"
    )
    processing_started_at: Annotated[datetime | None, MANAGED] = Field(
        None,
        description="When processing started: the claim, queued -> parsing (UTC); null while queued "
        "and for a document that failed without being processed",
    )
    wait_time: Annotated[float | None, MANAGED] = Field(
        None, description="Seconds queued before processing started (live while queued)"
    )
    run_time: Annotated[float | None, MANAGED] = Field(
        None, description="Seconds of processing: since processing_started_at (null until it starts)"
    )
    estimated_remaining: Annotated[float | None, keyword(check_seconds)] = Field(
        None, description="Estimated seconds remaining"
    )
    metadata: Annotated[
        dict[str, Any], keyword(check_metadata, chunk=check_count, total_chunks=check_count)
    ] = Field(default_factory=dict, description="Document metadata (format, size, etc.)")
    error: Annotated[str | None, keyword(partial(check_text, limit=MAX_ERROR))] = Field(
        None, description="Error message if failed"
    )

    @field_validator("started_at", "updated_at", "completed_at", "processing_started_at")
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


def _roles() -> dict[str, Role]:
    roles: dict[str, Role] = {}
    for name, info in ProcessingStatus.model_fields.items():
        declared = [m for m in info.metadata if isinstance(m, Role)]
        if len(declared) != 1:
            raise TypeError(f"ProcessingStatus.{name} must declare exactly one Role, not {len(declared)}")
        roles[name] = declared[0]
    return roles


#: Every field of the model, in order, with its role.
FIELD_ROLES: dict[str, Role] = _roles()

#: The fields only the StatusManager sets.
MANAGED_FIELDS: frozenset[str] = frozenset(n for n, r in FIELD_ROLES.items() if r.set_by == "manager")

#: ``update_status``'s keywords and their checks, in the model's order; keywords
#: kept inside a field come right after it.
KEYWORD_CHECKS: dict[str, Check] = {
    name: check
    for field, role in FIELD_ROLES.items()
    if role.set_by == "keyword" and role.check is not None
    for name, check in ((field, role.check), *role.inner)
}

#: What ``update_status`` accepts, in order: its own parameters, then its keywords.
UPDATE_PARAMETERS: tuple[str, ...] = (
    *(n for n, r in FIELD_ROLES.items() if r.set_by == "argument"),
    *KEYWORD_CHECKS,
)


# -- the ETA -------------------------------------------------------------------------------


@dataclass(slots=True)
class Track:
    """What the ETA estimate carries from one change of a document to the next.

    Every record keeps one, so that any process can continue the estimate. A
    record stores it as the list of its six fields, in this order and as
    plain numbers: ``Track(*stored)`` reads one and :meth:`stored` writes one,
    and those are the only conversions. (The fields are laid out as stored, the
    flag included, because reading the track is on every update's path and
    this is its cheapest form: ``Track(*stored)`` is a single call.) Not
    frozen: a track read from a record is a private copy that one change
    updates in place.
    """

    #: When the attempt started (epoch seconds).
    started: float
    #: When progress was last sampled (epoch seconds), and its value then.
    sampled_at: float
    progress_then: float
    #: The smoothed rate (progress per second, before bias correction), and how many samples it holds.
    rate: float
    samples: int
    #: 1 when the caller gave ``estimated_remaining`` itself, 0 when it is left to the estimate.
    eta_given: int

    @classmethod
    def start(cls, now: float) -> Track:
        """The track of an attempt that starts at ``now``: no sample yet."""
        return cls(now, now, 0.0, 0.0, 0, 0)

    def stored(self) -> list[float]:
        """The list a record stores: ``[started, sampled_at, progress_then, rate, samples, eta_given]``."""
        return [self.started, self.sampled_at, self.progress_then, self.rate, self.samples, self.eta_given]


class RateEstimator:
    """Smoothed progress rate, as tqdm smooths its iteration rate.

    An exponential moving average of the observed rate (progress per second)
    with bias correction, so early samples are not dragged towards zero by the
    average's initial value. Its state is a record's :class:`Track`.
    """

    SMOOTHING = 0.3
    #: Progress that arrives faster than this is pooled into one sample, as
    #: tqdm's ``mininterval``: a burst of microsecond-apart steps says nothing
    #: about the rate and would make the first estimates absurdly small.
    MIN_INTERVAL = 0.05

    @staticmethod
    def advance(track: Track, progress: float, now: float) -> bool:
        """Take "progress reached ``progress`` at ``now``" into ``track``; whether it was a sample.

        No sample (``track`` unchanged) while progress has not grown or less
        than :attr:`MIN_INTERVAL` has passed since the last one: the next
        sample then measures from that last sample point.
        """
        dt = now - track.sampled_at
        gained = progress - track.progress_then
        if gained <= 0 or dt < RateEstimator.MIN_INTERVAL:
            return False
        alpha = RateEstimator.SMOOTHING
        track.rate = alpha * (gained / dt) + (1 - alpha) * track.rate
        track.sampled_at = now
        track.progress_then = progress
        track.samples += 1
        return True

    @staticmethod
    def remaining(track: Track, progress: float, now: float) -> float | None:
        """Seconds left at ``now``, or ``None`` while there is no signal."""
        samples = track.samples
        if samples < 1:
            return None
        rate = track.rate / (1.0 - _DECAY**samples)
        if not 0.0 < rate < math.inf:  # also false for NaN
            return None
        # max(0.0, x) spelled out: this runs on every update and the calls cost more
        # than the arithmetic. The values (and their order of operations) are unchanged.
        waited = now - track.sampled_at
        left = (1.0 - progress) / rate - (waited if waited > 0.0 else 0.0)
        return left if left > 0.0 else 0.0


# The bias correction's base, computed once: SMOOTHING is a constant.
_DECAY = 1 - RateEstimator.SMOOTHING


@dataclass(slots=True)
class Stages:
    """When the document entered its current status, and how long the earlier stages took.

    What the work-based ETA (:class:`WorkEstimator`) carries from one change
    to the next; a record stores it as the list of its five fields, in order
    (``Stages(*stored)`` reads one, :meth:`stored` writes one). Durations of
    stages not (yet) passed through are 0.
    """

    #: When the current status was entered (epoch seconds).
    entered: float
    #: The units (pages in the visual stage, chunks in the text stage) already done then.
    units: int
    #: Seconds spent parsing, in the visual stage and in the text stage.
    parsing: float
    visual: float
    text: float

    @classmethod
    def start(cls, now: float) -> Stages:
        """Processing starts at ``now`` (parsing): no stage passed yet."""
        return cls(now, 0, 0.0, 0.0, 0.0)

    def stored(self) -> list[float]:
        """The list a record stores: ``[entered, units, parsing, visual, text]``."""
        return [self.entered, self.units, self.parsing, self.visual, self.text]

    def enter(self, left: str, units: int, now: float) -> None:
        """The document leaves status ``left`` for the next one at ``now``, ``units`` done in it."""
        spent = now - self.entered
        spent = spent if spent > 0.0 else 0.0
        if left == "parsing":
            self.parsing += spent
        elif left == "embedding_visual":
            self.visual += spent
        elif left == "embedding_text":
            self.text += spent
        self.entered = now
        self.units = units


class WorkEstimator:
    """Seconds left from the work actually left, rather than from the progress bar's fixed weights.

    The stage in progress is estimated from its own observed rate: pages
    left at the seconds per page seen so far, chunks left at the seconds per
    chunk. Stages not started yet are estimated from the stages already
    observed: the text stage (chunking and embedding) as
    :attr:`TEXT_PER_VISUAL` of the visual stage, storing as
    :attr:`STORING_SHARE` of all the work before it; these priors were
    measured on the reference pipeline (``benchmarks/bench_eta.py``).
    ``None`` while nothing has been observed that the estimate could use.
    """

    #: The text stage's duration as a share of the visual stage's (a document with pages).
    TEXT_PER_VISUAL = 0.05
    #: Storing's duration as a share of the time spent before it.
    STORING_SHARE = 0.01

    @staticmethod
    def remaining(
        stages: Stages, status: str, done: int | None, total: int | None, changed_at: float, now: float
    ) -> float | None:
        """Seconds left at ``now`` for a document in ``status`` (last changed at ``changed_at``).

        ``done`` of ``total`` are the current stage's units (pages or chunks;
        ``None`` for a stage without units).
        """
        if status == "embedding_visual":
            left = WorkEstimator._visual(stages, done, total, changed_at)
        elif status == "embedding_text":
            left = WorkEstimator._text(stages, done, total, changed_at)
        elif status == "storing":
            left = WorkEstimator._storing(stages, stages.parsing + stages.visual + stages.text, changed_at)
        else:
            return None
        if left is None:
            return None
        left -= now - changed_at
        return left if left > 0.0 else 0.0

    @staticmethod
    def _per_unit(stages: Stages, done: int | None, changed_at: float) -> float | None:
        if done is None or done <= stages.units:
            return None
        return (changed_at - stages.entered) / (done - stages.units)

    @staticmethod
    def _visual(stages: Stages, done: int | None, total: int | None, changed_at: float) -> float | None:
        per_page = WorkEstimator._per_unit(stages, done, changed_at)
        if per_page is None or total is None or done is None:
            return None
        whole = total * per_page
        text = WorkEstimator.TEXT_PER_VISUAL * whole
        storing = WorkEstimator.STORING_SHARE * (stages.parsing + whole + text)
        return (total - done) * per_page + text + storing

    @staticmethod
    def _text(stages: Stages, done: int | None, total: int | None, changed_at: float) -> float | None:
        spent = changed_at - stages.entered
        per_chunk = WorkEstimator._per_unit(stages, done, changed_at)
        if per_chunk is not None and total is not None and done is not None:
            whole = spent + (total - done) * per_chunk
        elif stages.visual > 0.0:
            whole = WorkEstimator.TEXT_PER_VISUAL * stages.visual  # no chunk done yet: the prior
        else:
            return None
        storing = WorkEstimator.STORING_SHARE * (stages.parsing + stages.visual + whole)
        left = whole - spent
        return (left if left > 0.0 else 0.0) + storing

    @staticmethod
    def _storing(stages: Stages, before: float, changed_at: float) -> float | None:
        if before <= 0.0:
            return None
        left = WorkEstimator.STORING_SHARE * before - (changed_at - stages.entered)
        return left if left > 0.0 else 0.0
