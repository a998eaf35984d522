"""Hostile input at the HTTP API, against a real ``docstatus serve`` (found in review)."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import httpx
import pytest

from servers import Server

pytestmark = pytest.mark.timeout(60)

TOKEN = "review-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(tmp_path_factory.mktemp("review"), env={"DOCSTATUS_API_TOKEN": TOKEN}).start()
    yield running
    running.stop(signal.SIGKILL)


@pytest.mark.parametrize(
    "body", [b"[" * 100_000, b'{"a":' * 20_000, b'{"event": "upload", "path": ' + b"[" * 5000]
)
def test_webhook_body_nested_too_deep_is_400_not_500(server: Server, body: bytes) -> None:
    # Within the body limit (1 MiB), but deeper than the JSON decoder can recurse.
    before = sorted(p.name for p in server.uploads.iterdir())
    response = httpx.post(
        f"{server.url}/webhook", content=body, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    answer = response.json()
    assert answer["code"] == "INVALID_REQUEST" and "Traceback" not in response.text
    assert sorted(p.name for p in server.uploads.iterdir()) == before
    assert httpx.get(f"{server.url}/status/queue").json()["total"] == 0


def test_server_log_has_no_traceback_for_deep_webhook_bodies(server: Server) -> None:
    httpx.post(f"{server.url}/webhook", content=b"[" * 50_000, headers=AUTH)
    assert "RecursionError" not in server.log()
