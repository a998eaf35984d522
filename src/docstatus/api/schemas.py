"""Response and request bodies of the HTTP API, as OpenAPI documents them.

Handlers build plain JSON-compatible dicts (the status JSON comes straight
from the store's record); these models describe that JSON for ``/docs`` and
for clients generated from the OpenAPI schema.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..ingest import Accepted
from ..models import ProcessingStatus

__all__ = [
    "CleanupBody",
    "DeleteRequest",
    "DeletedBody",
    "DocumentList",
    "DocumentPage",
    "HealthBody",
    "QueueBody",
    "RemovedBody",
    "RetriedBody",
    "RetryRequest",
    "StatusBody",
    "UploadAnswer",
    "UploadBatch",
    "UploadRejected",
    "WebhookRequest",
    "WorkerBody",
    "WorkersBody",
]

_EXAMPLE: dict[str, Any] = ProcessingStatus.model_json_schema()["example"]
_STATUS_EXAMPLE: dict[str, Any] = {**_EXAMPLE, "timestamp": _EXAMPLE["updated_at"]}
# A real answer, so the documented example cannot drift from what the API sends.
_ACCEPTED_EXAMPLE = Accepted.queued(
    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "report.txt"
).to_json()


class StatusBody(ProcessingStatus):
    """A document's status as ``GET /status/{doc_id}`` and the event stream report it."""

    model_config = ConfigDict(json_schema_extra={"example": _STATUS_EXAMPLE})

    timestamp: datetime = Field(..., description="The same as updated_at (kept for older clients)")


class DocumentList(BaseModel):
    """Documents, most recently updated first."""

    documents: list[StatusBody]
    count: int = Field(..., description="How many documents are in the list")


class QueueBody(BaseModel):
    """The queue view: documents (most recently updated first) and counts over the whole store."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {"queue": [_STATUS_EXAMPLE], "total": 12, "active": 1, "completed": 10, "failed": 1}
        }
    )

    queue: list[StatusBody]
    total: int = Field(..., description="Documents in the store")
    active: int = Field(..., description="Documents not yet completed or failed")
    completed: int
    failed: int


class CleanupBody(BaseModel):
    """The result of a cleanup."""

    removed: int = Field(..., description="How many finished documents were removed")


class RemovedBody(BaseModel):
    """A document removed on demand, with what went with it."""

    doc_id: str
    status: StatusBody = Field(..., description="Its last status, as it was when removed")
    upload: str | None = Field(..., description="The removed upload's file name (none if it had none)")
    output: bool = Field(..., description="Whether its output (pages, chunks, thumbnails) was removed")


class UploadAnswer(BaseModel):
    """One file that was accepted: queued, or already known (``duplicate``).

    Describes :meth:`docstatus.ingest.Accepted.to_json`, which builds the answer.
    """

    model_config = ConfigDict(json_schema_extra={"example": _ACCEPTED_EXAMPLE})

    status: Literal["accepted"]
    doc_id: str = Field(..., description="The SHA-256 hex digest of the content")
    filename: str = Field(..., description="The stored file name (path components removed)")
    message: str
    duplicate: bool = Field(..., description="True when this content was uploaded before")


class UploadRejected(BaseModel):
    """One file of a several-file upload that was not accepted."""

    status: Literal["rejected"]
    filename: str
    error: str
    code: str
    details: dict[str, Any] = Field(default_factory=dict)


class UploadBatch(BaseModel):
    """The answer to an upload of several files: one entry per file, in order."""

    files: list[UploadAnswer | UploadRejected]


class WebhookRequest(BaseModel):
    """A file that is already in the uploads folder, to be queued."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {"event": "upload", "path": "incoming/report.txt", "filename": "report.txt"}
        },
    )

    event: Literal["upload"] = Field(..., description="The only event: a file to process")
    path: str = Field(
        ...,
        min_length=1,
        max_length=4096,
        description="Relative to the uploads folder, or absolute inside it",
    )
    filename: str | None = Field(
        None, max_length=1024, description="The name to report (defaults to the file's name)"
    )


