"""What an operator reads in a real server's log: docstatus's own lines, in uvicorn's format."""

from __future__ import annotations

import contextlib
import io
import logging
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from _documents import numbered_pages, pdf_bytes
from docstatus.api.logs import follow_server_logging
from servers import Server

pytestmark = pytest.mark.timeout(120)

# `docstatus serve` itself, with one more format whose processor (in a child process) logs a
# WARNING through the worker's logger.
SERVE_WITH_WARNING = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent.parent)!r})

from _processors import Warns
from docstatus.cli import main
from docstatus.formats import register_format

register_format("warns", [".warns"], "text", "text/plain", processor=Warns)
sys.exit(main(["serve", "--log-level", "warning"]))
"""


def _lines_with(log: str, part: str) -> list[str]:
    return [line for line in log.splitlines() if part in line]


def test_the_service_logs_its_start_failures_and_stop_in_uvicorns_format(tmp_path: Path) -> None:
    server = Server(tmp_path).start(log_level="info")
    try:
        answer = httpx.post(
            f"{server.url}/uploads", files={"file": ("broken.pdf", pdf_bytes(numbered_pages(2))[:600])}
        )
        doc_id = answer.json()["doc_id"]
        server.wait_status(doc_id, "failed")
    finally:
        code = server.stop(signal.SIGTERM)
    assert code in (0, -signal.SIGTERM)
    log = server.log()
    started = _lines_with(log, "docstatus started: store=")
    assert len(started) == 1, log
    assert started[0].startswith("INFO:     "), started
    assert f"sqlite:///{tmp_path / 'status.db'}" in started[0] and "workers=2" in started[0]
    failed = _lines_with(log, doc_id)
    assert failed, log
    assert all(line.split(":")[0] in ("INFO", "WARNING") for line in failed), failed
    stopped = _lines_with(log, "docstatus stopped")
    assert stopped == ["INFO:     docstatus stopped"], log
    # Every docstatus line was written once, by uvicorn's handler (no bare last-resort copy).
    assert len(_lines_with(log, "broken.pdf")) <= len(failed)


def test_a_pool_warning_reaches_the_log_at_the_default_level_once(tmp_path: Path) -> None:
    server = Server(tmp_path).start(SERVE_WITH_WARNING)
    try:
        answer = httpx.post(f"{server.url}/uploads", files={"file": ("note.warns", b"look at me\n")})
        assert answer.status_code == 200, answer.text
        doc_id = answer.json()["doc_id"]
        server.wait_status(doc_id, "completed")
    finally:
        server.stop(signal.SIGTERM)
    log = server.log()
    assert _lines_with(log, "needs a look") == [f"WARNING:  document {doc_id} needs a look"], log
    assert "docstatus started" not in log  # --log-level warning keeps the INFO lines out


@contextlib.contextmanager
def _bare_loggers() -> Iterator[None]:
    """No handler on the root, ``docstatus`` or ``uvicorn`` loggers inside; all as before after.

    Entered in the test's body: pytest swaps its capture handlers on the root around each phase.
    """
    loggers = [logging.getLogger(name) for name in ("", "docstatus", "uvicorn")]
    saved = [(lg, lg.handlers, lg.level) for lg in loggers]
    for lg in loggers:
        lg.handlers = []
    try:
        yield
    finally:
        for lg, handlers, level in saved:
            lg.handlers = handlers
            lg.setLevel(level)


@_bare_loggers()
def test_docstatus_borrows_the_servers_handler_and_gives_it_back() -> None:
    server_handler = logging.StreamHandler(io.StringIO())
    logging.getLogger("uvicorn").addHandler(server_handler)
    undo = follow_server_logging()
    assert logging.getLogger("docstatus").handlers == [server_handler]
    logging.getLogger("docstatus.worker.pool").warning("seen")
    assert server_handler.stream.getvalue() == "seen\n"
    undo()
    assert logging.getLogger("docstatus").handlers == []
    assert logging.getLogger("docstatus").level == logging.NOTSET


@_bare_loggers()
def test_logging_the_user_configured_is_left_alone() -> None:
    logging.getLogger("uvicorn").addHandler(logging.StreamHandler(io.StringIO()))
    root_handler = logging.StreamHandler(io.StringIO())
    logging.getLogger().addHandler(root_handler)
    undo = follow_server_logging()
    assert logging.getLogger("docstatus").handlers == []
    logging.getLogger("docstatus.worker.pool").warning("once")
    assert root_handler.stream.getvalue() == "once\n"
    undo()
    assert logging.getLogger().handlers == [root_handler]
