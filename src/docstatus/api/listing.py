"""The listing and the bulk actions of the API: query parameters to a store query, pages to JSON.

``GET /status`` (filters, sort orders, cursors), ``GET /status/queue`` and the
bulk ``POST /status/retry`` and ``POST /status/delete`` share what is here: how
``status``, ``since``/``until`` and ``cursor`` are read (a bad one is a
:class:`~docstatus.errors.InvalidRequestError`, 400), and how a listing is walked
in batches so that a bulk action never holds anything for long.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from ..errors import DocumentActiveError, DocumentNotFoundError, InvalidRequestError, InvalidTransitionError
from ..manager import StatusManager
from ..models import Status
from ..records import status_json
from ..stores.query import SORTS, STATUSES, Page, Query, Sort, decode_cursor, encode_cursor
from ..worker.job import can_retry

__all__ = [
    "BULK_SECONDS",
    "BulkResult",
    "listing_query",
    "page_body",
    "parse_statuses",
    "parse_time",
    "retry_matching",
    "delete_matching",
]

#: Documents a bulk action reports by id (the first ones it changed).
REPORTED_IDS = 100
#: Documents a bulk action reads per batch.
BULK_BATCH = 200
#: Seconds a bulk action works before it answers with where to go on (``next``).
BULK_SECONDS = 10.0
_FINISHED = ("completed", "failed")


def parse_time(name: str, value: str | None) -> float | None:
    """``value`` as epoch seconds: a number of epoch seconds, or ISO-8601 (naive means UTC)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise InvalidRequestError(
                f"{name} must be ISO-8601 (2025-01-31T12:00:00Z) or epoch seconds, not {value[:60]!r}",
                parameter=name,
            ) from None
        moment = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
        return moment.timestamp()
    if not -1e12 < seconds < 1e12:  # also NaN
        raise InvalidRequestError(f"{name} is out of range: {value[:60]!r}", parameter=name)
    return seconds


def parse_statuses(values: Iterable[str] | None) -> tuple[str, ...]:
    """Statuses from ``status=a&status=b`` and ``status=a,b``, in order, without repeats."""
    found: list[str] = []
    for value in values or ():
        for name in value.split(","):
            name = name.strip()
            if name not in STATUSES:
                raise InvalidRequestError(
                    f"unknown status {name[:60]!r}; known: {', '.join(STATUSES)}", parameter="status"
                )
            if name not in found:
                found.append(name)
    return tuple(found)


def listing_query(
    *,
    statuses: tuple[str, ...] = (),
    text: str | None = None,
    since: str | float | None = None,
    until: str | float | None = None,
    sort: str = "updated",
    order: str = "desc",
    limit: int = 100,
    cursor: str | None = None,
) -> Query:
    """The store query of a listing's parameters; ``InvalidRequestError`` says what is wrong."""
    if sort not in SORTS:
        raise InvalidRequestError(
            f"sort must be one of {', '.join(SORTS)}, not {sort[:60]!r}", parameter="sort"
        )
    if order not in ("desc", "asc"):
        raise InvalidRequestError(f"order must be desc or asc, not {order[:60]!r}", parameter="order")
    descending = order == "desc"
    chosen: Sort = sort  # narrowed by the check above
    after = None
    if cursor:  # an empty one (cursor=) is the first page
        try:
            after = decode_cursor(cursor, chosen, descending)
        except ValueError as exc:
            raise InvalidRequestError(str(exc), parameter="cursor") from None
    return Query(
        statuses=statuses,
        text=text,
        since=_seconds("since", since),
        until=_seconds("until", until),
        sort=chosen,
        descending=descending,
        limit=limit,
        after=after,
    )


def _seconds(name: str, value: str | float | None) -> float | None:
    # A number from a JSON body is read as its text would be: the same range check.
    return parse_time(name, value if isinstance(value, str) or value is None else repr(float(value)))


def page_body(query: Query, page: Page) -> dict[str, Any]:
    """The body of ``GET /status``: ``documents``, ``count`` and ``next`` (a cursor, or null)."""
    now = time.time()
    documents = [status_json(record, now) for record in page.records]
    cursor = None if page.next is None else encode_cursor(query.sort, query.descending, page.next)
    return {"documents": documents, "count": len(documents), "next": cursor}


