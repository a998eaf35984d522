"""The dashboard in a real browser: Debian's Chromium, driven headless by Playwright, on a real server.

The browser must start: a missing or broken Chromium fails these tests (``make
test`` installs it; the browser fixtures are in this folder's conftest). With
``DOCSTATUS_UPDATE_SCREENSHOT=1`` the main test also saves the page
mid-processing to ``docs/dashboard.png``.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from playwright.sync_api import Locator, Page, expect

from _documents import numbered_pages, pdf_bytes
from docstatus import StatusManager
from docstatus.api import dashboard_router, install_error_handlers
from docstatus.api.routes.dashboard import CONTENT_SECURITY_POLICY
from servers import GATED, Server

pytestmark = pytest.mark.timeout(120)

TOKEN = "dashboard-token-42"
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"


def row(page: Page, filename: str) -> Locator:
    return page.locator("#rows tr").filter(has=page.locator(".filename", has_text=filename))


def upload_item(page: Page, filename: str) -> Locator:
    return page.locator("#uploads li").filter(has=page.locator(".upload-name", has_text=filename))


def paragraphs(title: str, count: int) -> bytes:
    """A text document the text processor cuts into about ``count`` chunks."""
    sentence = f"{title} covers revenue, costs and the outlook for the next quarter in some detail. "
    return "\n\n".join(f"Section {n}. " + sentence * 11 for n in range(count)).encode()


def wait_held(server: Server, filename: str, fraction: float) -> dict[str, Any]:
    """The status of ``filename`` once its text embedding reached ``fraction`` (where it is held)."""
    deadline = time.monotonic() + 20
    while True:
        queue = httpx.get(f"{server.url}/status/queue").json()["queue"]
        found: dict[str, Any] = next(d for d in queue if d["filename"] == filename)
        chunk, total = found["metadata"].get("chunk", 0), found["metadata"].get("total_chunks", 0)
        if total and chunk >= total * fraction:
            return found
        assert time.monotonic() < deadline, found
        time.sleep(0.05)


def hold(gates: Path, filename: str, fraction: float) -> Path:
    gate = gates / f"{filename}.hold"
    gate.write_text(str(fraction))
    return gate


def test_dashboard_uploads_and_follows_documents_live(
    servers: list[Server], page: Page, tmp_path: Path
) -> None:
    gates = tmp_path / "gates"
    gates.mkdir()
    env = {
        "DOCSTATUS_API_TOKEN": TOKEN,
        "DOCSTATUS_WORKERS": "3",
        "TEST_GATES": str(gates),
        "TEST_CHUNK_SECONDS": "0.1",
    }
    server = Server(tmp_path, env=env).start(GATED)
    servers.append(server)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    # A document finished before the page opens: the page lists it from GET /status/queue.
    earlier = httpx.post(
        f"{server.url}/uploads", files={"file": ("handbook.md", paragraphs("Handbook", 3))}, headers=auth
    ).json()
    assert server.wait_status(earlier["doc_id"], "completed", "failed")["status"] == "completed"

    files = tmp_path / "files"
    files.mkdir()
    report = files / "quarterly-report.txt"
    report.write_bytes(paragraphs("The quarterly report", 12))
    notes = files / "meeting-notes.md"
    notes.write_bytes(b"# Meeting notes\n\n" + paragraphs("The meeting", 10))
    contract = files / "scanned-contract.pdf"
    contract.write_bytes(pdf_bytes(numbered_pages(3))[:700])  # a PDF cut short: accepted, then fails
    program = files / "setup.exe"
    program.write_bytes(b"MZ\x90\x00 not a document")

    page.goto(server.url)
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    expect(row(page, "handbook.md")).to_have_attribute("data-status", "completed")

    # Keyboard: the drop zone is a button that opens the file picker. Without the token the
    # server refuses the upload, and the page says why and opens the token field.
    # locator.press focuses the button and waits for it before sending the key; a bare
    # focus() + keyboard.press lost the file chooser in ~2 of 3 runs of headless Chromium.
    with page.expect_file_chooser() as chooser:
        page.locator("#dropzone").press("Enter")
    chooser.value.set_files(str(report))
    expect(upload_item(page, "quarterly-report.txt")).to_contain_text("needs an API token")
    expect(page.locator("#token-box")).to_have_attribute("open", "")
    upload_item(page, "quarterly-report.txt").get_by_role(
        "button", name="Dismiss quarterly-report.txt"
    ).click()
    expect(page.locator("#uploads li")).to_have_count(0)
    page.get_by_label("Bearer token").fill(TOKEN)

    hold(gates, report.name, 0.4)
    hold(gates, notes.name, 0.7)
    page.locator("#file-input").set_input_files([report, notes, contract, program])

    for name in (report.name, notes.name, contract.name):
        expect(upload_item(page, name)).to_have_attribute("data-state", "accepted")
        expect(upload_item(page, name).get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100")
    expect(upload_item(page, "setup.exe")).to_contain_text("Refused: Unsupported format")

    failed = row(page, contract.name)
    expect(failed).to_have_attribute("data-status", "failed")
    for name, fraction in ((report.name, 0.4), (notes.name, 0.7)):  # both held: the page shows where
        held = wait_held(server, name, fraction)
        expect(row(page, name).locator(".percent")).to_have_text(f"{int(held['progress'] * 100)}%")
    page.evaluate("document.activeElement.blur()")
    page.screenshot(path=str(tmp_path / "light.png"), full_page=True, animations="disabled")
    if os.environ.get("DOCSTATUS_UPDATE_SCREENSHOT"):
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True, animations="disabled")
    expect(failed.locator(".badge")).to_have_text("Failed")
    expect(failed.locator(".error-text")).to_contain_text("damaged or truncated")
    for name in (report.name, notes.name):  # held part-way through their text embedding
        expect(row(page, name)).to_have_attribute("data-status", "embedding_text")
        expect(row(page, name).locator(".cell-stage")).to_contain_text("chunk")
        expect(row(page, name).locator(".cell-eta")).to_have_text(re.compile(r"^\d+\.\ds$"))
    report_bar = row(page, report.name).get_by_role("progressbar")
    assert 60 <= int(report_bar.get_attribute("aria-valuenow") or 0) < 100
    expect(page.locator("#count-active")).to_have_text("2")
    expect(page.locator("#count-completed")).to_have_text("1")
    expect(page.locator("#count-failed")).to_have_text("1")
    # Newest first: the three uploads above the document that was there before.
    names = page.locator("#rows .filename").all_text_contents()
    assert names[-1] == "handbook.md" and set(names[:3]) == {report.name, notes.name, contract.name}

    expect(page.locator("#announcer")).to_contain_text(f"{contract.name} failed")

    # Dark scheme: the page follows prefers-color-scheme.
    light_background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    page.emulate_media(color_scheme="dark")
    dark_background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert dark_background != light_background
    page.screenshot(path=str(tmp_path / "dark.png"), full_page=True, animations="disabled")
    page.emulate_media(color_scheme="light")

    # The filter shows only failed documents, then everything again.
    page.get_by_label("Show").select_option("failed")
    expect(page.locator("#rows tr:visible")).to_have_count(1)
    expect(page.locator("#rows tr:visible .filename")).to_have_text(contract.name)
    page.get_by_label("Show").select_option("all")
    expect(page.locator("#rows tr:visible")).to_have_count(4)

    for name in (report.name, notes.name):
        (gates / f"{name}.hold").unlink()
    for name in (report.name, notes.name):
        done = row(page, name)
        expect(done).to_have_attribute("data-status", "completed")
        expect(done.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100")
        expect(done.locator(".percent")).to_have_text("100%")
        expect(done.locator(".cell-eta")).to_have_text("—")
    expect(page.locator("#count-active")).to_have_text("0")
    expect(page.locator("#count-completed")).to_have_text("3")
    expect(page.locator("#announcer")).to_contain_text("completed")

    # No Retry for a file that can only fail the same way (it is cut short).
    expect(failed.get_by_role("button", name=f"Retry {contract.name}")).to_be_hidden()
    doc_id = failed.get_attribute("data-doc-id")
    assert httpx.get(f"{server.url}/status/{doc_id}").json()["metadata"]["retryable"] is False


def test_dashboard_shows_a_lost_connection_and_catches_up(
    servers: list[Server], page: Page, tmp_path: Path
) -> None:
    server = Server(tmp_path).start()
    servers.append(server)
    page.goto(server.url)
    indicator = page.locator("#connection")
    expect(indicator).to_have_attribute("data-state", "live")
    expect(page.locator("#empty")).to_be_visible()

    server.stop()
    expect(indicator).not_to_have_attribute("data-state", "live")
    expect(indicator).to_contain_text("Connection lost")

    # Same store, same address: the page reconnects by itself and gets what it missed.
    server.start(port=server.port)
    answer = httpx.post(f"{server.url}/uploads", files={"file": ("while-away.txt", b"written meanwhile")})
    server.wait_status(answer.json()["doc_id"], "completed", "failed")
    expect(indicator).to_have_attribute("data-state", "live")
    expect(row(page, "while-away.txt")).to_have_attribute("data-status", "completed")
    expect(page.locator("#count-completed")).to_have_text("1")


def test_dashboard_reloads_its_listing_on_a_reset(servers: list[Server], page: Page, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = Server(tmp_path / "a").start()
    servers.append(first)
    page.goto(first.url)
    answer = httpx.post(f"{first.url}/uploads", files={"file": ("old-store.txt", b"in the first store")})
    first.wait_status(answer.json()["doc_id"], "completed", "failed")
    expect(row(page, "old-store.txt")).to_have_attribute("data-status", "completed")

    # Another store on the same address: the page resumes from an id it never reached, gets a
    # reset, and shows that store's listing (the old document is gone from it).
    first.stop()
    expect(page.locator("#connection")).not_to_have_attribute("data-state", "live")
    second = Server(tmp_path / "b").start(port=first.port)
    servers.append(second)
    expect(row(page, "old-store.txt")).to_have_count(0)
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    answer = httpx.post(f"{second.url}/uploads", files={"file": ("new-store.txt", b"in the second store")})
    second.wait_status(answer.json()["doc_id"], "completed", "failed")
    expect(row(page, "new-store.txt")).to_have_attribute("data-status", "completed")


def test_dashboard_files_are_served_with_a_strict_policy() -> None:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(dashboard_router())
    with TestClient(app) as client:
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert "<script" in page.text and "<script>" not in page.text  # no inline script
        # Server data (file names, error messages) is inserted as text, never parsed as HTML.
        assert "innerHTML" not in client.get("/dashboard/app.js").text
        for name, kind in [
            ("app.js", "text/javascript"),
            ("style.css", "text/css"),
            ("favicon.svg", "image/svg"),
        ]:
            asset = client.get(f"/dashboard/{name}")
            assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind), name
            again = client.get(f"/dashboard/{name}", headers={"If-None-Match": asset.headers["etag"]})
            assert again.status_code == 304 and again.content == b""
        for missing in ["/dashboard/index.html", "/dashboard/..%2Fdashboard.py", "/dashboard/nope.js"]:
            answer = client.get(missing)
            assert answer.status_code == 404 and answer.json()["code"] == "NOT_FOUND", missing


LONG_NAME = "annual-financial-statements-and-management-discussion-for-the-year.txt"


def _in_view(page: Page, locator: Locator) -> bool:
    """Whether ``locator`` is shown and lies within the viewport's width (not scrolled out sideways)."""
    box = locator.bounding_box()
    width = page.viewport_size["width"] if page.viewport_size else 0
    return box is not None and box["width"] > 0 and box["x"] >= 0 and box["x"] + box["width"] <= width


