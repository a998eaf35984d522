"""The stored record of a document, and how each kind of change transforms it.

A record is the plain JSON-compatible dict that a store keeps per document (and
that the wrapped ``processing_status`` dict holds): the model's field names (in
the model's order, derived from :class:`~docstatus.models.ProcessingStatus`),
ISO-8601 strings for times, plus private keys: ``_track``, the
:class:`~docstatus.models.Track` the manager needs to compute elapsed time and
the ETA without parsing strings, stored as a list of six numbers; and
``_lease``, absent until a worker first claims the document, then
``{"epoch": int, "worker": str | None, "seconds": float}`` (``worker`` None:
not held; the epoch only grows); and ``_stages``, absent until processing
starts, then the :class:`~docstatus.models.Stages` of the work-based ETA as a
list of five numbers. None is ever part of the status JSON.

Every ``apply_*`` function is pure: it takes the stored record, returns a new
one, and raises before returning if the change is not allowed. Stores call them
inside their atomic section, so a rejected change leaves the stored record as
it was and a store never needs to know the rules.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic_core import PydanticUndefined

from .errors import InvalidTransitionError, LeaseLostError
from .models import (
    DEFAULT_STAGE,
    FIELD_ROLES,
    FINISHED,
    LEGAL_PAIRS,
    MAX_ERROR,
    ProcessingStatus,
    RateEstimator,
    Stages,
    Status,
    Track,
    WorkEstimator,
    progress_for,
)

__all__ = [
    "CANCELLED",
    "PROGRESS_KEYWORDS",
    "Chain",
    "Mutation",
    "Record",
    "apply_cancel",
    "apply_claim",
    "apply_complete",
    "apply_fail",
    "apply_lease_lost",
    "apply_requeue",
    "apply_update",
    "check_lease",
    "check_progress",
    "copy_json",
    "estimate_remaining",
    "finished_at",
    "is_finished",
    "is_progress",
    "is_progress_report",
    "lease_of",
    "new_record",
    "status_json",
    "tally_of",
    "timeline",
    "to_model",
]

Record = dict[str, Any]

_TERMINAL = frozenset(s.value for s in FINISHED)


def _is_time(annotation: Any) -> bool:
    return annotation is datetime or datetime in typing.get_args(annotation)


def _default(name: str) -> Any:
    # What a new record holds for a field that queuing does not set: the model's default.
    value = ProcessingStatus.model_fields[name].get_default(call_default_factory=True)
    return None if value is PydanticUndefined else value


# The model's fields, in order: a record's keys (with _track last) and its status JSON's.
_FIELDS: tuple[str, ...] = tuple(ProcessingStatus.model_fields)
_TIME_FIELDS: tuple[str, ...] = tuple(
    name for name, info in ProcessingStatus.model_fields.items() if _is_time(info.annotation)
)
_BLANK: dict[str, Any] = {name: _default(name) for name in _FIELDS}
_FIELD_SET = frozenset(_FIELDS)
_RECORD_KEYS = frozenset({*_FIELDS, "_track"})
# What to_model copies and fills in: a snapshot with every field set (to None).
_SNAPSHOT_TEMPLATE = ProcessingStatus.model_construct(**dict.fromkeys(_FIELDS))
_STATUS: dict[str, Status] = {s.value: s for s in Status}
# Keywords that update_status stores as given; metadata is merged instead.
# (estimated_remaining is set again by the rules of every change: the caller's
# value while active, None once the document has ended.)
_KEYWORD_FIELDS = frozenset(name for name, role in FIELD_ROLES.items() if role.set_by == "keyword")
_PLAIN_FIELDS = _KEYWORD_FIELDS - {"metadata"}
# Keywords that update_status keeps inside metadata (chunk, total_chunks), in order.
_METADATA_KEYWORDS: tuple[str, ...] = tuple(name for name, _ in FIELD_ROLES["metadata"].inner)
_METADATA_KEYWORD_SET = frozenset(_METADATA_KEYWORDS)


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
    """The record of a document that has just been queued at ``now``.

    Its keys are the model's fields in the model's order, then ``_track``;
    a field that queuing does not set holds the model's default.
    """
    stamp = iso(now)
    return {
        **_BLANK,
        "doc_id": doc_id,
        "filename": filename,
        "status": Status.QUEUED.value,
        "progress": 0.0,
        "stage": DEFAULT_STAGE[Status.QUEUED],
        "started_at": stamp,
        "updated_at": stamp,
        "elapsed_time": 0.0,
        "wait_time": 0.0,
        "metadata": metadata,
        "_track": Track.start(now).stored(),
    }


def _refuse_if_final(record: Record, target: str, action: str = "") -> None:
    if record["status"] in _TERMINAL:
        reason = action or f"{record['status']} is final"
        raise InvalidTransitionError(record["doc_id"], record["status"], target, reason)


def _advance(new: Record, track: Track, progress: float, now: float) -> None:
    """Stamp a change at ``now`` that brings progress to at least ``progress``.

    ``track`` is the record's, sampled in place. ``_progressed`` does the same
    steps inline (see there).
    """
    if progress > new["progress"]:
        new["progress"] = progress
        RateEstimator.advance(track, progress, now)
    new["updated_at"] = iso(now)
    elapsed = now - track.started
    # max(0.0, elapsed) without the call: the same value, NaN and -0.0 included.
    new["elapsed_time"] = elapsed = elapsed if elapsed > 0.0 else 0.0
    _split_elapsed(new, elapsed)


def _split_elapsed(new: Record, elapsed: float) -> None:
    """Elapsed time as the wait in the queue and the run since processing started.

    While the document is queued all of it is waiting; once processing has
    started the wait is fixed and the rest is run time. (A record written
    before these fields existed has no start: its time counts as waiting.)
    """
    if new.get("processing_started_at") is None:
        new["wait_time"] = elapsed
        return
    wait = new.get("wait_time")
    if wait is not None:
        run = elapsed - wait
        new["run_time"] = run if run > 0.0 else 0.0


def _start_processing(new: Record, now: float) -> None:
    """Processing starts with ``new``'s change at ``now`` (the first change that leaves ``queued``)."""
    if new.get("processing_started_at") is None:
        new["processing_started_at"] = iso(now)
        wait = now - float(new["_track"][0])
        new["wait_time"] = wait if wait > 0.0 else 0.0
        new["run_time"] = 0.0
        new["_stages"] = Stages.start(now).stored()


