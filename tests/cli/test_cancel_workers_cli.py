"""``docstatus cancel`` and ``docstatus list --workers`` through ``main()``, against a real server.

The server runs without a worker pool, so the documents here are only ever held by
the leases the tests take; the registry is filled by heartbeats from the test, as a
worker process on the same store would send them.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator

import httpx
import pytest

from docstatus import StatusManager
from docstatus.cli import main
from docstatus.errors import LeaseLostError
from servers import NO_WORKERS, Server, free_port

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("plain_terminal")]

TOKEN = "cancel-token-3"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(tmp_path_factory.mktemp("cancel-cli"), env={"DOCSTATUS_API_TOKEN": TOKEN}).start(
        NO_WORKERS
    )
    yield running
    running.stop(signal.SIGKILL)


def _one_line_error(err: str, *parts: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for part in parts:
        assert part in lines[0], lines[0]


def test_cancel_stops_a_held_document_and_refuses_a_finished_one(
    server: Server, store: StatusManager, capsys: pytest.CaptureFixture[str]
) -> None:
    store.create_status("held-doc", "held.txt")
    lease = store.claim("held-doc", worker="node-a:5001", seconds=30)
    assert lease is not None
    lease.update_status("embedding_text", chunk=2, total_chunks=4)
    assert main(["cancel", "held-doc", "--url", server.url, "--token", TOKEN]) == 0
    out = capsys.readouterr().out
    assert "Cancelled held.txt (held-doc) at 75%." in out
    with pytest.raises(LeaseLostError):
        lease.update_status("embedding_text", chunk=3, total_chunks=4)
    body = httpx.get(f"{server.url}/status/held-doc").json()
    assert (body["status"], body["error"]) == ("failed", "cancelled")

    assert main(["cancel", "held-doc", "--url", server.url, "--token", TOKEN]) == 1
    _one_line_error(capsys.readouterr().err, "docstatus cancel: error", "409", "already finished")


def test_cancel_json_is_the_apis_answer(
    server: Server, store: StatusManager, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store.create_status("queued-doc", "queued.txt")
    monkeypatch.setenv("DOCSTATUS_API_TOKEN", TOKEN)
    monkeypatch.setenv("DOCSTATUS_URL", server.url)
    assert main(["cancel", "queued-doc", "--json"]) == 0
    out = capsys.readouterr().out
    assert out == httpx.get(f"{server.url}/status/queued-doc").text + "\n"
    assert json.loads(out)["error"] == "cancelled"


def test_cancel_errors_follow_the_exit_conventions(
    server: Server, store: StatusManager, capsys: pytest.CaptureFixture[str]
) -> None:
    store.create_status("guarded-doc", "guarded.txt")
    assert main(["cancel", "no-such-doc", "--url", server.url, "--token", TOKEN]) == 1
    _one_line_error(capsys.readouterr().err, "no-such-doc", server.url)
    for token in ([], ["--token", "wrong"]):
        assert main(["cancel", "guarded-doc", "--url", server.url, *token]) == 2
        _one_line_error(capsys.readouterr().err, "API token")
    assert store.require_status("guarded-doc").status == "queued"
    nowhere = f"http://127.0.0.1:{free_port()}"
    assert main(["cancel", "guarded-doc", "--url", nowhere, "--token", TOKEN]) == 3
    _one_line_error(capsys.readouterr().err, "Cannot reach", nowhere)
    with pytest.raises(SystemExit) as usage:
        main(["cancel", "", "--url", server.url])
    assert usage.value.code == 2


def test_list_workers_shows_each_live_worker_and_json_is_the_apis_answer(
    server: Server, store: StatusManager, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["list", "--workers", "--url", server.url]) == 0
    assert "0 live worker processes, holding 0 documents." in capsys.readouterr().out
    store.heartbeat(
        "node-a:4242", {"host": "node-a", "pid": 4242, "engine": "rq", "children": ["node-a:6001"]}, 30
    )
    store.heartbeat("node-b:77", {"host": "node-b", "pid": 77, "engine": "local"}, 30)
    store.create_status("worked-doc", "worked.txt")
    assert store.claim("worked-doc", worker="node-a:6001", seconds=30) is not None
    try:
        assert main(["list", "--workers", "--url", server.url]) == 0
        lines = capsys.readouterr().out.splitlines()
        rows = {cells[0]: cells for cells in map(str.split, lines) if cells and cells[0].startswith("node-")}
        assert rows["node-a:4242"][1:4] == ["node-a", "rq", "1"]
        assert rows["node-b:77"][1:4] == ["node-b", "local", "0"]
        assert all(row[-1] == "ago" for row in rows.values())
        assert lines[-1] == "2 live worker processes, holding 1 documents."

        assert main(["list", "--workers", "--json", "--url", server.url]) == 0
        out = capsys.readouterr().out
        assert out == httpx.get(f"{server.url}/workers").text + "\n"
        assert [w["documents"] for w in json.loads(out)["workers"]] == [["worked-doc"], []]
    finally:
        store.forget_worker("node-a:4242")
        store.forget_worker("node-b:77")
