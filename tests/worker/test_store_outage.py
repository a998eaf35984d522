"""A status store that goes away mid-run, for real: a redis-server killed and restarted under a service.

The service (``docstatus serve`` with the held processors, see ``_processors.Held``)
runs on a persistent redis-server (AOF, an fsync per write). Documents wait at
their gates while the store is killed; they are released while it is down, so
the workers' writes fail; then the store comes back on the same port and files.
Nothing is restarted but the store: every document must move on by itself.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from _redis_server import RedisServer
from docstatus import StatusManager
from helpers import wait_until
from servers import GATED, Server

pytestmark = pytest.mark.timeout(90)

DOCUMENTS = 10
#: A text document long enough to be held half-way through its text embedding.
TEXT = b"".join(f"Paragraph {i}. ".encode() * 40 + b"\n\n" for i in range(12))


@pytest.fixture
def persistent_redis(tmp_path: Path) -> Iterator[RedisServer]:
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis", persistent=True)
    server.start()
    yield server
    server.stop()


def _upload(url: str, name: str, content: bytes) -> str:
    answer = httpx.post(f"{url}/uploads", files={"file": (name, content)})
    assert answer.status_code in (200, 201, 202), answer.text
    doc_id: str = answer.json()["doc_id"]
    return doc_id


def _health(url: str) -> httpx.Response:
    return httpx.get(f"{url}/health", timeout=5)


def _finished(manager: StatusManager, doc_ids: list[str]) -> bool:
    return all(manager.require_status(d).is_finished for d in doc_ids)


def test_a_store_outage_mid_run_strands_no_document(tmp_path: Path, persistent_redis: RedisServer) -> None:
    gates = tmp_path / "gates"
    gates.mkdir()
    env = {
        "DOCSTATUS_STORE": persistent_redis.url,
        "DOCSTATUS_WORKERS": "2",
        "DOCSTATUS_LEASE_SECONDS": "1.5",
        "TEST_GATES": str(gates),
    }
    server = Server(tmp_path, env=env).start(GATED)
    try:
        names = [f"doc-{n}.txt" for n in range(DOCUMENTS)]
        for name in names:
            (gates / f"{name}.hold").write_text("0.5")
        doc_ids = [_upload(server.url, name, TEXT + name.encode()) for name in names]
        with StatusManager(store=persistent_redis.url, cleanup_interval_seconds=None) as manager:
            running = lambda: sum(manager.require_status(d).status == "embedding_text" for d in doc_ids)  # noqa: E731
            wait_until(lambda: running() == 2, 20)

            persistent_redis.stop(kill=True)
            down = _health(server.url)
            assert down.status_code == 503, down.text
            assert down.json()["code"] == "STORE_UNAVAILABLE" and down.json()["status"] == "unavailable"
            assert down.json()["details"]["reason"], down.text
            for name in names:  # the held workers go on now and cannot write
                (gates / f"{name}.hold").unlink()
            time.sleep(3.0)  # the outage itself: a length of time, not a condition to wait for
            persistent_redis.start()

            wait_until(lambda: _health(server.url).status_code == 200, 15)
            try:
                wait_until(lambda: _finished(manager, doc_ids), 45)
            except AssertionError:
                states = {d[:8]: manager.require_status(d).status for d in doc_ids}
                raise AssertionError(f"{states}\n{server.log()[-4000:]}") from None
            for doc_id in doc_ids:
                status = manager.require_status(doc_id)
                assert status.status in ("completed", "failed"), status
                if status.status == "failed":
                    assert status.error, status
            # Only the two running when the store went away lost their lease (then retried).
            attempts = sorted(manager.require_status(d).metadata.get("attempt", 1) for d in doc_ids)
            assert attempts[: DOCUMENTS - 2] == [1] * (DOCUMENTS - 2), attempts
    finally:
        server.stop()