def _units(record: Mapping[str, Any], status: str) -> tuple[int | None, int | None]:
    """``(done, total)`` of the units ``status`` works through: pages, chunks, or none."""
    if status == "embedding_visual":
        return record["page"], record["total_pages"]
    if status == "embedding_text":
        meta = record["metadata"]
        return meta.get("chunk"), meta.get("total_chunks")
    return None, None


def _enter_stage(new: Record, left: str, entered: str, now: float) -> None:
    """``new`` leaves status ``left`` for ``entered`` at ``now``: the time ``left`` took is kept."""
    stored = new.get("_stages")
    if stored is not None:
        stages = Stages(*stored)
        stages.enter(left, _units(new, entered)[0] or 0, now)
        new["_stages"] = stages.stored()


def estimate_remaining(record: Mapping[str, Any], track: Track, now: float) -> float | None:
    """The ETA of an active ``record`` at ``now`` (its ``elapsed_time`` as of its last change).

    From the work left (:class:`~docstatus.models.WorkEstimator`) when the
    record says what the work is; from the smoothed progress rate
    (:class:`~docstatus.models.RateEstimator`) when it cannot: progress given
    by the caller without pages or chunks, or a record stored before stages
    were kept.
    """
    stored = record.get("_stages")
    status = record["status"]
    done, total = _units(record, status)
    if stored is None or (total is None and status in _COUNTED):
        return RateEstimator.remaining(track, record["progress"], now)
    changed_at = track.started + record["elapsed_time"]
    return WorkEstimator.remaining(Stages(*stored), status, done, total, changed_at, now)


# The statuses whose work is counted in units (pages, chunks).
_COUNTED = frozenset({"embedding_visual", "embedding_text"})


