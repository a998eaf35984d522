"""The app factory: one FastAPI app with every router, error handling, CORS and auth."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi_offline import FastAPIOffline

from .. import __version__
from ..models import ProcessingStatus
from ..service import Service
from ..settings import ServiceSettings
from .errors import install_error_handlers
from .logs import follow_server_logging
from .origins import SameOriginMiddleware
from .routes.dashboard import dashboard_router
from .routes.documents import documents_router
from .routes.health import health_router
from .routes.metrics import Metrics, metrics_router
from .routes.stats import stats_router
from .routes.status import removed_json, status_router
from .routes.uploads import uploads_router
from .routes.workers import workers_router
from .routes.ws import ws_router

__all__ = ["create_app"]

log = logging.getLogger(__name__)

#: Where the Swagger UI and ReDoc files of ``/docs`` and ``/redoc`` are served (no CDN: works offline).
DOCS_ASSETS = "/docs/static"

DESCRIPTION = """\
Track the processing status of every document in the pipeline.

* `POST /uploads` a file (multipart field `file`), or `POST /webhook` one already in the
  uploads folder; both answer with the document's `doc_id` (the SHA-256 of its content).
* `GET /status/{doc_id}` for one document, `GET /status/queue` and `GET /status/active`
  for many, `GET /status/stream` for every change as it happens (server-sent events).
* `POST /status/{doc_id}/cancel` stops a queued or active document; `GET /workers` lists
  the live worker processes and the documents each holds.
* `DELETE /status/{doc_id}` removes a finished document with its upload and its output;
  `POST /status/cleanup` does so for every document finished longer ago than an age.
* A `POST` from a web page of another site is refused (403 `CROSS_SITE_REQUEST`) unless its
  origin is configured (`DOCSTATUS_CORS_ORIGINS`); clients that are not browsers are unaffected.
* Errors are always `{"error": message, "code": CODE, "details": {...}}`.
* When the service has an API token, every `POST` and `DELETE` and every read of document content
  (`GET /documents/...`, page thumbnails, `GET /search`) needs `Authorization: Bearer <token>`
  (use **Authorize** above); status reads (`/status/...`, `/health`, `/metrics`) stay open.
"""


def create_app(
    settings: ServiceSettings | None = None,
    *,
    service: Service | None = None,
    start_workers: bool = True,
    ping_seconds: float = 15.0,
) -> FastAPI:
    """The docstatus HTTP API as a FastAPI app.

    Builds a :class:`~docstatus.service.Service` from ``settings``
    (default: :meth:`ServiceSettings.from_env`) unless ``service`` is given.
    The app's lifespan starts the service (its worker pool, when
    ``start_workers``) and stops it on shutdown; a service the app built is
    also closed then (so the app serves one lifespan), a given one is only
    stopped. ``ping_seconds`` is the keep-alive interval of event streams.
    """
    owned = service is None
    if service is None:
        service = Service(settings if settings is not None else ServiceSettings.from_env())
    chosen = service.settings
    metrics = Metrics(service.manager)
    running = service

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # At startup, not in create_app: uvicorn configures its logging after the app is built.
        stop_following = follow_server_logging()
        metrics.start()
        if start_workers:
            await asyncio.to_thread(running.start)
        log.info(
            "docstatus started: store=%s, workers=%d, uploads=%s",
            running.manager.store.url,
            chosen.workers if start_workers else 0,
            chosen.uploads,
        )
        try:
            yield
        finally:
            metrics.close()
            # Stopping waits for documents in progress (up to shutdown_timeout): off the loop.
            await asyncio.to_thread(running.close if owned else running.stop)
            log.info("docstatus stopped")
            stop_following()

    # FastAPI's own /docs and /redoc load their scripts from a CDN: these serve the package's copies.
    app = FastAPIOffline(
        static_url=DOCS_ASSETS,
        title="docstatus",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.metrics = metrics
    install_error_handlers(app)
    app.add_middleware(SameOriginMiddleware, allowed_origins=chosen.cors_origins)
    if chosen.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(chosen.cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
        )
    # Before the status router: its /status/{doc_id} would take /status/health.
    app.include_router(health_router(service.manager, workers_running=lambda: running.running))
    app.include_router(
        status_router(
            service.manager,
            api_token=chosen.api_token,
            on_requeued=service.enqueue,
            remover=lambda doc_id: removed_json(*_removal(service, doc_id)),
            ping_seconds=ping_seconds,
            max_streams=chosen.max_streams,
        )
    )
    app.include_router(
        uploads_router(
            service.intake,
            max_upload_bytes=chosen.max_upload_bytes,
            max_body_bytes=chosen.max_body_bytes,
            api_token=chosen.api_token,
            metrics=metrics,
        )
    )
    app.include_router(metrics_router(metrics))
    app.include_router(documents_router(service.output, service.manager, api_token=chosen.api_token))
    app.include_router(workers_router(service.manager))
    app.include_router(dashboard_router())
    app.include_router(stats_router(service.manager))
    # /status/stream's events over a WebSocket, for frontends written against one.
    app.include_router(ws_router(service.manager, allowed_origins=chosen.cors_origins))
    return app


def _removal(service: Service, doc_id: str) -> tuple[ProcessingStatus, str | None, bool]:
    last, removed = service.remove(doc_id)
    return last, removed.upload, removed.output