@pytest.mark.parametrize("width", [390, 768, 1280])
def test_dashboard_fits_a_phone_and_a_desktop(
    servers: list[Server], page: Page, tmp_path: Path, width: int
) -> None:
    gates = tmp_path / "gates"
    gates.mkdir()
    server = Server(tmp_path, env={"TEST_GATES": str(gates), "TEST_CHUNK_SECONDS": "0.1"}).start(GATED)
    servers.append(server)
    hold(gates, LONG_NAME, 0.5)
    held = httpx.post(f"{server.url}/uploads", files={"file": (LONG_NAME, paragraphs("Annual", 12))}).json()
    broken = ("damaged-scan-of-the-signed-contract-with-appendices.pdf", pdf_bytes(numbered_pages(3))[:700])
    httpx.post(f"{server.url}/uploads", files={"file": broken})
    wait_held(server, LONG_NAME, 0.5)

    page.set_viewport_size({"width": width, "height": 844})
    page.goto(server.url)
    page.locator("#token-box summary").click()  # the token field open too: the widest form on the page
    page.locator("#file-input").set_input_files(
        [{"name": "refused-" + LONG_NAME.replace(".txt", ".exe"), "mimeType": "x", "buffer": b"MZ\x90"}]
    )
    expect(upload_item(page, "refused-")).to_contain_text("Refused")
    held_row = row(page, LONG_NAME)
    expect(held_row).to_have_attribute("data-status", "embedding_text")
    expect(held_row.locator(".cell-eta")).to_have_text(re.compile(r"^\d+(\.\d)?s$"))
    expect(row(page, broken[0]).locator(".error-text")).to_contain_text("damaged or truncated")
    page.screenshot(path=str(tmp_path / f"dashboard-{width}.png"), full_page=True, animations="disabled")

    overflow = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert overflow[0] <= overflow[1], f"the page is {overflow[0]} px wide in a {overflow[1]} px window"
    for part in (".cell-progress .progress", ".percent", ".cell-eta", ".cell-elapsed", ".badge", ".filename"):
        assert _in_view(page, held_row.locator(part)), part
    assert _in_view(page, row(page, broken[0]).locator(".error-text"))
    if width >= 1280:  # the desktop keeps its table: one line per document under the column headers
        expect(page.get_by_role("region", name="Documents").locator("thead")).to_be_visible()
        boxes = [held_row.locator(p).bounding_box() for p in (".filename", ".percent", ".cell-eta")]
        assert all(b is not None for b in boxes)
        tops = {round(b["y"] + b["height"] / 2) for b in boxes if b is not None}
        assert max(tops) - min(tops) <= 12, tops
    (gates / f"{LONG_NAME}.hold").unlink()
    server.wait_status(held["doc_id"], "completed", "failed")


