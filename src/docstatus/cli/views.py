"""Terminal views of a running service: ``docstatus status | list | cleanup | watch | cancel``.

Each ``run_*`` function talks to the service through a
:class:`~docstatus.cli.client.Client`, prints to a rich ``Console`` (or, with
``as_json``, the service's JSON exactly as it was sent) and returns the exit
status; errors propagate as :class:`~docstatus.errors.StatusError` for the
command line to report. Needs the ``cli`` extra (rich, httpx, httpx-sse).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from ..errors import DocumentNotFoundError
from ..models import Status
from .args import MIN_SHORT_ID
from .client import Client, StreamEvent
from .fittable import Column, FitTable

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "format_duration",
    "run_cancel",
    "run_cleanup",
    "run_delete",
    "run_list",
    "run_status",
    "run_watch",
    "run_workers",
    "workers_table",
]

EXIT_OK = 0
#: Characters of a doc id the terminal tables show: the shortest prefix every command accepts
#: back (MIN_SHORT_ID), so the table fits 80 columns; the dashboard, with more room, shows 12.
SHORT_ID = MIN_SHORT_ID
#: The watched document failed, or a document is not known.
EXIT_FAILED = 1

STATUS_STYLES: dict[str, str] = {
    "queued": "bright_black",
    "parsing": "cyan",
    "embedding_visual": "magenta",
    "embedding_text": "blue",
    "storing": "yellow",
    "completed": "green",
    "failed": "red",
}

_FINISHED = {Status.COMPLETED.value, Status.FAILED.value}


def format_duration(seconds: float | None) -> str:
    """``4.2s``, ``12s``, ``3m 05s``, ``1h 02m``; ``-`` for no value."""
    if seconds is None:
        return "-"
    s = max(0.0, seconds)
    if s < 10:
        return f"{s:.1f}s"
    if s < 60:
        return f"{int(s)}s"
    if s < 3600:
        return f"{int(s // 60)}m {int(s % 60):02d}s"
    return f"{int(s // 3600)}h {int(s % 3600 // 60):02d}m"


def _is_finished(data: dict[str, Any]) -> bool:
    return data.get("status") in _FINISHED


def _percent(data: dict[str, Any]) -> int:
    if data.get("status") == Status.COMPLETED:
        return 100
    # Floor: a document that has not completed never shows 100%.
    return max(0, min(100, int(float(data.get("progress") or 0) * 100)))


def _badge(status: str) -> Text:
    return Text(status, style=f"bold {STATUS_STYLES.get(status, 'white')}")


def _pages(data: dict[str, Any]) -> str:
    total = data.get("total_pages")
    return f"{data.get('page') or 0}/{total}" if total else "-"


def _stage(data: dict[str, Any]) -> str:
    stage = str(data.get("stage") or "")
    meta = data.get("metadata") or {}
    total = meta.get("total_chunks")
    if data.get("status") == Status.EMBEDDING_TEXT and isinstance(total, int) and total > 0:
        stage += f" · chunk {meta.get('chunk', 0)}/{total}"
    return stage


def _bar(data: dict[str, Any], width: int = 24) -> Table:
    style = {"completed": "green", "failed": "red"}.get(str(data.get("status")), "blue")
    grid = Table.grid(padding=(0, 1))
    grid.add_row(
        ProgressBar(total=100, completed=_percent(data), width=width, complete_style=style),
        Text(f"{_percent(data):>3}%"),
    )
    return grid


@dataclass
class _Tracked:
    """A document as last reported, and when: elapsed and ETA advance between reports."""

    data: dict[str, Any]
    at: float = field(default_factory=time.monotonic)

    def elapsed(self) -> float | None:
        value = self.data.get("elapsed_time")
        if value is None:
            return None
        return float(value) + (0.0 if _is_finished(self.data) else time.monotonic() - self.at)

    def eta(self) -> float | None:
        value = self.data.get("estimated_remaining")
        if value is None or _is_finished(self.data):
            return None
        return max(0.0, float(value) - (time.monotonic() - self.at))

    def newer(self, data: dict[str, Any]) -> bool:
        """Whether ``data`` is not older than what is tracked (replayed events may be)."""
        return _time_key(data.get("updated_at")) >= _time_key(self.data.get("updated_at"))


def _time_key(value: object) -> datetime:
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return datetime.min.replace(tzinfo=None)


def _detail(data: dict[str, Any]) -> Text:
    """The stage with its page or chunk count."""
    text = _stage(data)
    if data.get("total_pages"):
        text += f" · page {_pages(data)}"
    return Text(text)


def _error(data: dict[str, Any]) -> Text | None:
    if data.get("status") == Status.FAILED and data.get("error"):
        return Text(str(data["error"]), style="red")
    return None


def documents_table(docs: Iterable[_Tracked]) -> FitTable:
    """One row per document: name, status, progress bar, stage, elapsed, ETA; a failure's error below.

    Laid out for 80 columns first: the status, progress and times are always
    whole, headers included; the name and the stage are cut with an ellipsis
    when the terminal is narrow.
    """
    table = FitTable(
        [
            Column("ID"),
            Column("Document", flexible=True, min_width=10, max_width=36),
            Column("Status"),
            Column("Progress"),
            Column("Stage", flexible=True, min_width=9),
            Column("Elapsed", justify="right"),
            Column("ETA", justify="right"),
        ]
    )
    for doc in docs:
        d = doc.data
        table.add_row(
            str(d.get("doc_id", ""))[:SHORT_ID],
            Text(str(d.get("filename", ""))),
            _badge(str(d.get("status"))),
            _bar(d, width=6),
            _detail(d),
            format_duration(doc.elapsed()),
            format_duration(doc.eta()),
            note=_error(d),
        )
    return table


def document_details(data: dict[str, Any]) -> Table:
    """One document's status as a two-column table."""
    doc = _Tracked(data)
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    rows: list[tuple[str, RenderableType]] = [
        ("Document", Text(str(data.get("filename", "")))),
        ("ID", Text(str(data.get("doc_id", "")))),
        ("Status", _badge(str(data.get("status")))),
        ("Progress", _bar(data)),
        ("Stage", Text(_stage(data))),
        ("Pages", _pages(data)),
        ("Elapsed", format_duration(doc.elapsed())),
        ("ETA", format_duration(doc.eta())),
        ("Started", str(data.get("started_at") or "-")),
        ("Updated", str(data.get("updated_at") or "-")),
        ("Completed", str(data.get("completed_at") or "-")),
    ]
    if data.get("error"):
        rows.append(("Error", Text(str(data["error"]), style="red")))
    for key, value in sorted((data.get("metadata") or {}).items()):
        rows.append((f"  {key}", Text(str(value))))
    for key, value in rows:
        table.add_row(key, value)
    return table


