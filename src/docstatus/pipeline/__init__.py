"""The processing runtime: intake of files, the worker pool, processors and their output.

The reference processors (PDF, DOCX, PPTX, HTML, PNG/JPEG, text, Markdown)
import their libraries (the ``pipeline`` extra) only when they run, so
importing this package needs none of them.

``Service`` bundles them for ``docstatus serve``; each piece is usable alone::

    manager = StatusManager(store="sqlite:///status.db")
    pool = WorkerPool(manager, Path("uploads"))
    intake = Intake(manager, Path("uploads"), max_bytes=10_000_000, on_queued=pool.enqueue)
    pool.start()
"""

from __future__ import annotations

from .embedding import Embedder, HashingEmbedder
from .formats import SUPPORTED_EXTENSIONS, FormatInfo, detect_format, register_format
from .html import HtmlProcessor
from .images import ImageProcessor
from .intake import Accepted, Intake, UploadWriter, safe_filename
from .limits import Limits
from .office import DocxProcessor, PptxProcessor
from .output import OutputStore, PageRecord, SearchHit
from .pdf import PdfProcessor
from .processor import Job, Processor, ProcessorRegistry, Reporter, default_processors
from .runtime import WorkerPool
from .service import Service
from .stages import PagedProcessor, TextDocumentProcessor
from .text import TextProcessor
from .visual import PerceptualDescriptor, VisualEmbedder

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "Accepted",
    "DocxProcessor",
    "Embedder",
    "FormatInfo",
    "HashingEmbedder",
    "HtmlProcessor",
    "ImageProcessor",
    "Intake",
    "Job",
    "Limits",
    "OutputStore",
    "PageRecord",
    "PagedProcessor",
    "PdfProcessor",
    "PerceptualDescriptor",
    "PptxProcessor",
    "Processor",
    "ProcessorRegistry",
    "Reporter",
    "SearchHit",
    "Service",
    "TextDocumentProcessor",
    "TextProcessor",
    "UploadWriter",
    "VisualEmbedder",
    "WorkerPool",
    "default_processors",
    "detect_format",
    "register_format",
    "safe_filename",
]
