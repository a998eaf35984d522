"""``docstatus delete DOC_ID`` through ``main()``, against a real server (no worker pool)."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator

import httpx
import pytest

from docstatus import StatusManager
from docstatus.cli import main
from docstatus.output import OutputStore
from servers import NO_WORKERS, Server

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("plain_terminal")]

TOKEN = "delete-token-5"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(tmp_path_factory.mktemp("delete-cli"), env={"DOCSTATUS_API_TOKEN": TOKEN}).start(
        NO_WORKERS
    )
    yield running
    running.stop(signal.SIGKILL)


def _upload(server: Server, text: bytes) -> str:
    answer = httpx.post(
        f"{server.url}/uploads",
        files={"file": ("notes.txt", text)},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert answer.status_code in (200, 201, 202), answer.text
    return str(answer.json()["doc_id"])


def test_delete_by_short_id_removes_the_status_upload_and_output(
    server: Server, store: StatusManager, capsys: pytest.CaptureFixture[str]
) -> None:
    doc_id = _upload(server, b"to be deleted from the terminal")
    store.mark_completed(doc_id)
    with OutputStore(server.root / "data" / "output.db") as output:
        output.save(doc_id, ["to be deleted"], [[1.0, 0.0]])
    assert (server.uploads / f"{doc_id}.txt").exists()

    assert main(["delete", doc_id[:10], "--url", server.url, "--token", TOKEN]) == 0

    out = capsys.readouterr().out
    assert "Removed notes.txt" in out and doc_id in out and "its upload" in out and "its output" in out
    assert store.get_status(doc_id) is None
    assert not (server.uploads / f"{doc_id}.txt").exists()
    with OutputStore(server.root / "data" / "output.db") as output:
        assert not output.has(doc_id)


def test_delete_json_and_errors_follow_the_exit_conventions(
    server: Server, store: StatusManager, capsys: pytest.CaptureFixture[str]
) -> None:
    doc_id = _upload(server, b"still queued")
    assert main(["delete", doc_id, "--url", server.url]) == 2  # no token
    assert "API token" in capsys.readouterr().err
    assert main(["delete", doc_id, "--url", server.url, "--token", TOKEN]) == 1
    err = capsys.readouterr().err
    assert "409" in err and "cancel it first" in err and "Traceback" not in err
    store.cancel(doc_id)
    assert main(["delete", doc_id, "--json", "--url", server.url, "--token", TOKEN]) == 0
    body = json.loads(capsys.readouterr().out)
    assert (body["doc_id"], body["upload"], body["status"]["error"]) == (doc_id, f"{doc_id}.txt", "cancelled")
    assert main(["delete", doc_id, "--url", server.url, "--token", TOKEN]) == 1
    assert "not found" in capsys.readouterr().err.lower()
