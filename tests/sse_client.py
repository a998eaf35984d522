"""An SSE client for the tests that read a real server's event streams (``GET /status/stream``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

__all__ = ["AsgiClient", "Frame", "Subscriber", "frame_fields", "frames"]


@dataclass
class Frame:
    id: str | None
    event: str | None
    data: str | None

    def json(self) -> Any:
        return None if self.data is None else json.loads(self.data)


async def frames(response: httpx.Response) -> AsyncIterator[Frame]:
    """Parse a text/event-stream into frames (comment lines skipped; id-only frames kept)."""
    fields: dict[str, list[str]] = {}
    async for line in response.aiter_lines():
        if line == "":
            if fields:
                data = "\n".join(fields["data"]) if "data" in fields else None
                yield Frame(fields.get("id", [None])[-1], fields.get("event", [None])[-1], data)
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields.setdefault(name, []).append(value.removeprefix(" "))


def frame_fields(lines: Iterable[str]) -> Iterator[dict[str, str]]:
    """The frames of a text/event-stream read line by line (a sync client's): each as its fields,
    the last value of a field kept, comment lines skipped."""
    frame: dict[str, str] = {}
    for line in lines:
        if not line:
            if frame:
                yield frame
            frame = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(":")
            frame[key] = value.strip()


class Subscriber:
    """A background task reading one event stream into ``self.frames``."""

    def __init__(self, client: httpx.AsyncClient, path: str, headers: dict[str, str] | None = None) -> None:
        self.frames: list[Frame] = []
        self.ended_cleanly = False
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._read(client, path, headers or {}))

    async def _read(self, client: httpx.AsyncClient, path: str, headers: dict[str, str]) -> None:
        async with client.stream("GET", path, headers=headers) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            async for frame in frames(response):
                self.frames.append(frame)
                self._changed.set()
        self.ended_cleanly = True
        self._changed.set()

    @property
    def events(self) -> list[Frame]:
        return [f for f in self.frames if f.event is not None]

    async def wait_for(self, predicate: Callable[[Subscriber], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if self._task.done():
                self._task.result()
                raise AssertionError(f"stream ended early: {self.frames}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting; frames so far: {self.frames}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def finished(self, timeout: float = 20) -> None:
        await asyncio.wait_for(asyncio.shield(self._task), timeout)


class AsgiClient:
    """The client side of one ASGI response, in process: what it was sent, and leaving on demand."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.left = asyncio.Event()
        self._sent = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self.left.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        self._sent.set()

    @property
    def bodies(self) -> list[bytes]:
        return [m["body"] for m in self.messages if m["type"] == "http.response.body"]

    @property
    def ended(self) -> bool:
        """Whether the body was ended properly (the last message says there is no more)."""
        last = self.messages[-1] if self.messages else {}
        return last.get("type") == "http.response.body" and not last.get("more_body", False)

    async def wait_for(self, predicate: Callable[[AsgiClient], bool], timeout: float = 10) -> None:
        """Wait (up to ``timeout`` seconds) until ``predicate(self)`` holds, checked after every message."""
        async with asyncio.timeout(timeout):
            while not predicate(self):
                self._sent.clear()
                await self._sent.wait()
