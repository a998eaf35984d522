"""The terminal views at 80 columns: headers whole, long values cut with an ellipsis, errors below."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from rich.console import Console
from rich.text import Text

from docstatus.cli import views
from docstatus.cli.client import Reply, StreamEvent
from docstatus.cli.fittable import Column, FitTable

WIDTH = 80
HEADERS = ["ID", "Document", "Status", "Progress", "Stage", "Elapsed", "ETA"]
ID_WIDTH = 8 + 2  # the short id column and its gap
ERROR = (
    "UnreadableDocumentError: 'broken.docx' cannot be read: it is not a valid Word document "
    "(a damaged ZIP package: File is not a zip file)"
)


def _doc(n: int, filename: str, status: str, **fields: Any) -> dict[str, Any]:
    base = {
        "doc_id": f"{n:064x}",
        "filename": filename,
        "status": status,
        "progress": 0.0,
        "stage": status,
        "updated_at": "2025-01-01T00:00:00+00:00",
        "started_at": f"2025-01-01T00:00:0{n}+00:00",
        "elapsed_time": 1.0,
        "estimated_remaining": None,
        "metadata": {},
    }
    return {**base, **fields}


DOCS = [
    _doc(
        1,
        "a-very-long-document-name-from-the-debian-documentation-manual.pdf",
        "embedding_visual",
        progress=0.42,
        stage="rendering pages",
        page=120,
        total_pages=298,
        elapsed_time=3723.0,
        estimated_remaining=3725.0,
    ),
    _doc(2, "broken.docx", "failed", progress=0.1, stage="parsing", error=ERROR, elapsed_time=0.4),
    _doc(
        3,
        "notes with spaces in the name.txt",
        "embedding_text",
        progress=0.8,
        stage="embedding chunks",
        estimated_remaining=754.0,
        metadata={"chunk": 12, "total_chunks": 40},
    ),
    _doc(4, "x.png", "completed", progress=1.0, stage="done"),
]


class FakeClient:
    """The service's answers for the views: one status, the queue, and a short event stream."""

    def __init__(self, docs: list[dict[str, Any]], events: list[StreamEvent]) -> None:
        self.docs = docs
        self._events = events

    def resolve(self, doc_id: str) -> str:
        return str(next(d["doc_id"] for d in self.docs if d["doc_id"].startswith(doc_id)))

    def lookup(self, doc_id: str) -> Reply:
        return self.status(self.resolve(doc_id))

    def status(self, doc_id: str) -> Reply:
        body = next(d for d in self.docs if d["doc_id"] == doc_id)
        return Reply(body, json.dumps(body))

    def queue(self, status: str | None = None, limit: int = 100) -> Reply:
        body = {"queue": self.docs, "total": len(self.docs), "active": 2, "completed": 1, "failed": 1}
        return Reply(body, json.dumps(body))

    def events(self, doc_id: str | None = None) -> Iterator[StreamEvent]:
        yield StreamEvent("connected", "0")
        yield from self._events


def _console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=WIDTH, color_system=None, force_terminal=False, highlight=False), out


def _lines(out: io.StringIO) -> list[str]:
    lines = out.getvalue().splitlines()
    assert lines
    too_long = [line for line in lines if len(line) > WIDTH]
    assert not too_long, "\n".join(lines)
    return lines


def _check_table(lines: list[str]) -> None:
    header = next(line for line in lines if line.startswith("ID "))
    assert header.split() == HEADERS, "\n".join(lines)
    ids = {d["doc_id"][:8] for d in DOCS}
    assert {line[:8] for line in lines if line[:8] in ids} == ids, "\n".join(lines)  # whole short ids
    lines = [line[ID_WIDTH:] if line[:8] in ids else line for line in lines]
    text = "\n".join(lines)
    # Every row is one line: cut names end in an ellipsis, short values are whole.
    row = next(line for line in lines if line.startswith("a-very-lo"))
    assert row.startswith("a-very-lo…  embedding_visual  ") and "42%  renderin…" in row, text
    assert row.endswith("1h 02m   1h 02m"), text  # elapsed and ETA whole, right-aligned
    notes = next(line for line in lines if line.startswith("notes wit"))
    assert re.search(r"embeddin…     1\.0s  12m 3\ds$", notes), text  # the ETA counts down meanwhile
    # The error takes its own lines, below its row, whole (it fits in three lines).
    at = lines.index(next(line for line in lines if line.startswith("broken.do")))
    assert "failed" in lines[at] and "parsing" in lines[at] and "Unreadable" not in lines[at]
    assert lines[at + 1].startswith("  UnreadableDocumentError")
    below = " ".join(line.strip() for line in lines[at + 1 : at + 3])
    assert below == ERROR, text


def test_list_fits_80_columns_with_whole_headers_and_the_error_below_its_row() -> None:
    console, out = _console()
    assert views.run_list(FakeClient(DOCS, []), None, 100, console, as_json=False, out=io.StringIO()) == 0
    lines = _lines(out)
    _check_table(lines)
    assert lines[-1] == "4 documents: 2 active, 1 completed, 1 failed"


def test_watch_fits_80_columns() -> None:
    console, out = _console()
    update = {**DOCS[3], "updated_at": "2025-01-01T00:00:09+00:00"}
    client = FakeClient(DOCS, [StreamEvent("status", "1", update, json.dumps(update))])
    assert views.run_watch(client, None, console, as_json=False, out=io.StringIO()) == 0
    lines = _lines(out)
    _check_table(lines)
    assert lines[0].startswith("4 documents: 2 active, 1 completed, 1 failed")


