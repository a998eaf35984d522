"""A document's upload and output live as long as its status: cleanup, DELETE and the sweep at start."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from docstatus import Event
from docstatus.api import create_app
from docstatus.service import Service
from docstatus.settings import ServiceSettings

DEADLINE = 30.0
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class App:
    """A running app over real workers, and a way to wait for a document to finish."""

    def __init__(self, client: TestClient, app: Any, tmp_path: Path) -> None:
        self.client = client
        self.service: Service = app.state.service
        self.uploads = tmp_path / "uploads"
        self.finished: set[str] = set()
        self.cond = threading.Condition()
        self.service.manager.subscribe(self._on_event)

    def _on_event(self, event: Event) -> None:
        status = event["status"]
        with self.cond:
            if status is None:
                self.finished.discard(event["doc_id"])
            elif status["status"] in ("completed", "failed"):
                self.finished.add(event["doc_id"])
                self.cond.notify_all()

    def process(self, name: str, text: str) -> str:
        answer = self.client.post("/uploads", files={"file": (name, text.encode())}, headers=AUTH)
        assert answer.status_code in (200, 201, 202), answer.text
        doc_id: str = answer.json()["doc_id"]
        with self.cond:
            assert self.cond.wait_for(lambda: doc_id in self.finished, DEADLINE)
        assert self.client.get(f"/status/{doc_id}").json()["status"] == "completed"
        return doc_id

    def files(self) -> list[str]:
        return sorted(p.name for p in self.uploads.iterdir())

    def content(self, doc_id: str) -> int:
        return self.client.get(f"/documents/{doc_id}", headers=AUTH).status_code


def _settings(tmp_path: Path, **kw: Any) -> ServiceSettings:
    return ServiceSettings(
        store=f"sqlite:///{tmp_path / 'status.db'}",
        uploads=tmp_path / "uploads",
        data_dir=tmp_path,
        api_token=TOKEN,
        workers=kw.pop("workers", 1),
        **kw,
    )


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    application = create_app(_settings(tmp_path))
    with TestClient(application, raise_server_exceptions=False) as client:
        yield App(client, application, tmp_path)


def test_cleanup_removes_the_uploads_and_the_output_too(app: App) -> None:
    old = [app.process(f"note{i}.txt", f"zebra number {i} grazes") for i in range(3)]
    assert len(app.files()) == 3 and all(app.content(d) == 200 for d in old)
    assert app.client.post("/search", params={"q": "zebra"}).status_code in (404, 405)

    answer = app.client.post("/status/cleanup", params={"max_age_seconds": 0}, headers=AUTH)

    assert answer.json() == {"removed": 3}
    assert app.files() == []
    assert all(app.content(d) == 404 for d in old)
    hits = app.client.get("/search", params={"q": "zebra"}, headers=AUTH).json()
    assert [h for h in hits["results"] if h["doc_id"] in old] == []
    assert app.service.output.count() == 0


def test_automatic_cleanup_removes_the_content_too(app: App) -> None:
    doc_id = app.process("note.txt", "an automatic cleanup")
    app.service.manager.cleanup_old_entries(0)  # what the janitor runs
    assert app.service.manager.flush_events()  # the content goes on the removal's event
    assert app.files() == [] and app.content(doc_id) == 404


def test_delete_removes_one_document_with_its_upload_and_output(app: App) -> None:
    doc_id = app.process("note.txt", "delete me")
    keep = app.process("keep.txt", "keep me")
    assert app.client.delete(f"/status/{doc_id}").status_code == 401

    answer = app.client.delete(f"/status/{doc_id}", headers=AUTH)

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["doc_id"], body["upload"], body["output"]) == (doc_id, f"{doc_id}.txt", True)
    assert body["status"]["status"] == "completed" and body["status"]["filename"] == "note.txt"
    assert app.client.get(f"/status/{doc_id}").status_code == 404
    assert app.content(doc_id) == 404
    assert app.files() == [f"{keep}.txt"] and app.content(keep) == 200

    again = app.client.delete(f"/status/{doc_id}", headers=AUTH)
    assert (again.status_code, again.json()["code"]) == (404, "DOCUMENT_NOT_FOUND")
    assert app.process("again.txt", "delete me") == doc_id  # the same content is welcome again
    assert app.files() == sorted([f"{keep}.txt", f"{doc_id}.txt"])


def test_delete_refuses_an_active_document(tmp_path: Path) -> None:
    with TestClient(create_app(_settings(tmp_path, workers=0))) as client:
        doc_id = client.post("/uploads", files={"file": ("a.txt", b"waiting")}, headers=AUTH).json()["doc_id"]
        answer = client.delete(f"/status/{doc_id}", headers=AUTH)
        assert answer.status_code == 409
        assert answer.json()["code"] == "DOCUMENT_ACTIVE"
        assert "cancel it first" in answer.json()["error"]
        assert client.get(f"/status/{doc_id}").json()["status"] == "queued"
        assert len(list((tmp_path / "uploads").iterdir())) == 1
        client.post(f"/status/{doc_id}/cancel", headers=AUTH)
        assert client.delete(f"/status/{doc_id}", headers=AUTH).json()["upload"] == f"{doc_id}.txt"
        assert list((tmp_path / "uploads").iterdir()) == []


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_the_sweep_at_start_removes_what_a_crash_left_and_nothing_else(tmp_path: Path) -> None:
    settings = _settings(tmp_path, workers=0)
    with Service(settings) as service:
        kept = service.intake.open_upload("kept.txt")
        kept.write(b"a document that stays")
        kept_id = kept.finish().doc_id
        service.output.save(kept_id, ["kept"], [[1.0, 0.0]])
        service.output.save("f" * 64, ["left by a crash"], [[1.0, 0.0]])
    uploads = tmp_path / "uploads"
    orphan, young = uploads / f"{'a' * 64}.pdf", uploads / f"{'b' * 64}.txt"
    users, temp = uploads / "mine.pdf", uploads / ".upload-x.part"
    for path in (orphan, young, users, temp):
        path.write_bytes(b"x")
    for path in (orphan, users, temp, uploads / f"{kept_id}.txt"):
        _age(path, 7200)

    with Service(settings) as service:
        assert sorted(p.name for p in uploads.iterdir()) == sorted(
            [f"{kept_id}.txt", young.name, users.name]  # the stale temp file goes as before
        )
        assert service.output.doc_ids() == [kept_id]


def test_a_document_created_again_keeps_its_file(tmp_path: Path) -> None:
    with Service(_settings(tmp_path, workers=0)) as service:
        writer = service.intake.open_upload("a.txt")
        writer.write(b"content")
        doc_id = writer.finish().doc_id
        # The status is there (as after a re-upload that won the race): the file is not touched.
        assert service.intake.remove_upload(doc_id) is None
        assert service.reaper.remove(doc_id).upload is None
        assert (tmp_path / "uploads" / f"{doc_id}.txt").exists()
