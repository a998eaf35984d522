"""The stored record of a document, and how each kind of change transforms it.

A record is the plain JSON-compatible dict that a store keeps per document (and
that the wrapped ``processing_status`` dict holds): the model's field names,
ISO-8601 strings for times, plus one private key, ``_track``, with the numbers
the manager needs to compute elapsed time and the ETA without parsing strings.

Every ``apply_*`` function is pure: it takes the stored record, returns a new
one, and raises before returning if the change is not allowed. Stores call them
inside their atomic section, so a rejected change leaves the stored record as
it was and a store never needs to know the rules.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from .errors import InvalidTransitionError
from .models import (
    DEFAULT_STAGE,
    FINISHED,
    LEGAL_PAIRS,
    ProcessingStatus,
    RateEstimator,
    Status,
    progress_for,
)

__all__ = [
    "Mutation",
    "Record",
    "apply_complete",
    "apply_fail",
    "apply_requeue",
    "apply_update",
    "copy_json",
    "finished_at",
    "is_finished",
    "new_record",
    "snapshot_json",
    "status_json",
    "to_model",
]

Record = dict[str, Any]

# _track layout (see RateEstimator): [started, sampled_at, progress_then, rate_ema, samples,
# eta_given], times as epoch seconds.
_STARTED, _ETA_GIVEN = 0, 5

_TERMINAL = frozenset(s.value for s in FINISHED)


# (a whole second as a float, the format of its timestamps): one tuple, so that
# another thread never sees a second with another second's format.
_second_cache: tuple[float, str] = (-1.0, "")


def iso(ts: float) -> str:
    """Epoch seconds as an ISO-8601 UTC string (``2025-10-07T19:00:00.123456+00:00``).

    Microseconds are truncated. Formatting a datetime is a large share of an
    update's cost, so each second's format is built once and reused, and the
    cache is checked by float arithmetic rather than ``int()``: for a cached
    second ``whole >= 0``, ``0 <= ts - whole < 1`` holds exactly when
    ``int(ts) == whole`` (the subtraction is exact in that range).
    """
    global _second_cache
    whole, template = _second_cache
    fraction = ts - whole
    if not 0.0 <= fraction < 1.0:
        whole = int(ts)
        fraction = ts - whole
        template = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S") + ".%06d+00:00"
        if ts >= 0:
            _second_cache = (float(whole), template)
    micros = fraction * 1e6
    # %d truncates a float like int() does; a fraction just below 1 can round up
    # to a whole million.
    return template % (micros if micros < 1e6 else 999_999)


def copy_json(value: Any) -> Any:
    """A deep copy of a JSON-compatible value (far cheaper than ``copy.deepcopy``)."""
    if isinstance(value, dict):
        return {k: copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy_json(v) for v in value]
    return value


def is_finished(record: Mapping[str, Any]) -> bool:
    """Whether the record's document has completed or failed."""
    return record["status"] in _TERMINAL


def finished_at(record: Mapping[str, Any]) -> float | None:
    """When the document finished, as epoch seconds, or ``None`` while active."""
    return changed_at(record) if is_finished(record) else None


def new_record(doc_id: str, filename: str, metadata: dict[str, Any], now: float) -> Record:
    """The record of a document that has just been queued."""
    stamp = iso(now)
    return {
        "doc_id": doc_id,
        "filename": filename,
        "status": Status.QUEUED.value,
        "progress": 0.0,
        "stage": DEFAULT_STAGE[Status.QUEUED],
        "page": None,
        "total_pages": None,
        "started_at": stamp,
        "updated_at": stamp,
        "completed_at": None,
        "elapsed_time": 0.0,
        "estimated_remaining": None,
        "metadata": metadata,
        "error": None,
        "_track": [now, now, 0.0, 0.0, 0, 0],
    }


def _refuse_if_final(record: Record, target: str, action: str = "") -> None:
    if record["status"] in _TERMINAL:
        reason = action or f"{record['status']} is final"
        raise InvalidTransitionError(record["doc_id"], record["status"], target, reason)


def _advance(new: Record, progress: float, now: float) -> list[float]:
    """Stamp a change at ``now`` that brings progress to at least ``progress``; returns the track."""
    track: list[float] = new["_track"]
    if progress > new["progress"]:
        new["progress"] = progress
        new["_track"] = track = RateEstimator.advance(track, progress, now)
    new["updated_at"] = iso(now)
    elapsed = now - track[_STARTED]
    # max(0.0, elapsed) without the call: the same value, NaN and -0.0 included.
    new["elapsed_time"] = elapsed if elapsed > 0.0 else 0.0
    return track


