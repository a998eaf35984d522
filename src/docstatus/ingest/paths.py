"""Paths in the uploads folder made safe: client file names, the inside-uploads check, a no-follow open.

The service never opens a file outside its uploads folder: a path is
resolved with symlinks followed and checked to be inside first
(:func:`inside_uploads`, :func:`stored_path`), then opened one component at a
time without following a symlink (:func:`open_regular`), so a folder or file
swapped for a symlink between the check and the open is refused.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import unicodedata
from pathlib import Path
from typing import IO, Any

from ..errors import PathOutsideUploadsError, UploadNotFoundError

__all__ = ["MAX_NAME_BYTES", "inside_uploads", "open_regular", "safe_filename", "stored_path"]

#: Longest sanitised file name, in UTF-8 bytes (file systems allow 255).
MAX_NAME_BYTES = 200
_MAX_SUFFIX = 16
_FALLBACK_NAME = "upload"
_DRIVE = re.compile(r"^[A-Za-z]:")


# -- file names ------------------------------------------------------------------


def _printable(name: str) -> str:
    # Control, format (e.g. right-to-left override) and line/paragraph separators
    # can disguise a name in logs and dashboards.
    return "".join(c for c in name if unicodedata.category(c) not in ("Cc", "Cf", "Zl", "Zp", "Cs"))


def _truncate(name: str, limit: int) -> str:
    if len(name.encode()) <= limit:
        return name
    stem, dot, suffix = name.rpartition(".")
    if not dot or not stem or len(suffix) > _MAX_SUFFIX:
        stem, suffix = name, ""
    tail = f".{suffix}" if suffix else ""
    room = limit - len(tail.encode())
    return stem.encode()[:room].decode(errors="ignore").rstrip() + tail


def safe_filename(name: str) -> str:
    """A file name safe to show and store, from a client's name.

    Keeps only the last path component (``/`` and ``\\`` both separate;
    Windows drive letters are dropped), removes control and invisible
    formatting characters, trims spaces and trailing dots, and limits the
    name to :data:`MAX_NAME_BYTES` UTF-8 bytes keeping its extension. Never
    returns ``""``, ``"."`` or ``".."`` (``"upload"`` instead).
    """
    if not isinstance(name, str):
        raise TypeError(f"filename must be a string, not {type(name).__name__}")
    cleaned = _printable(unicodedata.normalize("NFC", name)).replace("\\", "/")
    cleaned = _DRIVE.sub("", cleaned.rsplit("/", 1)[-1])
    cleaned = cleaned.strip().rstrip(". ")
    cleaned = _truncate(cleaned, MAX_NAME_BYTES)
    if not cleaned.strip("."):
        return _FALLBACK_NAME
    return cleaned


# -- paths inside the uploads folder --------------------------------------------------


def inside_uploads(uploads: Path, path: str | Path) -> Path:
    """``path`` (relative to ``uploads`` or absolute) resolved, if it is an existing file inside.

    ``uploads`` must be resolved already. Raises :class:`PathOutsideUploadsError`
    for a path that resolves outside (or is not even lexically inside when it
    does not exist, so nobody can probe the rest of the disk) and
    :class:`UploadNotFoundError` for one that does not exist.
    """
    shown = str(path)
    try:
        candidate = uploads / Path(path)
    except (TypeError, ValueError):
        raise UploadNotFoundError(shown) from None
    if "\x00" in shown or not shown.strip():
        raise UploadNotFoundError(shown)
    try:
        resolved = candidate.resolve(strict=True)
    except (OSError, RuntimeError):
        # Missing (or a symlink loop): say "outside" for anything that is not
        # even lexically inside, so nobody can probe the rest of the disk.
        if not Path(os.path.normpath(candidate)).is_relative_to(uploads):
            raise PathOutsideUploadsError(shown) from None
        raise UploadNotFoundError(shown) from None
    if not resolved.is_relative_to(uploads) or resolved == uploads:
        raise PathOutsideUploadsError(shown)
    return resolved


def stored_path(uploads_dir: Path, metadata: dict[str, Any]) -> Path:
    """The file of a document whose ``metadata["path"]`` names it, checked to be inside uploads.

    Raises :class:`UploadNotFoundError` when the metadata names no file or the
    file is gone, :class:`PathOutsideUploadsError` when it resolves outside.
    """
    relative = metadata.get("path")
    if not isinstance(relative, str) or not relative:
        raise UploadNotFoundError("<no path in the document's metadata>")
    if Path(relative).is_absolute():
        raise PathOutsideUploadsError(relative)
    resolved = inside_uploads(uploads_dir.resolve(), relative)
    if not resolved.is_file():
        raise UploadNotFoundError(relative)
    return resolved


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


def open_regular(uploads: Path, path: Path, shown: str) -> IO[bytes]:
    """Open the checked ``path`` (resolved, inside ``uploads``) for reading, if it still is that.

    Each component is opened relative to the folder before it, never following a
    symlink: a folder or the file swapped for a symlink after the check is refused
    instead of followed out of the uploads folder (O_NOFOLLOW alone only guards the
    last component). O_NONBLOCK: a FIFO is refused instead of waited on.
    ``shown`` is the path as the caller named it, for the errors:
    :class:`PathOutsideUploadsError` for a symlink met on the way,
    :class:`UploadNotFoundError` when it is gone or not a regular file.
    """
    *folders, name = path.relative_to(uploads).parts
    fd = os.open(uploads, os.O_RDONLY | _DIRECTORY)
    try:
        for folder in folders:
            fd, parent = os.open(folder, os.O_RDONLY | _DIRECTORY | _NOFOLLOW, dir_fd=fd), fd
            os.close(parent)
        fd, parent = os.open(name, os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0), dir_fd=fd), fd
        os.close(parent)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # a symlink where the check saw none
            raise PathOutsideUploadsError(shown) from None
        raise UploadNotFoundError(shown) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UploadNotFoundError(shown)
    return os.fdopen(fd, "rb")
