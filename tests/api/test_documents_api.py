"""``/documents`` and ``/search``: the pipeline's output read back over HTTP (the app of ``serve``)."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from _documents import numbered_pages, pdf_bytes, pptx_bytes
from docstatus import Event
from docstatus.api import create_app
from docstatus.settings import ServiceSettings

DEADLINE = 30.0


class App:
    """A running app, its client, and a way to wait for a document to finish (on the manager's events)."""

    def __init__(self, client: TestClient, app: Any) -> None:
        self.client = client
        self.service = app.state.service
        self.finished: dict[str, dict[str, Any]] = {}
        self.cond = threading.Condition()
        self.service.manager.subscribe(self._on_event)

    def _on_event(self, event: Event) -> None:
        status = event["status"]
        if status is not None and status["status"] in ("completed", "failed"):
            with self.cond:
                self.finished[event["doc_id"]] = status
                self.cond.notify_all()

    def process(self, name: str, data: bytes) -> dict[str, Any]:
        answer = self.client.post("/uploads", files={"file": (name, data)})
        assert answer.status_code in (200, 201, 202), answer.text
        doc_id = answer.json()["doc_id"]
        with self.cond:
            assert self.cond.wait_for(lambda: doc_id in self.finished, DEADLINE)
            return self.finished[doc_id]


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    settings = ServiceSettings(
        store=f"sqlite:///{tmp_path / 'status.db'}", uploads=tmp_path / "uploads", data_dir=tmp_path
    )
    application = create_app(settings)
    with TestClient(application, raise_server_exceptions=False) as client:
        yield App(client, application)


def test_a_processed_pdf_is_readable_with_pages_chunks_and_thumbnails(app: App) -> None:
    final = app.process("report.pdf", pdf_bytes(numbered_pages(3)))
    assert final["status"] == "completed", final["error"]
    doc_id = final["doc_id"]
    body = app.client.get(f"/documents/{doc_id}").json()
    assert (body["doc_id"], body["num_pages"], body["num_chunks"]) == (doc_id, 3, 3)
    assert body["metadata"]["format"] == "pdf"
    assert [p["number"] for p in body["pages"]] == [1, 2, 3]
    assert "vector" not in body["pages"][0]
    assert body["chunks"][1]["info"]["page"] == 2
    assert "Page 2 of the report." in body["chunks"][1]["text"]
    thumb = app.client.get(body["pages"][0]["thumbnail_url"])
    assert thumb.status_code == 200
    assert thumb.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(thumb.content)) as image:
        assert image.format == "JPEG"
        assert max(image.size) == 256
    with_vectors = app.client.get(f"/documents/{doc_id}", params={"vectors": "true"}).json()
    assert len(with_vectors["pages"][0]["vector"]) == body["visual_dimension"] == 320
    assert len(with_vectors["chunks"][0]["vector"]) == body["text_dimension"]


def test_search_finds_the_chunk_that_talks_about_it(app: App) -> None:
    pdf = app.process("report.pdf", pdf_bytes(numbered_pages(5)))
    slides = app.process("talk.pptx", pptx_bytes(2))
    answer = app.client.get("/search", params={"q": "sourdough bread", "limit": 3})
    assert answer.status_code == 200
    results = answer.json()["results"]
    assert results[0]["doc_id"] == pdf["doc_id"]
    assert results[0]["info"]["page"] == 4
    assert results[0]["score"] > 0
    jazz = app.client.get("/search", params={"q": "jazz improvisation"}).json()["results"]
    assert jazz[0]["doc_id"] == slides["doc_id"]
    assert app.client.get("/search", params={"q": "!!!"}).json() == {
        "query": "!!!",
        "count": 0,
        "results": [],
    }


def test_unknown_documents_and_pages_are_404_in_the_error_shape(app: App) -> None:
    missing = app.client.get("/documents/" + "0" * 64)
    assert missing.status_code == 404
    assert missing.json()["code"] == "DOCUMENT_NOT_FOUND"
    assert set(missing.json()) == {"error", "code", "details"}
    final = app.process("one.pdf", pdf_bytes(numbered_pages(1)))
    page = app.client.get(f"/documents/{final['doc_id']}/pages/2/thumbnail")
    assert page.status_code == 404
    assert page.json() == {
        "error": f"Document {final['doc_id']!r} has no stored page 2",
        "code": "PAGE_NOT_FOUND",
        "details": {"doc_id": final["doc_id"], "page": 2},
    }
    thumb_of_missing = app.client.get("/documents/" + "0" * 64 + "/pages/1/thumbnail")
    assert thumb_of_missing.json()["code"] == "DOCUMENT_NOT_FOUND"


def test_a_failed_document_is_not_found_and_says_why(app: App) -> None:
    final = app.process("locked.pdf", pdf_bytes(numbered_pages(1), password="pw"))
    assert final["status"] == "failed"
    answer = app.client.get(f"/documents/{final['doc_id']}")
    assert answer.status_code == 404
    details = answer.json()["details"]
    assert details["status"] == "failed"
    assert "encrypted" in details["reason"]


@pytest.mark.parametrize(
    "url",
    [
        "/search",
        "/search?q=",
        "/search?q=x&limit=0",
        "/search?q=x&limit=101",
        "/documents/abc/pages/0/thumbnail",
    ],
)
def test_bad_parameters_are_400_in_the_error_shape(app: App, url: str) -> None:
    answer = app.client.get(url)
    assert answer.status_code == 400
    assert answer.json()["code"] == "INVALID_REQUEST"


def test_a_mislabelled_upload_is_refused_with_the_reason(app: App) -> None:
    answer = app.client.post("/uploads", files={"file": ("fake.pdf", b"PK\x03\x04 a zip really")})
    assert answer.status_code == 400
    assert "the content is ZIP (or DOCX/PPTX/XLSX), not PDF" in answer.json()["error"]
