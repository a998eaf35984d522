"""``GET /workers``: every live worker process of the store, and the documents each holds."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ...manager import StatusManager
from ...stores.base import LeaseEntry, WorkerEntry
from ..errors import error_responses
from ..params import STRICT_QUERY
from ..schemas import WorkersBody

__all__ = ["workers_json", "workers_router"]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _names(entry: WorkerEntry) -> set[str]:
    """The lease worker names that mean ``entry``: its id, its own host:pid and its children."""
    info = entry.info
    names = {entry.worker_id}
    if info.get("host") is not None and info.get("pid") is not None:
        names.add(f"{info['host']}:{info['pid']}")
    children = info.get("children")
    if isinstance(children, list):
        names.update(str(child) for child in children)
    return names


def _worker_json(entry: WorkerEntry, leases: Iterable[LeaseEntry]) -> dict[str, Any]:
    info, names = entry.info, _names(entry)
    return {
        "id": entry.worker_id,
        **{key: info.get(key) for key in ("host", "pid", "engine", "processes", "started_at")},
        "last_seen": _iso(entry.last_seen),
        "documents": sorted(lease.doc_id for lease in leases if lease.worker in names),
    }


def workers_json(manager: StatusManager) -> dict[str, Any]:
    """The body of ``GET /workers``: the registry's live entries with the documents they hold.

    A lease belongs to a worker entry when the lease's worker name is the
    entry's id, the entry's ``"<host>:<pid>"``, or one of ``info["children"]``
    (the processes that run its documents' processors).
    """
    leases = manager.leases()
    return {"workers": [_worker_json(entry, leases) for entry in manager.workers()]}


def workers_router(manager: StatusManager) -> APIRouter:
    """``GET /workers`` over ``manager``'s store, to mount in any FastAPI app."""
    router = APIRouter(tags=["service"], dependencies=[STRICT_QUERY])

    @router.get(
        "/workers",
        response_model=WorkersBody,
        summary="Live worker processes",
        responses=error_responses(503),
    )
    async def workers() -> JSONResponse:
        """Every worker process whose heartbeat is alive, on any host, with the documents it holds."""
        return JSONResponse(await run_in_threadpool(workers_json, manager))

    return router