def _counts_line(body: dict[str, Any]) -> Text:
    line = Text(f"{body.get('total', 0)} documents: ")
    line.append(f"{body.get('active', 0)} active", style="blue")
    line.append(", ")
    line.append(f"{body.get('completed', 0)} completed", style="green")
    line.append(", ")
    line.append(f"{body.get('failed', 0)} failed", style="red")
    return line


# -- status, list, cleanup ----------------------------------------------------------------


def run_status(client: Client, doc_id: str, console: Console, *, as_json: bool, out: TextIO) -> int:
    """``docstatus status DOC_ID`` (a full id or a unique prefix): 0, or DocumentNotFoundError."""
    reply = client.lookup(doc_id)
    if as_json:
        out.write(reply.text + "\n")
    else:
        console.print(document_details(reply.body))
    return EXIT_OK


def run_list(
    client: Client, status: str | None, limit: int, console: Console, *, as_json: bool, out: TextIO
) -> int:
    """``docstatus list``: the most recently updated documents (of ``status``), with counts."""
    reply = client.queue(status, limit)
    if as_json:
        out.write(reply.text + "\n")
        return EXIT_OK
    docs = [_Tracked(d) for d in reply.body.get("queue", [])]
    if docs:
        console.print(documents_table(docs))
    else:
        console.print("No documents" + (f" with status {status}." if status else "."))
    console.print(_counts_line(reply.body))
    return EXIT_OK


