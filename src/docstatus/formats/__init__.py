"""The formats the pipeline accepts, and the processors that turn their files into output.

:data:`ENTRIES` is the one table of the built-in formats: one
:class:`~docstatus.formats.registry.FormatEntry` per format, with its
extensions, kind, media type, content check, signatures and processor.
:data:`FORMATS` (what uploads are checked against), :func:`detect_format`
and :func:`default_processors` (what the worker pool runs) are built from
it. Adding a format is one module (its processor, on the shared stages of
:mod:`docstatus.formats.base`) plus one entry here, or, at run time, one
:func:`register_format` call.

The reference processors import their libraries (the ``pipeline`` extra)
only when they run, so importing this package needs none of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..output.embedding import Embedder
from ..output.visual import VisualEmbedder
from ..worker.job import Processor
from .base import ExtractedText, PagedProcessor, PageSource, PipelineProcessor, TextDocumentProcessor
from .checks import (
    JPEG_SIGNATURE,
    PDF_SIGNATURE,
    PNG_SIGNATURE,
    ZIP_SIGNATURE,
    ContentCheck,
    image_check,
    magic,
    text_check,
    text_content_check,
)
from .html import HtmlProcessor
from .images import ImageProcessor
from .limits import Limits
from .office import DocxProcessor, PptxProcessor
from .pdf import PdfProcessor
from .registry import FormatEntry, FormatInfo, FormatRegistry, FormatType, ProcessorFactory
from .text import TextProcessor

__all__ = [
    "ENTRIES",
    "FORMATS",
    "DocxProcessor",
    "ExtractedText",
    "FormatEntry",
    "FormatInfo",
    "FormatRegistry",
    "HtmlProcessor",
    "ImageProcessor",
    "Limits",
    "PageSource",
    "PagedProcessor",
    "PdfProcessor",
    "PipelineProcessor",
    "PptxProcessor",
    "ProcessorFactory",
    "TextDocumentProcessor",
    "TextProcessor",
    "default_processors",
    "detect_format",
    "register_format",
]

_WORD = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
_POWERPOINT = "application/vnd.openxmlformats-officedocument.presentationml.presentation"

#: The built-in formats, one entry each.
ENTRIES: tuple[FormatEntry, ...] = (
    # Text has no signature: a file without an extension is text when its content reads as text.
    FormatEntry(
        "txt",
        (".txt", ".text"),
        "text",
        "text/plain",
        text_check,
        processor=TextProcessor,
        sniff=text_content_check,
    ),
    FormatEntry("md", (".md", ".markdown"), "text", "text/markdown", text_check, processor=TextProcessor),
    FormatEntry(
        "html", (".html", ".htm", ".xhtml"), "text", "text/html", text_check, processor=HtmlProcessor
    ),
    FormatEntry(
        "pdf",
        (".pdf",),
        "visual",
        "application/pdf",
        magic(PDF_SIGNATURE, name="PDF", within=1024),
        signatures=(PDF_SIGNATURE,),
        processor=PdfProcessor,
    ),
    FormatEntry(
        "docx",
        (".docx",),
        "text",
        _WORD,
        magic(ZIP_SIGNATURE, name="a Word document (DOCX is a ZIP package)"),
        processor=DocxProcessor,
    ),
    FormatEntry(
        "pptx",
        (".pptx",),
        "visual",
        _POWERPOINT,
        magic(ZIP_SIGNATURE, name="a PowerPoint presentation (PPTX is a ZIP package)"),
        processor=PptxProcessor,
    ),
    # Either image format is accepted for either extension: the decoder goes by content.
    FormatEntry(
        "png",
        (".png",),
        "visual",
        "image/png",
        image_check,
        signatures=(PNG_SIGNATURE,),
        processor=ImageProcessor,
    ),
    FormatEntry(
        "jpeg",
        (".jpg", ".jpeg", ".jpe"),
        "visual",
        "image/jpeg",
        image_check,
        signatures=(JPEG_SIGNATURE,),
        processor=ImageProcessor,
    ),
)

#: The formats the service accepts: :data:`ENTRIES`, plus those given to :func:`register_format`.
FORMATS = FormatRegistry(ENTRIES)


def register_format(
    format: str,
    extensions: Iterable[str],
    format_type: FormatType,
    media_type: str,
    *,
    check: ContentCheck | None = None,
    signatures: Iterable[bytes] = (),
    processor: ProcessorFactory | None = None,
    sniff: ContentCheck | None = None,
) -> FormatInfo:
    """Register a format in the default registry (:data:`FORMATS`).

    With a ``processor`` factory, :func:`default_processors` called afterwards
    includes the format's processor. ``sniff`` recognises the format's files
    that have no extension by their content (see :class:`FormatEntry`).
    """
    return FORMATS.register(
        format,
        extensions,
        format_type,
        media_type,
        check=check,
        signatures=signatures,
        processor=processor,
        sniff=sniff,
    )


def detect_format(path: Path, filename: str) -> FormatInfo | None:
    """The format of the file at ``path`` whose (client) name is ``filename``; ``None`` = unsupported.

    The extension of ``filename`` picks the format; the format's content check
    then looks at the first :data:`~docstatus.formats.checks.SNIFF_BYTES`
    bytes (binary content named ``.txt`` is rejected, a ZIP named ``.pdf``
    too). A file without a known extension is recognised by its content's
    signature (PDF, PNG, JPEG); a file without any extension is text when
    its content reads as text (``README``, ``LICENSE``), and refused when it
    is binary. Reads the file; ``OSError`` if it cannot.
    """
    return FORMATS.detect(path, filename)


def default_processors(
    limits: Limits | None = None,
    *,
    embedder: Embedder | None = None,
    visual_embedder: VisualEmbedder | None = None,
) -> dict[str, Processor]:
    """A processor for every format of :data:`FORMATS` (by format name), for a worker pool.

    The built-in ones: text, Markdown, HTML, DOCX, PDF, PPTX, PNG and JPEG.
    The reference processors need the ``pipeline`` extra only when they run:
    a document of a format whose library is missing fails with a
    :class:`~docstatus.errors.MissingDependencyError` naming the extra.
    ``limits`` (default :class:`~docstatus.formats.limits.Limits`) apply to
    every processor; ``embedder`` (text chunks) and ``visual_embedder``
    (pages) replace the offline defaults in every processor, e.g. a
    sentence-transformers model (give the service's output store the same
    text embedder, so searches are embedded like the chunks). The mapping is
    the caller's to change (``processors["txt"] = MyProcessor()``).
    """
    return FORMATS.processors(limits, embedder=embedder, visual_embedder=visual_embedder)
