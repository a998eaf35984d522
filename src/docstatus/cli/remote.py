"""``docstatus status | list | cleanup | delete | retry | watch | cancel``: a running service, from a shell.

The handlers talk to the service through :class:`~docstatus.cli.client.Client`
and show it with :mod:`docstatus.cli.views`; both need the ``cli`` extra and
are imported when a command runs, so a missing extra is a one-line error that
names it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from ..errors import (
    AmbiguousDocumentIdError,
    ApiError,
    ConfigError,
    DocumentNotFoundError,
    ServerUnreachableError,
    StatusError,
)
from ..models import Status
from .args import MIN_SHORT_ID, fail, number

__all__ = ["FAILED_OR_NOT_FOUND", "INTERRUPTED", "UNREACHABLE", "add_parsers"]

#: Exit status when the watched document failed, or the document is not known.
FAILED_OR_NOT_FOUND = 1
#: Exit status when the service cannot be reached (or does not answer like docstatus).
UNREACHABLE = 3
#: Exit status after Ctrl-C.
INTERRUPTED = 130

_DEFAULT_URL = "http://127.0.0.1:8002"
_REMOTE_EXITS = (
    "Exit status: 0 done; 1 the document failed (watch --doc), had already finished (cancel), "
    "is still active (delete), "
    "was removed or is not known; "
    "2 bad usage (also a missing or wrong --token); 3 the service is unreachable; 130 interrupted (Ctrl-C)."
)


def _doc_id(raw: str) -> str:
    if not raw or len(raw) > 256 or not raw.isprintable():
        raise argparse.ArgumentTypeError(f"not a document id (1 to 256 printable characters): {raw[:60]!r}")
    return raw


def _bounded_int(low: int, high: int) -> Callable[[str], int]:
    return number(int, "an integer", lambda v: low <= v <= high, f"between {low} and {high}")


_seconds = number(float, "a number", lambda v: 0 <= v <= 10**9, "between 0 and 1000000000 seconds")


def _remote_parser(commands: Any, name: str, help: str, description: str, *, json_help: str) -> Any:
    parser = commands.add_parser(name, help=help, description=description, epilog=_REMOTE_EXITS)
    parser.add_argument("--url", help=f"the service's address (default: $DOCSTATUS_URL, else {_DEFAULT_URL})")
    parser.add_argument("--json", action="store_true", help=json_help)
    return parser


def add_parsers(commands: Any) -> None:
    """Add the commands that talk to a running service to the main parser's ``commands``."""
    status = _remote_parser(
        commands,
        "status",
        "show one document's status",
        "Show one document's status from a running service.",
        json_help="print the service's JSON answer as it is",
    )
    status.add_argument(
        "doc_id",
        type=_doc_id,
        metavar="DOC_ID",
        help="its id, or a unique prefix of 8+ characters",
    )
    status.set_defaults(handler=_remote, run="status")

    listing = _remote_parser(
        commands,
        "list",
        "list documents, most recently updated first",
        "List the documents of a running service, most recently updated first, with counts.",
        json_help="print the service's JSON answer (GET /status/queue) as it is",
    )
    listing.add_argument(
        "--status",
        action="append",
        choices=[s.value for s in Status],
        help="only documents in this status (repeat it for several)",
    )
    listing.add_argument(
        "--limit", type=_bounded_int(0, 100_000), default=100, help="at most this many (default 100)"
    )
    _add_filters(listing)
    listing.add_argument(
        "--sort",
        choices=["updated", "started", "filename"],
        help="the order (default: updated, the last change)",
    )
    listing.add_argument(
        "--order", choices=["desc", "asc"], help="desc (the default: latest or Z first) or asc"
    )
    listing.add_argument(
        "--workers",
        action="store_true",
        help="list the live worker processes instead (GET /workers; --json prints its answer)",
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
    watch.add_argument(
        "--doc",
        type=_doc_id,
        metavar="DOC_ID",
        help="follow only this document (its id, or a unique prefix of 8+ characters)",
    )
    watch.set_defaults(handler=_remote, run="watch")

    delete = _remote_parser(
        commands,
        "delete",
        "remove a finished document with its upload and output",
        "Remove a completed or failed document now, with its uploaded file and its output (pages, "
        "chunks, thumbnails). A queued or active document is left as it is (exit 1): cancel it first.",
        json_help="print the service's JSON answer (what was removed) as it is",
    )
    delete.add_argument(
        "doc_id",
        nargs="?",
        type=_doc_id,
        metavar="DOC_ID",
        help="its id, or a unique prefix of 8+ characters",
    )
    delete.add_argument(
        "--finished",
        action="store_true",
        help="instead of one document: every finished one that matches --older-than, --status and --q",
    )
    delete.add_argument(
        "--older-than",
        type=_duration,
        metavar="AGE",
        help="with --finished: finished longer ago (90s, 30m, 1h, 7d)",
    )
    delete.add_argument(
        "--status", action="append", choices=["completed", "failed"], help="with --finished: only this status"
    )
    delete.add_argument("--q", metavar="TEXT", help="with --finished: only documents whose filename has TEXT")
    delete.add_argument("--token", help="the service's API token (default: $DOCSTATUS_API_TOKEN)")
    delete.set_defaults(handler=_remote, run="delete")

    retry = _remote_parser(
        commands,
        "retry",
        "retry every failed document (that can be retried)",
        "Requeue the failed documents of a running service that match the filters; those that failed "
        "for good (damaged, unsupported, over a limit) are skipped. Prints how many of each.",
        json_help="print the totals as JSON",
    )
    retry.add_argument(
        "--all-failed", action="store_true", required=True, help="retry every failed one that matches"
    )
    _add_filters(retry)
    retry.add_argument("--token", help="the service's API token (default: $DOCSTATUS_API_TOKEN)")
    retry.set_defaults(handler=_remote, run="retry")

    cancel = _remote_parser(
        commands,
        "cancel",
        "cancel a queued or active document",
        "Cancel a queued or active document: it fails with the error 'cancelled' and its worker "
        "stops at its next report. A document that has already finished is left as it is (exit 1).",
        json_help="print the service's JSON answer (the document's new status) as it is",
    )
    cancel.add_argument("doc_id", type=_doc_id, metavar="DOC_ID")
    cancel.add_argument("--token", help="the service's API token (default: $DOCSTATUS_API_TOKEN)")
    cancel.set_defaults(handler=_remote, run="cancel")


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--q", metavar="TEXT", help="only documents whose filename contains TEXT or id starts with it"
    )
    parser.add_argument("--since", type=_when, metavar="WHEN", help=_WHEN_HELP.format("at or after"))
    parser.add_argument("--until", type=_when, metavar="WHEN", help=_WHEN_HELP.format("at or before"))


