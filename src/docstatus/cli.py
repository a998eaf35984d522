"""The ``docstatus`` command line: ``docstatus <command> [options]``.

Each command is a subparser with a handler; a handler returns the exit
status. Bad input is a one-line ``docstatus <command>: error: ...`` on stderr
and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from . import __version__
from .errors import ConfigError, StatusError

__all__ = ["main"]

#: Exit status for bad usage or configuration (as argparse uses).
USAGE_ERROR = 2

Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (argparse prints the usage too)."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message}\n")


def _fail(command: str, message: str, status: int = USAGE_ERROR) -> int:
    print(f"docstatus {command}: error: {message}", file=sys.stderr)
    return status


# -- serve -----------------------------------------------------------------------------


def _add_serve(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the HTTP API and the processing workers",
        description=(
            "Run the HTTP API, the dashboard and the processing workers in one process. "
            "Every option can also be set with an environment variable (DOCSTATUS_HOST, "
            "DOCSTATUS_PORT, DOCSTATUS_STORE, DOCSTATUS_UPLOADS, DOCSTATUS_DATA, DOCSTATUS_WORKERS, "
            "DOCSTATUS_MAX_UPLOAD_BYTES, DOCSTATUS_MAX_BODY_BYTES, DOCSTATUS_API_TOKEN, "
            "DOCSTATUS_CORS_ORIGINS, DOCSTATUS_SHUTDOWN_TIMEOUT); options win over the environment."
        ),
    )
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8002)")
    serve.add_argument("--store", help="store URL (default sqlite:///docstatus-data/status.db)")
    serve.add_argument("--uploads", help="uploads folder (default docstatus-data/uploads)")
    serve.add_argument("--data-dir", help="data folder for pipeline output (default docstatus-data)")
    serve.add_argument("--workers", type=int, help="processing worker threads (default 2)")
    serve.add_argument("--max-upload-bytes", type=int, help="largest accepted upload (default 100 MiB)")
    serve.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    serve.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    from .settings import ServiceSettings

    try:
        settings = ServiceSettings.from_env(
            host=args.host,
            port=args.port,
            store=args.store,
            uploads=args.uploads,
            data_dir=args.data_dir,
            workers=args.workers,
            max_upload_bytes=args.max_upload_bytes,
        )
    except ConfigError as exc:
        return _fail("serve", str(exc))
    try:
        import uvicorn

        from .api import create_app
    except ImportError as exc:
        return _fail("serve", f"{exc}; install it with: pip install 'docstatus[server]'")
    try:
        app = create_app(settings)
    except ConfigError as exc:
        return _fail("serve", str(exc))
    except StatusError as exc:
        return _fail("serve", str(exc), status=1)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=args.log_level,
        # Streams end by themselves at shutdown; this only bounds a stuck client.
        timeout_graceful_shutdown=max(1, int(settings.shutdown_timeout)),
    )
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 1


# -- process ---------------------------------------------------------------------------


def _positive_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {raw!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {raw!r}")
    return value


def _positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {raw!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {raw!r}")
    return value


def _add_process(commands: Any) -> None:
    process = commands.add_parser(
        "process",
        help="run the pipeline on local files, with progress bars",
        description=(
            "Process FILEs through the pipeline in this process (no server): parse, render and embed "
            "pages, chunk and embed text, store the output under the data folder. Exit status 0 when "
            "every document completed, 1 when any failed, 2 for bad arguments or unreadable files."
        ),
    )
    process.add_argument("files", nargs="+", metavar="FILE", help="documents to process")
    process.add_argument("--store", help="status store URL (default sqlite:///docstatus-data/status.db)")
    process.add_argument("--data-dir", help="data folder for uploads and output (default docstatus-data)")
    process.add_argument("--workers", type=_positive_int, default=1, help="documents at a time (default 1)")
    process.add_argument(
        "--timeout", type=_positive_float, help="seconds one document may take (default 600)"
    )
    process.add_argument(
        "--max-pages", type=_positive_int, help="most pages a document may have (default 2000)"
    )
    process.set_defaults(handler=_process)


def _process(args: argparse.Namespace) -> int:
    from .settings import ServiceSettings

    try:
        settings = ServiceSettings.from_env(
            store=args.store, data_dir=args.data_dir, document_timeout=args.timeout
        )
        from .pipeline.limits import Limits
        from .pipeline.local import process_files

        limits = Limits(max_pages=args.max_pages) if args.max_pages else None
        return process_files(args.files, settings=settings, workers=args.workers, limits=limits).exit_code
    except ConfigError as exc:
        return _fail("process", str(exc))
    except ImportError as exc:
        return _fail("process", str(exc))
    except StatusError as exc:
        return _fail("process", str(exc), status=1)


# -- main -----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="docstatus", description="Track the processing status of documents.")
    parser.add_argument("--version", action="version", version=f"docstatus {__version__}")
    commands = parser.add_subparsers(title="commands", dest="command", parser_class=_Parser)
    _add_serve(commands)
    _add_process(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 0
    return handler(args)
