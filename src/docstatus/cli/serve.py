"""``docstatus serve``: the HTTP API, the dashboard and the processing workers in one process."""

from __future__ import annotations

import argparse
import contextlib
from typing import Any

from ..errors import ConfigError, StatusError
from ..settings import ServiceSettings
from .args import fail

__all__ = ["add_parser"]


def add_parser(commands: Any) -> None:
    """Add ``serve`` to the ``commands`` of the main parser."""
    serve = commands.add_parser(
        "serve",
        help="run the HTTP API and the processing workers",
        description=(
            "Run the HTTP API, the dashboard and the processing workers (each document in a child "
            "process; any number of serve processes may share one store). "
            "Every option can also be set with an environment variable (DOCSTATUS_HOST, "
            "DOCSTATUS_PORT, DOCSTATUS_STORE, DOCSTATUS_QUEUE, DOCSTATUS_UPLOADS, DOCSTATUS_DATA, "
            "DOCSTATUS_WORKERS, "
            "DOCSTATUS_MAX_UPLOAD_BYTES, DOCSTATUS_MAX_BODY_BYTES, DOCSTATUS_API_TOKEN, "
            "DOCSTATUS_CORS_ORIGINS, DOCSTATUS_SHUTDOWN_TIMEOUT, DOCSTATUS_DOCUMENT_TIMEOUT, "
            "DOCSTATUS_LEASE_SECONDS, DOCSTATUS_MAX_ATTEMPTS, DOCSTATUS_LIMIT_CONCURRENCY, "
            "DOCSTATUS_HEADER_TIMEOUT, DOCSTATUS_KEEP_ALIVE_TIMEOUT); options win over the environment. "
            "DOCSTATUS_NOTIFY_URL and DOCSTATUS_NOTIFY_SECRET: a signed POST to each URL when a "
            "document completes or fails."
        ),
    )
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8002)")
    serve.add_argument("--store", help="store URL (default sqlite:///docstatus-data/status.db)")
    serve.add_argument(
        "--queue", help="RQ queue URL (redis://...): enqueue documents for `docstatus worker` processes"
    )
    serve.add_argument("--uploads", help="uploads folder (default docstatus-data/uploads)")
    serve.add_argument("--data-dir", help="data folder for pipeline output (default docstatus-data)")
    serve.add_argument(
        "--workers",
        type=int,
        help="documents processed at once, each in its own process (default: CPU count; 0 with --queue)",
    )
    serve.add_argument("--max-upload-bytes", type=int, help="largest accepted upload (default 100 MiB)")
    serve.add_argument(
        "--limit-concurrency",
        type=int,
        help="open connections (event streams included) at once; more get a 503 (default 1000)",
    )
    serve.add_argument(
        "--header-timeout",
        type=float,
        help="seconds a client may take to send its request headers before it is cut off (default 10)",
    )
    serve.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    serve.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:

    try:
        settings = ServiceSettings.from_env(
            host=args.host,
            port=args.port,
            store=args.store,
            queue=args.queue,
            uploads=args.uploads,
            data_dir=args.data_dir,
            workers=args.workers,
            max_upload_bytes=args.max_upload_bytes,
            limit_concurrency=args.limit_concurrency,
            header_timeout=args.header_timeout,
        )
    except ConfigError as exc:
        return fail("serve", str(exc))
    try:
        import uvicorn

        from ..api import create_app
        from ..api.server import uvicorn_config
    except ImportError as exc:
        return fail("serve", f"{exc}; install it with: pip install 'docstatus[server]'")
    try:
        app = create_app(settings)
    except ConfigError as exc:
        return fail("serve", str(exc))
    except StatusError as exc:
        return fail("serve", str(exc), status=1)
    server = uvicorn.Server(uvicorn_config(app, settings, args.log_level))
    # uvicorn re-raises the Ctrl-C it has already shut down gracefully on.
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    return 0 if server.started else 1
