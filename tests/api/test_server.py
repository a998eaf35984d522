"""The service for real: ``docstatus serve`` (uvicorn) in a subprocess, spoken to over loopback.

Covers what only a real server shows: the live event stream (legal
transitions, resuming with ``Last-Event-ID``), shutdown on SIGTERM with
streams open, a restart with work in flight over the same SQLite store
and uploads folder, and hostile request bodies that must not reach its log
as a traceback.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from docstatus.models import Status, can_transition
from servers import SERVE, Server
from sse_client import Frame, Subscriber

pytestmark = pytest.mark.timeout(120)

# A service whose .txt processor reports "parsing" and then never finishes: the
# state a restart must recover from. Settings come from DOCSTATUS_* variables.
STALLING = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent.parent)!r})

import uvicorn
from _processors import stalling_processors
from docstatus.api import create_app
from docstatus.service import Service
from docstatus.settings import ServiceSettings

settings = ServiceSettings.from_env()
app = create_app(service=Service(settings, processors=stalling_processors()))
uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
"""

# The service with a short keep-alive interval for event streams.
QUICK_PINGS = """
import uvicorn
from docstatus.api import create_app
from docstatus.settings import ServiceSettings

settings = ServiceSettings.from_env()
app = create_app(settings, ping_seconds=0.2)
uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
"""

TOKEN = "test-token-123"

#: Exit statuses of a server stopped by SIGTERM after a graceful shutdown (uvicorn
#: re-raises the signal once it has shut down, so the status reports it).
GRACEFUL = (0, -signal.SIGTERM)


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    made: list[Server] = []

    def make(**env: str) -> Server:
        server = Server(tmp_path, env=dict(env))
        made.append(server)
        return server

    yield make
    for server in made:
        if server.proc is not None:
            server.stop(signal.SIGKILL)


@pytest.fixture
def server(make_server: Callable[..., Server]) -> Server:
    return make_server().start()


#: Fields computed when an event is sent (live while a document is active), not when it happened.
LIVE_FIELDS = ("elapsed_time", "wait_time", "run_time", "estimated_remaining")


def stable(body: dict[str, Any]) -> dict[str, Any]:
    """An event's data without the fields that depend on when it was read."""
    return {k: v for k, v in body.items() if k not in LIVE_FIELDS}


def client_for(server: Server) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, timeout=httpx.Timeout(20.0))


def completed(doc_id: str) -> Callable[[Subscriber], bool]:
    def check(sub: Subscriber) -> bool:
        return any(
            f.event == "status" and f.json()["doc_id"] == doc_id and f.json()["status"] == "completed"
            for f in sub.events
        )

    return check


async def wait_idle(client: httpx.AsyncClient, total: int, timeout: float = 30) -> dict[str, Any]:
    """Poll the queue until ``total`` documents exist and none is active."""
    deadline = time.monotonic() + timeout
    while True:
        queue: dict[str, Any] = (await client.get("/status/queue")).json()
        if queue["total"] == total and queue["active"] == 0:
            return queue
        if time.monotonic() > deadline:
            raise AssertionError(f"not idle: {queue}")
        await asyncio.sleep(0.05)


# -- tests ------------------------------------------------------------------------


def test_an_upload_is_watched_over_sse_from_queued_to_completed(server: Server) -> None:
    async def scenario() -> None:
        async with client_for(server) as client:
            sub = Subscriber(client, "/status/stream")
            await sub.wait_for(lambda s: len(s.frames) >= 1)
            assert sub.frames[0].event is None and sub.frames[0].id is not None  # the resume point
            answer = (
                await client.post("/uploads", files={"file": ("story.txt", b"once upon a time\n" * 50)})
            ).json()
            doc_id = answer["doc_id"]
            await sub.wait_for(completed(doc_id))
            await sub.close()
            mine = [f for f in sub.events if f.json()["doc_id"] == doc_id]
            statuses = [Status(f.json()["status"]) for f in mine]
            assert statuses[0] is Status.QUEUED and statuses[-1] is Status.COMPLETED
            for before, after in itertools.pairwise(statuses):
                assert can_transition(before, after), f"{before} -> {after} in {statuses}"
            ids = [int(f.id or 0) for f in sub.events]
            assert ids == sorted(set(ids)), "event ids strictly increase"
            progress = [f.json()["progress"] for f in mine]
            assert progress == sorted(progress)
            final = (await client.get(f"/status/{doc_id}")).json()
            assert final == mine[-1].json()

    asyncio.run(scenario())


