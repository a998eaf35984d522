"""PDF documents with pypdfium2: text per page and page rendering.

PDFium is not thread-safe, so every call into it holds :data:`PDFIUM_LOCK`
(one page at a time across the whole process; documents on several workers
interleave page by page). Everything PDFium allocates is closed explicitly
while the lock is held, never left to the garbage collector on another
thread.

Readable failures: an encrypted PDF (a user password is needed), a damaged or
truncated one, one with no pages, more pages than :attr:`Limits.max_pages`,
or a page whose size would need more pixels than the limits allow at any
useful scale.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from ..errors import UnreadableDocumentError
from ..output.visual import PageImage
from ..worker.job import Job
from .base import PagedProcessor, PageSource
from .limits import Limits, render_scale, require

__all__ = ["PDFIUM_LOCK", "PdfProcessor", "PdfSource"]

#: Serialises every PDFium call in this process (PDFium is not thread-safe).
PDFIUM_LOCK = threading.RLock()

# PDFium's load error codes (FPDF_ERR_*), in words a person understands.
_LOAD_ERRORS = {
    1: "PDFium could not read it (unknown error)",
    2: "the file could not be opened",
    3: "it is damaged or truncated (not a readable PDF)",
    4: "it is encrypted: a password is needed to open it",
    5: "it uses a security handler that is not supported",
    6: "one of its pages is damaged",
}


class PdfSource:
    """An opened PDF (see :class:`~docstatus.formats.base.PageSource`)."""

    def __init__(self, path: Path, filename: str, limits: Limits) -> None:
        self._pdfium: Any = require("pypdfium2", "pypdfium2")
        self.filename = filename
        self.limits = limits
        with PDFIUM_LOCK:
            try:
                self._pdf: Any = self._pdfium.PdfDocument(str(path))
            except self._pdfium.PdfiumError as exc:
                reason = _LOAD_ERRORS.get(getattr(exc, "err_code", None) or 1, _LOAD_ERRORS[1])
                raise UnreadableDocumentError(filename, reason) from None
            try:
                self._total = len(self._pdf)
                self._metadata = self._read_metadata()
            except BaseException:
                self._pdf.close()
                raise
        if self._total == 0:
            self.close()
            raise UnreadableDocumentError(filename, "the PDF has no pages (it may be damaged or truncated)")

    def _read_metadata(self) -> dict[str, Any]:
        found: dict[str, Any] = {"pdf_version": self._pdf.get_version()}
        try:
            info = self._pdf.get_metadata_dict(skip_empty=True)
        except self._pdfium.PdfiumError:
            info = {}
        for key in ("Title", "Author"):
            value = info.get(key)
            if isinstance(value, str) and value.strip():
                found[key.lower()] = value.strip()[:500]
        return found

    @property
    def total_pages(self) -> int:
        """How many pages the PDF has."""
        return self._total

    @property
    def metadata(self) -> dict[str, Any]:
        """PDF version, and title/author when the document says."""
        return dict(self._metadata)

    def page(self, index: int) -> PageImage:
        """Page ``index`` rendered within the limits (RGB, a copy owned by the caller), with its text."""
        with PDFIUM_LOCK:
            page = self._pdf[index]
            try:
                width, height = page.get_size()
                scale = render_scale(self.filename, width, height, self.limits)
                bitmap = page.render(scale=scale, may_draw_forms=False, draw_annots=True)
                try:
                    image = bitmap.to_pil().convert("RGB")  # a copy: the bitmap's buffer is freed below
                finally:
                    bitmap.close()
                text = self._text(page)
            except self._pdfium.PdfiumError as exc:
                raise UnreadableDocumentError(self.filename, f"page {index + 1} is damaged") from exc
            finally:
                page.close()
        return PageImage(image, text, float(width), float(height))

    @staticmethod
    def _text(page: Any) -> str:
        textpage = page.get_textpage()
        try:
            text: str = textpage.get_text_bounded()
        finally:
            textpage.close()
        # PDFium ends lines with CRLF; the chunker expects LF.
        return text.replace("\r\n", "\n").replace("\r", "\n")

    def close(self) -> None:
        """Close the PDF. Idempotent."""
        with PDFIUM_LOCK:
            self._pdf.close()


class PdfProcessor(PagedProcessor):
    """Processes PDF documents: every page rendered and embedded, its text chunked and embedded."""

    def open_pages(self, job: Job) -> PageSource:
        """The opened PDF, or an ``UnreadableDocumentError`` saying why it cannot be read."""
        return PdfSource(job.path, job.filename, self.limits)
