"""The event-stream response of ``GET /status/stream``: what it owes its clients besides the frames.

Headers, keep-alive comments on an idle stream, a client that leaves giving
back its slot and its subscription, and a shutdown that ends every body
properly (abandoning a client that does not take the end). In process over
ASGI where that shows the behaviour, under real uvicorn where the server is
the point.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fastapi import APIRouter, FastAPI

from docstatus import StatusManager
from docstatus.api import install_error_handlers, sse_response
from docstatus.api.routes.stream import add_stream_route
from docstatus.api.sse import opening_frame
from docstatus.api.sse_response import EventStreamResponse
from docstatus.events import EventFeed
from servers import Server
from sse_client import AsgiClient

pytestmark = pytest.mark.timeout(60)

EXPECTED_HEADERS = {
    "cache-control": "no-store",
    "connection": "keep-alive",
    "x-accel-buffering": "no",
    "content-type": "text/event-stream; charset=utf-8",
}


@pytest.fixture
def manager() -> Iterator[StatusManager]:
    with StatusManager(cleanup_interval_seconds=None, progress_interval=0) as manager:
        yield manager


def _app(manager: StatusManager, **options: Any) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    router = APIRouter(prefix="/status")
    add_stream_route(router, manager, **options)
    app.include_router(router)
    return app


def _scope(query: bytes = b"") -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/status/stream",
        "raw_path": b"/status/stream",
        "root_path": "",
        "query_string": query,
        "headers": [(b"host", b"test")],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
    }


def _start(client: AsgiClient) -> dict[str, Any]:
    start: dict[str, Any] = client.messages[0]
    assert start["type"] == "http.response.start"
    return start


def _headers(start: dict[str, Any]) -> dict[str, str]:
    return {name.decode(): value.decode() for name, value in start["headers"]}


def test_a_stream_opens_with_its_headers_and_resume_point(manager: StatusManager) -> None:
    async def main() -> AsgiClient:
        app, client = _app(manager), AsgiClient()
        running = asyncio.ensure_future(app(_scope(), client.receive, client.send))
        await client.wait_for(lambda c: len(c.bodies) >= 1)
        client.left.set()
        await asyncio.wait_for(running, 10)
        return client

    client = asyncio.run(main())
    start = _start(client)
    assert start["status"] == 200
    assert EXPECTED_HEADERS.items() <= _headers(start).items()
    assert client.bodies[0] == b"id: 0\r\nretry: 1000\r\n\r\n"


def test_an_idle_stream_gets_keep_alive_comments_and_a_busy_one_its_frames(manager: StatusManager) -> None:
    async def main() -> AsgiClient:
        client = AsgiClient()
        response = EventStreamResponse(manager.event_feed(0), opening_frame(0), ping_seconds=0.05)
        running = asyncio.ensure_future(response({"type": "http"}, client.receive, client.send))
        await client.wait_for(lambda c: sum(b.startswith(b": ping - ") for b in c.bodies) >= 2)
        await asyncio.to_thread(manager.create_status, "doc", "doc.pdf")
        await client.wait_for(lambda c: any(b"event: status" in b for b in c.bodies))
        client.left.set()
        await asyncio.wait_for(running, 10)
        return client

    client = asyncio.run(main())
    pings = [b for b in client.bodies if b.startswith(b":")]
    assert all(b.startswith(b": ping - ") and b.endswith(b"\r\n\r\n") for b in pings)
    assert client.bodies[0].startswith(b"id: 0")  # the resume point comes first, pings after


def test_a_client_that_leaves_gives_back_its_slot_and_its_subscription(manager: StatusManager) -> None:
    async def open_stream(app: FastAPI) -> tuple[AsgiClient, asyncio.Future[None]]:
        client = AsgiClient()
        running = asyncio.ensure_future(app(_scope(), client.receive, client.send))
        await client.wait_for(lambda c: bool(c.messages))
        return client, running

    async def main() -> None:
        app = _app(manager, max_streams=1)
        first, first_running = await open_stream(app)
        assert _start(first)["status"] == 200
        assert manager._hub.active  # the stream's subscription

        refused, refused_running = await open_stream(app)
        await asyncio.wait_for(refused_running, 10)
        assert _start(refused)["status"] == 503 and b"TOO_MANY_STREAMS" in refused.bodies[0]

        first.left.set()
        await asyncio.wait_for(first_running, 10)  # the response ends when its client leaves
        assert not manager._hub.active  # nobody listens any more
        assert not first.ended  # nobody to end the body for

        again, again_running = await open_stream(app)
        assert _start(again)["status"] == 200  # the slot was given back
        again.left.set()
        await asyncio.wait_for(again_running, 10)

    asyncio.run(main())


class _FakeUvicorn:
    """Stands in for uvicorn's Server: its SIGTERM handler is a bound method and it has should_exit."""

    def __init__(self) -> None:
        self.should_exit = False

    def handle_exit(self, sig: int, frame: object) -> None:
        self.should_exit = True


