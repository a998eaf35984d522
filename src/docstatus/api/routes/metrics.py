"""Prometheus metrics of one app: documents by status, processing time, uploads.

Each :class:`Metrics` has its own ``CollectorRegistry`` (never the global
one), so several apps in one process do not collide.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from starlette.concurrency import run_in_threadpool

from ...events import Event
from ...manager import StatusManager
from ...models import Status
from ..errors import error_responses
from ..params import STRICT_QUERY

__all__ = ["Metrics", "metrics_router"]

#: Processing time buckets, in seconds: documents take from milliseconds to hours.
PROCESSING_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, float("inf"))

_FINISHED = frozenset({Status.COMPLETED.value, Status.FAILED.value})


class _DocumentCounts:
    """Reads the store's counts when Prometheus scrapes (a gauge that is never stale)."""

    def __init__(self, manager: StatusManager) -> None:
        self._manager = manager

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily("docstatus_documents", "Documents in the store by status", labels=["status"])

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        counts = self._manager.count_by_status()
        for status in Status:
            family.add_metric([status.value], counts.get(status.value, 0))
        return [family]


class Metrics:
    """The metrics of one app. :meth:`start` subscribes to the manager's events; :meth:`close` stops.

    ``uploads_accepted`` and ``uploads_rejected`` are counters the intake
    endpoints increment (labels ``source`` = ``upload``/``webhook``, and
    ``code`` for rejections); ``processing_seconds`` observes the run time
    (from the start of processing, the queue wait apart) of every document
    that completes or fails after processing started, by ``format`` and
    ``outcome``; ``queue_wait_seconds`` observes, by ``format``, how long each
    document waited in the queue, once, when its processing starts.
    """

    def __init__(self, manager: StatusManager) -> None:
        self.manager = manager
        self.registry = CollectorRegistry()
        self.registry.register(_DocumentCounts(manager))
        self.processing_seconds = Histogram(
            "docstatus_processing_seconds",
            "Time from the start of processing to completed or failed (the queue wait apart)",
            ["format", "outcome"],
            buckets=PROCESSING_BUCKETS,
            registry=self.registry,
        )
        self.queue_wait_seconds = Histogram(
            "docstatus_queue_wait_seconds",
            "Time from queued to the start of processing",
            ["format"],
            buckets=PROCESSING_BUCKETS,
            registry=self.registry,
        )
        self.uploads_accepted = Counter(
            "docstatus_uploads_accepted", "Files accepted for processing", ["source"], registry=self.registry
        )
        self.uploads_rejected = Counter(
            "docstatus_uploads_rejected", "Files rejected", ["source", "code"], registry=self.registry
        )
        self._unsubscribe: Callable[[], None] | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Observe processing times from now on; idempotent."""
        with self._lock:
            if self._unsubscribe is None:
                self._unsubscribe = self.manager.subscribe(self._on_event, progress=False)

    def close(self) -> None:
        """Stop observing; idempotent."""
        with self._lock:
            unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            unsubscribe()

    def _on_event(self, event: Event) -> None:
        status = event["status"]
        if status is None:
            return
        started = status.get("processing_started_at")
        if started is None or (status["status"] not in _FINISHED and started != status["updated_at"]):
            return  # not started yet, or neither the change that started it nor the last one
        fmt = str(status.get("metadata", {}).get("format") or "unknown")
        if started == status["updated_at"] and status.get("wait_time") is not None:
            # The change that started processing (a document completed straight from the
            # queue starts and ends in one change).
            self.queue_wait_seconds.labels(fmt).observe(float(status["wait_time"]))
        if status["status"] in _FINISHED and status.get("run_time") is not None:
            self.processing_seconds.labels(fmt, status["status"]).observe(float(status["run_time"]))

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


def metrics_router(metrics: Metrics) -> APIRouter:
    """``GET /metrics`` for ``metrics``."""
    router = APIRouter(tags=["service"], dependencies=[STRICT_QUERY])

    @router.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={
            200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}, "description": "Metrics"},
            **error_responses(503),
        },
    )
    async def get_metrics() -> Response:
        """Documents by status, processing time by format, uploads accepted and rejected."""
        body = await run_in_threadpool(metrics.render)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return router
