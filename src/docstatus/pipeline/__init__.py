"""The processing runtime: intake of files, the worker pool, processors and their output.

``Service`` bundles them for ``docstatus serve``; each piece is usable alone::

    manager = StatusManager(store="sqlite:///status.db")
    pool = WorkerPool(manager, Path("uploads"))
    intake = Intake(manager, Path("uploads"), max_bytes=10_000_000, on_queued=pool.enqueue)
    pool.start()
"""

from __future__ import annotations

from .embedding import Embedder, HashingEmbedder
from .formats import SUPPORTED_EXTENSIONS, FormatInfo, detect_format, register_format
from .intake import Accepted, Intake, UploadWriter, safe_filename
from .output import OutputStore, SearchHit
from .processor import Job, Processor, ProcessorRegistry, Reporter, default_processors
from .runtime import WorkerPool
from .service import Service
from .text import TextProcessor

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "Accepted",
    "Embedder",
    "FormatInfo",
    "HashingEmbedder",
    "Intake",
    "Job",
    "OutputStore",
    "Processor",
    "ProcessorRegistry",
    "Reporter",
    "SearchHit",
    "Service",
    "TextProcessor",
    "UploadWriter",
    "WorkerPool",
    "default_processors",
    "detect_format",
    "register_format",
    "safe_filename",
]
