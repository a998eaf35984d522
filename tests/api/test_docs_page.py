"""``/docs`` and ``/redoc`` work offline: every file they load is served by the app itself."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from docstatus.api import create_app
from docstatus.settings import ServiceSettings


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = ServiceSettings(store="memory://", uploads=tmp_path / "uploads", data_dir=tmp_path / "data")
    with TestClient(create_app(settings, start_workers=False)) as client:
        yield client


def _loaded_urls(html: str) -> list[str]:
    return re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", html)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_pages_load_nothing_from_another_host(client: TestClient, page: str) -> None:
    answer = client.get(page)
    assert answer.status_code == 200
    html = answer.text
    assert "http://" not in html and "https://" not in html and "//cdn" not in html, html
    urls = _loaded_urls(html)
    scripts = [u for u in urls if u.endswith(".js")]
    assert scripts, html
    if page == "/docs":
        assert any(u.endswith(".css") for u in urls), html
    for url in urls:
        assert not urlsplit(url).netloc, url
        fetched = client.get(url)
        assert fetched.status_code == 200, (url, fetched.status_code)
        if url.endswith(".js"):
            assert len(fetched.content) > 100_000  # the real bundle, not a stub
    assert client.get("/openapi.json").status_code == 200
