"""``GET /health``: is the service up and does its store answer?"""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ... import __version__
from ...manager import StatusManager
from ..errors import error_json, error_responses
from ..params import STRICT_QUERY
from ..schemas import HealthBody

__all__ = ["health_router"]

log = logging.getLogger(__name__)


def health_router(manager: StatusManager, *, workers_running: Callable[[], bool] | None = None) -> APIRouter:
    """``GET /health`` and ``GET /status/health`` over ``manager``; ``workers_running`` reports the pool.

    Include it before the status router: ``/status/{doc_id}`` would take ``health`` otherwise.
    """
    router = APIRouter(tags=["service"], dependencies=[STRICT_QUERY])

    async def answer(counts: bool) -> JSONResponse:
        try:
            last_seq = await run_in_threadpool(lambda: manager.last_seq)
            by_status = await run_in_threadpool(manager.count_by_status) if counts else None
        except Exception as exc:
            # Any failure to reach the store means unhealthy, whatever the store raised.
            log.warning("health check: status store %s unavailable: %s", manager.store.url, exc)
            details = {"store": manager.store.url, "reason": str(exc)[:500] or type(exc).__name__}
            error = error_json("Status store unavailable", "STORE_UNAVAILABLE", details)
            return JSONResponse({"status": "unavailable", **error}, status_code=503)
        body: dict[str, object] = {
            "status": "ok",
            "store": manager.store.url,
            "last_seq": last_seq,
            "workers": None if workers_running is None else workers_running(),
            "version": __version__,
        }
        if by_status is not None:
            body["counts"] = by_status
        return JSONResponse(body)

    @router.get(
        "/health",
        response_model=HealthBody,
        summary="Liveness and store reachability",
        responses=error_responses(503),
    )
    async def health() -> JSONResponse:
        """200 ``{"status": "ok", ...}`` when the store answers; otherwise 503 ``{"status": "unavailable"}``.

        The 503 body is the error shape with ``details.reason`` (why the store
        did not answer), so a load balancer takes the replica out while an
        operator reads the cause; it is 200 again as soon as the store answers.
        """
        return await answer(counts=False)

    @router.get(
        "/status/health",
        response_model=HealthBody,
        summary="The health answer with the documents counted by status",
        responses=error_responses(503),
    )
    async def status_health() -> JSONResponse:
        """``GET /health`` plus ``counts`` (documents by status), where status clients look for it."""
        return await answer(counts=True)

    return router
