"""The reference pipeline on real files: every format to completed, progress page by page, bad input.

Fixtures are generated in tmp_path (PDFs written by hand, plain and encrypted;
DOCX/PPTX by python-docx/python-pptx; images by Pillow). Documents go through
the real Intake and WorkerPool over a real StatusManager; waiting is done on
the manager's events with a deadline.
"""

from __future__ import annotations

import gzip
import io
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from _documents import (
    amplified_docx,
    docx_bytes,
    jpeg_bytes,
    numbered_pages,
    pdf_bytes,
    plain_zip,
    png_bomb,
    png_bytes,
    pptx_bytes,
    zip_bomb_docx,
)
from docstatus import StatusManager
from docstatus.errors import DocumentLimitError, MissingDependencyError, OutputError
from docstatus.formats import default_processors
from docstatus.formats.limits import Limits, check_zip, require
from docstatus.formats.pdf import PdfProcessor, clean_text
from docstatus.ingest import Intake
from docstatus.output import OutputStore, PerceptualDescriptor
from docstatus.output.store import _SCHEMA_V1, SCHEMA_VERSION
from docstatus.worker.pool import OUTPUT_FILE, WorkerPool
from helpers import Watcher, assert_legal_and_monotonic, submit

DEADLINE = 30.0


class Pipeline:
    """An intake, a worker pool and a watcher over one manager, with files from bytes."""

    def __init__(self, manager: StatusManager, root: Path, **pool_args: Any) -> None:
        self.manager = manager
        self.uploads = root / "uploads"
        self.data = root / "data"
        self.watcher = Watcher(manager, timeout=DEADLINE)
        pool_args.setdefault("document_timeout", 60.0)
        pool_args.setdefault("processors", default_processors())
        self.pool = WorkerPool(manager, self.uploads, data_dir=self.data, **pool_args)
        self.intake = Intake(manager, self.uploads, max_bytes=64 << 20, on_queued=self.pool.enqueue)
        self.pool.start()

    def submit(self, name: str, data: bytes) -> str:
        return submit(self.intake, name, data)

    def run(self, name: str, data: bytes) -> dict[str, Any]:
        return self.watcher.final(self.submit(name, data))

    def output(self) -> OutputStore:
        return OutputStore(self.data / OUTPUT_FILE)

    def stop(self) -> None:
        self.watcher.unsubscribe()
        self.pool.stop(timeout=10)


@pytest.fixture
def store_kind(local_store_kind: str) -> str:
    return local_store_kind


@pytest.fixture
def manager(make_manager: Callable[..., StatusManager]) -> StatusManager:
    """Every report a change: these tests read each page's and chunk's progress from the history."""
    return make_manager(progress_interval=0)


@pytest.fixture
def make_pipeline(manager: StatusManager, tmp_path: Path) -> Iterator[Callable[..., Pipeline]]:
    made: list[Pipeline] = []

    def make(**pool_args: Any) -> Pipeline:
        pipeline = Pipeline(manager, tmp_path / f"p{len(made)}", **pool_args)
        made.append(pipeline)
        return pipeline

    yield make
    for pipeline in made:
        pipeline.stop()


@pytest.fixture
def pipeline(make_pipeline: Callable[..., Pipeline]) -> Pipeline:
    return make_pipeline()


# -- every format to completed --------------------------------------------------------------------