def test_watch_of_one_document_and_status_fit_80_columns() -> None:
    console, out = _console()
    doc = {**DOCS[0], "filename": "a-very-long-name " * 8 + ".pdf"}
    done = {**doc, "status": "completed", "progress": 1.0, "updated_at": "2025-01-01T00:00:09+00:00"}
    client = FakeClient([doc], [StreamEvent("status", "1", done, json.dumps(done))])
    assert views.run_watch(client, doc["doc_id"], console, as_json=False, out=io.StringIO()) == 0
    lines = _lines(out)
    assert lines[0] == doc["filename"][: WIDTH - 1] + "…"
    assert lines[1].startswith("completed  rendering pages  page 120/298")
    assert lines[2].endswith("100%") and lines[3].startswith("elapsed 1h 02m")
    assert lines[4].startswith("✔ a-very-long")  # its own line, after the last frame

    console, out = _console()
    failed = DOCS[1]
    views.run_status(FakeClient([failed], []), failed["doc_id"], console, as_json=False, out=io.StringIO())
    lines = _lines(out)
    labels = [line.split()[0] for line in lines if line and not line.startswith(" ")]
    assert labels[:11] == [
        "Document",
        "ID",
        "Status",
        "Progress",
        "Stage",
        "Pages",
        "Elapsed",
        "ETA",
        "Started",
        "Updated",
        "Completed",
    ]
    assert failed["doc_id"] in out.getvalue()
    at = next(i for i, line in enumerate(lines) if line.startswith("Error"))
    error = " ".join(line.removeprefix("Error").strip() for line in lines[at : at + 2])
    assert error == ERROR


@pytest.mark.parametrize("width", [60, 80, 120, 200])
def test_a_fit_table_never_cuts_a_fixed_column_or_a_header(width: int) -> None:
    table = FitTable(
        [Column("Name", flexible=True, min_width=6), Column("Status"), Column("ETA", justify="right")]
    )
    table.add_row(Text("n" * 300), "embedding_visual", "12m 05s")
    table.add_row("short", "queued", "-", note=Text("word " * 200))
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(table)
    lines = out.getvalue().splitlines()
    assert all(len(line) <= width for line in lines)
    assert lines[0].split() == ["Name", "Status", "ETA"]
    assert lines[2].endswith("embedding_visual  12m 05s") and lines[2].count("…") == 1
    notes = lines[4:]
    assert len(notes) == 3 and all(line.startswith("  word") for line in notes)
    assert notes[-1].rstrip().endswith("…")


def test_a_row_needs_one_cell_per_column() -> None:
    with pytest.raises(ValueError, match="a row needs 2 cells, got 1"):
        FitTable([Column("A"), Column("B")]).add_row("only one")


class CountingClient(FakeClient):
    """A service with many documents: its listing honours ``limit``, and it counts the reads."""

    def __init__(self, docs: list[dict[str, Any]], events: list[StreamEvent], counts: dict[str, int]) -> None:
        super().__init__(docs, events)
        self.counts = counts
        self.limits: list[int] = []

    def queue(self, status: str | None = None, limit: int = 100) -> Reply:
        self.limits.append(limit)
        body: dict[str, Any] = {"queue": self.docs[:limit], **self.counts}
        return Reply(body, json.dumps(body))


def _many(n: int) -> list[dict[str, Any]]:
    docs = [_doc(0, f"doc-{i:04d}.txt", "completed", progress=1.0) for i in range(n)]
    for i, doc in enumerate(docs):  # newest first, as the listing answers
        doc["doc_id"] = f"{n - i:064x}"
        doc["started_at"] = (
            f"2025-01-01T{(n - i) // 3600:02d}:{(n - i) // 60 % 60:02d}:{(n - i) % 60:02d}+00:00"
        )
    return docs


def test_watch_reads_one_window_of_a_large_store_and_the_services_counts() -> None:
    docs = _many(150)
    newest = {**docs[0], "status": "failed", "updated_at": "2025-01-01T09:00:00+00:00", "error": "boom"}
    new = {
        **_doc(0, "brand-new.txt", "queued"),
        "doc_id": "f" * 64,
        "started_at": "2025-01-02T00:00:00+00:00",
    }
    events = [
        StreamEvent("status", "1", newest, json.dumps(newest)),  # on the board: counted here
        StreamEvent("status", "2", new, json.dumps(new)),  # not on it: the counts are read again
    ]
    counts = {"total": 100_000, "active": 0, "completed": 99_000, "failed": 1000}
    client = CountingClient(docs, events, counts)
    console, out = _console()
    assert views.run_watch(client, None, console, as_json=False, out=io.StringIO()) == 0
    board = views._Board()
    board.reload(client.queue(limit=views.WATCH_ROWS).body)
    assert len(board.docs) == views.WATCH_ROWS
    board.apply(events[0])
    assert board.counts == {"total": 100_000, "active": 0, "completed": 98_999, "failed": 1001}
    assert not board.stale
    board.apply(events[1])
    assert board.stale and len(board.docs) == views.WATCH_ROWS  # the oldest left the board
    assert "f" * 64 in board.docs and docs[views.WATCH_ROWS - 1]["doc_id"] not in board.docs
    assert client.limits[:2] == [views.WATCH_ROWS, 0]  # the window, then the counts only
    first = _lines(out)[0]
    assert first.startswith("100000 documents"), first
