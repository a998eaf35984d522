"""GET /status's filters, sort orders and cursors, and the bulk POST /status/retry and /status/delete."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from docstatus import Status, StatusManager
from docstatus.api import install_error_handlers, status_router
from docstatus.api import listing as bulk
from docstatus.api.routes.status import removed_json

TOKEN = "bulk-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def store_kind(local_store_kind: str) -> str:
    return local_store_kind


class Service:
    def __init__(self, manager: StatusManager) -> None:
        self.manager = manager
        self.requeued: list[str] = []
        self.removed: list[str] = []
        app = FastAPI()
        install_error_handlers(app)
        app.include_router(
            status_router(
                manager, api_token=TOKEN, on_requeued=self.requeued.append, remover=self.remove, stream=False
            )
        )
        self.client = TestClient(app, raise_server_exceptions=False)

    def remove(self, doc_id: str) -> dict[str, Any]:
        self.removed.append(doc_id)
        return removed_json(self.manager.remove(doc_id), None, False)

    def ids(self, **params: Any) -> list[str]:
        answer = self.client.get("/status", params=params)
        assert answer.status_code == 200, answer.text
        return [d["doc_id"] for d in answer.json()["documents"]]


@pytest.fixture
def service(manager: StatusManager) -> Iterator[Service]:
    s = Service(manager)
    yield s
    s.client.close()


def _error(answer: Any, status: int = 400, code: str = "INVALID_REQUEST") -> str:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["code"] == code and set(body) >= {"error", "code", "details"}
    return str(body["error"])


def _fleet(manager: StatusManager) -> None:
    for i in range(12):
        manager.create_status(f"doc{i:02}", ["Invoice-1.pdf", "scan.PNG", "notes.txt"][i % 3])
    for i in range(0, 12, 4):
        manager.mark_failed(f"doc{i:02}", "broken")
    for i in range(1, 12, 4):
        manager.mark_completed(f"doc{i:02}")
    manager.create_status("final", "final.pdf", {"retryable": False})
    manager.mark_failed("final", "damaged file")


def test_the_listing_keeps_its_shape_and_gains_next(service: Service) -> None:
    _fleet(service.manager)
    body = service.client.get("/status", params={"limit": 5}).json()
    assert set(body) == {"documents", "count", "next"} and body["count"] == 5
    everything = [d["doc_id"] for d in service.manager.list_all_json(100)]
    assert [d["doc_id"] for d in body["documents"]] == everything[:5]
    assert service.client.get("/status", params={"id_prefix": "doc0"}).json()["next"] is None


def test_filters(service: Service) -> None:
    _fleet(service.manager)
    assert service.ids(status="failed") == ["final", "doc08", "doc04", "doc00"]
    both = ["final", "doc09", "doc05", "doc01", "doc08", "doc04", "doc00"]
    assert service.ids(status=["failed", "completed"]) == both
    assert service.ids(status="failed,completed") == both
    assert sorted(service.ids(q="invoice")) == ["doc00", "doc03", "doc06", "doc09"]
    assert service.ids(q="doc1") == ["doc11", "doc10"]
    assert service.ids(q="notes", status="completed") == ["doc05"]
    assert service.ids(sort="filename", order="asc", limit=1) == ["final"]
    first = service.manager.require_status("doc00").started_at
    assert service.ids(sort="started", order="asc", limit=1) == ["doc00"]
    naive = first.astimezone(UTC).replace(tzinfo=None).isoformat()
    assert service.ids(sort="started", until=naive) == ["doc00"]
    assert service.ids(sort="started", until=str(first.timestamp())) == ["doc00"]
    assert len(service.ids(since=first.isoformat())) == 13
    assert service.ids(since=str(time.time() + 60)) == []


def test_cursors_page_through_everything(service: Service) -> None:
    _fleet(service.manager)
    for params in ({}, {"sort": "filename"}, {"sort": "started", "order": "asc"}, {"status": "failed"}):
        seen: list[str] = []
        cursor = None
        while True:
            body = service.client.get("/status", params={**params, "limit": 2, "cursor": cursor}).json()
            assert "documents" in body, body
            seen += [d["doc_id"] for d in body["documents"]]
            if body["next"] is None:
                break
            cursor = body["next"]
        assert seen == service.ids(**params, limit=100), params


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"status": "lost"}, "unknown status 'lost'"),
        ({"sort": "size"}, "sort must be one of"),
        ({"order": "up"}, "order must be desc or asc"),
        ({"since": "yesterday"}, "since must be ISO-8601"),
        ({"until": "nan"}, "until is out of range"),
        ({"cursor": "!!!"}, "malformed cursor"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"offset": 5}, "Unknown query parameter"),
    ],
)
def test_bad_parameters_are_400(service: Service, params: dict[str, Any], says: str) -> None:
    assert says in _error(service.client.get("/status", params=params))


def test_a_cursor_of_another_sort_is_400(service: Service) -> None:
    _fleet(service.manager)
    cursor = service.client.get("/status", params={"limit": 1}).json()["next"]
    message = _error(service.client.get("/status", params={"cursor": cursor, "sort": "filename"}))
    assert "sort=updated order=desc, not sort=filename order=desc" in message
    assert "cursor" in _error(service.client.get("/status", params={"cursor": cursor, "order": "asc"}))


def test_the_queue_of_a_finished_status_comes_from_its_index(service: Service) -> None:
    _fleet(service.manager)
    queue = service.client.get("/status/queue", params={"status": "failed", "limit": 2}).json()
    assert [d["doc_id"] for d in queue["queue"]] == ["final", "doc08"]
    assert queue["failed"] == 4


def test_a_bulk_time_bound_out_of_range_is_400_and_changes_nothing(service: Service) -> None:
    _fleet(service.manager)
    before = service.manager.count_by_status()
    for until in (1.797e302, -1e15):
        answer = service.client.post("/status/retry", json={"until": until}, headers=AUTH)
        assert answer.status_code == 400 and "until is out of range" in answer.json()["error"], answer.text
    assert service.manager.count_by_status() == before


def test_bulk_actions_need_the_token(service: Service) -> None:
    _error(service.client.post("/status/retry", json={}), 401, "UNAUTHORIZED")
    _error(service.client.post("/status/delete", json={}), 401, "UNAUTHORIZED")


def test_retry_requeues_the_failed_that_can_be_retried(service: Service) -> None:
    _fleet(service.manager)
    answer = service.client.post("/status/retry", json={"status": ["failed"]}, headers=AUTH)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"retried": 3, "skipped": 1, "doc_ids": ["doc08", "doc04", "doc00"], "next": None}
    assert service.requeued == ["doc08", "doc04", "doc00"]  # the service's enqueue hook, for each
    assert service.manager.require_status("doc04").status is Status.QUEUED
    assert service.manager.require_status("final").status is Status.FAILED
    again = service.client.post("/status/retry", json={}, headers=AUTH).json()
    assert (again["retried"], again["skipped"]) == (0, 1)


def test_retry_takes_the_listing_filters(service: Service) -> None:
    _fleet(service.manager)
    answer = service.client.post("/status/retry", json={"q": "invoice"}, headers=AUTH).json()
    assert answer["doc_ids"] == ["doc00"]  # doc00 is the only failed invoice
    failed_at = service.manager.require_status("doc08").updated_at.timestamp()
    answer = service.client.post("/status/retry", json={"since": failed_at}, headers=AUTH).json()
    assert answer["doc_ids"] == ["doc08"] and answer["skipped"] == 1  # final failed later


@pytest.mark.parametrize(
    "body",
    [
        {"status": ["completed"]},
        {"status": "failed"},
        {"statuses": ["failed"]},
        {"since": "tomorrow"},
        {"cursor": "x"},
        {"q": ""},
    ],
)
def test_retry_refuses_bad_bodies(service: Service, body: dict[str, Any]) -> None:
    _error(service.client.post("/status/retry", json=body, headers=AUTH))


def test_delete_removes_finished_documents_with_the_remover(service: Service) -> None:
    _fleet(service.manager)
    service.manager.create_status("busy", "busy.pdf")
    service.manager.update_status("busy", Status.PARSING)
    answer = service.client.post("/status/delete", json={"status": ["completed"]}, headers=AUTH).json()
    assert answer == {"deleted": 3, "doc_ids": ["doc01", "doc05", "doc09"], "next": None}  # oldest first
    assert service.removed == ["doc01", "doc05", "doc09"]
    answer = service.client.post("/status/delete", json={"older_than_seconds": 3600}, headers=AUTH).json()
    assert answer["deleted"] == 0
    answer = service.client.post("/status/delete", json={"q": "final"}, headers=AUTH).json()
    assert answer["doc_ids"] == ["final"]
    answer = service.client.post("/status/delete", json={"older_than_seconds": 0}, headers=AUTH).json()
    assert answer["deleted"] == 3
    assert {d["doc_id"] for d in service.manager.list_all_json()} == {
        f"doc{i:02}" for i in (2, 3, 6, 7, 10, 11)
    } | {"busy"}


@pytest.mark.parametrize(
    "body",
    [
        {"status": ["queued"]},
        {"older_than_seconds": -1},
        {"older_than": 5},
        {"status": ["failed", "parsing"]},
    ],
)
def test_delete_refuses_bad_bodies(service: Service, body: dict[str, Any]) -> None:
    _error(service.client.post("/status/delete", json=body, headers=AUTH))


def test_a_bulk_action_out_of_time_says_where_to_go_on(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(7):
        service.manager.create_status(f"f{i}", "f.pdf")
        service.manager.mark_failed(f"f{i}", "broken")
    monkeypatch.setattr(bulk, "BULK_BATCH", 2)
    monkeypatch.setattr(bulk, "BULK_SECONDS", 0.0)  # one batch per call
    retried: list[str] = []
    cursor = None
    calls = 0
    while True:
        calls += 1
        answer = service.client.post("/status/retry", json={"cursor": cursor}, headers=AUTH).json()
        retried += answer["doc_ids"]
        if answer["next"] is None:
            break
        cursor = answer["next"]
    assert calls == 4 and sorted(retried) == [f"f{i}" for i in range(7)]


def test_times_in_iso_and_epoch_seconds_are_the_same_bound() -> None:
    moment = datetime(2025, 1, 31, 12, 0, tzinfo=UTC)
    assert bulk.parse_time("since", "2025-01-31T12:00:00") == moment.timestamp()
    assert bulk.parse_time("since", "2025-01-31T12:00:00Z") == moment.timestamp()
    assert bulk.parse_time("since", "2025-01-31T13:00:00+01:00") == moment.timestamp()
    assert bulk.parse_time("since", str(moment.timestamp())) == moment.timestamp()
