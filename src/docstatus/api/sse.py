"""``GET /status/stream``: every status change as a server-sent event.

Each change is one event: ``event: status`` with the status JSON exactly as
``GET /status/{doc_id}`` returns it, or ``event: removed`` with
``{"doc_id": ...}`` when cleanup drops a document; its ``id:`` is the change's
sequence number. A client that reconnects with ``Last-Event-ID`` (browsers do
it themselves) first gets every logged change it missed, then live ones. The
first frame of every stream carries only an ``id:`` (the current sequence
number, no event), so even a client that has seen no change yet resumes from
where it connected. Comment lines keep idle connections open, and the stream
ends (with a properly terminated body) when the server shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Annotated, Any, cast

import anyio
from fastapi import APIRouter, Header, Query
from sse_starlette import EventSourceResponse, ServerSentEvent

from ..errors import InvalidRequestError
from ..events import Event
from ..manager import StatusManager
from .errors import error_responses

__all__ = ["add_stream_route", "event_frame", "stream_router"]

#: Milliseconds a browser waits before reconnecting (sent in the first frame).
RETRY_MS = 1000

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


def event_frame(event: Event) -> ServerSentEvent:
    """The SSE frame for one change."""
    if event["type"] == "removed" or event["status"] is None:
        return ServerSentEvent(json.dumps({"doc_id": event["doc_id"]}), event="removed", id=str(event["seq"]))
    data = json.dumps(event["status"], separators=(",", ":"))
    return ServerSentEvent(data, event="status", id=str(event["seq"]))


def _last_event_id(raw: str | None) -> int | None:
    if raw is None or not raw.strip():
        return None
    try:
        seq = int(raw.strip())
    except ValueError:
        raise InvalidRequestError(
            "Last-Event-ID must be the id of an event from this stream", last_event_id=raw[:100]
        ) from None
    if seq < 0:
        raise InvalidRequestError("Last-Event-ID must not be negative", last_event_id=raw[:100])
    return seq


async def _frames(
    manager: StatusManager, since: int, doc_id: str | None, stop: anyio.Event
) -> AsyncIterator[ServerSentEvent]:
    yield ServerSentEvent(id=str(since), retry=RETRY_MS)
    events = cast(AsyncGenerator[Event, None], manager.events(since))
    stopping = asyncio.ensure_future(stop.wait())
    try:
        while True:
            step = asyncio.ensure_future(anext(events))
            await asyncio.wait({step, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not step.done():
                step.cancel()
                # Let the cancelled step unwind the generator before it is closed.
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await step
                return
            event = step.result()
            if doc_id is None or event["doc_id"] == doc_id:
                yield event_frame(event)
    finally:
        stopping.cancel()
        await events.aclose()


async def _start_seq(manager: StatusManager, last_event_id: int | None) -> int:
    """Where a stream starts: after ``Last-Event-ID``, or now; never after the latest change."""
    latest = await asyncio.to_thread(lambda: manager.last_seq)
    # An id from the future (the store was reset) would silence the stream until it caught up.
    return latest if last_event_id is None else min(last_event_id, latest)


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
        since = await _start_seq(manager, _last_event_id(last_event_id))
        stop = anyio.Event()
        return EventSourceResponse(
            _frames(manager, since, doc_id, stop),
            ping=ping_seconds,
            shutdown_event=stop,
            shutdown_grace_period=SHUTDOWN_GRACE,
        )


def stream_router(manager: StatusManager, *, ping_seconds: float = 15.0) -> APIRouter:
    """A router with only ``GET /status/stream`` (``status_router`` includes it already)."""
    router = APIRouter(prefix="/status", tags=["status"])
    add_stream_route(router, manager, ping_seconds=ping_seconds)
    return router
