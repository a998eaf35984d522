"""The local engine: pages per second on every core, what a lease costs, how soon a lost document is back.

**Pages/s.** A batch of ``PDFS`` PDFs of ``PAGES`` text pages each (written
by PDFium, as in the pipeline suite) goes through the real pipeline:
``WorkerPool(engine="process")`` with 1 and with 2 workers, the SQLite status
store, ``default_processors()``; the clock runs from the first ``enqueue``
to the last document completed (the children are started and ready before
it, as in a running service). Beside it, in the same run and interleaved
A B A B, two floors in plain processes (a ``multiprocessing`` pool from the
same start method as the engine's, warmed before the clock):

* the **render + text floor**: per page only what ``formats/pdf.py`` asks of
  PDFium (render at the same scale, convert to RGB, get the text), no
  docstatus at all;
* the **engine-free pipeline**: the same PDF processor as the pool's
  (thumbnail, visual vector, chunks, text vectors, the output store) called
  directly, its reports going nowhere: the difference to the pool is what
  the engine and the status tracking cost.

``docstatus process FILES --workers 2`` is timed end to end as a command
(interpreter start, imports, child processes and all).

**Leases.** ``claim()``, ``Lease.renew()``, and a fenced
``Lease.update_status`` beside a plain ``manager.update_status``, on SQLite
(WAL file) and on a private redis-server on loopback; medians of
interleaved rounds, in µs per call.

**SIGKILL to requeue.** A document is processed with ``lease_seconds=1``
and SIGKILLed mid-way: (a) only its child process (the pool sees the pipe
close and gives the document back at once); (b) the whole pool process (a
second pool, in this process, notices the lease expire in its periodic
chore). Timed from the kill until the document is queued again and until it
is claimed again, polling the store every millisecond.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

from docstatus import StatusManager
from docstatus.formats import default_processors
from docstatus.formats.limits import Limits
from docstatus.ingest import Intake
from docstatus.output.store import OutputStore
from docstatus.worker.job import Job, Reporter
from docstatus.worker.pool import WorkerPool

from ._harness import Row, Table, median_interleaved
from ._stores import META, open_manager, redis_server, update_fn
from .bench_pipeline import make_pdf

PDFS = 8
PAGES = 30
ROUNDS = 3
LEASE = 1.0
KILLS = 3
LEASE_CALLS = 1000
LEASE_ROUNDS = 5
TARGET_SCALING = "≥ 1.7× 1 worker"
TARGET_FLOOR = "≥ 0.85× floor"
# The same target in CPU per page: 1 / 0.85.
TARGET_CPU = "≤ 1.18× floor"


# -- the batch -----------------------------------------------------------------------


def _batch(folder: Path) -> list[Path]:
    """``PDFS`` distinct PDFs of ``PAGES`` pages (the same pages, a different trailing comment)."""
    template = folder / "template.pdf"
    make_pdf(template, PAGES)
    data = template.read_bytes()
    paths = []
    for i in range(PDFS):
        path = folder / f"report-{i}.pdf"
        path.write_bytes(data + b"\n%" + str(i).encode())
        paths.append(path)
    return paths


def _sqlite(root: Path) -> StatusManager:
    return StatusManager(store=f"sqlite:///{root / 'status.db'}", cleanup_interval_seconds=None)


def _upload(intake: Intake, path: Path) -> str:
    with intake.open_upload(path.name) as writer:
        writer.write(path.read_bytes())
        return writer.finish().doc_id


def _require_completed(manager: StatusManager, doc_ids: list[str]) -> None:
    for doc_id in doc_ids:
        status = manager.require_status(doc_id)
        if status.status != "completed":
            raise RuntimeError(f"a benchmark document ended {status.status}: {status.error}")


# -- docstatus: the pool, the command ------------------------------------------------


def _cpu_seconds(pids: list[int]) -> float:
    """CPU seconds (user + system) used so far by this process and the processes ``pids``."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return time.process_time() + ticks / os.sysconf("SC_CLK_TCK")


