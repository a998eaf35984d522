"""``GET /status/{doc_id}`` while 1,000 documents are being updated, beside bare FastAPI.

The service (SQLite store, no workers) answers reads while another process
updates 1,000 documents of the same store as fast as it can, round robin
(every document in ``embedding_visual``, a page at a time), with progress
coalesced at the default ``progress_interval`` (0.1 s) and, for comparison,
writing every report. Two floors, served by the same server process and
loaded the same way while the same updater runs (all share the machine with
the writer alike): what teams hand-roll before docstatus, a bare FastAPI
endpoint returning a status dict of the same size from a global dict behind a
lock (the target's floor: it answers the same bytes); and a bare FastAPI
endpoint returning a constant 30-byte dict, which also shows what the size of
a status body costs the server and the load generator. Rounds are interleaved
(bare, hand-rolled, status, ...), the best of each kept.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from ._harness import Row, Table
from .bench_api import _load, _Server

DOCS = 1000
ROUNDS = 2
TARGET = "≥ 0.85× floor"
BARE_FLOOR = "bare FastAPI constant dict"
HAND_FLOOR = "hand-rolled: bare FastAPI returning a status dict from a dict + Lock"

UPDATER = """
import itertools, sys
from docstatus import StatusManager

url, interval = sys.argv[1], float(sys.argv[2])
manager = StatusManager(store=url, cleanup_interval_seconds=None, progress_interval=interval)
docs = [f"busy-{i}" for i in range(int(sys.argv[3]))]
for doc in docs:
    if manager.get_status(doc) is None:
        manager.create_status(doc, "busy.pdf", {})
        manager.update_status(doc, "parsing")
        manager.update_status(doc, "embedding_visual", page=0, total_pages=10**9)
print("ready", flush=True)
pages = itertools.count(1)
while True:
    page = next(pages)
    for doc in docs:
        manager.update_status(doc, "embedding_visual", page=page, total_pages=10**9)
"""


class _Updater:
    """The writing process: started, ready once its documents exist, killed at the end."""

    def __init__(self, url: str, interval: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", UPDATER, url, repr(interval), str(DOCS)], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            self.stop()
            raise RuntimeError("the benchmark's updater did not start")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def _reads_while_updating(server: _Server, root: Path, interval: float) -> dict[str, float]:
    """req/s of docstatus's ``status``, the ``hand``-rolled dict and the ``bare`` constant,
    the best of interleaved rounds, with the updater running."""
    updater = _Updater(f"sqlite:///{root}/status.db", interval)
    urls = {
        "bare": f"{server.url}/bare",
        "hand": f"{server.url}/bare/status/bench-doc",
        "status": f"{server.url}/status/busy-500",
    }
    best = dict.fromkeys(urls, 0.0)
    try:
        _load(urls["status"])  # warm-up
        for _ in range(ROUNDS):
            for name, url in urls.items():
                best[name] = max(best[name], _load(url)[0])
    finally:
        updater.stop()
    return best


def run() -> list[Table]:
    table = Table(f"HTTP reads while {DOCS:,} documents update (SQLite store, uvicorn, loopback)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # The documents exist before the server starts (the updater makes them).
        _Updater(f"sqlite:///{root}/status.db", 0.1).stop()
        server = _Server(root)
        try:
            for label, interval in (("progress coalesced (0.1 s)", 0.1), ("every report written", 0.0)):
                rates = _reads_while_updating(server, root, interval)
                name = f"GET /status/{{doc_id}} req/s, updater {label}"
                target = TARGET if interval else ""
                table.add(Row(name, rates["status"], HAND_FLOOR, rates["hand"], target, unit="req/s"))
                table.add(Row(name, rates["status"], BARE_FLOOR, rates["bare"], unit="req/s"))
        finally:
            server.stop()
    return [table]
