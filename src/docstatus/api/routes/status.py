"""The status endpoints: one document, the queue, the active documents, cleanup, requeue, cancel."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ...errors import DocumentNotFoundError, NotRetryableError
from ...manager import MAX_LIMIT, StatusManager
from ...models import ProcessingStatus, Status
from ...records import status_json
from ...stores.query import Query as StoreQuery
from ...worker.job import can_retry
from ..auth import token_dependencies
from ..errors import error_responses
from ..listing import delete_matching, listing_query, page_body, parse_statuses, retry_matching
from ..params import STRICT_QUERY
from ..responses import FastJSONResponse
from ..schemas import (
    CleanupBody,
    DeletedBody,
    DeleteRequest,
    DocumentList,
    DocumentPage,
    QueueBody,
    RemovedBody,
    RetriedBody,
    RetryRequest,
    StatusBody,
)
from .stream import add_stream_route

__all__ = ["Remover", "removed_json", "status_json", "status_router"]

#: Removes one finished document and says what went (``DELETE /status/{doc_id}``'s body).
Remover = Callable[[str], dict[str, Any]]

Limit = Annotated[int, Query(ge=0, le=MAX_LIMIT, description="At most this many documents")]
PageLimit = Annotated[int, Query(ge=1, le=1000, description="At most this many documents (a page)")]
_TIME_HELP = (
    "Only documents changed (started, for sort=started) {} this: ISO-8601 (naive = UTC) or epoch seconds"
)
DocId = Annotated[str, Path(description="The document's id (the SHA-256 of an upload's content)")]


def _listing(bodies: list[dict[str, Any]]) -> dict[str, Any]:
    return {"documents": bodies, "count": len(bodies)}


def _queue(manager: StatusManager, status: Status | None, limit: int) -> dict[str, Any]:
    if status is None:
        docs = manager.list_all_json(limit)
    elif limit == 0:
        docs = []
    else:
        query = StoreQuery(statuses=(status.value,), limit=limit)
        docs = page_body(query, manager.query(query))["documents"]
    counts = manager.count_by_status()
    return {
        "queue": docs,
        "total": counts["total"],
        "active": counts["active"],
        "completed": counts["completed"],
        "failed": counts["failed"],
    }


def status_router(
    manager: StatusManager,
    *,
    api_token: str | None = None,
    on_requeued: Callable[[str], None] | None = None,
    remover: Remover | None = None,
    stream: bool = True,
    ping_seconds: float = 15.0,
    max_streams: int | None = None,
) -> APIRouter:
    """The ``/status`` endpoints over ``manager``, to mount in any FastAPI app.

    ``api_token`` protects the POST and DELETE endpoints; ``on_requeued(doc_id)`` is
    called after ``POST /status/{doc_id}/requeue`` (a worker pool's
    ``enqueue``); ``remover`` serves ``DELETE /status/{doc_id}`` (default: the
    status alone, for an app without content). With ``stream`` the router also serves ``GET /status/stream``
    (SSE, see :mod:`docstatus.api.routes.stream`), at most ``max_streams``
    at once (``None``: no limit); it is registered before
    ``/status/{doc_id}``, which therefore cannot address a document whose
    id is ``stream``, ``queue`` or ``active``. Install
    :func:`~docstatus.api.errors.install_error_handlers` on the app for the
    error shape.
    """
    router = APIRouter(prefix="/status", tags=["status"], dependencies=[STRICT_QUERY])
    _add_listings(router, manager)
    if stream:
        add_stream_route(router, manager, ping_seconds=ping_seconds, max_streams=max_streams)
    _add_document(router, manager)
    guarded = token_dependencies(api_token)
    _add_changes(router, manager, guarded, on_requeued)
    _add_removal(router, remover or _status_remover(manager), guarded)
    _add_bulk(router, manager, guarded, on_requeued, remover or _status_remover(manager))
    return router


def _add_listings(router: APIRouter, manager: StatusManager) -> None:
    @router.get("", response_model=DocumentPage, summary="Find documents", responses=error_responses(400))
    async def list_documents(
        limit: PageLimit = 100,
        id_prefix: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=256,
                description="Only documents whose id starts with this: resolves a short id "
                "(one document: it is that one; several: the prefix is ambiguous)",
            ),
        ] = None,
        q: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=256,
                description="Only documents whose filename contains this (ignoring case) "
                "or whose id starts with it",
            ),
        ] = None,
        status: Annotated[
            list[str] | None,
            Query(description="Only documents in these statuses (repeat it, or separate by commas)"),
        ] = None,
        since: Annotated[
            str | None, Query(max_length=64, description=_TIME_HELP.format("at or after"))
        ] = None,
        until: Annotated[
            str | None, Query(max_length=64, description=_TIME_HELP.format("at or before"))
        ] = None,
        sort: Annotated[
            str, Query(description="updated (the last change), started (the attempt's start) or filename")
        ] = "updated",
        order: Annotated[str, Query(description="desc (the default) or asc")] = "desc",
        cursor: Annotated[
            str | None, Query(max_length=1000, description="The next of the previous page: the page after it")
        ] = None,
    ) -> JSONResponse:
        """A page of documents, most recently updated first unless ``sort``/``order`` say otherwise.

        ``next`` is the cursor of the following page (null: there is none); a
        page never repeats or skips a document that did not change meanwhile.
        ``since``/``until`` bound the time the sort uses (the last change, or
        the attempt's start for ``sort=started``). With ``id_prefix`` the other
        filters do not apply. A malformed cursor, or one of another sort
        order, is 400 ``INVALID_REQUEST``.
        """
        if id_prefix is not None:
            found = await run_in_threadpool(manager.find_by_prefix_json, id_prefix, limit)
            return FastJSONResponse({**_listing(found), "next": None})
        query = listing_query(
            statuses=parse_statuses(status),
            text=q,
            since=since,
            until=until,
            sort=sort,
            order=order,
            limit=limit,
            cursor=cursor,
        )
        page = await run_in_threadpool(manager.query, query)
        return FastJSONResponse(page_body(query, page))

    @router.get("/queue", response_model=QueueBody, summary="The queue", responses=error_responses(400))
    async def queue(
        status: Annotated[Status | None, Query(description="Only documents in this status")] = None,
        limit: Limit = 100,
    ) -> JSONResponse:
        """Documents (optionally of one status), most recently updated first, with counts."""
        return FastJSONResponse(await run_in_threadpool(_queue, manager, status, limit))

    @router.get("/active", response_model=DocumentList, summary="Documents in progress")
    async def active() -> JSONResponse:
        """Documents not yet completed or failed, most recently updated first."""
        return FastJSONResponse(_listing(await run_in_threadpool(manager.list_active_json)))


#: Stores whose single-document read is local and bounded (tens of microseconds, never
#: waiting on a network): read on the event loop, which costs far less than a thread hop.
_INLINE_SCHEMES = ("memory:", "sqlite:")


_DOC_ID_PARAMETER = {
    "name": "doc_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "title": "Doc Id"},
    "description": "The document's id (the SHA-256 of an upload's content)",
}


def _add_document(router: APIRouter, manager: StatusManager) -> None:
    inline = manager.store.url.startswith(_INLINE_SCHEMES)

    @router.get(
        "/{doc_id}",
        response_model=StatusBody,
        summary="One document's status",
        responses=error_responses(404),
        openapi_extra={"parameters": [_DOC_ID_PARAMETER]},
    )
    async def get_status(request: Request) -> JSONResponse:
        """The document's full status plus ``timestamp``; 404 ``DOCUMENT_NOT_FOUND`` if unknown."""
        # The hot path: the id is read from the path directly (any string is a valid lookup),
        # which spares FastAPI's per-request parameter validation.
        doc_id: str = request.path_params["doc_id"]
        read = manager.get_status_json
        found = read(doc_id) if inline else await run_in_threadpool(read, doc_id)
        if found is None:
            raise DocumentNotFoundError(doc_id)
        return FastJSONResponse(found)


def _add_changes(
    router: APIRouter, manager: StatusManager, guarded: list[Any], on_requeued: Callable[[str], None] | None
) -> None:
    @router.post(
        "/cleanup",
        response_model=CleanupBody,
        summary="Remove old finished documents",
        dependencies=guarded,
        responses=error_responses(400, 401),
    )
    async def cleanup(
        max_age_seconds: Annotated[
            float, Query(ge=0, le=10**9, description="Remove documents finished longer ago than this")
        ] = 3600,
    ) -> JSONResponse:
        """Remove completed/failed documents that finished over ``max_age_seconds`` ago."""
        removed = await run_in_threadpool(manager.cleanup_old_entries, max_age_seconds)
        if removed:
            # Subscribers (the service's reaper takes uploads and output with each removal)
            # are called on the event thread: answer once they have had the removals.
            await run_in_threadpool(manager.flush_events)
        return JSONResponse({"removed": removed})

    @router.post(
        "/{doc_id}/requeue",
        response_model=StatusBody,
        summary="Retry a failed document",
        dependencies=guarded,
        responses=error_responses(401, 404, 409),
    )
    async def requeue(doc_id: DocId) -> JSONResponse:
        """Start a new attempt of a failed document.

        409 ``INVALID_TRANSITION`` if it has not failed; 409 ``NOT_RETRYABLE`` if
        it failed for good (``metadata.retryable`` is false: the file is damaged,
        encrypted, unsupported or over a limit, so it would only fail again).
        """
        return JSONResponse(await run_in_threadpool(_requeue, manager, doc_id, on_requeued))

    @router.post(
        "/{doc_id}/cancel",
        response_model=StatusBody,
        summary="Cancel an active document",
        dependencies=guarded,
        responses=error_responses(401, 404, 409),
    )
    async def cancel(doc_id: DocId) -> JSONResponse:
        """Fail a queued or active document with the error ``cancelled``; its worker stops at its
        next report. 409 ``INVALID_TRANSITION`` if the document has already finished."""
        return JSONResponse(await run_in_threadpool(_cancel, manager, doc_id))


def _requeue(
    manager: StatusManager, doc_id: str, on_requeued: Callable[[str], None] | None
) -> dict[str, Any]:
    current = manager.get_status(doc_id)
    if current is not None and current.status is Status.FAILED and not can_retry(current):
        raise NotRetryableError(doc_id, current.error or "the document failed")
    manager.requeue(doc_id)
    if on_requeued is not None:
        on_requeued(doc_id)
    body = manager.get_status_json(doc_id)
    if body is None:  # removed meanwhile
        raise DocumentNotFoundError(doc_id)
    return body


def _cancel(manager: StatusManager, doc_id: str) -> dict[str, Any]:
    manager.cancel(doc_id)
    body = manager.get_status_json(doc_id)
    if body is None:  # removed meanwhile
        raise DocumentNotFoundError(doc_id)
    return body


def removed_json(last: ProcessingStatus, upload: str | None, output: bool) -> dict[str, Any]:
    """The body of ``DELETE /status/{doc_id}``: the last status (as ``GET`` gave it) and what went."""
    body = last.model_dump(mode="json")
    body["timestamp"] = body["updated_at"]
    return {"doc_id": last.doc_id, "status": body, "upload": upload, "output": output}


def _status_remover(manager: StatusManager) -> Remover:
    return lambda doc_id: removed_json(manager.remove(doc_id), None, False)


def _add_removal(router: APIRouter, remover: Remover, guarded: list[Any]) -> None:
    @router.delete(
        "/{doc_id}",
        response_model=RemovedBody,
        summary="Remove a finished document",
        dependencies=guarded,
        responses=error_responses(401, 404, 409),
    )
    async def remove(doc_id: DocId) -> JSONResponse:
        """Remove a completed or failed document now, with its upload and its output (pages, chunks,
        thumbnails). 409 ``DOCUMENT_ACTIVE`` while it is queued or in progress: cancel it first."""
        return JSONResponse(await run_in_threadpool(remover, doc_id))


def _add_bulk(
    router: APIRouter,
    manager: StatusManager,
    guarded: list[Any],
    on_requeued: Callable[[str], None] | None,
    remover: Remover,
) -> None:
    @router.post(
        "/retry",
        response_model=RetriedBody,
        summary="Retry many failed documents",
        dependencies=guarded,
        responses=error_responses(400, 401),
    )
    async def retry_many(body: RetryRequest) -> JSONResponse:
        """Requeue every failed document that matches (the listing's filters) and can be retried.

        Documents that failed for good (``metadata.retryable`` false) are
        counted in ``skipped``. Works for at most about 10 seconds; if
        documents remain, ``next`` is set: send it as ``cursor`` to go on.
        """
        query = listing_query(
            statuses=parse_statuses(body.status),
            text=body.q,
            since=body.since,
            until=body.until,
            cursor=body.cursor,
        )
        done = await run_in_threadpool(retry_matching, manager, query, on_requeued)
        return JSONResponse(
            {"retried": done.done, "skipped": done.skipped, "doc_ids": done.doc_ids, "next": done.next}
        )

    @router.post(
        "/delete",
        response_model=DeletedBody,
        summary="Remove many finished documents",
        dependencies=guarded,
        responses=error_responses(400, 401),
    )
    async def delete_many(body: DeleteRequest) -> JSONResponse:
        """Remove every finished document that matches, with its upload and output, oldest first.

        ``older_than_seconds``: only those that finished longer ago. Queued and
        active documents are never removed. Works for at most about 10 seconds;
        if documents remain, ``next`` is set: send it as ``cursor`` to go on.
        """
        until = None if body.older_than_seconds is None else time.time() - body.older_than_seconds
        query = listing_query(
            statuses=parse_statuses(body.status), text=body.q, until=until, order="asc", cursor=body.cursor
        )
        done = await run_in_threadpool(delete_matching, manager, query, remover)
        return JSONResponse({"deleted": done.done, "doc_ids": done.doc_ids, "next": done.next})
