"""PDF documents with pypdfium2: text per page and page rendering.

PDFium is not thread-safe, so every call into it holds :data:`PDFIUM_LOCK`.
The lock is per process: the local engine runs each document in its own child
process, so documents render in parallel on every core and the lock is never
contended there; it only serialises threads of one process (the ``"thread"``
engine, or a library user's own threads). Everything PDFium allocates is
closed explicitly while the lock is held, never left to the garbage collector
on another thread.

Text is cleaned of what PDFium leaves in it for layout (:func:`clean_text`):
its hyphenation markers become joined words, control characters go.

Readable failures: an encrypted PDF (a user password is needed), a damaged or
truncated one, one with no pages, more pages than :attr:`Limits.max_pages`,
or a page whose size would need more pixels than the limits allow at any
useful scale.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

from ..errors import UnreadableDocumentError
from ..output.visual import PageImage
from ..worker.job import Job
from .base import PagedProcessor, PageSource
from .limits import Limits, render_scale, require

__all__ = ["PDFIUM_LOCK", "PdfProcessor", "PdfSource", "clean_text"]

#: Serialises the PDFium calls of this process's threads (PDFium is not thread-safe).
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


# PDFium puts \x02 where a word was hyphenated at a line end and drops the break. The fragment
# before it starts after a space (so a long run without one is scanned once); a line break after
# the marker is PDFium's too.
_HYPHENATED = re.compile(r"(?<![^\s\x02])([^\s\x02]*)\x02\n?")
# A line-end hyphen PDFium did not mark is a real one ("64-" / "bit"): keep it, join the lines.
_LINE_END_HYPHEN = re.compile(r"(?<=\w)-\n(?=\w)")
# C0 and C1 controls other than tab and line feed, and soft hyphens (invisible break hints).
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\xad]")


def _join_hyphenated(match: re.Match[str]) -> str:
    fragment = match.group(1)
    # A word that has a hyphen of its own was broken at a hyphen (TeX and most typesetters break
    # such words only there): "day-to" + "day" is "day-to-day"; otherwise "manip" + "ulation".
    return fragment + "-" if "-" in fragment else fragment


def clean_text(text: str) -> str:
    """PDFium's page text as words: line breaks LF, hyphenated words joined, control characters dropped.

    A word PDFium marks as hyphenated at a line end (``"manip\\x02ulation"``)
    is joined (``"manipulation"``), keeping the hyphen when the word has one
    already (``"day-to\\x02day"`` is ``"day-to-day"``); a hyphen at a line end
    between two word characters that PDFium did not mark is kept and the
    line joined (``"64-\\nbit"`` is ``"64-bit"``). Control characters other
    than tab and line feed, and soft hyphens, are removed.
    """
    # PDFium ends lines with CRLF; the chunker expects LF.
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _HYPHENATED.sub(_join_hyphenated, text)
    text = _LINE_END_HYPHEN.sub("-", text)
    return _CONTROLS.sub("", text)


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
        return clean_text(text)

    def close(self) -> None:
        """Close the PDF. Idempotent."""
        with PDFIUM_LOCK:
            self._pdf.close()


class PdfProcessor(PagedProcessor):
    """Processes PDF documents: every page rendered and embedded, its text chunked and embedded."""

    def open_pages(self, job: Job) -> PageSource:
        """The opened PDF, or an ``UnreadableDocumentError`` saying why it cannot be read."""
        return PdfSource(job.path, job.filename, self.limits)
