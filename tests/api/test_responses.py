"""The fast JSON response sends the JSON Starlette's would: same values, compact UTF-8."""

from __future__ import annotations

import json
import math

from fastapi.responses import JSONResponse

from docstatus import StatusManager
from docstatus.api.responses import FastJSONResponse


def test_a_status_body_is_sent_as_the_same_json() -> None:
    manager = StatusManager(cleanup_interval_seconds=None)
    metadata = {"format": "pdf", "tiny": 1e-7, "huge": 1e16, "sum": 0.1 + 0.2, "nested": {"ok": [1, None]}}
    manager.create_status("doc", "rapport été 😀.pdf", metadata)
    manager.update_status("doc", "parsing")
    manager.update_status("doc", "embedding_visual", page=3, total_pages=7)
    body = manager.get_status_json("doc")
    fast, plain = FastJSONResponse(body), JSONResponse(body)
    assert json.loads(fast.body) == json.loads(plain.body) == body
    assert "été 😀".encode() in fast.body  # UTF-8, not \u escapes
    assert b", " not in fast.body and b": " not in fast.body  # compact, as Starlette's
    assert fast.headers["content-type"] == plain.headers["content-type"] == "application/json"
    manager.close()


def test_a_non_finite_number_becomes_null_never_invalid_json() -> None:
    fast = FastJSONResponse({"progress": math.nan, "eta": math.inf})
    assert json.loads(fast.body) == {"progress": None, "eta": None}