class _StuckClient(AsgiClient):
    """A client that stops reading after the opening frame: the next send never returns."""

    async def send(self, message: dict[str, Any]) -> None:
        if len(self.bodies) >= 1:
            await asyncio.Event().wait()
        await super().send(message)


@pytest.fixture
def fake_uvicorn(monkeypatch: pytest.MonkeyPatch) -> Iterator[_FakeUvicorn]:
    monkeypatch.setattr(sse_response, "EXIT_POLL_SECONDS", 0.01)
    monkeypatch.setattr(sse_response, "SHUTDOWN_GRACE", 0.2)
    server = _FakeUvicorn()
    previous = signal.signal(signal.SIGTERM, server.handle_exit)
    try:
        yield server
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_server_shutting_down_ends_every_body_and_abandons_a_stuck_client(
    manager: StatusManager, fake_uvicorn: _FakeUvicorn
) -> None:
    async def main() -> tuple[AsgiClient, _StuckClient]:
        app = _app(manager, max_streams=2)
        reader, stuck = AsgiClient(), _StuckClient()
        running = [asyncio.ensure_future(app(_scope(), c.receive, c.send)) for c in (reader, stuck)]
        for client in (reader, stuck):
            await client.wait_for(lambda c: len(c.bodies) >= 1)
        await asyncio.to_thread(manager.create_status, "doc", "doc.pdf")  # the stuck client's last send
        await reader.wait_for(lambda c: len(c.bodies) >= 2)
        fake_uvicorn.should_exit = True
        await asyncio.wait_for(asyncio.gather(*running), 10)  # both end: neither waits for a client
        return reader, stuck

    reader, stuck = asyncio.run(main())
    assert reader.ended  # a properly terminated body
    assert not stuck.ended
    assert not manager._hub.active


def test_a_stream_after_the_server_began_shutting_down_ends_at_once(
    manager: StatusManager, fake_uvicorn: _FakeUvicorn
) -> None:
    async def main() -> AsgiClient:
        app = _app(manager)
        first = AsgiClient()
        running = asyncio.ensure_future(app(_scope(), first.receive, first.send))
        await first.wait_for(lambda c: bool(c.bodies))
        fake_uvicorn.should_exit = True
        await asyncio.wait_for(running, 10)
        late = AsgiClient()
        await asyncio.wait_for(app(_scope(), late.receive, late.send), 10)
        return late

    late = asyncio.run(main())
    assert late.bodies[0].startswith(b"id: ") and late.ended


# -- under real uvicorn --------------------------------------------------------------------

PLAIN_UVICORN = """
import uvicorn
from docstatus.api import create_app
from docstatus.settings import ServiceSettings

settings = ServiceSettings.from_env()
uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning")
"""