def _finish(new: Record, status: str, now: float) -> None:
    new["status"] = status
    new["completed_at"] = iso(now)
    new["estimated_remaining"] = None
    new["_track"] = [*new["_track"][:5], 0]


def apply_update(
    record: Record, target: str, progress: float | None, fields: dict[str, Any], now: float
) -> Record:
    """``update_status``: move to ``target`` (or stay) and merge validated ``fields``.

    ``fields`` has already been checked by the manager for names, types and
    ranges; what needs the stored state (the transition, ``page`` against the
    stored ``total_pages``) is checked here.
    """
    current = record["status"]
    if (current, target) not in LEGAL_PAIRS:
        _refuse_if_final(record, target)
        raise InvalidTransitionError(record["doc_id"], current, target)
    new = dict(record)
    if fields:
        _merge_fields(new, fields)
    if target != current and "stage" not in fields:
        new["stage"] = DEFAULT_STAGE[target]  # type: ignore[index]  # str keys find StrEnum members
    if target in _TERMINAL:
        _finish(new, target, now)
        _advance(new, 1.0 if target == "completed" else new["progress"], now)
        return new
    new["status"] = target
    _progressed(new, target, progress, fields, now)
    return new


def _progressed(new: Record, status: str, progress: float | None, fields: dict[str, Any], now: float) -> None:
    """An active document's change: progress (the formula's unless given), times and the ETA."""
    if progress is None:
        if status == "embedding_visual":
            progress = progress_for(status, new["page"], new["total_pages"])
        else:
            meta = new["metadata"]
            progress = progress_for(status, meta.get("chunk"), meta.get("total_chunks"))
    track = _advance(new, progress, now)
    if "estimated_remaining" in fields:
        new["estimated_remaining"] = fields["estimated_remaining"]
        given = 1
    else:
        new["estimated_remaining"] = RateEstimator.remaining(track, new["progress"], now)
        given = 0
    if track[_ETA_GIVEN] != given:
        new["_track"] = [*track[:5], given]


# Fields that update_status copies into the record as they are.
_PLAIN_FIELDS = frozenset({"stage", "page", "total_pages", "error"})


def _merge_fields(new: Record, fields: dict[str, Any]) -> None:
    meta = fields.get("metadata")
    if meta or "chunk" in fields or "total_chunks" in fields:
        _merge_metadata(new, meta, fields)
    for name, value in fields.items():
        if name in _PLAIN_FIELDS:
            new[name] = value
    _check_counts(new, "page", new["page"], new["total_pages"])


def _merge_metadata(new: Record, meta: dict[str, Any] | None, fields: dict[str, Any]) -> None:
    merged = {**new["metadata"], **(meta or {})}
    for name in ("chunk", "total_chunks"):
        if name in fields:
            merged[name] = fields[name]
    new["metadata"] = merged
    _check_counts(new, "chunk", merged.get("chunk"), merged.get("total_chunks"))


def _check_counts(new: Record, what: str, done: Any, total: Any) -> None:
    if isinstance(done, int) and isinstance(total, int) and done > total:
        raise ValueError(f"{what} {done} is beyond total_{what}s {total} for document {new['doc_id']!r}")


def apply_complete(record: Record, extra: dict[str, Any], now: float) -> Record:
    """``mark_completed``: allowed from every non-final status; ``extra`` joins metadata."""
    _refuse_if_final(record, Status.COMPLETED.value)
    new = dict(record)
    if extra:
        new["metadata"] = {**new["metadata"], **extra}
    new["stage"] = DEFAULT_STAGE[Status.COMPLETED]
    _finish(new, "completed", now)
    _advance(new, 1.0, now)
    return new


def apply_fail(record: Record, error: str, now: float) -> Record:
    """``mark_failed``: allowed from every non-final status; progress stays where it was."""
    _refuse_if_final(record, Status.FAILED.value)
    new = dict(record)
    new["error"] = error
    new["stage"] = DEFAULT_STAGE[Status.FAILED]
    _finish(new, "failed", now)
    _advance(new, new["progress"], now)
    return new


def apply_requeue(record: Record, now: float) -> Record:
    """``requeue``: a new attempt of a failed document, from the start."""
    if record["status"] != Status.FAILED.value:
        raise InvalidTransitionError(
            record["doc_id"], record["status"], Status.QUEUED.value, "only a failed document can be requeued"
        )
    fresh = new_record(record["doc_id"], record["filename"], dict(record["metadata"]), now)
    fresh["metadata"]["attempt"] = int(record["metadata"].get("attempt", 1)) + 1
    return fresh


