"""``docstatus list`` with the listing's filters, ``retry --all-failed`` and ``delete --finished``."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator

import pytest

from docstatus import Status, StatusManager
from docstatus.cli import main
from servers import NO_WORKERS, Server

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("plain_terminal")]

TOKEN = "bulk-cli-token"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(tmp_path_factory.mktemp("bulk-cli"), env={"DOCSTATUS_API_TOKEN": TOKEN}).start(
        NO_WORKERS
    )
    yield running
    running.stop(signal.SIGKILL)


@pytest.fixture
def fleet(store: StatusManager) -> Iterator[StatusManager]:
    """Six documents: two failed (one for good), two completed, one in work, one queued."""
    docs = {
        "cli-f1": ("Invoice-1.pdf", Status.FAILED),
        "cli-f2": ("scan.png", Status.FAILED),
        "cli-ff": ("broken.pdf", Status.FAILED),
        "cli-c1": ("invoice-2.PDF", Status.COMPLETED),
        "cli-c2": ("notes.txt", Status.COMPLETED),
        "cli-p1": ("invoice-3.pdf", Status.PARSING),
    }
    for doc_id, (name, status) in docs.items():
        store.create_status(doc_id, name, {"retryable": False} if doc_id == "cli-ff" else {})
        if status is Status.FAILED:
            store.mark_failed(doc_id, "broken")
        elif status is Status.COMPLETED:
            store.mark_completed(doc_id)
        else:
            store.update_status(doc_id, status)
    yield store
    for doc_id in docs:
        status = store.get_status(doc_id)
        if status is not None and status.status not in (Status.COMPLETED, Status.FAILED):
            store.cancel(doc_id)
        if store.get_status(doc_id) is not None:
            store.remove(doc_id)


def _listed(server: Server, capsys: pytest.CaptureFixture[str], *args: str) -> list[str]:
    assert main(["list", "--url", server.url, "--json", *args]) == 0
    return [d["doc_id"] for d in json.loads(capsys.readouterr().out)["documents"]]


def test_list_takes_the_listing_filters(
    server: Server, fleet: StatusManager, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _listed(server, capsys, "--q", "invoice", "--sort", "filename", "--order", "asc") == [
        "cli-f1",
        "cli-c1",
        "cli-p1",
    ]
    assert _listed(server, capsys, "--status", "failed", "--status", "completed", "--q", "cli-c") == [
        "cli-c2",
        "cli-c1",
    ]
    assert _listed(server, capsys, "--since", "1h", "--limit", "2") == ["cli-p1", "cli-c2"]
    assert _listed(server, capsys, "--until", "1h") == []
    assert main(["list", "--url", server.url, "--q", "invoice", "--limit", "2"]) == 0
    out = capsys.readouterr().out
    assert "invoice-3.pdf" in out and "2 documents (more match: raise --limit)." in out
    assert main(["list", "--url", server.url, "--since", "yesterday-ish"]) == 2
    assert "since must be ISO-8601" in capsys.readouterr().err


def test_retry_all_failed_prints_how_many(
    server: Server, fleet: StatusManager, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as refused:
        main(["retry", "--url", server.url, "--token", TOKEN])  # --all-failed is required
    assert refused.value.code == 2
    assert "--all-failed" in capsys.readouterr().err
    assert main(["retry", "--all-failed", "--url", server.url]) == 2  # no token
    assert "API token" in capsys.readouterr().err
    assert main(["retry", "--all-failed", "--q", "scan", "--url", server.url, "--token", TOKEN]) == 0
    assert "Retried 1 failed document." in capsys.readouterr().out
    assert fleet.require_status("cli-f2").status is Status.QUEUED
    assert main(["retry", "--all-failed", "--json", "--url", server.url, "--token", TOKEN]) == 0
    totals = json.loads(capsys.readouterr().out)
    assert totals == {"retried": 1, "skipped": 1, "doc_ids": ["cli-f1"]}
    assert main(["retry", "--all-failed", "--url", server.url, "--token", TOKEN]) == 0
    assert "Retried 0 failed documents; skipped 1 that failed for good" in capsys.readouterr().out


def test_delete_finished_removes_what_matches(
    server: Server, fleet: StatusManager, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["delete", "--url", server.url, "--token", TOKEN]) == 2
    assert "either DOC_ID or --finished" in capsys.readouterr().err
    assert main(["delete", "cli-c1", "--finished", "--url", server.url, "--token", TOKEN]) == 2
    capsys.readouterr()
    assert main(["delete", "--finished", "--older-than", "1h", "--url", server.url, "--token", TOKEN]) == 0
    assert "Removed 0 finished documents that finished over 1h 00m ago" in capsys.readouterr().out
    args = ["delete", "--finished", "--status", "completed", "--url", server.url, "--token", TOKEN]
    assert main(args) == 0
    assert "Removed 2 finished documents, with their uploads and output." in capsys.readouterr().out
    assert (
        main(["delete", "--finished", "--older-than", "0s", "--json", "--url", server.url, "--token", TOKEN])
        == 0
    )
    assert json.loads(capsys.readouterr().out) == {"deleted": 3, "doc_ids": ["cli-f1", "cli-f2", "cli-ff"]}
    assert fleet.require_status("cli-p1").status is Status.PARSING  # in work: never removed