def _children(manager: StatusManager, count: int) -> list[int]:
    """The pids of the ``count`` child processes of the pool registered in ``manager``'s store."""
    # A pool's first heartbeat may come before every slot has named its child; the next
    # one (the periodic chore) names them all.
    deadline = time.monotonic() + 10.0
    while True:
        entries = manager.workers()
        pids = [int(str(c).rsplit(":", 1)[1]) for w in entries for c in w.info.get("children", [])]
        if len(pids) == count or time.monotonic() > deadline:
            return pids
        time.sleep(0.05)


def _pool_seconds(pdfs: list[Path], workers: int, cpu: list[float]) -> float:
    """Wall seconds for the pool to complete ``pdfs`` from the first enqueue; its CPU seconds into ``cpu``."""
    with tempfile.TemporaryDirectory(prefix="docstatus-bench-engine-") as tmp:
        root = Path(tmp)
        manager = _sqlite(root)
        try:
            intake = Intake(manager, root / "uploads", max_bytes=1 << 30)
            doc_ids = [_upload(intake, path) for path in pdfs]
            pool = WorkerPool(
                manager,
                root / "uploads",
                default_processors(),
                workers=workers,
                data_dir=root / "data",
                adopt_existing=False,
            )
            pool.start()
            try:
                pids = _children(manager, workers)
                used = _cpu_seconds(pids)
                start = time.perf_counter()
                for doc_id in doc_ids:
                    pool.enqueue(doc_id)
                if not pool.wait_idle(600):
                    raise RuntimeError("the benchmark batch did not finish")
                wall = time.perf_counter() - start
                cpu.append(_cpu_seconds(pids) - used)
            finally:
                pool.stop()
            _require_completed(manager, doc_ids)
        finally:
            manager.close()
    return wall


def _command_seconds(pdfs: list[Path], workers: int) -> float:
    """Wall seconds of ``docstatus process PDFS --workers N``, start to exit."""
    command = Path(sys.executable).with_name("docstatus")
    with tempfile.TemporaryDirectory(prefix="docstatus-bench-cli-") as tmp:
        root = Path(tmp)
        args = [str(command), "process", *map(str, pdfs), "--workers", str(workers)]
        args += ["--store", f"sqlite:///{root / 'status.db'}", "--data-dir", str(root / "data")]
        start = time.perf_counter()
        done = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"docstatus process failed ({done.returncode}): {done.stderr.decode()[-500:]}")
    return wall


# -- the floors: plain processes -----------------------------------------------------


def _context() -> Any:
    # The engine's own choice, so that both sides start processes alike.
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    return multiprocessing.get_context(method)


def _warm(_: int) -> None:
    # Imports done before the clock, as the engine's children are ready before it; the sleep
    # makes every process of the pool take one.
    import PIL.Image  # noqa: F401
    import pypdfium2  # noqa: F401

    time.sleep(0.2)


def _render_and_text(path: str) -> tuple[int, float]:
    """What formats/pdf.py asks of PDFium per page, and nothing else; the page count and CPU seconds."""
    import pypdfium2 as pdfium

    used = time.process_time()
    long_side = Limits().render_long_side
    pdf = pdfium.PdfDocument(path)
    try:
        for index in range(len(pdf)):
            page = pdf[index]
            try:
                width, height = page.get_size()
                bitmap = page.render(
                    scale=long_side / max(width, height), may_draw_forms=False, draw_annots=True
                )
                try:
                    bitmap.to_pil().convert("RGB")
                finally:
                    bitmap.close()
                textpage = page.get_textpage()
                try:
                    textpage.get_text_bounded()
                finally:
                    textpage.close()
            finally:
                page.close()
        return len(pdf), time.process_time() - used
    finally:
        pdf.close()


class _Nowhere:
    """A status writer that keeps nothing (the engine-free pipeline reports to no one)."""

    def update_status(self, status: str, progress: float | None = None, **fields: Any) -> None:
        pass


_output: OutputStore | None = None


def _open_output(path: str) -> None:
    global _output
    _output = OutputStore(path)


