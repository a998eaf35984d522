"""Completion webhooks of a real ``docstatus serve`` process: killed mid-delivery, started again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from docstatus import StatusManager
from servers import SERVE, Server
from webhook_receiver import Received, Receiver

pytestmark = pytest.mark.slow


def _env(receiver: Receiver) -> dict[str, str]:
    return {
        "DOCSTATUS_WORKERS": "0",  # the test writes the statuses itself, on the same file
        "DOCSTATUS_NOTIFY_URL": receiver.url,
        "DOCSTATUS_NOTIFY_SECRET": "s3cret",
        "DOCSTATUS_NOTIFY_TIMEOUT": "1",
        "DOCSTATUS_NOTIFY_BACKOFF_SECONDS": "0.05",
        "DOCSTATUS_NOTIFY_BACKOFF_MAX_SECONDS": "0.2",
        # The lease of a killed process expires after max(this, 2 * timeout + 1) = 3 seconds.
        "DOCSTATUS_LEASE_SECONDS": "1",
    }


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.close()


def _complete(manager: StatusManager, doc_id: str) -> None:
    manager.create_status(doc_id, f"{doc_id}.txt")
    manager.update_status(doc_id, "parsing")
    manager.mark_completed(doc_id)


def _ok(requests: list[Received], doc_id: str) -> bool:
    return any(r.doc_id == doc_id and r.code == 200 for r in requests)


def test_a_service_killed_mid_delivery_delivers_what_was_pending_when_it_starts_again(
    tmp_path: Path, receiver: Receiver
) -> None:
    arrived, gate = threading.Event(), threading.Event()

    def answer(request: Received, earlier: list[Received]) -> int:
        if request.doc_id == "held" and not arrived.is_set():
            arrived.set()
            gate.wait(30)  # held open while the service is killed
        return 200

    receiver.answer = answer
    server = Server(tmp_path, env=_env(receiver)).start()
    manager = StatusManager(store=f"sqlite:///{tmp_path / 'status.db'}", cleanup_interval_seconds=None)
    try:
        _complete(manager, "before")
        receiver.wait(lambda rs: _ok(rs, "before"))
        _complete(manager, "held")
        assert arrived.wait(20)
        assert server.stop(signal.SIGKILL) == -signal.SIGKILL
        # Ended while no service ran: still in the change log, after the cursor.
        _complete(manager, "while-down-1")
        _complete(manager, "while-down-2")
        gate.set()
        server = Server(tmp_path, env=_env(receiver)).start()
        # The first "held" request is answered 200 once the gate opens, so wait for its
        # delivery again too, not only for an answered "held".
        requests = receiver.wait(
            lambda rs: (
                sum(r.doc_id == "held" for r in rs) >= 2
                and all(_ok(rs, d) for d in ("held", "while-down-1", "while-down-2"))
            )
        )
    finally:
        gate.set()
        server.stop()
        manager.close()
    held = [r for r in requests if r.doc_id == "held"]
    assert len(held) >= 2  # the one in flight when the process died, and again after the restart
    assert len({r.headers["X-Docstatus-Delivery"] for r in held}) == 1
    assert [r.doc_id for r in requests].count("before") == 1  # delivered ones are not sent again
    assert {r.doc_id for r in requests} == {"before", "held", "while-down-1", "while-down-2"}


def test_a_bad_webhook_setting_stops_serve_with_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCSTATUS_")}
    env.update(
        DOCSTATUS_DATA=str(tmp_path), DOCSTATUS_NOTIFY_URL="ftp://example.com/x", DOCSTATUS_NOTIFY_SECRET="k"
    )
    done = subprocess.run(
        [sys.executable, "-c", SERVE, "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "docstatus serve: error: Invalid DOCSTATUS_NOTIFY_URL='ftp://example.com/x': "
        "must be an http:// or https:// URL with a host"
    ]
    env.update(DOCSTATUS_NOTIFY_URL="http://example.com/x", DOCSTATUS_NOTIFY_SECRET="")
    done = subprocess.run(
        [sys.executable, "-c", SERVE, "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "needs a notify_secret (DOCSTATUS_NOTIFY_SECRET)" in done.stderr
