"""The reference pipeline on a 200-page PDF, and the share of its time spent tracking status.

The PDF is generated with PDFium itself (pypdfium2: letter pages, each with 30
lines of Helvetica text and a filled rectangle). It goes through the whole
pipeline as the service runs it: intake, a one-worker pool, parsing, rendering
+ thumbnail + visual vector per page, chunking + text vector per chunk,
storing in the output store, with the status in the SQLite store (the
service's default), Redis and the memory store.

Status tracking is measured inside the run. The pool uses its in-process
engine (``engine="thread"``) so that every status call happens in this
process: the manager's entry points (``update_status`` and the lease's fenced
writes, ``claim``, reads, heartbeats, lease renewals) are timed on every
thread, and so are the store calls made outside them: the writes of held
progress that the progress thread makes, and the watcher's polls for other
processes' changes (CPU only: its sleeps cost nothing; a store call inside an
entry point is not counted twice). Their share of
the process's CPU time while the document runs (CPU, not wall time: a
shared machine's waits would swamp a wall-time share) is the number to watch. Each store runs with
progress coalesced at the default ``progress_interval`` (0.1 s) and, as the
floor it is compared with, writing every report (``progress_interval=0``),
interleaved, the median of the rounds.
"""

from __future__ import annotations

import ctypes
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from docstatus import StatusManager
from docstatus.formats import default_processors
from docstatus.ingest import Intake
from docstatus.stores import open_store
from docstatus.worker.pool import WorkerPool

from ._harness import Row, Table, median_interleaved
from ._stores import redis_server

PAGES = 200
ROUNDS = 3
TARGET = "< 0.5% of the pipeline"


def make_pdf(path: Path, pages: int = PAGES) -> None:
    """A ``pages``-page PDF written by PDFium: text lines and a filled rectangle per page."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    pdf = pdfium.PdfDocument.new()
    for number in range(1, pages + 1):
        page = pdf.new_page(612, 792)
        for line in range(30):
            region = (number * 7 + line) % 13
            text = f"Page {number}, line {line + 1}: the quarterly figures for region {region}."
            raw = pdfium_c.FPDFPageObj_NewTextObj(pdf.raw, b"Helvetica", 11.0)
            encoded = (text + "\0").encode("utf-16-le")
            buffer = ctypes.create_string_buffer(encoded, len(encoded))
            pdfium_c.FPDFText_SetText(raw, ctypes.cast(buffer, ctypes.POINTER(ctypes.c_ushort)))
            pdfium_c.FPDFPageObj_Transform(raw, 1, 0, 0, 1, 54, 740 - line * 22)
            pdfium_c.FPDFPage_InsertObject(page.raw, raw)
        rect = pdfium_c.FPDFPageObj_CreateNewRect(54, 40, 200 + number, 20)
        pdfium_c.FPDFPageObj_SetFillColor(rect, (number * 37) % 256, 90, 160, 255)
        pdfium_c.FPDFPath_SetDrawMode(rect, pdfium_c.FPDF_FILLMODE_ALTERNATE, False)
        pdfium_c.FPDFPage_InsertObject(page.raw, rect)
        pdfium_c.FPDFPage_GenerateContent(page.raw)
        page.close()
    pdf.save(str(path))
    pdf.close()


#: The manager's methods that a pool and its processors call: what status tracking costs them.
TIMED = (
    "update_status",
    "_fenced",
    "_fenced_update",
    "claim",
    "mark_completed",
    "mark_failed",
    "get_status",
    "require_status",
    "get_status_json",
    "list_active",
    "heartbeat",
    "expire_leases",
    "_renew",
)


#: The store's methods called outside the manager's entry points (progress thread, watcher).
STORE_TIMED = ("modify", "last_seq", "wait_for_change", "changes_since", "epoch")


class Stopwatch:
    """Adds up the CPU time spent in wrapped calls on any thread, a nested call counted once.

    CPU time of the calling thread, not wall time: on a shared machine a call
    that is descheduled for a while would otherwise count the wait.
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0
        self._lock = threading.Lock()
        self._depth = threading.local()

    def reset(self) -> None:
        """Start counting again from zero (a call in progress adds all of its time)."""
        with self._lock:
            self.seconds, self.calls = 0.0, 0

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            depth = getattr(self._depth, "n", 0)
            self._depth.n = depth + 1
            start = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self._depth.n = depth
                if depth == 0:
                    spent = time.thread_time() - start
                    with self._lock:
                        self.seconds += spent
                        self.calls += 1

        return timed


