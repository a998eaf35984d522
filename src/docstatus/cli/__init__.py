"""The ``docstatus`` command line: ``docstatus <command> [options]``.

Each command is a subparser with a handler; a handler returns the exit
status. Bad input is a one-line ``docstatus <command>: error: ...`` on stderr
and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar

from .. import __version__
from ..errors import ConfigError, StatusError

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
    from ..settings import ServiceSettings

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

        from ..api import create_app
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


_N = TypeVar("_N", int, float)


def _number(
    convert: Callable[[str], _N], kind: str, fits: Callable[[_N], bool], must: str
) -> Callable[[str], _N]:
    """An argparse type: the text read by ``convert``, refused unless it ``fits``.

    The refusals read "not <kind>: '...'" and "must be <must>: '...'".
    """

    def parse(raw: str) -> _N:
        try:
            value = convert(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {kind}: {raw!r}") from None
        if not fits(value):
            raise argparse.ArgumentTypeError(f"must be {must}: {raw!r}")
        return value

    return parse


# NaN fits none of these: every comparison with it is false.
_positive_float = _number(float, "a number", lambda v: 0 < v < math.inf, "a positive number of seconds")
_positive_int = _number(int, "an integer", lambda v: v >= 1, "at least 1")


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
    from ..settings import ServiceSettings

    try:
        settings = ServiceSettings.from_env(
            store=args.store, data_dir=args.data_dir, document_timeout=args.timeout
        )
        from ..formats.limits import Limits
        from .process import process_files

        limits = Limits(max_pages=args.max_pages) if args.max_pages else None
        return process_files(args.files, settings=settings, workers=args.workers, limits=limits).exit_code
    except ConfigError as exc:
        return _fail("process", str(exc))
    except ImportError as exc:
        return _fail("process", str(exc))
    except StatusError as exc:
        return _fail("process", str(exc), status=1)


# -- status, list, cleanup, watch: a running service --------------------------------------

#: Exit status when the watched document failed, or the document is not known.
FAILED_OR_NOT_FOUND = 1
#: Exit status when the service cannot be reached (or does not answer like docstatus).
UNREACHABLE = 3
#: Exit status after Ctrl-C.
INTERRUPTED = 130

_DEFAULT_URL = "http://127.0.0.1:8002"
_REMOTE_EXITS = (
    "Exit status: 0 done; 1 the document failed (watch --doc), was removed or is not known; "
    "2 bad usage (also a missing or wrong --token); 3 the service is unreachable; 130 interrupted (Ctrl-C)."
)


def _doc_id(raw: str) -> str:
    if not raw or len(raw) > 256 or not raw.isprintable():
        raise argparse.ArgumentTypeError(f"not a document id (1 to 256 printable characters): {raw[:60]!r}")
    return raw


def _bounded_int(low: int, high: int) -> Callable[[str], int]:
    return _number(int, "an integer", lambda v: low <= v <= high, f"between {low} and {high}")


_seconds = _number(float, "a number", lambda v: 0 <= v <= 10**9, "between 0 and 1000000000 seconds")


def _remote_parser(commands: Any, name: str, help: str, description: str, *, json_help: str) -> Any:
    parser = commands.add_parser(name, help=help, description=description, epilog=_REMOTE_EXITS)
    parser.add_argument("--url", help=f"the service's address (default: $DOCSTATUS_URL, else {_DEFAULT_URL})")
    parser.add_argument("--json", action="store_true", help=json_help)
    return parser


def _add_remote(commands: Any) -> None:
    from ..models import Status

    status = _remote_parser(
        commands,
        "status",
        "show one document's status",
        "Show one document's status from a running service.",
        json_help="print the service's JSON answer as it is",
    )
    status.add_argument("doc_id", type=_doc_id, metavar="DOC_ID")
    status.set_defaults(handler=_remote, run="status")

    listing = _remote_parser(
        commands,
        "list",
        "list documents, most recently updated first",
        "List the documents of a running service, most recently updated first, with counts.",
        json_help="print the service's JSON answer (GET /status/queue) as it is",
    )
    listing.add_argument("--status", choices=[s.value for s in Status], help="only documents in this status")
    listing.add_argument(
        "--limit", type=_bounded_int(0, 100_000), default=100, help="at most this many (default 100)"
    )
    listing.set_defaults(handler=_remote, run="list")

    cleanup = _remote_parser(
        commands,
        "cleanup",
        "remove old finished documents",
        "Remove completed and failed documents that finished over --max-age seconds ago.",
        json_help="print the service's JSON answer as it is",
    )
    cleanup.add_argument("--max-age", type=_seconds, default=3600.0, metavar="SECONDS", help="default 3600")
    cleanup.add_argument("--token", help="the service's API token (default: $DOCSTATUS_API_TOKEN)")
    cleanup.set_defaults(handler=_remote, run="cleanup")

    watch = _remote_parser(
        commands,
        "watch",
        "follow documents' progress live",
        "Follow a running service's documents live (a table, until Ctrl-C), or one document with "
        "--doc (a progress bar, until it completes or fails).",
        json_help="print the current state, then each event's data as it comes, one JSON per line",
    )
    watch.add_argument("--doc", type=_doc_id, metavar="DOC_ID", help="follow only this document")
    watch.set_defaults(handler=_remote, run="watch")


def _run_remote(args: argparse.Namespace, url: str) -> int:
    from rich.console import Console

    from . import views as terminal
    from .client import Client

    console = Console(highlight=False)
    token = getattr(args, "token", None) or os.environ.get("DOCSTATUS_API_TOKEN") or None
    with Client(url, token=token) as client:
        if args.run == "status":
            return terminal.run_status(client, args.doc_id, console, as_json=args.json, out=sys.stdout)
        if args.run == "list":
            return terminal.run_list(
                client, args.status, args.limit, console, as_json=args.json, out=sys.stdout
            )
        if args.run == "cleanup":
            return terminal.run_cleanup(client, args.max_age, console, as_json=args.json, out=sys.stdout)
        return terminal.run_watch(client, args.doc, console, as_json=args.json, out=sys.stdout)


def _remote(args: argparse.Namespace) -> int:
    from ..errors import ApiError, DocumentNotFoundError, ServerUnreachableError

    command = str(args.run)
    url = args.url or os.environ.get("DOCSTATUS_URL") or _DEFAULT_URL
    try:
        return _run_remote(args, url)
    except ImportError as exc:
        return _fail(command, f"{exc}; install it with: pip install 'docstatus[cli]'")
    except DocumentNotFoundError as exc:
        return _fail(command, f"{exc} at {url}", FAILED_OR_NOT_FOUND)
    except ServerUnreachableError as exc:
        return _fail(command, str(exc), UNREACHABLE)
    except ApiError as exc:
        return _api_failure(command, exc)
    except ConfigError as exc:
        return _fail(command, str(exc))
    except KeyboardInterrupt:
        return INTERRUPTED


def _api_failure(command: str, exc: StatusError) -> int:
    status_code = int(exc.details.get("status_code", 0))
    if status_code == 401:
        return _fail(
            command, f"the service needs its API token: pass --token or set DOCSTATUS_API_TOKEN ({exc})"
        )
    if status_code >= 500:
        return _fail(command, f"the service answered {status_code}: {exc}", UNREACHABLE)
    if status_code in (400, 413):
        return _fail(command, str(exc))
    return _fail(command, f"the service answered {status_code}: {exc}", FAILED_OR_NOT_FOUND)


# -- main -----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="docstatus", description="Track the processing status of documents.")
    parser.add_argument("--version", action="version", version=f"docstatus {__version__}")
    commands = parser.add_subparsers(title="commands", dest="command", parser_class=_Parser)
    _add_serve(commands)
    _add_process(commands)
    _add_remote(commands)
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
