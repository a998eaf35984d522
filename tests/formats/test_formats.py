"""Format detection: the extension names a format, the content must agree; content alone names a few."""

from __future__ import annotations

from pathlib import Path

import pytest

from _documents import docx_bytes, jpeg_bytes, pdf_bytes, plain_zip, png_bytes, pptx_bytes
from docstatus import StatusManager
from docstatus.errors import UnsupportedFormatError
from docstatus.formats import (
    ENTRIES,
    FORMATS,
    ExtractedText,
    FormatEntry,
    FormatInfo,
    FormatRegistry,
    TextDocumentProcessor,
    default_processors,
    detect_format,
)
from docstatus.formats.checks import magic, text_check
from docstatus.ingest import Intake
from docstatus.worker import Job, Reporter
from docstatus.worker.pool import WorkerPool
from helpers import Watcher, submit


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
        ("noext", b"plain \x00 words", "the file has no extension and the content is binary"),
        ("a.exe", b"MZ\x90\x00", "'.exe' files are not supported"),
    ],
)
def test_mislabelled_and_unknown_files_are_refused_with_the_reason(
    tmp_path: Path, name: str, data: bytes, reason: str
) -> None:
    registry_info, why = FORMATS.explain(_file(tmp_path, data), name)
    assert registry_info is None
    assert reason in why


_REPO = Path(__file__).resolve().parents[2]


def _real_text_files() -> list[tuple[str, bytes]]:
    import importlib.metadata

    licence = next(f for f in importlib.metadata.distribution("pydantic").files or () if f.name == "LICENSE")
    news = "Version 2 — café, naïve, déjà vu: résumé des changements.\n".encode("cp1252") * 40
    return [
        ("README", (_REPO / "README.md").read_bytes()),
        ("LICENSE", licence.read_binary()),
        ("NEWS", news),
    ]


@pytest.mark.parametrize(("name", "data"), _real_text_files(), ids=["utf-8", "ascii", "cp1252"])
def test_text_without_an_extension_is_detected_as_text_by_content(
    tmp_path: Path, name: str, data: bytes
) -> None:
    assert FORMATS.explain(_file(tmp_path, data), name) == (FormatInfo("txt", "text", "text/plain"), "")


def _real_binaries() -> list[tuple[str, bytes]]:
    import gzip
    import importlib.util
    import marshal
    import random
    import sys

    readme = (_REPO / "README.md").read_bytes()
    compiled = (
        importlib.util.MAGIC_NUMBER
        + bytes(12)
        + marshal.dumps(compile(Path(gzip.__file__).read_text(), "gzip", "exec"))
    )
    noise = bytes(b for b in random.Random(7).randbytes(9000) if b)  # binary without NUL bytes
    return [
        ("python", Path(sys.executable).resolve().read_bytes()[:100_000]),
        ("readme-gz", gzip.compress(readme)),
        ("compiled", compiled),
        ("noise", noise),
    ]


@pytest.mark.parametrize(("name", "data"), _real_binaries(), ids=["elf", "gzip", "pyc", "no-nul"])
def test_binary_without_an_extension_is_refused_with_the_reason(
    tmp_path: Path, name: str, data: bytes
) -> None:
    info, why = FORMATS.explain(_file(tmp_path, data), name)
    assert info is None
    assert why.startswith("the file has no extension and the content is ")
    assert why.endswith("not text")


def test_an_extensionless_readme_is_processed_as_text(tmp_path: Path) -> None:
    with StatusManager(cleanup_interval_seconds=None) as manager:
        watcher = Watcher(manager)
        pool = WorkerPool(manager, tmp_path / "uploads", default_processors(), data_dir=tmp_path / "data")
        intake = Intake(manager, tmp_path / "uploads", max_bytes=1 << 20, on_queued=pool.enqueue)
        pool.start()
        try:
            final = watcher.final(submit(intake, "README", (_REPO / "README.md").read_bytes()))
        finally:
            pool.stop()
            watcher.unsubscribe()
    assert final["status"] == "completed", final["error"]
    assert (final["metadata"]["format"], final["metadata"]["encoding"]) == ("txt", "utf-8")
    assert final["metadata"]["total_chunks"] > 1


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


def test_the_table_has_one_entry_per_format_and_each_has_a_processor() -> None:
    names = [entry.name for entry in ENTRIES]
    assert len(names) == len(set(names))
    assert (
        set(default_processors()) == set(names) == {"txt", "md", "html", "pdf", "docx", "pptx", "png", "jpeg"}
    )
    processors = default_processors()
    assert processors["txt"] is processors["md"]  # one factory, one shared processor
    assert processors["png"] is processors["jpeg"]
    assert processors["pdf"] is not processors["txt"]
    assert FORMATS.extensions() == {ext for entry in ENTRIES for ext in entry.extensions}


def test_an_entry_is_checked() -> None:
    with pytest.raises(ValueError, match="at least one extension"):
        FormatEntry("csv", (), "text", "text/csv")
    with pytest.raises(ValueError, match="format_type"):
        FormatEntry("csv", (".csv",), "tabular", "text/csv")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="invalid extension"):
        FormatEntry("csv", ("a/b",), "text", "text/csv")
    assert FormatEntry("csv", ("CSV",), "text", "text/csv").extensions == (".csv",)


class CsvProcessor(TextDocumentProcessor):
    def extract(self, job: Job, reporter: Reporter) -> ExtractedText:
        rows = job.path.read_text(errors="replace").splitlines()
        return ExtractedText("\n\n".join(rows), {"rows": len(rows)})


def test_a_new_format_is_one_processor_and_one_entry(tmp_path: Path) -> None:
    registry = FormatRegistry(ENTRIES)
    registry.register("csv", (".csv",), "text", "text/csv", check=text_check, processor=CsvProcessor)
    with StatusManager(cleanup_interval_seconds=None) as manager:
        watcher = Watcher(manager)
        pool = WorkerPool(manager, tmp_path / "uploads", registry.processors(), data_dir=tmp_path / "data")
        intake = Intake(
            manager, tmp_path / "uploads", max_bytes=1 << 20, on_queued=pool.enqueue, formats=registry
        )
        pool.start()
        try:
            final = watcher.final(submit(intake, "t.csv", b"a,b\n1,2\n3,4\n"))
        finally:
            pool.stop()
            watcher.unsubscribe()
    assert final["status"] == "completed", final["error"]
    assert (final["metadata"]["format"], final["metadata"]["rows"]) == ("csv", 3)
    assert "csv" not in default_processors()  # the default registry is untouched