def test_uploads_follow_their_documents_and_fold_when_finished(
    servers: list[Server], page: Page, tmp_path: Path
) -> None:
    gates = tmp_path / "gates"
    gates.mkdir()
    server = Server(tmp_path, env={"TEST_GATES": str(gates), "TEST_CHUNK_SECONDS": "0.1"}).start(GATED)
    servers.append(server)
    files = tmp_path / "files"
    files.mkdir()
    slow, quick, broken = files / "slow-report.txt", files / "quick-note.txt", files / "cut-short.pdf"
    slow.write_bytes(paragraphs("The slow report", 12))
    quick.write_bytes(b"A short note.")
    broken.write_bytes(pdf_bytes(numbered_pages(3))[:700])
    hold(gates, slow.name, 0.5)
    page.set_viewport_size({"width": 1280, "height": 720})
    page.goto(server.url)
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")

    page.locator("#file-input").set_input_files([slow, quick, broken])
    # Not "Queued" for ever: each upload says where its document is, live.
    expect(upload_item(page, slow.name).locator(".upload-state")).to_have_text(
        re.compile(r"^Embedding text · \d+%$")
    )
    expect(upload_item(page, broken.name).locator(".upload-state")).to_contain_text(
        "Failed: 'cut-short.pdf' cannot be read"
    )
    expect(upload_item(page, broken.name)).to_have_attribute("data-status", "failed")
    # Finished ones fold into one line a few seconds later; the active one stays.
    expect(page.locator("#uploads li")).to_have_count(1)
    expect(page.locator("#uploads-folded")).to_have_text("2 finished uploads, shown in Documents below")
    expect(upload_item(page, slow.name)).to_have_attribute("data-status", "embedding_text")
    box = page.locator("#documents").bounding_box()
    assert box is not None and box["y"] < 720, box  # the table starts above the fold

    (gates / f"{slow.name}.hold").unlink()
    expect(upload_item(page, slow.name).locator(".upload-state")).to_have_text("Completed")
    expect(page.locator("#uploads li")).to_have_count(0)
    expect(page.locator("#uploads-folded")).to_have_text("3 finished uploads, shown in Documents below")
    page.get_by_role("button", name="Clear finished uploads").click()
    expect(page.locator("#uploads-box")).to_be_hidden()
    expect(row(page, quick.name)).to_have_attribute("data-status", "completed")


