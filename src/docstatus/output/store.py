"""Where processed documents end up: pages, chunks and their vectors in an SQLite file.

One file (``<data_dir>/output.db`` in the service, beside the status store)
holds every document's chunks, each with its text, optional details
(heading, offsets, page) and its vector stored compactly as 32-bit floats
(``array('f').tobytes()``), and its pages, each with a thumbnail (JPEG or PNG
bytes) and a visual vector. Saving a document replaces whatever was stored
for it before, in one transaction, so a reprocessed document never mixes two
attempts.

The file's schema version is SQLite's ``user_version``: 2 now. A version-1
file (chunks only, written before pages existed) is migrated in place when
opened; a file from a newer docstatus is refused with an
:class:`~docstatus.errors.OutputError` and left untouched. Connections,
retries, transactions and migrations are :mod:`docstatus.stores.sqlitedb`'s,
as for the SQLite status store: every thread has its own connection, and
writers of several processes wait for each other.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from ..errors import OutputError
from ..stores.sqlitedb import Connection, Database
from .embedding import Embedder, HashingEmbedder

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "OutputStore",
    "PageRecord",
    "SearchHit",
    "StoredChunk",
    "StoredDocument",
    "StoredPage",
]

T = TypeVar("T")

# Version 1: documents and chunks. The first files were written without a
# version (user_version 0) but with these tables: IF NOT EXISTS lets this
# migration pass over them, so they go on to version 2 like a new file.
_SCHEMA_V1 = """
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

# Version 2: pages with thumbnails and visual vectors.
_MIGRATE_V2 = """
ALTER TABLE documents ADD COLUMN num_pages INTEGER NOT NULL DEFAULT 0;
ALTER TABLE documents ADD COLUMN visual_dimension INTEGER NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS pages (
    doc_id     TEXT NOT NULL REFERENCES documents(doc_id) ON DELETE CASCADE,
    number     INTEGER NOT NULL,
    width      REAL NOT NULL,
    height     REAL NOT NULL,
    info       TEXT NOT NULL,
    media_type TEXT NOT NULL,
    thumbnail  BLOB NOT NULL,
    vector     BLOB NOT NULL,
    PRIMARY KEY (doc_id, number)
);
"""

#: Schema migrations: ``MIGRATIONS[v]`` takes a file from version ``v`` to
#: ``v + 1``. Append only; never edit a released one.
MIGRATIONS: tuple[str, ...] = (_SCHEMA_V1, _MIGRATE_V2)

