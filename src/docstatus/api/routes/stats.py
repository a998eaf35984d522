"""Throughput over time and one document's timeline: what the dashboard's charts and document page draw.

* ``GET /stats/throughput?minutes=60``: documents completed and failed, and
  pages processed, per UTC minute over the last ``minutes`` minutes, from the
  store's throughput counters (see :meth:`~docstatus.stores.base.Store.tallies`):
  they outlive cleanup and, on a shared store, count every process's documents.
* ``GET /status/{doc_id}/timeline``: the stages of the document's current
  attempt (see :func:`~docstatus.records.timeline`), read from its record, so
  it costs one lookup and survives the change log being pruned.

Both are reads, open like every status read.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from ...errors import DocumentNotFoundError
from ...manager import StatusManager
from ...records import timeline
from ...stores.base import Tally
from ..errors import error_responses
from ..params import STRICT_QUERY

__all__ = ["MAX_MINUTES", "stats_router", "throughput_json", "timeline_json"]

#: The longest window ``GET /stats/throughput`` answers for: the day stores keep counters for.
MAX_MINUTES = 1440


class MinuteBody(BaseModel):
    """What ended in one UTC minute."""

    minute: datetime = Field(..., description="The minute's start (UTC)")
    completed: int = Field(..., description="Documents that completed in it")
    failed: int = Field(..., description="Documents that failed in it (cancelled ones too)")
    pages: int = Field(..., description="Pages of the documents that ended in it")


class ThroughputBody(BaseModel):
    """Per-minute counts, oldest first, one entry for every minute of the window (zeros included)."""

    minutes: int
    buckets: list[MinuteBody]
    completed: int = Field(..., description="Sum over the window")
    failed: int = Field(..., description="Sum over the window")
    pages: int = Field(..., description="Sum over the window")


class StageBody(BaseModel):
    """One stage of a document's attempt."""

    status: str
    started_at: datetime
    seconds: float = Field(..., description="Time spent in it (so far, for the stage in progress)")
    done: int | None = Field(None, description="Pages (visual stage) or chunks (text stage) done")
    total: int | None = Field(None, description="Pages or chunks in all")


class TimelineBody(BaseModel):
    """A document's current attempt, stage by stage."""

    doc_id: str
    status: str
    attempt: int
    stages: list[StageBody]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def throughput_json(manager: StatusManager, minutes: int, now: float | None = None) -> dict[str, Any]:
    """The body of ``GET /stats/throughput``: the last ``minutes`` minutes up to the current one."""
    now = time.time() if now is None else now
    last = int(now // 60) * 60
    first = last - (minutes - 1) * 60
    found: dict[int, Tally] = {t.minute: t for t in manager.store.tallies(first, last + 60)}
    buckets: list[dict[str, Any]] = []
    for minute in range(first, last + 60, 60):
        tally = found.get(minute, Tally(minute, 0, 0, 0))
        buckets.append(
            {
                "minute": _iso(minute),
                "completed": tally.completed,
                "failed": tally.failed,
                "pages": tally.pages,
            }
        )
    totals = {key: sum(b[key] for b in buckets) for key in ("completed", "failed", "pages")}
    return {"minutes": minutes, "buckets": buckets, **totals}


def timeline_json(manager: StatusManager, doc_id: str) -> dict[str, Any]:
    """The body of ``GET /status/{doc_id}/timeline``; ``DocumentNotFoundError`` if it is unknown."""
    record = manager.store.get(doc_id)
    if record is None:
        raise DocumentNotFoundError(doc_id)
    attempt = record["metadata"].get("attempt", 1)
    return {
        "doc_id": doc_id,
        "status": record["status"],
        "attempt": attempt if isinstance(attempt, int) else 1,
        "stages": timeline(record),
    }


def stats_router(manager: StatusManager) -> APIRouter:
    """``GET /stats/throughput`` and ``GET /status/{doc_id}/timeline`` over ``manager``'s store."""
    router = APIRouter(tags=["status"], dependencies=[STRICT_QUERY])

    @router.get(
        "/stats/throughput",
        response_model=ThroughputBody,
        summary="Documents and pages per minute",
        responses=error_responses(400, 503),
    )
    async def throughput(
        minutes: Annotated[
            int, Query(ge=1, le=MAX_MINUTES, description="How many minutes, up to the current one")
        ] = 60,
    ) -> JSONResponse:
        """Completed, failed and pages per UTC minute over the last ``minutes`` (the current minute is
        partial), oldest first, and their sums. Counts outlive the documents' cleanup."""
        return JSONResponse(await run_in_threadpool(throughput_json, manager, minutes))

    @router.get(
        "/status/{doc_id}/timeline",
        response_model=TimelineBody,
        summary="One document's stages",
        responses=error_responses(404),
    )
    async def document_timeline(
        doc_id: Annotated[str, Path(description="The document's id (the SHA-256 of an upload's content)")],
    ) -> JSONResponse:
        """The current attempt's stages in order (queued, parsing, embedding_visual, embedding_text,
        storing; skipped ones absent): start, seconds, pages or chunks. 404 if unknown."""
        return JSONResponse(await run_in_threadpool(timeline_json, manager, doc_id))

    return router