class HealthBody(BaseModel):
    """The service is up and its store answers."""

    status: Literal["ok"]
    store: str = Field(..., description="The store URL (without credentials)")
    last_seq: int = Field(..., description="The sequence number of the most recent change")
    workers: bool | None = Field(None, description="Whether the processing workers run (null: none)")
    version: str
    counts: dict[str, int] | None = Field(None, description="Documents by status (`GET /status/health` only)")


_WORKER_EXAMPLE: dict[str, Any] = {
    "id": "node-a:4242",
    "host": "node-a",
    "pid": 4242,
    "engine": "local",
    "processes": 2,
    "started_at": "2025-10-07T19:00:00Z",
    "last_seen": "2025-10-07T19:05:12.250000Z",
    "documents": ["9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"],
}


class WorkerBody(BaseModel):
    """One live worker process, as its last heartbeat described it."""

    id: str = Field(..., description="The worker's id in the registry")
    host: str | None = None
    pid: int | None = None
    engine: str | None = Field(None, description="local or rq")
    processes: int | None = Field(None, description="How many documents it processes at once")
    started_at: str | None = None
    last_seen: str = Field(..., description="Its last heartbeat (ISO-8601 UTC, the store's clock)")
    documents: list[str] = Field(..., description="The doc_ids whose lease it (or a child of it) holds")


class WorkersBody(BaseModel):
    """Every live worker process of the store, from every host, ordered by id."""

    model_config = ConfigDict(json_schema_extra={"example": {"workers": [_WORKER_EXAMPLE]}})

    workers: list[WorkerBody]


# -- the listing's pages and the bulk actions ---------------------------------------------

_StatusFilter = Field(
    None,
    description="Only documents in these statuses (each also comma-separated)",
    json_schema_extra={"example": ["failed"]},
)
_TextFilter = Field(
    None,
    min_length=1,
    max_length=256,
    description="Only documents whose filename contains this (ignoring case) or whose id starts with it",
)
_Time = str | float | None


class DocumentPage(DocumentList):
    """One page of ``GET /status``: documents in the sort order, and the cursor of the next page."""

    next: str | None = Field(..., description="Pass as cursor= for the next page; null: there is none")


class RetryRequest(BaseModel):
    """Which failed documents ``POST /status/retry`` requeues (the listing's filters)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"example": {"status": ["failed"], "q": ".pdf"}}
    )

    status: list[str] | None = _StatusFilter
    q: str | None = _TextFilter
    since: _Time = Field(
        None, description="Failed at or after this (ISO-8601, naive = UTC, or epoch seconds)"
    )
    until: _Time = Field(None, description="Failed at or before this")
    cursor: str | None = Field(None, max_length=1000, description="The next of an answer that had to stop")


class DeleteRequest(BaseModel):
    """Which finished documents ``POST /status/delete`` removes (the listing's filters)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"example": {"older_than_seconds": 86400, "status": ["completed"]}}
    )

    older_than_seconds: float | None = Field(
        None, ge=0, le=10**10, description="Only documents that finished longer ago than this"
    )
    status: list[str] | None = _StatusFilter
    q: str | None = _TextFilter
    cursor: str | None = Field(None, max_length=1000, description="The next of an answer that had to stop")


class RetriedBody(BaseModel):
    """What ``POST /status/retry`` did."""

    retried: int = Field(..., description="How many failed documents were requeued")
    skipped: int = Field(..., description="How many matched but cannot be retried (they failed for good)")
    doc_ids: list[str] = Field(..., description="The first 100 requeued documents")
    next: str | None = Field(
        ..., description="Set when the action stopped in time: send it as cursor to go on"
    )


class DeletedBody(BaseModel):
    """What ``POST /status/delete`` did."""

    deleted: int = Field(..., description="How many finished documents were removed, with upload and output")
    doc_ids: list[str] = Field(..., description="The first 100 removed documents")
    next: str | None = Field(
        ..., description="Set when the action stopped in time: send it as cursor to go on"
    )