def _pipeline(path: str) -> tuple[int, float]:
    """The pool's PDF processor on ``path``, called directly here; the page count and CPU seconds."""
    assert _output is not None
    used = time.process_time()
    source = Path(path)
    job = Job(
        doc_id=f"{int(source.stem.rsplit('-', 1)[1]):064x}",
        filename=source.name,
        format="pdf",
        path=source,
        output=_output,
        data_dir=_output.path.parent,
        metadata={},
    )
    reporter = Reporter(None, job.doc_id, writer=_Nowhere(), claimed=True)
    result = default_processors()["pdf"].process(job, reporter)
    return int((result or {})["num_pages"]), time.process_time() - used


def _plain_seconds(
    pdfs: list[Path], processes: int, task: Callable[[str], tuple[int, float]], cpu: list[float]
) -> float:
    """Wall seconds for ``processes`` warmed plain processes to run ``task`` on each PDF; CPU into ``cpu``."""
    with tempfile.TemporaryDirectory(prefix="docstatus-bench-floor-") as tmp:
        output = str(Path(tmp) / "output.db")
        with _context().Pool(processes, initializer=_open_output, initargs=(output,)) as pool:
            pool.map(_warm, range(processes), chunksize=1)
            start = time.perf_counter()
            done = pool.map(task, [str(p) for p in pdfs], chunksize=1)
            wall = time.perf_counter() - start
    pages = sum(n for n, _ in done)
    if pages != PDFS * PAGES:
        raise RuntimeError(f"the floor saw {pages} pages, not {PDFS * PAGES}")
    cpu.append(sum(seconds for _, seconds in done))
    return wall


# -- pages per second ----------------------------------------------------------------


#: The pages rows: (measurement, its run, floor, the floor's run, target).
_PAGES_ROWS = [
    ("pool, 1 worker", "pool1", "render + text, 1 plain process", "floor1", TARGET_FLOOR),
    ("pool, 2 workers", "pool2", "render + text, 2 plain processes", "floor2", TARGET_FLOOR),
    ("pool, 1 worker", "pool1", "same processor, no engine, 1 process", "bare1", ""),
    ("pool, 2 workers", "pool2", "same processor, no engine, 2 processes", "bare2", ""),
    ("scaling: pool, 2 workers", "pool2", "pool, 1 worker", "pool1", TARGET_SCALING),
    ("scaling: render + text, 2 processes", "floor2", "render + text, 1 process", "floor1", ""),
    ("scaling: no engine, 2 processes", "bare2", "no engine, 1 process", "bare1", ""),
    ("`docstatus process --workers 2`, the whole command", "command2", "pool, 2 workers", "pool2", ""),
]


#: The CPU rows: (measurement, its run, floor, the floor's run, target).
_CPU_ROWS = [
    ("CPU per page, pool, 1 worker", "pool1", "render + text", "floor1", TARGET_CPU),
    ("CPU per page, pool, 2 workers", "pool2", "render + text", "floor2", TARGET_CPU),
    ("CPU per page, pool, 1 worker", "pool1", "same processor, no engine", "bare1", ""),
    ("CPU per page, pool, 2 workers", "pool2", "same processor, no engine", "bare2", ""),
]


def _pages_rows(table: Table, pdfs: list[Path]) -> None:
    runs: dict[str, Callable[[], float]] = {}
    cpu: dict[str, list[float]] = {}
    for n in (1, 2):
        cpu |= {f"pool{n}": [], f"floor{n}": [], f"bare{n}": []}
        runs[f"pool{n}"] = partial(_pool_seconds, pdfs, n, cpu[f"pool{n}"])
        runs[f"floor{n}"] = partial(_plain_seconds, pdfs, n, _render_and_text, cpu[f"floor{n}"])
        runs[f"bare{n}"] = partial(_plain_seconds, pdfs, n, _pipeline, cpu[f"bare{n}"])
    runs["command2"] = partial(_command_seconds, pdfs, 2)
    seconds = median_interleaved(runs, ROUNDS)
    rate = {name: PDFS * PAGES / wall for name, wall in seconds.items()}
    for name, run, floor_name, floor, target in _PAGES_ROWS:
        table.add(Row(name, rate[run], floor_name, rate[floor], target, "pages/s"))
    ms = {name: statistics.median(values) / (PDFS * PAGES) * 1000 for name, values in cpu.items()}
    for name, run, floor_name, floor, target in _CPU_ROWS:
        table.add(Row(name, ms[run], floor_name, ms[floor], target, "ms"))


