"""``docstatus worker`` refuses what it cannot run with one line, before it starts any process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from servers import SERVE

pytestmark = pytest.mark.timeout(60)


def _worker(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", SERVE, "worker", "--uploads", str(tmp_path / "u"), *args]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    return subprocess.run(command, capture_output=True, text=True, timeout=30, env=env, cwd=tmp_path)


@pytest.mark.parametrize(
    ("args", "status", "says"),
    [
        (["--store", "sqlite:///s.db"], 2, "give the RQ queue with --queue"),
        (["--queue", "amqp://rabbit"], 2, "must be a Redis URL"),
        (["--queue", "redis://127.0.0.1:1/0", "--processes", "0"], 2, "must be between 1 and 256"),
        (["--store", "redis://127.0.0.1:1/0"], 1, "is unavailable"),
    ],
)
def test_what_the_worker_cannot_run_is_one_line_and_no_process(
    tmp_path: Path, args: list[str], status: int, says: str
) -> None:
    done = _worker(tmp_path, *args)
    assert done.returncode == status, done.stderr
    assert says in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
