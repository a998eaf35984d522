"""``POST /uploads`` (multipart) and ``POST /webhook``: files in, queued documents out.

Uploads are parsed as they arrive (:mod:`docstatus.api.multipart` over
``request.stream()``) and written to disk chunk by chunk through
:meth:`~docstatus.ingest.Intake.open_upload`; nothing is held whole in
memory. A request is all-or-nothing with respect to size: every file stays a
temporary file until the whole body has arrived, so a body that goes over the
limit (or breaks off, or is malformed) leaves nothing behind.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from ...errors import InvalidRequestError, RequestTooLargeError, StatusError, UnsupportedFormatError
from ...ingest import Accepted, Intake, UploadWriter
from ..auth import token_dependencies
from ..errors import error_responses
from ..multipart import FILE_FIELD, MultipartUpload, multipart_boundary
from ..params import STRICT_QUERY
from ..schemas import UploadAnswer, UploadBatch, WebhookRequest
from .metrics import Metrics

__all__ = ["MULTIPART_OVERHEAD", "uploads_router"]

#: Bytes a multipart body may carry beyond ``max_upload_bytes`` (boundaries, part headers).
MULTIPART_OVERHEAD = 64 * 1024

_UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    FILE_FIELD: {
                        "type": "array",
                        "items": {"type": "string", "format": "binary"},
                        "description": "One or more files (repeat the field; `f` is accepted too)",
                    }
                },
                "required": [FILE_FIELD],
            }
        }
    },
}


def _declared_length(request: Request) -> int | None:
    raw = request.headers.get("content-length")
    return int(raw) if raw is not None and raw.isdigit() else None


def _rejected(writer_name: str, exc: StatusError) -> dict[str, Any]:
    return {"status": "rejected", "filename": writer_name, **exc.to_dict()}


class _IntakeEndpoints:
    """The handlers' shared state: where files go, the limits, the counters."""

    def __init__(
        self, intake: Intake, max_upload_bytes: int, max_body_bytes: int, metrics: Metrics | None
    ) -> None:
        self.intake = intake
        self.max_request_bytes = max_upload_bytes + MULTIPART_OVERHEAD
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics

    def count(self, source: str, code: str | None = None) -> None:
        if self.metrics is None:
            return
        if code is None:
            self.metrics.uploads_accepted.labels(source).inc()
        else:
            self.metrics.uploads_rejected.labels(source, code).inc()

    async def receive_upload(self, request: Request) -> MultipartUpload:
        boundary = multipart_boundary(request.headers.get("content-type"))
        declared = _declared_length(request)
        if declared is not None and declared > self.max_request_bytes:
            raise RequestTooLargeError(self.max_request_bytes)
        upload = MultipartUpload(self.intake, boundary, self.max_request_bytes)
        try:
            async for chunk in request.stream():
                await upload.feed(chunk)
            upload.check_complete()
        except ClientDisconnect:
            await run_in_threadpool(upload.abort)
            raise InvalidRequestError("The client disconnected during the upload") from None
        except BaseException:
            await run_in_threadpool(upload.abort)
            raise
        return upload

    def finish(self, upload: MultipartUpload) -> list[dict[str, Any]]:
        """Queue every file in order; a file of an unsupported format is answered as rejected."""
        answers: list[dict[str, Any]] = []
        try:
            for writer in upload.writers:
                answers.append(self._finish_one(writer, len(upload.writers) == 1))
        finally:
            upload.abort()  # only files not finished are still temporary
        return answers

    def _finish_one(self, writer: UploadWriter, alone: bool) -> dict[str, Any]:
        try:
            accepted: Accepted = writer.finish()
        except UnsupportedFormatError as exc:
            self.count("upload", exc.code)
            if alone:
                raise
            return _rejected(exc.filename, exc)
        self.count("upload")
        return accepted.to_json()

    async def read_body(self, request: Request) -> bytes:
        declared = _declared_length(request)
        if declared is not None and declared > self.max_body_bytes:
            raise RequestTooLargeError(self.max_body_bytes)
        body = bytearray()
        try:
            async for chunk in request.stream():
                body += chunk
                if len(body) > self.max_body_bytes:
                    raise RequestTooLargeError(self.max_body_bytes)
        except ClientDisconnect:
            raise InvalidRequestError("The client disconnected while sending the body") from None
        return bytes(body)