def test_a_pdf_is_rendered_embedded_chunked_and_stored(pipeline: Pipeline) -> None:
    final = pipeline.run("report.pdf", pdf_bytes(numbered_pages(4)))
    assert final["status"] == "completed", final["error"]
    meta = final["metadata"]
    assert (meta["format"], meta["format_type"], meta["total_pages"]) == ("pdf", "visual", 4)
    assert meta["num_pages"] == 4
    assert meta["file_size"] > 0
    assert meta["title"] == "Test document"
    with pipeline.output() as output:
        stored = output.get(final["doc_id"])
        assert stored is not None
        assert [p.number for p in stored.pages] == [1, 2, 3, 4]
        assert stored.visual_dimension == PerceptualDescriptor.dimension
        assert all(len(p.vector) == stored.visual_dimension for p in stored.pages)
        assert (stored.pages[0].width, stored.pages[0].height) == (612, 792)
        assert [c.info["page"] for c in stored.chunks] == [1, 2, 3, 4]
        assert "Page 3 of the report." in stored.chunks[2].text
        thumb = output.thumbnail(final["doc_id"], 2)
        assert thumb is not None
        with Image.open(io.BytesIO(thumb[0])) as image:
            assert thumb[1] == "image/jpeg"
            assert max(image.size) == 256
            assert image.size[1] > image.size[0]  # portrait, like the page
        hits = output.search("river dolphins", limit=1)
        assert hits[0].doc_id == final["doc_id"]
        assert hits[0].info["page"] == 3


def test_a_docx_becomes_sections_with_headings(pipeline: Pipeline) -> None:
    final = pipeline.run("q.docx", docx_bytes())
    assert final["status"] == "completed", final["error"]
    assert (final["metadata"]["format_type"], final["metadata"]["title"]) == ("text", "Quarterly report")
    assert "total_pages" not in final["metadata"]
    with pipeline.output() as output:
        stored = output.get(final["doc_id"])
        assert stored is not None
        assert stored.pages == []
        headings = [c.info["heading"] for c in stored.chunks]
        assert headings == ["Quarterly report", "Costs"]
        assert "- Sourdough bread" in stored.chunks[1].text
        assert "Bread | 42" in stored.chunks[1].text


def test_a_pptx_slide_is_a_page_with_a_rendering_and_text(pipeline: Pipeline) -> None:
    final = pipeline.run("talk.pptx", pptx_bytes(3))
    assert final["status"] == "completed", final["error"]
    assert final["metadata"]["total_pages"] == 3
    with pipeline.output() as output:
        stored = output.get(final["doc_id"])
        assert stored is not None
        assert len(stored.pages) == 3
        assert stored.chunks[0].text.startswith("# Slide 1: jazz piano")
        assert "Speaker notes 1" in stored.chunks[0].text
        thumb = output.thumbnail(final["doc_id"], 1)
        assert thumb is not None
        with Image.open(io.BytesIO(thumb[0])) as image:
            # The slide's blue picture was drawn into its frame (right half, lower part).
            r, _, b = image.convert("RGB").getpixel((int(image.width * 0.75), int(image.height * 0.7)))
            assert b > 150 > r


@pytest.mark.parametrize(
    ("name", "data", "image_format"), [("a.png", png_bytes(), "png"), ("b.jpg", jpeg_bytes(), "jpeg")]
)
def test_an_image_is_one_visual_page(pipeline: Pipeline, name: str, data: bytes, image_format: str) -> None:
    final = pipeline.run(name, data)
    assert final["status"] == "completed", final["error"]
    assert final["metadata"]["image_format"] == image_format
    assert final["metadata"]["total_pages"] == 1
    assert final["metadata"]["num_chunks"] == 0
    with pipeline.output() as output:
        assert output.thumbnail(final["doc_id"], 1) is not None
        assert output.thumbnail(final["doc_id"], 2) is None


def test_html_keeps_structure_and_drops_scripts(pipeline: Pipeline) -> None:
    page = (
        "<!doctype html><html><head><meta charset='windows-1252'><title>Caf\xe9 menu</title>"
        "<script>var hidden = 'never indexed';</script><style>p{color:red}</style></head><body>"
        "<h1>Drinks</h1><p>Caf\xe9 au lait &amp; tea</p><ul><li>one</li><li>two</li></ul>"
        "<h2>Food</h2><table><tr><td>Bread</td><td>3</td></tr></table><pre>keep\n  lines</pre></body></html>"
    ).encode("cp1252")
    final = pipeline.run("menu.html", page)
    assert final["status"] == "completed", final["error"]
    assert (final["metadata"]["encoding"], final["metadata"]["title"]) == ("cp1252", "Café menu")
    with pipeline.output() as output:
        stored = output.get(final["doc_id"])
        assert stored is not None
        text = "\n".join(c.text for c in stored.chunks)
        assert "never indexed" not in text
        assert "color" not in text
        assert "# Drinks\n\nCafé au lait & tea\n\n- one\n\n- two" in text
        assert "Bread | 3" in text
        assert "keep\n  lines" in text
        assert [c.info["heading"] for c in stored.chunks] == ["Drinks", "Food"]


