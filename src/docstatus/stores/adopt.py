"""Reading what existing code wrote straight into the wrapped dict.

Code written before docstatus keeps its status in a plain dict and writes it
directly: ``processing_status[doc_id] = {...}`` for a new document, then
``processing_status[doc_id]["status"] = "completed"`` from worker threads. The
memory store wraps that dict and notices such writes (see
:class:`~docstatus.stores.memory.MemoryStore`); this module says what they
mean, purely, so that the store only keeps its indexes:

* a new entry is read as a record (:func:`read_entry`) as well as it can be:
  a status outside the model by :data:`STATUS_ALIASES`, a naive time as UTC,
  a missing field from the others or the model's default; what cannot be read
  raises :class:`~docstatus.errors.UnreadableEntryError` naming the field;
* a change to a document's entry is the manager call it amounts to
  (:func:`direct_change`): a new status is ``update_status``, ``completed``
  is ``mark_completed``, ``failed`` ``mark_failed``, ``queued`` over a failed
  document ``requeue``. The rules (:mod:`docstatus.records`) apply, so a write
  that breaks one (a finished document made active again) raises, and the
  store keeps the stored status instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..errors import UnreadableEntryError
from ..models import DEFAULT_STAGE, FINISHED, KEYWORD_CHECKS, ProcessingStatus, Status, Track, progress_for
from ..records import Mutation, Record, changed_at, iso, new_record, to_model

__all__ = [
    "STATUS_ALIASES",
    "WATCHED",
    "Reconciliation",
    "direct_change",
    "fingerprint",
    "read_entry",
]

#: Statuses that code outside the contract writes, and the status each is read as.
#: Matched without regard to case or surrounding blanks; anything else that is no
#: :class:`~docstatus.models.Status` makes the entry unreadable.
STATUS_ALIASES: dict[str, Status] = {
    **dict.fromkeys(("pending", "waiting", "new", "uploaded", "received", "submitted"), Status.QUEUED),
    **dict.fromkeys(
        ("processing", "in_progress", "in-progress", "running", "started", "working", "extracting"),
        Status.PARSING,
    ),
    "embedding": Status.EMBEDDING_TEXT,
    **dict.fromkeys(("saving", "indexing", "writing"), Status.STORING),
    **dict.fromkeys(
        ("complete", "done", "finished", "success", "succeeded", "successful", "processed"), Status.COMPLETED
    ),
    **dict.fromkeys(
        ("error", "errored", "failure", "fail", "cancelled", "canceled", "aborted", "timeout"), Status.FAILED
    ),
}

#: The fields whose change the store notices, besides an entry replaced by another
#: object: what existing code writes on every step. (A change to another field alone
#: is seen with the next change to one of these.)
WATCHED = ("status", "progress", "updated_at")

_STATUSES = {s.value: s for s in Status}
_TERMINAL = frozenset(s.value for s in FINISHED)
_FIELDS = frozenset(ProcessingStatus.model_fields)
# A record's own keys beside the model's fields: computed by docstatus, never read from an entry.
_PRIVATE = frozenset({"_track", "_lease", "_stages"})
_DIRECT_ERROR = "failed (set directly in the status dict, without an error message)"


@dataclass
class Reconciliation:
    """What the store found in the wrapped dict that it had not written itself.

    Each list or dict holds doc_ids (a dict's value says why).
    """

    #: Entries written directly that are documents now ("created" events).
    adopted: list[str] = field(default_factory=list)
    #: Documents whose entry was changed directly, re-indexed ("updated" events).
    changed: list[str] = field(default_factory=list)
    #: Documents whose entry was deleted directly ("removed" events).
    removed: list[str] = field(default_factory=list)
    #: Direct writes that broke a rule and were undone: the stored status was kept.
    refused: dict[str, str] = field(default_factory=dict)
    #: Entries that cannot be read as a status; they stay in the dict, no document.
    unreadable: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.adopted or self.changed or self.removed or self.refused or self.unreadable)

    @property
    def logged(self) -> bool:
        """Whether the store logged changes (events) for what it found."""
        return bool(self.adopted or self.changed or self.removed)


def fingerprint(entry: Any) -> tuple[Any, ...]:
    """What the store remembers of an entry it wrote: the object and its :data:`WATCHED` values.

    The memory store builds the same tuple inline on its hot path (a test holds them equal).
    """
    if not isinstance(entry, dict):
        return (entry,)
    return (entry, entry.get("status"), entry.get("progress"), entry.get("updated_at"))


def _status(doc_id: str, value: Any, notes: list[str]) -> str:
    if isinstance(value, str):
        if value in _STATUSES:
            return value
        alias = STATUS_ALIASES.get(value.strip().lower())
        if alias is not None:
            notes.append(f"status {value!r} read as {alias.value!r}")
            return alias.value
    if value is None:
        raise UnreadableEntryError(doc_id, "status", "is missing")
    known = ", ".join(_STATUSES)
    raise UnreadableEntryError(
        doc_id, "status", f"is {value!r}, which is neither a status ({known}) nor one of STATUS_ALIASES"
    )


def _progress(doc_id: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UnreadableEntryError(doc_id, "progress", f"is a {type(value).__name__}, not a number")
    if not 0.0 <= value <= 1.0:
        raise UnreadableEntryError(doc_id, "progress", f"is {value!r}: a fraction 0.0-1.0 is expected")
    return float(value)


def _time(doc_id: str, name: str, value: Any, notes: list[str]) -> float | None:
    """Epoch seconds of a time written as ISO-8601, a datetime or epoch seconds; naive means UTC."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise UnreadableEntryError(doc_id, name, f"is {value!r}, not an ISO-8601 time") from None
    if not isinstance(value, datetime):
        raise UnreadableEntryError(doc_id, name, f"is a {type(value).__name__}, not a time")
    if value.tzinfo is None:
        notes.append(f"{name} has no time zone: read as UTC")
        value = value.replace(tzinfo=UTC)
    return float(value.timestamp())


def _checked(doc_id: str, name: str, value: Any) -> Any:
    """``value`` as ``update_status`` would accept it for keyword ``name``, or the error naming it."""
    try:
        return KEYWORD_CHECKS[name](name, value)
    except (TypeError, ValueError) as exc:
        raise UnreadableEntryError(doc_id, name, str(exc)) from None


def _text(doc_id: str, name: str, value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise UnreadableEntryError(doc_id, name, f"is a {type(value).__name__}, not a string")


@dataclass
class _Times:
    started: float
    changed: float
    completed: float | None


def _times(doc_id: str, entry: dict[str, Any], finished: bool, now: float, notes: list[str]) -> _Times:
    started = _time(doc_id, "started_at", entry.get("started_at"), notes)
    updated = _time(doc_id, "updated_at", entry.get("updated_at"), notes)
    completed = _time(doc_id, "completed_at", entry.get("completed_at"), notes) if finished else None
    if updated is None:
        updated = completed if completed is not None else started if started is not None else now
        notes.append("no updated_at: taken from the entry's other times, or now")
    if finished and completed is None:
        completed = updated
    changed = completed if completed is not None else updated
    if started is None:
        started = changed
        notes.append("no started_at: taken from updated_at")
    return _Times(min(started, changed), changed, completed)


def read_entry(doc_id: Any, entry: Any, now: float) -> tuple[Record, list[str]]:
    """The record for an entry written directly into the wrapped dict, and what was assumed.

    A docstatus record (one with ``_track``, e.g. reloaded from a file) is
    returned as it is when it is whole. Anything else is read as a legacy
    entry: a new record with the entry's fields, ``_track`` computed, keys
    that are not the model's kept as they are. The notes say what was read
    other than as written (a mapped status, a naive time, a missing field).
    Raises :class:`~docstatus.errors.UnreadableEntryError` naming the field.
    """
    if not isinstance(doc_id, str):
        raise UnreadableEntryError(str(doc_id), None, f"has a {type(doc_id).__name__} key, not a string")
    if not isinstance(entry, dict):
        raise UnreadableEntryError(doc_id, None, f"is a {type(entry).__name__}, not a dict")
    said = entry.get("doc_id", doc_id)
    if said != doc_id:
        raise UnreadableEntryError(doc_id, "doc_id", f"is {said!r}, but its key in the dict is {doc_id!r}")
    if "_track" in entry:
        return _whole_record(doc_id, entry, now), []
    notes: list[str] = []
    record = _legacy_record(doc_id, entry, now, notes)
    try:
        to_model(record, now)  # every later read must succeed
    except (TypeError, ValueError, KeyError) as exc:
        raise UnreadableEntryError(doc_id, None, f"does not fit the status model: {exc}") from None
    return record, notes


def _whole_record(doc_id: str, entry: dict[str, Any], now: float) -> Record:
    missing = sorted(_FIELDS - entry.keys())
    if missing:
        raise UnreadableEntryError(doc_id, missing[0], "is missing from a docstatus record (it has _track)")
    try:
        to_model(entry, now)
    except (TypeError, ValueError, KeyError) as exc:
        raise UnreadableEntryError(
            doc_id, None, f"is a docstatus record that does not fit the model: {exc}"
        ) from None
    return entry


def _legacy_record(doc_id: str, entry: dict[str, Any], now: float, notes: list[str]) -> Record:
    status = _status(doc_id, entry.get("status"), notes)
    finished = status in _TERMINAL
    filename = _text(doc_id, "filename", entry.get("filename"))
    if filename is None:
        filename = ""
        notes.append("no filename")
    meta = entry.get("metadata")
    metadata = {} if meta is None else _checked(doc_id, "metadata", meta)
    times = _times(doc_id, entry, finished, now, notes)
    record = new_record(doc_id, filename, metadata, times.started)
    progress = _progress(doc_id, entry.get("progress"))
    if status == "completed" or progress is None:
        progress = 1.0 if status == "completed" else 0.0 if status == "failed" else progress_for(status)
    eta = None if finished else _checked(doc_id, "estimated_remaining", entry.get("estimated_remaining"))
    elapsed = times.changed - times.started
    record.update(
        status=status,
        progress=progress,
        stage=_text(doc_id, "stage", entry.get("stage")) or DEFAULT_STAGE[_STATUSES[status]],
        page=_checked(doc_id, "page", entry.get("page")),
        total_pages=_checked(doc_id, "total_pages", entry.get("total_pages")),
        updated_at=iso(times.changed),
        completed_at=None if times.completed is None else iso(times.completed),
        elapsed_time=elapsed,
        estimated_remaining=eta,
        error=_text(doc_id, "error", entry.get("error")),
    )
    if status != "queued":
        # Processing started when the document did: the entry says nothing of a wait.
        record.update(processing_started_at=record["started_at"], wait_time=0.0, run_time=elapsed)
    else:
        record["wait_time"] = elapsed
    track = Track(times.started, times.changed, progress, 0.0, 0, 0 if eta is None else 1)
    record["_track"] = track.stored()
    extras = {k: v for k, v in entry.items() if k not in record and k not in _PRIVATE}
    return {**record, **extras} if extras else record


def _when(doc_id: str, entry: dict[str, Any], previous: Record, now: float, notes: list[str]) -> float:
    """When the direct change happened: the entry's ``updated_at`` if between the last change and now."""
    if entry.get("updated_at") == previous["updated_at"]:
        return now
    try:
        at = _time(doc_id, "updated_at", entry.get("updated_at"), notes)
    except UnreadableEntryError:
        return now
    return now if at is None else min(max(at, changed_at(previous)), now)


def _fields(entry: dict[str, Any], previous: Record, status: str, doc_id: str) -> dict[str, Any]:
    """The ``update_status`` keywords a direct change amounts to: what differs from the stored record."""
    fields: dict[str, Any] = {}
    for name in ("page", "total_pages", "estimated_remaining", "metadata"):
        if entry.get(name) is not None and entry[name] != previous.get(name):
            fields[name] = _checked(doc_id, name, entry[name])
    stage = entry.get("stage")
    moved = status != previous["status"]
    # On a move, a stage left as the old status's default gives way to the new one's.
    if isinstance(stage, str) and not (moved and stage == DEFAULT_STAGE[_STATUSES[previous["status"]]]):
        fields["stage"] = _checked(doc_id, "stage", stage)
    return fields


def direct_change(previous: Record, entry: Any, now: float) -> tuple[Record, list[str]]:
    """The record after a direct write turned ``previous`` (the stored record) into ``entry``.

    The write is read as the manager call it amounts to, and the rules of
    :mod:`docstatus.records` apply: a finished document stays finished
    (``InvalidTransitionError``), progress never goes down, a failed document
    made ``queued`` is requeued. Raises ``UnreadableEntryError`` for a value
    that cannot be read, ``InvalidTransitionError``/``ValueError`` for a write
    the rules refuse; then nothing is to be written but the stored record.
    """
    doc_id = previous["doc_id"]
    if not isinstance(entry, dict):
        raise UnreadableEntryError(doc_id, None, f"is a {type(entry).__name__}, not a dict")
    notes: list[str] = []
    status = _status(doc_id, entry.get("status"), notes)
    at = _when(doc_id, entry, previous, now, notes)
    if status == "completed" and previous["status"] != status:
        mutation = Mutation("complete", at)
    elif status == "failed" and previous["status"] != status:
        error = _text(doc_id, "error", entry.get("error")) or _DIRECT_ERROR
        mutation = Mutation("fail", at, fields={"error": error})
    elif status == "queued" and previous["status"] == "failed":
        mutation = Mutation("requeue", at)
    else:
        progress = _progress(doc_id, entry.get("progress"))
        mutation = Mutation("update", at, status, progress, _fields(entry, previous, status, doc_id))
    record = mutation(previous)
    extras = {k: v for k, v in entry.items() if k not in record and k not in _PRIVATE}
    return ({**record, **extras} if extras else record), notes
