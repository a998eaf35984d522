"""``/ws`` on a real server (uvicorn with its WebSocket implementation) and a real WebSocket client."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from docstatus import StatusManager
from servers import NO_WORKERS, Server
from sse_client import frames

pytestmark = pytest.mark.timeout(60)

#: Exit statuses of a server stopped by SIGTERM after a graceful shutdown (uvicorn re-raises it).
GRACEFUL = (0, -signal.SIGTERM)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(tmp_path_factory.mktemp("ws")).start(NO_WORKERS)
    yield running
    assert running.stop() in GRACEFUL, running.log()
    assert "Traceback" not in running.log(), running.log()


@pytest.fixture
def store(server: Server) -> Iterator[StatusManager]:
    """A manager on the server's own store, as a worker process would have."""
    with StatusManager(store=f"sqlite:///{server.root / 'status.db'}", cleanup_interval_seconds=None) as m:
        yield m


def _socket(server: Server, **params: Any) -> ClientConnection:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return connect(f"ws://127.0.0.1:{server.port}/ws" + (f"?{query}" if query else ""), open_timeout=10)


def _next(ws: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(ws.recv(timeout=10))
    return message


def test_the_socket_streams_every_change_as_the_sse_stream_does(server: Server, store: StatusManager) -> None:
    with _socket(server) as ws:
        opening = _next(ws)
        assert opening["type"] == "connected" and opening["seq"] == store.last_seq
        store.create_status("ws-1", "a.pdf")
        store.update_status("ws-1", "parsing")
        got = [_next(ws), _next(ws)]
    assert [(e["type"], e["doc_id"]) for e in got] == [("created", "ws-1"), ("updated", "ws-1")]
    assert [e["seq"] for e in got] == [opening["seq"] + 1, opening["seq"] + 2]
    # The status JSON of GET /status/{doc_id} (as of the change), and the SSE stream's frames.
    now = httpx.get(f"{server.url}/status/ws-1").json()
    assert set(got[1]["status"]) == set(now)
    assert {k: got[1]["status"][k] for k in ("doc_id", "status", "progress", "stage")} == {
        k: now[k] for k in ("doc_id", "status", "progress", "stage")
    }
    sse = _sse_replay(server, opening["seq"], 2)
    assert [f.json() for f in sse] == [e["status"] for e in got]


def _sse_replay(server: Server, after: int, count: int) -> list[Any]:
    import asyncio

    async def read() -> list[Any]:
        async with (
            httpx.AsyncClient(timeout=10) as client,
            client.stream(
                "GET", f"{server.url}/status/stream", headers={"Last-Event-ID": str(after)}
            ) as answer,
        ):
            got = []
            async for frame in frames(answer):
                if frame.event is not None:
                    got.append(frame)
                if len(got) == count:
                    return got
        return got

    return asyncio.run(read())


def test_a_client_that_leaves_at_once_costs_the_server_nothing(server: Server, store: StatusManager) -> None:
    for _ in range(3):
        with _socket(server):
            pass
    store.create_status("ws-gone", "e.pdf")
    with _socket(server) as ws:
        assert _next(ws)["type"] == "connected"  # and the module's server logs no traceback


def test_since_resumes_after_a_change(server: Server, store: StatusManager) -> None:
    store.create_status("ws-2", "b.pdf")
    first = store.last_seq
    store.update_status("ws-2", "parsing")
    store.mark_completed("ws-2")
    with _socket(server, since=first) as ws:
        assert _next(ws) == {"type": "connected", "seq": first}
        replay = [_next(ws), _next(ws)]
    assert [e["seq"] for e in replay] == [first + 1, first + 2]
    assert replay[-1]["status"]["status"] == "completed"


def test_a_socket_for_one_document_closes_after_its_final_change(
    server: Server, store: StatusManager
) -> None:
    store.create_status("ws-3", "c.pdf")
    store.create_status("ws-other", "d.pdf")
    with _socket(server, doc_id="ws-3") as ws:
        _next(ws)
        store.update_status("ws-other", "parsing")
        store.mark_failed("ws-3", "broken")
        last = _next(ws)
        assert last["doc_id"] == "ws-3" and last["status"]["status"] == "failed"
        with pytest.raises(ConnectionClosedOK):
            ws.recv(timeout=10)


def test_a_socket_from_another_sites_page_is_refused(server: Server) -> None:
    with pytest.raises(InvalidStatus) as info:
        connect(f"ws://127.0.0.1:{server.port}/ws", origin="http://evil.example", open_timeout=10)  # type: ignore[arg-type]
    assert info.value.response.status_code == 403
    with connect(f"ws://127.0.0.1:{server.port}/ws", origin=server.url, open_timeout=10) as ws:  # type: ignore[arg-type]
        assert _next(ws)["type"] == "connected"


def test_the_server_stops_with_a_socket_open(tmp_path: Any) -> None:
    running = Server(tmp_path).start(NO_WORKERS)
    try:
        with _socket(running) as ws:
            _next(ws)
            assert running.stop(signal.SIGTERM) in GRACEFUL, running.log()
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=10)
    finally:
        running.stop(signal.SIGKILL)
    assert "Traceback" not in running.log(), running.log()