def _webhook_request(raw: bytes) -> WebhookRequest:
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: nesting deeper than the decoder can follow (fits in a small body).
        raise InvalidRequestError("The webhook body must be a JSON object") from None
    if not isinstance(payload, dict):
        raise InvalidRequestError("The webhook body must be a JSON object")
    event = payload.get("event")
    if event != "upload":
        shown = event if isinstance(event, str) else json.dumps(event)[:100]
        raise InvalidRequestError(f"Unknown event {shown!r}; the only event is 'upload'", event=shown[:100])
    try:
        return WebhookRequest.model_validate(payload)
    except ValidationError as exc:
        problems = [
            {"loc": [str(p) for p in e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()
        ]
        first = problems[0]
        raise InvalidRequestError(
            f"Invalid webhook body: {'.'.join(first['loc'])}: {first['msg']}", errors=problems
        ) from None


def uploads_router(
    intake: Intake,
    *,
    max_upload_bytes: int,
    max_body_bytes: int = 1024 * 1024,
    api_token: str | None = None,
    metrics: Metrics | None = None,
) -> APIRouter:
    """``POST /uploads`` and ``POST /webhook`` feeding ``intake``, to mount in any FastAPI app.

    ``max_upload_bytes`` limits each file (the intake's own limit should be the
    same) and the whole multipart body (plus :data:`MULTIPART_OVERHEAD` for
    framing); ``max_body_bytes`` limits the webhook's JSON body. With
    ``api_token`` both need ``Authorization: Bearer <token>``.
    """
    endpoints = _IntakeEndpoints(intake, max_upload_bytes, max_body_bytes, metrics)
    router = APIRouter(tags=["intake"], dependencies=[STRICT_QUERY, *token_dependencies(api_token)])

    @router.post(
        "/uploads",
        response_model=UploadAnswer | UploadBatch,
        summary="Upload files to process",
        openapi_extra={"requestBody": _UPLOAD_BODY},
        responses=error_responses(400, 401, 413),
    )
    async def upload(request: Request) -> JSONResponse:
        """Queue the files of the multipart field ``file``.

        One file: its answer ``{"status": "accepted", "doc_id", "filename",
        "message", "duplicate"}`` (the doc_id is the SHA-256 of the content;
        content seen before gives the existing doc_id with ``duplicate: true``
        and requeues it if it had failed). An unsupported format is a 400
        ``{"status": "rejected", "error", "code": "UNSUPPORTED_FORMAT", "details"}``.
        Several files: ``{"files": [answer, ...]}`` in order, where a file of
        an unsupported format has a ``rejected`` entry. A body or file over the
        limit is a 413 and nothing of the request is kept.
        """
        try:
            received = await endpoints.receive_upload(request)
        except StatusError as exc:
            endpoints.count("upload", exc.code)
            raise
        answers = await run_in_threadpool(endpoints.finish, received)
        return JSONResponse(answers[0] if len(answers) == 1 else {"files": answers})

    @router.post(
        "/webhook",
        response_model=UploadAnswer,
        summary="Queue a file already in the uploads folder",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": WebhookRequest.model_json_schema()}},
            }
        },
        responses=error_responses(400, 401, 403, 404, 413),
    )
    async def webhook(request: Request) -> JSONResponse:
        """``{"event": "upload", "path": ..., "filename": ...}``: queue that file, answered like an upload.

        ``path`` is relative to the uploads folder or absolute inside it; a path
        that resolves outside it (``..``, a symlink) is a 403 ``PATH_OUTSIDE_UPLOADS``
        and the file is never opened; a file with other hard links (it may be
        one from outside) is a 403 ``PATH_LINKED``; a missing file is a 404.
        """
        payload = _webhook_request(await endpoints.read_body(request))
        try:
            accepted = await run_in_threadpool(endpoints.intake.submit_path, payload.path, payload.filename)
        except StatusError as exc:
            endpoints.count("webhook", exc.code)
            raise
        endpoints.count("webhook")
        return JSONResponse(accepted.to_json())

    return router
