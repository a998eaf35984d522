"""Processors the tests run inside real services, in a module so child processes can load them.

``Held`` wraps a real processor: while ``<TEST_GATES>/<filename>.hold`` exists, the document
stops once its text embedding passes the fraction written in that file (e.g. "0.5"), and goes
on when the file is removed. That shows documents mid-way for as long as a test needs, without
timing anything. ``TEST_CHUNK_SECONDS`` (default 0) makes each text chunk of a held document
take that long, as a real embedding model would, so the service has a progress rate to estimate
the ETA from. A held document for which ``<TEST_GATES>/<filename>.fail`` exists fails when
released. PDFs are held the same way once their visual embedding passes that fraction of the
pages, and every page they embed is logged, one line each, in ``<TEST_GATES>/<filename>.pages``
before it is reported (so pages embedded after a refused report are counted too).
``Stalling`` reports "parsing" and then never finishes; ``Killing`` SIGKILLs its own process.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from docstatus.formats import default_processors
from docstatus.worker import Job, Processor, Reporter


class HeldReporter:
    def __init__(self, inner: Reporter, hold: Path) -> None:
        self.inner = inner
        self.hold = hold

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def text_chunk(self, chunk: int, total: int) -> None:
        self.inner.text_chunk(chunk, total)
        if not self.hold.exists():
            return
        threading.Event().wait(float(os.environ.get("TEST_CHUNK_SECONDS", "0")))
        self._wait(chunk, total)

    def visual_page(self, page: int, total: int) -> None:
        with self.hold.with_suffix(".pages").open("a") as log:
            log.write(f"{page}\n")
        self.inner.visual_page(page, total)
        if self.hold.exists():
            self._wait(page, total)

    def _wait(self, done: int, total: int) -> None:
        try:
            fraction = float(self.hold.read_text() or 0.5)
        except FileNotFoundError:  # released meanwhile
            return
        if done >= total * fraction:
            while self.hold.exists():
                self.inner.check()
                threading.Event().wait(0.02)
            if self.hold.with_suffix(".fail").exists():
                raise RuntimeError("told to fail by the test")


class Held:
    def __init__(self, inner: Processor) -> None:
        self.inner = inner

    def process(self, job: Job, reporter: Reporter) -> Mapping[str, Any] | None:
        gates = Path(os.environ["TEST_GATES"])
        held = HeldReporter(reporter, gates / (job.filename + ".hold"))
        return self.inner.process(job, held)  # type: ignore[arg-type]


def held_processors() -> dict[str, Processor]:
    """The real processors, with text documents (.txt, .md) and PDFs held by their gate files."""
    processors = default_processors()
    for name in ("txt", "md", "pdf"):
        processors[name] = Held(processors[name])
    return processors


class Stalling:
    def process(self, job: Job, reporter: Reporter) -> Mapping[str, Any] | None:
        reporter.parsing()
        threading.Event().wait()
        return None


def stalling_processors() -> dict[str, Processor]:
    """The real processors, with a .txt processor that never finishes."""
    processors = default_processors()
    processors["txt"] = Stalling()
    return processors


class Warns:
    """Logs a WARNING through the worker's logger, as a processor's own warning would, and completes."""

    def __init__(self, *args: Any, **options: Any) -> None:
        pass

    def process(self, job: Job, reporter: Reporter) -> Mapping[str, Any] | None:
        logging.getLogger("docstatus.worker.pool").warning("document %s needs a look", job.doc_id)
        return {}


class Killing:
    """SIGKILLs the process running it, every time: a parser that takes its process down."""

    def process(self, job: Job, reporter: Reporter) -> Mapping[str, Any] | None:
        reporter.parsing(metadata={"about": "to be killed"})
        os.kill(os.getpid(), signal.SIGKILL)
        return None


def killing_processors() -> dict[str, Processor]:
    """The real processors, with a .txt processor that kills its own process."""
    processors = default_processors()
    processors["txt"] = Killing()
    return processors
