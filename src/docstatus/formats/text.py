"""The text processor (``.txt``, ``.md``): decode, chunk by structure, embed, store.

* **Decode**: a byte-order mark decides (UTF-8, UTF-16, UTF-32); without one,
  UTF-8 when the bytes are (nearly) valid UTF-8, otherwise Windows-1252 with
  Latin-1 for its five undefined bytes. Bytes that cannot be decoded become
  U+FFFD and are counted in the document's metadata (``undecodable_bytes``),
  never an error.
* **Chunk**: Markdown headings start a new chunk; paragraphs (and fenced code
  blocks, kept whole) are packed into chunks of up to ``max_chars``
  characters; a block longer than that is cut at whitespace into windows that
  overlap by ``overlap`` characters.
* **Embed** each chunk with an :class:`~docstatus.pipeline.embedding.Embedder`
  (default: the offline hashing embedder), reporting ``text_chunk(i, n)``.
* **Store** chunks and vectors in the job's output store, reporting ``storing()``.
"""

from __future__ import annotations

import codecs
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..output.embedding import Embedder, HashingEmbedder
from ..worker.job import Job, Reporter

__all__ = ["DecodedText", "TextChunk", "TextProcessor", "chunk_text", "decode_text"]

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


def _decode_counting(data: bytes, encoding: str) -> tuple[str, int]:
    _errors.count = 0
    text = data.decode(encoding, errors="docstatus.count")
    return text, int(_errors.count)


def decode_text(data: bytes) -> DecodedText:
    """Decode ``data`` (see the module docstring); never raises for any bytes."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            text, bad = _decode_counting(data[len(bom) :], encoding)
            return DecodedText(_newlines(text), encoding, True, bad)
    text, bad = _decode_counting(data, "utf-8")
    if bad == 0 or (not text.isascii() and bad <= len(data) * UTF8_TOLERANCE):
        return DecodedText(_newlines(text), "utf-8", False, bad)
    return DecodedText(_newlines(data.decode("cp1252", errors="docstatus.latin1")), "cp1252", False, 0)


def _newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


# -- chunking ----------------------------------------------------------------------

_HEADING = re.compile(r" {0,3}(#{1,6})(?:[ \t]+(.*?))?[ \t#]*$")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")


@dataclass(frozen=True, slots=True)
class TextChunk:
    """A chunk: ``text`` is the source's ``[start, end)`` span (stripped); ``heading`` is its section."""

    text: str
    start: int
    end: int
    heading: str | None

    def info(self) -> dict[str, Any]:
        """The details stored beside the chunk."""
        return {"start": self.start, "end": self.end, "heading": self.heading}


@dataclass(slots=True)
class _Block:
    start: int
    end: int
    heading: str | None = None  # set for heading lines: the heading's text


def _lines(text: str) -> Iterator[tuple[int, str]]:
    offset = 0
    for line in text.split("\n"):
        yield offset, line
        offset += len(line) + 1


class _BlockScanner:
    """Splits text into paragraphs, headings and fenced code blocks, with their offsets."""

    def __init__(self) -> None:
        self.blocks: list[_Block] = []
        self._open: _Block | None = None
        self._fence: str | None = None

    def feed(self, offset: int, line: str) -> None:
        end = offset + len(line)
        if self._fence is not None:
            self._extend(offset, end)
            if line.strip().startswith(self._fence):
                self._fence = None
            return
        heading = _HEADING.fullmatch(line)
        if heading:
            self.flush()
            self.blocks.append(_Block(offset, end, (heading.group(2) or "").strip()))
        elif not line.strip():
            self.flush()
        else:
            fence = _FENCE.match(line)
            self._fence = fence.group(1) if fence else None
            self._extend(offset, end)

    def _extend(self, start: int, end: int) -> None:
        if self._open is None:
            self._open = _Block(start, end)
        self._open.end = end

    def flush(self) -> None:
        if self._open is not None:
            self.blocks.append(self._open)
            self._open = None


def _blocks(text: str) -> list[_Block]:
    scanner = _BlockScanner()
    for offset, line in _lines(text):
        scanner.feed(offset, line)
    scanner.flush()
    return scanner.blocks


