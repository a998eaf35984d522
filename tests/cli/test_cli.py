"""``docstatus status | list | cleanup | watch`` as real processes against a real server."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from _documents import numbered_pages, pdf_bytes
from servers import GATED, SERVE, Server, free_port

pytestmark = pytest.mark.timeout(60)

TOKEN = "cli-token-7"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def environ(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCSTATUS_")}
    env.update(COLUMNS="160", **extra)
    return env


def docstatus(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SERVE, *args], env=environ(**env), capture_output=True, text=True, timeout=30
    )


def one_line_error(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for part in expected:
        assert part in lines[0], lines[0]
    return lines[0]


def upload(server: Server, name: str, content: bytes) -> str:
    answer = httpx.post(f"{server.url}/uploads", files={"file": (name, content)}, headers=AUTH)
    assert answer.status_code == 200, answer.text
    doc_id: str = answer.json()["doc_id"]
    return doc_id


@pytest.fixture(scope="module")
def gates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gates")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, gates: Path) -> Iterator[Server]:
    env = {"DOCSTATUS_API_TOKEN": TOKEN, "TEST_GATES": str(gates)}
    running = Server(tmp_path_factory.mktemp("cli"), env=env).start(GATED)
    yield running
    running.stop(signal.SIGKILL)


@pytest.fixture(scope="module")
def finished(server: Server) -> dict[str, str]:
    """Two finished documents: one completed, one failed."""
    done = upload(server, "done.txt", b"A finished document.\n\nWith two paragraphs.")
    broken = upload(server, "broken.pdf", pdf_bytes(numbered_pages(2))[:600])
    server.wait_status(done, "completed")
    server.wait_status(broken, "failed")
    return {"completed": done, "failed": broken}


def test_status_shows_one_document_and_json_is_the_apis_answer(
    server: Server, finished: dict[str, str]
) -> None:
    done = finished["completed"]
    human = docstatus("status", done, "--url", server.url)
    assert human.returncode == 0, human.stderr
    for part in ("done.txt", done, "completed", "100%", "num_chunks"):
        assert part in human.stdout, human.stdout
    as_json = docstatus("status", done, "--url", server.url, "--json")
    assert as_json.returncode == 0
    assert as_json.stdout == httpx.get(f"{server.url}/status/{done}").text + "\n"

    failed = docstatus("status", finished["failed"], "--url", server.url)
    assert failed.returncode == 0  # showing a failed document is not an error
    assert "failed" in failed.stdout and "damaged or truncated" in failed.stdout


def test_the_url_can_come_from_the_environment(server: Server, finished: dict[str, str]) -> None:
    result = docstatus("status", finished["completed"], "--json", DOCSTATUS_URL=server.url)
    assert result.returncode == 0 and json.loads(result.stdout)["doc_id"] == finished["completed"]


def test_list_shows_documents_with_counts_and_filters(server: Server, finished: dict[str, str]) -> None:
    human = docstatus("list", "--url", server.url)
    assert human.returncode == 0, human.stderr
    assert "done.txt" in human.stdout and "broken.pdf" in human.stdout
    assert "1 completed" in human.stdout and "1 failed" in human.stdout

    only_failed = docstatus("list", "--status", "failed", "--url", server.url, "--json")
    assert only_failed.returncode == 0
    expected = httpx.get(f"{server.url}/status/queue", params={"status": "failed", "limit": 100}).text
    assert only_failed.stdout == expected + "\n"
    assert [d["doc_id"] for d in json.loads(only_failed.stdout)["queue"]] == [finished["failed"]]

    one = docstatus("list", "--limit", "1", "--url", server.url, "--json")
    assert len(json.loads(one.stdout)["queue"]) == 1

    nothing = docstatus("list", "--status", "storing", "--url", server.url)
    assert nothing.returncode == 0 and "No documents with status storing." in nothing.stdout


def test_an_unknown_document_is_exit_1_with_a_clear_message(server: Server) -> None:
    for args in (["status", "no-such-doc"], ["watch", "--doc", "no-such-doc"], ["status", "queue"]):
        result = docstatus(*args, "--url", server.url)
        assert result.returncode == 1, (args, result)
        one_line_error(result, "not found", server.url)
        assert result.stdout == ""


def test_an_unreachable_server_is_exit_3_in_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    for args in (["status", "abc"], ["list"], ["cleanup"], ["watch"], ["watch", "--doc", "abc"]):
        result = docstatus(*args, "--url", url)
        assert result.returncode == 3, (args, result)
        one_line_error(result, f"docstatus {args[0]}: error", "Cannot reach", url)


def test_bad_usage_is_exit_2(server: Server) -> None:
    cases = [
        (["list", "--status", "sleeping", "--url", server.url], "invalid choice"),
        (["list", "--limit", "lots", "--url", server.url], "--limit"),
        (["cleanup", "--max-age", "-5", "--url", server.url], "--max-age"),
        (["status", "abc", "--url", "ftp://example"], "url"),
        (["status", "", "--url", server.url], "document id"),
        (["cleanup", "--url", server.url], "API token"),  # the server needs one
        (["cleanup", "--url", server.url, "--token", "wrong"], "API token"),
    ]
    for args, message in cases:
        result = docstatus(*args)
        assert result.returncode == 2, (args, result)
        one_line_error(result, message)


def test_cleanup_removes_old_finished_documents(tmp_path: Path) -> None:
    server = Server(tmp_path, env={"DOCSTATUS_API_TOKEN": TOKEN}).start()
    try:
        doc_id = upload(server, "old.txt", b"soon to be cleaned up")
        server.wait_status(doc_id, "completed")
        keep = docstatus("cleanup", "--url", server.url, "--token", TOKEN)  # default: older than an hour
        assert keep.returncode == 0 and "Removed 0 finished documents" in keep.stdout, keep
        removed = docstatus(
            "cleanup", "--max-age", "0", "--url", server.url, "--json", DOCSTATUS_API_TOKEN=TOKEN
        )
        assert removed.returncode == 0, removed.stderr
        assert json.loads(removed.stdout) == {"removed": 1}
        assert httpx.get(f"{server.url}/status/{doc_id}").status_code == 404
    finally:
        server.stop(signal.SIGKILL)


@pytest.mark.parametrize("url", ["http://[::1", "http://127.0.0.1:abc", "http://127.0.0.1:99999999"])
def test_a_malformed_url_is_a_one_line_usage_error(url: str) -> None:
    for args in (["status", "abc"], ["list"], ["cleanup", "--token", "t"], ["watch"]):
        result = docstatus(*args, "--url", url)
        assert "Traceback" not in result.stderr, result.stderr
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "url" in lines[0], result.stderr


def test_a_non_ascii_token_is_sent_and_accepted(tmp_path: Path) -> None:
    token = "schlüssel-ö"  # printable, so the service accepts it as its token
    server = Server(tmp_path, env={"DOCSTATUS_API_TOKEN": token}).start()
    try:
        result = docstatus("cleanup", "--max-age", "0", "--json", "--token", token, "--url", server.url)
        assert "Traceback" not in result.stderr, result.stderr
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"removed": 0}
        wrong = docstatus("cleanup", "--token", "schlüssel-x", "--url", server.url)
        assert wrong.returncode == 2 and "Traceback" not in wrong.stderr, wrong.stderr
    finally:
        server.stop(signal.SIGKILL)


def watch_json(server: Server, doc_id: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", SERVE, "watch", "--doc", doc_id, "--url", server.url, "--json"],
        env=environ(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def hold(gates: Path, name: str) -> Path:
    gate = gates / f"{name}.hold"
    gate.write_text("0.5")
    return gate


@pytest.mark.parametrize(("name", "fails", "code"), [("live-ok.txt", False, 0), ("live-fail.txt", True, 1)])
def test_watch_doc_follows_the_document_until_it_ends(
    server: Server, gates: Path, name: str, fails: bool, code: int
) -> None:
    gate = hold(gates, name)
    if fails:
        (gates / f"{name}.fail").touch()
    doc_id = upload(server, name, b"\n\n".join(f"{name} paragraph {n} ".encode() * 80 for n in range(6)))
    with watch_json(server, doc_id) as watcher:
        try:
            assert watcher.stdout is not None
            first = json.loads(watcher.stdout.readline())  # the state when the watch began
            assert first["doc_id"] == doc_id and first["status"] not in ("completed", "failed")
            gate.unlink()
            out, err = watcher.communicate(timeout=30)
        finally:
            watcher.kill()
    assert watcher.returncode == code, err
    events = [json.loads(line) for line in out.splitlines()]
    assert events and {e["doc_id"] for e in events} == {doc_id}
    assert events[-1]["status"] == ("failed" if fails else "completed")
    progress = [e["progress"] for e in events if e["status"] != "failed"]
    assert progress == sorted(progress)


def test_watch_doc_of_a_finished_document_says_how_it_ended(server: Server, finished: dict[str, str]) -> None:
    done = docstatus("watch", "--doc", finished["completed"], "--url", server.url)
    assert done.returncode == 0 and "done.txt completed in" in done.stdout, done
    failed = docstatus("watch", "--doc", finished["failed"], "--url", server.url)
    assert failed.returncode == 1 and "broken.pdf failed" in failed.stdout, failed
    assert "damaged or truncated" in failed.stdout


def read_until(fd: int, needle: bytes, seen: bytearray, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while needle not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"{needle!r} not shown: {bytes(seen)[-2000:]!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the other side closed
                chunk = b""
            assert chunk, f"{needle!r} not shown before the end: {bytes(seen)[-2000:]!r}"
            seen += chunk


class Terminal:
    """A command running in a pseudo-terminal, as in a person's terminal window (rich draws live)."""

    def __init__(self, *args: str) -> None:
        self.fd, secondary = pty.openpty()
        command = [sys.executable, "-c", SERVE, *args]
        self.proc = subprocess.Popen(command, env=environ(LINES="40"), stdout=secondary, stderr=secondary)
        os.close(secondary)
        self.seen = bytearray()

    def shows(self, text: str, timeout: float = 20) -> None:
        """Wait until ``text`` has been drawn (after what was waited for before)."""
        deadline = time.monotonic() + timeout
        start = len(self.seen)
        while text.encode() not in self.seen[start:]:
            left = deadline - time.monotonic()
            assert left > 0, f"{text!r} not shown: {bytes(self.seen)[-1500:]!r}"
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:  # the command ended and closed the terminal
                    chunk = b""
                assert chunk, f"{text!r} not shown before the end: {bytes(self.seen)[-1500:]!r}"
                self.seen += chunk

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        os.close(self.fd)


