"""Short ids on the command line: a unique prefix of 8+ characters names a document."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from docstatus import StatusManager
from servers import SERVE, Server

pytestmark = pytest.mark.timeout(60)


def docstatus(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SERVE, *args, "--url", server.url],
        capture_output=True,
        text=True,
        timeout=30,
        env={"COLUMNS": "120", "PATH": "/usr/bin:/bin"},
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("short")
    with StatusManager(store=f"sqlite:///{root / 'status.db'}") as manager:
        # Two documents whose ids share their first 8 characters (uploads never would).
        for doc_id in ("abcdefgh1111", "abcdefgh2222"):
            manager.create_status(doc_id, f"{doc_id}.txt")
            manager.mark_completed(doc_id)
    running = Server(root).start()
    yield running
    running.stop(signal.SIGKILL)


@pytest.fixture(scope="module")
def uploaded(server: Server) -> str:
    answer = httpx.post(f"{server.url}/uploads", files={"file": ("short.txt", b"A document with a long id.")})
    doc_id: str = answer.json()["doc_id"]
    server.wait_status(doc_id, "completed")
    return doc_id


def test_status_and_watch_accept_a_unique_prefix(server: Server, uploaded: str) -> None:
    full = docstatus(server, "status", uploaded, "--json")
    assert full.returncode == 0, full.stderr
    for prefix in (uploaded[:12], uploaded[:8]):
        short = docstatus(server, "status", prefix, "--json")
        assert short.returncode == 0, short.stderr
        assert json.loads(short.stdout)["doc_id"] == uploaded
        watched = docstatus(server, "watch", "--doc", prefix)
        assert watched.returncode == 0, watched.stderr
        assert "short.txt completed" in watched.stdout


def test_an_ambiguous_prefix_is_refused_with_the_candidates(server: Server) -> None:
    for args in (["status", "abcdefgh"], ["watch", "--doc", "abcdefgh"]):
        result = docstatus(server, *args)
        assert result.returncode == 2, result
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert "'abcdefgh' is ambiguous" in lines[0] and "2 documents" in lines[0]
        assert "abcdefgh1111" in lines[0] and "abcdefgh2222" in lines[0]
    # One more character makes it unique; the full id works exactly as before.
    assert json.loads(docstatus(server, "status", "abcdefgh2", "--json").stdout)["doc_id"] == "abcdefgh2222"
    assert docstatus(server, "status", "abcdefgh1111").returncode == 0


def test_an_unknown_or_too_short_prefix_is_not_found(server: Server, uploaded: str) -> None:
    unknown = docstatus(server, "status", "0000000000")
    assert unknown.returncode == 1 and "not found" in unknown.stderr
    assert "at least 8" not in unknown.stderr
    short = docstatus(server, "status", uploaded[:7])
    assert short.returncode == 1
    assert "not found" in short.stderr and "a short id needs at least 8 characters" in short.stderr


def test_list_shows_the_short_id(server: Server, uploaded: str) -> None:
    result = docstatus(server, "list")
    assert result.returncode == 0, result.stderr
    header = next(line for line in result.stdout.splitlines() if "Document" in line)
    assert header.split()[:2] == ["ID", "Document"]
    row = next(line for line in result.stdout.splitlines() if "short.txt" in line)
    assert row.split()[0] == uploaded[:8]
    assert uploaded[:13] not in result.stdout


def test_the_api_lists_the_documents_a_prefix_starts(server: Server) -> None:
    body = httpx.get(f"{server.url}/status", params={"id_prefix": "abcdefgh"}).json()
    assert sorted(d["doc_id"] for d in body["documents"]) == ["abcdefgh1111", "abcdefgh2222"]
    assert body["count"] == 2
    assert httpx.get(f"{server.url}/status", params={"id_prefix": ""}).status_code == 400