def run_find(
    client: Client, params: dict[str, Any], limit: int, console: Console, *, as_json: bool, out: TextIO
) -> int:
    """``docstatus list`` with the listing's filters: up to ``limit`` documents, page after page.

    ``--json`` prints one ``GET /status`` answer with every document read,
    whose ``next`` continues after them.
    """
    docs: list[dict[str, Any]] = []
    cursor: str | None = None
    while len(docs) < limit:
        page = client.documents({**params, "limit": min(limit - len(docs), 1000), "cursor": cursor})
        docs += page.body.get("documents", [])
        cursor = page.body.get("next")
        if cursor is None:
            break
    if as_json:
        out.write(json.dumps({"documents": docs, "count": len(docs), "next": cursor}) + "\n")
        return EXIT_OK
    if docs:
        console.print(documents_table([_Tracked(d) for d in docs]))
    more = " (more match: raise --limit)" if cursor is not None else ""
    noun = "document" if len(docs) == 1 else "documents"
    console.print(f"{len(docs)} {noun}{more}." if docs else "No documents match.")
    return EXIT_OK


def _bulk(
    send: Callable[[dict[str, Any]], Any], body: dict[str, Any], keys: tuple[str, ...]
) -> dict[str, Any]:
    """Send a bulk action until it says it is done (each answer says where to go on); the totals."""
    totals: dict[str, Any] = dict.fromkeys(keys, 0)
    totals["doc_ids"] = []
    cursor = None
    while True:
        answer = send({**body, "cursor": cursor}).body
        for key in keys:
            totals[key] += int(answer.get(key, 0))
        totals["doc_ids"] += answer.get("doc_ids", [])
        cursor = answer.get("next")
        if cursor is None:
            return totals


def run_retry(client: Client, body: dict[str, Any], console: Console, *, as_json: bool, out: TextIO) -> int:
    """``docstatus retry --all-failed``: requeue every failed document that matches and can be retried."""
    totals = _bulk(client.retry_failed, body, ("retried", "skipped"))
    if as_json:
        out.write(json.dumps(totals) + "\n")
        return EXIT_OK
    noun = "document" if totals["retried"] == 1 else "documents"
    line = f"Retried {totals['retried']} failed {noun}"
    if totals["skipped"]:
        line += f"; skipped {totals['skipped']} that failed for good (damaged, unsupported or over a limit)"
    console.print(Text(line + "."))
    return EXIT_OK


def run_delete_finished(
    client: Client, body: dict[str, Any], console: Console, *, as_json: bool, out: TextIO
) -> int:
    """``docstatus delete --finished``: remove every finished document that matches, with its content."""
    totals = _bulk(client.delete_finished, body, ("deleted",))
    if as_json:
        out.write(json.dumps(totals) + "\n")
        return EXIT_OK
    noun = "document" if totals["deleted"] == 1 else "documents"
    age = body.get("older_than_seconds")
    older = f" that finished over {format_duration(age)} ago" if age else ""
    console.print(Text(f"Removed {totals['deleted']} finished {noun}{older}, with their uploads and output."))
    return EXIT_OK


def run_cleanup(client: Client, max_age: float, console: Console, *, as_json: bool, out: TextIO) -> int:
    """``docstatus cleanup``: remove documents that finished over ``max_age`` seconds ago."""
    reply = client.cleanup(max_age)
    if as_json:
        out.write(reply.text + "\n")
        return EXIT_OK
    removed = int(reply.body.get("removed", 0))
    noun = "document" if removed == 1 else "documents"
    console.print(f"Removed {removed} finished {noun} older than {format_duration(max_age)}.")
    return EXIT_OK


def run_cancel(client: Client, doc_id: str, console: Console, *, as_json: bool, out: TextIO) -> int:
    """``docstatus cancel DOC_ID``: 0 once the document has failed as cancelled."""
    reply = client.cancel(doc_id)
    if as_json:
        out.write(reply.text + "\n")
        return EXIT_OK
    name = str(reply.body.get("filename", ""))
    console.print(Text(f"Cancelled {name} ({doc_id}) at {_percent(reply.body)}%."))
    return EXIT_OK


