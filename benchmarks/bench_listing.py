"""The listing (``GET /status`` filters, sorts, cursors) at 100,000 documents beside the same at 1,000.

SQLite store (the service's default). Each row times what the endpoint does
beyond HTTP: the store query and the status JSON of the page
(:func:`docstatus.api.listing.page_body`), a page of 100. The two stores are
measured in interleaved turns (A B B A ...) and each row is the median of the
turns. Target: at most 2x the 1,000-document cost (O(page), not O(documents)).

A text search (``q=``) on filenames is a scan in the sort order until the page
is full, so its cost depends on how rare the matches are: ``q=file`` matches
every document (the page fills at once); ``q=needle`` matches one document,
the oldest, so the walk reads every row (SQL compares the filenames; no row is
decoded but the match).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from docstatus.api.listing import listing_query, page_body
from docstatus.records import Record, apply_complete, apply_fail, new_record
from docstatus.stores.sqlite import SQLiteStore

from ._harness import Row, Table, median_interleaved

SMALL, LARGE = 1_000, 100_000
ROUNDS = 7
CALLS = 20
BATCH_SECONDS = 0.05
#: One document in this many has failed (so that both stores fill a page of failed ones).
FAILED_EVERY = 5


def _records(n: int, now: float) -> Iterator[Record]:
    """``n`` documents started a millisecond apart, newest last; every 5th failed, the rest completed."""
    for i in range(n):
        at = now - (n - i) * 0.001
        name = "needle.pdf" if i == 0 else f"file-{i}.pdf"
        record = new_record(f"{i:064x}", name, {"format": "pdf"}, at)
        if i % FAILED_EVERY == 1:
            yield apply_fail(record, "broken", at + 0.0005)
        else:
            yield apply_complete(record, {}, at + 0.0005)


def _store(root: Path, n: int) -> SQLiteStore:
    store = SQLiteStore.from_url(f"sqlite:///{root / f'listing-{n}.db'}")
    store.import_records(_records(n, time.time()))
    return store


def _timer(store: SQLiteStore, params: dict[str, object]) -> Callable[[], float]:
    """Microseconds per call of one page of ``params`` (the cursor, if asked for, of the first page)."""
    wanted = dict(params)
    if wanted.pop("second_page", False):
        first = listing_query(**wanted)  # type: ignore[arg-type]
        wanted["cursor"] = page_body(first, store.query(first))["next"]
    query = listing_query(**wanted)  # type: ignore[arg-type]
    start = time.perf_counter()
    page_body(query, store.query(query))  # also warms the page cache
    # As many calls as fill about BATCH_SECONDS (a full scan takes far longer than a page).
    calls = max(1, min(CALLS, int(BATCH_SECONDS / max(time.perf_counter() - start, 1e-9))))

    def measure() -> float:
        start = time.perf_counter()
        for _ in range(calls):
            page_body(query, store.query(query))
        return (time.perf_counter() - start) / calls * 1e6

    return measure


ROWS: list[tuple[str, dict[str, object]]] = [
    ("GET /status (no filter)", {}),
    ("GET /status?q=file (every document matches)", {"text": "file"}),
    ("GET /status?q=needle (one match, the oldest: a full scan)", {"text": "needle"}),
    ("GET /status?status=failed", {"statuses": ("failed",)}),
    ("GET /status?status=failed, second page (cursor)", {"statuses": ("failed",), "second_page": True}),
    ("GET /status?status=failed&q=file", {"statuses": ("failed",), "text": "file"}),
    ("GET /status?status=completed&sort=filename", {"statuses": ("completed",), "sort": "filename"}),
    (
        "GET /status?sort=started&order=asc, second page",
        {"sort": "started", "order": "asc", "second_page": True},
    ),
]


def run() -> list[Table]:
    table = Table(f"Listing: a page of 100 at {LARGE:,} documents vs {SMALL:,} (SQLite store)")
    with tempfile.TemporaryDirectory(prefix="docstatus-bench-listing-") as root:
        small, large = _store(Path(root), SMALL), _store(Path(root), LARGE)
        try:
            for name, params in ROWS:
                timed = median_interleaved(
                    {"small": _timer(small, params), "large": _timer(large, params)}, ROUNDS
                )
                target = "a scan: no target" if params.get("text") == "needle" else "≤ 2× the 1k cost"
                table.add(Row(name, timed["large"], f"same at {SMALL:,}", timed["small"], target))
        finally:
            small.close()
            large.close()
    return [table]


if __name__ == "__main__":
    for result in run():
        print(result.markdown())
