"""The ``docstatus`` entry point itself: a bare call, and how ``docstatus serve`` ends on Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from servers import SERVE, Server

pytestmark = pytest.mark.timeout(60)


def test_no_command_prints_the_help_and_is_a_usage_error() -> None:
    result = subprocess.run([sys.executable, "-c", SERVE], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stdout == ""
    for part in ("usage: docstatus", "commands", "serve", "status", "watch"):
        assert part in result.stderr, result.stderr


def test_serve_stopped_with_ctrl_c_exits_0_without_a_traceback(tmp_path: Path) -> None:
    # A terminal's Ctrl-C is SIGINT to the foreground group; `make run` execs the server, so make
    # reports "*** [run] Interrupt" exactly when the server dies of the signal or exits non-zero.
    server = Server(tmp_path).start(log_level="info")
    assert server.proc is not None
    assert httpx.get(f"{server.url}/health").status_code == 200
    code = server.stop(signal.SIGINT)
    assert code == 0, server.log()
    assert "Traceback" not in server.log()
    assert "Finished server process" in server.log()
