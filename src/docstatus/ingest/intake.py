"""Intake: turns uploaded or submitted files into queued documents.

Layout of the uploads folder (documented, relied on by the worker pool):

* ``<doc_id><ext>`` — an upload, stored under the SHA-256 hex digest of its
  content and the lower-cased extension of its (sanitised) client name.
* ``.upload-*.part`` — an upload being received (removed when it finishes,
  fails or is aborted; stale ones can be removed with
  :meth:`Intake.remove_stale_uploads`).
* anything else — files put there by the user and submitted with
  :meth:`Intake.submit_path`, which hashes them in place (no copy); they must
  not change once submitted.

Every document's ``metadata["path"]`` is its file's path relative to the
uploads folder (POSIX separators). The service never opens a file outside the
uploads folder: paths are resolved with symlinks followed and checked first.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import logging
import math
import os
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from ..errors import (
    ContentChangedError,
    DiskFullError,
    DocumentNotFoundError,
    DuplicateDocumentError,
    LinkedFileError,
    PathOutsideUploadsError,
    UnsupportedFormatError,
    UploadClosedError,
    UploadNotFoundError,
    UploadTooLargeError,
)
from ..formats import FORMATS, FormatInfo, FormatRegistry
from ..manager import StatusManager
from ..models import ProcessingStatus, Status
from ..worker.job import ERROR_CODE, can_retry
from .paths import inside_uploads, open_regular, safe_filename, stored_path

__all__ = ["TEMP_PREFIX", "Accepted", "Intake", "UploadWriter"]

log = logging.getLogger(__name__)

#: Prefix of the temporary files of uploads in progress.
TEMP_PREFIX = ".upload-"
_TEMP_SUFFIX = ".part"

_READ_SIZE = 1 << 20
_HEX = frozenset("0123456789abcdef")


# -- results ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Accepted:
    """A file the intake accepted: a new queued document or a duplicate of a known one."""

    doc_id: str
    filename: str
    duplicate: bool
    requeued: bool
    message: str

    @classmethod
    def queued(cls, doc_id: str, filename: str) -> Accepted:
        """A new document, queued."""
        return cls(doc_id, filename, False, False, "Document queued for processing")

    def to_json(self) -> dict[str, Any]:
        """The answer to the upload (``POST /uploads``, ``POST /webhook``): built here only."""
        return {
            "status": "accepted",
            "doc_id": self.doc_id,
            "filename": self.filename,
            "message": self.message,
            "duplicate": self.duplicate,
        }


@dataclass(frozen=True, slots=True)
class _Candidate:
    """A file that passed the checks, ready to become a document."""

    doc_id: str
    filename: str
    info: FormatInfo
    size: int
    source: str


# -- uploads ---------------------------------------------------------------------

#: The errors of a write that found no room (the disk, or the user's quota, is full).
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


@contextlib.contextmanager
def _disk_full_as(filename: str) -> Iterator[None]:
    """Report a write that found no room as :class:`DiskFullError` (a 507), not a bare ``OSError``."""
    try:
        yield
    except OSError as exc:
        if exc.errno in _NO_SPACE:
            raise DiskFullError(filename) from exc
        raise


class UploadWriter:
    """One upload being received. Use from one thread; a context manager that aborts on error.

    Bytes are written to a temporary file inside the uploads folder and hashed
    as they arrive. Past the intake's ``max_bytes``, :meth:`write` removes the
    temporary file and raises :class:`UploadTooLargeError`; on a full disk,
    any step removes it and raises :class:`DiskFullError`.
    """

    def __init__(self, intake: Intake, filename: str) -> None:
        self._intake = intake
        self.filename = safe_filename(filename)
        with _disk_full_as(self.filename):
            fd, temp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=_TEMP_SUFFIX, dir=intake.uploads_dir)
        self._path = Path(temp)
        self._file: IO[bytes] | None = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self._size = 0

    @property
    def size(self) -> int:
        """Bytes received so far."""
        return self._size

    def write(self, chunk: bytes) -> None:
        """Append ``chunk``; ``UploadTooLargeError`` (and the upload aborted) past the limit."""
        handle = self._open_file()
        if self._size + len(chunk) > self._intake.max_bytes:
            self.abort()
            raise UploadTooLargeError(self.filename, self._intake.max_bytes)
        with self._aborting_when_full():
            handle.write(chunk)
        self._hash.update(chunk)
        self._size += len(chunk)

    def finish(self) -> Accepted:
        """Store the upload under its doc_id and queue it (or report the known duplicate).

        Raises :class:`UnsupportedFormatError` for a format the pipeline does
        not accept (the upload is removed). Either way the writer is closed.
        """
        handle = self._open_file()
        try:
            with self._aborting_when_full():
                handle.flush()
                os.fsync(handle.fileno())
                handle.close()
            self._file = None
            doc_id = self._hash.hexdigest()
            candidate = self._intake._check(self._path, self.filename, self._size, doc_id, "upload")
            return self._intake._accept_upload(self._path, candidate)
        finally:
            self.abort()

    def abort(self) -> None:
        """Discard the upload: close and remove the temporary file. Idempotent."""
        handle, self._file = self._file, None
        try:
            if handle is not None:
                # Closing flushes the buffer, which fails again on a full disk: the file goes anyway.
                with contextlib.suppress(OSError):
                    handle.close()
        finally:
            self._path.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _aborting_when_full(self) -> Iterator[None]:
        try:
            with _disk_full_as(self.filename):
                yield
        except DiskFullError:
            self.abort()
            raise

    def _open_file(self) -> IO[bytes]:
        if self._file is None:
            raise UploadClosedError(self.filename)
        return self._file

    def __enter__(self) -> UploadWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self.abort()

    def __del__(self) -> None:
        # An upload dropped without finish()/abort() must not leave its temp file.
        with contextlib.suppress(Exception):
            self.abort()


# -- the intake ------------------------------------------------------------------------


class Intake:
    """Turns files into queued documents. Thread-safe.

    ``on_queued(doc_id)`` is called after a document is queued (new or
    requeued), typically ``WorkerPool.enqueue``; an exception in it is logged,
    never raised (the document is queued in the store either way).
    A single service process per uploads folder and store is assumed.
    """

    def __init__(
        self,
        manager: StatusManager,
        uploads_dir: Path,
        *,
        max_bytes: int,
        on_queued: Callable[[str], None] | None = None,
        formats: FormatRegistry | None = None,
    ) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise ValueError(f"max_bytes must be a positive integer, got {max_bytes!r}")
        Path(uploads_dir).mkdir(parents=True, exist_ok=True)
        self.manager = manager
        self.uploads_dir = Path(uploads_dir).resolve()
        self.max_bytes = max_bytes
        self.on_queued = on_queued
        self.formats = formats or FORMATS
        # Serialises "is this content known? then store and create it", so two
        # uploads of the same content become one document and one duplicate.
        self._lock = threading.Lock()

    def open_upload(self, filename: str) -> UploadWriter:
        """Start receiving an upload named ``filename`` by the client (sanitised)."""
        return UploadWriter(self, filename)

    def submit_path(self, path: str | Path, filename: str | None = None) -> Accepted:
        """Queue a file already inside the uploads folder (the webhook), hashing it in place.

        ``path`` is relative to the uploads folder or absolute; symlinks are
        followed, and a path that ends up outside the uploads folder raises
        :class:`PathOutsideUploadsError` without the file being opened, and a
        file with other hard links raises :class:`LinkedFileError` (a 403).
        :class:`UploadNotFoundError` when there is no such regular file,
        :class:`UploadTooLargeError` past ``max_bytes``,
        :class:`UnsupportedFormatError` for formats the pipeline rejects. The
        file itself is never changed or removed. ``filename`` (default: the
        file's name) is the name shown for the document and picks the format.
        """
        shown = str(path)
        resolved = inside_uploads(self.uploads_dir, path)
        name = safe_filename(filename if filename else Path(shown).name)
        if resolved.name.startswith(TEMP_PREFIX) and resolved.name.endswith(_TEMP_SUFFIX):
            raise UploadNotFoundError(shown)  # an upload still being received
        digest, size = self._hash_file(resolved, shown, name)
        candidate = self._check(resolved, name, size, digest, "path")
        relative = resolved.relative_to(self.uploads_dir).as_posix()
        with self._lock:
            return self._register(candidate, relative, self.manager.get_status(candidate.doc_id))

    def remove_stale_uploads(self, older_than: float = 3600.0) -> int:
        """Remove temporary files of uploads untouched for ``older_than`` seconds; returns how many."""
        cutoff = time.time() - older_than
        removed = 0
        for temp in self.uploads_dir.glob(f"{TEMP_PREFIX}*{_TEMP_SUFFIX}"):
            with contextlib.suppress(OSError):
                if temp.stat().st_mtime < cutoff:
                    temp.unlink()
                    removed += 1
        return removed

    def upload_of(self, status: ProcessingStatus) -> str | None:
        """The file name of the document's stored upload (``<doc_id><ext>``), if it has one now.

        ``None`` for a document submitted by path: that file is the user's.
        """
        name = status.metadata.get("path")
        if not isinstance(name, str) or not _is_upload_name(status.doc_id, name):
            return None
        return name if _older(self.uploads_dir / name, math.inf) else None

    def remove_upload(self, doc_id: str, name: str | None = None) -> str | None:
        """Remove the stored upload of ``doc_id`` if no document has that id (any more).

        Only the intake's own copies (``<doc_id><ext>``, named by their
        content's SHA-256) are removed, never a file submitted by path. The
        status is checked with the intake's lock held, so an upload of the same
        content accepted meanwhile in this process keeps its file. Returns the
        removed file's name, or ``None``. ``name`` is the file's name when known
        (:meth:`upload_of`); else files with the extensions of the formats
        registry (or none) are looked for, and another one is left to :meth:`orphans`.
        """
        if not _is_upload_id(doc_id):
            return None
        guesses = [doc_id, *(doc_id + ext for ext in sorted(self.formats.extensions()))]
        names = [name, *guesses] if name is not None and _is_upload_name(doc_id, name) else guesses
        with self._lock:
            if self.manager.get_status(doc_id) is not None:
                return None
            for name in names:
                with contextlib.suppress(FileNotFoundError):
                    (self.uploads_dir / name).unlink()
                    return name
        return None

    def orphans(self, older_than: float, limit: int) -> list[str]:
        """Up to ``limit`` stored uploads untouched for ``older_than`` seconds whose document is gone.

        The names of the files removed (each checked as :meth:`remove_upload`
        does). A file not yet ``older_than`` seconds old is never removed: a
        just-accepted upload is renamed into place before its status is
        created, possibly by another process sharing the folder.
        """
        cutoff = time.time() - older_than
        removed = []
        with os.scandir(self.uploads_dir) as entries:
            names = [
                e.name for e in itertools.islice(entries, limit) if _is_upload_id(e.name.partition(".")[0])
            ]
        for name in names:
            path = self.uploads_dir / name
            with self._lock:
                if _older(path, cutoff) and self.manager.get_status(name.partition(".")[0]) is None:
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                        removed.append(name)
        return removed

    # -- internals -------------------------------------------------------------

    def _hash_file(self, path: Path, shown: str, name: str) -> tuple[str, int]:
        digest = hashlib.sha256()
        size = 0
        with open_regular(self.uploads_dir, path, shown) as handle:
            info = os.fstat(handle.fileno())
            if info.st_nlink > 1:
                # Inside the folder by path, but the same file may be reachable from anywhere.
                raise LinkedFileError(shown, info.st_nlink)
            if info.st_size > self.max_bytes:
                raise UploadTooLargeError(name, self.max_bytes)
            for block in iter(lambda: handle.read(_READ_SIZE), b""):
                size += len(block)
                if size > self.max_bytes:  # grew while being read
                    raise UploadTooLargeError(name, self.max_bytes)
                digest.update(block)
        return digest.hexdigest(), size

    def _check(self, path: Path, filename: str, size: int, doc_id: str, source: str) -> _Candidate:
        supported = tuple(sorted(self.formats.extensions()))
        if size == 0:
            raise UnsupportedFormatError(filename, "the file is empty", supported)
        info, reason = self.formats.explain(path, filename)
        if info is None:
            raise UnsupportedFormatError(filename, reason, supported)
        return _Candidate(doc_id, filename, info, size, source)

    def _accept_upload(self, temp: Path, candidate: _Candidate) -> Accepted:
        final = self.uploads_dir / f"{candidate.doc_id}{Path(candidate.filename).suffix.lower()}"
        relative = final.name
        with self._lock:
            existing = self.manager.get_status(candidate.doc_id)
            if existing is not None and _has_file(self.uploads_dir, existing) and not _swapped(existing):
                return self._register(candidate, relative, existing)
            placed = not final.exists()
            os.replace(temp, final)
            try:
                return self._register(candidate, relative, existing)
            except BaseException:
                if placed:
                    self._unplace(final, candidate.doc_id)
                raise

    def _unplace(self, final: Path, doc_id: str) -> None:
        """Remove a file just stored for a document that could not be created.

        Kept if the document exists after all (created meanwhile by another
        process): only this error path reads the status a second time.
        """
        with contextlib.suppress(Exception):
            if self.manager.get_status(doc_id) is None:
                final.unlink(missing_ok=True)

    def _register(self, candidate: _Candidate, relative: str, existing: ProcessingStatus | None) -> Accepted:
        """Create the document, or handle the known one (``existing``, as just read). With the lock held.

        The status is read again only when the store says it changed meanwhile:
        another process created the document, or a cleanup removed it.
        """
        for _ in range(3):
            try:
                if existing is None:
                    return self._create(candidate, relative)
                return self._duplicate(existing, relative)
            except (DuplicateDocumentError, DocumentNotFoundError):
                existing = self.manager.get_status(candidate.doc_id)
        raise DuplicateDocumentError(candidate.doc_id)

    def _create(self, candidate: _Candidate, relative: str) -> Accepted:
        metadata = {
            "format": candidate.info.format,
            "format_type": candidate.info.format_type,
            "media_type": candidate.info.media_type,
            "file_size": candidate.size,
            "path": relative,
            "source": candidate.source,
            "attempt": 1,
        }
        self.manager.create_status(candidate.doc_id, candidate.filename, metadata)
        self._notify(candidate.doc_id)
        return Accepted.queued(candidate.doc_id, candidate.filename)

    def _duplicate(self, existing: ProcessingStatus, relative: str) -> Accepted:
        doc_id = existing.doc_id
        if existing.status is not Status.FAILED:
            message = f"Duplicate of an existing document (status: {existing.status.value})"
            return Accepted(doc_id, existing.filename, True, False, message)
        if not can_retry(existing) and not _swapped(existing):
            # The same content, so the same failure: another attempt would only repeat it.
            message = f"Duplicate of a document that cannot be processed: {existing.error}"
            return Accepted(doc_id, existing.filename, True, False, message)
        self.manager.requeue(doc_id)
        if not _has_file(self.uploads_dir, existing):
            # The earlier copy is gone; this attempt reads the one just received.
            self.manager.update_status(doc_id, Status.QUEUED, metadata={"path": relative})
        self._notify(doc_id)
        message = "Duplicate of a failed document; queued again for processing"
        return Accepted(doc_id, existing.filename, True, True, message)

    def _notify(self, doc_id: str) -> None:
        if self.on_queued is None:
            return
        try:
            self.on_queued(doc_id)
        except Exception:
            log.exception("on_queued callback failed for %s; it stays queued in the store", doc_id)


def _is_upload_id(doc_id: str) -> bool:
    """Whether ``doc_id`` can name an upload: a SHA-256 hex digest."""
    return len(doc_id) == 64 and all(c in _HEX for c in doc_id)


def _is_upload_name(doc_id: str, name: str) -> bool:
    """Whether ``name`` is what the intake names an upload of ``doc_id``: ``<doc_id><ext>``, no folder."""
    return name.partition(".")[0] == doc_id and "/" not in name and "\\" not in name


def _older(path: Path, cutoff: float) -> bool:
    """Whether ``path`` is a regular file (not a symlink) last modified before ``cutoff``."""
    try:
        info = path.lstat()
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_mtime < cutoff


def _swapped(status: ProcessingStatus) -> bool:
    # Its file was replaced after intake: content that hashes to its doc_id again deserves an attempt.
    return status.status is Status.FAILED and status.metadata.get(ERROR_CODE) == ContentChangedError.code


def _has_file(uploads: Path, status: ProcessingStatus) -> bool:
    try:
        stored_path(uploads, status.metadata)
    except (UploadNotFoundError, PathOutsideUploadsError):
        return False
    return True
