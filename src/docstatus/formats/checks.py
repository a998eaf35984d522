"""Content checks: whether a file's first bytes fit the format its extension names.

A check takes the first :data:`SNIFF_BYTES` bytes of a file and returns why
the content does not fit (``"the content is PDF, not text"``), or ``None``
when it does. The signatures here also let the registry recognise a few
formats by content alone, and :func:`text_content_check` recognises text
that no signature names (a ``README`` without an extension).
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import MissingDependencyError

__all__ = [
    "JPEG_SIGNATURE",
    "PDF_SIGNATURE",
    "PNG_SIGNATURE",
    "SNIFF_BYTES",
    "ZIP_SIGNATURE",
    "ContentCheck",
    "content_name",
    "image_check",
    "magic",
    "text_check",
    "text_content_check",
]

#: How many leading bytes a content check sees.
SNIFF_BYTES = 8192

#: Looks at the first bytes of a file; returns why the content does not fit
#: the format, or ``None`` when it does.
ContentCheck = Callable[[bytes], str | None]

PDF_SIGNATURE = b"%PDF-"
ZIP_SIGNATURE = b"PK\x03\x04"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"

# Byte-order marks of text encodings whose text contains NUL bytes legitimately.
_WIDE_BOMS = (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff", b"\xff\xfe", b"\xfe\xff")

# Signatures of common binary formats, to name them when one arrives as ".txt".
_BINARY_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (PDF_SIGNATURE, "PDF"),
    (ZIP_SIGNATURE, "ZIP (or DOCX/PPTX/XLSX)"),
    (PNG_SIGNATURE, "PNG"),
    (JPEG_SIGNATURE, "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"\x7fELF", "ELF executable"),
    (b"\x1f\x8b", "gzip"),
    (b"\xd0\xcf\x11\xe0", "OLE (legacy Office)"),
)

# APP0/APP1 segments name what they hold; any other first marker of a JPEG stream is a table or frame.
_JPEG_APP_IDS = {0xE0: (b"JFIF\x00", b"JFXX\x00"), 0xE1: (b"Exif\x00", b"http://ns.adobe.com/")}


def text_check(head: bytes) -> str | None:
    """Content check for text: rejects NUL bytes (unless a UTF-16/32 BOM says why) and known binaries."""
    if head.startswith(_WIDE_BOMS):
        return None
    actual = content_name(head)
    if actual:
        return f"the content is {actual}, not text"
    if b"\x00" in head:
        return "the content is binary (it contains NUL bytes), not text"
    return None


def text_content_check(head: bytes) -> str | None:
    """Content check for text known by its content alone: :func:`text_check`, then a charset detector.

    A file with no extension has no format to agree with, so the content
    must prove it is text: besides passing :func:`text_check`, it must
    decode, in some encoding, to characters that read as text to
    ``charset-normalizer`` (binary data without NUL bytes or a known
    signature is refused here). Needs the ``charset-normalizer`` package
    (``server`` and ``pipeline`` extras): :class:`MissingDependencyError`
    without it.
    """
    reason = text_check(head)
    if reason:
        return reason
    try:
        import charset_normalizer
    except ImportError:
        raise MissingDependencyError("charset-normalizer", "server") from None
    if charset_normalizer.from_bytes(head).best() is None:
        return "the content is binary (no text encoding reads it), not text"
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


def _is_jpeg(head: bytes) -> bool:
    """A JPEG start: SOI, then a well-formed first segment (four bytes of signature prove little)."""
    if len(head) < 6 or not head.startswith(JPEG_SIGNATURE):
        return False
    marker, length = head[3], int.from_bytes(head[4:6], "big")
    if marker in _JPEG_APP_IDS:
        return length >= 8 and head[6:].startswith(_JPEG_APP_IDS[marker])
    return (0xC0 <= marker <= 0xFE) and marker not in (0xD8, 0xD9) and length >= 2


def image_check(head: bytes) -> str | None:
    """Content check for images: a PNG start (signature, then its IHDR chunk) or a well-formed JPEG start."""
    if (head.startswith(PNG_SIGNATURE) and head[12:16] == b"IHDR") or _is_jpeg(head):
        return None
    actual = content_name(head)
    return (
        f"the content is {actual}, not a PNG or JPEG image"
        if actual
        else "the content is not a PNG or JPEG image"
    )
