"""Server-sent events of status changes: the frames of ``GET /status/stream``.

Each change is one event: ``event: status`` with the status JSON exactly as
``GET /status/{doc_id}`` returns it, or ``event: removed`` with
``{"doc_id": ...}`` when cleanup drops a document; its ``id:`` is the change's
sequence number. A client that reconnects with ``Last-Event-ID`` (browsers do
it themselves) first gets every logged change it missed, then live ones.
``event: reset`` (data ``{"reason": ..., "seq": ..., "first_seq": ...}``) says
changes were missed and will not be sent (they were dropped from the retained
log, the store restarted empty, or the id is ahead of the store): the client
reads the listing again and goes on from the reset's ``id``. A client that
reads too slowly gets each document's latest state instead of every change. The
first frame of every stream carries only an ``id:`` (the current sequence
number, no event), so even a client that has seen no change yet resumes from
where it connected. Comment lines keep idle connections open, and the stream
ends (with a properly terminated body) when the server shuts down.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import cast

import anyio
from sse_starlette import ServerSentEvent

from ..errors import InvalidRequestError
from ..events import Event, encoded_once, reset_event
from ..manager import StatusManager
from ..models import FINISHED

__all__ = [
    "RETRY_MS",
    "Frame",
    "event_frame",
    "event_frames",
    "frame_bytes",
    "is_final",
    "parse_last_event_id",
    "start_seq",
]

#: What a stream yields: a frame, or a frame already encoded (shared by every stream).
Frame = ServerSentEvent | bytes

#: The reason of the ``reset`` a client gets when it resumes from an id the store never reached.
AHEAD = "the stream's position is ahead of the status store: it was reset"

#: Milliseconds a browser waits before reconnecting (sent in the first frame).
RETRY_MS = 1000


def event_frame(event: Event) -> ServerSentEvent:
    """The SSE frame for one change, or for a ``reset`` (data: ``reason``, ``seq``, maybe ``first_seq``)."""
    if event["type"] == "reset":
        body = {"reason": event.get("reason", ""), "seq": event["seq"]}
        if "first_seq" in event:
            body["first_seq"] = event["first_seq"]
        return ServerSentEvent(json.dumps(body), event="reset", id=str(event["seq"]))
    if event["type"] == "removed" or event["status"] is None:
        return ServerSentEvent(json.dumps({"doc_id": event["doc_id"]}), event="removed", id=str(event["seq"]))
    data = json.dumps(event["status"], separators=(",", ":"))
    return ServerSentEvent(data, event="status", id=str(event["seq"]))


def frame_bytes(event: Event) -> bytes:
    """``event``'s frame, encoded: built once per event, the same object for every stream that sends it."""
    return encoded_once(event, _encoded_frame)


def _encoded_frame(event: Event) -> bytes:
    return event_frame(event).encode()


def is_final(event: Event) -> bool:
    """Whether nothing more follows ``event`` for its document: it completed, failed or was removed."""
    status = event["status"]
    return event["type"] == "removed" or status is None or status.get("status") in FINISHED


def parse_last_event_id(raw: str | None) -> int | None:
    """The sequence number a ``Last-Event-ID`` header names (``None``: none); ``InvalidRequestError``."""
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


async def event_frames(
    manager: StatusManager, since: int, doc_id: str | None, stop: anyio.Event, *, ahead: bool = False
) -> AsyncIterator[Frame]:
    """The frames of one stream: the opening ``id:`` frame, then every change after ``since``.

    Only ``doc_id``'s changes when given (and every ``reset``), and then the
    stream ends after the document's final change (completed, failed or
    removed); ends when ``stop`` is set. ``ahead``: the client resumed from an
    id beyond the store's latest change (the store was reset), so a ``reset``
    frame follows the opening one.
    """
    yield ServerSentEvent(id=str(since), retry=RETRY_MS)
    if ahead:
        yield frame_bytes(reset_event(since, AHEAD))
    # One stop future per stream, handed to the manager's stream (no task per event to race it).
    stopping = asyncio.ensure_future(stop.wait())
    events = cast(AsyncGenerator[Event, None], manager.events(since, until=stopping))
    try:
        async for event in events:
            if stopping.done():
                return
            if doc_id is None or event["doc_id"] == doc_id or event["type"] == "reset":
                yield frame_bytes(event)
                if doc_id is not None and is_final(event):
                    return
    finally:
        # Reached on shutdown, when the document finished, and when the response cancels this
        # generator because the client went away (then the manager's stream was cancelled too).
        stopping.cancel()
        await events.aclose()


async def start_seq(manager: StatusManager, last_event_id: int | None) -> int:
    """Where a stream starts: after ``Last-Event-ID``, or now; never after the latest change."""
    latest = await asyncio.to_thread(lambda: manager.last_seq)
    # An id from the future (the store was reset) would silence the stream until it caught up.
    return latest if last_event_id is None else min(last_event_id, latest)