def test_undecodable_text_is_counted_not_fatal(pipeline: Pipeline) -> None:
    data = "naïve text about jazz piano ".encode() * 40 + b"\xff\xfe\xfa" + b" end"
    final = pipeline.run("notes.txt", data)
    assert final["status"] == "completed", final["error"]
    assert final["metadata"]["undecodable_bytes"] == 3


class Letters:
    """A text embedder: how often each letter occurs (module level, so child processes can load it)."""

    dimension = 26

    def embed(self, text: str) -> list[float]:
        return [float(text.lower().count(chr(97 + i))) for i in range(26)]


class Brightness:
    """A visual embedder: the page's mean brightness."""

    dimension = 1

    def embed_image(self, image: Image.Image) -> list[float]:
        return [sum(image.convert("L").resize((4, 4)).tobytes()) / 16 / 255]


def test_plugged_in_embedders_are_used(make_pipeline: Callable[..., Pipeline]) -> None:
    pipeline = make_pipeline(processors=default_processors(embedder=Letters(), visual_embedder=Brightness()))
    final = pipeline.run("r.pdf", pdf_bytes(numbered_pages(2)))
    text = pipeline.run("q.docx", docx_bytes())
    assert final["status"] == text["status"] == "completed", final["error"]
    with pipeline.output() as output:
        stored = output.get(final["doc_id"])
        assert stored is not None
        assert (stored.dimension, stored.visual_dimension) == (26, 1)
        assert 0.5 < stored.pages[0].vector[0] < 1.0  # mostly white
        docx = output.get(text["doc_id"])
        assert docx is not None
        assert docx.dimension == 26
        assert docx.chunks[0].vector[ord("q") - 97] == docx.chunks[0].text.lower().count("q") > 0


# -- progress ---------------------------------------------------------------------------------


def test_progress_of_a_multi_page_pdf_follows_the_contract(pipeline: Pipeline) -> None:
    pages = 12
    final = pipeline.run("long.pdf", pdf_bytes(numbered_pages(pages)))
    assert final["status"] == "completed", final["error"]
    history = pipeline.watcher.history(final["doc_id"])
    assert_legal_and_monotonic(history)
    assert [h["status"] for h in history][:2] == ["queued", "parsing"]
    ranges = {
        "queued": (0.0, 0.0),
        "parsing": (0.1, 0.1),
        "embedding_visual": (0.1, 0.6),
        "embedding_text": (0.6, 0.9),
        "storing": (0.95, 0.95),
        "completed": (1.0, 1.0),
    }
    for h in history:
        low, high = ranges[h["status"]]
        assert low - 1e-9 <= h["progress"] <= high + 1e-9, h
    visual = [h for h in history if h["status"] == "embedding_visual"]
    assert [h["page"] for h in visual] == list(range(1, pages + 1))
    assert {h["total_pages"] for h in visual} == {pages}
    for h in visual:
        assert h["progress"] == pytest.approx(0.1 + h["page"] / pages * 0.5)
    text = [h for h in history if h["status"] == "embedding_text"]
    assert [h["metadata"]["chunk"] for h in text] == list(range(pages + 1))
    assert text[-1]["progress"] == pytest.approx(0.9)
    assert [h["status"] for h in history][-2:] == ["storing", "completed"]
    assert final["metadata"]["total_pages"] == pages


class SlowDescriptor(PerceptualDescriptor):
    """The default descriptor plus 20 ms of model-like work per page, so the rate is measurable."""

    def embed_image(self, image: Image.Image) -> list[float]:
        time.sleep(0.02)  # stands in for a model's inference time, not a wait for anything
        return super().embed_image(image)


