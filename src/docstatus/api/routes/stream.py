"""``GET /status/stream``: every status change as a server-sent event (see :mod:`docstatus.api.sse`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from ...errors import DocumentNotFoundError, TooManyStreamsError
from ...events import AHEAD, reset_event
from ...manager import StatusManager
from ..errors import error_responses
from ..params import STRICT_QUERY
from ..sse import frame_bytes, opening_frame, parse_last_event_id, start_seq
from ..sse_response import SHUTDOWN_GRACE, EventStreamResponse

__all__ = ["SHUTDOWN_GRACE", "StreamSlots", "add_stream_route", "stream_router"]

_STREAM_DOC: dict[int | str, dict[str, Any]] = {
    204: {"description": "The document (``doc_id``) has finished: no change will follow (browsers stop)"},
    200: {
        "description": "A text/event-stream of status changes: endless, or until the document's final one",
        "content": {
            "text/event-stream": {
                "schema": {"type": "string"},
                "example": 'id: 42\nevent: status\ndata: {"doc_id": "abc123", "status": "parsing", ...}\n\n',
            }
        },
    },
}


class StreamSlots:
    """How many event streams are open, against a limit (``None``: no limit).

    Used on the event loop's thread only (no lock needed). A stream takes a
    slot before its response starts and gives it back the moment it ends,
    whether it finished, the client went away or the server is stopping.
    """

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.open = 0

    def take(self) -> None:
        """Take a slot; ``TooManyStreamsError`` (503) when every one is taken."""
        if self.limit is not None and self.open >= self.limit:
            raise TooManyStreamsError(self.limit)
        self.open += 1

    def give_back(self) -> None:
        """Give a taken slot back (when its stream ends, however it ends)."""
        self.open -= 1


def add_stream_route(
    router: APIRouter, manager: StatusManager, *, ping_seconds: float = 15.0, max_streams: int | None = None
) -> None:
    """Add ``GET /stream`` (under the router's prefix) streaming ``manager``'s changes.

    At most ``max_streams`` at once (``None``: no limit); one more is a 503
    ``TOO_MANY_STREAMS`` in the error shape.
    """
    slots = StreamSlots(max_streams)

    @router.get(
        "/stream",
        summary="Live status changes (server-sent events)",
        response_class=EventStreamResponse,
        status_code=200,
        responses={**_STREAM_DOC, **error_responses(400, 404, 503)},
    )
    async def stream(
        doc_id: Annotated[
            str | None, Query(max_length=256, description="Only this document's changes")
        ] = None,
        last_event_id: Annotated[
            str | None, Header(alias="Last-Event-ID", description="Resume after this event id")
        ] = None,
    ) -> Response:
        """Every change from now on (or after ``Last-Event-ID``), one event per change.

        With ``doc_id``: only that document's changes, and the stream ends after
        its final one (completed, failed or removed); 404 ``DOCUMENT_NOT_FOUND``
        for a document that does not exist, 204 for one that has already finished
        and has no change left to send; 503 ``TOO_MANY_STREAMS`` when the service
        already serves its limit of streams (``DOCSTATUS_MAX_STREAMS``).
        """
        resume = parse_last_event_id(last_event_id)
        since = await start_seq(manager, resume)
        if doc_id is not None and await run_in_threadpool(_nothing_to_follow, manager, doc_id, since):
            return Response(status_code=204)
        slots.take()
        try:
            feed = manager.event_feed(since)
        except BaseException:
            slots.give_back()
            raise
        opening = opening_frame(since)
        if resume is not None and resume > since:  # the store was reset: say so at once
            opening += frame_bytes(reset_event(since, AHEAD))
        return EventStreamResponse(
            feed, opening, doc_id=doc_id, ping_seconds=ping_seconds, on_close=slots.give_back
        )


def _nothing_to_follow(manager: StatusManager, doc_id: str, since: int) -> bool:
    """Whether ``doc_id`` has finished with no change after ``since``; DocumentNotFoundError if unknown.

    Read after ``since`` was fixed, so a change made in between is still streamed.
    """
    status = manager.get_status(doc_id)
    if status is None:
        raise DocumentNotFoundError(doc_id)
    if not status.status.is_finished:
        return False
    return not any(event["doc_id"] == doc_id for event in manager.changes_since(since))


def stream_router(manager: StatusManager, *, ping_seconds: float = 15.0) -> APIRouter:
    """A router with only ``GET /status/stream`` (``status_router`` includes it already)."""
    router = APIRouter(prefix="/status", tags=["status"], dependencies=[STRICT_QUERY])
    add_stream_route(router, manager, ping_seconds=ping_seconds)
    return router
