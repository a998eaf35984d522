"""Limits and failure modes of the real service (``docstatus serve`` in a subprocess, over loopback).

Each test drives the service into one limit the README lists: a full disk, a
content swap after intake, cross-site posts, connections that never finish
their headers.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from servers import Server

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    service = Server(tmp_path)
    try:
        yield service
    finally:
        service.stop()


def _text(lines: int, word: str = "hello") -> bytes:
    return "".join(f"{word} line {i}\n" for i in range(lines)).encode()


def _upload(server: Server, name: str, data: bytes, **headers: str) -> httpx.Response:
    return httpx.post(f"{server.url}/uploads", files={"file": (name, data)}, headers=headers, timeout=30)


# -- a full disk --------------------------------------------------------------------------------


@contextlib.contextmanager
def _tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of ``size`` mounted on ``folder`` (root only; the test is skipped otherwise)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root): the full-disk test did not run")
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}): the full-disk test did not run")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _fill(folder: Path) -> Path:
    """Fill the file system of ``folder`` to the last byte; the file that holds the space."""
    filler = folder / "filler.bin"
    block = b"\0" * (1 << 16)
    written = 0
    with open(filler, "wb", buffering=0) as handle:
        while written < (1 << 40):
            try:
                written += handle.write(block) or 0
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                return filler
    raise AssertionError("the file system never filled up")


def test_a_full_disk_is_a_507_that_leaves_nothing_and_heals_when_space_frees(server: Server) -> None:
    with _tmpfs(server.uploads, "20m"):
        server.start()
        filler = _fill(server.uploads)
        data = _text(100_000)  # ~1.7 MB: cannot fit
        response = _upload(server, "big.txt", data)
        assert response.status_code == 507, response.text
        body = response.json()
        assert body["code"] == "DISK_FULL" and "disk is full" in body["error"], body
        assert sorted(p.name for p in server.uploads.iterdir()) == ["filler.bin"]  # no partial file
        assert httpx.get(f"{server.url}/status").json()["documents"] == []
        filler.unlink()
        again = _upload(server, "big.txt", data)
        assert again.status_code == 200, again.text
        assert again.json()["duplicate"] is False
        assert server.wait_status(again.json()["doc_id"], "completed", "failed")["status"] == "completed"
        server.stop()


# -- content swapped after intake ---------------------------------------------------------------


def test_content_swapped_after_intake_fails_the_document_and_the_original_heals_it(server: Server) -> None:
    original = _text(50, "original")
    server.env["DOCSTATUS_WORKERS"] = "0"  # nothing processes until the restart below
    server.start()
    accepted = _upload(server, "notes.txt", original).json()
    doc_id = accepted["doc_id"]
    (server.uploads / f"{doc_id}.txt").write_bytes(_text(50, "swapped"))
    server.stop()
    server.env["DOCSTATUS_WORKERS"] = "1"
    server.start()
    failed = server.wait_status(doc_id, "completed", "failed")
    assert failed["status"] == "failed", failed
    assert failed["metadata"]["error_code"] == "CONTENT_CHANGED", failed
    assert failed["metadata"]["retryable"] is False and "changed after it was queued" in failed["error"]
    assert httpx.get(f"{server.url}/documents/{doc_id}").status_code == 404  # no output of other bytes
    again = _upload(server, "notes.txt", original).json()
    assert again["doc_id"] == doc_id and again["duplicate"] is True, again
    done = server.wait_status(doc_id, "completed", "failed")
    assert done["status"] == "completed", done
    assert (server.uploads / f"{doc_id}.txt").read_bytes() == original
    assert "original line 0" in httpx.get(f"{server.url}/documents/{doc_id}").text


# -- cross-site posts ---------------------------------------------------------------------------


def test_a_cross_site_form_post_is_403_and_same_origin_and_scripts_still_work(server: Server) -> None:
    server.start()
    evil = _upload(server, "evil.txt", b"from another site", Origin="http://evil.example")
    assert evil.status_code == 403, evil.text
    body = evil.json()
    assert set(body) == {"error", "code", "details"} and body["code"] == "CROSS_SITE_REQUEST", body
    assert body["details"] == {"origin": "http://evil.example", "path": "/uploads"}
    hidden = _upload(server, "evil.txt", b"from another site", **{"Sec-Fetch-Site": "cross-site"})
    assert hidden.status_code == 403 and hidden.json()["code"] == "CROSS_SITE_REQUEST"
    sandboxed = httpx.post(f"{server.url}/status/cleanup", headers={"Origin": "null"})
    assert sandboxed.status_code == 403 and sandboxed.json()["code"] == "CROSS_SITE_REQUEST"
    assert httpx.get(f"{server.url}/status").json()["documents"] == []
    assert not list(server.uploads.iterdir())
    # The dashboard (same origin, as a browser sends it) and a script (no Origin) are unaffected.
    own = _upload(
        server, "own.txt", b"from the dashboard", Origin=server.url, **{"Sec-Fetch-Site": "same-origin"}
    )
    assert own.status_code == 200, own.text
    assert _upload(server, "script.txt", b"from a script").status_code == 200
    assert httpx.get(f"{server.url}/health", headers={"Origin": "http://evil.example"}).status_code == 200


def test_a_configured_origin_may_post(server: Server) -> None:
    server.env["DOCSTATUS_CORS_ORIGINS"] = "http://app.example"
    server.start()
    allowed = _upload(server, "a.txt", b"from the configured app", Origin="http://app.example")
    assert allowed.status_code == 200, allowed.text
    assert allowed.headers["access-control-allow-origin"] == "http://app.example"
    other = _upload(server, "b.txt", b"from elsewhere", Origin="http://evil.example")
    assert other.status_code == 403 and other.json()["code"] == "CROSS_SITE_REQUEST"


# -- connections that never finish their headers ------------------------------------------------


def test_half_open_connections_beyond_the_cap_are_cut_off_and_health_answers(server: Server) -> None:
    server.env.update(DOCSTATUS_LIMIT_CONCURRENCY="20", DOCSTATUS_HEADER_TIMEOUT="1")
    server.start()
    sockets = []
    try:
        for _ in range(60):  # three times the cap, each stuck inside its request headers
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            sockets.append(sock)
        opened = time.monotonic()
        for sock in sockets:  # each one is closed by the server, none waits for its headers
            assert sock.recv(1024) == b""
        assert time.monotonic() - opened < 8
        deadline = time.monotonic() + 10
        while (health := httpx.get(f"{server.url}/health", timeout=5)).status_code != 200:
            assert time.monotonic() < deadline, health.text
            time.sleep(0.1)
        assert health.json()["status"] == "ok"
    finally:
        for sock in sockets:
            sock.close()


def test_a_slow_but_steady_client_is_served(server: Server) -> None:
    server.env["DOCSTATUS_HEADER_TIMEOUT"] = "2"
    server.start()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        for _ in range(2):  # two requests on one connection, each in time
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _response(sock).startswith(b"HTTP/1.1 200")
            time.sleep(1)


def _response(sock: socket.socket) -> bytes:
    """One whole response (headers and its Content-Length of body) read from ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096) or pytest.fail(f"connection closed after {data!r}")
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.lower().split(b"\r\n")
        if line.startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(4096)
    return head
