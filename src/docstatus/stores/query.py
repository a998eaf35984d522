"""Listing queries over a store: filters, three sort orders, and cursors that survive changes.

A :class:`Query` asks for one page of documents: of some statuses, whose
filename contains a text or whose doc_id starts with it, changed (or started)
in a time range, sorted by the time of their last change (``updated``), the
start of their current attempt (``started``) or their filename. A
:class:`Page` answers with the records and, when more may follow, the
:class:`Position` to continue from.

Every sort order is a total order on ``(key, doc_id)`` (the key is the change's
``seq`` for ``updated``, the attempt's start in epoch seconds for ``started``,
the filename in lower case for ``filename``), and a page continues strictly
after the position of the last record of the previous one. A document that
changes meanwhile moves (its key changes); every other document keeps its
key, so a page never repeats or skips one that did not change.

A store answers a query with :func:`run_query` over its own index walk
(:data:`Scan`): one batch of one status's records, in order, after a position.
Walks of several statuses are merged here. What the store's indexes cannot
bound is filtered here, and costs what it looks at (see :func:`run_query`).
"""

from __future__ import annotations

import base64
import heapq
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from ..models import Status
from ..records import Record, changed_at

__all__ = [
    "SORTS",
    "STATUSES",
    "Entry",
    "Page",
    "Position",
    "Query",
    "Scan",
    "Sort",
    "decode_cursor",
    "encode_cursor",
    "matches_text",
    "name_key",
    "run_query",
    "scan_records",
    "sort_key",
    "started_of",
]

Sort = Literal["updated", "started", "filename"]

#: The sort orders, the first the default.
SORTS: tuple[Sort, ...] = ("updated", "started", "filename")

#: Every status, in lifecycle order.
STATUSES: tuple[str, ...] = tuple(s.value for s in Status)

#: A position in a sort order: ``(key, doc_id)``.
Position = tuple[Any, str]

#: One record of an index walk: its key, its doc_id, the record.
Entry = tuple[Any, str, Record]

#: ``scan(status, sort, descending, after, limit, text)``: up to ``limit`` entries of the
#: records in ``status`` (``None``: every status, for a store with a global index, see
#: :attr:`~docstatus.stores.base.Store.GLOBAL_SORTS`), in the sort order, strictly after
#: ``after`` (``None``: from the start). ``text`` is the query's text, which the walk may
#: use to skip records (it is checked again here).
Scan = Callable[[str | None, Sort, bool, Position | None, int, str | None], list[Entry]]


@dataclass(frozen=True, slots=True)
class Query:
    """One page of a listing: what to list, in which order, from where.

    ``statuses`` empty means every status. ``text`` (``q``) matches a
    document whose filename contains it, ignoring case, or whose doc_id
    starts with it. ``since``/``until`` (epoch seconds, both inclusive) bound
    the time the sort uses: the start of the current attempt for
    ``started``, the last change otherwise. ``after`` is the position the
    page starts after (from the previous page's :attr:`Page.next`).
    """

    statuses: tuple[str, ...] = ()
    text: str | None = None
    since: float | None = None
    until: float | None = None
    sort: Sort = "updated"
    descending: bool = True
    limit: int = 100
    after: Position | None = None

    def __post_init__(self) -> None:
        if self.sort not in SORTS:
            raise ValueError(f"sort must be one of {', '.join(SORTS)}, not {self.sort!r}")
        unknown = [s for s in self.statuses if s not in STATUSES]
        if unknown:
            raise ValueError(f"unknown status {unknown[0]!r}; known: {', '.join(STATUSES)}")
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1:
            raise ValueError(f"limit must be an integer >= 1, not {self.limit!r}")


@dataclass(slots=True)
class Page:
    """A page of records in the query's order, and where the next page starts.

    ``next`` is ``None`` when no record follows. ``examined`` is how many
    records the walk looked at to fill the page (what the page cost).
    """

    records: list[Record]
    next: Position | None = None
    examined: int = field(default=0)


def started_of(record: Record) -> float:
    """When the record's current attempt started (epoch seconds): its ``started`` key."""
    return float(record["_track"][0])


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def name_key(filename: object) -> str:
    """The ``filename`` key: the filename with ASCII letters in lower case.

    Only ASCII, as SQLite's ``lower()`` does, so that every store (and an SQL
    index) orders filenames alike.
    """
    return str(filename).translate(_ASCII_LOWER)


def sort_key(record: Record, sort: Sort, seq: float) -> Any:
    """The key of ``record`` in ``sort`` (``seq``: the sequence number of its last change)."""
    if sort == "started":
        return started_of(record)
    if sort == "filename":
        return name_key(record["filename"])
    return seq


def matches_text(record: Record, text: str) -> bool:
    """Whether ``record``'s filename contains ``text`` (ignoring case) or its doc_id starts with it."""
    return str(record["doc_id"]).startswith(text) or text.casefold() in str(record["filename"]).casefold()


# -- cursors -----------------------------------------------------------------------


