"""The RQ engine for real tests: one redis-server, ``serve --queue`` replicas, ``docstatus worker``s.

:class:`Cluster` starts everything as its own process: ``docstatus serve
--queue … --workers 0`` replicas sharing one uploads folder, and ``docstatus
worker`` commands (each in its own process group, as on separate machines),
each running RQ workers whose work horses claim documents in the status store.
The fixtures ``redis`` and ``cluster`` are in ``tests/worker/conftest.py``.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from pathlib import Path

from _redis_server import RedisServer
from docstatus import StatusManager
from servers import SERVE, Server

__all__ = ["Cluster", "alive", "claims", "parent_of"]

TESTS = Path(__file__).parent


class Cluster:
    """One Redis, its store and queue, a shared uploads folder, and the processes started on it."""

    def __init__(self, root: Path, redis: RedisServer) -> None:
        self.root = root
        self.store = f"{redis.url}?prefix=docs"
        self.queue = redis.url
        self.servers: list[Server] = []
        self.workers: list[subprocess.Popen[bytes]] = []
        self.manager = StatusManager(store=self.store, cleanup_interval_seconds=None)

    def env(self, **more: str) -> dict[str, str]:
        return {
            "DOCSTATUS_STORE": self.store,
            "DOCSTATUS_QUEUE": self.queue,
            "DOCSTATUS_LEASE_SECONDS": "1.5",
            "PYTHONPATH": str(TESTS),
            **more,
        }

    def serve(self, **env: str) -> Server:
        server = Server(self.root, env=self.env(DOCSTATUS_WORKERS="0", **env)).start()
        self.servers.append(server)
        return server

    def worker(self, processes: int = 1, **env: str) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-c", SERVE, "worker", "--uploads", str(self.root / "uploads")]
        command += ["--data-dir", str(self.root / "data"), "--processes", str(processes)]
        log = open(self.root / f"worker-{len(self.workers)}.log", "wb")  # noqa: SIM115 - the child keeps it
        with log:
            full = {k: v for k, v in os.environ.items() if not k.startswith("DOCSTATUS_")}
            full.update(self.env(**env))
            process = subprocess.Popen(command, env=full, stdout=log, stderr=log, start_new_session=True)
        self.workers.append(process)
        return process

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.root.glob("*.log")))

    def close(self) -> None:
        for process in self.workers:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGCONT)  # a stopped group would not see SIGTERM
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.workers:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for server in self.servers:
            server.stop()
        self.manager.close()


def alive(pid: int) -> bool:
    """Whether process ``pid`` is running (a zombie, exited but not yet reaped, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:  # reaped meanwhile
        return False


def parent_of(pid: int) -> int:
    """The parent process id of ``pid``, from ``/proc``."""
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().split(")")[-1].split()[1])


def claims(manager: StatusManager, doc_id: str) -> int:
    """How often ``doc_id`` was claimed (``queued`` -> ``parsing``), from the store's change log."""
    changes = [e for e in manager.changes_since(0, 100_000) if e["doc_id"] == doc_id and e["status"]]
    statuses = [e["status"]["status"] for e in changes]
    return sum(1 for a, b in itertools.pairwise(statuses) if (a, b) == ("queued", "parsing"))