def _finish(new: Record, status: str, progress: float, now: float) -> None:
    _release(new)
    if status == Status.COMPLETED.value:
        # Completing a queued document: it was processed, in no time this store saw.
        _start_processing(new, now)
    # The stage it ends in is kept too, so that a finished record tells its whole timeline.
    _enter_stage(new, new["status"], status, now)
    new["status"] = status
    new["completed_at"] = iso(now)
    new["estimated_remaining"] = None
    track = Track(*new["_track"])
    track.eta_given = 0
    _advance(new, track, progress, now)
    new["_track"] = track.stored()


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
    if target != current:
        _moved(new, current, target, "stage" in fields, now)
    if target in _TERMINAL:
        _finish(new, target, 1.0 if target == "completed" else new["progress"], now)
        return new
    new["status"] = target
    _progressed(new, target, progress, fields, now)
    return new


def _moved(new: Record, current: str, target: str, stage_given: bool, now: float) -> None:
    """``new`` moves from ``current`` to ``target`` at ``now``: stage, processing start, stage times."""
    if not stage_given:
        new["stage"] = DEFAULT_STAGE[target]  # type: ignore[index]  # str keys find StrEnum members
    if current == "queued":
        if target != "failed":
            _start_processing(new, now)
    elif target not in _TERMINAL:
        _enter_stage(new, current, target, now)


def _progressed(new: Record, status: str, progress: float | None, fields: dict[str, Any], now: float) -> None:
    """An active document's change: progress (the formula's unless given), times and the ETA."""
    if progress is None:
        if status == "embedding_visual":
            progress = progress_for(status, new["page"], new["total_pages"])
        else:
            meta = new["metadata"]
            progress = progress_for(status, meta.get("chunk"), meta.get("total_chunks"))
    track = Track(*new["_track"])
    # _advance's steps, inline: this runs on every update, and the call cost
    # about as much as reading the track does.
    changed = False
    if progress > new["progress"]:
        new["progress"] = progress
        changed = RateEstimator.advance(track, progress, now)
    new["updated_at"] = iso(now)
    elapsed = now - track.started
    new["elapsed_time"] = elapsed = elapsed if elapsed > 0.0 else 0.0
    _split_elapsed(new, elapsed)
    if "estimated_remaining" in fields:
        new["estimated_remaining"] = fields["estimated_remaining"]
        given = 1
    else:
        new["estimated_remaining"] = estimate_remaining(new, track, now)
        given = 0
    if track.eta_given != given:
        track.eta_given = given
        changed = True
    if changed:
        new["_track"] = track.stored()


def _merge_fields(new: Record, fields: dict[str, Any]) -> None:
    if _PLAIN_FIELDS.issuperset(fields):
        new.update(fields)  # the usual update (pages, a stage, an ETA): one call
    else:
        meta = fields.get("metadata")
        if meta or not _METADATA_KEYWORD_SET.isdisjoint(fields):
            _merge_metadata(new, meta, fields)
        for name, value in fields.items():
            if name in _PLAIN_FIELDS:
                new[name] = value
    page, total = new["page"], new["total_pages"]
    # _check_counts inline for pages: every page update runs it.
    if isinstance(page, int) and isinstance(total, int) and page > total:
        _check_counts(new, "page", page, total)


def _merge_metadata(new: Record, meta: dict[str, Any] | None, fields: dict[str, Any]) -> None:
    merged = {**new["metadata"], **(meta or {})}
    for name in _METADATA_KEYWORDS:
        if name in fields:
            merged[name] = fields[name]
    new["metadata"] = merged
    _check_counts(new, "chunk", merged.get("chunk"), merged.get("total_chunks"))


#: No counters held back.
_NOTHING_HELD: Mapping[str, Any] = types.MappingProxyType({})


def check_progress(
    record: Mapping[str, Any], fields: Mapping[str, Any], held: Mapping[str, Any] = _NOTHING_HELD
) -> None:
    """Raise the ``ValueError`` that storing counter ``fields`` on ``record`` would raise.

    The only rule a progress report within a stage can break (see
    :func:`is_progress`): a page or chunk beyond its total, given or stored.
    ``held``: counters reported earlier and not stored yet, which ``fields``
    would be stored with (a counter missing from ``fields`` is taken from
    ``held``, then from ``record``).
    """
    page = _counter(fields, held, "page", record["page"])
    _check_counts(record, "page", page, _counter(fields, held, "total_pages", record["total_pages"]))
    # As apply_update does: the chunk pair is checked when a report touches it.
    if "chunk" in fields or "total_chunks" in fields:
        meta = record["metadata"]
        chunk = _counter(fields, held, "chunk", meta.get("chunk"))
        total = _counter(fields, held, "total_chunks", meta.get("total_chunks"))
        _check_counts(record, "chunk", chunk, total)


