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
    "content_name",
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
    signatures: tuple[bytes, ...] = ()


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


def content_name(head: bytes) -> str | None:
    """What a known binary signature at the start of ``head`` says the content is (``None``: unknown)."""
    for signature, name in _BINARY_SIGNATURES:
        if head.startswith(signature):
            return name
    return None


def magic(*signatures: bytes, name: str = "", within: int = 0) -> ContentCheck:
    """A content check that accepts files starting with one of ``signatures``.

    ``within`` > 0 also accepts a signature found in the first ``within``
    bytes (PDF readers accept junk before ``%PDF-``). ``name`` is the
    format's name in the rejection, which also says what the content is
    when it has a known signature (``"the content is ZIP ..., not PDF"``).
    """

    def check(head: bytes) -> str | None:
        if head.startswith(signatures) or (within and any(s in head[:within] for s in signatures)):
            return None
        actual = content_name(head)
        if actual and name:
            return f"the content is {actual}, not {name}"
        if name:
            return f"the content is not {name} (the file does not start like one)"
        return "the content does not match the file's extension"

    return check


class FormatRegistry:
    """Formats by extension. Thread-safe; later registrations of an extension replace earlier ones."""

    def __init__(self) -> None:
        self._by_ext: dict[str, _Format] = {}
        self._sniffable: list[_Format] = []
        self._lock = threading.Lock()

    def register(
        self,
        format: str,
        extensions: Iterable[str],
        format_type: FormatType,
        media_type: str,
        *,
        check: ContentCheck | None = None,
        signatures: Iterable[bytes] = (),
    ) -> FormatInfo:
        """Accept files with any of ``extensions`` (``".pdf"``; case-insensitive) as ``format``.

        ``signatures`` (leading bytes that only this format has) let
        :meth:`detect` recognise the format by content when a file's
        extension is missing or unknown.
        """
        exts = tuple(_normal_ext(e) for e in extensions)
        if not format or not exts:
            raise ValueError("a format needs a name and at least one extension")
        if format_type not in ("text", "visual"):
            raise ValueError(f"format_type must be 'text' or 'visual', not {format_type!r}")
        entry = _Format(FormatInfo(format, format_type, media_type), exts, check, tuple(signatures))
        with self._lock:
            for ext in exts:
                self._by_ext[ext] = entry
            if entry.signatures:
                self._sniffable = [f for f in self._sniffable if f.info.format != format] + [entry]
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
        """Like :meth:`detect`, plus why a file was rejected (``""`` when accepted).

        A known extension picks the format and its content check must pass;
        without a known extension the content's signature may still name a
        format (a PDF saved as ``report`` or ``report.bin``).
        """
        found = self.lookup(filename)
        if found is None:
            return self._sniff(path, filename)
        info, check = found
        if check is None:
            return info, ""
        reason = check(_head(path))
        return (None, reason) if reason else (info, "")

    def _sniff(self, path: Path, filename: str) -> tuple[FormatInfo | None, str]:
        head = _head(path)
        with self._lock:
            candidates = list(self._sniffable)
        for entry in candidates:
            if head.startswith(entry.signatures):
                return entry.info, ""
        suffix = Path(filename).suffix
        return None, f"extension {suffix!r} is not supported" if suffix else "the file has no extension"


def _head(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(SNIFF_BYTES)


def _normal_ext(ext: str) -> str:
    ext = ext.strip().lower()
    if not ext.startswith("."):
        ext = "." + ext
    if len(ext) < 2 or "/" in ext or "\\" in ext:
        raise ValueError(f"invalid extension {ext!r}")
    return ext


#: The formats the service accepts. Issue 5's formats register here too.
FORMATS = FormatRegistry()

_PDF = (b"%PDF-",)
_ZIP = (b"PK\x03\x04",)
_IMAGES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")

FORMATS.register("txt", (".txt", ".text"), "text", "text/plain", check=text_check)
FORMATS.register("md", (".md", ".markdown"), "text", "text/markdown", check=text_check)
FORMATS.register("html", (".html", ".htm", ".xhtml"), "text", "text/html", check=text_check)
FORMATS.register(
    "pdf",
    (".pdf",),
    "visual",
    "application/pdf",
    check=magic(*_PDF, name="PDF", within=1024),
    signatures=_PDF,
)
FORMATS.register(
    "docx",
    (".docx",),
    "text",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    check=magic(*_ZIP, name="a Word document (DOCX is a ZIP package)"),
)
FORMATS.register(
    "pptx",
    (".pptx",),
    "visual",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    check=magic(*_ZIP, name="a PowerPoint presentation (PPTX is a ZIP package)"),
)
# APP0/APP1 segments name what they hold; any other first marker of a JPEG stream is a table or frame.
_JPEG_APP_IDS = {0xE0: (b"JFIF\x00", b"JFXX\x00"), 0xE1: (b"Exif\x00", b"http://ns.adobe.com/")}


def _is_jpeg(head: bytes) -> bool:
    """A JPEG start: SOI, then a well-formed first segment (four bytes of signature prove little)."""
    if len(head) < 6 or not head.startswith(b"\xff\xd8\xff"):
        return False
    marker, length = head[3], int.from_bytes(head[4:6], "big")
    if marker in _JPEG_APP_IDS:
        return length >= 8 and head[6:].startswith(_JPEG_APP_IDS[marker])
    return (0xC0 <= marker <= 0xFE) and marker not in (0xD8, 0xD9) and length >= 2


def image_check(head: bytes) -> str | None:
    """Content check for images: a PNG start (signature, then its IHDR chunk) or a well-formed JPEG start."""
    if (head.startswith(_IMAGES[0]) and head[12:16] == b"IHDR") or _is_jpeg(head):
        return None
    actual = content_name(head)
    return (
        f"the content is {actual}, not a PNG or JPEG image"
        if actual
        else "the content is not a PNG or JPEG image"
    )


# Either image format is accepted for either extension: the decoder goes by content.
FORMATS.register("png", (".png",), "visual", "image/png", check=image_check, signatures=_IMAGES[:1])
FORMATS.register(
    "jpeg", (".jpg", ".jpeg", ".jpe"), "visual", "image/jpeg", check=image_check, signatures=_IMAGES[1:]
)


def register_format(
    format: str,
    extensions: Iterable[str],
    format_type: FormatType,
    media_type: str,
    *,
    check: ContentCheck | None = None,
    signatures: Iterable[bytes] = (),
) -> FormatInfo:
    """Register a format in the default registry (:data:`FORMATS`)."""
    return FORMATS.register(format, extensions, format_type, media_type, check=check, signatures=signatures)


def detect_format(path: Path, filename: str) -> FormatInfo | None:
    """The format of the file at ``path`` whose (client) name is ``filename``; ``None`` = unsupported.

    The extension of ``filename`` picks the format; the format's content check
    then looks at the first :data:`SNIFF_BYTES` bytes (binary content named
    ``.txt`` is rejected, a ZIP named ``.pdf`` too). A file without a known
    extension is recognised by its content's signature (PDF, PNG, JPEG).
    Reads the file; ``OSError`` if it cannot.
    """
    return FORMATS.detect(path, filename)


def supported_extensions() -> frozenset[str]:
    """The extensions of the default registry now (including formats registered at run time)."""
    return FORMATS.extensions()


#: The extensions of the built-in formats (for messages and docs);
#: :func:`supported_extensions` also sees formats registered later.
SUPPORTED_EXTENSIONS: frozenset[str] = FORMATS.extensions()