# -- bulk actions --------------------------------------------------------------------


@dataclass(slots=True)
class BulkResult:
    """What a bulk action did: how many documents it changed and skipped, the first ids, where to go on."""

    done: int = 0
    skipped: int = 0
    doc_ids: list[str] = field(default_factory=list)
    next: str | None = None

    def changed(self, doc_id: str) -> None:
        self.done += 1
        if len(self.doc_ids) < REPORTED_IDS:
            self.doc_ids.append(doc_id)


def _batches(
    manager: StatusManager, query: Query, seconds: float | None
) -> Iterator[tuple[list[Any], Query | None]]:
    """Pages of ``query`` until the listing ends or ``seconds`` pass, each with the query of the rest.

    The walk follows cursors, which the action's own changes do not disturb
    (a retried or deleted document leaves the listing; the others keep their
    places). The rest is ``None`` once the listing has ended.
    """
    deadline = time.monotonic() + (BULK_SECONDS if seconds is None else seconds)
    current = replace(query, limit=BULK_BATCH)
    while True:
        page = manager.query(current)
        rest = None if page.next is None else replace(current, after=page.next)
        yield page.records, rest
        if rest is None or time.monotonic() >= deadline:
            return
        current = rest


def _run(
    manager: StatusManager, query: Query, act: Callable[[Any], bool | None], seconds: float | None
) -> BulkResult:
    """``act(record)`` on each record of ``query``: True changed it, False skipped it, None: it was gone."""
    result = BulkResult()
    rest: Query | None = None
    for records, rest_of_them in _batches(manager, query, seconds):
        rest = rest_of_them
        for record in records:
            outcome = act(record)
            if outcome:
                result.changed(str(record["doc_id"]))
            elif outcome is False:
                result.skipped += 1
    if rest is not None and rest.after is not None:
        result.next = encode_cursor(rest.sort, rest.descending, rest.after)
    return result


def retry_matching(
    manager: StatusManager,
    query: Query,
    on_requeued: Callable[[str], None] | None = None,
    *,
    seconds: float | None = None,
) -> BulkResult:
    """Requeue the failed documents of ``query`` that can be retried; the others are skipped.

    ``query.statuses`` must be empty or ``("failed",)``. ``on_requeued(doc_id)``
    runs after each requeue, as for ``POST /status/{doc_id}/requeue``. Works for
    about ``seconds`` (default :data:`BULK_SECONDS`), then stops with ``next`` set: the same call with that
    cursor goes on.
    """
    if query.statuses not in ((), ("failed",)):
        raise InvalidRequestError("only failed documents can be retried: status must be ['failed']")

    def retry(record: Any) -> bool | None:
        current = manager.get_status(str(record["doc_id"]))
        if current is None:
            return None  # removed meanwhile
        if current.status is not Status.FAILED or not can_retry(current):
            return False
        try:
            manager.requeue(current.doc_id)
        except (InvalidTransitionError, DocumentNotFoundError):
            return False  # requeued or removed by someone else meanwhile
        if on_requeued is not None:
            on_requeued(current.doc_id)
        return True

    return _run(manager, replace(query, statuses=("failed",)), retry, seconds)


def delete_matching(
    manager: StatusManager,
    query: Query,
    remove: Callable[[str], object],
    *,
    seconds: float | None = None,
) -> BulkResult:
    """Remove the finished documents of ``query`` with ``remove(doc_id)`` (the service's remover).

    ``query.statuses`` may only name finished statuses (empty: both). Works for
    about ``seconds`` (default :data:`BULK_SECONDS`), then stops with ``next`` set, as :func:`retry_matching`.
    """
    statuses = query.statuses or _FINISHED
    if any(s not in _FINISHED for s in statuses):
        raise InvalidRequestError("only finished documents can be deleted: status may be completed or failed")

    def delete(record: Any) -> bool | None:
        try:
            remove(str(record["doc_id"]))
        except DocumentActiveError:
            return False  # requeued meanwhile
        except DocumentNotFoundError:
            return None
        return True

    return _run(manager, replace(query, statuses=statuses), delete, seconds)