def encode_cursor(sort: Sort, descending: bool, position: Position) -> str:
    """The opaque cursor of ``position`` in a listing (URL-safe text)."""
    raw = json.dumps([sort, "desc" if descending else "asc", position[0], position[1]], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, sort: Sort, descending: bool) -> Position:
    """The position of a cursor from :func:`encode_cursor`, for a listing in ``sort``/order.

    ``ValueError`` with a message that says why when the cursor is malformed
    or was made for another sort order.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        made_for, order, key, doc_id = json.loads(raw)
    except (ValueError, TypeError):
        raise ValueError("malformed cursor: pass the 'next' of the previous page unchanged") from None
    order_now = "desc" if descending else "asc"
    if (made_for, order) != (sort, order_now):
        raise ValueError(
            f"the cursor is for sort={made_for} order={order}, not sort={sort} order={order_now}"
        )
    if not isinstance(doc_id, str) or not _key_fits(sort, key):
        raise ValueError("malformed cursor: pass the 'next' of the previous page unchanged")
    return key, doc_id


def _key_fits(sort: Sort, key: object) -> bool:
    if sort == "filename":
        return isinstance(key, str)
    return isinstance(key, int | float) and not isinstance(key, bool)


# -- running a query ---------------------------------------------------------------


def _time_of(record: Record, sort: Sort) -> float:
    return started_of(record) if sort == "started" else changed_at(record)


def _start(query: Query) -> Position | None:
    """Where the walk starts: the cursor, or for ``started`` the seek to the time range."""
    if query.after is not None or query.sort != "started":
        return query.after
    if query.descending and query.until is not None:
        # Every doc_id sorts before it; and a microsecond on, because bounds compare in whole
        # microseconds (the resolution of the times the status JSON shows).
        return (query.until + 1e-6, "\U0010ffff")
    if not query.descending and query.since is not None:
        return (query.since, "")  # and after this
    return None


def _walk(scan: Scan, status: str | None, query: Query, start: Position | None) -> Iterator[Entry]:
    after, batch = start, query.limit + 1
    while True:
        entries = scan(status, query.sort, query.descending, after, batch, query.text)
        yield from entries
        if len(entries) < batch:
            return
        after = (entries[-1][0], entries[-1][1])


def _micros(t: float) -> int:
    # As records.iso truncates: the microsecond the status JSON shows for ``t``.
    whole = math.floor(t)
    return whole * 1_000_000 + min(int((t - whole) * 1e6), 999_999)


class _Filter:
    """Which walked records a query keeps, and where its walk may stop.

    Times compare in whole microseconds, as the status JSON shows them (the
    bounds rounded to the nearest): a document's own ``started_at`` as
    ``until`` includes it.
    """

    def __init__(self, query: Query) -> None:
        self.query = query
        self.since = None if query.since is None else round(query.since * 1_000_000)
        self.until = None if query.until is None else round(query.until * 1_000_000)
        # A walk in the order of the bounded time stops at the far bound (for updated:
        # the order of changes, which is the order of their times on one clock).
        ordered = query.sort != "filename"
        self.stop_below = self.since if query.descending and ordered else None
        self.stop_above = self.until if not query.descending and ordered else None

    def past_end(self, t: int) -> bool:
        return (self.stop_below is not None and t < self.stop_below) or (
            self.stop_above is not None and t > self.stop_above
        )

    def keeps(self, record: Record, t: int) -> bool:
        if (self.since is not None and t < self.since) or (self.until is not None and t > self.until):
            return False
        return self.query.text is None or matches_text(record, self.query.text)


def run_query(query: Query, scan: Scan, *, global_sorts: frozenset[str] = frozenset()) -> Page:
    """Answer ``query`` from ``scan``, the store's walk of its indexes.

    One walk per status asked for (or one over every status, when there is
    no status filter and the store has a global index for the sort, in
    ``global_sorts``), merged in the sort order. Costs the
    records walked: about ``limit`` per status walked when the page fills from
    the first records, plus the records skipped because they do not match
    ``text`` (a scan in the sort order until the page is full: proportional to
    how rare matches are) or are past the time bound that the walk does not
    start from (``until`` in a descending and ``since`` in an ascending
    listing of ``updated``, and both bounds for ``filename``). The walk stops
    at the first record past the other bound.
    """
    # A text search walks each status: a store may have per-status ways to find rare matches.
    every: tuple[str | None, ...] = (None,) if query.sort in global_sorts and query.text is None else STATUSES
    statuses: tuple[str | None, ...] = query.statuses or every
    start = _start(query)
    walks = [_walk(scan, s, query, start) for s in dict.fromkeys(statuses)]
    merged = walks[0] if len(walks) == 1 else heapq.merge(*walks, key=_position, reverse=query.descending)
    keep = _Filter(query)
    page: list[Entry] = []
    examined = 0
    timed = query.since is not None or query.until is not None
    for entry in merged:
        examined += 1
        t = _micros(_time_of(entry[2], query.sort)) if timed else 0
        if timed and keep.past_end(t):
            break
        if keep.keeps(entry[2], t):
            page.append(entry)
            if len(page) > query.limit:
                break
    more = len(page) > query.limit
    del page[query.limit :]
    last = (page[-1][0], page[-1][1]) if more else None
    return Page([e[2] for e in page], last, examined)


def _position(entry: Entry) -> tuple[Any, str]:
    return entry[0], entry[1]


def scan_records(
    records: list[tuple[float, Record]],
    sort: Sort,
    descending: bool,
    after: Position | None,
    limit: int,
) -> list[Entry]:
    """A :data:`Scan` batch of ``(seq, record)`` pairs, sorted here: O(n log n)."""
    entries = sorted(
        ((sort_key(r, sort, seq), str(r["doc_id"]), r) for seq, r in records),
        key=_position,
        reverse=descending,
    )
    if after is not None:
        entries = [e for e in entries if (_position(e) < after if descending else _position(e) > after)]
    return entries[:limit]
