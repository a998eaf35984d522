"""The reference pipeline on a 100-page PDF, and the share of its time spent tracking status.

The PDF is generated with PDFium itself (pypdfium2: 100 letter pages, each
with 30 lines of Helvetica text and a filled rectangle). It goes through the
whole pipeline as the service runs it: intake, a one-worker pool, parsing,
rendering + thumbnail + visual vector per page, chunking + text vector per
chunk, storing in the output store, with the status in the SQLite store
(the service's default) and, for comparison, in the memory store.

Status tracking is measured inside the run: the pool's manager is wrapped
in a proxy that times every call the pool and the processor make to it
(``update_status``, ``mark_completed``, ``get_status``, ...), including the
store write and the event delivery; its share of the pipeline's wall time is
the number to watch (target < 1%). (Comparing against a run whose
``update_status`` is a no-op, ``TimedManager(silent=True)``, measures the
same thing as a difference of two noisy wall times; on a shared machine its
noise is larger than the effect, so it is not reported.)
"""

from __future__ import annotations

import ctypes
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from docstatus import Event, StatusManager
from docstatus.formats import default_processors
from docstatus.ingest import Intake
from docstatus.worker.pool import WorkerPool

from ._harness import Row, Table

PAGES = 100
REPEAT = 3
TARGET = "< 1% of the pipeline"


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


class TimedManager:
    """Forwards to a StatusManager and adds up the time spent inside its methods (one worker thread).

    With ``silent``, ``update_status`` does nothing (the no-op status sink).
    """

    def __init__(self, manager: StatusManager, *, silent: bool = False) -> None:
        self._manager = manager
        self._silent = silent
        self.seconds = 0.0
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._manager, name)
        if not callable(target) or name in ("subscribe",):
            return target
        if self._silent and name == "update_status":
            return lambda *args, **kwargs: None

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return target(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
                self.calls += 1

        return timed


def _run_once(
    store_url: Callable[[Path], str], pdf: Path, salt: int, silent: bool = False
) -> tuple[float, float, int]:
    """One document through the pipeline: (wall seconds, seconds in status calls, status calls)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manager = StatusManager(store=store_url(root), cleanup_interval_seconds=None)
        timed = TimedManager(manager, silent=silent)
        done = threading.Event()

        def on_event(event: Event) -> None:
            status = event["status"]
            if status is not None and status["status"] in ("completed", "failed"):
                done.set()

        manager.subscribe(on_event)
        pool = WorkerPool(timed, root / "uploads", default_processors(), workers=1, data_dir=root / "data")  # type: ignore[arg-type]
        intake = Intake(manager, root / "uploads", max_bytes=1 << 30)
        pool.start()
        with intake.open_upload("report.pdf") as writer:
            writer.write(pdf.read_bytes() + b"\n%" + str(salt).encode())  # new content: a new document
            doc_id = writer.finish().doc_id
        start = time.perf_counter()
        pool.enqueue(doc_id)
        if not done.wait(600):
            raise RuntimeError("the benchmark document did not finish")
        wall = time.perf_counter() - start
        pool.stop()
        final = manager.require_status(doc_id)
        manager.close()
        if final.status != "completed":
            raise RuntimeError(f"the benchmark document failed: {final.error}")
        return wall, timed.seconds, timed.calls


def _measure(table: Table, label: str, store_url: Callable[[Path], str], pdf: Path) -> None:
    runs = [_run_once(store_url, pdf, salt) for salt in range(REPEAT)]
    wall, tracked, calls = min(runs)  # the least disturbed run
    table.add(Row(f"{label}: {PAGES}-page PDF through the whole pipeline", PAGES / wall, unit="pages/s"))
    table.add(
        Row(
            f"{label}: time inside the {calls} status calls, share of the pipeline",
            tracked / wall * 100,
            unit="%",
            target=TARGET,
        )
    )


def run() -> list[Table]:
    table = Table(f"Reference pipeline: a {PAGES}-page PDF (render, thumbnail, vectors, chunks, store)")
    with tempfile.TemporaryDirectory() as tmp:
        pdf = Path(tmp) / "report.pdf"
        make_pdf(pdf)
        _measure(table, "SQLite status store", lambda root: f"sqlite:///{root / 'status.db'}", pdf)
        _measure(table, "memory status store", lambda root: "memory://", pdf)
    return [table]
