"""The one error shape of the HTTP API, and the handlers that produce it.

Every error response has the body ``{"error": message, "code": CODE, "details": {...}}``.
Deliberate errors are :class:`~docstatus.errors.StatusError` subclasses whose ``code``
picks the HTTP status; anything unexpected becomes a 500 without a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import StatusError

__all__ = [
    "ErrorBody",
    "error_responses",
    "http_status_for",
    "install_error_handlers",
]

log = logging.getLogger(__name__)

#: HTTP status per error code; a code not listed maps to 400 (bad input) when the
#: error is a ValueError/TypeError/KeyError and to 500 otherwise.
STATUS_BY_CODE: dict[str, int] = {
    "DOCUMENT_NOT_FOUND": 404,
    "UPLOAD_NOT_FOUND": 404,
    "DUPLICATE_DOCUMENT": 409,
    "AMBIGUOUS_ID": 409,
    "INVALID_TRANSITION": 409,
    "DOCUMENT_ACTIVE": 409,
    "NOT_RETRYABLE": 409,
    "STORE_UNAVAILABLE": 503,
    "TOO_MANY_STREAMS": 503,
    "UNSUPPORTED_FORMAT": 400,
    "UPLOAD_TOO_LARGE": 413,
    "REQUEST_TOO_LARGE": 413,
    "PATH_OUTSIDE_UPLOADS": 403,
    "UNAUTHORIZED": 401,
    "CROSS_SITE_REQUEST": 403,
    "INVALID_REQUEST": 400,
    "CONFIG_ERROR": 500,
    "DISK_FULL": 507,
}

# Codes for errors that Starlette/FastAPI raise themselves (HTTPException).
_CODE_BY_HTTP_STATUS: dict[int, str] = {
    400: "INVALID_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    413: "REQUEST_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "TOO_MANY_REQUESTS",
    503: "SERVICE_UNAVAILABLE",
}


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: str = Field(..., description="What went wrong, for people")
    code: str = Field(..., description="A stable machine-readable code, e.g. DOCUMENT_NOT_FOUND")
    details: dict[str, Any] = Field(default_factory=dict, description="The error's data")

    model_config = {
        "json_schema_extra": {
            "example": {
                "error": "Document not found",
                "code": "DOCUMENT_NOT_FOUND",
                "details": {"doc_id": "abc123"},
            }
        }
    }


_DESCRIPTIONS: dict[int, str] = {
    400: "Invalid request (bad parameter, body or upload)",
    401: "Missing or wrong bearer token",
    403: "Forbidden (a path outside the uploads folder)",
    404: "Not found",
    409: "The document's status does not allow this",
    413: "Body or upload over the size limit",
    503: "The status store is unavailable",
    507: "The server's disk is full (nothing of the request was kept)",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries for ``statuses``, plus a ``default`` in the error shape.

    The ``default`` entry also stops FastAPI from documenting its own 422
    validation body: this API reports validation errors as 400 in the one shape.
    """
    entries: dict[int | str, dict[str, Any]] = {
        status: {"model": ErrorBody, "description": _DESCRIPTIONS.get(status, "Error")} for status in statuses
    }
    entries["default"] = {"model": ErrorBody, "description": "Any other error, in the same shape"}
    return entries


def http_status_for(exc: StatusError) -> int:
    """The HTTP status a deliberate error is reported with."""
    # Walk the class hierarchy so a subclass with its own code (StoreSchemaError)
    # is reported like its parent (StoreUnavailableError) unless listed itself.
    for cls in type(exc).__mro__:
        status = STATUS_BY_CODE.get(cls.__dict__.get("code", ""))
        if status is not None:
            return status
    return 400 if isinstance(exc, (ValueError, TypeError, KeyError)) else 500


def error_json(message: str, code: str, details: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """An error body in the one shape."""
    return {"error": message, "code": code, "details": dict(details or {})}


# Messages the API states in fixed words (the details carry the specifics).
_MESSAGES: dict[str, str] = {"DOCUMENT_NOT_FOUND": "Document not found"}


def status_error_response(exc: StatusError) -> JSONResponse:
    """The response for a deliberate error (an unsupported upload also says ``"status": "rejected"``)."""
    body = exc.to_dict()
    body["error"] = _MESSAGES.get(exc.code, body["error"])
    if exc.code == "UNSUPPORTED_FORMAT":
        body = {"status": "rejected", **body}
    headers = {"WWW-Authenticate": "Bearer"} if exc.code == "UNAUTHORIZED" else None
    return JSONResponse(body, status_code=http_status_for(exc), headers=headers)


async def _status_error(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, StatusError):  # pragma: no cover - registered for StatusError only
        return await _unexpected(request, exc)
    if http_status_for(exc) >= 500:
        log.error("%s %s failed: %s", request.method, request.url.path, exc)
    return status_error_response(exc)


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    problems = []
    for problem in exc.errors():
        problems.append(
            {
                "loc": [str(part) for part in problem.get("loc", ())],
                "msg": str(problem.get("msg", "")),
                "type": str(problem.get("type", "")),
            }
        )
    return problems


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    problems = _validation_details(exc) if isinstance(exc, RequestValidationError) else []
    first = problems[0] if problems else {"loc": [], "msg": "invalid request"}
    where = ".".join(first["loc"])
    message = f"Invalid request: {where}: {first['msg']}" if where else f"Invalid request: {first['msg']}"
    body = error_json(message, "INVALID_REQUEST", {"errors": problems})
    return JSONResponse(body, status_code=400)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, StarletteHTTPException):  # pragma: no cover
        return await _unexpected(request, exc)
    code = _CODE_BY_HTTP_STATUS.get(
        exc.status_code, "HTTP_ERROR" if exc.status_code < 500 else "INTERNAL_ERROR"
    )
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ").capitalize()
    return JSONResponse(error_json(message, code), status_code=exc.status_code, headers=exc.headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return JSONResponse(error_json("Internal error", "INTERNAL_ERROR"), status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    """Make every error ``app`` reports use the one shape (call it on your own app to mount routers)."""
    app.add_exception_handler(StatusError, _status_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
