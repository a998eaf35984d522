"""The HTTP API against a real uvicorn (in a subprocess), loopback only.

* ``GET /status/{doc_id}`` at 64 concurrent connections, beside a bare FastAPI
  endpoint returning a constant dict served by the same process with the same
  settings (the floor; target: at least 0.7x its throughput). ``wrk`` drives
  the load when it is installed (``apt-get install wrk``), otherwise an async
  httpx client (which then limits both numbers alike). The server also serves
  ``/bare/status/{doc_id}``, a hand-rolled status endpoint (a status dict from a
  global dict behind a lock), the second floor of ``bench_reads``.
* SSE fan-out: the time for one change (an upload) to reach 100, 500 and
  1,000 connected ``/status/stream`` subscribers, measured from the upload
  request (SQLite store; target: 1,000 within 30 ms), and the server process's
  CPU time per change (all its threads, as it reads its own clock) for the most
  clients beside the fewest. The clients are socket callbacks on uvloop in
  the benchmark's process (no task or line parsing per client), so that they
  cost less than the server they measure, and run on another CPU than the
  servers (see ``_apart``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import cast

import httpx

from ._harness import Row, Table

CONNECTIONS = 64
LOAD_SECONDS = 4
ROUNDS = 2
SUBSCRIBER_COUNTS = (100, 500, 1000)
FANOUT_ROUNDS = 7
#: Seconds to let the server finish a change's work before its CPU time is read.
SETTLE_SECONDS = 0.3

SERVER = """
import sys
import time
import uvicorn
from docstatus.api import create_app
from docstatus.settings import ServiceSettings

port, root = int(sys.argv[1]), sys.argv[2]
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

# What teams hand-roll before docstatus: a global dict of status dicts behind a lock,
# here holding a status body of the same size and shape as the one docstatus serves.
import threading
HAND_ROLLED = {"bench-doc": manager.get_status_json("bench-doc")}
HAND_LOCK = threading.Lock()

@app.get("/bare/status/{doc_id}")
async def bare_status(doc_id: str) -> dict:
    with HAND_LOCK:
        return dict(HAND_ROLLED[doc_id])

@app.get("/cpu")
async def cpu() -> float:
    return time.process_time()

uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _Server:
    SCRIPT = SERVER

    def __init__(self, root: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", self.SCRIPT, str(self.port), str(root)],
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

    async def change(self, client: httpx.AsyncClient, body: bytes) -> None:
        """Make one change that every stream gets: upload a new file (``body``)."""
        (await client.post(f"{self.url}/uploads", files={"file": ("f.txt", body)})).raise_for_status()

    def cpu_seconds(self) -> float:
        """The CPU time the server process has used so far, all its threads (its own clock)."""
        return float(httpx.get(f"{self.url}/cpu", timeout=10).json())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


#: The floor of the fan-out: a bare uvloop server that writes one status-sized frame to every
#: open stream when asked (``GET /change``), one socket write each; no HTTP framework, no store.
RAW_FANOUT = """
import asyncio, json, sys, time, uvloop

port = int(sys.argv[1])
status = {"doc_id": "f" * 64, "filename": "fan-out.txt", "status": "queued", "progress": 0.0,
          "stage": None, "page": None, "total_pages": None, "error": None, "metadata": {"format": "txt",
          "format_type": "text", "file_size": 40, "attempt": 1}, "started_at": "2026-12-02T06:00:00+00:00",
          "updated_at": "2026-12-02T06:00:00+00:00", "completed_at": None, "elapsed_time": 0.0,
          "estimated_remaining": None}
data = json.dumps(status, separators=(",", ":"))

def chunk(payload):
    return b"%x\\r\\n%s\\r\\n" % (len(payload), payload)

frame = chunk(f"id: 7\\r\\nevent: status\\r\\ndata: {data}\\r\\n\\r\\n".encode())
opening = b"HTTP/1.1 200 OK\\r\\ncontent-type: text/event-stream\\r\\ntransfer-encoding: chunked\\r\\n\\r\\n"
opening += chunk(b"id: 0\\r\\nretry: 1000\\r\\n\\r\\n")
streams = []

def answer(transport, text):
    data = text.encode()
    transport.write(b"HTTP/1.1 200 OK\\r\\ncontent-length: %d\\r\\n\\r\\n%s" % (len(data), data))

class Connection(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
    def data_received(self, data):
        if data.startswith(b"GET /status/stream"):
            streams.append(self.transport)
            self.transport.write(opening)
        elif data.startswith(b"GET /change"):
            for stream in streams:
                stream.write(frame)
            answer(self.transport, "ok")
        elif data.startswith(b"GET /cpu"):
            answer(self.transport, str(time.process_time()))
        else:
            answer(self.transport, "ok")
    def connection_lost(self, exc):
        if self.transport in streams:
            streams.remove(self.transport)

async def main():
    server = await asyncio.get_running_loop().create_server(Connection, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()

uvloop.run(main())
"""


class _RawFanout(_Server):
    """The floor: :data:`RAW_FANOUT` in a subprocess; a change is one ``GET /change``."""

    SCRIPT = RAW_FANOUT

    async def change(self, client: httpx.AsyncClient, body: bytes) -> None:
        (await client.get(f"{self.url}/change")).raise_for_status()


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


class _Stream(asyncio.Protocol):
    """One ``/status/stream`` connection, read as its bytes arrive: a callback, no task per client,
    so that a thousand of them measure the server rather than the clients."""

    MARK = b"event: status"

    def __init__(self, clients: _Clients) -> None:
        self.clients = clients
        self.tail = b""
        self.opened = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        port = self.clients.server.port
        request = f"GET /status/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
        cast(asyncio.WriteTransport, transport).write(request)

    def data_received(self, data: bytes) -> None:
        # The tail is one byte short of a mark: a mark split across two reads is counted once.
        chunk = self.tail + data
        if not self.opened and b"retry: " in chunk:  # the first frame: subscribed
            self.opened = True
            self.clients.opened()
        if count := chunk.count(self.MARK):
            self.clients.received(count)
        self.tail = chunk[-(len(self.MARK) - 1) :]


class _Clients:
    """``n`` open streams on one server, and a way to time one change reaching all of them."""

    def __init__(self, server: _Server, n: int) -> None:
        self.server, self.n = server, n
        self.ready, self.got = asyncio.Event(), asyncio.Event()
        self.open_count = self.got_count = 0
        self.transports: list[asyncio.BaseTransport] = []
        self.uploads = 0

    def opened(self) -> None:
        self.open_count += 1
        if self.open_count == self.n:
            self.ready.set()

    def received(self, count: int) -> None:
        self.got_count += count
        if self.got_count >= self.n:
            self.got.set()

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(self.n):
            transport, _ = await loop.create_connection(lambda: _Stream(self), "127.0.0.1", self.server.port)
            self.transports.append(transport)
        await asyncio.wait_for(self.ready.wait(), 60)

    async def one_change(self, client: httpx.AsyncClient) -> tuple[float, float]:
        """Milliseconds from the change's request until every stream has its change, and the
        server's CPU milliseconds for it (read once it has gone quiet again)."""
        self.got.clear()
        self.got_count = 0
        self.uploads += 1
        body = f"fan-out {self.n} round {self.uploads} {time.time()}".encode()
        cpu = await asyncio.to_thread(self.server.cpu_seconds)
        start = time.perf_counter()
        await self.server.change(client, body)
        await asyncio.wait_for(self.got.wait(), 60)
        wall = (time.perf_counter() - start) * 1e3
        await asyncio.sleep(SETTLE_SECONDS)
        return wall, (await asyncio.to_thread(self.server.cpu_seconds) - cpu) * 1e3

    async def close(self) -> None:
        for transport in self.transports:
            transport.close()


async def _fanout(servers: dict[int, _Server]) -> dict[int, tuple[float, float]]:
    """The medians (ms to reach every client, server CPU ms) per count, one server per count, rounds
    interleaved A B C C B A (as median_interleaved). A negative count is the floor server's."""
    groups = {n: _Clients(server, abs(n)) for n, server in servers.items()}
    samples: dict[int, list[tuple[float, float]]] = {n: [] for n in groups}
    try:
        for group in groups.values():
            await group.open()
        async with httpx.AsyncClient(timeout=30) as client:
            for n in groups:  # warm-up: the first upload of a server pays for imports and caches
                await groups[n].one_change(client)
            for turn in range(FANOUT_ROUNDS):
                for n in list(groups) if turn % 2 == 0 else reversed(list(groups)):
                    samples[n].append(await groups[n].one_change(client))
    finally:
        for group in groups.values():
            await group.close()
    return {
        n: (statistics.median(s[0] for s in values), statistics.median(s[1] for s in values))
        for n, values in samples.items()
    }


def _run_fanout(servers: dict[int, _Server]) -> dict[int, tuple[float, float]]:
    """``_fanout`` on uvloop when it is installed (as uvicorn's server uses): lean clients."""
    with _apart(servers.values()):
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
            return asyncio.run(_fanout(servers))
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(_fanout(servers))


@contextlib.contextmanager
def _apart(servers: Iterable[_Server]) -> Iterator[None]:
    """The servers on the first CPU, the clients (this process) on the others, while it lasts.

    Clients of a real service are on other machines; here they share it. A
    frame written to a client wakes it, and a woken client scheduled on the
    server's CPU pre-empts the server in the middle of its fan-out (measured:
    the wall time of 1,000 raw socket writes doubles). Kept apart, each side
    has its own CPU. Nothing changes where there is only one CPU.
    """
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) < 2:
        yield
        return
    for server in servers:
        os.sched_setaffinity(server.proc.pid, cpus[:1])
        for task in Path(f"/proc/{server.proc.pid}/task").iterdir():  # its threads too
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(task.name), cpus[:1])
    os.sched_setaffinity(0, cpus[1:])
    try:
        yield
    finally:
        os.sched_setaffinity(0, cpus)


def run() -> list[Table]:
    table = Table("HTTP API (uvicorn, loopback)")
    with tempfile.TemporaryDirectory(prefix="docstatus-bench-api-") as root:
        servers: dict[int, _Server] = {}
        try:
            for n in SUBSCRIBER_COUNTS:
                (Path(root) / str(n)).mkdir()
                servers[n] = _Server(Path(root) / str(n))
            most, fewest = max(SUBSCRIBER_COUNTS), min(SUBSCRIBER_COUNTS)
            servers[-most] = _RawFanout(Path(root))  # the floor, keyed apart from the counts
            _throughput(servers[fewest], table)
            medians = _run_fanout(servers)
            raw = medians.pop(-most)[0]
            for n, (median, _) in medians.items():
                name = f"one change reaches {n:,} SSE clients, SQLite store (median of {FANOUT_ROUNDS})"
                if n == most:
                    floor = f"a bare uvloop server writing one frame to {n:,} sockets"
                    table.add(Row(name, median, floor, raw, target="≤ 30 ms", unit="ms"))
                else:
                    table.add(Row(name, median, unit="ms"))
            name = f"server CPU per change, {most:,} SSE clients (median of {FANOUT_ROUNDS})"
            floor = f"the same, {fewest:,} clients"
            table.add(Row(name, medians[most][1], floor, medians[fewest][1], unit="ms"))
        finally:
            for server in servers.values():
                server.stop()
    return [table]


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    for result in run():
        print(result.markdown())