# -- lease costs ---------------------------------------------------------------------


def _queued_docs(manager: StatusManager, count: int) -> Iterator[str]:
    """``count`` new queued documents, handed out one at a time (each can be claimed once)."""
    doc_ids = [f"claim-{i:06d}" for i in range(count)]
    for doc_id in doc_ids:
        manager.create_status(doc_id, "report.pdf", META)
    return iter(doc_ids)


def _timed(fn: Callable[[], object], number: int) -> Callable[[], float]:
    """A measurement for :func:`median_interleaved`: µs per call over ``number`` calls of ``fn``."""

    def measure() -> float:
        start = time.perf_counter()
        for _ in range(number):
            fn()
        return (time.perf_counter() - start) / number * 1e6

    return measure


def _lease_rows(table: Table, label: str, manager: StatusManager) -> None:
    queued = _queued_docs(manager, LEASE_CALLS * LEASE_ROUNDS)

    def claim() -> None:
        if manager.claim(next(queued), worker="bench:1", seconds=30.0) is None:
            raise RuntimeError("a queued document could not be claimed")

    manager.create_status("leased", "report.pdf", META)
    lease = manager.claim("leased", worker="bench:1", seconds=30.0)
    if lease is None:
        raise RuntimeError("could not claim the benchmark document")
    pages = itertools.count(1)

    def fenced() -> None:
        lease.update_status("embedding_visual", page=next(pages), total_pages=10**9)

    fns = {
        "claim": _timed(claim, LEASE_CALLS),
        "renew": _timed(lease.renew, LEASE_CALLS),
        "fenced": _timed(fenced, LEASE_CALLS),
        "plain": _timed(update_fn(manager, "plain"), LEASE_CALLS),
    }
    us = median_interleaved(fns, LEASE_ROUNDS)
    table.add(Row(f"{label}: claim() a queued document", us["claim"], "plain update_status", us["plain"]))
    table.add(Row(f"{label}: Lease.renew()", us["renew"], "plain update_status", us["plain"]))
    table.add(Row(f"{label}: Lease.update_status (fenced)", us["fenced"], "plain update_status", us["plain"]))


def _lease_tables(table: Table) -> None:
    with tempfile.TemporaryDirectory(prefix="docstatus-bench-lease-") as tmp:
        manager = _sqlite(Path(tmp))
        try:
            _lease_rows(table, "SQLite", manager)
        finally:
            manager.close()
    with redis_server() as url:
        manager = open_manager(url + "?prefix=bench-lease")
        try:
            _lease_rows(table, "Redis", manager)
        finally:
            manager.close()


# -- SIGKILL to requeue --------------------------------------------------------------