def run_delete(client: Client, doc_id: str, console: Console, *, as_json: bool, out: TextIO) -> int:
    """``docstatus delete DOC_ID``: 0 once the finished document and its content are removed.

    ``doc_id`` is a full id or a unique prefix (see :meth:`Client.lookup`).
    """
    reply = client.delete(client.resolve(doc_id))
    if as_json:
        out.write(reply.text + "\n")
        return EXIT_OK
    body = reply.body
    name = str(body.get("status", {}).get("filename", ""))
    parts = (
        ["its status"]
        + (["its upload"] if body.get("upload") else [])
        + (["its output"] if body.get("output") else [])
    )
    console.print(Text(f"Removed {name} ({body.get('doc_id', doc_id)}): {', '.join(parts)}."))
    return EXIT_OK


def _ago(iso: object, now: datetime) -> str:
    try:
        seen = datetime.fromisoformat(str(iso))
    except ValueError:
        return "-"
    return format_duration((now - seen).total_seconds()) + " ago"


def workers_table(workers: Iterable[dict[str, Any]], now: datetime) -> Table:
    """One row per worker process: id, host, engine, documents held, last heartbeat."""
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False, collapse_padding=True)
    table.add_column("Worker", overflow="fold", min_width=10)
    table.add_column("Host", overflow="fold")
    table.add_column("Engine", no_wrap=True)
    table.add_column("Docs", justify="right", no_wrap=True)
    table.add_column("Last seen", justify="right", no_wrap=True)
    for worker in workers:
        table.add_row(
            Text(str(worker.get("id", ""))),
            Text(str(worker.get("host") or "-")),
            Text(str(worker.get("engine") or "-")),
            str(len(worker.get("documents") or [])),
            _ago(worker.get("last_seen"), now),
        )
    return table


def run_workers(client: Client, console: Console, *, as_json: bool, out: TextIO) -> int:
    """``docstatus list --workers``: the live worker processes and how many documents each holds."""
    reply = client.workers()
    if as_json:
        out.write(reply.text + "\n")
        return EXIT_OK
    workers = list(reply.body.get("workers", []))
    if workers:
        console.print(workers_table(workers, datetime.now(UTC)))
    held = sum(len(w.get("documents") or []) for w in workers)
    noun = "worker process" if len(workers) == 1 else "worker processes"
    console.print(f"{len(workers)} live {noun}, holding {held} documents.")
    return EXIT_OK


# -- watch --------------------------------------------------------------------------------


#: Documents ``watch`` keeps on its board: the most recently started. A terminal shows
#: fewer, and a store of 100,000 documents is never read whole.
WATCH_ROWS = 100
#: Seconds between reads of the service's counts while changes the board cannot count arrive.
RECOUNT_SECONDS = 1.0
_COUNT_KEYS = ("total", "active", "completed", "failed")


def _bucket(status: object) -> str:
    return str(status) if status in (Status.COMPLETED, Status.FAILED) else "active"


def _started(doc: _Tracked) -> str:
    return str(doc.data.get("started_at", ""))


