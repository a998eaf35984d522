"""``docstatus process FILE...``: run the pipeline on local files, without a server, with progress bars.

Each file is copied into the uploads folder (as an upload would be, named by
its content's SHA-256) and processed by a
:class:`~docstatus.worker.pool.WorkerPool` (each document in a child process,
as ``docstatus serve`` runs them) over the given status store;
output goes to ``<data_dir>/output.db``, so a ``docstatus serve`` on the same
data folder shows the documents afterwards. The pool only processes the
files given here (``adopt_existing=False``): running this beside a service
on the same store never touches the service's documents.

One progress bar per document, driven by the manager's events (stage, page
x/y, ETA). A file the pipeline refuses (empty, unsupported, content that
contradicts its extension) becomes a *failed* document with the reason, like
one that fails while being processed. Exit status: 0 when every document
completed (or had been completed before), 1 when any failed, 2 for bad
arguments or unreadable files (nothing is processed then), 130 after Ctrl-C:
the run stops at once (its child processes killed) and every document it
queued that had not finished is failed with :data:`INTERRUPTED_ERROR`, so
none is left queued with nobody to take it.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DuplicateDocumentError, StatusError, UnsupportedFormatError
from ..events import Event
from ..formats import default_processors
from ..formats.limits import Limits, require
from ..ingest import Accepted, Intake
from ..manager import StatusManager
from ..models import Status
from ..output import OutputStore
from ..service import open_manager, open_output
from ..settings import ServiceSettings
from ..worker.job import failure_message, failure_metadata
from ..worker.pool import OUTPUT_FILE, WorkerPool
from .args import fail, number

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "INTERRUPTED_ERROR",
    "LocalRun",
    "add_parser",
    "check_files",
    "process_files",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
#: Exit status after Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130

#: The error of a document this run queued and Ctrl-C stopped before it finished.
INTERRUPTED_ERROR = "interrupted (Ctrl-C) before it finished"

#: Extra seconds past the document timeout before a document stuck inside a library call is given up.
STUCK_GRACE = 30.0
_COPY_BLOCK = 1 << 20


def check_files(paths: Sequence[str | Path]) -> list[str]:
    """Why each unusable path cannot be processed (missing, not a regular file, unreadable); empty if fine."""
    problems = []
    for raw in paths:
        path = Path(raw)
        try:
            if not path.is_file():
                problems.append(f"{raw}: no such file" if not path.exists() else f"{raw}: not a regular file")
                continue
            with path.open("rb") as handle:
                handle.read(1)
        except OSError as exc:
            problems.append(f"{raw}: cannot be read ({exc.strerror or exc})")
    return problems


@dataclass
class _Doc:
    """What the display and the summary know about one document."""

    name: str
    doc_id: str = ""
    status: dict[str, Any] = field(default_factory=dict)
    started: float | None = None
    task: Any = None


@dataclass
class LocalRun:
    """The outcome of :func:`process_files`: one final status (JSON) per file, in the order given."""

    statuses: list[dict[str, Any]]
    exit_code: int


class _Watch:
    """Follows the manager's events for the run's documents and moves their progress bars."""

    def __init__(self, manager: StatusManager, progress: Any) -> None:
        self.progress = progress
        self.by_id: dict[str, list[_Doc]] = {}
        self.cond = threading.Condition()
        self.unsubscribe = manager.subscribe(self._on_event)

    def track(self, doc: _Doc, status: dict[str, Any]) -> None:
        with self.cond:
            self.by_id.setdefault(doc.doc_id, []).append(doc)
            if not doc.status:
                doc.status = status
        self._show(doc)

    def _on_event(self, event: Event) -> None:
        status = event["status"]
        if status is None:
            return
        with self.cond:
            docs = self.by_id.get(event["doc_id"], [])
            for doc in docs:
                doc.status = status
                if doc.started is None and status["status"] != "queued":
                    doc.started = time.monotonic()
            self.cond.notify_all()
        for doc in docs:
            self._show(doc)

    def _show(self, doc: _Doc) -> None:
        status = doc.status
        stage = str(status.get("status", "queued"))
        pages = f"page {status['page']}/{status['total_pages']}" if status.get("total_pages") else ""
        eta = status.get("estimated_remaining")
        shown = "" if eta is None or stage in ("completed", "failed") else f"ETA {eta:,.0f}s"
        colour = {"completed": "green", "failed": "red"}.get(stage)
        self.progress.update(
            doc.task,
            completed=float(status.get("progress", 0.0)) * 100,
            stage=f"[{colour}]{stage}[/]" if colour else stage,
            pages=pages,
            eta=shown,
        )

    def wait(self, docs: list[_Doc], stuck_after: float, give_up: Callable[[_Doc], None]) -> None:
        """Until every document has finished; one stuck past ``stuck_after`` seconds is given up."""
        with self.cond:
            while True:
                running = [d for d in docs if d.status.get("status") not in ("completed", "failed")]
                if not running:
                    return
                now = time.monotonic()
                stuck = [d for d in running if d.started is not None and now - d.started > stuck_after]
                if stuck:
                    self.cond.release()
                    try:
                        for doc in stuck:
                            give_up(doc)
                    finally:
                        self.cond.acquire()
                self.cond.wait(0.5)


def _copy(source: Path, intake: Intake) -> Accepted:
    with source.open("rb") as handle, intake.open_upload(source.name) as writer:
        for block in iter(lambda: handle.read(_COPY_BLOCK), b""):
            writer.write(block)
        return writer.finish()


def _digest(source: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with source.open("rb") as handle:
        for block in iter(lambda: handle.read(_COPY_BLOCK), b""):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def _record_refusal(manager: StatusManager, source: Path, exc: UnsupportedFormatError) -> str:
    """A refused file becomes a failed document (or the known document of that content)."""
    doc_id, size = _digest(source)
    metadata = {"format": None, "file_size": size, "source": "process", "attempt": 1}
    try:
        manager.create_status(doc_id, exc.filename, metadata)
    except DuplicateDocumentError:
        return doc_id
    manager.update_status(doc_id, Status.FAILED, error=failure_message(exc), metadata=failure_metadata(exc))
    return doc_id


class _Runner:
    """One ``process_files`` run: the store, the pool, the display."""

    def __init__(self, settings: ServiceSettings, workers: int, limits: Limits | None) -> None:
        self.settings = settings
        self.manager = open_manager(settings.store)
        self.output: OutputStore | None = None
        try:
            self.output = open_output(settings.data_dir / OUTPUT_FILE)
            self.intake = Intake(self.manager, settings.uploads, max_bytes=settings.max_upload_bytes)
        except BaseException:
            self.close()
            raise
        #: Documents this run queued (created or retried): what an interruption must not leave behind.
        self.queued_here: list[str] = []
        self.pool = WorkerPool(
            self.manager,
            settings.uploads,
            default_processors(limits),
            workers=workers,
            data_dir=settings.data_dir,
            document_timeout=settings.document_timeout,
            output=self.output,
            adopt_existing=False,
            store_url=settings.store,
            lease_seconds=settings.lease_seconds,
            max_attempts=settings.max_attempts,
        )

    def submit(self, source: Path, doc: _Doc, watch: _Watch) -> None:
        try:
            accepted = _copy(source, self.intake)
            doc.doc_id = accepted.doc_id
            if not accepted.duplicate or accepted.requeued:
                self.queued_here.append(accepted.doc_id)
        except UnsupportedFormatError as exc:
            doc.doc_id = _record_refusal(self.manager, source, exc)
        except StatusError as exc:  # e.g. over the upload size limit
            doc.doc_id = _digest(source)[0]
            doc.status = {"status": "failed", "progress": 0.0, "error": failure_message(exc)}
        current = self.manager.get_status_json(doc.doc_id) if doc.doc_id else None
        watch.track(doc, current if current is not None else {})
        if current is not None and current["status"] == "queued":
            self.pool.enqueue(doc.doc_id)

    def give_up(self, doc: _Doc) -> None:
        message = (
            f"DocumentTimeoutError: processing took longer than {self.settings.document_timeout:g} seconds "
            "and did not stop (stuck inside a library call)"
        )
        try:
            self.manager.mark_failed(doc.doc_id, message)
        except StatusError:
            return

    def interrupt(self) -> None:
        """Fail this run's unfinished documents, then stop the pool at once (running children killed).

        Failed first: that releases their leases, so nothing the children still
        write is kept, and the pool has nothing to requeue. Failed rather than
        removed, so the interruption shows in the store, and running the same
        file again retries it.
        """
        for doc_id in self.queued_here:
            with contextlib.suppress(StatusError):  # finished meanwhile, or gone
                self.manager.mark_failed(doc_id, INTERRUPTED_ERROR)
        self.pool.stop(timeout=0.0)

    def close(self) -> None:
        if hasattr(self, "pool"):
            self.pool.stop(timeout=5.0)
        if self.output is not None:
            self.output.close()
        self.manager.close()


def _progress(console: Any) -> Any:
    progress_module = require("rich.progress", "rich", extra="cli")
    column = require("rich.table", "rich", extra="cli").Column
    return progress_module.Progress(
        progress_module.TextColumn("{task.description}", style="bold", markup=False),
        progress_module.BarColumn(bar_width=30),
        progress_module.TaskProgressColumn(),
        progress_module.TextColumn("{task.fields[stage]}", table_column=column(min_width=16)),
        progress_module.TextColumn("{task.fields[pages]}", table_column=column(min_width=14)),
        progress_module.TextColumn("{task.fields[eta]}"),
        console=console,
        auto_refresh=True,
    )


def _summary(console: Any, docs: list[_Doc]) -> None:
    table_module = require("rich.table", "rich", extra="cli")
    table = table_module.Table(title="docstatus process", show_lines=False)
    for column in ("file", "status", "pages", "chunks", "doc_id", "error"):
        table.add_column(column, overflow="fold")
    for doc in docs:
        meta = doc.status.get("metadata") or {}
        status = str(doc.status.get("status", "?"))
        style = {"completed": "green", "failed": "red"}.get(status, "yellow")
        table.add_row(
            doc.name,
            f"[{style}]{status}[/]",
            str(meta.get("num_pages", meta.get("total_pages", ""))),
            str(meta.get("num_chunks", "")),
            doc.doc_id[:12],
            str(doc.status.get("error") or ""),
        )
    console.print(table)


def process_files(
    paths: Sequence[str | Path],
    *,
    settings: ServiceSettings | None = None,
    workers: int | None = None,
    limits: Limits | None = None,
    console: Any = None,
) -> LocalRun:
    """Process ``paths`` with progress bars (see the module docstring); returns every final status.

    ``settings`` gives the store, the data and uploads folders and the
    document timeout (default: :meth:`ServiceSettings.from_env`); ``workers``
    documents run at once (default: the settings', the CPU count). Unusable
    paths raise nothing: the result's ``exit_code`` is 2 and nothing is
    processed. ``console`` is a ``rich.console.Console`` (default: stderr).
    """
    if console is None:
        console = require("rich.console", "rich", extra="cli").Console(stderr=True)
    problems = check_files(paths)
    if problems:
        for problem in problems:
            console.print(f"[red]docstatus process: error:[/] {problem}", highlight=False)
        return LocalRun([], EXIT_USAGE)
    settings = settings or ServiceSettings.from_env()
    runner = _Runner(settings, workers or settings.workers, limits)
    docs = [_Doc(Path(p).name) for p in paths]
    interrupted = False
    try:
        with _progress(console) as progress:
            watch = _Watch(runner.manager, progress)
            try:
                _run(runner, watch, progress, paths, docs)
            except KeyboardInterrupt:
                interrupted = True
                with _no_second_interrupt():
                    runner.interrupt()
                    _refresh(runner.manager, docs)
            finally:
                watch.unsubscribe()
    finally:
        with _no_second_interrupt():
            runner.close()
    _summary(console, docs)
    statuses = [doc.status for doc in docs]
    if interrupted:
        _say_what_was_left(console, docs)
        return LocalRun(statuses, EXIT_INTERRUPTED)
    failed = any(doc.status.get("status") != "completed" for doc in docs)
    return LocalRun(statuses, EXIT_FAILED if failed else EXIT_OK)


def _run(
    runner: _Runner, watch: _Watch, progress: Any, paths: Sequence[str | Path], docs: list[_Doc]
) -> None:
    runner.pool.start()
    for path, doc in zip(paths, docs, strict=True):
        doc.task = progress.add_task(doc.name, total=100, stage="queued", pages="", eta="")
        runner.submit(Path(path), doc, watch)
    watch.wait(docs, runner.settings.document_timeout + STUCK_GRACE, runner.give_up)


def _refresh(manager: StatusManager, docs: list[_Doc]) -> None:
    for doc in docs:
        current = manager.get_status_json(doc.doc_id) if doc.doc_id else None
        if current is not None:
            doc.status = current


def _say_what_was_left(console: Any, docs: list[_Doc]) -> None:
    left = [doc for doc in docs if doc.status.get("error") == INTERRUPTED_ERROR or not doc.doc_id]
    if not left:
        console.print("Interrupted (Ctrl-C); every document had already finished.", highlight=False)
        return
    names = ", ".join(doc.name for doc in left)
    console.print(
        f"Interrupted (Ctrl-C): {len(left)} of {len(docs)} documents did not finish ({names}); "
        "they are marked failed. Run the command again to process them.",
        highlight=False,
    )


@contextlib.contextmanager
def _no_second_interrupt() -> Iterator[None]:
    """Ctrl-C ignored while an interrupted run cleans up (main thread only), so nothing is left half done."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# -- the command ------------------------------------------------------------------------


# NaN fits none of these: every comparison with it is false.
_positive_float = number(float, "a number", lambda v: 0 < v < math.inf, "a positive number of seconds")
_positive_int = number(int, "an integer", lambda v: v >= 1, "at least 1")


def add_parser(commands: Any) -> None:
    """Add ``process`` to the ``commands`` of the main parser."""
    process = commands.add_parser(
        "process",
        help="run the pipeline on local files, with progress bars",
        description=(
            "Process FILEs through the pipeline in this process (no server): parse, render and embed "
            "pages, chunk and embed text, store the output under the data folder. Exit status 0 when "
            "every document completed, 1 when any failed, 2 for bad arguments or unreadable files, "
            "130 after Ctrl-C (what did not finish is marked failed)."
        ),
    )
    process.add_argument("files", nargs="+", metavar="FILE", help="documents to process")
    process.add_argument("--store", help="status store URL (default sqlite:///docstatus-data/status.db)")
    process.add_argument("--data-dir", help="data folder for uploads and output (default docstatus-data)")
    process.add_argument(
        "--workers",
        type=_positive_int,
        help="documents at a time, each in its own process (default: CPU count)",
    )
    process.add_argument(
        "--timeout", type=_positive_float, help="seconds one document may take (default 600)"
    )
    process.add_argument(
        "--max-pages", type=_positive_int, help="most pages a document may have (default 2000)"
    )
    process.set_defaults(handler=_process)


def _process(args: argparse.Namespace) -> int:
    # Each failure is in the summary table; the workers' log lines would only repeat it.
    logging.getLogger("docstatus").addHandler(logging.NullHandler())
    try:
        settings = ServiceSettings.from_env(
            store=args.store, data_dir=args.data_dir, document_timeout=args.timeout
        )
        limits = Limits(max_pages=args.max_pages) if args.max_pages else None
        return process_files(args.files, settings=settings, workers=args.workers, limits=limits).exit_code
    except ConfigError as exc:
        return fail("process", str(exc))
    except ImportError as exc:
        return fail("process", str(exc))
    except StatusError as exc:
        return fail("process", str(exc), status=1)
    except KeyboardInterrupt:  # before any document was queued (opening the store, checking files)
        return EXIT_INTERRUPTED
