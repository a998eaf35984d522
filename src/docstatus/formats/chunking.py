"""Structure-aware chunking: Markdown-like text cut into chunks that follow its sections.

Markdown headings start a new chunk; paragraphs (and fenced code blocks,
kept whole) are packed into chunks of up to ``max_chars`` characters; a
block longer than that is cut at whitespace into windows that overlap by
``overlap`` characters. Every format's text goes through :func:`chunk_text`
(the processors' shared stages in :mod:`docstatus.formats.base` call it).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["TextChunk", "chunk_text"]

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
