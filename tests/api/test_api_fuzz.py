"""Schemathesis against the app's own OpenAPI: no 5xx, and every response as documented.

Requests are generated from the schema (valid ones, then invalid ones), sent in
ASGI mode, and each response is checked: not a server error, a documented
status code and content type, a body that matches the documented schema.
The event stream is left out: it never ends, which a generated request
cannot wait for (test_server.py covers it).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from docstatus.api import create_app
from docstatus.service import Service
from docstatus.settings import ServiceSettings

pytestmark = pytest.mark.timeout(180)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture
def api_schema(tmp_path: Path) -> Iterator[schemathesis.BaseSchema]:
    settings_ = ServiceSettings(
        store=f"sqlite:///{tmp_path / 'status.db'}",
        uploads=tmp_path / "uploads",
        data_dir=tmp_path / "data",
        max_upload_bytes=64 * 1024,
        max_body_bytes=4096,
    )
    service = Service(settings_)
    # Some documents in every state, so generated requests also meet real data.
    manager = service.manager
    for n, end in enumerate(["queued", "completed", "failed"]):
        manager.create_status(f"doc-{n}", f"doc-{n}.txt", {"format": "txt"})
        if end == "completed":
            manager.mark_completed(f"doc-{n}")
        elif end == "failed":
            manager.mark_failed(f"doc-{n}", "broken")
    app = create_app(service=service, start_workers=False)
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    service.close()


def _run(operation: Any, mode: GenerationMode) -> None:
    @given(case=operation.as_strategy(mode))
    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case: Any) -> None:
        case.call_and_validate(checks=CHECKS)

    try:
        check()
    except Unsatisfiable:
        # An operation without parameters or body has no invalid request to generate.
        if mode is GenerationMode.POSITIVE:
            raise


@pytest.mark.parametrize("mode", list(GenerationMode))
def test_generated_requests_get_documented_answers(
    api_schema: schemathesis.BaseSchema, mode: GenerationMode
) -> None:
    results: list[Any] = list(api_schema.exclude(path="/status/stream").get_all_operations())
    operations = [result.ok() for result in results]
    assert len(operations) >= 10
    for operation in operations:
        _run(operation, mode)
