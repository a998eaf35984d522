"""Streams that must never be silently wrong: a store restarted empty, a resume beyond the retained log.

Real servers (``docstatus serve`` in a subprocess) and a real redis-server.
Each case ends with a ``reset`` event that says why, then the stream goes on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from _redis_server import RedisServer
from docstatus import StatusManager
from docstatus.stores.sqlite import SQLiteStore
from servers import Server
from sse_client import Frame, Subscriber

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def volatile_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server without persistence: a restart starts it empty."""
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def _docs(sub: Subscriber, prefix: str) -> set[str]:
    return {
        f.json()["doc_id"]
        for f in sub.events
        if f.event == "status" and f.json()["doc_id"].startswith(prefix)
    }


def _resets(sub: Subscriber) -> list[Frame]:
    return [f for f in sub.events if f.event == "reset"]


def test_a_redis_restarted_empty_resets_every_stream_and_they_go_on(
    tmp_path: Path, volatile_redis: RedisServer
) -> None:
    server = Server(tmp_path, env={"DOCSTATUS_STORE": volatile_redis.url, "DOCSTATUS_WORKERS": "0"}).start()
    try:
        asyncio.run(asyncio.wait_for(_restart_empty(server, volatile_redis), 90))
    finally:
        server.stop()


async def _connected(client: httpx.AsyncClient, count: int) -> list[Subscriber]:
    subs = [Subscriber(client, "/status/stream") for _ in range(count)]
    for sub in subs:
        await sub.wait_for(lambda s: bool(s.frames))  # connected: it streams from now on
    return subs


async def _create(manager: StatusManager, prefix: str, numbers: range) -> None:
    for n in numbers:
        await asyncio.to_thread(manager.create_status, f"{prefix}-{n}", f"{prefix}.txt")


def _went_on_after_the_reset(sub: Subscriber) -> None:
    # Every event after the reset is numbered after it: the stream goes on with the new sequence.
    events = sub.events
    at = events.index(_resets(sub)[0])
    ids = [int(f.id or 0) for f in events[at:]]
    assert ids == sorted(ids) and ids[0] <= 5, ids


async def _restart_empty(server: Server, redis: RedisServer) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=httpx.Timeout(20.0)) as client:
        subs = await _connected(client, 3)
        with StatusManager(store=redis.url, cleanup_interval_seconds=None) as manager:
            await _create(manager, "before", range(30))
            for sub in subs:
                await sub.wait_for(lambda s: len(_docs(s, "before-")) == 30)
            redis.stop(kill=True)
            redis.start()  # same port, no data: the sequence starts again at 1
        with StatusManager(store=redis.url, cleanup_interval_seconds=None) as manager:
            await _create(manager, "after", range(5))
            late = await _connected(client, 1)
            for sub in subs:
                await sub.wait_for(lambda s: len(_resets(s)) == 1)
                assert "reset" in _resets(sub)[0].json()["reason"], _resets(sub)
            await _create(manager, "after", range(5, 10))
            for sub in subs + late:
                await sub.wait_for(lambda s: {f"after-{n}" for n in range(5, 10)} <= _docs(s, "after-"))
            for sub in subs:
                _went_on_after_the_reset(sub)
        for sub in subs + late:
            await sub.close()
    health = httpx.get(f"{server.url}/health").json()
    assert health["status"] == "ok", health


def test_a_resume_beyond_the_retained_log_gets_a_reset_that_says_where_the_log_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'status.db'}"
    # A small log to outrun (the server keeps its own default: the test writes the file directly).
    monkeypatch.setattr(SQLiteStore, "LOG_SIZE", 50)
    with StatusManager(store=url, cleanup_interval_seconds=None, progress_interval=0) as manager:
        manager.create_status("old", "o.txt")
        manager.update_status("old", "parsing")
        resume_from = manager.last_seq
        for page in range(1, 301):
            manager.update_status("old", "embedding_visual", page=page, total_pages=300)
        latest = manager.last_seq
        first_kept = manager.changes_since(0)[0]["seq"]
    assert first_kept > resume_from + 1
    server = Server(tmp_path, env={"DOCSTATUS_WORKERS": "0"}).start()
    try:
        asyncio.run(asyncio.wait_for(_resume(server, resume_from, latest, first_kept), 60))
    finally:
        server.stop()


async def _resume(server: Server, resume_from: int, latest: int, first_kept: int) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=httpx.Timeout(20.0)) as client:
        sub = Subscriber(client, "/status/stream", {"Last-Event-ID": str(resume_from)})
        await sub.wait_for(lambda s: bool(s.events))
        reset = sub.events[0]
        assert reset.event == "reset", sub.frames
        body = reset.json()
        assert "dropped" in body["reason"] and body["first_seq"] == first_kept, body
        assert body["seq"] == latest and reset.id == str(latest), body
        # From the reset on, the stream is live: the next change comes, nothing older does.
        with StatusManager(
            store=f"sqlite:///{server.root / 'status.db'}", cleanup_interval_seconds=None
        ) as m:
            await asyncio.to_thread(m.update_status, "old", "embedding_visual", page=300, total_pages=300)
        await sub.wait_for(lambda s: len(s.events) == 2)
        assert sub.events[1].event == "status" and int(sub.events[1].id or 0) == latest + 1
        await sub.close()


def test_a_resume_from_an_id_the_store_never_reached_gets_a_reset(tmp_path: Path) -> None:
    server = Server(tmp_path, env={"DOCSTATUS_WORKERS": "0"}).start()
    try:

        async def resume() -> None:
            async with httpx.AsyncClient(base_url=server.url, timeout=httpx.Timeout(20.0)) as client:
                sub = Subscriber(client, "/status/stream", {"Last-Event-ID": "5000"})
                await sub.wait_for(lambda s: bool(s.events))
                assert sub.events[0].event == "reset" and "ahead" in sub.events[0].json()["reason"]
                await sub.close()

        asyncio.run(asyncio.wait_for(resume(), 30))
    finally:
        server.stop()
