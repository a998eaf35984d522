"""What a failure tells people (one sentence about their file) and machines (a code, and whether to retry)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from _documents import numbered_pages, pdf_bytes
from docstatus import Status, StatusManager
from docstatus.api import create_app
from docstatus.errors import (
    DocumentLimitError,
    DocumentTimeoutError,
    MissingDependencyError,
    UnreadableDocumentError,
    UnsupportedFormatError,
)
from docstatus.formats import default_processors
from docstatus.ingest import Intake
from docstatus.manager import MAX_ERROR
from docstatus.service import Service
from docstatus.settings import ServiceSettings
from docstatus.worker import can_retry, failure_message, failure_metadata
from docstatus.worker.pool import WorkerPool


def test_the_message_is_the_errors_sentence_without_its_class() -> None:
    unreadable = UnreadableDocumentError("a.docx", "it is not a valid Word document (DOCX)")
    assert failure_message(unreadable) == "'a.docx' cannot be read: it is not a valid Word document (DOCX)"
    assert failure_message(ValueError("cannot read bad.txt")) == "cannot read bad.txt"
    assert failure_message(RuntimeError()) == "processing failed unexpectedly"
    assert len(failure_message(ValueError("x" * (MAX_ERROR + 10)))) == MAX_ERROR


@pytest.mark.parametrize(
    ("exc", "code", "retryable"),
    [
        (UnreadableDocumentError("a.pdf", "encrypted"), "DOCUMENT_UNREADABLE", False),
        (DocumentLimitError("a.pdf", "pages", 40, 30), "DOCUMENT_TOO_LARGE", False),
        (UnsupportedFormatError("a.xyz", "no processor"), "UNSUPPORTED_FORMAT", False),
        (DocumentTimeoutError("d", 5), "DOCUMENT_TIMEOUT", True),
        (MissingDependencyError("pypdfium2", "pipeline"), "MISSING_DEPENDENCY", True),
        (ValueError("boom"), "ValueError", True),
    ],
)
def test_the_metadata_carries_the_code_and_whether_a_retry_can_help(
    exc: Exception, code: str, retryable: bool
) -> None:
    assert failure_metadata(exc) == {"error_code": code, "retryable": retryable}


def _fail(manager: StatusManager, doc_id: str, exc: Exception) -> None:
    # What the worker pool records for a failed document.
    manager.update_status(doc_id, Status.FAILED, error=failure_message(exc), metadata=failure_metadata(exc))


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    settings = ServiceSettings(store="memory://", uploads=tmp_path / "uploads", data_dir=tmp_path / "data")
    running = Service(settings)  # not started: nothing processes the documents behind the test's back
    yield running
    running.close()


@pytest.fixture
def client(service: Service) -> Iterator[TestClient]:
    with TestClient(create_app(service=service, start_workers=False)) as client:
        yield client


def _upload(client: TestClient, name: str, content: bytes) -> str:
    answer = client.post("/uploads", files={"file": (name, content)})
    assert answer.status_code == 200, answer.text
    doc_id: str = answer.json()["doc_id"]
    return doc_id


def test_a_retry_of_a_document_that_failed_for_good_is_409(client: TestClient, service: Service) -> None:
    doc_id = _upload(client, "broken.txt", b"some text")
    _fail(service.manager, doc_id, UnreadableDocumentError("broken.txt", "the file is damaged"))
    status = service.manager.require_status(doc_id)
    assert not can_retry(status)

    answer = client.post(f"/status/{doc_id}/requeue")
    assert answer.status_code == 409
    body = answer.json()
    assert body["code"] == "NOT_RETRYABLE"
    assert body["error"] == (
        "Retrying would fail the same way, so it is not offered: "
        "'broken.txt' cannot be read: the file is damaged"
    )
    assert service.manager.require_status(doc_id).status is Status.FAILED

    # Uploading the same content again does not start an attempt that can only fail the same way.
    again = client.post("/uploads", files={"file": ("broken.txt", b"some text")}).json()
    assert again["duplicate"] is True
    assert "cannot be processed" in again["message"]
    assert service.manager.require_status(doc_id).status is Status.FAILED


def test_a_retry_of_a_document_that_may_succeed_next_time_is_allowed(
    client: TestClient, service: Service
) -> None:
    doc_id = _upload(client, "slow.txt", b"slow text")
    _fail(service.manager, doc_id, DocumentTimeoutError(doc_id, 5))
    assert can_retry(service.manager.require_status(doc_id))
    answer = client.post(f"/status/{doc_id}/requeue")
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "queued"
    # A failure recorded without the metadata (older versions, other code) stays retryable.
    service.manager.mark_failed(doc_id, "lost")
    assert client.post(f"/status/{doc_id}/requeue").status_code == 200


def test_a_refused_upload_names_its_extension_not_every_supported_one(client: TestClient) -> None:
    answer = client.post("/uploads", files={"file": ("tool.xyz", b"data")})
    assert answer.status_code == 400
    body = answer.json()
    assert body["error"] == (
        "Unsupported format for 'tool.xyz': '.xyz' files are not supported "
        "(the README lists the formats that are)"
    )
    assert ".pdf" in body["details"]["supported"]  # the list is still there, for programs


def test_the_pool_records_a_failure_for_good(tmp_path: Path) -> None:
    with StatusManager(cleanup_interval_seconds=None) as manager:
        intake = Intake(manager, tmp_path / "uploads", max_bytes=1 << 20)
        with intake.open_upload("cut.pdf") as writer:
            writer.write(pdf_bytes(numbered_pages(3))[:700])
            doc_id = writer.finish().doc_id
        pool = WorkerPool(manager, tmp_path / "uploads", default_processors(), workers=1)
        pool.start()
        pool.enqueue(doc_id)
        try:
            assert pool.wait_idle(30)
        finally:
            pool.stop()
        final = manager.require_status(doc_id)
        assert final.status is Status.FAILED
        assert final.metadata["error_code"] == "DOCUMENT_UNREADABLE"
        assert final.metadata["retryable"] is False
