"""The HTTP API: an app factory and routers to mount in your own FastAPI app.

``create_app()`` is what ``docstatus serve`` runs. The routers take the
objects they serve (``status_router(manager)``, ``uploads_router(intake, ...)``)
so they can be mounted in any app; call ``install_error_handlers(app)`` there
too, for the API's error shape. Needs the ``server`` extra
(``pip install 'docstatus[server]'``).
"""

from __future__ import annotations

try:
    import fastapi as _fastapi  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"docstatus.api needs the 'server' extra: pip install 'docstatus[server]' ({exc})"
    ) from exc

from .app import create_app
from .errors import ErrorBody, install_error_handlers
from .routes.dashboard import dashboard_router
from .routes.documents import documents_router
from .routes.health import health_router
from .routes.metrics import Metrics, metrics_router
from .routes.stats import stats_router
from .routes.status import status_json, status_router
from .routes.stream import stream_router
from .routes.uploads import uploads_router
from .routes.workers import workers_router

__all__ = [
    "ErrorBody",
    "Metrics",
    "create_app",
    "dashboard_router",
    "documents_router",
    "health_router",
    "install_error_handlers",
    "metrics_router",
    "stats_router",
    "status_json",
    "status_router",
    "stream_router",
    "uploads_router",
    "workers_router",
]
