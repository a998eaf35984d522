"""The ASGI response of ``GET /status/stream``: per change, one send per stream and nothing else.

A stream is a small task of its own taking events from an
:class:`~docstatus.events.EventFeed` and sending each one's shared, encoded
frame (:func:`~docstatus.api.sse.frame_bytes`) as it is: no generator per
stream, no frame encoded per stream, no task per change. While a stream is
idle, a change does not even wake its task: the loop's callback that brings
the change starts the stream's ``send`` itself (:meth:`EventFeed.take_directly`),
as an eager task would; a send that completes at once (the usual case: uvicorn
writes to the socket and returns) costs no wake-up, one that has to wait (a
client that reads slowly) is finished by the stream's task, and until then
changes queue in the feed as usual. What else a stream needs costs nothing
per change:

* a keep-alive comment once the stream has sent nothing for ``ping_seconds``
  (a timer per stream that fires once per interval and wakes the feed only
  when the stream is idle);
* a task per stream blocked in ``receive()``, which closes the feed the
  moment the client goes away (its slot and subscription are given back then);
* one watcher per event loop that notices uvicorn shutting down (its
  ``should_exit``, found through the SIGTERM handler it installs) and ends
  every open stream with a properly terminated body; a stream whose client
  does not take that end within :data:`SHUTDOWN_GRACE` seconds is abandoned.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import signal
from collections.abc import Callable, Generator
from typing import Any

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from ..events import Event, EventFeed
from .sse import frame_bytes, is_final, ping_frame

__all__ = ["HEADERS", "SHUTDOWN_GRACE", "EventStreamResponse"]

log = logging.getLogger(__name__)

#: Seconds a stream may take to finish cleanly once the server shuts down.
SHUTDOWN_GRACE = 2.0

#: The response headers: never stored by a cache, never buffered by a proxy (nginx reads X-Accel-Buffering).
HEADERS: list[tuple[bytes, bytes]] = [
    (b"cache-control", b"no-store"),
    (b"connection", b"keep-alive"),
    (b"x-accel-buffering", b"no"),
    (b"content-type", b"text/event-stream; charset=utf-8"),
]

#: Seconds between two looks at whether the server is shutting down (while streams are open).
EXIT_POLL_SECONDS = 0.5

_END: Message = {"type": "http.response.body", "body": b"", "more_body": False}


class EventStreamResponse(Response):
    """``text/event-stream`` of ``feed``'s changes after the ``opening`` frames (see the module).

    Only ``doc_id``'s changes (and every ``reset``) when given; then the
    stream ends after the document's final change. ``on_close`` is called
    once when the stream ends, however it ends (finished, client gone,
    server stopping, an error); the feed is closed then too.
    """

    # None, not text/event-stream: OpenAPI would then list the route's JSON errors under it too
    # (the content type is in HEADERS; the 200 response's is documented on the route).
    media_type = None

    def __init__(
        self,
        feed: EventFeed,
        opening: bytes,
        *,
        doc_id: str | None = None,
        ping_seconds: float = 15.0,
        on_close: Callable[[], None] = lambda: None,
    ) -> None:
        self.status_code = 200
        self.background = None
        self.raw_headers = list(HEADERS)
        self._feed, self._opening, self._doc_id = feed, opening, doc_id
        self._ping_seconds, self._on_close = ping_seconds, on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stream = _Stream(self._feed, send, self._doc_id)
        # Its own task, because each change resumes the stream: from a task of its own that is a
        # few frames, from the request's task every middleware's frame too (cancelling the
        # request's task cancels this one).
        task = stream.loop.create_task(stream.run(receive, self._opening, self._ping_seconds))
        try:
            await task
        finally:
            self._feed.close()
            self._on_close()


class _Stream:
    """One open stream's state, on its event loop's thread."""

    def __init__(self, feed: EventFeed, send: Send, doc_id: str | None) -> None:
        self.feed, self.send, self.doc_id = feed, send, doc_id
        self.loop = asyncio.get_running_loop()
        self.task: asyncio.Task[None] | None = None
        #: The loop time of the last frame sent, and whether a keep-alive is due.
        self.sent = self.loop.time()
        self.ping_due = False
        self.stopping = False
        self.disconnected = False
        self.abandoned = self.finished = False
        self.timer: asyncio.TimerHandle | None = None
        self.grace: asyncio.TimerHandle | None = None
        #: A send started in the loop's callback that has to wait.
        self.pending: _Rest | None = None
        self.context = contextvars.copy_context()

    async def run(self, receive: Receive, opening: bytes, ping_seconds: float) -> None:
        self.task = asyncio.current_task()
        self.context = contextvars.copy_context()  # the stream task's: sends started elsewhere run in it
        listener = self.loop.create_task(self._listen(receive))
        leave = _server_exit(self.loop).add(self._stop)
        if ping_seconds > 0:
            self.timer = self.loop.call_later(ping_seconds, self._tick, ping_seconds)
        try:
            await self.send({"type": "http.response.start", "status": 200, "headers": list(HEADERS)})
            await self._body(opening)
            self.feed.take_directly(self._send_now)
            await self._events()
            if not self.disconnected:
                await self.send(_END)
        except asyncio.CancelledError:
            if not self.abandoned or self.task is None:
                raise
            self.task.uncancel()  # our own cancel: the client did not take the end in time
        finally:
            self.finished = True
            self.feed.take_directly(None)
            leave()
            listener.cancel()
            for timer in (self.timer, self.grace):
                if timer is not None:
                    timer.cancel()

    async def _events(self) -> None:
        """Send the feed's frames until the stream ends (document finished, stop, client gone)."""
        feed, doc_id, send, loop = self.feed, self.doc_id, self.send, self.loop
        while True:
            event = await feed.next()
            if event is None:
                if await self._woken():
                    return
                continue
            if doc_id is None or _concerns(event, doc_id):
                # Inline, not self._body(): this is the line every change takes in every stream.
                await send({"type": "http.response.body", "body": frame_bytes(event), "more_body": True})
                self.sent = loop.time()
                if doc_id is not None and is_final(event):
                    return

    async def _woken(self) -> bool:
        """Do what the stream was woken for (no event); ``True`` when the stream ends."""
        if self.pending is not None:  # a send started in the loop's callback, to finish
            rest, self.pending = self.pending, None
            await rest
            return False
        if self.stopping or self.feed.closed:
            return True
        if self.ping_due:
            self.ping_due = False
            await self._body(ping_frame())
        return False

    def _send_now(self, event: Event) -> bool:
        """Send ``event``'s frame from the loop's callback (the stream's task waits, idle).

        ``False`` leaves the event to the task: a one-document stream's final
        event (the task ends the body), anything while a send is unfinished or
        the server is stopping, and every event once a send could not start here.
        """
        if self.pending is not None or self.stopping:
            return False
        doc_id = self.doc_id
        if doc_id is not None and not _concerns(event, doc_id):
            return True  # not this stream's: taken, nothing to send
        if doc_id is not None and is_final(event):
            return False
        message = {"type": "http.response.body", "body": frame_bytes(event), "more_body": True}
        try:
            rest = self.context.run(_start, self.send(message).__await__())
        except Exception:
            # Most likely a send that cannot run outside a task (a middleware's anyio cancel scope
            # needs one). The stream sends from its task from now on, this event first; an error
            # of the send itself is then raised there, where it belongs.
            log.debug("an event stream's send needs its task: the stream goes on from it", exc_info=True)
            self.feed.take_directly(None)
            return False
        self.sent = self.loop.time()
        if rest is not None:
            self.pending = rest
            self.feed.wake()
        return True

    async def _body(self, frame: bytes) -> None:
        await self.send({"type": "http.response.body", "body": frame, "more_body": True})
        self.sent = self.loop.time()

    async def _listen(self, receive: Receive) -> None:
        """Wait for the client to go away; then close the feed (which ends the stream at once)."""
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
        except Exception:
            log.debug("reading from an event stream's client failed: it counts as gone", exc_info=True)
        self.disconnected = True
        self.feed.close()

    def _tick(self, interval: float) -> None:
        """The keep-alive timer: due once nothing was sent for ``interval`` seconds."""
        idle = self.loop.time() - self.sent
        if idle >= interval:
            self.ping_due = True
            self.feed.wake()
            idle = 0.0
        self.timer = self.loop.call_later(interval - idle, self._tick, interval)

    def _stop(self) -> None:
        """The server is shutting down: end the body now, or abandon it after the grace period."""
        self.stopping = True
        self.feed.wake()
        self.grace = self.loop.call_later(SHUTDOWN_GRACE, self._abandon)

    def _abandon(self) -> None:
        if self.task is not None and not self.finished and not self.abandoned:
            self.abandoned = True
            self.task.cancel()


