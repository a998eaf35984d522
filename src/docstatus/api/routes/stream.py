"""``GET /status/stream``: every status change as a server-sent event (see :mod:`docstatus.api.sse`)."""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Header, Query
from sse_starlette import EventSourceResponse

from ...manager import StatusManager
from ..errors import error_responses
from ..sse import event_frames, parse_last_event_id, start_seq

__all__ = ["add_stream_route", "stream_router"]

#: Seconds a stream may take to finish cleanly once the server shuts down.
SHUTDOWN_GRACE = 2.0

_STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "An endless text/event-stream of status changes",
        "content": {
            "text/event-stream": {
                "schema": {"type": "string"},
                "example": 'id: 42\nevent: status\ndata: {"doc_id": "abc123", "status": "parsing", ...}\n\n',
            }
        },
    }
}


def add_stream_route(router: APIRouter, manager: StatusManager, *, ping_seconds: float = 15.0) -> None:
    """Add ``GET /stream`` (under the router's prefix) streaming ``manager``'s changes."""

    @router.get(
        "/stream",
        summary="Live status changes (server-sent events)",
        response_class=EventSourceResponse,
        responses={**_STREAM_DOC, **error_responses(400)},
    )
    async def stream(
        doc_id: Annotated[
            str | None, Query(max_length=256, description="Only this document's changes")
        ] = None,
        last_event_id: Annotated[
            str | None, Header(alias="Last-Event-ID", description="Resume after this event id")
        ] = None,
    ) -> EventSourceResponse:
        """Every change from now on (or after ``Last-Event-ID``), one event per change."""
        since = await start_seq(manager, parse_last_event_id(last_event_id))
        stop = anyio.Event()
        return EventSourceResponse(
            event_frames(manager, since, doc_id, stop),
            ping=ping_seconds,
            shutdown_event=stop,
            shutdown_grace_period=SHUTDOWN_GRACE,
        )


def stream_router(manager: StatusManager, *, ping_seconds: float = 15.0) -> APIRouter:
    """A router with only ``GET /status/stream`` (``status_router`` includes it already)."""
    router = APIRouter(prefix="/status", tags=["status"])
    add_stream_route(router, manager, ping_seconds=ping_seconds)
    return router
