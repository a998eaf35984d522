"""With an API token, document content needs it; status reads stay open (and /docs says so)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from docstatus.api import create_app
from docstatus.settings import ServiceSettings

TOKEN = "content-token-1"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CONTENT = ["/documents/abc", "/documents/abc/pages/1/thumbnail", "/search?q=big"]


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = ServiceSettings(
        store="memory://", uploads=tmp_path / "uploads", data_dir=tmp_path / "data", api_token=TOKEN
    )
    with TestClient(create_app(settings, start_workers=False)) as client:
        yield client


def test_content_reads_need_the_token(client: TestClient) -> None:
    for path in CONTENT:
        refused = client.get(path)
        assert refused.status_code == 401, path
        assert refused.json()["code"] == "UNAUTHORIZED"
        assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get(path, headers=AUTH).status_code in (200, 404), path
    assert client.get("/search?q=big", headers=AUTH).json()["count"] == 0


def test_status_reads_stay_open(client: TestClient) -> None:
    assert client.get("/status/abc").status_code == 404
    assert client.get("/status/queue").status_code == 200
    assert client.get("/health").status_code == 200


def test_the_openapi_page_says_which_reads_need_the_token(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    for path in ("/documents/{doc_id}", "/documents/{doc_id}/pages/{page}/thumbnail", "/search"):
        assert paths[path]["get"].get("security"), path
        assert "401" in paths[path]["get"]["responses"], path
    assert not paths["/status/{doc_id}"]["get"].get("security")
    assert "content" in schema["info"]["description"] and "/search" in schema["info"]["description"]