#: The schema version this module writes (SQLite ``user_version``).
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True, slots=True)
class StoredChunk:
    """One stored chunk: its position, text, details and vector."""

    index: int
    text: str
    vector: tuple[float, ...]
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PageRecord:
    """One page to store: its number (from 1), size in its own units, thumbnail and visual vector."""

    number: int
    width: float
    height: float
    thumbnail: bytes
    media_type: str
    vector: Sequence[float]
    info: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StoredPage:
    """A stored page (its thumbnail is read separately with :meth:`OutputStore.thumbnail`)."""

    number: int
    width: float
    height: float
    media_type: str
    thumbnail_bytes: int
    vector: tuple[float, ...]
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StoredDocument:
    """A stored document: its metadata, chunks and pages in order."""

    doc_id: str
    metadata: dict[str, Any]
    dimension: int
    stored_at: float
    chunks: list[StoredChunk]
    pages: list[StoredPage] = field(default_factory=list)
    visual_dimension: int = 0


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
    a 256-dimension :class:`~docstatus.output.embedding.HashingEmbedder`,
    the text processor's default).
    """

    def __init__(self, path: str | Path, *, embedder: Embedder | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.embedder: Embedder = embedder or HashingEmbedder()
        self._db = Database(self.path, MIGRATIONS, newer=self._newer_schema)
        # Open (and migrate) now: a file that cannot be used is reported by the constructor.
        self._read(lambda db: None)

    def _newer_schema(self, found: int, supported: int) -> OutputError:
        return OutputError(
            f"the output store {self.path} has schema version {found}, but this docstatus supports up to "
            f"{supported}: upgrade docstatus to use it"
        )

    def _read(self, op: Callable[[Connection], T], *, snapshot: bool = False) -> T:
        try:
            return self._db.read(op, snapshot=snapshot)
        except sqlite3.ProgrammingError:
            self._refuse_if_closed()
            raise

    def _write(self, op: Callable[[Connection], T]) -> T:
        try:
            return self._db.write(op)
        except sqlite3.ProgrammingError:
            self._refuse_if_closed()
            raise

    def _refuse_if_closed(self) -> None:
        if self._db.closed:
            raise OutputError(f"the output store {self.path} is closed") from None

    def save(
        self,
        doc_id: str,
        chunks: Sequence[str],
        vectors: Sequence[Sequence[float]],
        metadata: Mapping[str, Any] | None = None,
        *,
        chunk_info: Sequence[Mapping[str, Any]] | None = None,
        pages: Sequence[PageRecord] = (),
    ) -> None:
        """Store ``doc_id``'s chunks and pages with their vectors, replacing earlier ones.

        ``chunks``, ``vectors`` and ``chunk_info`` (if given) must have the same
        length and every vector the same dimension; page numbers must be
        distinct and every page vector have the same dimension; otherwise
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
        visual_dimension, page_rows = _page_rows(doc_id, pages)
        document = (
            doc_id,
            _json(metadata or {}),
            dimension,
            len(rows),
            time.time(),
            len(page_rows),
            visual_dimension,
        )

        def replace(db: Connection) -> None:
            db.execute("DELETE FROM documents WHERE doc_id = ?", (doc_id,))
            db.execute(
                "INSERT INTO documents (doc_id, metadata, dimension, num_chunks, stored_at, num_pages,"
                " visual_dimension) VALUES (?, ?, ?, ?, ?, ?, ?)",
                document,
            )
            db.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?, ?)", rows)
            db.executemany(
                "INSERT INTO pages (doc_id, number, width, height, info, media_type, thumbnail, vector)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                page_rows,
            )

        self._write(replace)

    def get(self, doc_id: str, *, pages: bool = True) -> StoredDocument | None:
        """The stored document (with its pages unless ``pages=False``), or ``None`` if nothing is stored."""

        def fetch(db: Connection) -> tuple[Any, list[Any], list[Any]]:
            head = db.execute(
                "SELECT metadata, dimension, stored_at, visual_dimension FROM documents WHERE doc_id = ?",
                (doc_id,),
            ).fetchone()
            rows = db.execute(
                "SELECT idx, text, info, vector FROM chunks WHERE doc_id = ? ORDER BY idx", (doc_id,)
            ).fetchall()
            page_rows = (
                db.execute(
                    "SELECT number, width, height, media_type, length(thumbnail), vector, info FROM pages"
                    " WHERE doc_id = ? ORDER BY number",
                    (doc_id,),
                ).fetchall()
                if pages
                else []
            )
            return head, rows, page_rows

        # One snapshot: a save of the same document meanwhile is seen whole or not at all.
        head, rows, page_rows = self._read(fetch, snapshot=True)
        if head is None:
            return None
        chunks = [
            StoredChunk(i, text, tuple(_unpack(blob)), json.loads(info)) for i, text, info, blob in rows
        ]
        stored_pages = [
            StoredPage(n, w, h, media, size, tuple(_unpack(blob)), json.loads(info))
            for n, w, h, media, size, blob, info in page_rows
        ]
        return StoredDocument(doc_id, json.loads(head[0]), head[1], head[2], chunks, stored_pages, head[3])

    def thumbnail(self, doc_id: str, page: int) -> tuple[bytes, str] | None:
        """The thumbnail of page ``page`` (from 1) of ``doc_id`` and its media type, or ``None``."""
        row = self._read(
            lambda db: db.execute(
                "SELECT thumbnail, media_type FROM pages WHERE doc_id = ? AND number = ?", (doc_id, page)
            ).fetchone()
        )
        return None if row is None else (bytes(row[0]), str(row[1]))

    def has(self, doc_id: str) -> bool:
        """Whether output is stored for ``doc_id``."""
        row = self._read(
            lambda db: db.execute("SELECT 1 FROM documents WHERE doc_id = ?", (doc_id,)).fetchone()
        )
        return row is not None

    def delete(self, doc_id: str) -> bool:
        """Remove a document's output; whether there was any."""
        deleted: int = self._write(
            lambda db: db.execute("DELETE FROM documents WHERE doc_id = ?", (doc_id,)).rowcount
        )
        return deleted > 0

    def doc_ids(self, after: str = "", limit: int = 1000) -> list[str]:
        """Up to ``limit`` stored doc_ids greater than ``after``, in order: pages through every document."""
        rows = self._read(
            lambda db: db.execute(
                "SELECT doc_id FROM documents WHERE doc_id > ? ORDER BY doc_id LIMIT ?", (after, limit)
            ).fetchall()
        )
        return [str(doc_id) for (doc_id,) in rows]

    def count(self) -> int:
        """How many documents are stored."""
        row = self._read(lambda db: db.execute("SELECT COUNT(*) FROM documents").fetchone())
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
        rows = self._read(
            lambda db: db.execute(
                "SELECT c.doc_id, c.idx, c.text, c.info, c.vector FROM chunks c"
                " JOIN documents d ON d.doc_id = c.doc_id WHERE d.dimension = ?",
                (len(vector),),
            ).fetchall()
        )
        scored = [(_cosine(vector, _unpack(blob), norm), row) for (*row, blob) in rows]
        scored.sort(key=lambda pair: pair[0], reverse=True)
        return [
            SearchHit(d, i, text, score, json.loads(info)) for score, (d, i, text, info) in scored[:limit]
        ]

    def close(self) -> None:
        """Close the file. Idempotent; the store is unusable afterwards."""
        self._db.close()

    def __enter__(self) -> OutputStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _page_rows(doc_id: str, pages: Sequence[PageRecord]) -> tuple[int, list[tuple[Any, ...]]]:
    dimension = len(pages[0].vector) if pages else 0
    numbers = [p.number for p in pages]
    if len(set(numbers)) != len(numbers) or any(n < 1 for n in numbers):
        raise OutputError("page numbers must be distinct and start from 1")
    rows = [
        (
            doc_id,
            p.number,
            float(p.width),
            float(p.height),
            _json(p.info),
            p.media_type,
            bytes(p.thumbnail),
            _pack(p.vector, dimension),
        )
        for p in pages
    ]
    return dimension, rows


def _json(value: Mapping[str, Any]) -> str:
    try:
        return json.dumps(dict(value), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise OutputError(f"output metadata must be JSON-serializable: {exc}") from None
