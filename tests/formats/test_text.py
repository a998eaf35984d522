"""Text: decoding any bytes, and chunks that follow the document's structure."""

from __future__ import annotations

import pytest

from _documents import MARKDOWN
from docstatus.formats.chunking import chunk_text
from docstatus.formats.text import decode_text


@pytest.mark.parametrize(
    ("data", "encoding", "text", "bad"),
    [
        ("héllo wörld".encode(), "utf-8", "héllo wörld", 0),
        (b"\xef\xbb\xbfwith bom\r\nline", "utf-8", "with bom\nline", 0),
        ("wide ünïcode".encode("utf-16"), "utf-16-le", "wide ünïcode", 0),
        ("café crème".encode("cp1252"), "cp1252", "café crème", 0),
        (b"\x81\x8d\x8f bytes cp1252 leaves undefined", "cp1252", None, 0),
        ("ok ünïcode ".encode() * 50 + b"\xff", "utf-8", None, 1),
    ],
)
def test_decode_text(data: bytes, encoding: str, text: str | None, bad: int | None) -> None:
    decoded = decode_text(data)
    assert decoded.encoding == encoding or text is None
    if text is not None:
        assert decoded.text == text
    if bad is not None:
        assert decoded.undecodable_bytes == bad


def test_decoding_never_fails_on_random_bytes() -> None:
    data = bytes(range(256)) * 4
    assert len(decode_text(data).text) > 0


def test_chunks_follow_headings_and_stay_small() -> None:
    text = decode_text(MARKDOWN).text
    chunks = chunk_text(text, max_chars=400, overlap=40)
    assert chunks[0].heading == "Guide"
    assert chunks[-1].heading == "Embedding"
    assert chunks[-1].text.startswith("## Embedding")
    assert all(len(c.text) <= 400 for c in chunks)
    for chunk in chunks:
        assert text[chunk.start : chunk.end].strip() == chunk.text
    parsing = [c for c in chunks if c.heading == "Parsing"]
    assert len(parsing) > 1
    assert parsing[1].start < parsing[0].end  # windows overlap


def test_fenced_code_is_kept_whole() -> None:
    text = "Intro.\n\n```\nline one\n\nline two\n```\n"
    (chunk,) = chunk_text(text)
    assert "line one\n\nline two" in chunk.text