_WHEN_HELP = "only documents changed {}: an age (30m, 1h, 2d: that long ago), ISO-8601 or epoch seconds"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _duration(raw: str) -> float:
    """``90``, ``90s``, ``30m``, ``1h``, ``2d``, ``1w`` as seconds."""
    text = raw.strip().lower()
    scale = _UNITS.get(text[-1:], 0)
    try:
        value = float(text[:-1] if scale else text) * (scale or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an age (90s, 30m, 1h, 7d): {raw!r}") from None
    if not 0 <= value <= 10**10:
        raise argparse.ArgumentTypeError(f"must be between 0 and 10000000000 seconds: {raw!r}")
    return value


def _when(raw: str) -> str:
    """An age (``1h``: epoch seconds of an hour ago); anything else goes to the service as it is."""
    if raw.strip()[-1:].lower() in _UNITS:
        try:
            return repr(time.time() - _duration(raw))
        except argparse.ArgumentTypeError:
            return raw  # an ISO date ends in a digit or Z; the service says what is wrong
    return raw


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    found = {"q": args.q, "since": getattr(args, "since", None), "until": getattr(args, "until", None)}
    return {k: v for k, v in found.items() if v is not None}


def _listing_params(args: argparse.Namespace) -> dict[str, Any] | None:
    """``GET /status``'s parameters when ``list`` uses the listing's filters; None for the queue view."""
    extra = {**_filters(args), "sort": args.sort, "order": args.order}
    params = {k: v for k, v in extra.items() if v is not None}
    if not params and len(args.status or ()) <= 1:
        return None
    return {**params, **({"status": args.status} if args.status else {})}


def _run_list(client: Any, args: argparse.Namespace, console: Any) -> int:
    from . import views

    if args.workers:
        return views.run_workers(client, console, as_json=args.json, out=sys.stdout)
    params = _listing_params(args)
    if params is None:
        status = args.status[0] if args.status else None
        return views.run_list(client, status, args.limit, console, as_json=args.json, out=sys.stdout)
    return views.run_find(client, params, args.limit, console, as_json=args.json, out=sys.stdout)


def _run_delete(client: Any, args: argparse.Namespace, console: Any) -> int:
    from . import views

    if (args.doc_id is None) == (not args.finished):
        return fail("delete", "give either DOC_ID or --finished (every finished document that matches)")
    if args.doc_id is not None:
        return views.run_delete(client, args.doc_id, console, as_json=args.json, out=sys.stdout)
    body: dict[str, Any] = {k: v for k, v in {"q": args.q, "status": args.status}.items() if v}
    if args.older_than is not None:
        body["older_than_seconds"] = args.older_than
    return views.run_delete_finished(client, body, console, as_json=args.json, out=sys.stdout)


def _run_remote(args: argparse.Namespace, url: str) -> int:
    from rich.console import Console

    from . import views
    from .client import Client

    console = Console(highlight=False)
    token = getattr(args, "token", None) or os.environ.get("DOCSTATUS_API_TOKEN") or None
    with Client(url, token=token) as client:
        if args.run == "status":
            return views.run_status(client, args.doc_id, console, as_json=args.json, out=sys.stdout)
        if args.run == "list":
            return _run_list(client, args, console)
        if args.run == "retry":
            return views.run_retry(client, _filters(args), console, as_json=args.json, out=sys.stdout)
        if args.run == "cleanup":
            return views.run_cleanup(client, args.max_age, console, as_json=args.json, out=sys.stdout)
        if args.run == "delete":
            return _run_delete(client, args, console)
        if args.run == "cancel":
            return views.run_cancel(client, args.doc_id, console, as_json=args.json, out=sys.stdout)
        return views.run_watch(client, args.doc, console, as_json=args.json, out=sys.stdout)


def _remote(args: argparse.Namespace) -> int:

    command = str(args.run)
    url = args.url or os.environ.get("DOCSTATUS_URL") or _DEFAULT_URL
    try:
        return _run_remote(args, url)
    except ImportError as exc:
        return fail(command, f"{exc}; install it with: pip install 'docstatus[cli]'")
    except DocumentNotFoundError as exc:
        return fail(command, f"{exc} at {url}{_short_hint(exc.doc_id)}", FAILED_OR_NOT_FOUND)
    except AmbiguousDocumentIdError as exc:
        return fail(command, str(exc))
    except ServerUnreachableError as exc:
        return fail(command, str(exc), UNREACHABLE)
    except ApiError as exc:
        return _api_failure(command, exc)
    except ConfigError as exc:
        return fail(command, str(exc))
    except KeyboardInterrupt:
        return INTERRUPTED


def _short_hint(doc_id: str) -> str:
    if len(doc_id) >= MIN_SHORT_ID:
        return ""
    return f" (a short id needs at least {MIN_SHORT_ID} characters)"


def _api_failure(command: str, exc: StatusError) -> int:
    status_code = int(exc.details.get("status_code", 0))
    if status_code == 401:
        return fail(
            command, f"the service needs its API token: pass --token or set DOCSTATUS_API_TOKEN ({exc})"
        )
    if status_code >= 500:
        return fail(command, f"the service answered {status_code}: {exc}", UNREACHABLE)
    if status_code in (400, 413):
        return fail(command, str(exc))
    return fail(command, f"the service answered {status_code}: {exc}", FAILED_OR_NOT_FOUND)
