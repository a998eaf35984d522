"""``GET /status/{doc_id}`` while 1,000 documents are being updated, beside bare FastAPI.

The service (SQLite store, no workers) answers reads while another process
updates 1,000 documents of the same store as fast as it can, round robin
(every document in ``embedding_visual``, a page at a time), with progress
coalesced at the default ``progress_interval`` (0.1 s) and, for comparison,
writing every report. The floor is a bare FastAPI endpoint returning a
constant dict from the same server process, loaded the same way while the
same updater runs: both share the machine with the writer alike. Rounds are
interleaved (bare, status, bare, status), the best of each kept.
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


def _reads_while_updating(server: _Server, root: Path, interval: float) -> tuple[float, float]:
    """(status req/s, bare req/s), the best of interleaved rounds, with the updater running."""
    updater = _Updater(f"sqlite:///{root}/status.db", interval)
    try:
        _load(f"{server.url}/status/busy-500")  # warm-up
        status: list[float] = []
        bare: list[float] = []
        for _ in range(ROUNDS):
            bare.append(_load(f"{server.url}/bare")[0])
            status.append(_load(f"{server.url}/status/busy-500")[0])
    finally:
        updater.stop()
    return max(status), max(bare)


def run() -> list[Table]:
    table = Table(f"HTTP reads while {DOCS:,} documents update (SQLite store, uvicorn, loopback)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # The documents exist before the server starts (the updater makes them).
        _Updater(f"sqlite:///{root}/status.db", 0.1).stop()
        server = _Server(root)
        try:
            for label, interval in (("progress coalesced (0.1 s)", 0.1), ("every report written", 0.0)):
                status, bare = _reads_while_updating(server, root, interval)
                table.add(
                    Row(
                        f"GET /status/{{doc_id}} req/s, updater {label}",
                        status,
                        "bare FastAPI, same updater",
                        bare,
                        TARGET if interval else "",
                        unit="req/s",
                    )
                )
        finally:
            server.stop()
    return [table]