def test_a_stream_can_follow_one_document_until_it_ends(server: Server) -> None:
    async def scenario() -> None:
        async with client_for(server) as client:
            before = str((await client.get("/health")).json()["last_seq"])
            first = (await client.post("/uploads", files={"file": ("a.txt", b"first document")})).json()
            # From before the upload: the document may have finished already, and is still followed.
            sub = Subscriber(client, f"/status/stream?doc_id={first['doc_id']}", {"Last-Event-ID": before})
            await sub.wait_for(lambda s: len(s.frames) >= 1)
            second = (await client.post("/uploads", files={"file": ("b.txt", b"second document")})).json()
            await wait_idle(client, 2)
            await client.post(f"/status/{second['doc_id']}/requeue")  # 409: noise that must not show
            # The stream ends by itself after the document's final event.
            await sub.finished()
            assert sub.ended_cleanly
            assert {f.json()["doc_id"] for f in sub.events} == {first["doc_id"]}
            assert sub.events[-1].event == "status" and sub.events[-1].json()["status"] == "completed"
            # Cleanup removes it: a stream for it now is a 404, before any stream starts.
            assert (await client.post("/status/cleanup?max_age_seconds=0")).json() == {"removed": 2}
            gone = await client.get(f"/status/stream?doc_id={first['doc_id']}")
            assert gone.status_code == 404 and gone.json()["code"] == "DOCUMENT_NOT_FOUND"

    asyncio.run(scenario())


def test_resuming_with_last_event_id_gets_exactly_the_missed_events(server: Server) -> None:
    async def scenario() -> None:
        async with client_for(server) as client:
            witness = Subscriber(client, "/status/stream")  # connected throughout
            early = Subscriber(client, "/status/stream")  # drops out after the first document
            await witness.wait_for(lambda s: len(s.frames) >= 1)
            await early.wait_for(lambda s: len(s.frames) >= 1)
            one = (await client.post("/uploads", files={"file": ("1.txt", b"document one")})).json()
            await early.wait_for(completed(one["doc_id"]))
            await early.close()
            last_seen = early.frames[-1].id
            assert last_seen is not None
            for n in range(2, 5):
                await client.post("/uploads", files={"file": (f"{n}.txt", f"document {n}".encode())})
            await wait_idle(client, 4)
            latest = (await client.get("/health")).json()["last_seq"]
            await witness.wait_for(lambda s: int(s.frames[-1].id or 0) >= latest)
            resumed = Subscriber(client, "/status/stream", headers={"Last-Event-ID": last_seen})
            await resumed.wait_for(lambda s: len(s.frames) > 1 and int(s.frames[-1].id or 0) >= latest)
            await resumed.close()
            await witness.close()

            def seen(frames: list[Frame]) -> list[tuple[str | None, str | None, Any]]:
                return [(f.id, f.event, stable(f.json())) for f in frames if f.event is not None]

            missed = [f for f in seen(witness.frames) if int(f[0] or 0) > int(last_seen)]
            assert missed and seen(resumed.frames) == missed
            assert seen(early.frames) + missed == seen(witness.frames)

    asyncio.run(scenario())


def test_sigterm_ends_open_streams_and_the_process(make_server: Callable[..., Server]) -> None:
    server = make_server().start(log_level="info")

    async def scenario() -> None:
        async with client_for(server) as client:
            subs = [Subscriber(client, "/status/stream") for _ in range(3)]
            for sub in subs:
                await sub.wait_for(lambda s: len(s.frames) >= 1)
            assert server.proc is not None
            server.proc.send_signal(signal.SIGTERM)
            for sub in subs:
                await sub.finished()
                assert sub.ended_cleanly

    asyncio.run(scenario())
    assert server.stop(timeout=15) in GRACEFUL
    log = server.log()
    assert "Application shutdown complete" in log and "Traceback" not in log


def test_a_restart_with_work_in_flight_completes_everything(make_server: Callable[..., Server]) -> None:
    first = make_server(DOCSTATUS_WORKERS="2").start(STALLING)
    contents = [f"document number {n}\n".encode() * 20 for n in range(6)]

    async def load() -> list[str]:
        async with client_for(first) as client:
            ids = []
            for n, content in enumerate(contents):
                answer = (await client.post("/uploads", files={"file": (f"{n}.txt", content)})).json()
                ids.append(answer["doc_id"])
            deadline = time.monotonic() + 20
            while True:  # both workers stalled mid-document, the rest queued
                queue = (await client.get("/status/queue")).json()["queue"]
                states = sorted(d["status"] for d in queue)
                if states == ["parsing"] * 2 + ["queued"] * 4:
                    return ids
                assert time.monotonic() < deadline, states
                await asyncio.sleep(0.05)

    ids = asyncio.run(load())
    assert first.stop() in GRACEFUL  # graceful, though two documents never finish

    second = make_server().start()

    async def finish() -> dict[str, Any]:
        async with client_for(second) as client:
            return await wait_idle(client, len(ids))

    queue = asyncio.run(finish())
    assert queue["completed"] == len(ids) and queue["failed"] == 0
    attempts = sorted(d["metadata"]["attempt"] for d in queue["queue"])
    assert attempts == [1, 1, 1, 1, 2, 2]  # the two interrupted ones were retried
    assert sorted(d["doc_id"] for d in queue["queue"]) == sorted(ids)
    assert second.stop() in GRACEFUL


