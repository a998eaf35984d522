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
import re
from datetime import UTC, datetime

from ..errors import InvalidRequestError
from ..events import AHEAD, Event, encoded_once
from ..manager import StatusManager
from ..models import FINISHED

__all__ = [
    "AHEAD",
    "RETRY_MS",
    "encode_frame",
    "frame_bytes",
    "is_final",
    "opening_frame",
    "parse_last_event_id",
    "ping_frame",
    "start_seq",
]

#: Milliseconds a browser waits before reconnecting (sent in the first frame).
RETRY_MS = 1000

#: Lines end with CRLF (the SSE format allows CRLF, LF or CR; every client reads each).
_EOL = "\r\n"
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def encode_frame(
    *,
    data: str | None = None,
    event: str | None = None,
    id: str | None = None,
    retry: int | None = None,
    comment: str | None = None,
) -> bytes:
    """One SSE frame, encoded: comment lines, ``id``, ``event``, one ``data:`` line per line, ``retry``.

    Line breaks inside ``data`` and ``comment`` become separate lines; in
    ``id`` and ``event`` they are dropped (they would end the field).
    """
    lines = [f": {line}" for line in _LINE_BREAK.split(comment)] if comment is not None else []
    if id is not None:
        lines.append("id: " + _LINE_BREAK.sub("", id))
    if event is not None:
        lines.append("event: " + _LINE_BREAK.sub("", event))
    if data is not None:
        lines.extend(f"data: {line}" for line in _LINE_BREAK.split(data))
    if retry is not None:
        lines.append(f"retry: {retry}")
    return (_EOL.join(lines) + _EOL + _EOL).encode()


def opening_frame(since: int) -> bytes:
    """The first frame of every stream: only the resume point (``id:``) and ``retry:``, no event."""
    return encode_frame(id=str(since), retry=RETRY_MS)


def ping_frame() -> bytes:
    """A keep-alive: a comment line (``: ping - <UTC time>``), which clients ignore."""
    return encode_frame(comment=f"ping - {datetime.now(UTC)}")


def frame_bytes(event: Event) -> bytes:
    """``event``'s frame, encoded: built once per event, the same object for every stream that sends it.

    ``event: status`` with the status JSON, ``event: removed`` with
    ``{"doc_id": ...}``, or ``event: reset`` with ``reason``, ``seq`` and maybe
    ``first_seq``; the ``id:`` is the event's ``seq``.
    """
    return encoded_once(event, _encoded_frame)


def _encoded_frame(event: Event) -> bytes:
    seq = str(event["seq"])
    if event["type"] == "reset":
        body = {"reason": event.get("reason", ""), "seq": event["seq"]}
        if "first_seq" in event:
            body["first_seq"] = event["first_seq"]
        return encode_frame(data=json.dumps(body), event="reset", id=seq)
    if event["type"] == "removed" or event["status"] is None:
        return encode_frame(data=json.dumps({"doc_id": event["doc_id"]}), event="removed", id=seq)
    return encode_frame(data=json.dumps(event["status"], separators=(",", ":")), event="status", id=seq)


def is_final(event: Event) -> bool:
    """Whether nothing more follows ``event`` for its document: it completed, failed or was removed
    (also true of a ``reset``, which has no status: a one-document stream ends after one)."""
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


async def start_seq(manager: StatusManager, last_event_id: int | None) -> int:
    """Where a stream starts: after ``Last-Event-ID``, or now; never after the latest change."""
    latest = await asyncio.to_thread(lambda: manager.last_seq)
    # An id from the future (the store was reset) would silence the stream until it caught up.
    return latest if last_event_id is None else min(last_event_id, latest)