def _start(send: Generator[Any, Any, None]) -> _Rest | None:
    """Run ``send`` (an awaitable's ``__await__()``) up to where it first waits: ``None`` when it
    completed, else the rest of it."""
    try:
        waits_for = send.send(None)
    except StopIteration:
        return None
    return _Rest(send, waits_for)


class _Rest:
    """The rest of a coroutine started outside a task, to be awaited by a task.

    What ``await`` would have done with it from the start: the first thing it
    waits for (usually a future) goes to the awaiting task, and every result or
    exception the task sends back goes on to the coroutine.
    """

    def __init__(self, coroutine: Generator[Any, Any, None], waits_for: Any) -> None:
        self.coroutine, self.waits_for = coroutine, waits_for

    def __await__(self) -> Generator[Any, Any, None]:
        coroutine, waits_for = self.coroutine, self.waits_for
        while True:
            try:
                answer = yield waits_for
            except GeneratorExit:
                coroutine.close()
                raise
            except BaseException as exc:  # a cancellation, or the failed future: on to the coroutine
                try:
                    waits_for = coroutine.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    waits_for = coroutine.send(answer)
                except StopIteration:
                    return


def _concerns(event: Event, doc_id: str) -> bool:
    return event["doc_id"] == doc_id or event["type"] == "reset"


