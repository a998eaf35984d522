"""Test helpers shared by the test modules that run the service for real (uvicorn in a subprocess).

``Server`` starts ``docstatus serve`` (or a script building its own app) over
one folder's store and uploads, waits until ``/health`` answers and stops it
with a signal; ``SERVE`` is the command line entry point as a ``-c`` script.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

__all__ = ["GATED", "NO_WORKERS", "SERVE", "Server", "free_port"]

SERVE = "import sys; from docstatus.cli import main; sys.exit(main(sys.argv[1:]))"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    """One service process over ``root``'s store and uploads folder."""

    root: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def uploads(self) -> Path:
        return self.root / "uploads"

    def start(self, script: str | None = None, log_level: str = "warning", port: int | None = None) -> Server:
        """Start the server (on ``port``, default a free one) and wait until it is healthy."""
        self.port = port or free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCSTATUS_")}
        env.update(
            DOCSTATUS_HOST="127.0.0.1",
            DOCSTATUS_PORT=str(self.port),
            DOCSTATUS_STORE=f"sqlite:///{self.root / 'status.db'}",
            DOCSTATUS_UPLOADS=str(self.uploads),
            DOCSTATUS_DATA=str(self.root / "data"),
            DOCSTATUS_SHUTDOWN_TIMEOUT="1",
        )
        env.update(self.env)
        args = ["-c", script] if script else ["-c", SERVE, "serve", "--log-level", log_level]
        log = open(self.root / f"server-{self.port}.log", "wb")  # noqa: SIM115 - the child keeps it
        with log:
            self.proc = subprocess.Popen([sys.executable, *args], env=env, stdout=log, stderr=log)
        self._wait_healthy()
        return self

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}: {self.log()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"server did not become healthy: {self.log()}")

    def wait_status(self, doc_id: str, *statuses: str, timeout: float = 20) -> dict[str, Any]:
        """The document's status as ``GET /status/{doc_id}`` answers, once it is one of ``statuses``."""
        deadline = time.monotonic() + timeout
        while True:
            body: dict[str, Any] = httpx.get(f"{self.url}/status/{doc_id}").json()
            if body["status"] in statuses:
                return body
            assert time.monotonic() < deadline, body
            time.sleep(0.05)

    def log(self) -> str:
        path = self.root / f"server-{self.port}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"server did not stop within {timeout}s: {self.log()}") from None
        finally:
            self.proc = None
        return code


# The service with its real processors, where a text document (.txt, .md) can be held part-way
# (see ``_processors.Held``). The processors live in a module, so the service's child processes
# can load them.
GATED = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})

import uvicorn
from _processors import held_processors
from docstatus.api import create_app
from docstatus.service import Service
from docstatus.settings import ServiceSettings

settings = ServiceSettings.from_env()
app = create_app(service=Service(settings, processors=held_processors()))
uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
"""


# The service with no worker pool: nothing but the test touches the documents.
NO_WORKERS = """
import uvicorn
from docstatus.api import create_app
from docstatus.settings import ServiceSettings

settings = ServiceSettings.from_env()
app = create_app(settings, start_workers=False)
uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
"""
