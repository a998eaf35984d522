"""``GET /stats/throughput`` and ``GET /status/{doc_id}/timeline`` over the local stores."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from datetime import datetime

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from docstatus import StatusManager
from docstatus.api import install_error_handlers, stats_router, status_router
from docstatus.api.routes.stats import throughput_json


@pytest.fixture
def store_kind(local_store_kind: str) -> str:
    return local_store_kind


@pytest.fixture
def client(manager: StatusManager) -> Iterator[TestClient]:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(status_router(manager, stream=False))
    app.include_router(stats_router(manager))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def _processed(manager: StatusManager, doc_id: str, pages: int = 3) -> None:
    manager.create_status(doc_id, f"{doc_id}.pdf")
    manager.update_status(doc_id, "parsing")
    manager.update_status(doc_id, "embedding_visual", page=pages, total_pages=pages)
    manager.update_status(doc_id, "embedding_text", chunk=2, total_chunks=2)
    manager.update_status(doc_id, "storing")
    manager.mark_completed(doc_id)


def test_throughput_has_every_minute_of_the_window_oldest_first(client: TestClient) -> None:
    body = client.get("/stats/throughput", params={"minutes": 5}).json()
    assert body["minutes"] == 5 and len(body["buckets"]) == 5
    starts = [datetime.fromisoformat(b["minute"]) for b in body["buckets"]]
    assert all((b - a).total_seconds() == 60 for a, b in itertools.pairwise(starts))
    assert starts[-1].timestamp() <= time.time() < starts[-1].timestamp() + 60
    assert all(b["completed"] == b["failed"] == b["pages"] == 0 for b in body["buckets"])
    assert client.get("/stats/throughput").json()["minutes"] == 60


def test_throughput_counts_what_ended_and_outlives_cleanup(
    client: TestClient, manager: StatusManager
) -> None:
    _processed(manager, "a", pages=3)
    _processed(manager, "b", pages=4)
    manager.create_status("c", "c.pdf")
    manager.mark_failed("c", "boom")
    manager.cleanup_old_entries(max_age_seconds=0)
    body = client.get("/stats/throughput", params={"minutes": 3}).json()
    assert (body["completed"], body["failed"], body["pages"]) == (2, 1, 7)
    assert sum(b["completed"] for b in body["buckets"]) == 2


def test_throughput_window_ends_at_the_given_minute(manager: StatusManager) -> None:
    _processed(manager, "a")
    hour_ago = throughput_json(manager, 30, now=time.time() - 3600)
    assert hour_ago["completed"] == 0 and len(hour_ago["buckets"]) == 30


@pytest.mark.parametrize("minutes", ["0", "-1", "1441", "abc", "1.5"])
def test_throughput_refuses_bad_minutes(client: TestClient, minutes: str) -> None:
    answer = client.get("/stats/throughput", params={"minutes": minutes})
    assert answer.status_code == 400
    assert answer.json()["code"] == "INVALID_REQUEST"


def test_throughput_refuses_unknown_parameters(client: TestClient) -> None:
    answer = client.get("/stats/throughput", params={"minute": 5})
    assert answer.status_code == 400 and answer.json()["code"] == "INVALID_REQUEST"


def test_timeline_of_a_completed_document_has_every_stage_in_order(
    client: TestClient, manager: StatusManager
) -> None:
    _processed(manager, "a", pages=3)
    body = client.get("/status/a/timeline").json()
    assert (body["doc_id"], body["status"], body["attempt"]) == ("a", "completed", 1)
    stages = body["stages"]
    assert [s["status"] for s in stages] == [
        "queued",
        "parsing",
        "embedding_visual",
        "embedding_text",
        "storing",
    ]
    visual, text = stages[2], stages[3]
    assert (visual["done"], visual["total"]) == (3, 3)
    assert (text["done"], text["total"]) == (2, 2)
    assert all(s["seconds"] >= 0 for s in stages)
    starts = [datetime.fromisoformat(s["started_at"]) for s in stages]
    assert starts == sorted(starts)
    status = manager.get_status("a")
    assert status is not None and status.completed_at is not None
    end = starts[-1].timestamp() + stages[-1]["seconds"]
    assert abs(end - status.completed_at.timestamp()) < 0.01
    assert abs(sum(s["seconds"] for s in stages) - status.elapsed_time) < 0.01


def test_timeline_of_a_document_in_progress_ends_with_its_stage(
    client: TestClient, manager: StatusManager
) -> None:
    manager.create_status("a", "a.txt")
    assert [s["status"] for s in client.get("/status/a/timeline").json()["stages"]] == ["queued"]
    manager.update_status("a", "parsing")
    manager.update_status("a", "embedding_text", chunk=1, total_chunks=4)
    stages = client.get("/status/a/timeline").json()["stages"]
    assert [s["status"] for s in stages] == ["queued", "parsing", "embedding_text"]
    assert (stages[-1]["done"], stages[-1]["total"]) == (1, 4)


def test_timeline_of_a_failed_document_ends_in_the_stage_it_failed_in(
    client: TestClient, manager: StatusManager
) -> None:
    manager.create_status("a", "a.pdf")
    manager.update_status("a", "parsing")
    manager.update_status("a", "embedding_visual", page=1, total_pages=5)
    manager.mark_failed("a", "boom")
    body = client.get("/status/a/timeline").json()
    assert [s["status"] for s in body["stages"]] == ["queued", "parsing", "embedding_visual"]
    manager.requeue("a")
    body = client.get("/status/a/timeline").json()
    assert body["attempt"] == 2 and [s["status"] for s in body["stages"]] == ["queued"]


def test_timeline_of_an_unknown_document_is_a_404(client: TestClient) -> None:
    answer = client.get("/status/nope/timeline")
    assert answer.status_code == 404
    assert answer.json()["code"] == "DOCUMENT_NOT_FOUND"
