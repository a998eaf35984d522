"""HTML documents: parsed with the standard library's HTML parser into Markdown-like text.

The parser is a real tokenizer (``html.parser``, tolerant of broken markup
as browsers are): ``<h1>`` to ``<h6>`` become Markdown headings so chunks follow
sections, block elements separate paragraphs, list items become ``-`` lines,
table cells are ``|``-separated, ``<pre>`` keeps its line breaks, and
``<script>``, ``<style>``, ``<template>``, ``<noscript>`` and ``<head>`` (but
its ``<title>``, kept in the metadata) are dropped. Bytes are decoded like
text files (:func:`~docstatus.formats.text.decode_text`), except that a
``<meta charset>`` naming a known encoding is honoured when there is no
byte-order mark; undecodable bytes are counted, never an error.
"""

from __future__ import annotations

import codecs
import re
from html.parser import HTMLParser
from typing import Any

from ..worker.job import Job, Reporter
from .base import ExtractedText, TextDocumentProcessor
from .text import DecodedText, decode_counting, decode_text, normalize_newlines

__all__ = ["HtmlProcessor", "decode_html", "html_text"]

_SKIP = frozenset({"script", "style", "template", "noscript", "head", "svg", "math", "iframe", "object"})
_BLOCK = frozenset(
    {
        "p", "div", "section", "article", "header", "footer", "main", "nav", "aside", "blockquote",
        "ul", "ol", "dl", "dt", "dd", "table", "tr", "thead", "tbody", "tfoot", "figure", "figcaption",
        "form", "fieldset", "address", "hr", "br", "body", "html", "caption", "details", "summary",
    }
)  # fmt: skip
_HEADINGS = {f"h{n}": n for n in range(1, 7)}
_VOID = frozenset(
    {"br", "hr", "img", "input", "meta", "link", "area", "base", "col", "embed", "source", "wbr"}
)
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_SPACES = re.compile(r"[ \t\f\v\r\n]+")


class _TextExtractor(HTMLParser):
    """Collects the visible text of a document as Markdown-like blocks."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[str] = []
        self.title = ""
        self._line: list[str] = []
        self._skip = 0
        self._pre = 0
        self._in_title = False
        self._heading = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self._skip += tag not in _VOID
            return
        if tag == "title":
            self._in_title = True
        elif tag in _HEADINGS:
            self._break()
            self._heading = _HEADINGS[tag]
        elif tag == "li":
            self._break()
            self._line.append("- ")
        elif tag in ("td", "th") and self._line:
            self._line.append(" | ")
        elif tag == "pre":
            self._break()
            self._pre += 1
        elif tag in _BLOCK:
            self._break()

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag == "title":
            self._in_title = False
        elif tag in _HEADINGS or tag in _BLOCK or tag == "li":
            self._break()
            self._heading = 0
        elif tag == "pre":
            self._break()
            self._pre = max(0, self._pre - 1)

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif not self._skip:
            self._line.append(data if self._pre else _SPACES.sub(" ", data))

    def _break(self) -> None:
        text = "".join(self._line)
        self._line = []
        text = text.strip("\n") if self._pre else " ".join(text.split())
        if not text or text == "-":
            return
        if self._heading:
            text = "#" * self._heading + " " + text
        self.blocks.append(text)

    def text(self) -> str:
        self._break()
        return "\n\n".join(self.blocks)


def html_text(markup: str, reporter: Reporter | None = None) -> tuple[str, str]:
    """The Markdown-like text and the ``<title>`` of ``markup`` (see the module docstring)."""
    parser = _TextExtractor()
    step = 1 << 16
    for start in range(0, len(markup), step):
        if reporter is not None:
            reporter.check()  # a huge page is parsed in pieces, so the time limit can stop it
        parser.feed(markup[start : start + step])
    parser.close()
    return parser.text(), " ".join(parser.title.split())


def decode_html(data: bytes) -> DecodedText:
    """Decode an HTML file: a byte-order mark first, then ``<meta charset>``, then as text files."""
    decoded = decode_text(data)
    if decoded.bom:
        return decoded
    declared = _META_CHARSET.search(data[:4096])
    if declared is None:
        return decoded
    try:
        encoding = codecs.lookup(declared.group(1).decode("ascii")).name
    except (LookupError, UnicodeDecodeError):
        return decoded
    if encoding in ("utf-8", decoded.encoding):
        return decoded
    try:
        text, bad = decode_counting(data, encoding)
    except (LookupError, UnicodeError):  # e.g. a declared "rot13": a codec, but not a text encoding
        return decoded
    return DecodedText(normalize_newlines(text), encoding, False, bad)


class HtmlProcessor(TextDocumentProcessor):
    """Processes HTML documents; see the module docstring."""

    def extract(self, job: Job, reporter: Reporter) -> ExtractedText:
        """The page's visible text, with the decoding details and its title."""
        decoded = decode_html(job.path.read_bytes())
        text, title = html_text(decoded.text, reporter)
        metadata: dict[str, Any] = decoded.metadata()
        if title:
            metadata["title"] = title[:500]
        return ExtractedText(text, metadata)
