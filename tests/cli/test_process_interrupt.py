"""Ctrl-C during ``docstatus process``: a real process group gets SIGINT, as from a terminal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _documents import numbered_pages, pdf_bytes, write
from docstatus import StatusManager
from docstatus.cli.process import INTERRUPTED_ERROR

pytestmark = pytest.mark.timeout(180)

_MAIN = "import sys; from docstatus.cli import main; sys.exit(main(sys.argv[1:]))"


def _group_gone(pgid: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_ctrl_c_stops_at_once_fails_what_was_left_and_leaves_no_process(tmp_path: Path) -> None:
    write(tmp_path / "big.pdf", pdf_bytes(numbered_pages(600)))
    write(tmp_path / "next.pdf", pdf_bytes(numbered_pages(3)))
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DOCSTATUS_")}
    environ["COLUMNS"] = "160"
    proc = subprocess.Popen(
        [sys.executable, "-c", _MAIN, "process", "--workers", "1", "big.pdf", "next.pdf"],
        cwd=tmp_path,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, which the terminal's Ctrl-C signals whole
    )
    store = f"sqlite:///{tmp_path / 'docstatus-data' / 'status.db'}"
    try:
        deadline = time.monotonic() + 120
        running = None
        while running is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
            if (tmp_path / "docstatus-data" / "status.db").exists():
                with StatusManager(store=store, cleanup_interval_seconds=None) as manager:
                    held = [s for s in manager.list_active() if s.status.value != "queued"]
                    if held and len(manager.list_all()) == 2:
                        running = held[0]
        assert running is not None and running.filename == "big.pdf", proc.poll()
        worker_pid = int(str(running.metadata["worker"]).rpartition(":")[2])

        os.killpg(proc.pid, signal.SIGINT)
        interrupted_at = time.monotonic()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    assert proc.returncode == 130, err
    assert time.monotonic() - interrupted_at < 20  # promptly, not after the 600 pages
    assert "Traceback" not in err and "Traceback" not in out, err
    assert "Interrupted (Ctrl-C): 2 of 2 documents did not finish (big.pdf, next.pdf)" in err
    with StatusManager(store=store, cleanup_interval_seconds=None) as manager:
        statuses = {s.filename: s for s in manager.list_all()}
        assert manager.list_active() == [] and manager.leases() == []
    assert {name: (s.status.value, s.error) for name, s in statuses.items()} == {
        "big.pdf": ("failed", INTERRUPTED_ERROR),
        "next.pdf": ("failed", INTERRUPTED_ERROR),
    }
    assert statuses["big.pdf"].progress < 1.0
    assert _group_gone(proc.pid, time.monotonic() + 15), "a child process outlived the command"
    with pytest.raises(ProcessLookupError):
        os.kill(worker_pid, 0)