def _counter(fields: Mapping[str, Any], held: Mapping[str, Any], name: str, stored: Any) -> Any:
    return fields[name] if name in fields else held.get(name, stored)


def _check_counts(new: Mapping[str, Any], what: str, done: Any, total: Any) -> None:
    if isinstance(done, int) and isinstance(total, int) and done > total:
        raise ValueError(f"{what} {done} is beyond total_{what}s {total} for document {new['doc_id']!r}")


def apply_complete(record: Record, extra: dict[str, Any], now: float) -> Record:
    """``mark_completed``: allowed from every non-final status; ``extra`` joins metadata."""
    _refuse_if_final(record, Status.COMPLETED.value)
    new = dict(record)
    if extra:
        new["metadata"] = {**new["metadata"], **extra}
    new["stage"] = DEFAULT_STAGE[Status.COMPLETED]
    _finish(new, "completed", 1.0, now)
    return new


def apply_fail(record: Record, error: str, now: float) -> Record:
    """``mark_failed``: allowed from every non-final status; progress stays where it was."""
    _refuse_if_final(record, Status.FAILED.value)
    new = dict(record)
    new["error"] = error
    new["stage"] = DEFAULT_STAGE[Status.FAILED]
    _finish(new, "failed", new["progress"], now)
    return new


#: The error of a cancelled document.
CANCELLED = "cancelled"


def apply_cancel(record: Record, now: float) -> Record:
    """A cancel: an active document (queued or in any stage) fails with the error ``"cancelled"``.

    Failing releases the lease, so the holder's next fenced write is refused.
    A finished document raises ``InvalidTransitionError`` saying so.
    """
    _refuse_if_final(record, Status.FAILED.value, "it has already finished, so it cannot be cancelled")
    return apply_fail(record, CANCELLED, now)


def apply_requeue(record: Record, now: float) -> Record:
    """``requeue``: a new attempt of a failed document, from the start."""
    if record["status"] != Status.FAILED.value:
        raise InvalidTransitionError(
            record["doc_id"], record["status"], Status.QUEUED.value, "only a failed document can be requeued"
        )
    fresh = new_record(record["doc_id"], record["filename"], dict(record["metadata"]), now)
    fresh["metadata"]["attempt"] = int(record["metadata"].get("attempt", 1)) + 1
    if "_lease" in record:
        fresh["_lease"] = {**record["_lease"], "worker": None}
    return fresh


def lease_of(record: Mapping[str, Any]) -> tuple[int, str, float] | None:
    """``(epoch, worker, seconds)`` of the lease that holds the document, or ``None``.

    What a store's lease index follows: it compares this before and after a change.
    """
    lease = record.get("_lease")
    if lease is None or lease["worker"] is None:
        return None
    return int(lease["epoch"]), str(lease["worker"]), float(lease["seconds"])


