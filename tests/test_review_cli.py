"""Command-line input found in review to end in a traceback, run as real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from servers import SERVE, Server

pytestmark = pytest.mark.timeout(60)

TOKEN = "schlüssel-ö"  # printable, so the service accepts it as its token


def docstatus(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCSTATUS_")}
    return subprocess.run(
        [sys.executable, "-c", SERVE, *args], env=env, capture_output=True, text=True, timeout=30
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(tmp_path_factory.mktemp("review-cli"), env={"DOCSTATUS_API_TOKEN": TOKEN}).start()
    yield running
    running.stop(signal.SIGKILL)


@pytest.mark.parametrize("url", ["http://[::1", "http://127.0.0.1:abc", "http://127.0.0.1:99999999"])
def test_a_malformed_url_is_a_one_line_usage_error(url: str) -> None:
    for args in (["status", "abc"], ["list"], ["cleanup", "--token", "t"], ["watch"]):
        result = docstatus(*args, "--url", url)
        assert "Traceback" not in result.stderr, result.stderr
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "url" in lines[0], result.stderr


def test_a_non_ascii_token_is_sent_and_accepted(server: Server) -> None:
    result = docstatus("cleanup", "--max-age", "0", "--json", "--token", TOKEN, "--url", server.url)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"removed": 0}
    wrong = docstatus("cleanup", "--token", "schlüssel-x", "--url", server.url)
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr, wrong.stderr
