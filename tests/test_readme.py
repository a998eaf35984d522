"""The README's Python examples run as written."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

README = Path(__file__).resolve().parent.parent / "README.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def _run(block: str) -> tuple[str, dict[str, object]]:
    out = io.StringIO()
    namespace: dict[str, object] = {}
    with contextlib.redirect_stdout(out):
        exec(compile(block, "README.md", "exec"), namespace)
    return out.getvalue(), namespace


def test_library_example_runs() -> None:
    output, _ = _run(_blocks()[0])
    assert output.startswith("completed 1.0 {'format': 'pdf'")


def test_events_example_prints_what_it_says() -> None:
    output, _ = _run(_blocks()[1])
    assert output.splitlines() == ["1 created a1", "2 parsing"]


def test_fastapi_example_mounts_the_status_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the example opens sqlite:///status.db in the working folder
    _, namespace = _run(_blocks()[2])
    with TestClient(namespace["app"]) as client:  # type: ignore[arg-type]
        missing = client.get("/status/nope")
        assert missing.status_code == 404
        assert missing.json()["code"] == "DOCUMENT_NOT_FOUND"
    assert (tmp_path / "status.db").exists()


def test_adopting_example_shows_a_direct_write_noticed() -> None:
    block = next(b for b in _blocks() if "processing_status[" in b)
    output, _ = _run(block)
    assert output.splitlines() == ["completed []"]
