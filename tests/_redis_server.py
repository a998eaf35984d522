"""A real redis-server for the tests: its own process, loopback port and directory."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["RedisServer", "RedisServerError"]


class RedisServerError(RuntimeError):
    """redis-server is missing or did not start."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A redis-server on a free loopback port with its files in ``directory``.

    ``persistent=True`` turns on the append-only file with an fsync per write,
    so every acknowledged write survives a killed server. ``options`` are passed on to
    redis-server.
    """

    START_TIMEOUT = 15.0

    def __init__(self, directory: Path, *, persistent: bool = False, options: Sequence[str] = ()) -> None:
        self.directory = directory
        self.persistent = persistent
        #: More command-line options for redis-server (``--rename-command FCALL ""``...).
        self.options = list(options)
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _command(self, binary: str, port: int) -> list[str]:
        command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(self.directory)]
        command += ["--save", "", "--logfile", str(self.directory / "redis.log"), "--daemonize", "no"]
        command += self.options
        if self.persistent:
            return [*command, "--appendonly", "yes", "--appendfsync", "always"]
        return [*command, "--appendonly", "no"]

    def start(self) -> None:
        """Start the server (on the port it had before, if it ran already) and wait until it answers."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisServerError("redis-server is not installed (make system-deps installs it)")
        tries = 1 if self.port else 3  # a fresh free port may be taken between the probe and the bind
        for _ in range(tries):
            port = self.port or _free_port()
            if self._start_on(binary, port):
                self.port = port
                return
        log = self.directory / "redis.log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise RedisServerError(f"redis-server did not start on 127.0.0.1:{port}:\n{tail}")

    def _start_on(self, binary: str, port: int) -> bool:
        process = subprocess.Popen(
            self._command(binary, port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + self.START_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            if _answers_ping(port):
                self._process = process
                return True
            time.sleep(0.02)
        process.kill()
        process.wait()
        return False

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server: SIGTERM (a clean shutdown), or SIGKILL with ``kill=True`` (a crash)."""
        process, self._process = self._process, None
        if process is None:
            return
        if kill:
            process.kill()
        else:
            process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