@dataclass
class _Board:
    """What ``watch`` shows for all documents: counts, connection state, the table.

    The table holds the :data:`WATCH_ROWS` most recently started documents; the
    counts are the service's (from the listing), kept current by the changes of
    the documents on the board, and marked ``stale`` by changes of others until
    they are read again.
    """

    docs: dict[str, _Tracked] = field(default_factory=dict)
    connected: bool = True
    counts: dict[str, int] | None = None
    stale: bool = False
    limit: int = WATCH_ROWS

    def apply(self, event: StreamEvent) -> None:
        if event.kind == "connected":
            self.connected = True
        elif event.kind == "disconnected":
            self.connected = False
        elif event.kind == "removed" and event.data is not None:
            gone = self.docs.pop(str(event.data["doc_id"]), None)
            self._count(None if gone is None else gone.data, None)
        elif event.kind == "status" and event.data is not None:
            self.load(event.data, counted=True)

    def reload(self, listing: dict[str, Any]) -> None:
        """Show exactly the documents of ``listing`` (the answer of ``GET /status/queue``)."""
        self.docs.clear()
        for data in listing.get("queue", [])[: self.limit]:
            self.load(data)
        self.recount(listing)

    def recount(self, listing: dict[str, Any]) -> None:
        """Take the counts of ``listing`` (an answer of ``GET /status/queue``), if it has them."""
        if all(key in listing for key in _COUNT_KEYS):
            self.counts = {key: int(listing[key]) for key in _COUNT_KEYS}
            self.stale = False

    def load(self, data: dict[str, Any], *, counted: bool = False) -> None:
        known = self.docs.get(str(data["doc_id"]))
        if known is not None and not known.newer(data):
            return
        if counted:
            self._count(None if known is None else known.data, data)
        self.docs[str(data["doc_id"])] = _Tracked(data)
        if len(self.docs) > self.limit:
            del self.docs[str(min(self.docs.values(), key=_started).data["doc_id"])]

    def _count(self, before: dict[str, Any] | None, after: dict[str, Any] | None) -> None:
        # A change of a document on the board moves one count; any other cannot be told from
        # a new document (or one not on the board): the counts are read again.
        if self.counts is None:
            return
        if before is None:
            self.stale = True
            return
        self.counts[_bucket(before.get("status"))] -= 1
        if after is None:
            self.counts["total"] -= 1
        else:
            self.counts[_bucket(after.get("status"))] += 1

    def _counted(self, ordered: list[_Tracked]) -> dict[str, int]:
        if self.counts is not None:
            return self.counts
        active = sum(1 for d in ordered if not _is_finished(d.data))
        completed = sum(1 for d in ordered if d.data.get("status") == Status.COMPLETED)
        return {
            "total": len(ordered),
            "active": active,
            "completed": completed,
            "failed": len(ordered) - active - completed,
        }

    def __rich__(self) -> RenderableType:
        ordered = sorted(self.docs.values(), key=_started, reverse=True)
        head = _counts_line(dict(self._counted(ordered)))
        head.append("   ")
        head.append(
            "● live" if self.connected else "● reconnecting…", style="green" if self.connected else "yellow"
        )
        return Group(head, documents_table(ordered) if ordered else Text("No documents yet.", style="dim"))


@dataclass
class _One:
    """What ``watch --doc`` shows: one document's progress bar and details."""

    doc: _Tracked
    connected: bool = True

    def __rich__(self) -> RenderableType:
        d = self.doc.data
        # One line each, cut with an ellipsis rather than wrapped on a narrow terminal.
        name = Text(str(d.get("filename", "")), style="bold", no_wrap=True, overflow="ellipsis")
        line = _badge(str(d.get("status")))
        line.no_wrap, line.overflow = True, "ellipsis"
        line.append(f"  {_stage(d)}", style="dim")
        if d.get("total_pages"):
            line.append(f"  page {_pages(d)}", style="dim")
        times = Text(f"elapsed {format_duration(self.doc.elapsed())}  ETA {format_duration(self.doc.eta())}")
        if not self.connected:
            times.append("  reconnecting…", style="yellow")
        return Group(name, line, _bar(d, width=40), times)


@contextlib.contextmanager
def _live(view: RenderableType, console: Console) -> Iterator[None]:
    """A live display of ``view``; off a terminal, its last frame is printed once, ending its line."""
    with Live(view, console=console, refresh_per_second=4):
        yield
    if not console.is_terminal:
        console.line()  # rich leaves the last frame's line open when it is not drawing in place


def _connected(events: Iterator[StreamEvent]) -> None:
    for event in events:
        if event.kind == "connected":
            return


def _finish(console: Console, data: dict[str, Any], *, as_json: bool) -> int:
    failed = data.get("status") == Status.FAILED
    if not as_json:
        took = format_duration(data.get("elapsed_time"))
        if failed:
            console.print(
                Text(f"✘ {data.get('filename')} failed after {took}: {data.get('error')}", style="red")
            )
        else:
            console.print(Text(f"✔ {data.get('filename')} completed in {took}", style="green"))
    return EXIT_FAILED if failed else EXIT_OK


