"""Processors: what turns one document's file into stored output, and how they report progress.

A processor is any object with ``process(job, reporter)``. It reads
``job.path``, reports each stage through the :class:`Reporter` (which moves
the document through the lifecycle with progress computed by the manager),
stores its output in ``job.output`` and returns metadata for the completed
status (e.g. ``{"num_chunks": 12}``). It signals failure by raising: the
worker pool marks the document failed with ``"<ExceptionType>: <message>"``.

Processors are looked up by format (see :mod:`docstatus.pipeline.formats`)
in a :class:`ProcessorRegistry`; adding one is one line::

    registry.register("pdf", PdfProcessor())
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..formats.limits import Limits
from ..manager import StatusManager
from ..models import Status
from ..output.store import OutputStore

if TYPE_CHECKING:
    from ..output.embedding import Embedder
    from ..output.visual import VisualEmbedder

__all__ = ["Job", "Processor", "ProcessorRegistry", "Reporter", "default_processors"]


@dataclass(frozen=True, slots=True)
class Job:
    """One document to process: its identity, its file (checked: inside uploads), where output goes."""

    doc_id: str
    filename: str
    format: str
    path: Path
    output: OutputStore
    data_dir: Path
    metadata: dict[str, Any] = field(default_factory=dict)


class Reporter:
    """Moves one document through the lifecycle as its processor works. Use from the processor's thread.

    Each method is one ``manager.update_status`` with ``progress=None``, so
    the manager computes progress from the contract's table (pages for the
    visual stage, chunks for the text stage). A processor that has no visual
    stage goes straight from :meth:`parsing` to :meth:`text_chunk`. The
    worker pool completes the document after ``process`` returns.
    """

    def __init__(
        self, manager: StatusManager, doc_id: str, *, checkpoint: Callable[[], None] | None = None
    ) -> None:
        self.manager = manager
        self.doc_id = doc_id
        # Called before every report: raises to stop a document the pool gave up on.
        self._checkpoint = checkpoint

    def _update(self, status: Status, **fields: Any) -> None:
        self.check()
        self.manager.update_status(self.doc_id, status, None, **fields)

    def check(self) -> None:
        """Raise if the pool gave up on this document (its time limit passed, or the pool stopped).

        Every report checks this; call it in long loops between reports so a
        document over its time limit stops promptly.
        """
        if self._checkpoint is not None:
            self._checkpoint()

    def parsing(self, *, metadata: Mapping[str, Any] | None = None) -> None:
        """The file is being read; ``metadata`` (e.g. the detected encoding) is merged into the status."""
        if metadata:
            self._update(Status.PARSING, metadata=dict(metadata))
        else:
            self._update(Status.PARSING)

    def visual_page(self, page: int, total: int) -> None:
        """``page`` of ``total`` pages has been embedded (progress 0.1 to 0.6)."""
        self._update(Status.EMBEDDING_VISUAL, page=page, total_pages=total)

    def text_chunk(self, chunk: int, total: int) -> None:
        """``chunk`` of ``total`` text chunks has been embedded (progress 0.6 to 0.9)."""
        self._update(Status.EMBEDDING_TEXT, chunk=chunk, total_chunks=total)

    def storing(self) -> None:
        """The output is being stored (progress 0.95)."""
        self._update(Status.STORING)


@runtime_checkable
class Processor(Protocol):
    """Processes one document (see the module docstring). Must be safe to call from several threads."""

    def process(self, job: Job, reporter: Reporter) -> Mapping[str, Any] | None:
        """Process ``job``, reporting through ``reporter``; returns metadata for the completed status."""
        ...


class ProcessorRegistry:
    """Processors by format name. Thread-safe; registering a format again replaces its processor."""

    def __init__(self, processors: Mapping[str, Processor] | None = None) -> None:
        self._lock = threading.Lock()
        self._by_format: dict[str, Processor] = {}
        for format, processor in (processors or {}).items():
            self.register(format, processor)

    def register(self, format: str, processor: Processor) -> None:
        """Process documents of ``format`` (as :func:`~docstatus.pipeline.formats.detect_format` names it)."""
        if not isinstance(processor, Processor):
            raise TypeError(f"a processor needs a process(job, reporter) method; got {processor!r}")
        with self._lock:
            self._by_format[format] = processor

    def get(self, format: str) -> Processor | None:
        """The processor of ``format``, or ``None``."""
        with self._lock:
            return self._by_format.get(format)

    def formats(self) -> frozenset[str]:
        """The formats with a processor."""
        with self._lock:
            return frozenset(self._by_format)


def default_processors(
    limits: Limits | None = None,
    *,
    embedder: Embedder | None = None,
    visual_embedder: VisualEmbedder | None = None,
) -> ProcessorRegistry:
    """A registry with the built-in processors: text, Markdown, HTML, DOCX, PDF, PPTX, PNG and JPEG.

    The reference processors need the ``pipeline`` extra only when they run:
    a document of a format whose library is missing fails with a
    :class:`~docstatus.errors.MissingDependencyError` naming the extra.
    ``limits`` (default :class:`~docstatus.pipeline.limits.Limits`) apply to
    every processor; ``embedder`` (text chunks) and ``visual_embedder``
    (pages) replace the offline defaults in every processor, e.g. a
    sentence-transformers model (give the service's output store the same
    text embedder, so searches are embedded like the chunks).
    """
    # Imported here: these modules import this one.
    from ..formats.html import HtmlProcessor
    from ..formats.images import ImageProcessor
    from ..formats.office import DocxProcessor, PptxProcessor
    from ..formats.pdf import PdfProcessor
    from ..formats.text import TextProcessor

    shared: dict[str, Any] = {"limits": limits, "visual_embedder": visual_embedder}
    text = TextProcessor(embedder, **shared)
    image = ImageProcessor(embedder, **shared)
    return ProcessorRegistry(
        {
            "txt": text,
            "md": text,
            "html": HtmlProcessor(embedder, **shared),
            "docx": DocxProcessor(embedder, **shared),
            "pdf": PdfProcessor(embedder, **shared),
            "pptx": PptxProcessor(embedder, **shared),
            "png": image,
            "jpeg": image,
        }
    )