def test_watch_in_a_terminal_draws_live_progress(
    server: Server, gates: Path, finished: dict[str, str]
) -> None:
    name = "on-screen.txt"
    gate = hold(gates, name)
    doc_id = upload(server, name, b"\n\n".join(b"screen %d " % n * 90 for n in range(6)))
    server.wait_status(doc_id, "embedding_text")
    board = Terminal("watch", "--url", server.url)
    one = Terminal("watch", "--doc", doc_id, "--url", server.url)
    try:
        board.shows("done.txt")  # the table of every document
        board.shows("1 active")
        one.shows("embedding_text")  # its progress bar: the watch is following the document now
        gate.unlink()
        one.shows(f"{name} completed in")
        assert one.proc.wait(timeout=10) == 0
        board.shows("0 active")
        board.proc.send_signal(signal.SIGINT)
        assert board.proc.wait(timeout=10) == 130
    finally:
        board.close()
        one.close()


def test_watch_resumes_after_the_server_restarts(tmp_path: Path) -> None:
    server = Server(tmp_path).start()
    watcher = subprocess.Popen(
        [sys.executable, "-c", SERVE, "watch", "--url", server.url, "--json"],
        env=environ(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with watcher:
        try:
            assert watcher.stdout is not None
            assert json.loads(watcher.stdout.readline())["total"] == 0  # the queue when it began
            server.stop()
            server.start(port=server.port)  # same store, same address
            doc_id = upload(server, "after-restart.txt", b"uploaded while the watch was reconnecting")
            # The watch reopened the stream by itself (resuming from its last event id).
            while True:
                event = json.loads(watcher.stdout.readline())
                if event["doc_id"] == doc_id and event["status"] == "completed":
                    break
            assert watcher.poll() is None  # still watching
            watcher.send_signal(signal.SIGINT)
            assert watcher.wait(timeout=10) == 130
        finally:
            watcher.kill()
            server.stop(signal.SIGKILL)


def _read_json_until(stream: Any, predicate: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    while not lines or not predicate(lines[-1]):
        line = stream.readline()
        assert line, f"the watch ended early after {lines}"
        lines.append(json.loads(line))
    return lines


def _completed(doc_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda event: event.get("doc_id") == doc_id and event.get("status") == "completed"


def test_watch_reads_the_listing_again_on_a_reset(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    server = Server(tmp_path / "a").start()
    watcher = subprocess.Popen(
        [sys.executable, "-c", SERVE, "watch", "--url", server.url, "--json"],
        env=environ(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with watcher:
        try:
            assert watcher.stdout is not None
            assert json.loads(watcher.stdout.readline())["total"] == 0
            doc_id = upload(server, "before.txt", b"seen by the watch before the store is replaced")
            _read_json_until(watcher.stdout, _completed(doc_id))
            server.stop()
            # Another store on the same address: the watch resumes from an id this store never reached.
            server = Server(tmp_path / "b").start(port=server.port)
            lines = _read_json_until(watcher.stdout, lambda e: "queue" in e)
            assert "ahead" in lines[-2]["reason"], lines  # the reset, then the listing read again
            assert lines[-1]["total"] == 0, lines
            after = upload(server, "after.txt", b"uploaded after the reset")
            _read_json_until(watcher.stdout, _completed(after))
            watcher.send_signal(signal.SIGINT)
            assert watcher.wait(timeout=10) == 130
        finally:
            watcher.kill()
            server.stop(signal.SIGKILL)