def _wait_for(manager: StatusManager, doc_id: str, ok: Callable[[Any], bool], timeout: float = 60.0) -> float:
    """perf_counter() at the first poll (every ms) where the document's status satisfies ``ok``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = manager.get_status(doc_id)
        if status is not None and ok(status):
            return time.perf_counter()
        time.sleep(0.001)
    raise RuntimeError(f"{doc_id} never reached the awaited state")


def _mid_document(status: Any) -> bool:
    return status.status == "embedding_visual" and (status.page or 0) >= 2


def _requeued(status: Any) -> bool:
    return status.status == "queued"


def _reclaimed(status: Any) -> bool:
    return status.status != "queued" and status.metadata.get("attempt", 1) >= 2


def _holder_pid(manager: StatusManager, doc_id: str) -> int:
    status = manager.require_status(doc_id)
    return int(str(status.metadata["worker"]).rsplit(":", 1)[1])


def _kill_child_once(pdf: Path) -> tuple[float, float]:
    """(seconds to queued, seconds to claimed again) after SIGKILL of the child processing ``pdf``."""
    with tempfile.TemporaryDirectory(prefix="docstatus-bench-kill-") as tmp:
        root = Path(tmp)
        manager = _sqlite(root)
        watcher = _sqlite(root)
        pool = WorkerPool(
            manager,
            root / "uploads",
            default_processors(),
            workers=1,
            data_dir=root / "data",
            lease_seconds=LEASE,
            adopt_existing=False,
        )
        try:
            doc_id = _upload(Intake(manager, root / "uploads", max_bytes=1 << 30), pdf)
            pool.start()
            pool.enqueue(doc_id)
            _wait_for(watcher, doc_id, _mid_document)
            os.kill(_holder_pid(watcher, doc_id), signal.SIGKILL)
            killed = time.perf_counter()
            queued = _wait_for(watcher, doc_id, lambda s: _requeued(s) or _reclaimed(s))
            claimed = _wait_for(watcher, doc_id, _reclaimed)
        finally:
            pool.stop(timeout=0.0)
            watcher.close()
            manager.close()
    return queued - killed, claimed - killed


def _pool_process(root: str, doc_id: str) -> None:
    """A pool process of its own (SIGKILLed by the benchmark) processing ``doc_id``."""
    folder = Path(root)
    manager = _sqlite(folder)
    pool = WorkerPool(
        manager,
        folder / "uploads",
        default_processors(),
        workers=1,
        data_dir=folder / "data",
        lease_seconds=LEASE,
        adopt_existing=False,
    )
    pool.start()
    pool.enqueue(doc_id)
    time.sleep(600)


def _kill_pool_once(pdf: Path) -> tuple[float, float]:
    """(seconds to queued, seconds to claimed again) after SIGKILL of the pool process holding ``pdf``."""
    with tempfile.TemporaryDirectory(prefix="docstatus-bench-kill-") as tmp:
        root = Path(tmp)
        manager = _sqlite(root)
        doc_id = _upload(Intake(manager, root / "uploads", max_bytes=1 << 30), pdf)
        victim = _context().Process(target=_pool_process, args=(str(root), doc_id))
        victim.start()
        survivor = WorkerPool(
            manager,
            root / "uploads",
            default_processors(),
            workers=1,
            data_dir=root / "data",
            lease_seconds=LEASE,
            scan_interval=LEASE / 3,
        )
        try:
            _wait_for(manager, doc_id, _mid_document)
            survivor.start()
            victim.kill()
            killed = time.perf_counter()
            queued = _wait_for(manager, doc_id, lambda s: _requeued(s) or _reclaimed(s))
            claimed = _wait_for(manager, doc_id, _reclaimed)
        finally:
            survivor.stop(timeout=0.0)
            with contextlib.suppress(Exception):
                victim.kill()
            victim.join(5.0)
            manager.close()
    return queued - killed, claimed - killed


def _kill_rows(table: Table, pdf: Path) -> None:
    for label, once in (
        ("child process SIGKILLed", _kill_child_once),
        ("whole pool process SIGKILLed", _kill_pool_once),
    ):
        times = [once(pdf) for _ in range(KILLS)]
        queued = statistics.median(t[0] for t in times) * 1000
        claimed = statistics.median(t[1] for t in times) * 1000
        table.add(Row(f"{label}: until queued again", queued, "lease", LEASE * 1000, "", "ms"))
        table.add(Row(f"{label}: until claimed again", claimed, "lease", LEASE * 1000, "", "ms"))


def run() -> list[Table]:
    batch = f"{PDFS} PDFs of {PAGES} pages"
    pages = Table(f"Local engine: pages/s, {batch}, SQLite store (median of {ROUNDS} interleaved rounds)")
    leases = Table(f"Leases: µs per call (median of {LEASE_ROUNDS} interleaved rounds of {LEASE_CALLS})")
    kills = Table(f"SIGKILL mid-document to requeue, lease {LEASE:g} s (median of {KILLS})")
    # The kills make the pools log what they saw (a lost child, an expired lease): expected here.
    logging.getLogger("docstatus").addHandler(logging.NullHandler())
    with tempfile.TemporaryDirectory(prefix="docstatus-bench-pdfs-") as tmp:
        pdfs = _batch(Path(tmp))
        before = os.getloadavg()[0]
        _pages_rows(pages, pdfs)
        # Other work on the machine takes cores from the 2-process runs first: say how busy it was.
        pages.title += f"; 1-min load average {before:.2f} before, {os.getloadavg()[0]:.2f} after"
        _lease_tables(leases)
        _kill_rows(kills, pdfs[0])
    return [pages, leases, kills]