def tally_of(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> tuple[int, str, int] | None:
    """``(minute, status, pages)`` when ``new`` ends a document that ``old`` had not ended; else ``None``.

    What a store's throughput counters follow, as its lease index follows
    :func:`lease_of`: ``old`` is the record before the change (``None`` for a
    new one). ``minute`` is the start of the UTC minute the document finished
    in (epoch seconds, a multiple of 60), ``status`` is ``completed`` or
    ``failed``, ``pages`` the pages it got through (its ``page``, 0 if none).
    A requeued document that ends again counts again: each attempt that ends
    is one.
    """
    if new["status"] not in _TERMINAL or (old is not None and old["status"] in _TERMINAL):
        return None
    page = new.get("page")
    at = changed_at(new)
    return int(at // 60) * 60, str(new["status"]), page if isinstance(page, int) and page > 0 else 0


def _release(new: Record) -> None:
    lease = new.get("_lease")
    if lease is not None and lease["worker"] is not None:
        new["_lease"] = {**lease, "worker": None}


def check_lease(record: Mapping[str, Any], epoch: int) -> None:
    """Raise ``LeaseLostError`` unless the record's lease is held with ``epoch``."""
    held = lease_of(record)
    if held is None or held[0] != epoch:
        raise LeaseLostError(record["doc_id"], epoch)


def apply_claim(record: Record, worker: str, seconds: float, now: float) -> Record:
    """A worker claims a queued document: ``parsing``, a new lease epoch held by ``worker``.

    Only a ``queued`` document can be claimed (else ``InvalidTransitionError``);
    the status change is the one ``update_status("parsing")`` makes, and
    ``metadata["worker"]`` names the holder.
    """
    if record["status"] != Status.QUEUED.value:
        raise InvalidTransitionError(
            record["doc_id"], record["status"], Status.PARSING.value, "only a queued document can be claimed"
        )
    new = apply_update(record, Status.PARSING.value, None, {}, now)
    new["metadata"] = {**new["metadata"], "worker": worker}
    epoch = int(record["_lease"]["epoch"]) + 1 if "_lease" in record else 1
    new["_lease"] = {"epoch": epoch, "worker": worker, "seconds": float(seconds)}
    return new


def apply_lease_lost(record: Record, epoch: int, max_attempts: int, note: str, now: float) -> Record:
    """The holder of lease ``epoch`` was lost: a new attempt, or ``failed`` after ``max_attempts``.

    Raises ``LeaseLostError`` unless the lease is still held with ``epoch``.
    The requeued record says in ``metadata["recovery"]`` which worker was lost,
    in which stage, and which attempt starts; ``note`` (may be empty) is added.
    """
    check_lease(record, epoch)
    worker, stage = record["_lease"]["worker"], record["stage"] or record["status"]
    attempt = int(record["metadata"].get("attempt", 1))
    if attempt >= max_attempts:
        error = (
            f"The worker {worker} was lost while processing this document ({stage}); "
            f"gave up after {attempt} attempts"
        )
        if note:
            error = f"{error}. {note}"[:MAX_ERROR]
        return apply_fail(record, error, now)
    failed = apply_fail(record, "lost", now)
    fresh = apply_requeue(failed, now)
    meta = fresh["metadata"]
    meta.pop("worker", None)
    sentence = (
        f"The worker {worker} was lost while processing this document ({stage}); "
        f"attempt {attempt + 1} started."
    )
    meta["recovery"] = f"{sentence} {note}" if note else sentence
    return fresh


# Not frozen: a frozen dataclass costs a microsecond more to build, on the hot path.
@dataclass(slots=True)
class Mutation:
    """A change to one record, as data: the manager builds one, the store applies it.

    Calling it applies the rules: every store calls it inside its atomic
    section (a lock, a transaction, or a compare-and-set loop that may call it
    again on a newer record). It is pure, so calling it again is safe.
    """

    kind: Literal["update", "complete", "fail", "cancel", "requeue", "claim", "lease_lost"]
    now: float
    #: The status to move to, as its plain string value.
    target: str | None = None
    progress: float | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    #: The fencing token: the lease epoch the writer holds. When set, the change
    #: is refused (``LeaseLostError``, nothing changes) unless that lease holds
    #: the document. ``None``: no check (library users, a cancel).
    epoch: int | None = None

    def __call__(self, record: Record) -> Record:
        if self.epoch is not None and self.kind != "lease_lost":
            check_lease(record, self.epoch)
        return self._apply(record)

    def _apply(self, record: Record) -> Record:
        if self.kind == "update":
            if self.target is None:
                raise TypeError("an update Mutation needs a target status")
            return apply_update(record, self.target, self.progress, self.fields, self.now)
        if self.kind == "complete":
            return apply_complete(record, self.fields, self.now)
        if self.kind == "fail":
            return apply_fail(record, self.fields["error"], self.now)
        if self.kind == "cancel":
            return apply_cancel(record, self.now)
        return self._apply_attempt(record)

    def _apply_attempt(self, record: Record) -> Record:
        # The changes that start or end an attempt: a claim, a lost lease, a requeue.
        if self.kind == "claim":
            # fields: worker, seconds.
            return apply_claim(record, self.fields["worker"], self.fields["seconds"], self.now)
        if self.kind == "lease_lost":
            # fields: max_attempts, note; the epoch is the lease that was lost.
            if self.epoch is None:
                raise TypeError("a lease_lost Mutation needs the epoch of the lost lease")
            fields = self.fields
            return apply_lease_lost(
                record, self.epoch, fields["max_attempts"], fields.get("note", ""), self.now
            )
        return apply_requeue(record, self.now)


def _parse_time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _fields_of(record: Mapping[str, Any]) -> dict[str, Any]:
    # A record holds the model's fields and _track (new_record makes it so; a store
    # may keep private keys of its own beside them): the copy less _track is the
    # fields, unless keys differ (more, or a field a record written before it existed
    # lacks), and copying is several times cheaper
    # than picking the fields one by one.
    values = dict(record)
    del values["_track"]
    if len(values) != len(_FIELDS) or not values.keys() >= _FIELD_SET:
        # A record written before a field existed lacks it: the model's default.
        values = {name: record.get(name, _BLANK[name]) for name in _FIELDS}
    return values


def _snapshot(record: Mapping[str, Any], now: float | None) -> dict[str, Any]:
    """The record's fields as of ``now`` (``None``: as of its last change), times still stored strings.

    Elapsed time and the ETA are live while the document is active and frozen
    once it has finished; metadata is a private copy.
    """
    values = _fields_of(record)
    values["progress"] = float(values["progress"])
    values["metadata"] = copy_json(values["metadata"])
    if values["status"] in _TERMINAL:
        values["elapsed_time"] = float(values["elapsed_time"])
        values["estimated_remaining"] = None
        return values
    track = Track(*record["_track"])
    if now is None:
        now = float(track.started + values["elapsed_time"])
    elapsed = now - track.started
    values["elapsed_time"] = elapsed = elapsed if elapsed > 0.0 else 0.0
    _split_elapsed(values, elapsed)
    if not track.eta_given:
        values["estimated_remaining"] = estimate_remaining(record, track, now)
    return values


def to_model(record: Mapping[str, Any], now: float) -> ProcessingStatus:
    """A snapshot of ``record`` as of ``now``: live elapsed time and ETA while active."""
    values = _snapshot(record, now)
    for name in _TIME_FIELDS:
        values[name] = _parse_time(values[name])
    values["status"] = _STATUS[values["status"]]
    # Every field is replaced, so nothing of the template is shared; copying a model
    # with trusted values costs half of what model_construct's generic loop does.
    return _SNAPSHOT_TEMPLATE.model_copy(update=values)


def changed_at(record: Mapping[str, Any]) -> float:
    """When the record last changed, as epoch seconds."""
    return float(Track(*record["_track"]).started + record["elapsed_time"])


# The stages a document passes through, in the only order the lifecycle allows, and the
# _stages field that holds the time spent in each (storing has none: it is what is left).
_TIMED_STAGES: tuple[tuple[str, int], ...] = (("parsing", 2), ("embedding_visual", 3), ("embedding_text", 4))


def timeline(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The stages of the record's current attempt, in order, as of its last change.

    Each entry: ``status``, ``started_at`` (ISO-8601 UTC, ``Z``), ``seconds``
    spent in it, and ``done``/``total`` units (pages in ``embedding_visual``,
    chunks in ``embedding_text``, else ``None``). ``queued`` comes first (the
    wait); a stage the document skipped (no pages: no visual stage) is absent.
    The durations come from the record itself (the times the work-based ETA
    keeps), so the timeline survives the change log being pruned and costs
    O(1); an earlier attempt's is gone with it (``metadata["recovery"]`` says
    why it ended). Records written before stage times existed give the wait only.
    """
    track = Track(*record["_track"])
    end = changed_at(record)
    wait = float(record.get("wait_time") or 0.0)
    entries = [_stage_entry(record, "queued", track.started, wait)]
    stored = record.get("_stages")
    if record.get("processing_started_at") is None or stored is None:
        return entries
    stages = Stages(*stored)
    at = track.started + wait
    active = record["status"] not in _TERMINAL
    for status, index in _TIMED_STAGES:
        spent = float(stages.stored()[index])
        if active and status == record["status"]:
            spent = end - stages.entered
        if spent > 0.0 or (active and status == record["status"]):
            entries.append(_stage_entry(record, status, at, max(spent, 0.0)))
            at += max(spent, 0.0)
    if _stored(record, stages, end - at):
        entries.append(_stage_entry(record, "storing", at, max(end - at, 0.0)))
    return entries


def _stored(record: Mapping[str, Any], stages: Stages, left: float) -> bool:
    """Whether the attempt reached ``storing``: the time after the timed stages is its.

    Storing is the one stage without a stored duration, so it shows as time
    ``left`` over; a document that completed after the text stage stored,
    however fast that was (the lifecycle passes through storing).
    """
    if record["status"] == "storing":
        return True
    if record["status"] not in _TERMINAL:
        return False
    return left > 0.001 or (record["status"] == "completed" and stages.text > 0.0)


def _stage_entry(record: Mapping[str, Any], status: str, start: float, seconds: float) -> dict[str, Any]:
    done, total = _units(record, status)
    return {
        "status": status,
        "started_at": _json_time(iso(start)),
        "seconds": seconds,
        "done": done,
        "total": total,
    }


def _json_time(value: str | None) -> str | None:
    # A stored time (always UTC, "+00:00") written the way pydantic writes a UTC
    # datetime: "Z", and no fraction when it is zero.
    if value is None:
        return None
    base = value[:-6] if value.endswith("+00:00") else value
    return (base[:-7] if base.endswith(".000000") else base) + "Z"


def status_json(record: Mapping[str, Any], now: float | None = None) -> dict[str, Any]:
    """``record``'s status JSON as of ``now``; by default as of its last change.

    The one record -> JSON function: the body of ``GET /status/{doc_id}``, of
    every listing and of every event. It is the model's JSON (the same as
    ``to_model(record, now).model_dump(mode="json")``, a test holds them
    equal) plus ``timestamp`` (= ``updated_at``), built straight from the
    record: the model round trip was most of its cost. Events use the default
    ``now``, so an event says what was true when the change happened, and a
    stream resumed later replays the same bodies.
    """
    body = _snapshot(record, now)
    for name in _TIME_FIELDS:
        body[name] = _json_time(body[name])
    body["timestamp"] = body["updated_at"]
    return body


def is_valid_record(record: Any) -> bool:
    """A cheap shape check for records read from outside (a wrapped dict, a store)."""
    return (
        isinstance(record, dict)
        and isinstance(record.get("doc_id"), str)
        and record.get("status") in Status.__members__.values()
        and isinstance(record.get("_track"), list)
        and record.keys() >= _RECORD_KEYS
        and math.isfinite(float(record.get("progress", math.nan)))
    )


#: The keywords of a progress report within a stage: counters and the caller's ETA.
PROGRESS_KEYWORDS = frozenset({"page", "total_pages", "chunk", "total_chunks", "estimated_remaining"})


def is_progress(mutation: Mutation, record: Mapping[str, Any]) -> bool:
    """Whether ``mutation`` only reports progress within ``record``'s stage.

    Such a report (same active status, same stage, counters and ETA only, no
    metadata) moves nothing through the lifecycle: it is what a writer may
    hold back and coalesce with the next one. Everything else (a transition,
    completion, failure, metadata, a new stage) must be written at once.
    """
    return mutation.kind == "update" and is_progress_report(mutation.target, mutation.fields, record)


def is_progress_report(target: str | None, fields: Mapping[str, Any], record: Mapping[str, Any]) -> bool:
    """:func:`is_progress` for the update to ``target`` with ``fields``, before it is a Mutation."""
    if target != record["status"] or target in _TERMINAL:
        return False
    if PROGRESS_KEYWORDS.issuperset(fields):
        return True
    return fields.get("stage", record["stage"]) == record["stage"] and PROGRESS_KEYWORDS.issuperset(
        name for name in fields if name != "stage"
    )


@dataclass(frozen=True, slots=True)
class Chain:
    """Several changes to one record, applied in order as one: what a coalesced write stores.

    Pure like each of its mutations; the result is exactly the record that
    applying them one by one would store, so coalescing reports changes how
    often the record is written, never what it says.
    """

    changes: tuple[Callable[[Record], Record], ...]

    def __call__(self, record: Record) -> Record:
        for change in self.changes:
            record = change(record)
        return record