def test_the_eta_becomes_meaningful_after_a_few_pages(make_pipeline: Callable[..., Pipeline]) -> None:
    processor = PdfProcessor(visual_embedder=SlowDescriptor())
    pipeline = make_pipeline(processors={"pdf": processor})
    final = pipeline.run("slow.pdf", pdf_bytes(numbered_pages(10)))
    assert final["status"] == "completed", final["error"]
    visual = {
        h["page"]: h for h in pipeline.watcher.history(final["doc_id"]) if h["status"] == "embedding_visual"
    }
    etas = {page: visual[page]["estimated_remaining"] for page in range(4, 11)}
    assert all(eta is not None and eta >= 0 for eta in etas.values()), etas
    assert etas[9] < etas[4]
    assert final["estimated_remaining"] is None


# -- bad input ------------------------------------------------------------------------------------


def _bad_inputs() -> list[tuple[str, bytes, str]]:
    return [
        ("locked.pdf", pdf_bytes(numbered_pages(2), password="secret"), "encrypted: a password is needed"),
        ("cut.pdf", pdf_bytes(numbered_pages(3))[:700], "damaged or truncated"),
        ("huge.pdf", pdf_bytes(numbered_pages(31)), "31 pages (at most 30 allowed)"),
        ("bomb.png", png_bomb(), "10,000,000,000 image pixels"),
        ("cut.png", png_bytes()[:300], "damaged or truncated"),
        ("bomb.docx", zip_bomb_docx(40 << 20), "uncompressed bytes"),
        ("notword.docx", plain_zip(), "not a valid Word document"),
        ("notslides.pptx", docx_bytes(), "not a valid PowerPoint presentation"),
        ("cut.pptx", pptx_bytes(1)[:2000], "damaged ZIP package"),
    ]


def test_bad_documents_fail_readably_and_the_worker_goes_on(make_pipeline: Callable[..., Pipeline]) -> None:
    limits = Limits(max_pages=30, max_uncompressed_bytes=32 << 20)
    pipeline = make_pipeline(workers=1, processors=default_processors(limits))
    cases = _bad_inputs()
    docs = [(pipeline.submit(name, data), expected) for name, data, expected in cases]
    good = pipeline.submit("fine.pdf", pdf_bytes(numbered_pages(1)))
    for doc_id, expected in docs:
        final = pipeline.watcher.final(doc_id)
        assert final["status"] == "failed"
        assert expected in final["error"], final["error"]
        assert "Traceback" not in final["error"]
        # A sentence about the file: no class name, no library's error nested inside it.
        assert "Error" not in final["error"], final["error"]
        assert_legal_and_monotonic(pipeline.watcher.history(doc_id))
    assert pipeline.watcher.final(good)["status"] == "completed"
    with pipeline.output() as output:
        assert all(not output.has(doc_id) for doc_id, _ in docs)


@pytest.mark.parametrize("name", ["long.txt", "long.md"])
def test_text_over_the_character_limit_fails_with_the_limit(
    make_pipeline: Callable[..., Pipeline], name: str
) -> None:
    pipeline = make_pipeline(processors=default_processors(Limits(max_text_chars=100)))
    final = pipeline.run(name, b"word " * 40)
    assert final["status"] == "failed"
    assert final["error"] == (f"{name!r} is over a limit: 200 characters of text (at most 100 allowed)")
    with pipeline.output() as output:
        assert not output.has(final["doc_id"])


def test_a_document_over_its_time_limit_fails_and_the_next_one_runs(
    make_pipeline: Callable[..., Pipeline],
) -> None:
    pipeline = make_pipeline(workers=1, document_timeout=0.2)
    slow = pipeline.submit("slow.pdf", pdf_bytes(numbered_pages(400)))
    quick = pipeline.submit("quick.txt", b"short and sweet")
    final = pipeline.watcher.final(slow)
    assert final["error"] == "processing took longer than 0.2 seconds"
    assert (final["page"] or 0) < 400
    assert pipeline.watcher.final(quick)["status"] == "completed"


