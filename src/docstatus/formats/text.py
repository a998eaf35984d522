"""The text processor (``.txt``, ``.md``): decode, chunk by structure, embed, store.

* **Decode**: a byte-order mark decides (UTF-8, UTF-16, UTF-32); without one,
  UTF-8 when the bytes are (nearly) valid UTF-8, otherwise Windows-1252 with
  Latin-1 for its five undefined bytes. Bytes that cannot be decoded become
  U+FFFD and are counted in the document's metadata (``undecodable_bytes``),
  never an error.
* **Chunk** by structure (:func:`~docstatus.formats.chunking.chunk_text`):
  Markdown headings start a new chunk, paragraphs are packed up to ``max_chars``.
* **Embed** and **store**: the stages every format shares
  (:class:`~docstatus.formats.base.TextDocumentProcessor`), so the text
  limit (``Limits.max_text_chars``) applies here as to every format.
"""

from __future__ import annotations

import codecs
import threading
from dataclasses import dataclass
from typing import Any

from ..worker.job import Job, Reporter
from .base import ExtractedText, TextDocumentProcessor

__all__ = ["DecodedText", "TextProcessor", "decode_counting", "decode_text", "normalize_newlines"]

# -- decoding ----------------------------------------------------------------------

# UTF-32 LE's mark starts with UTF-16 LE's, so it is checked first.
_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)

#: Share of invalid bytes up to which non-ASCII text is still read as damaged UTF-8.
UTF8_TOLERANCE = 0.01

_errors = threading.local()


def _count_and_replace(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    _errors.count += exc.end - exc.start
    return "\ufffd", exc.end


def _latin1_fallback(exc: UnicodeError) -> tuple[str, int]:
    # cp1252 leaves 0x81, 0x8D, 0x8F, 0x90, 0x9D undefined; Latin-1 maps every byte.
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    return exc.object[exc.start : exc.end].decode("latin-1"), exc.end


codecs.register_error("docstatus.count", _count_and_replace)
codecs.register_error("docstatus.latin1", _latin1_fallback)


@dataclass(frozen=True, slots=True)
class DecodedText:
    """Text decoded from bytes, with how it was decoded."""

    text: str
    encoding: str
    bom: bool
    undecodable_bytes: int

    def metadata(self) -> dict[str, Any]:
        """What the status shows about the decoding."""
        return {"encoding": self.encoding, "bom": self.bom, "undecodable_bytes": self.undecodable_bytes}


def decode_counting(data: bytes, encoding: str) -> tuple[str, int]:
    """``data`` decoded as ``encoding``, undecodable bytes as U+FFFD, and how many bytes those were."""
    _errors.count = 0
    text = data.decode(encoding, errors="docstatus.count")
    return text, int(_errors.count)


def decode_text(data: bytes) -> DecodedText:
    """Decode ``data`` (see the module docstring); never raises for any bytes."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            text, bad = decode_counting(data[len(bom) :], encoding)
            return DecodedText(normalize_newlines(text), encoding, True, bad)
    text, bad = decode_counting(data, "utf-8")
    if bad == 0 or (not text.isascii() and bad <= len(data) * UTF8_TOLERANCE):
        return DecodedText(normalize_newlines(text), "utf-8", False, bad)
    return DecodedText(
        normalize_newlines(data.decode("cp1252", errors="docstatus.latin1")), "cp1252", False, 0
    )


def normalize_newlines(text: str) -> str:
    """``text`` with every CRLF and CR line break made LF."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


# -- the processor --------------------------------------------------------------------


class TextProcessor(TextDocumentProcessor):
    """Processes text and Markdown documents (see the module docstring). Thread-safe."""

    def extract(self, job: Job, reporter: Reporter) -> ExtractedText:
        """The decoded text, with the decoding details (encoding, byte-order mark, undecodable bytes)."""
        decoded = decode_text(job.path.read_bytes())
        return ExtractedText(decoded.text, decoded.metadata())