# Not frozen: a frozen dataclass costs a microsecond more to build, on the hot path.
@dataclass(slots=True)
class Mutation:
    """A change to one record, as data: the manager builds one, the store applies it.

    Calling it applies the rules in Python (what the memory and SQLite stores
    do inside their atomic section). Its fields are plain data so that a store
    that checks the rules on a server (Redis, in a Lua script) can send them
    there instead; such a store must give the same result as ``__call__``, and
    the conformance suite checks that it does.
    """

    kind: Literal["update", "complete", "fail", "requeue"]
    now: float
    #: The status to move to, as its plain string value.
    target: str | None = None
    progress: float | None = None
    fields: dict[str, Any] = field(default_factory=dict)

    def __call__(self, record: Record) -> Record:
        if self.kind == "update":
            if self.target is None:
                raise TypeError("an update Mutation needs a target status")
            return apply_update(record, self.target, self.progress, self.fields, self.now)
        if self.kind == "complete":
            return apply_complete(record, self.fields, self.now)
        if self.kind == "fail":
            return apply_fail(record, self.fields["error"], self.now)
        return apply_requeue(record, self.now)


def _parse_time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _live(record: Mapping[str, Any], now: float) -> tuple[float, float | None]:
    """Elapsed seconds and the ETA as of ``now``: live while active, frozen once finished."""
    if record["status"] in _TERMINAL:
        return float(record["elapsed_time"]), None
    track = record["_track"]
    elapsed = max(0.0, now - track[_STARTED])
    if track[_ETA_GIVEN]:
        return elapsed, record["estimated_remaining"]
    return elapsed, RateEstimator.remaining(track, float(record["progress"]), now)


def to_model(record: Mapping[str, Any], now: float) -> ProcessingStatus:
    """A snapshot of ``record`` as of ``now``: live elapsed time and ETA while active."""
    elapsed, eta = _live(record, now)
    return ProcessingStatus.model_construct(
        doc_id=record["doc_id"],
        filename=record["filename"],
        status=Status(record["status"]),
        progress=float(record["progress"]),
        stage=record["stage"],
        page=record["page"],
        total_pages=record["total_pages"],
        started_at=_parse_time(record["started_at"]),
        updated_at=_parse_time(record["updated_at"]),
        completed_at=_parse_time(record["completed_at"]),
        elapsed_time=elapsed,
        estimated_remaining=eta,
        metadata=copy_json(record["metadata"]),
        error=record["error"],
    )


def snapshot_json(status: ProcessingStatus) -> dict[str, Any]:
    """A snapshot as the HTTP API and the event stream report it: the model's JSON plus
    ``timestamp`` (= ``updated_at``)."""
    body = status.model_dump(mode="json")
    body["timestamp"] = body["updated_at"]
    return body


def changed_at(record: Mapping[str, Any]) -> float:
    """When the record last changed, as epoch seconds."""
    return float(record["_track"][_STARTED] + record["elapsed_time"])


def _json_time(value: str | None) -> str | None:
    # A stored time (always UTC, "+00:00") written the way pydantic writes a UTC
    # datetime: "Z", and no fraction when it is zero.
    if value is None:
        return None
    base = value[:-6] if value.endswith("+00:00") else value
    return (base[:-7] if base.endswith(".000000") else base) + "Z"


def status_json(record: Mapping[str, Any], now: float | None = None) -> dict[str, Any]:
    """``record``'s status JSON as of ``now``; by default as of its last change.

    The same body as ``snapshot_json(to_model(record, now))`` (a test holds
    them equal), built straight from the record: every change with a
    subscriber builds one, and the model round trip was most of its cost.
    Events use the default ``now``, so an event says what was true when the
    change happened, and a stream resumed later replays the same bodies.
    """
    elapsed, eta = _live(record, changed_at(record) if now is None else now)
    updated = _json_time(record["updated_at"])
    return {
        "doc_id": record["doc_id"],
        "filename": record["filename"],
        "status": record["status"],
        "progress": float(record["progress"]),
        "stage": record["stage"],
        "page": record["page"],
        "total_pages": record["total_pages"],
        "started_at": _json_time(record["started_at"]),
        "updated_at": updated,
        "completed_at": _json_time(record["completed_at"]),
        "elapsed_time": elapsed,
        "estimated_remaining": eta,
        "metadata": copy_json(record["metadata"]),
        "error": record["error"],
        "timestamp": updated,
    }


def is_valid_record(record: Any) -> bool:
    """A cheap shape check for records read from outside (a wrapped dict, a store)."""
    return (
        isinstance(record, dict)
        and isinstance(record.get("doc_id"), str)
        and record.get("status") in Status.__members__.values()
        and isinstance(record.get("_track"), list)
        and math.isfinite(float(record.get("progress", math.nan)))
    )
