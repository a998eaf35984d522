"""The stages every reference processor shares: pages → visual stage, text → chunks → text stage → store.

A format contributes only what is specific to it: a :class:`PageSource`
(PDF, PPTX, images: pages with a rendering and their text) or an
:class:`ExtractedText` (DOCX, HTML: Markdown-like text whose ``#`` headings
the chunker of :mod:`docstatus.formats.chunking` understands). The base classes
here do the rest, reporting each page and each chunk:

* parsing (0.1) — the file is opened and checked against the limits;
  ``total_pages`` goes into the metadata;
* embedding_visual (0.1 → 0.6) — each page rendered, thumbnailed and given a
  visual vector, ``page``/``total_pages`` reported after each;
* embedding_text (0.6 → 0.9) — the text chunked (per page where there are
  pages, so every chunk knows its page) and each chunk embedded;
* storing (0.95) — pages, chunks, vectors and thumbnails saved in one
  transaction of the job's :class:`~docstatus.output.store.OutputStore`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import DocumentLimitError
from ..output.embedding import Embedder, HashingEmbedder
from ..output.store import PageRecord
from ..output.visual import PageImage, PerceptualDescriptor, VisualEmbedder, visual_result
from ..worker.job import Job, Reporter
from .chunking import chunk_text
from .limits import Limits

__all__ = ["ExtractedText", "PageSource", "PagedProcessor", "PipelineProcessor", "TextDocumentProcessor"]


class PageSource(Protocol):
    """An opened document with pages. Used from one thread; :meth:`close` releases it."""

    @property
    def total_pages(self) -> int:
        """How many pages the document has."""
        ...

    @property
    def metadata(self) -> dict[str, Any]:
        """What the status should show about the document (JSON-serializable)."""
        ...

    def page(self, index: int) -> PageImage:
        """Page ``index`` (from 0), rendered within the limits, with its text."""
        ...

    def close(self) -> None:
        """Release the document. Idempotent."""
        ...


@dataclass(frozen=True, slots=True)
class ExtractedText:
    """The text of a document without pages (Markdown-like) and what to show about it."""

    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class _Chunks:
    texts: list[str] = field(default_factory=list)
    infos: list[dict[str, Any]] = field(default_factory=list)
    vectors: list[list[float]] = field(default_factory=list)


class PipelineProcessor:
    """What the reference processors share: embedders, limits, chunk sizes. Thread-safe.

    ``embedder`` (text; default :class:`~docstatus.output.embedding.HashingEmbedder`)
    and ``visual_embedder`` (pages; default
    :class:`~docstatus.output.visual.PerceptualDescriptor`) can be any
    objects of the two protocols, e.g. a sentence-transformers or CLIP model.
    """

    def __init__(
        self,
        embedder: Embedder | None = None,
        *,
        visual_embedder: VisualEmbedder | None = None,
        limits: Limits | None = None,
        max_chars: int = 1000,
        overlap: int = 100,
    ) -> None:
        chunk_text("", max_chars=max_chars, overlap=overlap)  # validates the sizes now
        self.embedder: Embedder = embedder or HashingEmbedder()
        self.visual_embedder: VisualEmbedder = visual_embedder or PerceptualDescriptor()
        self.limits = limits or Limits()
        self.max_chars = max_chars
        self.overlap = overlap

    def _chunk(self, job: Job, reporter: Reporter, sections: Iterable[tuple[str, dict[str, Any]]]) -> _Chunks:
        out = _Chunks()
        characters = 0
        for text, info in sections:
            reporter.check()
            characters += len(text)
            if characters > self.limits.max_text_chars:
                raise DocumentLimitError(
                    job.filename, "characters of text", characters, self.limits.max_text_chars
                )
            for chunk in chunk_text(text, max_chars=self.max_chars, overlap=self.overlap):
                out.texts.append(chunk.text)
                out.infos.append({**info, **chunk.info()})
        return out

    def _embed_text(self, reporter: Reporter, chunks: _Chunks) -> None:
        total = len(chunks.texts)
        reporter.text_chunk(0, total)
        for i, text in enumerate(chunks.texts, 1):
            chunks.vectors.append([float(x) for x in self.embedder.embed(text)])
            reporter.text_chunk(i, total)

    def _store(
        self,
        job: Job,
        reporter: Reporter,
        chunks: _Chunks,
        pages: list[PageRecord],
        details: dict[str, Any],
    ) -> dict[str, Any]:
        reporter.storing()
        job.output.save(
            job.doc_id,
            chunks.texts,
            chunks.vectors,
            {"filename": job.filename, "format": job.format, **details},
            chunk_info=chunks.infos,
            pages=pages,
        )
        result = {**details, "num_chunks": len(chunks.texts)}
        if pages:
            result["num_pages"] = len(pages)
        return result


class PagedProcessor(PipelineProcessor):
    """A processor for documents with pages; subclasses implement :meth:`open_pages`."""

    #: What a page is called in messages ("pages", "slides").
    page_unit = "pages"

    def open_pages(self, job: Job) -> PageSource:
        """Open ``job.path``; raise an ``UnreadableDocumentError`` or ``DocumentLimitError`` if unfit."""
        raise NotImplementedError

    def process(self, job: Job, reporter: Reporter) -> dict[str, Any]:
        """Parse, render and embed every page, chunk and embed the text, store; see the module docstring."""
        reporter.parsing()
        source = self.open_pages(job)
        try:
            total = source.total_pages
            details = {**source.metadata, "total_pages": total}
            reporter.parsing(metadata=details)
            self.limits.check_pages(job.filename, total, self.page_unit)
            pages, texts = self._visual(job, reporter, source)
        finally:
            source.close()
        chunks = self._chunk(job, reporter, texts)
        self._embed_text(reporter, chunks)
        return self._store(job, reporter, chunks, pages, details)

    def _visual(
        self, job: Job, reporter: Reporter, source: PageSource
    ) -> tuple[list[PageRecord], list[tuple[str, dict[str, Any]]]]:
        total = source.total_pages
        pages: list[PageRecord] = []
        texts: list[tuple[str, dict[str, Any]]] = []
        for index in range(total):
            reporter.check()
            page = source.page(index)
            result = visual_result(page.image, self.visual_embedder)
            number = index + 1
            info = {"pixels": list(result.pixels), "characters": len(page.text)}
            pages.append(
                PageRecord(
                    number, page.width, page.height, result.thumbnail, result.media_type, result.vector, info
                )
            )
            if page.text.strip():
                texts.append((page.text, {"page": number}))
            reporter.visual_page(number, total)
        return pages, texts


class TextDocumentProcessor(PipelineProcessor):
    """A processor for documents without pages; subclasses implement :meth:`extract`."""

    def extract(self, job: Job, reporter: Reporter) -> ExtractedText:
        """The Markdown-like text of ``job.path``; raise an ``UnreadableDocumentError`` if unfit."""
        raise NotImplementedError

    def process(self, job: Job, reporter: Reporter) -> dict[str, Any]:
        """Extract, chunk, embed and store the text; see the module docstring."""
        reporter.parsing()
        extracted = self.extract(job, reporter)
        details = {**extracted.metadata, "characters": len(extracted.text)}
        reporter.parsing(metadata=details)
        chunks = self._chunk(job, reporter, [(extracted.text, {})])
        self._embed_text(reporter, chunks)
        return self._store(job, reporter, chunks, [], details)
