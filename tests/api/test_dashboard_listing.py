"""The dashboard over a store larger than a page, in a real browser: paging, filters, search, bulk actions.

The store is filled before the server starts (the records written as the
pipeline would have, at past times); the server runs no workers, so nothing
changes but what the page does.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, Route, expect

from docstatus.records import Mutation, Record, new_record
from docstatus.stores.sqlite import SQLiteStore
from servers import NO_WORKERS, Server

pytestmark = pytest.mark.timeout(180)

TOKEN = "bulk-token"
OLD = 230  # completed two days ago
RETRYABLE = 12  # failed an hour ago, named invoice-*
FOR_GOOD = 5  # failed an hour ago, not retryable, named contract-*
TOTAL = OLD + RETRYABLE + FOR_GOOD


def _record(doc_id: str, filename: str, at: float, error: str | None = None) -> Record:
    record = new_record(doc_id, filename, {"format": "pdf"}, at - 30)
    record = Mutation("claim", at - 20, fields={"worker": "node-a:1", "seconds": 30.0})(record)
    if error is None:
        return Mutation("complete", at)(record)
    return Mutation("fail", at, fields={"error": error})(record)


def _seed(db: Path) -> None:
    now = time.time()
    records = [_record(f"old{i:061d}", f"report-{i:03d}.pdf", now - 2 * 86400 + i) for i in range(OLD)]
    records += [
        _record(f"inv{i:061d}", f"invoice-{i:02d}.pdf", now - 3600 + i, "the OCR service timed out")
        for i in range(RETRYABLE)
    ]
    for i in range(FOR_GOOD):
        record = _record(f"con{i:061d}", f"contract-{i}.pdf", now - 3000 + i, "the file is damaged")
        record["metadata"] = {**record["metadata"], "retryable": False}
        records.append(record)
    store = SQLiteStore.from_url(f"sqlite:///{db}")
    try:
        store.import_records(records)
    finally:
        store.close()


@pytest.fixture
def server(servers: list[Server], tmp_path: Path) -> Server:
    _seed(tmp_path / "status.db")
    started = Server(tmp_path, env={"DOCSTATUS_API_TOKEN": TOKEN}).start(NO_WORKERS)
    servers.append(started)
    return started


@pytest.mark.parametrize("width", [1280, 390])
def test_the_list_loads_page_by_page_and_filters_on_the_server(
    server: Server, page: Page, width: int
) -> None:
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if "/status" in r.url else None)
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(server.url)
    expect(page.locator("#count-total")).to_have_text(str(TOTAL))
    expect(page.locator("#rows tr")).to_have_count(100)
    expect(page.locator("#truncated")).to_have_text(f"Showing the 100 most recent of {TOTAL}.")
    # Newest first: the failures of the last hour above the reports of two days ago.
    assert page.locator("#rows .filename").first.text_content() == f"contract-{FOR_GOOD - 1}.pdf"
    assert not any("status/queue" in url for url in requests)  # never the whole listing

    # Scrolling to the end loads the next pages, until there are none.
    for shown in (200, TOTAL):
        page.locator("#load-more").scroll_into_view_if_needed()
        expect(page.locator("#rows tr")).to_have_count(shown)
    expect(page.locator("#load-more")).to_be_hidden()
    expect(page.locator("#truncated")).to_be_hidden()

    # The filter and the search are the server's: only what matches is loaded.
    page.get_by_label("Show").select_option("failed")
    expect(page.locator("#rows tr")).to_have_count(RETRYABLE + FOR_GOOD)
    page.get_by_label("Search").fill("INVOICE")
    expect(page.locator("#rows tr")).to_have_count(RETRYABLE)
    page.get_by_label("Search").fill("con")  # an id prefix too
    expect(page.locator("#rows tr")).to_have_count(FOR_GOOD)
    page.get_by_label("Search").fill("nothing-like-this")
    expect(page.locator("#empty")).to_have_text("No documents match this filter.")
    page.get_by_label("Search").fill("")
    page.get_by_label("Show").select_option("all")
    expect(page.locator("#rows tr")).to_have_count(100)
    scroll, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert scroll <= inner


def test_a_filter_chosen_while_the_last_one_still_loads_is_the_one_shown(server: Server, page: Page) -> None:
    page.goto(server.url)
    expect(page.locator("#rows tr")).to_have_count(100)
    expect(page.locator("#count-total")).to_have_text(str(TOTAL))  # the first load is over
    held: list[Route] = []

    def failed_listing(url: str) -> bool:
        return "status=failed" in url

    def hold(route: Route) -> None:
        held.append(route)  # the failed documents' page waits, unanswered

    page.route(failed_listing, hold)
    page.get_by_label("Show").select_option("failed")
    while not held:
        page.wait_for_timeout(20)
    page.get_by_label("Show").select_option("all")  # asked for while the failed ones load
    # Once the failed ones are in, the list is loaded again as the filter says now.
    with page.expect_response(lambda r: "/status?limit=" in r.url and "status=failed" not in r.url):
        held[0].continue_()
    expect(page.locator("#rows tr:visible")).to_have_count(100)
    expect(page.locator("#truncated")).to_have_text(f"Showing the 100 most recent of {TOTAL}.")


def test_bulk_retry_and_delete_say_how_many_first(server: Server, page: Page) -> None:
    page.goto(server.url)
    expect(page.locator("#count-failed")).to_have_text(str(RETRYABLE + FOR_GOOD))
    dialog = page.locator("#confirm-dialog")

    # Retry the failed invoices: the dialog counts them; cancelling changes nothing.
    page.get_by_label("Search").fill("invoice")
    expect(page.locator("#rows tr")).to_have_count(RETRYABLE)
    page.get_by_role("button", name="Retry failed…").click()
    expect(dialog).to_contain_text(f"Retry {RETRYABLE} failed documents matching “invoice”?")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    assert httpx.get(f"{server.url}/status/inv{0:061d}").json()["status"] == "failed"

    # Confirmed without the token: the page asks for it, then retries them.
    page.get_by_role("button", name="Retry failed…").click()
    dialog.get_by_role("button", name="Retry them").click()
    expect(dialog).to_contain_text("API token needed")
    dialog.get_by_label("API token").fill(TOKEN)
    dialog.get_by_role("button", name="Use this token").click()
    expect(page.locator("#bulk-result")).to_have_text(f"Retried {RETRYABLE}, skipped 0.")
    expect(page.locator("#count-failed")).to_have_text(str(FOR_GOOD))
    expect(page.locator("#rows tr[data-status='queued']")).to_have_count(RETRYABLE)

    # The ones that failed for good are counted, then skipped.
    page.get_by_label("Search").fill("")
    page.get_by_role("button", name="Retry failed…").click()
    expect(dialog).to_contain_text(f"Retry {FOR_GOOD} failed documents?")
    dialog.get_by_role("button", name="Retry them").click()
    expect(page.locator("#bulk-result")).to_have_text(f"Retried 0, skipped {FOR_GOOD}.")

    # Delete what finished over a day ago: the old reports, not the recent failures.
    page.get_by_label("older than").select_option("86400")
    page.get_by_role("button", name="Delete finished…").click()
    expect(dialog).to_contain_text(f"Delete {OLD} documents finished over 1 day ago")
    dialog.get_by_role("button", name="Delete them").click()
    expect(page.locator("#bulk-result")).to_have_text(f"Deleted {OLD} documents.")
    expect(page.locator("#count-total")).to_have_text(str(RETRYABLE + FOR_GOOD))
    expect(page.locator("#rows tr")).to_have_count(RETRYABLE + FOR_GOOD)

    # Nothing left to delete: the dialog says so and offers nothing to confirm.
    page.get_by_role("button", name="Delete finished…").click()
    expect(dialog).to_contain_text("nothing to delete")
    expect(dialog.get_by_role("button", name="Delete them")).to_be_hidden()
    dialog.get_by_role("button", name="Close").click()
