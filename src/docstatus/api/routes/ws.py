"""``/ws``: the status changes of ``GET /status/stream`` over a WebSocket.

For frontends written against a WebSocket. Each change is one text message,
the event as subscribers receive it (:class:`~docstatus.events.Event`):
``{"seq", "type": "created" | "updated" | "removed", "doc_id", "status"}``
with ``status`` the JSON of ``GET /status/{doc_id}`` (``null`` when removed),
and ``{"type": "reset", "seq", "reason", ...}`` when changes were missed, as
the SSE stream says it. The first message is ``{"type": "connected", "seq": N}``:
where the stream starts. ``?since=N`` resumes after change ``N`` (what the SSE
stream's ``Last-Event-ID`` does); ``?doc_id=`` follows one document and the
server closes (1000) after its final change. The server sends, the client
only listens (what it sends is ignored). A page of another origin is refused
(403) unless it is one of the configured ``cors_origins``: a browser lets any
page open a WebSocket, so this is what keeps another site from reading statuses.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Iterable
from typing import Annotated, cast

from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect
from starlette.datastructures import Headers

from ...events import Event, reset_event
from ...manager import StatusManager
from ..origins import cross_site_origin
from ..sse import AHEAD, is_final, start_seq

__all__ = ["ws_router"]


def ws_router(manager: StatusManager, *, allowed_origins: Iterable[str] = ()) -> APIRouter:
    """A router with the WebSocket ``/ws`` streaming ``manager``'s changes (see the module docstring)."""
    router = APIRouter()
    allowed = frozenset(o.rstrip("/") for o in allowed_origins)

    @router.websocket("/ws")
    async def status_socket(
        websocket: WebSocket,
        since: Annotated[int | None, Query(ge=0, description="Resume after this change")] = None,
        doc_id: Annotated[str | None, Query(max_length=256, description="Only this document")] = None,
    ) -> None:
        # The handshake is a GET, but a WebSocket is readable from any page: refuse as a POST is.
        if cross_site_origin("POST", Headers(scope=websocket.scope), allowed) is not None:
            await websocket.close(code=1008)
            return
        await websocket.accept()
        with contextlib.suppress(WebSocketDisconnect):  # the client left: nothing more to do
            start = await start_seq(manager, since)
            await websocket.send_json({"type": "connected", "seq": start})
            if since is not None and since > start:
                await websocket.send_json(reset_event(start, AHEAD))
            await _forward(websocket, manager, start, doc_id)

    return router


async def _forward(websocket: WebSocket, manager: StatusManager, since: int, doc_id: str | None) -> None:
    """Send every change after ``since`` (of ``doc_id`` only, when given) until the client leaves."""
    events = cast(AsyncGenerator[Event, None], manager.events(since))
    gone = asyncio.ensure_future(_until_closed(websocket))
    step: asyncio.Future[Event] | None = None
    try:
        while True:
            step = asyncio.ensure_future(anext(events))
            await asyncio.wait({step, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not step.done():
                return
            event = step.result()
            if doc_id is None or event["doc_id"] == doc_id or event["type"] == "reset":
                await websocket.send_json(event)
                if doc_id is not None and event["type"] != "reset" and is_final(event):
                    await websocket.close(code=1000)
                    return
    finally:
        # As in the SSE stream: a step still running the manager's stream is unwound first.
        gone.cancel()
        if step is not None and not step.done():
            step.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await step
        await events.aclose()


async def _until_closed(websocket: WebSocket) -> None:
    # Reads (and drops) what the client sends; returns when it closes or the server shuts down.
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
