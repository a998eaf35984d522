"""Which files the pipeline accepts: a registry of formats, by extension plus a content check.

A format is registered once with its extensions, its kind (``"text"``: read
as characters; ``"visual"``: rendered as pages) and an optional content check
that looks at the first bytes of the file. Adding a format is one call::

    register_format("pdf", (".pdf",), "visual", "application/pdf", check=magic(b"%PDF-"))

A format also needs a processor (see :mod:`docstatus.pipeline.processor`) for
documents of it to be processed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "FORMATS",
    "SNIFF_BYTES",
    "SUPPORTED_EXTENSIONS",
    "ContentCheck",
    "FormatInfo",
    "FormatRegistry",
    "FormatType",
    "detect_format",
    "magic",
    "register_format",
    "supported_extensions",
    "text_check",
]

FormatType = Literal["text", "visual"]

#: How many leading bytes a content check sees.
SNIFF_BYTES = 8192

#: Looks at the first bytes of a file; returns why the content does not fit
#: the format, or ``None`` when it does.
ContentCheck = Callable[[bytes], str | None]

# Byte-order marks of text encodings whose text contains NUL bytes legitimately.
_WIDE_BOMS = (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff", b"\xff\xfe", b"\xfe\xff")

# Signatures of common binary formats, to name them when one arrives as ".txt".
_BINARY_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", "PDF"),
    (b"PK\x03\x04", "ZIP (or DOCX/PPTX/XLSX)"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"\x7fELF", "ELF executable"),
    (b"\x1f\x8b", "gzip"),
    (b"\xd0\xcf\x11\xe0", "OLE (legacy Office)"),
)


@dataclass(frozen=True, slots=True)
class FormatInfo:
    """What :func:`detect_format` found: the format name, its kind and its media type."""

    format: str
    format_type: FormatType
    media_type: str


@dataclass(frozen=True, slots=True)
class _Format:
    info: FormatInfo
    extensions: tuple[str, ...]
    check: ContentCheck | None


def text_check(head: bytes) -> str | None:
    """Content check for text: rejects NUL bytes (unless a UTF-16/32 BOM says why) and known binaries."""
    if head.startswith(_WIDE_BOMS):
        return None
    for signature, name in _BINARY_SIGNATURES:
        if head.startswith(signature):
            return f"the content is {name}, not text"
    if b"\x00" in head:
        return "the content is binary (it contains NUL bytes), not text"
    return None


def magic(*signatures: bytes) -> ContentCheck:
    """A content check that accepts files starting with one of ``signatures``."""

    def check(head: bytes) -> str | None:
        if head.startswith(signatures):
            return None
        return "the content does not match the file's extension"

    return check


class FormatRegistry:
    """Formats by extension. Thread-safe; later registrations of an extension replace earlier ones."""

    def __init__(self) -> None:
        self._by_ext: dict[str, _Format] = {}
        self._lock = threading.Lock()

    def register(
        self,
        format: str,
        extensions: Iterable[str],
        format_type: FormatType,
        media_type: str,
        *,
        check: ContentCheck | None = None,
    ) -> FormatInfo:
        """Accept files with any of ``extensions`` (``".pdf"``; case-insensitive) as ``format``."""
        exts = tuple(_normal_ext(e) for e in extensions)
        if not format or not exts:
            raise ValueError("a format needs a name and at least one extension")
        if format_type not in ("text", "visual"):
            raise ValueError(f"format_type must be 'text' or 'visual', not {format_type!r}")
        entry = _Format(FormatInfo(format, format_type, media_type), exts, check)
        with self._lock:
            for ext in exts:
                self._by_ext[ext] = entry
        return entry.info

    def extensions(self) -> frozenset[str]:
        """Every extension currently accepted (lower case, with the dot)."""
        with self._lock:
            return frozenset(self._by_ext)

    def lookup(self, filename: str) -> tuple[FormatInfo, ContentCheck | None] | None:
        """The format a file name's extension names, with its content check."""
        entry = self._by_ext.get(Path(filename).suffix.lower())
        return None if entry is None else (entry.info, entry.check)

    def detect(self, path: Path, filename: str) -> FormatInfo | None:
        """The format of the file at ``path`` named ``filename``, or ``None`` if unsupported."""
        return self.explain(path, filename)[0]

    def explain(self, path: Path, filename: str) -> tuple[FormatInfo | None, str]:
        """Like :meth:`detect`, plus why a file was rejected (``""`` when accepted)."""
        found = self.lookup(filename)
        if found is None:
            suffix = Path(filename).suffix
            return None, f"extension {suffix!r} is not supported" if suffix else "the file has no extension"
        info, check = found
        if check is None:
            return info, ""
        with path.open("rb") as handle:
            head = handle.read(SNIFF_BYTES)
        reason = check(head)
        return (None, reason) if reason else (info, "")


def _normal_ext(ext: str) -> str:
    ext = ext.strip().lower()
    if not ext.startswith("."):
        ext = "." + ext
    if len(ext) < 2 or "/" in ext or "\\" in ext:
        raise ValueError(f"invalid extension {ext!r}")
    return ext


#: The formats the service accepts. Issue 5's formats register here too.
FORMATS = FormatRegistry()

FORMATS.register("txt", (".txt", ".text"), "text", "text/plain", check=text_check)
FORMATS.register("md", (".md", ".markdown"), "text", "text/markdown", check=text_check)


def register_format(
    format: str,
    extensions: Iterable[str],
    format_type: FormatType,
    media_type: str,
    *,
    check: ContentCheck | None = None,
) -> FormatInfo:
    """Register a format in the default registry (:data:`FORMATS`)."""
    return FORMATS.register(format, extensions, format_type, media_type, check=check)


def detect_format(path: Path, filename: str) -> FormatInfo | None:
    """The format of the file at ``path`` whose (client) name is ``filename``; ``None`` = unsupported.

    The extension of ``filename`` picks the format; the format's content check
    then looks at the first :data:`SNIFF_BYTES` bytes (binary content named
    ``.txt`` is rejected). Reads the file; ``OSError`` if it cannot.
    """
    return FORMATS.detect(path, filename)


def supported_extensions() -> frozenset[str]:
    """The extensions of the default registry now (including formats registered at run time)."""
    return FORMATS.extensions()


#: The extensions of the built-in formats (for messages and docs);
#: :func:`supported_extensions` also sees formats registered later.
SUPPORTED_EXTENSIONS: frozenset[str] = FORMATS.extensions()
