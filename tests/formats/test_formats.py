"""Format detection: the extension names a format, the content must agree; content alone names a few."""

from __future__ import annotations

from pathlib import Path

import pytest

from _documents import docx_bytes, jpeg_bytes, pdf_bytes, plain_zip, png_bytes, pptx_bytes
from docstatus import StatusManager
from docstatus.errors import UnsupportedFormatError
from docstatus.formats import FORMATS, FormatRegistry, detect_format
from docstatus.formats.checks import magic
from docstatus.ingest import Intake


def _file(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "upload.bin"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("name", "data", "format", "format_type"),
    [
        ("a.pdf", pdf_bytes([["x"]]), "pdf", "visual"),
        ("A.PDF", b"junk before the header\n" + pdf_bytes([["x"]]), "pdf", "visual"),
        ("a.docx", docx_bytes(), "docx", "text"),
        ("a.pptx", pptx_bytes(1), "pptx", "visual"),
        ("a.png", png_bytes(), "png", "visual"),
        ("a.jpg", jpeg_bytes(), "jpeg", "visual"),
        ("a.jpeg", png_bytes(), "jpeg", "visual"),  # a PNG named .jpeg: the decoder goes by content
        ("a.html", b"<html><body>hi</body></html>", "html", "text"),
        ("a.htm", "<p>caf\xe9</p>".encode("cp1252"), "html", "text"),
        ("a.md", b"# title", "md", "text"),
        ("a.txt", "wide".encode("utf-16"), "txt", "text"),
    ],
)
def test_supported_files_are_detected(
    tmp_path: Path, name: str, data: bytes, format: str, format_type: str
) -> None:
    info = detect_format(_file(tmp_path, data), name)
    assert info is not None
    assert (info.format, info.format_type) == (format, format_type)


@pytest.mark.parametrize(
    ("name", "data"),
    [("report", pdf_bytes([["x"]])), ("scan.bin", png_bytes()), ("photo", jpeg_bytes())],
)
def test_content_names_the_format_without_a_known_extension(tmp_path: Path, name: str, data: bytes) -> None:
    info = detect_format(_file(tmp_path, data), name)
    assert info is not None
    assert info.format_type == "visual"


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("zip.pdf", plain_zip(), "the content is ZIP (or DOCX/PPTX/XLSX), not PDF"),
        ("png.pdf", png_bytes(), "the content is PNG, not PDF"),
        ("text.pdf", b"hello, not a pdf", "the content is not PDF"),
        ("pdf.docx", pdf_bytes([["x"]]), "the content is PDF, not a Word document"),
        ("pdf.pptx", pdf_bytes([["x"]]), "the content is PDF, not a PowerPoint presentation"),
        ("pdf.png", pdf_bytes([["x"]]), "the content is PDF, not a PNG or JPEG image"),
        ("fake.jpg", b"\xff\xd8\xff\xe0 not really a jpeg", "not a PNG or JPEG image"),
        ("fake.png", b"\x89PNG\r\n\x1a\n....", "not a PNG or JPEG image"),
        ("zip.html", plain_zip(), "the content is ZIP"),
        ("legacy.docx", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100, "OLE (legacy Office)"),
        ("noext", b"plain words", "the file has no extension"),
        ("a.exe", b"MZ\x90\x00", "extension '.exe' is not supported"),
    ],
)
def test_mislabelled_and_unknown_files_are_refused_with_the_reason(
    tmp_path: Path, name: str, data: bytes, reason: str
) -> None:
    registry_info, why = FORMATS.explain(_file(tmp_path, data), name)
    assert registry_info is None
    assert reason in why


def test_an_upload_records_format_type_and_size(tmp_path: Path) -> None:
    with StatusManager(cleanup_interval_seconds=None) as manager:
        intake = Intake(manager, tmp_path / "uploads", max_bytes=1 << 20)
        data = pdf_bytes([["x"], ["y"]])
        with intake.open_upload("r.pdf") as writer:
            writer.write(data)
            doc_id = writer.finish().doc_id
        meta = manager.require_status(doc_id).metadata
        assert (meta["format"], meta["format_type"], meta["file_size"]) == ("pdf", "visual", len(data))
        with intake.open_upload("r.pdf") as writer:
            writer.write(plain_zip())
            with pytest.raises(UnsupportedFormatError, match="not PDF"):
                writer.finish()
        assert len(manager.list_all()) == 1


def test_a_registry_accepts_custom_formats_with_signatures(tmp_path: Path) -> None:
    registry = FormatRegistry()
    registry.register(
        "gif", (".gif",), "visual", "image/gif", check=magic(b"GIF8", name="GIF"), signatures=[b"GIF8"]
    )
    gif = _file(tmp_path, b"GIF89a....")
    found = registry.detect(gif, "anim")
    assert found is not None
    assert found.format == "gif"
    assert registry.explain(_file(tmp_path, b"%PDF-1.4"), "x.gif") == (None, "the content is PDF, not GIF")
