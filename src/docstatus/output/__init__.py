"""Where processed documents end up: pages, chunks, vectors and thumbnails, and search over them."""

from __future__ import annotations

from .embedding import Embedder, HashingEmbedder
from .store import OutputStore, PageRecord, SearchHit, StoredDocument
from .visual import PageImage, PerceptualDescriptor, VisualEmbedder

__all__ = [
    "Embedder",
    "HashingEmbedder",
    "OutputStore",
    "PageImage",
    "PageRecord",
    "PerceptualDescriptor",
    "SearchHit",
    "StoredDocument",
    "VisualEmbedder",
]