def _timed_manager(url: str, interval: float, watch: Stopwatch) -> StatusManager:
    store = open_store(url)
    # Instance attributes shadow the methods: the manager, its progress buffer and its
    # watcher of other processes' changes (which polls an SQLite file) call these.
    for name in STORE_TIMED:
        setattr(store, name, watch.wrap(getattr(store, name)))
    manager = StatusManager(store=store, cleanup_interval_seconds=None, progress_interval=interval)
    for name in TIMED:
        setattr(manager, name, watch.wrap(getattr(manager, name)))
    return manager


def _run_once(url: str, root: Path, pdf: Path, interval: float, salt: int) -> tuple[float, float, float, int]:
    """One document through the pipeline: (wall seconds, CPU seconds of the process, CPU seconds
    in status calls, status calls)."""
    watch = Stopwatch()
    manager = _timed_manager(url, interval, watch)
    uploads, data = root / f"uploads-{salt}", root / f"data-{salt}"
    pool = WorkerPool(manager, uploads, default_processors(), workers=1, data_dir=data, engine="thread")
    intake = Intake(manager, uploads, max_bytes=1 << 30)
    pool.start()
    with intake.open_upload("report.pdf") as writer:
        writer.write(pdf.read_bytes() + b"\n%" + str(salt).encode())  # new content: a new document
        doc_id = writer.finish().doc_id
    # The share is of the document's run: the pool's start-up and the upload are outside both
    # the process's CPU time below and the status calls' (a running service made them once).
    watch.reset()
    start, cpu = time.perf_counter(), time.process_time()
    pool.enqueue(doc_id)
    # No subscriber: a pipeline's process has none (the service's children, RQ work horses).
    if not pool.wait_idle(600):
        raise RuntimeError("the benchmark document did not finish")
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    spent, calls = watch.seconds, watch.calls
    pool.stop()
    final = manager.require_status(doc_id)
    manager.close()
    manager.store.close()
    if final.status != "completed":
        raise RuntimeError(f"the benchmark document failed: {final.error}")
    return wall, cpu, spent, calls


def _measure(table: Table, label: str, url: Callable[[Path, int], str], pdf: Path) -> None:
    runs: dict[str, list[tuple[float, float, float, int]]] = {"coalesced": [], "every": []}
    salts = iter(range(10**6))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)

        def one(kind: str, interval: float) -> Callable[[], float]:
            def run() -> float:
                salt = next(salts)
                result = _run_once(url(root, salt), root, pdf, interval, salt)
                runs[kind].append(result)
                return result[2] / result[1] * 100

            return run

        share = median_interleaved({"coalesced": one("coalesced", 0.1), "every": one("every", 0.0)}, ROUNDS)
    coalesced_calls = runs["coalesced"][0][3]
    every_calls = runs["every"][0][3]
    pages_per_s = statistics.median(PAGES / wall for wall, _, _, _ in runs["coalesced"])
    table.add(Row(f"{label}: {PAGES}-page PDF through the whole pipeline", pages_per_s, unit="pages/s"))
    table.add(
        Row(
            f"{label}: status calls' share of the pipeline's CPU ({coalesced_calls} calls)",
            share["coalesced"],
            f"every report written, progress_interval=0 ({every_calls} calls)",
            share["every"],
            TARGET,
            unit="%",
        )
    )


def run() -> list[Table]:
    table = Table(f"Reference pipeline: a {PAGES}-page PDF (render, thumbnail, vectors, chunks, store)")
    with tempfile.TemporaryDirectory() as tmp:
        pdf = Path(tmp) / "report.pdf"
        make_pdf(pdf)
        _measure(
            table, "SQLite status store", lambda root, salt: f"sqlite:///{root / f'status-{salt}.db'}", pdf
        )
        with redis_server() as redis_url:
            _measure(table, "Redis status store", lambda root, salt: f"{redis_url}?prefix=bench{salt}", pdf)
        _measure(table, "memory status store", lambda root, salt: "memory://", pdf)
    return [table]
