"""How honest the ETA is: its error on real multi-page PDFs, sampled at 25/50/75 % of the run.

Each PDF goes through the reference pipeline (a one-worker pool, the
service's processors, the memory store), and every status change is kept
with the time it happened. At 25, 50 and 75 % of the run (from the claim to
completion) the ETA the API would show then (the last change's
``estimated_remaining``, less the time since that change) is compared with
the time the document really took to finish: error = (ETA - actual) / actual.
The PDFs: Debian's own (``/usr/share/doc/*/*.pdf``, e.g. libtasn1-doc) and,
to cover long documents, ones PDFium writes (100 and 300 pages, see
:func:`benchmarks.bench_pipeline.make_pdf`). Also shown: the progress bar
(the contract's fixed table) at the same moments, and the shares of the run
the text stage and storing took, which the ETA's priors stand for.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from docstatus import Event, StatusManager
from docstatus.formats import default_processors
from docstatus.ingest import Intake
from docstatus.worker.pool import WorkerPool

from ._harness import Row, Table
from .bench_pipeline import make_pdf

FRACTIONS = (0.25, 0.5, 0.75)
TARGET = "median |error| <= 20 %"
GENERATED = (100, 300)

Change = tuple[float, dict[str, Any]]


def _changes(pdf: Path) -> list[Change]:
    """Every status change of ``pdf``'s run through the pipeline, with the time it was seen."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manager = StatusManager(store="memory://", cleanup_interval_seconds=None)
        seen: list[Change] = []
        done = threading.Event()

        def on_event(event: Event) -> None:
            status = event["status"]
            if status is not None:
                seen.append((time.time(), status))
                if status["status"] in ("completed", "failed"):
                    done.set()

        manager.subscribe(on_event)
        pool = WorkerPool(manager, root / "uploads", default_processors(), workers=1, data_dir=root / "data")
        intake = Intake(manager, root / "uploads", max_bytes=1 << 30)
        pool.start()
        try:
            with intake.open_upload(pdf.name) as writer:
                writer.write(pdf.read_bytes())
                doc_id = writer.finish().doc_id
            pool.enqueue(doc_id)
            if not done.wait(600):
                raise RuntimeError(f"{pdf.name} did not finish")
        finally:
            pool.stop()
            manager.close()
        if seen[-1][1]["status"] != "completed":
            raise RuntimeError(f"{pdf.name} failed: {seen[-1][1]['error']}")
        return seen


def _at(changes: list[Change], when: float) -> tuple[float | None, float]:
    """The ETA and the progress shown at ``when``: the last change's, the ETA less the time since."""
    at, status = [c for c in changes if c[0] <= when][-1]
    eta = status["estimated_remaining"]
    return (None if eta is None else max(0.0, eta - (when - at))), status["progress"]


def _stage_shares(changes: list[Change]) -> tuple[float, float]:
    """The text stage's time over the visual stage's, and storing's over the time before it."""
    first = {}
    for at, status in changes:
        first.setdefault(status["status"], at)
    visual = first["embedding_text"] - first["embedding_visual"]
    text = first["storing"] - first["embedding_text"]
    storing = first["completed"] - first["storing"]
    return text / visual, storing / (first["storing"] - first["parsing"])


def _documents(folder: Path) -> list[Path]:
    found = sorted(p for p in Path("/usr/share/doc").glob("*/*.pdf") if p.stat().st_size > 50_000)
    for pages in GENERATED:
        path = folder / f"generated-{pages}-pages.pdf"
        make_pdf(path, pages)
        found.append(path)
    return found


def run() -> list[Table]:
    table = Table("ETA error on real PDFs: (ETA - actual remaining) / actual, at 25/50/75 % of the run")
    errors: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for pdf in _documents(Path(tmp)):
            changes = _changes(pdf)
            start = next(at for at, s in changes if s["status"] == "parsing")
            end = changes[-1][0]
            pages = changes[-1][1]["metadata"].get("total_pages")
            for fraction in FRACTIONS:
                when = start + fraction * (end - start)
                eta, progress = _at(changes, when)
                actual = end - when
                error = float("inf") if eta is None else (eta - actual) / actual
                errors.append(abs(error))
                table.add(
                    Row(
                        f"{pdf.name} ({pages} pages, {end - start:.2f} s) at {fraction:.0%}: "
                        f"ETA {'-' if eta is None else f'{eta:.2f}'} s, actual {actual:.2f} s, "
                        f"bar {progress:.0%}",
                        error * 100,
                        unit="% error",
                    )
                )
            text_share, storing_share = _stage_shares(changes)
            table.add(Row(f"{pdf.name}: text stage / visual stage (prior 5 %)", text_share * 100, unit="%"))
            table.add(
                Row(f"{pdf.name}: storing / the time before it (prior 1 %)", storing_share * 100, unit="%")
            )
    table.add(
        Row("median |error| over every sample", statistics.median(errors) * 100, unit="%", target=TARGET)
    )
    return [table]