def run_watch(client: Client, doc_id: str | None, console: Console, *, as_json: bool, out: TextIO) -> int:
    """``docstatus watch``: follow every document (until interrupted) or one (until it ends).

    ``doc_id`` is a full id or a unique prefix (see :meth:`Client.lookup`).
    For one document: 0 when it completes, 1 when it fails, is removed or is
    not known. With ``as_json``: the current state (the answer of
    ``GET /status/{doc_id}`` or ``GET /status/queue``), then each event's data, one per line.
    """
    if doc_id is not None:
        doc_id = client.resolve(doc_id)  # a short id: the stream needs the full one
    events = client.events(doc_id=doc_id)
    try:
        _connected(events)  # from here on no change is missed: read the current state now
        if doc_id is not None:
            return _watch_one(client, doc_id, events, console, as_json=as_json, out=out)
        return _watch_all(client, events, console, as_json=as_json, out=out)
    finally:
        events.close()


def _emit(out: TextIO, event: StreamEvent) -> None:
    if event.raw:
        out.write(event.raw + "\n")
        out.flush()


def _watch_one(
    client: Client,
    doc_id: str,
    events: Iterator[StreamEvent],
    console: Console,
    *,
    as_json: bool,
    out: TextIO,
) -> int:
    reply = client.status(doc_id)
    if as_json:
        out.write(reply.text + "\n")
        out.flush()
    view = _One(_Tracked(reply.body))
    if not _is_finished(view.doc.data):
        with contextlib.nullcontext() if as_json else _live(view, console):
            ended = _follow_one(view, events, out if as_json else None, lambda: _reread(client, doc_id))
        if not ended:
            if not as_json:
                console.print(Text(f"✘ {view.doc.data.get('filename')} was removed", style="red"))
            return EXIT_FAILED
    return _finish(console, view.doc.data, as_json=as_json)


def _reread(client: Client, doc_id: str) -> dict[str, Any] | None:
    """The document's current status, or ``None`` once it is gone (after a ``reset``)."""
    try:
        body: dict[str, Any] = client.status(doc_id).body
    except DocumentNotFoundError:
        return None
    return body


def _follow_one(
    view: _One,
    events: Iterator[StreamEvent],
    out: TextIO | None,
    reread: Callable[[], dict[str, Any] | None],
) -> bool:
    """Update ``view`` until its document ends (True) or is removed (False).

    On a ``reset`` (changes were missed) the status is read again with ``reread``.
    """
    for event in events:
        if out is not None:
            _emit(out, event)
        view.connected = event.kind != "disconnected"
        data = reread() if event.kind == "reset" else event.data
        if event.kind == "removed" or (event.kind == "reset" and data is None):
            return False
        if event.kind in ("status", "reset") and data is not None and view.doc.newer(data):
            view.doc = _Tracked(data)
            if _is_finished(data):
                return True
    return False  # pragma: no cover - the event stream never ends by itself


def _watch_all(
    client: Client, events: Iterator[StreamEvent], console: Console, *, as_json: bool, out: TextIO
) -> int:
    reply = client.queue(limit=WATCH_ROWS)
    board = _Board()
    board.reload(reply.body)
    if as_json:
        out.write(reply.text + "\n")
        out.flush()
        for event in events:
            _emit(out, event)
            if event.kind == "reset":  # changes were missed: the current listing, read again
                out.write(client.queue(limit=WATCH_ROWS).text + "\n")
                out.flush()
        return EXIT_OK
    recounted = time.monotonic() - RECOUNT_SECONDS  # the first change of another document reads them
    with _live(board, console):
        for event in events:
            if event.kind == "reset":
                board.reload(client.queue(limit=WATCH_ROWS).body)
            board.apply(event)
            if board.stale and time.monotonic() - recounted >= RECOUNT_SECONDS:
                board.recount(client.queue(limit=0).body)  # the counts only
                recounted = time.monotonic()
    return EXIT_OK