def test_dashboard_cancels_an_active_document_and_shows_the_workers(
    servers: list[Server], page: Page, tmp_path: Path
) -> None:
    gates = tmp_path / "gates"
    gates.mkdir()
    # One worker: a document uploaded after the cancel is processed only once the cancelled
    # one's processor has given up, which shows that its later reports changed nothing.
    env = {"DOCSTATUS_API_TOKEN": TOKEN, "DOCSTATUS_WORKERS": "1", "TEST_GATES": str(gates)}
    server = Server(tmp_path, env=env).start(GATED)
    servers.append(server)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    done = httpx.post(f"{server.url}/uploads", files={"file": ("done.md", b"# Done\n\nShort.")}, headers=auth)
    server.wait_status(done.json()["doc_id"], "completed")
    gate = hold(gates, "long-report.txt", 0.5)
    upload = httpx.post(
        f"{server.url}/uploads", files={"file": ("long-report.txt", paragraphs("Long", 8))}, headers=auth
    )
    doc_id = upload.json()["doc_id"]
    wait_held(server, "long-report.txt", 0.5)

    page.goto(server.url)
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    active, finished = row(page, "long-report.txt"), row(page, "done.md")
    expect(active).to_have_attribute("data-status", "embedding_text")
    expect(finished.get_by_role("button", name="Cancel done.md")).to_be_hidden()
    cancel = active.get_by_role("button", name="Cancel long-report.txt")
    expect(cancel).to_be_visible()
    # The service's own worker pool is in the panel, holding the active document.
    expect(page.locator("#worker-count")).to_have_text("1")
    own = page.locator("#worker-rows tr")
    expect(own.locator(".worker-engine")).to_have_text("local")
    expect(own.locator(".worker-docs")).to_have_text("1")

    # Dismissing the confirmation changes nothing.
    page.once("dialog", lambda dialog: dialog.dismiss())
    cancel.click()
    expect(cancel).to_be_enabled()
    assert httpx.get(f"{server.url}/status/{doc_id}").json()["status"] == "embedding_text"

    # Without the token the server refuses, and the page says why and asks for it.
    page.once("dialog", lambda dialog: dialog.accept())
    cancel.click()
    expect(active.locator(".error-text")).to_contain_text("Cancel refused")
    expect(page.locator("#token-box")).to_have_attribute("open", "")
    page.get_by_label("Bearer token").fill(TOKEN)
    page.once("dialog", lambda dialog: dialog.accept())
    cancel.click()
    expect(active).to_have_attribute("data-status", "failed")
    expect(active.locator(".error-text")).to_have_text("cancelled")
    expect(cancel).to_be_hidden()
    expect(active.get_by_role("button", name="Retry long-report.txt")).to_be_visible()
    gate.unlink()  # the worker's next report is refused: the document stays cancelled
    after = httpx.post(
        f"{server.url}/uploads", files={"file": ("after.md", b"# After\n\nText.")}, headers=auth
    )
    server.wait_status(after.json()["doc_id"], "completed")
    body = httpx.get(f"{server.url}/status/{doc_id}").json()
    assert (body["status"], body["error"]) == ("failed", "cancelled")
    expect(row(page, "after.md")).to_have_attribute("data-status", "completed")

    # A cancelled document can be retried: a new attempt, which completes.
    active.get_by_role("button", name="Retry long-report.txt").click()
    expect(active.locator(".attempt")).to_have_text("attempt 2")
    expect(active).to_have_attribute("data-status", "completed")

    # A worker process on the same store appears in the panel at the next poll.
    info = {"host": "node-a", "pid": 4242, "engine": "rq", "processes": 3}
    with StatusManager(store=f"sqlite:///{tmp_path / 'status.db'}", cleanup_interval_seconds=None) as store:
        store.heartbeat("node-a:4242", info, 60)
        expect(page.locator("#worker-count")).to_have_text("2")
        expect(page.locator("#worker-rows tr")).to_have_count(2)
        worker = page.locator("#worker-rows tr", has_text="node-a:4242")
        expect(worker.locator(".worker-id")).to_have_text("node-a:4242")
        expect(worker.locator(".worker-engine")).to_have_text("rq")
        expect(worker.locator(".worker-processes")).to_have_text("3")
        expect(worker.locator(".worker-docs")).to_have_text("0")
        expect(worker.locator(".worker-seen")).to_contain_text("ago")
        store.forget_worker("node-a:4242")
        expect(page.locator("#worker-count")).to_have_text("1")