def test_idle_streams_get_keep_alive_comments(make_server: Callable[..., Server]) -> None:
    server = make_server().start(QUICK_PINGS)

    async def scenario() -> list[str]:
        async with client_for(server) as client, client.stream("GET", "/status/stream") as response:
            lines = []
            async for line in response.aiter_lines():
                lines.append(line)
                if sum(1 for seen in lines if seen.startswith(":")) >= 2:
                    return lines
        raise AssertionError("the stream ended")

    lines = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert lines[0].startswith("id: ")  # the resume point comes first
    assert not any(line.startswith("event:") for line in lines)  # nothing happened: only pings


def test_token_guards_posts_on_the_real_server(make_server: Callable[..., Server]) -> None:
    server = make_server(DOCSTATUS_API_TOKEN=TOKEN).start()
    files = {"file": ("t.txt", b"guarded content")}
    refused = httpx.post(f"{server.url}/uploads", files=files)
    assert refused.status_code == 401 and refused.json()["code"] == "UNAUTHORIZED"
    assert [p.name for p in server.uploads.iterdir()] == []
    accepted = httpx.post(f"{server.url}/uploads", files=files, headers={"Authorization": f"Bearer {TOKEN}"})
    assert accepted.status_code == 200 and accepted.json()["status"] == "accepted"
    assert httpx.get(f"{server.url}/status/{accepted.json()['doc_id']}").status_code == 200


def test_oversized_upload_on_the_real_server_leaves_nothing(make_server: Callable[..., Server]) -> None:
    server = make_server(DOCSTATUS_MAX_UPLOAD_BYTES="1000").start()
    response = httpx.post(f"{server.url}/uploads", files={"file": ("big.txt", b"x" * 5000)})
    assert response.status_code == 413 and response.json()["code"] == "UPLOAD_TOO_LARGE"
    assert [p.name for p in server.uploads.iterdir()] == []
    assert httpx.get(f"{server.url}/status/queue").json()["total"] == 0


@pytest.mark.parametrize(
    "body", [b"[" * 100_000, b'{"a":' * 20_000, b'{"event": "upload", "path": ' + b"[" * 5000]
)
def test_webhook_body_nested_too_deep_is_400_not_500(make_server: Callable[..., Server], body: bytes) -> None:
    # Within the body limit (1 MiB), but deeper than the JSON decoder can recurse.
    server = make_server(DOCSTATUS_API_TOKEN=TOKEN).start()
    before = sorted(p.name for p in server.uploads.iterdir())
    response = httpx.post(
        f"{server.url}/webhook",
        content=body,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    answer = response.json()
    assert answer["code"] == "INVALID_REQUEST" and "Traceback" not in response.text
    assert sorted(p.name for p in server.uploads.iterdir()) == before
    assert httpx.get(f"{server.url}/status/queue").json()["total"] == 0


def test_server_log_has_no_traceback_for_deep_webhook_bodies(make_server: Callable[..., Server]) -> None:
    server = make_server(DOCSTATUS_API_TOKEN=TOKEN).start()
    httpx.post(f"{server.url}/webhook", content=b"[" * 50_000, headers={"Authorization": f"Bearer {TOKEN}"})
    assert "RecursionError" not in server.log()


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--port", "99999"], {}, "port"),
        (["--port", "eighty"], {}, "--port"),
        (["--workers", "-1"], {}, "workers"),
        ([], {"DOCSTATUS_MAX_UPLOAD_BYTES": "lots"}, "DOCSTATUS_MAX_UPLOAD_BYTES"),
        (["--store", "ftp://nowhere"], {}, "store"),
        (["--no-such-option"], {}, "unrecognized"),
    ],
)
def test_invalid_serve_options_are_one_line_and_exit_2(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DOCSTATUS_")}
    environ.update(env, DOCSTATUS_DATA=str(tmp_path / "data"))
    result = subprocess.run(
        [sys.executable, "-c", SERVE, "serve", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "error" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_clients_that_drop_their_stream_leave_no_traceback_in_the_log(
    make_server: Callable[..., Server],
) -> None:
    server = make_server().start(log_level="info")
    for _ in range(20):
        with httpx.Client(timeout=10) as client, client.stream("GET", f"{server.url}/status/stream") as reply:
            assert reply.status_code == 200
            next(reply.iter_lines())  # the opening id: frame: the stream is live, then the client goes
    # The server is still serving, and its streams to new clients still work.
    assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200
    assert server.stop(timeout=15) in GRACEFUL
    log = server.log()
    assert "Traceback" not in log and "ERROR" not in log, log[-3000:]