def test_a_huge_page_is_rendered_within_the_pixel_budget(pipeline: Pipeline) -> None:
    final = pipeline.run("poster.pdf", pdf_bytes([["A poster"]], size=(14400, 14400)))
    assert final["status"] == "completed", final["error"]
    with pipeline.output() as output:
        stored = output.get(final["doc_id"])
        assert stored is not None
        width, height = stored.pages[0].info["pixels"]
        assert width * height <= Limits().max_render_pixels
        assert max(width, height) == Limits().render_long_side


def test_a_needle_thin_page_is_refused(pipeline: Pipeline) -> None:
    final = pipeline.run("needle.pdf", pdf_bytes([["x"]], size=(1, 14400)))
    assert final["status"] == "failed"
    assert "page aspect ratio" in final["error"]


def test_two_workers_process_pdfs_concurrently(make_pipeline: Callable[..., Pipeline]) -> None:
    pipeline = make_pipeline(workers=2)
    docs = [pipeline.submit(f"{i}.pdf", pdf_bytes(numbered_pages(6 + i))) for i in range(4)]
    for i, doc_id in enumerate(docs):
        final = pipeline.watcher.final(doc_id)
        assert final["status"] == "completed", final["error"]
        assert final["metadata"]["num_pages"] == 6 + i


_HYPHENATED_LINES = [
    "Search the manip-",
    "ulation of day-to-",
    "day work on 64-",
    "bit hosts with\x01odd\x07con\x1ftrols.",
]


def test_pdf_text_joins_hyphenated_words_and_drops_control_characters(pipeline: Pipeline) -> None:
    final = pipeline.run("hyphens.pdf", pdf_bytes([_HYPHENATED_LINES]))
    assert final["status"] == "completed", final["error"]
    with pipeline.output() as output:
        stored = output.get(final["doc_id"])
        assert stored is not None
        text = stored.chunks[0].text
        assert "Search the manipulation of day-to-day work on 64-bit hosts" in text
        assert "withoddcontrols." in text
        assert not [c for c in text if ord(c) < 32 and c not in "\n\t"]
        assert output.search("manipulation", limit=1)[0].doc_id == final["doc_id"]


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("manip\x02ulation", "manipulation"),
        ("end-of\x02stream and day-to\x02day", "end-of-stream and day-to-day"),
        ("hyphen\x02\r\nated", "hyphenated"),
        ("64-\r\nbit, --\r\nflag, rule ----\r\nnext", "64-bit, --\nflag, rule ----\nnext"),
        ("tab\tkept\r\nline\x00\x1b\x7f\x9fsoft\xadhyphen", "tab\tkept\nlinesofthyphen"),
        ("x" * 50_000 + " a\x02b", "x" * 50_000 + " ab"),
    ],
)
def test_clean_text_reads_pdfium_markers(raw: str, clean: str) -> None:
    assert clean_text(raw) == clean


# -- Debian's documentation PDFs ------------------------------------------------------------------


def _debian_pdfs(limit: int = 2, max_bytes: int = 3 << 20) -> list[Path]:
    root = Path("/usr/share/doc")
    found = [
        p
        for p in root.glob("*/*.pdf*")
        if p.name.endswith((".pdf", ".pdf.gz")) and p.stat().st_size < max_bytes
    ]
    return sorted(found, key=lambda p: p.stat().st_size)[:limit]


def test_real_pdfs_from_debian_documentation(make_pipeline: Callable[..., Pipeline]) -> None:
    pdfs = _debian_pdfs()
    if not pdfs:
        pytest.skip("no PDF under /usr/share/doc on this machine")
    pipeline = make_pipeline(
        processors=default_processors(Limits(render_long_side=256, max_render_pixels=200_000))
    )
    for path in pdfs:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        final = pipeline.run(path.name.removesuffix(".gz"), data)
        assert final["status"] == "completed", f"{path}: {final['error']}"
        assert final["metadata"]["num_pages"] == final["metadata"]["total_pages"] > 0
        assert final["metadata"]["num_chunks"] > 0
        with pipeline.output() as output:
            stored = output.get(final["doc_id"])
            assert stored is not None
            text = "".join(chunk.text for chunk in stored.chunks)
            assert not [c for c in text if ord(c) < 32 and c not in "\n\t"], path