class _ServerExit:
    """The streams of one event loop waiting for the server to shut down, and the task that looks."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.stops: dict[int, Callable[[], None]] = {}
        self.tokens = 0
        self.task: asyncio.Task[None] | None = None
        self.exited = False

    def add(self, stop: Callable[[], None]) -> Callable[[], None]:
        """Call ``stop()`` once the server shuts down (at once if it already does); returns the removal."""
        if self.exited:
            stop()
            return lambda: None
        self.tokens += 1
        token = self.tokens
        self.stops[token] = stop
        if self.task is None:
            self.task = self.loop.create_task(self._watch())
        return lambda: self._remove(token)

    def _remove(self, token: int) -> None:
        self.stops.pop(token, None)
        if not self.stops and self.task is not None:
            self.task.cancel()
            self.task = None

    async def _watch(self) -> None:
        while not _uvicorn_exiting():
            await asyncio.sleep(EXIT_POLL_SECONDS)
        self.exited, self.task = True, None
        for stop in tuple(self.stops.values()):
            stop()


_exits: dict[asyncio.AbstractEventLoop, _ServerExit] = {}


def _server_exit(loop: asyncio.AbstractEventLoop) -> _ServerExit:
    """The shutdown watch of ``loop``'s streams: ``.add(stop)`` calls ``stop()`` when the server stops.

    The server is uvicorn's, found through the SIGTERM handler it installs
    (a bound ``Server.handle_exit``) and read each time, so a later server in
    the same process is seen too; without one, nothing is ever stopped.
    """
    watch = _exits.get(loop)
    if watch is None or (watch.exited and not _uvicorn_exiting()):
        for gone in [other for other in _exits if other.is_closed()]:
            del _exits[gone]
        watch = _exits[loop] = _ServerExit(loop)
    return watch


def _uvicorn_exiting() -> bool:
    with contextlib.suppress(Exception):  # no handler, or not uvicorn's: nothing to watch
        server = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
        return bool(getattr(server, "should_exit", False))
    return False