def test_dashboard_shows_the_run_and_the_queue_wait_apart(
    servers: list[Server], page: Page, tmp_path: Path
) -> None:
    # Records changed at known times, stored before the server starts: the times shown are exact.
    from docstatus.records import Mutation, new_record

    start = time.time() - 60
    queued = new_record("q" * 64, "still-waiting.pdf", {"format": "pdf"}, start)
    claimed = Mutation("claim", start + 3.0, fields={"worker": "elsewhere:1", "seconds": 30.0})(
        new_record("d" * 64, "waited-first.pdf", {"format": "pdf"}, start)
    )
    done = Mutation("complete", start + 5.0)(claimed)
    store = StatusManager(store=f"sqlite:///{tmp_path / 'status.db'}", cleanup_interval_seconds=None)
    store.store.create(done)
    store.store.create(queued)
    store.close()
    server = Server(tmp_path).start()
    servers.append(server)
    page.goto(server.url)
    finished = row(page, "waited-first.pdf")
    expect(finished.locator(".cell-elapsed .run")).to_have_text("2.0s")  # the run, without the wait
    expect(finished.locator(".cell-elapsed .waited")).to_have_text("waited 3.0s")
    waiting = row(page, "still-waiting.pdf")
    expect(waiting.locator(".cell-elapsed .run")).to_have_text("—")  # not started: no run yet
    expect(waiting.locator(".cell-elapsed .waited")).to_have_text(re.compile(r"^waiting 1m 0\ds$"))
