"""Unknown query parameters are refused on every route; a one-document stream ends with the document."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from docstatus import Status
from docstatus.api import create_app
from docstatus.service import Service
from docstatus.settings import ServiceSettings
from sse_client import frame_fields

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    settings = ServiceSettings(store="memory://", uploads=tmp_path / "uploads", data_dir=tmp_path / "data")
    with Service(settings) as running:
        yield running


@pytest.fixture
def client(service: Service) -> Iterator[TestClient]:
    with TestClient(create_app(service=service, start_workers=False)) as client:
        yield client


def test_every_api_route_refuses_an_unknown_query_parameter(client: TestClient) -> None:
    checked = 0
    for template, operations in client.get("/openapi.json").json()["paths"].items():
        path = template.replace("{doc_id}", "abc").replace("{page}", "1")
        for method in operations:
            answer = client.request(method, path, params={"ofset": "5"})
            assert answer.status_code == 400, (method, path, answer.status_code, answer.text)
            body = answer.json()
            assert set(body) == {"error", "code", "details"}, body
            assert body["code"] == "INVALID_REQUEST"
            assert body["details"]["unknown"] == ["ofset"]
            assert "'ofset'" in body["error"]
            checked += 1
    assert checked >= 12


def test_the_error_names_what_the_endpoint_accepts_and_known_parameters_still_work(
    client: TestClient,
) -> None:
    answer = client.get("/status/queue", params={"limit": 5, "offset": 5})
    assert answer.status_code == 400
    assert answer.json()["details"]["accepted"] == ["limit", "status"]
    assert "accepts: limit, status" in answer.json()["error"]
    assert client.get("/search", params={"q": "big", "limit": 3}).status_code == 200
    assert client.get("/search", params={"query": "big"}).json()["details"]["unknown"] == ["query"]
    assert client.get("/status/queue", params={"limit": 5, "status": "queued"}).status_code == 200
    assert client.get("/status/abc").status_code == 404  # no query: the plain lookup


def test_a_stream_of_an_unknown_document_is_404_before_it_starts(client: TestClient) -> None:
    answer = client.get("/status/stream", params={"doc_id": "nope"})
    assert answer.status_code == 404
    assert answer.json()["code"] == "DOCUMENT_NOT_FOUND"
    assert answer.json()["details"] == {"doc_id": "nope"}


def test_a_one_document_stream_ends_after_its_final_event(client: TestClient, service: Service) -> None:
    manager = service.manager
    manager.create_status("doc-1", "a.txt")
    manager.create_status("other", "b.txt")
    with client.stream("GET", "/status/stream", params={"doc_id": "doc-1"}) as stream:
        assert stream.status_code == 200
        frames = frame_fields(stream.iter_lines())
        assert "id" in next(frames)  # the opening frame: the stream is live
        manager.update_status("doc-1", Status.PARSING)
        manager.update_status("other", Status.PARSING)
        manager.mark_completed("doc-1")
        manager.mark_completed("other")
        rest = list(frames)  # ends by itself: the server closed the stream
    assert [f["event"] for f in rest] == ["status", "status"]
    assert '"status":"completed"' in rest[-1]["data"] and '"doc_id":"doc-1"' in rest[-1]["data"]


@pytest.mark.parametrize("final", ["completed", "failed"])
def test_a_resumed_stream_replays_up_to_the_final_event_then_ends(
    client: TestClient, service: Service, final: str
) -> None:
    manager = service.manager
    start = manager.last_seq
    manager.create_status("doc-2", "c.txt")
    manager.update_status("doc-2", Status.PARSING)
    if final == "completed":
        manager.mark_completed("doc-2")
    else:
        manager.mark_failed("doc-2", "the file is damaged")
    headers = {"Last-Event-ID": str(start)}
    with client.stream("GET", "/status/stream", params={"doc_id": "doc-2"}, headers=headers) as stream:
        frames = [f for f in frame_fields(stream.iter_lines()) if "event" in f]
    assert len(frames) == 3 and f'"status":"{final}"' in frames[-1]["data"]
    # Once the client has seen the end, there is nothing to follow: 204 (EventSource stops too).
    again = client.get(
        "/status/stream", params={"doc_id": "doc-2"}, headers={"Last-Event-ID": frames[-1]["id"]}
    )
    assert again.status_code == 204 and again.content == b""
    assert client.get("/status/stream", params={"doc_id": "doc-2"}).status_code == 204
