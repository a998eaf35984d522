"""The HTTP API against a real uvicorn (in a subprocess), loopback only.

* ``GET /status/{doc_id}`` at 64 concurrent connections, beside a bare FastAPI
  endpoint returning a constant dict served by the same process with the same
  settings (the floor; target: at least 0.7x its throughput). ``wrk`` drives
  the load when it is installed (``apt-get install wrk``), otherwise an async
  httpx client (which then limits both numbers alike).
* SSE fan-out: the time for one change (an upload) to reach 100, 500 and
  1,000 connected ``/status/stream`` subscribers, measured from the upload
  request (SQLite store; target: 1,000 within 30 ms).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from ._harness import Row, Table

CONNECTIONS = 64
LOAD_SECONDS = 4
ROUNDS = 2
SUBSCRIBER_COUNTS = (100, 500, 1000)
FANOUT_ROUNDS = 7

SERVER = """
import sys
import uvicorn
from docstatus.api import create_app
from docstatus.settings import ServiceSettings

root, port = sys.argv[1], int(sys.argv[2])
settings = ServiceSettings(
    store=f"sqlite:///{root}/status.db", uploads=f"{root}/uploads", data_dir=f"{root}/data", max_streams=1100
)
app = create_app(settings, start_workers=False)
manager = app.state.service.manager
if manager.get_status("bench-doc") is None:
    metadata = {"format": "pdf", "format_type": "visual", "file_size": 2458624}
    manager.create_status("bench-doc", "report.pdf", metadata)
    manager.update_status("bench-doc", "parsing")
    manager.update_status("bench-doc", "embedding_visual", page=13, total_pages=20)

CONSTANT = {"status": "ok", "value": 42}

@app.get("/bare")
async def bare() -> dict:
    return CONSTANT

uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _Server:
    def __init__(self, root: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(root), str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("the benchmark server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- request throughput ----------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if match is None:
        raise ValueError(f"cannot read wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _wrk(url: str) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) from one wrk run."""
    out = subprocess.run(
        ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{LOAD_SECONDS}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=LOAD_SECONDS + 30,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s*50%\s+(\S+)\s*$", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s*99%\s+(\S+)\s*$", out, re.M).group(1))  # type: ignore[union-attr]
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors against {url}:\n{out}")
    return rps, p50, p99


async def _httpx_load(url: str) -> tuple[float, float, float]:
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        stop = time.perf_counter() + LOAD_SECONDS

        async def worker() -> None:
            while time.perf_counter() < stop:
                start = time.perf_counter()
                response = await client.get(url)
                response.raise_for_status()
                latencies.append((time.perf_counter() - start) * 1e3)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))
        elapsed = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100)
    return len(latencies) / elapsed, cuts[49], cuts[98]


def _load(url: str) -> tuple[float, float, float]:
    if shutil.which("wrk"):
        return _wrk(url)
    return asyncio.run(_httpx_load(url))


def _throughput(server: _Server, table: Table) -> None:
    status_url = f"{server.url}/status/bench-doc"
    bare_url = f"{server.url}/bare"
    _load(status_url)  # warm-up
    runs: dict[str, list[tuple[float, float, float]]] = {"status": [], "bare": []}
    for _ in range(ROUNDS):  # interleaved, so a disturbance hits both alike
        runs["bare"].append(_load(bare_url))
        runs["status"].append(_load(status_url))
    status = max(runs["status"])
    bare = max(runs["bare"])
    tool = "wrk" if shutil.which("wrk") else "httpx"
    table.add(
        Row(
            f"GET /status/{{doc_id}} req/s ({CONNECTIONS} conns, {tool})",
            status[0],
            "bare FastAPI constant dict",
            bare[0],
            "≥ 0.7× floor",
            unit="req/s",
        )
    )
    table.add(Row("GET /status/{doc_id} p50 latency", status[1], "bare FastAPI p50", bare[1], unit="ms"))
    table.add(Row("GET /status/{doc_id} p99 latency", status[2], "bare FastAPI p99", bare[2], unit="ms"))


# -- SSE fan-out -----------------------------------------------------------------------


async def _subscribe(port: int, n: int, ready: asyncio.Event, counter: list[int], got: asyncio.Event) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /status/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    await writer.drain()
    try:
        await reader.readuntil(b"retry: ")  # the first frame: subscribed
        counter[0] += 1
        if counter[0] == n:
            ready.set()
        while True:
            line = await reader.readline()
            if not line:
                return
            if line.startswith(b"event: status"):
                counter[1] += 1
                if counter[1] == n:
                    got.set()
                    counter[1] = 0
    finally:
        writer.close()


class _Clients:
    """``n`` open streams on one server, and a way to time one change reaching all of them."""

    def __init__(self, server: _Server, n: int) -> None:
        self.server, self.n = server, n
        self.ready, self.got = asyncio.Event(), asyncio.Event()
        self.counter = [0, 0]
        self.tasks: list[asyncio.Task[None]] = []
        self.uploads = 0

    async def open(self) -> None:
        for _ in range(self.n):
            args = (self.server.port, self.n, self.ready, self.counter, self.got)
            self.tasks.append(asyncio.create_task(_subscribe(*args)))
        await asyncio.wait_for(self.ready.wait(), 60)

    async def one_change(self, client: httpx.AsyncClient) -> float:
        """Milliseconds from an upload request until every stream has its change."""
        self.got.clear()
        self.uploads += 1
        body = f"fan-out {self.n} round {self.uploads} {time.time()}".encode()
        start = time.perf_counter()
        (await client.post(f"{self.server.url}/uploads", files={"file": ("f.txt", body)})).raise_for_status()
        await asyncio.wait_for(self.got.wait(), 60)
        return (time.perf_counter() - start) * 1e3

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def _fanout(servers: dict[int, _Server]) -> dict[int, float]:
    """The median per count, one server per count, rounds interleaved A B C C B A (as median_interleaved)."""
    groups = {n: _Clients(server, n) for n, server in servers.items()}
    samples: dict[int, list[float]] = {n: [] for n in groups}
    try:
        for group in groups.values():
            await group.open()
        async with httpx.AsyncClient(timeout=30) as client:
            for turn in range(FANOUT_ROUNDS):
                for n in list(groups) if turn % 2 == 0 else reversed(list(groups)):
                    samples[n].append(await groups[n].one_change(client))
    finally:
        for group in groups.values():
            await group.close()
    return {n: statistics.median(values) for n, values in samples.items()}


def run() -> list[Table]:
    table = Table("HTTP API (uvicorn, loopback)")
    with tempfile.TemporaryDirectory(prefix="docstatus-bench-api-") as root:
        servers: dict[int, _Server] = {}
        try:
            for n in SUBSCRIBER_COUNTS:
                (Path(root) / str(n)).mkdir()
                servers[n] = _Server(Path(root) / str(n))
            _throughput(servers[SUBSCRIBER_COUNTS[0]], table)
            medians = asyncio.run(_fanout(servers))
            for n, median in medians.items():
                name = f"one change reaches {n:,} SSE clients, SQLite store (median of {FANOUT_ROUNDS})"
                table.add(Row(name, median, target="≤ 30 ms" if n == 1000 else "", unit="ms"))
        finally:
            for server in servers.values():
                server.stop()
    return [table]


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    for result in run():
        print(result.markdown())