def _raw_stream(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    sock.sendall(f"GET /status/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    return sock


def _read_until(sock: socket.socket, marker: bytes | None) -> bytes:
    """What ``sock`` receives until ``marker`` has come (``None``: until the server closes it)."""
    data = b""
    while marker is None or marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.parametrize("script", [None, PLAIN_UVICORN], ids=["docstatus-serve", "uvicorn.run"])
def test_sigterm_ends_each_body_with_its_last_chunk(tmp_path: Path, script: str | None) -> None:
    server = Server(tmp_path, env={"DOCSTATUS_WORKERS": "0"}).start(script)
    try:
        with httpx.stream("GET", f"{server.url}/status/stream", timeout=20) as response:
            assert EXPECTED_HEADERS.items() <= dict(response.headers).items()
            assert response.headers["transfer-encoding"] == "chunked"
        socks = [_raw_stream(server.port) for _ in range(3)]
        try:
            opened = [_read_until(sock, b"retry: 1000\r\n\r\n") for sock in socks]
            assert server.proc is not None
            server.proc.send_signal(signal.SIGTERM)
            for sock, start in zip(socks, opened, strict=True):
                body = start + _read_until(sock, None)  # until the server closes the connection
                assert body.endswith(b"retry: 1000\r\n\r\n\r\n0\r\n\r\n")  # then the last chunk
        finally:
            for sock in socks:
                sock.close()
        assert server.proc.wait(20) in (0, -signal.SIGTERM)
    finally:
        server.stop()


async def _idle(feed: EventFeed) -> None:
    """Until the stream waits for a change: the next one's send starts in the loop's callback."""
    while not feed._box.waiting():
        await asyncio.sleep(0)


class _SlowClient(AsgiClient):
    """A client whose second frame takes until ``go`` is set (its socket is full): that send waits."""

    def __init__(self) -> None:
        super().__init__()
        self.go = asyncio.Event()
        self.waiting = asyncio.Event()

    async def send(self, message: dict[str, Any]) -> None:
        if len(self.bodies) == 2:
            self.waiting.set()
            await self.go.wait()
        await super().send(message)


def test_a_send_that_has_to_wait_is_finished_and_the_changes_after_it_follow_in_order(
    manager: StatusManager,
) -> None:
    async def main() -> list[bytes]:
        client = _SlowClient()
        since = manager.last_seq
        feed = manager.event_feed(since)
        response = EventStreamResponse(feed, opening_frame(since))
        running = asyncio.ensure_future(response({"type": "http"}, client.receive, client.send))
        await client.wait_for(lambda c: len(c.bodies) == 1)
        await asyncio.to_thread(manager.create_status, "doc-0", "doc.pdf")  # sent at once
        await client.wait_for(lambda c: len(c.bodies) == 2)
        await _idle(feed)
        await asyncio.to_thread(manager.create_status, "doc-1", "doc.pdf")  # this send waits
        await asyncio.wait_for(client.waiting.wait(), 10)
        for n in range(2, 6):  # meanwhile: pending in the feed
            await asyncio.to_thread(manager.create_status, f"doc-{n}", "doc.pdf")
        assert manager.flush_events()
        client.go.set()
        await client.wait_for(lambda c: len(c.bodies) == 7)
        client.left.set()
        await asyncio.wait_for(running, 10)
        return client.bodies

    bodies = asyncio.run(main())
    ids = [body.split(b"\r\n", 1)[0] for body in bodies[1:]]
    assert ids == [f"id: {n}".encode() for n in range(1, 7)]  # every change, once, in order
    assert all(b'"doc_id":"doc-%d"' % n in body for n, body in enumerate(bodies[1:]))


class _BrokenClient(AsgiClient):
    """A client whose second frame cannot be sent: the transport fails."""

    async def send(self, message: dict[str, Any]) -> None:
        if len(self.bodies) == 1:
            raise OSError("the transport failed")
        await super().send(message)


def test_a_send_that_fails_ends_the_stream_with_that_error_and_gives_everything_back(
    manager: StatusManager,
) -> None:
    given_back: list[bool] = []

    async def main() -> None:
        client = _BrokenClient()
        since = manager.last_seq
        feed = manager.event_feed(since)
        response = EventStreamResponse(feed, opening_frame(since), on_close=lambda: given_back.append(True))
        running = asyncio.ensure_future(response({"type": "http"}, client.receive, client.send))
        await client.wait_for(lambda c: len(c.bodies) == 1)
        await _idle(feed)
        await asyncio.to_thread(manager.create_status, "doc", "doc.pdf")
        with pytest.raises(OSError, match="the transport failed"):
            await asyncio.wait_for(running, 10)

    asyncio.run(main())
    assert given_back == [True]
    assert not manager._hub.active


class _ScopedClient(AsgiClient):
    """A send that only works inside a task, as a middleware's anyio cancel scope around it does."""

    async def send(self, message: dict[str, Any]) -> None:
        with anyio.CancelScope():
            await super().send(message)


def test_a_send_that_needs_a_task_still_gets_every_frame_in_order(manager: StatusManager) -> None:
    async def main() -> list[bytes]:
        client = _ScopedClient()
        since = manager.last_seq
        feed = manager.event_feed(since)
        response = EventStreamResponse(feed, opening_frame(since))
        running = asyncio.ensure_future(response({"type": "http"}, client.receive, client.send))
        await client.wait_for(lambda c: len(c.bodies) == 1)
        for n in range(5):
            await _idle(feed)  # each change would be sent from the loop's callback
            await asyncio.to_thread(manager.create_status, f"doc-{n}", "doc.pdf")
            await client.wait_for(lambda c, n=n: len(c.bodies) == n + 2)
        client.left.set()
        await asyncio.wait_for(running, 10)
        return client.bodies

    bodies = asyncio.run(main())
    assert [body.split(b"\r\n", 1)[0] for body in bodies[1:]] == [f"id: {n}".encode() for n in range(1, 6)]


def test_a_one_document_stream_sends_only_its_document_and_ends_after_its_final_change(
    manager: StatusManager,
) -> None:
    manager.create_status("mine", "mine.pdf")

    async def main() -> AsgiClient:
        client = AsgiClient()
        since = manager.last_seq
        response = EventStreamResponse(manager.event_feed(since), opening_frame(since), doc_id="mine")
        running = asyncio.ensure_future(response({"type": "http"}, client.receive, client.send))
        await client.wait_for(lambda c: len(c.bodies) == 1)
        await asyncio.to_thread(manager.create_status, "other", "other.pdf")
        await asyncio.to_thread(manager.update_status, "mine", "parsing")
        await asyncio.to_thread(manager.update_status, "other", "parsing")
        await asyncio.to_thread(manager.mark_completed, "mine")
        await asyncio.wait_for(running, 10)  # ended by itself: the document finished
        return client

    client = asyncio.run(main())
    assert client.ended
    frames = client.bodies[1:-1]
    assert [b'"status":"parsing"' in f for f in frames] == [True, False]
    assert all(b'"doc_id":"mine"' in f for f in frames) and b'"status":"completed"' in frames[1]