def _windows(text: str, start: int, end: int, max_chars: int, overlap: int) -> Iterator[tuple[int, int]]:
    """``[start, end)`` cut into windows of at most ``max_chars``, at whitespace where possible."""
    pos = start
    while end - pos > max_chars:
        stop = pos + max_chars
        cut = max(text.rfind(" ", pos + max_chars // 2, stop), text.rfind("\n", pos + max_chars // 2, stop))
        stop = cut if cut > pos else stop
        yield pos, stop
        nxt = stop - overlap
        space = text.find(" ", nxt, stop)
        pos = max(space + 1 if space != -1 else nxt, pos + 1)
    yield pos, end


class _Packer:
    """Packs blocks into chunks of at most ``max_chars``; a heading always starts a chunk."""

    def __init__(self, text: str, max_chars: int, overlap: int) -> None:
        self.text, self.max_chars, self.overlap = text, max_chars, overlap
        self.chunks: list[TextChunk] = []
        self._span: list[int] | None = None
        self._heading_only = False
        self._heading: str | None = None

    def add(self, block: _Block) -> None:
        if block.heading is not None:
            self.flush()
            self._heading = block.heading or None
            self._span, self._heading_only = [block.start, block.end], True
            return
        if self._span is not None and block.end - self._span[0] <= self.max_chars:
            self._span[1], self._heading_only = block.end, False
            return
        # An oversized block keeps its section's heading line with its first window.
        start = self._span[0] if self._span is not None and self._heading_only else block.start
        if start == block.start:
            self.flush()
        self._span, self._heading_only = None, False
        if block.end - start <= self.max_chars:
            self._span = [start, block.end]
            return
        windows = list(_windows(self.text, start, block.end, self.max_chars, self.overlap))
        for a, b in windows[:-1]:
            self._emit(a, b)
        # The last window stays open, so a short paragraph after it can join it.
        self._span = list(windows[-1])

    def _emit(self, start: int, end: int) -> None:
        piece = self.text[start:end]
        if piece.strip():
            self.chunks.append(TextChunk(piece.strip(), start, end, self._heading))

    def flush(self) -> None:
        if self._span is not None:
            self._emit(*self._span)
            self._span = None


def chunk_text(text: str, *, max_chars: int = 1000, overlap: int = 100) -> list[TextChunk]:
    """Structure-aware chunks of ``text`` (see the module docstring), in order."""
    if max_chars < 10 or not 0 <= overlap < max_chars // 2:
        raise ValueError("max_chars must be at least 10 and overlap between 0 and max_chars / 2")
    packer = _Packer(text, max_chars, overlap)
    for block in _blocks(text):
        packer.add(block)
    packer.flush()
    return packer.chunks


# -- the processor --------------------------------------------------------------------


class TextProcessor:
    """Processes text and Markdown documents (see the module docstring). Thread-safe."""

    def __init__(
        self, embedder: Embedder | None = None, *, max_chars: int = 1000, overlap: int = 100
    ) -> None:
        chunk_text("", max_chars=max_chars, overlap=overlap)  # validates the sizes now, not per document
        self.embedder: Embedder = embedder or HashingEmbedder()
        self.max_chars = max_chars
        self.overlap = overlap

    def process(self, job: Job, reporter: Reporter) -> dict[str, Any]:
        """Decode, chunk, embed and store ``job``; returns ``num_chunks`` and the decoding details."""
        reporter.parsing()
        decoded = decode_text(job.path.read_bytes())
        reporter.parsing(metadata=decoded.metadata())
        chunks = chunk_text(decoded.text, max_chars=self.max_chars, overlap=self.overlap)
        total = len(chunks)
        reporter.text_chunk(0, total)
        vectors: list[list[float]] = []
        for i, chunk in enumerate(chunks, 1):
            vectors.append(list(self.embedder.embed(chunk.text)))
            reporter.text_chunk(i, total)
        reporter.storing()
        details = {**decoded.metadata(), "characters": len(decoded.text)}
        job.output.save(
            job.doc_id,
            [c.text for c in chunks],
            vectors,
            {"filename": job.filename, "format": job.format, **details},
            chunk_info=[c.info() for c in chunks],
        )
        return {"num_chunks": total, **details}
