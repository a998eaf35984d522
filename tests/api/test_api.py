"""The HTTP API in fine grain, through Starlette's TestClient (the real server: test_server.py).

The routers are mounted in a plain FastAPI app here, as a user would mount
them; ``create_app`` is covered at the end and in test_server.py.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from docstatus import StatusManager, StoreUnavailableError
from docstatus.api import (
    Metrics,
    create_app,
    health_router,
    install_error_handlers,
    metrics_router,
    status_router,
    uploads_router,
    workers_router,
)
from docstatus.api.schemas import UploadAnswer, WorkersBody
from docstatus.ingest import Accepted, Intake
from docstatus.settings import ServiceSettings

TOKEN = "s3cret-token"
MAX_UPLOAD = 4096


class Env:
    """An app over a fresh manager and uploads folder, and what the test needs to look at."""

    def __init__(self, tmp_path: Path, token: str | None = None) -> None:
        self.uploads = tmp_path / "uploads"
        self.outside = tmp_path / "outside"
        self.outside.mkdir()
        self.manager = StatusManager(
            store=f"sqlite:///{tmp_path / 'status.db'}", cleanup_interval_seconds=None
        )
        self.requeued: list[str] = []
        self.intake = Intake(self.manager, self.uploads, max_bytes=MAX_UPLOAD)
        self.metrics = Metrics(self.manager)
        self.metrics.start()
        app = FastAPI()
        install_error_handlers(app)
        app.include_router(status_router(self.manager, api_token=token, on_requeued=self.requeued.append))
        app.include_router(
            uploads_router(
                self.intake,
                max_upload_bytes=MAX_UPLOAD,
                max_body_bytes=512,
                api_token=token,
                metrics=self.metrics,
            )
        )
        app.include_router(health_router(self.manager))
        app.include_router(metrics_router(self.metrics))
        app.include_router(workers_router(self.manager))

        @app.get("/boom")
        async def boom() -> None:
            raise RuntimeError("secret internals /etc/passwd")

        self.app = app
        self.client = TestClient(app, raise_server_exceptions=False)

    def close(self) -> None:
        self.client.close()
        self.metrics.close()
        self.manager.close()

    def uploads_listing(self) -> list[str]:
        return sorted(p.name for p in self.uploads.iterdir()) if self.uploads.exists() else []


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    e.close()


@pytest.fixture
def locked(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path, token=TOKEN)
    yield e
    e.close()


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) >= {"error", "code", "details"}, body
    assert body["code"] == code, body
    assert isinstance(body["error"], str) and body["error"]
    assert "Traceback" not in response.text
    return body


def upload(client: TestClient, *files: tuple[str, bytes], headers: dict[str, str] | None = None) -> Any:
    return client.post(
        "/uploads", files=[("file", (name, data, "text/plain")) for name, data in files], headers=headers
    )


def multipart(
    parts: Sequence[tuple[str, str | None, bytes]], boundary: str = "XyZbOuNdArY"
) -> tuple[bytes, str]:
    """A multipart body built by hand (for malformed cases): (field, filename, data) per part."""
    out = b""
    for field, filename, data in parts:
        disposition = f'form-data; name="{field}"' + (
            f'; filename="{filename}"' if filename is not None else ""
        )
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return out, f"multipart/form-data; boundary={boundary}"


# -- status -----------------------------------------------------------------------


def test_get_status_is_the_status_json_plus_timestamp(env: Env) -> None:
    env.manager.create_status("doc-1", "a.txt", {"format": "txt"})
    env.manager.update_status("doc-1", "parsing", stage="reading")
    response = env.client.get("/status/doc-1")
    assert response.status_code == 200
    body = response.json()
    expected = env.manager.require_status("doc-1").model_dump(mode="json")
    assert body["timestamp"] == body["updated_at"] == expected["updated_at"]
    for key in ("doc_id", "filename", "status", "progress", "stage", "started_at", "metadata", "error"):
        assert body[key] == expected[key]
    assert body["status"] == "parsing" and body["stage"] == "reading"


def test_unknown_document_is_404_in_the_error_shape(env: Env) -> None:
    body = assert_error(env.client.get("/status/nope"), 404, "DOCUMENT_NOT_FOUND")
    assert body == {
        "error": "Document not found",
        "code": "DOCUMENT_NOT_FOUND",
        "details": {"doc_id": "nope"},
    }


def test_queue_lists_most_recent_first_with_counts(env: Env) -> None:
    for name in ("a", "b", "c"):
        env.manager.create_status(name, f"{name}.txt")
    env.manager.mark_completed("a")
    env.manager.mark_failed("b", "broken")
    body = env.client.get("/status/queue").json()
    assert [d["doc_id"] for d in body["queue"]] == ["b", "a", "c"]
    assert (body["total"], body["active"], body["completed"], body["failed"]) == (3, 1, 1, 1)
    failed = env.client.get("/status/queue", params={"status": "failed"}).json()
    assert [d["doc_id"] for d in failed["queue"]] == ["b"]
    queued = env.client.get("/status/queue", params={"status": "queued", "limit": 5}).json()
    assert [d["doc_id"] for d in queued["queue"]] == ["c"]
    assert len(env.client.get("/status/queue", params={"limit": 1}).json()["queue"]) == 1


@pytest.mark.parametrize(
    "params",
    [{"status": "bogus"}, {"limit": "-1"}, {"limit": "ten"}, {"limit": str(10**9)}, {"status": ""}],
)
def test_invalid_queue_parameters_are_400(env: Env, params: dict[str, str]) -> None:
    body = assert_error(env.client.get("/status/queue", params=params), 400, "INVALID_REQUEST")
    assert body["details"]["errors"]


def test_active_and_recent_listings(env: Env) -> None:
    for name in ("a", "b", "c"):
        env.manager.create_status(name, f"{name}.txt")
    env.manager.mark_completed("b")
    active = env.client.get("/status/active").json()
    assert [d["doc_id"] for d in active["documents"]] == ["c", "a"] and active["count"] == 2
    recent = env.client.get("/status", params={"limit": 2}).json()
    assert [d["doc_id"] for d in recent["documents"]] == ["b", "c"]
    assert_error(env.client.get("/status", params={"limit": "x"}), 400, "INVALID_REQUEST")


def test_cleanup_removes_finished_documents(env: Env) -> None:
    env.manager.create_status("old", "old.txt")
    env.manager.mark_completed("old")
    env.manager.create_status("live", "live.txt")
    assert env.client.post("/status/cleanup", params={"max_age_seconds": 3600}).json() == {"removed": 0}
    assert env.client.post("/status/cleanup", params={"max_age_seconds": 0}).json() == {"removed": 1}
    assert env.manager.get_status("old") is None and env.manager.get_status("live") is not None
    assert_error(env.client.post("/status/cleanup", params={"max_age_seconds": -1}), 400, "INVALID_REQUEST")
    assert_error(
        env.client.post("/status/cleanup", params={"max_age_seconds": "nan"}), 400, "INVALID_REQUEST"
    )


def test_requeue_retries_a_failed_document_only(env: Env) -> None:
    env.manager.create_status("d", "d.txt")
    body = assert_error(env.client.post("/status/d/requeue"), 409, "INVALID_TRANSITION")
    assert body["details"]["current"] == "queued"
    env.manager.mark_failed("d", "broken")
    response = env.client.post("/status/d/requeue")
    assert response.status_code == 200
    assert response.json()["status"] == "queued" and response.json()["metadata"]["attempt"] == 2
    assert env.requeued == ["d"]
    assert_error(env.client.post("/status/missing/requeue"), 404, "DOCUMENT_NOT_FOUND")


def test_cancel_fails_an_active_document_and_refuses_a_finished_one(env: Env) -> None:
    env.manager.create_status("q", "q.txt")
    env.manager.create_status("d", "d.txt")
    lease = env.manager.claim("d", worker="host:9", seconds=30)
    assert lease is not None
    lease.update_status("embedding_text", chunk=1, total_chunks=4)
    for doc_id in ("q", "d"):
        response = env.client.post(f"/status/{doc_id}/cancel")
        assert response.status_code == 200, response.text
        assert response.json() == env.client.get(f"/status/{doc_id}").json()
        assert response.json()["status"] == "failed" and response.json()["error"] == "cancelled"
    assert env.manager.leases() == []
    body = assert_error(env.client.post("/status/d/cancel"), 409, "INVALID_TRANSITION")
    assert body["details"]["current"] == "failed" and "already finished" in body["error"]
    env.manager.create_status("c", "c.txt")
    env.manager.mark_completed("c")
    assert assert_error(env.client.post("/status/c/cancel"), 409, "INVALID_TRANSITION")["details"] == {
        "doc_id": "c",
        "current": "completed",
        "target": "failed",
    }
    assert_error(env.client.post("/status/missing/cancel"), 404, "DOCUMENT_NOT_FOUND")
    assert env.requeued == []


def test_cancel_needs_the_token_when_one_is_set(locked: Env) -> None:
    locked.manager.create_status("d", "d.txt")
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        assert_error(locked.client.post("/status/d/cancel", headers=headers), 401, "UNAUTHORIZED")
    assert locked.manager.require_status("d").status == "queued"
    good = {"Authorization": f"Bearer {TOKEN}"}
    assert locked.client.post("/status/d/cancel", headers=good).json()["error"] == "cancelled"


# -- workers ----------------------------------------------------------------------


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def test_workers_lists_live_workers_with_the_documents_they_hold(env: Env) -> None:
    assert env.client.get("/workers").json() == {"workers": []}
    info = {
        "host": "node-a",
        "pid": 4242,
        "engine": "rq",
        "processes": 2,
        "started_at": "2025-10-07T19:00:00Z",
        "children": ["node-a:5001", "node-a:5002"],
    }
    env.manager.heartbeat("node-a:4242:rq", info, 30)
    env.manager.heartbeat("node-b:7", {"host": "node-b", "pid": 7, "engine": "local", "processes": 1}, 30)
    holders = {"own": "node-a:4242", "child": "node-a:5002", "id": "node-a:4242:rq", "b": "node-b:7"}
    for doc_id, worker in {**holders, "nobody": "node-c:1"}.items():
        env.manager.create_status(doc_id, f"{doc_id}.txt")
        assert env.manager.claim(doc_id, worker=worker, seconds=30) is not None
    env.manager.create_status("queued", "queued.txt")
    response = env.client.get("/workers")
    assert response.status_code == 200
    body = response.json()
    WorkersBody.model_validate(body)
    entries = {e.worker_id: e for e in env.manager.workers()}
    assert body == {
        "workers": [
            {
                "id": "node-a:4242:rq",
                "host": "node-a",
                "pid": 4242,
                "engine": "rq",
                "processes": 2,
                "started_at": "2025-10-07T19:00:00Z",
                "last_seen": _iso(entries["node-a:4242:rq"].last_seen),
                "documents": ["child", "id", "own"],
            },
            {
                "id": "node-b:7",
                "host": "node-b",
                "pid": 7,
                "engine": "local",
                "processes": 1,
                "started_at": None,
                "last_seen": _iso(entries["node-b:7"].last_seen),
                "documents": ["b"],
            },
        ]
    }
    # A finished document is no longer held; a forgotten worker is gone.
    env.manager.cancel("own")
    env.manager.forget_worker("node-b:7")
    assert [(w["id"], w["documents"]) for w in env.client.get("/workers").json()["workers"]] == [
        ("node-a:4242:rq", ["child", "id"])
    ]


def test_a_worker_whose_heartbeat_expired_is_not_listed(env: Env) -> None:
    env.manager.heartbeat("short", {"host": "h"}, 0.05)
    env.manager.heartbeat("long", {"host": "h"}, 30)
    deadline = time.monotonic() + 10
    while len(env.client.get("/workers").json()["workers"]) != 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert [w["id"] for w in env.client.get("/workers").json()["workers"]] == ["long"]


def test_workers_is_503_when_the_store_is_unavailable(env: Env) -> None:
    env.manager.store.close()
    assert_error(env.client.get("/workers"), 503, "STORE_UNAVAILABLE")


# -- errors -----------------------------------------------------------------------


def test_unknown_route_and_method_use_the_error_shape(env: Env) -> None:
    assert_error(env.client.get("/nowhere"), 404, "NOT_FOUND")
    response = env.client.put("/status/x")  # DELETE is a method of /status/{doc_id} too
    assert_error(response, 405, "METHOD_NOT_ALLOWED")
    assert "GET" in response.headers["allow"]


def test_unexpected_errors_are_500_without_internals(env: Env) -> None:
    response = env.client.get("/boom")
    assert response.status_code == 500
    assert response.json() == {"error": "Internal error", "code": "INTERNAL_ERROR", "details": {}}
    assert "passwd" not in response.text


def test_unavailable_store_is_503(env: Env) -> None:
    env.manager.store.close()
    assert_error(env.client.get("/status/x"), 503, "STORE_UNAVAILABLE")
    health = env.client.get("/health")
    assert health.status_code == 503 and health.json()["status"] == "unavailable"
    assert_error(health, 503, "STORE_UNAVAILABLE")


def test_health_reports_the_store(env: Env) -> None:
    env.manager.create_status("d", "d.txt")
    body = env.client.get("/health").json()
    assert body["status"] == "ok" and body["last_seq"] >= 1 and body["store"].startswith("sqlite://")


# -- auth -------------------------------------------------------------------------


def test_posts_need_the_token_when_one_is_set(locked: Env) -> None:
    locked.manager.create_status("d", "d.txt")
    locked.manager.mark_failed("d", "broken")
    for path in ("/status/cleanup", "/status/d/requeue", "/webhook"):
        response = locked.client.post(path)
        assert_error(response, 401, "UNAUTHORIZED")
        assert response.headers["www-authenticate"] == "Bearer"
        assert_error(locked.client.post(path, headers={"Authorization": "Bearer wrong"}), 401, "UNAUTHORIZED")
        assert_error(locked.client.post(path, headers={"Authorization": TOKEN}), 401, "UNAUTHORIZED")
    assert_error(upload(locked.client, ("a.txt", b"hello")), 401, "UNAUTHORIZED")
    assert locked.uploads_listing() == []
    assert locked.manager.require_status("d").status == "failed"
    good = {"Authorization": f"Bearer {TOKEN}"}
    assert locked.client.post("/status/d/requeue", headers=good).status_code == 200
    assert upload(locked.client, ("a.txt", b"hello"), headers=good).status_code == 200
    # Reads stay open.
    assert locked.client.get("/status/d").status_code == 200


def test_without_a_token_posts_are_open(env: Env) -> None:
    assert env.client.post("/status/cleanup").status_code == 200


# -- uploads ----------------------------------------------------------------------


def test_upload_queues_the_file_under_its_hash(env: Env) -> None:
    response = upload(env.client, ("notes.txt", b"hello world"))
    assert response.status_code == 200, response.text
    body = response.json()
    digest = "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
    assert body == {
        "status": "accepted",
        "doc_id": digest,
        "filename": "notes.txt",
        "message": body["message"],
        "duplicate": False,
    }
    assert env.manager.require_status(digest).status == "queued"
    assert (env.uploads / f"{digest}.txt").read_bytes() == b"hello world"
    assert env.uploads_listing() == [f"{digest}.txt"]


def test_same_content_again_is_a_duplicate_and_a_failed_one_is_requeued(env: Env) -> None:
    first = upload(env.client, ("a.txt", b"same")).json()
    again = upload(env.client, ("b.txt", b"same")).json()
    assert again["doc_id"] == first["doc_id"] and again["duplicate"] is True
    env.manager.mark_failed(first["doc_id"], "broken")
    retried = upload(env.client, ("c.txt", b"same")).json()
    assert retried["duplicate"] is True
    status = env.manager.require_status(first["doc_id"])
    assert status.status == "queued" and status.metadata["attempt"] == 2


def test_several_files_answer_one_entry_each(env: Env) -> None:
    response = upload(env.client, ("a.txt", b"alpha"), ("b.md", b"# beta"), ("c.exe", b"MZ\x90"))
    assert response.status_code == 200, response.text
    files = response.json()["files"]
    assert [f["status"] for f in files] == ["accepted", "accepted", "rejected"]
    assert files[2]["code"] == "UNSUPPORTED_FORMAT" and files[2]["filename"] == "c.exe"
    assert all(env.manager.get_status(f["doc_id"]) for f in files[:2])
    assert len(env.uploads_listing()) == 2


def test_unsupported_format_is_400_rejected(env: Env) -> None:
    response = upload(env.client, ("tool.exe", b"MZ\x90\x00"))
    body = assert_error(response, 400, "UNSUPPORTED_FORMAT")
    assert body["status"] == "rejected" and body["error"].startswith("Unsupported format")
    assert env.uploads_listing() == [] and env.manager.list_all() == []


def test_oversized_upload_is_413_and_leaves_nothing(env: Env) -> None:
    body, content_type = multipart([("file", "big.txt", b"x" * (MAX_UPLOAD + 1))])
    response = env.client.post("/uploads", content=body, headers={"Content-Type": content_type})
    assert_error(response, 413, "UPLOAD_TOO_LARGE")
    assert env.uploads_listing() == [] and env.manager.list_all() == []


def test_oversized_body_is_refused_from_its_content_length(env: Env) -> None:
    body, content_type = multipart([("file", "big.txt", b"x" * (MAX_UPLOAD + 70 * 1024))])
    response = env.client.post("/uploads", content=body, headers={"Content-Type": content_type})
    assert_error(response, 413, "REQUEST_TOO_LARGE")
    assert env.uploads_listing() == []


def test_oversized_chunked_body_is_refused_while_streaming(env: Env) -> None:
    # Several files each under the limit, together over it, without a Content-Length.
    parts = [("file", f"f{i}.txt", bytes([65 + i]) * 3000) for i in range(30)]
    body, content_type = multipart(parts)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    response = env.client.post("/uploads", content=chunks(), headers={"Content-Type": content_type})
    assert_error(response, 413, "REQUEST_TOO_LARGE")
    assert env.uploads_listing() == [] and env.manager.list_all() == []


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"file=abc", "application/x-www-form-urlencoded"),
        (b"--b\r\n", "multipart/form-data"),  # no boundary parameter
        (b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\nabc', None),
        (b"garbage that is not multipart at all", None),
        (multipart([("other", None, b"value")])[0], None),  # no file field
        (multipart([("file", None, b"value")])[0], None),  # a file field that is not a file
        (b"", None),
    ],
)
def test_malformed_uploads_are_400_and_leave_nothing(env: Env, body: bytes, content_type: str | None) -> None:
    headers = {"Content-Type": content_type or "multipart/form-data; boundary=XyZbOuNdArY"}
    if body.startswith(b"--XyZ\r\n"):
        headers["Content-Type"] = "multipart/form-data; boundary=XyZ"
    response = env.client.post("/uploads", content=body, headers=headers)
    assert_error(response, 400, "INVALID_REQUEST")
    assert env.uploads_listing() == [] and env.manager.list_all() == []


@pytest.mark.parametrize(
    "name", ["../../x.txt", "/etc/x.txt", "C:\\Windows\\x.txt", "..\\..\\x.txt", "sub/../../x.txt"]
)
def test_traversal_filenames_are_stripped_to_a_name_inside_uploads(env: Env, name: str) -> None:
    before = sorted(os.listdir(env.outside.parent))
    response = upload(env.client, (name, b"content of " + name.encode()))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (
        "/" not in body["filename"]
        and "\\" not in body["filename"]
        and body["filename"] not in ("", ".", "..")
    )
    assert sorted(os.listdir(env.outside.parent)) == before
    assert list(env.outside.iterdir()) == []
    stored = env.manager.require_status(body["doc_id"]).metadata["path"]
    assert (env.uploads / stored).resolve().parent == env.uploads.resolve()


def test_a_filename_that_is_only_dots_names_nothing_outside(env: Env) -> None:
    # ".." has no extension left once sanitised, and binary content: rejected, nothing written anywhere.
    assert_error(upload(env.client, ("..", b"\x00dots")), 400, "UNSUPPORTED_FORMAT")
    assert env.uploads_listing() == [] and list(env.outside.iterdir()) == []


# -- webhook ----------------------------------------------------------------------


def test_webhook_queues_a_file_in_the_uploads_folder(env: Env) -> None:
    env.uploads.mkdir(exist_ok=True)
    (env.uploads / "incoming").mkdir()
    (env.uploads / "incoming" / "r.md").write_bytes(b"# report")
    response = env.client.post(
        "/webhook", json={"event": "upload", "path": "incoming/r.md", "filename": "Report.md"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "accepted" and body["filename"] == "Report.md" and body["duplicate"] is False
    absolute = env.client.post(
        "/webhook", json={"event": "upload", "path": str(env.uploads / "incoming" / "r.md")}
    )
    assert absolute.json()["doc_id"] == body["doc_id"] and absolute.json()["duplicate"] is True


def test_webhook_paths_outside_uploads_are_403_and_untouched(env: Env) -> None:
    secret = env.outside / "secret.txt"
    secret.write_bytes(b"do not read")
    stamp = secret.stat().st_mtime_ns
    env.uploads.mkdir(exist_ok=True)
    (env.uploads / "link.txt").symlink_to(secret)
    (env.uploads / "dirlink").symlink_to(env.outside, target_is_directory=True)
    for path in ("../outside/secret.txt", str(secret), "link.txt", "dirlink/secret.txt", "/etc/passwd"):
        response = env.client.post("/webhook", json={"event": "upload", "path": path})
        assert_error(response, 403, "PATH_OUTSIDE_UPLOADS")
    assert secret.read_bytes() == b"do not read" and secret.stat().st_mtime_ns == stamp
    assert env.manager.list_all() == []


def test_webhook_hard_link_to_a_file_outside_is_403(env: Env) -> None:
    secret = env.outside / "secret.txt"
    secret.write_bytes(b"do not read")
    env.uploads.mkdir(exist_ok=True)
    os.link(secret, env.uploads / "hard.txt")
    response = env.client.post("/webhook", json={"event": "upload", "path": "hard.txt"})
    body = assert_error(response, 403, "PATH_LINKED")
    assert body["details"] == {"path": "hard.txt", "links": 2}
    assert env.manager.list_all() == []


def test_webhook_missing_file_is_404(env: Env) -> None:
    response = env.client.post("/webhook", json={"event": "upload", "path": "nope.txt"})
    assert_error(response, 404, "UPLOAD_NOT_FOUND")


@pytest.mark.parametrize(
    "body",
    [
        b'{"event": "delete", "path": "a.txt"}',
        b'{"path": "a.txt"}',
        b'{"event": "upload"}',
        b'{"event": "upload", "path": ""}',
        b'{"event": "upload", "path": 5}',
        b'{"event": "upload", "path": "a.txt", "extra": 1}',
        b"[1, 2]",
        b"not json",
        b"\xff\xfe",
        b"",
    ],
)
def test_webhook_bad_bodies_are_400(env: Env, body: bytes) -> None:
    response = env.client.post("/webhook", content=body, headers={"Content-Type": "application/json"})
    assert_error(response, 400, "INVALID_REQUEST")


def test_webhook_body_over_the_limit_is_413(env: Env) -> None:
    padding = "p" * 600
    response = env.client.post("/webhook", json={"event": "upload", "path": padding})
    assert_error(response, 413, "REQUEST_TOO_LARGE")


# -- metrics and docs -------------------------------------------------------------


def test_metrics_count_documents_uploads_and_processing_time(env: Env) -> None:
    accepted = upload(env.client, ("a.txt", b"alpha")).json()
    upload(env.client, ("b.exe", b"MZ"))
    env.manager.update_status(accepted["doc_id"], "parsing")
    env.manager.mark_completed(accepted["doc_id"])
    response = env.client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'docstatus_documents{status="completed"} 1.0' in text
    assert 'docstatus_documents{status="queued"} 0.0' in text
    assert 'docstatus_uploads_accepted_total{source="upload"} 1.0' in text
    assert 'docstatus_uploads_rejected_total{code="UNSUPPORTED_FORMAT",source="upload"} 1.0' in text
    assert 'docstatus_processing_seconds_count{format="txt",outcome="completed"} 1.0' in text


def test_two_apps_in_one_process_have_separate_metrics(env: Env, tmp_path: Path) -> None:
    second = tmp_path / "second"
    second.mkdir()
    other = Env(second)
    try:
        upload(env.client, ("a.txt", b"alpha"))
        assert 'docstatus_uploads_accepted_total{source="upload"} 1.0' in env.client.get("/metrics").text
        assert 'docstatus_uploads_accepted_total{source="upload"}' not in other.client.get("/metrics").text
    finally:
        other.close()


def test_openapi_documents_examples_and_no_422(env: Env) -> None:
    schema = env.client.get("/openapi.json").json()
    status_op = schema["paths"]["/status/{doc_id}"]["get"]
    assert "404" in status_op["responses"] and "422" not in status_op["responses"]
    assert schema["components"]["schemas"]["StatusBody"]["example"]["status"] == "embedding_visual"
    for path in schema["paths"].values():
        for operation in path.values():
            assert "422" not in operation["responses"]
    assert env.client.get("/docs").status_code == 200


@pytest.mark.parametrize(
    "accepted",
    [
        Accepted.queued("abc", "a.txt"),
        Accepted("abc", "a.txt", True, False, "Duplicate of an existing document (status: queued)"),
        Accepted("abc", "a.txt", True, True, "Duplicate of a failed document; queued again"),
    ],
)
def test_the_documented_upload_answer_is_the_one_the_intake_builds(accepted: Accepted) -> None:
    body = accepted.to_json()
    assert set(UploadAnswer.model_fields) == set(body)
    assert UploadAnswer.model_validate(body).model_dump() == body
    example = UploadAnswer.model_json_schema()["example"]
    assert example == Accepted.queued(example["doc_id"], example["filename"]).to_json()


# -- the app factory --------------------------------------------------------------


def _settings(tmp_path: Path, **changes: Any) -> ServiceSettings:
    return ServiceSettings(
        store=f"sqlite:///{tmp_path / 'app.db'}",
        uploads=tmp_path / "app-uploads",
        data_dir=tmp_path / "app-data",
        **changes,
    )


def test_create_app_runs_the_service_for_its_lifespan(tmp_path: Path) -> None:
    app = create_app(_settings(tmp_path))
    service = app.state.service
    with TestClient(app) as client:
        assert client.get("/health").json()["workers"] is True
        doc_id = upload(client, ("a.md", b"# Title\n\nSome text.")).json()["doc_id"]
        deadline = time.monotonic() + 20
        while client.get(f"/status/{doc_id}").json()["status"] != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert 'docstatus_processing_seconds_count{format="md",outcome="completed"} 1.0' in (
            client.get("/metrics").text
        )
    assert not service.pool.running
    with pytest.raises(StoreUnavailableError):
        service.manager.get_status(doc_id)  # an app that built its service also closes it


def test_create_app_without_workers_only_queues(tmp_path: Path) -> None:
    with TestClient(create_app(_settings(tmp_path), start_workers=False)) as client:
        doc_id = upload(client, ("a.txt", b"text")).json()["doc_id"]
        assert client.get("/health").json()["workers"] is False
        assert client.get(f"/status/{doc_id}").json()["status"] == "queued"


def test_cors_origins_are_configurable(tmp_path: Path) -> None:
    app = create_app(_settings(tmp_path, cors_origins=("http://dash.example",)), start_workers=False)
    with TestClient(app) as client:
        preflight = {"Origin": "http://dash.example", "Access-Control-Request-Method": "POST"}
        allowed = client.options("/uploads", headers=preflight)
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "http://dash.example"
        other = client.get("/status", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in other.headers
    plain = create_app(_settings(tmp_path / "plain"), start_workers=False)
    with TestClient(plain) as client:
        assert (
            "access-control-allow-origin" not in client.get("/status", headers={"Origin": "http://x"}).headers
        )


def test_create_app_serves_cancel_and_workers(tmp_path: Path) -> None:
    app = create_app(_settings(tmp_path), start_workers=False)
    with TestClient(app) as client:
        manager = app.state.service.manager
        manager.heartbeat("host:1", {"host": "host", "pid": 1, "engine": "local"}, 30)
        assert [w["id"] for w in client.get("/workers").json()["workers"]] == ["host:1"]
        doc_id = upload(client, ("a.txt", b"text")).json()["doc_id"]
        assert client.post(f"/status/{doc_id}/cancel").json()["error"] == "cancelled"
    schema = app.openapi()
    assert {"/workers", "/status/{doc_id}/cancel"} <= set(schema["paths"])


def test_status_health_is_the_health_answer_with_counts_for_status_clients(tmp_path: Path) -> None:
    app = create_app(_settings(tmp_path), start_workers=False)
    manager = app.state.service.manager
    manager.create_status("a", "a.pdf")
    manager.create_status("b", "b.pdf")
    manager.mark_failed("b", "broken")
    with TestClient(app) as client:
        plain = client.get("/health").json()
        answer = client.get("/status/health")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert "counts" not in plain
    assert {k: v for k, v in body.items() if k != "counts"} == plain
    assert body["counts"]["queued"] == 1 and body["counts"]["failed"] == 1


def test_an_upload_form_may_name_its_file_field_f(env: Env) -> None:
    answer = env.client.post("/uploads", files={"f": ("legacy.txt", b"sent by an older form")})
    assert answer.status_code == 200, answer.text
    assert env.manager.require_status(answer.json()["doc_id"]).filename == "legacy.txt"
    refused = env.client.post("/uploads", files={"other": ("x.txt", b"not a file field")})
    assert_error(refused, 400, "INVALID_REQUEST")