# -- pieces ---------------------------------------------------------------------------------------


def test_a_version_1_output_store_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "output.db"
    with sqlite3.connect(path) as db:
        db.executescript(_SCHEMA_V1)
        db.execute("INSERT INTO documents VALUES ('old', '{\"format\": \"txt\"}', 2, 1, 1.0)")
        db.execute("INSERT INTO chunks VALUES ('old', 0, 'old text', '{}', ?)", (b"\x00" * 8,))
    db.close()
    with OutputStore(path) as output:
        old = output.get("old")
        assert old is not None
        assert (old.chunks[0].text, old.pages) == ("old text", [])
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(OutputError, match="schema version 3"):
        OutputStore(path)


def test_the_output_store_takes_writers_of_many_threads_and_refuses_use_once_closed(tmp_path: Path) -> None:
    output = OutputStore(tmp_path / "output.db")
    vector = output.embedder.embed("text")

    def save(n: int) -> None:
        for attempt in range(5):  # each save replaces the last, in one transaction
            output.save(f"doc-{n}", [f"text {n}.{attempt}"], [vector], {"n": n})

    threads = [threading.Thread(target=save, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert output.count() == 8
    stored = output.get("doc-3")
    assert stored is not None
    assert [c.text for c in stored.chunks] == ["text 3.4"]
    output.close()
    output.close()  # idempotent
    with pytest.raises(OutputError, match="is closed"):
        output.get("doc-3")
    with pytest.raises(OutputError, match="is closed"):
        output.save("doc-9", [], [])


def test_missing_libraries_are_named_with_their_extra() -> None:
    with pytest.raises(MissingDependencyError) as info:
        require("docstatus_no_such_module", "no-such-package")
    assert "pip install 'docstatus[pipeline]'" in str(info.value)


def test_importing_docstatus_loads_no_pipeline_library() -> None:
    code = (
        "import sys, docstatus, docstatus.formats, docstatus.ingest, docstatus.output\n"
        "import docstatus.worker.pool, docstatus.service\n"
        "print(sorted(m for m in ('pypdfium2', 'PIL', 'docx', 'pptx', 'rich') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="max_pages"):
        Limits(max_pages=0)
    with pytest.raises(ValueError, match="render_long_side"):
        Limits(render_long_side=10_000, max_render_pixels=1000)


def test_the_document_timeout_setting_is_checked_and_reaches_the_pool(tmp_path: Path) -> None:
    from docstatus.errors import ConfigError
    from docstatus.service import Service
    from docstatus.settings import ServiceSettings

    with pytest.raises(ConfigError, match="DOCSTATUS_DOCUMENT_TIMEOUT"):
        ServiceSettings.from_env({"DOCSTATUS_DOCUMENT_TIMEOUT": "0"})
    settings = ServiceSettings.from_env(
        {"DOCSTATUS_DOCUMENT_TIMEOUT": "12.5", "DOCSTATUS_DATA": str(tmp_path)}
    )
    with Service(settings) as service:
        assert service.pool.document_timeout == 12.5
        assert service.output.path == tmp_path / OUTPUT_FILE


def test_an_amplified_docx_is_refused_in_seconds_by_its_xml_limits(tmp_path: Path) -> None:
    many = tmp_path / "many.docx"
    many.write_bytes(amplified_docx(1_000_000))  # 34 MB of paragraph XML, 3 million elements
    assert many.stat().st_size < 1 << 20
    started = time.monotonic()
    with pytest.raises(DocumentLimitError) as info:
        check_zip(many, "many.docx", "Word document", Limits())
    assert time.monotonic() - started < 10
    assert info.value.what == "XML elements" and "at most 2,000,000 allowed" in str(info.value)
    with pytest.raises(DocumentLimitError) as big:
        check_zip(many, "many.docx", "Word document", Limits(max_xml_bytes=16 << 20))
    assert big.value.what == "bytes of XML" and big.value.value > 16 << 20
    check_zip(many, "many.docx", "Word document", Limits(max_xml_elements=4_000_000))  # within both
