"""The dashboard's document page and throughput charts in a real browser, on a real server.

With ``DOCSTATUS_UPDATE_SCREENSHOT=1`` the desktop run saves the document page
to ``docs/document-page.png`` and the charts to ``docs/throughput.png`` (the
README shows them).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from _documents import numbered_pages, pdf_bytes
from servers import Server

pytestmark = pytest.mark.timeout(120)

TOKEN = "document-page-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DOCS = Path(__file__).resolve().parents[2] / "docs"


def _upload(server: Server, name: str, content: bytes) -> str:
    answer = httpx.post(f"{server.url}/uploads", files={"file": (name, content)}, headers=AUTH)
    assert answer.status_code == 200, answer.text
    doc_id: str = answer.json()["doc_id"]
    return doc_id


def _fits(page: Page) -> None:
    scroll, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert scroll <= inner, f"the page is {scroll} px wide in a {inner} px window"


def _screenshot(page: Page, width: int, name: str, tmp_path: Path, selector: str | None = None) -> None:
    target = page.locator(selector) if selector else page
    target.screenshot(path=str(tmp_path / f"{width}-{name}"), animations="disabled")
    if width == 1280 and os.environ.get("DOCSTATUS_UPDATE_SCREENSHOT"):
        DOCS.mkdir(exist_ok=True)
        target.screenshot(path=str(DOCS / name), animations="disabled")


@pytest.fixture
def server(servers: list[Server], tmp_path: Path) -> Server:
    started = Server(tmp_path, env={"DOCSTATUS_API_TOKEN": TOKEN}).start()
    servers.append(started)
    return started


@pytest.mark.parametrize("width", [1280, 390])
def test_a_document_has_a_page_with_its_timeline_and_output(
    server: Server, page: Page, tmp_path: Path, width: int
) -> None:
    report = _upload(server, "quarterly-report.pdf", pdf_bytes(numbered_pages(3)))
    server.wait_status(report, "completed")
    page.set_viewport_size({"width": width, "height": 900})

    # Deep link: the page opens on the document.
    page.goto(f"{server.url}/#/doc/{report}")
    doc = page.locator("#doc-page")
    expect(doc).to_be_visible()
    expect(page.locator("#documents")).to_be_hidden()
    expect(page.locator("#doc-title")).to_have_text("quarterly-report.pdf")
    expect(page.locator("#doc-badge")).to_have_text("Completed")
    stages = page.locator("#doc-timeline li")
    expect(stages).to_have_count(5)
    assert [s.get_attribute("data-status") for s in stages.all()] == [
        "queued",
        "parsing",
        "embedding_visual",
        "embedding_text",
        "storing",
    ]
    expect(stages.nth(2).locator(".timeline-units")).to_have_text("3 of 3 pages")
    expect(stages.nth(3).locator(".timeline-units")).to_contain_text("chunks")
    expect(doc.locator("#doc-facts")).to_contain_text(report)
    expect(doc.locator("#doc-facts")).to_contain_text("Attempt")
    expect(page.locator("#doc-metadata")).to_contain_text('"format": "pdf"')
    expect(page.locator("#doc-error-box")).to_be_hidden()
    expect(doc.get_by_role("button", name="Retry")).to_be_hidden()
    expect(doc.get_by_role("button", name="Cancel")).to_be_hidden()

    # The output is content: with a token on the server, the page asks for it, then shows it.
    expect(page.locator("#doc-output-text")).to_contain_text("API token only")
    page.get_by_role("button", name="Enter the API token").click()
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_be_visible()
    dialog.get_by_label("API token").fill(TOKEN)
    dialog.get_by_role("button", name="Use this token").click()
    expect(page.locator("#doc-output-text")).to_have_text("3 pages, 3 text chunks stored.")
    thumbs = page.locator("#doc-thumbs img")
    expect(thumbs).to_have_count(3)
    for n in range(3):
        expect(thumbs.nth(n)).to_have_attribute("src", re.compile(r"^data:image/"))
    expect(page.locator("#doc-output-link")).to_have_attribute("href", f"documents/{report}")
    _fits(page)
    _screenshot(page, width, "document-page.png", tmp_path)

    # Back to the list, and from a row's name to its page again.
    page.get_by_role("link", name="← All documents").click()
    expect(page.locator("#documents")).to_be_visible()
    expect(doc).to_be_hidden()
    page.locator("#rows a.filename", has_text="quarterly-report.pdf").click()
    expect(doc).to_be_visible()
    assert page.url.endswith(f"#/doc/{report}")


def test_a_failed_document_shows_its_error_in_full_and_can_be_deleted(
    server: Server, page: Page, tmp_path: Path
) -> None:
    broken = _upload(server, "cut-short.pdf", pdf_bytes(numbered_pages(3))[:700])
    body = server.wait_status(broken, "failed")
    page.goto(f"{server.url}/#/doc/{broken}")
    expect(page.locator("#doc-badge")).to_have_text("Failed")
    expect(page.locator("#doc-error")).to_have_text(body["error"])
    expect(page.locator("#doc-output-text")).to_have_text("Nothing was stored: the document failed.")
    doc = page.locator("#doc-page")
    expect(doc.get_by_role("button", name="Retry")).to_be_hidden()  # it would only fail again
    delete = doc.get_by_role("button", name="Delete")
    expect(delete).to_be_visible()

    # Keeping it changes nothing; deleting without the token asks for it, then deletes.
    delete.click()
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_contain_text("Delete cut-short.pdf?")
    dialog.get_by_role("button", name="Keep it").click()
    expect(dialog).to_be_hidden()
    assert httpx.get(f"{server.url}/status/{broken}").status_code == 200
    delete.click()
    dialog.get_by_role("button", name="Delete").click()
    expect(dialog).to_contain_text("API token needed")
    dialog.get_by_label("API token").fill(TOKEN)
    dialog.get_by_role("button", name="Use this token").click()
    expect(page.locator("#documents")).to_be_visible()
    assert page.url.endswith("#/")
    assert httpx.get(f"{server.url}/status/{broken}").status_code == 404

    # A link to a document that is not there says so.
    page.goto(f"{server.url}/#/doc/{broken}")
    expect(page.locator("#doc-missing")).to_have_text("No document has this id (or it was removed).")


def test_a_document_page_follows_its_document_live(servers: list[Server], page: Page, tmp_path: Path) -> None:
    from servers import GATED

    gates = tmp_path / "gates"
    gates.mkdir()
    server = Server(tmp_path, env={"TEST_GATES": str(gates), "TEST_CHUNK_SECONDS": "0.1"}).start(GATED)
    servers.append(server)
    gate = gates / "held.txt.hold"
    gate.write_text("0.5")
    text = "\n\n".join(
        f"Section {n}. " + "Revenue, costs and the outlook in some detail. " * 20 for n in range(8)
    )
    doc_id = _upload(server, "held.txt", text.encode())
    page.goto(f"{server.url}/#/doc/{doc_id}")
    expect(page.locator("#doc-badge")).to_have_text("Embedding text")
    expect(page.locator("#doc-timeline li").last).to_have_attribute("data-status", "embedding_text")
    expect(page.locator("#doc-facts")).to_contain_text(":")  # the worker, host:pid
    cancel = page.locator("#doc-page").get_by_role("button", name="Cancel")
    expect(cancel).to_be_visible()
    gate.unlink()
    expect(page.locator("#doc-badge")).to_have_text("Completed")
    expect(page.locator("#doc-timeline li").last).to_have_attribute("data-status", "storing")
    expect(cancel).to_be_hidden()
    expect(page.locator("#doc-output-text")).to_contain_text("stored.")


def _seed_an_hour(db: Path) -> tuple[int, int, int]:
    """Documents that ended over the last hour, a few each minute, stored before the server starts.

    Returns what ended in all: (completed, failed, pages).
    """
    from docstatus import StatusManager
    from docstatus.records import Mutation, new_record

    now = time.time()
    totals = [0, 0, 0]
    with StatusManager(store=f"sqlite:///{db}", cleanup_interval_seconds=None) as manager:
        for ago in range(3, 58):
            for n in range(1 + (ago * 7) % 4):
                at = now - ago * 60 - 5 - n
                pages = 1 + (ago + n) % 9
                record = new_record(f"seed-{ago}-{n}", f"seed-{ago}-{n}.pdf", {"format": "pdf"}, at - 20)
                record = Mutation("claim", at - 18, fields={"worker": "node-a:1", "seconds": 30.0})(record)
                visual = {"page": pages, "total_pages": pages}
                record = Mutation("update", at - 10, target="embedding_visual", fields=visual)(record)
                failed = ago % 11 == 0 and n == 0
                kind = "fail" if failed else "complete"
                record = Mutation(kind, at, fields={"error": "boom"} if failed else {})(record)
                manager.store.create(record)
                totals[1 if failed else 0] += 1
                totals[2] += pages
    return totals[0], totals[1], totals[2]


@pytest.mark.parametrize("width", [1280, 390])
def test_the_charts_show_the_last_hour(servers: list[Server], page: Page, tmp_path: Path, width: int) -> None:
    completed_before, failed_before, pages_before = _seed_an_hour(tmp_path / "status.db")
    server = Server(tmp_path, env={"DOCSTATUS_API_TOKEN": TOKEN}).start()
    servers.append(server)
    done = [_upload(server, f"note-{n}.md", f"# Note {n}\n\nSome text.".encode()) for n in range(3)]
    paged = _upload(server, "paged.pdf", pdf_bytes(numbered_pages(4)))
    broken = _upload(server, "broken.pdf", pdf_bytes(numbered_pages(2))[:600])
    for doc_id in [*done, paged]:
        server.wait_status(doc_id, "completed")
    server.wait_status(broken, "failed")
    completed_n, failed_n = completed_before + 4, failed_before + 1
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(server.url)
    charts = page.locator("#throughput")
    expect(charts).to_be_visible()
    completed, pages, failed = (page.locator(f"#chart-{key}") for key in ("completed", "pages", "failed"))
    expect(completed.locator(".chart-value")).to_have_text(f"{completed_n} in the hour")
    expect(failed.locator(".chart-value")).to_have_text(f"{failed_n} in the hour")
    expect(pages.locator(".chart-value")).to_contain_text("/s")
    for chart in (completed, pages, failed):
        expect(chart.locator("svg rect")).to_have_count(60)
        expect(chart.locator("svg")).to_have_attribute("role", "img")
    assert completed.get_attribute("data-total") == str(completed_n)
    assert failed.get_attribute("data-total") == str(failed_n)
    # The highest bar is the full height; the oldest minutes had no documents.
    heights = completed.locator("svg rect").evaluate_all(
        "rs => rs.map(r => Number(r.getAttribute('height')))"
    )
    assert max(heights) == pytest.approx(70.0) and heights[0] == 0.0
    # Each bar says its minute and its value.
    assert completed.locator("svg rect title").nth(59).text_content().endswith("finished")  # type: ignore[union-attr]
    expect(page.locator("#throughput-note")).to_have_text(
        f"{pages_before + 4} pages in {completed_n + failed_n} documents"
    )

    # A document that ends while the page is open shows in the charts soon after.
    late = _upload(server, "late.md", b"# Late\n\nText.")
    server.wait_status(late, "completed")
    expect(completed.locator(".chart-value")).to_have_text(f"{completed_n + 1} in the hour")
    _fits(page)
    _screenshot(page, width, "throughput.png", tmp_path, "#throughput")
