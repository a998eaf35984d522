"""Many event streams at once, for real: a cap with a clear 503 beyond it, bounded lag, freed slots.

One ``docstatus serve`` process and one asyncio client process holding every
stream; changes are made straight on the service's SQLite store.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from docstatus import StatusManager
from servers import Server

pytestmark = pytest.mark.timeout(180)

CAP = 300
EXTRA = 50
DOCS = 20


class Reader:
    """One stream: its HTTP status, and the last status seen per document."""

    def __init__(self) -> None:
        self.status = 0
        self.body: dict[str, object] = {}
        self.connected = asyncio.Event()
        self.latest: dict[str, str] = {}

    async def run(self, client: httpx.AsyncClient) -> None:
        async with client.stream("GET", "/status/stream") as response:
            self.status = response.status_code
            if response.status_code != 200:
                self.body = json.loads(await response.aread())
                self.connected.set()
                return
            async for line in response.aiter_lines():
                self.connected.set()  # the opening id frame: live from here on
                if line.startswith("data:"):
                    data = json.loads(line[5:])
                    self.latest[data["doc_id"]] = data["status"]


async def _open(client: httpx.AsyncClient, count: int) -> tuple[list[Reader], list[asyncio.Task[None]]]:
    readers = [Reader() for _ in range(count)]
    tasks = [asyncio.create_task(r.run(client)) for r in readers]
    await asyncio.wait_for(asyncio.gather(*(r.connected.wait() for r in readers)), 60)
    return readers, tasks


async def _close(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _changes(url: str) -> None:
    with StatusManager(store=url, cleanup_interval_seconds=None) as manager:
        for n in range(DOCS):
            manager.create_status(f"doc-{n}", f"doc-{n}.pdf")
            manager.update_status(f"doc-{n}", "parsing")
        for page in range(1, 21):
            for n in range(DOCS):
                manager.update_status(f"doc-{n}", "embedding_visual", page=page, total_pages=20)
        for n in range(DOCS):
            manager.mark_completed(f"doc-{n}")


async def _all_completed(readers: list[Reader]) -> None:
    done = {f"doc-{n}": "completed" for n in range(DOCS)}
    while any(r.latest != done for r in readers):
        await asyncio.sleep(0.1)


async def _many_streams(server: Server) -> None:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=server.url, timeout=httpx.Timeout(60.0), limits=limits) as client:
        readers, tasks = await _open(client, CAP + EXTRA)
        accepted = [r for r in readers if r.status == 200]
        refused = [r for r in readers if r.status != 200]
        assert len(accepted) == CAP, [r.status for r in refused][:5]
        assert {r.status for r in refused} == {503}
        assert {r.body["code"] for r in refused} == {"TOO_MANY_STREAMS"}, refused[0].body
        assert str(CAP) in str(refused[0].body["error"]), refused[0].body
        health = await client.get("/health")
        assert health.status_code == 200  # a full set of streams leaves the rest of the service alone

        # Every stream gets every document's final state, within a bounded time.
        await asyncio.to_thread(_changes, f"sqlite:///{server.root / 'status.db'}")
        await asyncio.wait_for(_all_completed(accepted), 90)

        # Gone streams give their slots back at once: a full set opens again.
        await _close(tasks)
        for _ in range(50):
            again, tasks = await _open(client, CAP)
            if all(r.status == 200 for r in again):
                break
            await _close(tasks)
            await asyncio.sleep(0.1)
        assert all(r.status == 200 for r in again), [r.status for r in again if r.status != 200][:5]
        await _close(tasks)


def test_streams_beyond_the_cap_get_a_503_and_the_rest_keep_up(tmp_path: Path) -> None:
    env = {"DOCSTATUS_WORKERS": "0", "DOCSTATUS_MAX_STREAMS": str(CAP)}
    server = Server(tmp_path, env=env).start()
    try:
        asyncio.run(asyncio.wait_for(_many_streams(server), 170))
    finally:
        server.stop()


# -- a thousand streams, one change ------------------------------------------------------

THOUSAND = 1000


async def _raw_stream(port: int, opened: list[int], all_open: asyncio.Event) -> bytes:
    """One plain HTTP/1.1 stream (no client library: a thousand of them stay cheap); returns
    the first status frame it gets."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET /status/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        await writer.drain()
        await reader.readuntil(b"retry: ")  # the opening frame: live from here on
        opened[0] += 1
        if opened[0] == THOUSAND:
            all_open.set()
        await reader.readuntil(b"event: status")
        return await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.close()


async def _thousand(server: Server) -> list[bytes]:
    opened, all_open = [0], asyncio.Event()
    tasks = [asyncio.create_task(_raw_stream(server.port, opened, all_open)) for _ in range(THOUSAND)]
    try:
        await asyncio.wait_for(all_open.wait(), 90)
        url = f"sqlite:///{server.root / 'status.db'}"

        def change() -> None:
            with StatusManager(store=url, cleanup_interval_seconds=None) as manager:
                manager.create_status("fanned-out", "fanned-out.pdf")

        await asyncio.to_thread(change)
        return await asyncio.wait_for(asyncio.gather(*tasks), 90)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def test_one_change_reaches_a_thousand_streams(tmp_path: Path) -> None:
    env = {
        "DOCSTATUS_WORKERS": "0",
        "DOCSTATUS_MAX_STREAMS": str(THOUSAND + 10),
        "DOCSTATUS_LIMIT_CONCURRENCY": str(THOUSAND + 100),
    }
    server = Server(tmp_path, env=env).start()
    try:
        frames = asyncio.run(asyncio.wait_for(_thousand(server), 170))
    finally:
        server.stop()
    assert len(frames) == THOUSAND
    for frame in frames:
        data = frame.split(b"data: ", 1)[1].strip()
        assert json.loads(data)["doc_id"] == "fanned-out"
