"""docstatus dropped into existing code: processor threads write ``processing_status`` directly.

The code docstatus replaces keeps a global dict and writes it from worker
threads (``processing_status[doc_id] = {...}``, then ``["status"] = ...``,
``["progress"]``, ``["updated_at"] = datetime.now().isoformat()``). Here it
keeps doing so, unchanged, while other threads use the manager and clients use
the HTTP API (listing, counts, cleanup, the SSE stream and the WebSocket): what
they report is what the processors wrote.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from docstatus import StatusManager
from docstatus.api import health_router, install_error_handlers, status_router
from docstatus.api.routes.ws import ws_router
from sse_client import frame_fields

pytestmark = pytest.mark.timeout(60)

STEPS = ("processing", "embedding", "saving")


class Legacy:
    """The existing processor code: it knows nothing of docstatus but the dict."""

    def __init__(self, processing_status: dict[str, Any]) -> None:
        self.processing_status = processing_status

    def start(self, doc_id: str) -> None:
        now = datetime.now().isoformat()
        self.processing_status[doc_id] = {
            "doc_id": doc_id,
            "filename": f"{doc_id}.pdf",
            "status": "queued",
            "progress": 0.0,
            "started_at": now,
            "updated_at": now,
            "metadata": {"format": "pdf"},
        }

    def step(self, doc_id: str, status: str, progress: float) -> None:
        entry = self.processing_status[doc_id]
        entry["status"] = status
        entry["progress"] = progress
        entry["updated_at"] = datetime.now().isoformat()

    def run(self, doc_id: str, fail: bool = False, pause: float = 0.0) -> None:
        self.start(doc_id)
        for i, status in enumerate(STEPS):
            self.step(doc_id, status, (i + 1) / (len(STEPS) + 1))
            time.sleep(pause)
        if fail:
            self.processing_status[doc_id]["error"] = "parser crashed"
            self.step(doc_id, "error", 0.5)
        else:
            self.step(doc_id, "completed", 1.0)


@pytest.fixture
def processing_status() -> dict[str, Any]:
    return {}


@pytest.fixture
def manager(processing_status: dict[str, Any]) -> Iterator[StatusManager]:
    # The two-line change of the README: wrap the dict the code already has.
    with StatusManager(processing_status, cleanup_interval_seconds=None) as wrapped:
        yield wrapped


@pytest.fixture
def client(manager: StatusManager) -> Iterator[TestClient]:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(health_router(manager))
    app.include_router(status_router(manager))
    app.include_router(ws_router(manager))
    with TestClient(app) as test_client:
        yield test_client


def _poll_until(stop: threading.Event, manager: StatusManager) -> None:
    # What any client does all day: look. Looking is what adopts the direct writes.
    while not stop.is_set():
        manager.list_active()
        time.sleep(0.005)


def test_processors_writing_directly_beside_the_manager_and_the_api(
    processing_status: dict[str, Any], manager: StatusManager, client: TestClient
) -> None:
    legacy = Legacy(processing_status)
    threads = [threading.Thread(target=legacy.run, args=(f"legacy-{n}", n % 4 == 3)) for n in range(8)]

    def managed(n: int) -> None:
        doc_id = f"managed-{n}"
        manager.create_status(doc_id, f"{doc_id}.txt", {})
        manager.update_status(doc_id, "parsing")
        for chunk in range(1, 6):
            manager.update_status(doc_id, "embedding_text", chunk=chunk, total_chunks=5)
        manager.update_status(doc_id, "storing")
        manager.mark_completed(doc_id)

    threads += [threading.Thread(target=managed, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        assert client.get("/status", params={"limit": 5}).status_code == 200
        assert client.get("/status/queue").status_code == 200
    for t in threads:
        t.join()

    queue = client.get("/status/queue").json()
    assert (queue["total"], queue["active"], queue["completed"], queue["failed"]) == (12, 0, 10, 2), queue
    assert client.get("/status/health").json()["counts"]["failed"] == 2
    assert client.get("/status/active").json()["documents"] == []
    listed = client.get("/status", params={"limit": 100}).json()["documents"]
    assert {d["doc_id"] for d in listed} == set(processing_status)
    failed = client.get("/status/legacy-3").json()
    assert failed["status"] == "failed" and failed["error"] == "parser crashed"
    # Failing keeps the last progress the store saw: 0.75 if it saw the last step, else the 0.5 written.
    assert failed["progress"] in (0.5, 0.75)
    done = client.get("/status/legacy-0").json()
    assert done["status"] == "completed" and done["progress"] == 1.0 and done["completed_at"].endswith("Z")
    # The old code reads its dict as before; what it reads are docstatus records now.
    assert processing_status["legacy-0"]["status"] == "completed"
    json.dumps(processing_status)

    assert client.post("/status/cleanup", params={"max_age_seconds": 0}).json() == {"removed": 12}
    assert processing_status == {}
    assert client.get("/status/queue").json()["total"] == 0


def test_the_sse_stream_and_the_websocket_carry_direct_writes(
    processing_status: dict[str, Any], manager: StatusManager, client: TestClient
) -> None:
    legacy = Legacy(processing_status)
    legacy.start("watched")
    assert client.get("/status/watched").json()["status"] == "queued"  # adopted: it exists
    stop = threading.Event()
    poller = threading.Thread(target=_poll_until, args=(stop, manager))
    with client.websocket_connect("/ws") as ws:
        since = ws.receive_json()["seq"]
        with client.stream("GET", "/status/stream", params={"doc_id": "watched"}) as stream:
            frames = frame_fields(stream.iter_lines())
            next(frames)  # the opening frame: the stream is live
            poller.start()
            try:
                legacy.run("watched", pause=0.02)  # started again by the old code: a new dict
                sse = [json.loads(f["data"]) for f in frames]  # ends after the final change
            finally:
                stop.set()
                poller.join()
        socket = [ws.receive_json() for _ in range(len(sse))]
    assert sse[-1]["status"] == "completed"
    statuses = [s["status"] for s in sse]
    assert "parsing" in statuses and "storing" in statuses  # each step is seen (the old code pauses)
    assert statuses == sorted(
        statuses, key=["queued", "parsing", "embedding_text", "storing", "completed"].index
    )
    assert [e["status"] for e in socket] == sse
    assert [e["seq"] for e in socket] == sorted(e["seq"] for e in socket) and socket[0]["seq"] > since


def test_a_processor_that_runs_a_finished_document_again_is_refused_and_reported(
    processing_status: dict[str, Any],
    manager: StatusManager,
    client: TestClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    legacy = Legacy(processing_status)
    legacy.run("again")
    assert client.get("/status/again").json()["status"] == "completed"
    legacy.start("again")  # the old code processes it once more
    assert client.get("/status/again").json()["status"] == "completed"
    assert "completed is final" in caplog.text
    assert client.get("/status/active").json()["documents"] == []
    answer = client.get("/status/queue").json()
    assert answer["completed"] == 1 and answer["active"] == 0


def test_an_entry_the_manager_cannot_read_is_reported_and_not_listed(
    processing_status: dict[str, Any], manager: StatusManager, client: TestClient
) -> None:
    processing_status["odd"] = {"doc_id": "odd", "status": "thinking", "progress": 0.5}
    assert client.get("/status/odd").status_code == 404
    assert client.get("/status/queue").json()["total"] == 0
    with pytest.raises(ValueError, match="'status' is 'thinking'"):
        manager.create_status("odd", "odd.pdf", {})
    assert "odd" in manager.reconcile().unreadable
