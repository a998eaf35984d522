"""Where processed documents end up: chunks and their vectors in an SQLite file.

One file (``<data_dir>/output.db`` in the service) holds every document's
chunks, each with its text, optional details (heading, offsets) and its
vector stored compactly as 32-bit floats (``array('f').tobytes()``). Saving a
document replaces whatever was stored for it before, in one transaction, so a
reprocessed document never mixes two attempts.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from array import array
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from ..errors import OutputError
from .embedding import Embedder, HashingEmbedder

__all__ = ["OutputStore", "SearchHit", "StoredChunk", "StoredDocument"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    doc_id     TEXT PRIMARY KEY,
    metadata   TEXT NOT NULL,
    dimension  INTEGER NOT NULL,
    num_chunks INTEGER NOT NULL,
    stored_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    doc_id TEXT NOT NULL REFERENCES documents(doc_id) ON DELETE CASCADE,
    idx    INTEGER NOT NULL,
    text   TEXT NOT NULL,
    info   TEXT NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (doc_id, idx)
);
"""


@dataclass(frozen=True, slots=True)
class StoredChunk:
    """One stored chunk: its position, text, details and vector."""

    index: int
    text: str
    vector: tuple[float, ...]
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StoredDocument:
    """A stored document: its metadata and chunks in order."""

    doc_id: str
    metadata: dict[str, Any]
    dimension: int
    stored_at: float
    chunks: list[StoredChunk]


@dataclass(frozen=True, slots=True)
class SearchHit:
    """A chunk that matched a search, with its cosine similarity to the query."""

    doc_id: str
    index: int
    text: str
    score: float
    info: dict[str, Any]


def _pack(vector: Sequence[float], dimension: int) -> bytes:
    if len(vector) != dimension:
        raise OutputError(f"vectors must all have {dimension} dimensions, got one with {len(vector)}")
    packed = array("f", vector)
    if not all(math.isfinite(x) for x in packed):
        raise OutputError("vectors must contain only finite numbers")
    return packed.tobytes()


def _unpack(blob: bytes) -> array[float]:
    vector = array("f")
    vector.frombytes(blob)
    return vector


def _cosine(a: Sequence[float], b: Sequence[float], norm_a: float) -> float:
    norm_b = math.sqrt(math.fsum(x * x for x in b))
    if norm_a == 0.0 or norm_b == 0.0:
        return 0.0
    return math.fsum(x * y for x, y in zip(a, b, strict=True)) / (norm_a * norm_b)


class OutputStore:
    """Chunks and vectors of processed documents in one SQLite file. Thread-safe.

    ``embedder`` turns a text query into a vector for :meth:`search` (default:
    a 256-dimension :class:`~docstatus.pipeline.embedding.HashingEmbedder`,
    the text processor's default).
    """

    def __init__(self, path: str | Path, *, embedder: Embedder | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.embedder: Embedder = embedder or HashingEmbedder()
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._db is None:
                raise OutputError(f"the output store {self.path} is closed")
            yield self._db

    def save(
        self,
        doc_id: str,
        chunks: Sequence[str],
        vectors: Sequence[Sequence[float]],
        metadata: Mapping[str, Any] | None = None,
        *,
        chunk_info: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        """Store ``doc_id``'s chunks with their vectors (and per-chunk details), replacing earlier ones.

        ``chunks``, ``vectors`` and ``chunk_info`` (if given) must have the same
        length and every vector the same dimension; otherwise
        :class:`~docstatus.errors.OutputError` and nothing is stored.
        Metadata and details must be JSON-serializable.
        """
        infos = list(chunk_info) if chunk_info is not None else [{}] * len(chunks)
        if not len(chunks) == len(vectors) == len(infos):
            raise OutputError(
                f"{len(chunks)} chunks, {len(vectors)} vectors and {len(infos)} chunk details do not match"
            )
        dimension = len(vectors[0]) if vectors else self.embedder.dimension
        rows = [
            (doc_id, i, text, _json(info), _pack(vector, dimension))
            for i, (text, vector, info) in enumerate(zip(chunks, vectors, infos, strict=True))
        ]
        document = (doc_id, _json(metadata or {}), dimension, len(rows), time.time())
        with self._connection() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("DELETE FROM documents WHERE doc_id = ?", (doc_id,))
                db.execute("INSERT INTO documents VALUES (?, ?, ?, ?, ?)", document)
                db.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?, ?)", rows)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def get(self, doc_id: str) -> StoredDocument | None:
        """The stored document, or ``None`` if nothing is stored for ``doc_id``."""
        with self._connection() as db:
            head = db.execute(
                "SELECT metadata, dimension, stored_at FROM documents WHERE doc_id = ?", (doc_id,)
            ).fetchone()
            rows = db.execute(
                "SELECT idx, text, info, vector FROM chunks WHERE doc_id = ? ORDER BY idx", (doc_id,)
            ).fetchall()
        if head is None:
            return None
        chunks = [
            StoredChunk(i, text, tuple(_unpack(blob)), json.loads(info)) for i, text, info, blob in rows
        ]
        return StoredDocument(doc_id, json.loads(head[0]), head[1], head[2], chunks)

    def delete(self, doc_id: str) -> bool:
        """Remove a document's output; whether there was any."""
        with self._connection() as db:
            return db.execute("DELETE FROM documents WHERE doc_id = ?", (doc_id,)).rowcount > 0

    def count(self) -> int:
        """How many documents are stored."""
        with self._connection() as db:
            row = db.execute("SELECT COUNT(*) FROM documents").fetchone()
        return int(row[0])

    def search(self, query: str | Sequence[float], limit: int = 10) -> list[SearchHit]:
        """The ``limit`` chunks most similar (cosine) to ``query``, best first.

        A text query is embedded with this store's embedder; a vector is used
        as given. Chunks whose vectors have another dimension are skipped.
        Scans every stored vector (fine for thousands of chunks; an index is a
        later concern).
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise OutputError(f"limit must be a non-negative integer, got {limit!r}")
        vector = list(self.embedder.embed(query) if isinstance(query, str) else query)
        norm = math.sqrt(math.fsum(x * x for x in vector))
        with self._connection() as db:
            rows = db.execute(
                "SELECT c.doc_id, c.idx, c.text, c.info, c.vector FROM chunks c"
                " JOIN documents d ON d.doc_id = c.doc_id WHERE d.dimension = ?",
                (len(vector),),
            ).fetchall()
        scored = [(_cosine(vector, _unpack(blob), norm), row) for (*row, blob) in rows]
        scored.sort(key=lambda pair: pair[0], reverse=True)
        return [
            SearchHit(d, i, text, score, json.loads(info)) for score, (d, i, text, info) in scored[:limit]
        ]

    def close(self) -> None:
        """Close the file. Idempotent; the store is unusable afterwards."""
        with self._lock:
            db, self._db = self._db, None
        if db is not None:
            db.close()

    def __enter__(self) -> OutputStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _json(value: Mapping[str, Any]) -> str:
    try:
        return json.dumps(dict(value), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise OutputError(f"output metadata must be JSON-serializable: {exc}") from None
