"""Completion webhooks: a signed POST to each configured receiver when a document completes or fails.

How deliveries stay at least once, in order per document, off the write path and
across restarts:

* The store's change log is the source. Each receiver URL has a named cursor in
  the store (:meth:`~docstatus.stores.base.Store.claim_cursor`), its position in
  the log, and an outbox beside it. A thread per URL reads the log after the
  position and, in one atomic store write, adds an outbox entry for every change
  that left a document completed or failed and moves the cursor past them. The
  entry holds the exact body to send and a delivery id, so a retry (or a
  delivery after a restart) sends the same bytes.
* Entries are then posted and settled one by one: removed once the receiver
  answered 2xx (or refused it for good), else rescheduled with exponential
  backoff, until ``retry_seconds`` after the entry was queued; then it is given
  up with one log line. Only the oldest entry of a document is ever in flight,
  so a document's deliveries arrive in order; different documents go in parallel
  (up to 8 per URL), taken from the 1,000 oldest entries of the outbox.
* The writer of a status never waits: the manager's event only wakes the thread.
* Several ``serve`` processes on one store: the cursor is held under an expiring
  lease in the store, renewed on every round; one process delivers, the others
  stand by and take over when its lease expires (or at once after a clean stop).
  A process that lost the lease changes nothing (every write is fenced), so an
  entry is delivered again at worst: receivers deduplicate by delivery id.
* The log is bounded (memory, SQLite and Redis keep the last 10,000 changes). A
  notifier that was stopped while more changes than that happened finds a gap:
  documents that ended in it are not notified, and a warning says which
  sequence numbers were lost. A fresh cursor starts at the log's end (documents
  that ended before webhooks were configured are not notified).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.client import HTTPException
from typing import Any, Literal, NamedTuple

from . import __version__
from .errors import StatusError
from .events import Event
from .manager import StatusManager
from .records import Record, status_json
from .settings import ServiceSettings
from .stores.base import Change, OutboxEntry, Store

__all__ = ["Backoff", "Notifier", "Outcome", "Reply", "cursor_name", "post", "sign"]

log = logging.getLogger(__name__)

#: The statuses whose arrival is notified; the body's ``event`` is the status.
ENDED = frozenset({"completed", "failed"})

Outcome = Literal["done", "retry", "permanent"]


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Docstatus-Signature`` value: HMAC-SHA256 of ``timestamp + "." + body``, as ``sha256=<hex>``."""
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def cursor_name(url: str) -> str:
    """The store cursor (and outbox) of receiver ``url``: one per URL, whatever the order of the setting."""
    return "webhooks:" + hashlib.sha256(url.encode()).hexdigest()[:24]


@dataclass(frozen=True, slots=True)
class Backoff:
    """When to try a failed delivery again: ``base * 2**(attempts - 1)`` seconds, at most ``cap``."""

    base: float
    cap: float

    def delay(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt (1 for the first)."""
        return min(self.cap, self.base * 2.0 ** min(max(attempts - 1, 0), 60))


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # A redirect is answered as what it is (a 3xx), never followed: the receiver's URL is the setting.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirects)


def _classify(code: int) -> Outcome:
    if 200 <= code < 300:
        return "done"
    if code in (408, 429) or code >= 500:
        return "retry"
    return "permanent"  # other 4xx, and 3xx (redirects are not followed)


class Reply(NamedTuple):
    """What came of one POST: the outcome, a short reason, and the receiver's ``Retry-After`` seconds."""

    outcome: Outcome
    reason: str
    retry_after: float | None = None


def _retry_after(value: str | None) -> float | None:
    # Only the delay-seconds form; an HTTP date is rare from webhook receivers and is ignored.
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())


def post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> Reply:
    """POST ``body`` to ``url``: what came of it (see :class:`Reply`), the reason ``"HTTP 503"`` or an error.

    2xx is ``done``; 408, 429, 5xx, timeouts and connection errors are ``retry``;
    any other status (redirects included: they are not followed) is ``permanent``.
    Never raises for what the receiver or the network does.
    """
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with _opener.open(request, timeout=timeout) as response:
            response.read(65536)
            code = int(response.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return Reply(_classify(exc.code), f"HTTP {exc.code}", _retry_after(exc.headers.get("Retry-After")))
    except (urllib.error.URLError, HTTPException, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return Reply("retry", f"{type(exc).__name__}: {reason}")
    return Reply(_classify(code), f"HTTP {code}")


@dataclass(frozen=True, slots=True)
class _Attempt:
    entry: OutboxEntry
    reply: Reply


class _LostLease(Exception):
    """Another process holds the cursor now (internal: ends the round)."""


class _Receiver:
    """The deliveries to one URL: its cursor, its outbox, its thread's rounds."""

    #: Changes read from the log per round.
    SCAN_BATCH = 1000
    #: Outbox entries looked at per round (the oldest).
    WINDOW = 1000
    #: Deliveries in flight at once (each to a different document).
    CONCURRENCY = 8

    def __init__(self, notifier: Notifier, url: str) -> None:
        self.url = url
        self.name = cursor_name(url)
        self._n = notifier
        self._store: Store = notifier.manager.store
        self._started = False  # whether this process has claimed the cursor once
        self._start: int | None = None  # where a cursor made now starts: the log's end at start()
        self._gap_logged_at = 0

    # -- one round ----------------------------------------------------------------

    def step(self) -> float:
        """Claim, read the log, deliver what is due: seconds until the next round is wanted."""
        position = self._claim()
        if position is None:
            return self._n.lease_seconds / 3
        try:
            read_all = self._scan(position)
            wait = self._deliver()
        except _LostLease:
            return 0.0
        return 0.0 if not read_all else wait

    def mark_start(self) -> None:
        """Note the log's end now: a cursor that does not exist yet starts there (ends after it count)."""
        if self._start is None:
            try:
                self._start = self._store.last_seq()
            except StatusError as exc:
                log.warning("webhooks to %s: the store did not answer at start: %s", self.url, exc)

    def _claim(self) -> int | None:
        if self._start is None:
            self._start = self._store.last_seq()
        start = self._start
        position = self._store.claim_cursor(self.name, self._n.owner, self._n.lease_seconds, start)
        if position is not None and not self._started:
            self._started = True
            log.info("webhooks to %s: delivering, from change %d on", self.url, position)
        return position

    def _scan(self, position: int) -> bool:
        """Queue the ended documents after ``position``; whether the log is read to its end."""
        changes = self._store.changes_since(position, self.SCAN_BATCH)
        if not changes:
            self._check_restarted(position)
            return True
        self._check_gap(position, changes[0].seq)
        queued = time.time()
        entries = [
            self._entry(c, c.record, queued) for c in changes if c.record and c.record["status"] in ENDED
        ]
        if not self._store.move_cursor(self.name, self._n.owner, changes[-1].seq, entries):
            raise _LostLease
        return len(changes) < self.SCAN_BATCH

    def _check_gap(self, position: int, first: int) -> None:
        if first > position + 1 and first != self._gap_logged_at:
            self._gap_logged_at = first
            log.warning(
                "webhooks to %s: changes %d to %d were dropped from the store's change log before they "
                "were read (the notifier was away longer than the log keeps); documents that ended in "
                "them are not notified",
                self.url,
                position + 1,
                first - 1,
            )

    def _check_restarted(self, position: int) -> None:
        last = self._store.last_seq()
        if last < position:
            # The store's history started again (a Redis server that restarted empty).
            log.warning(
                "webhooks to %s: the store's change log starts again (it is at %d, the cursor was at %d); "
                "going on from its start",
                self.url,
                last,
                position,
            )
            if not self._store.move_cursor(self.name, self._n.owner, 0, []):
                raise _LostLease

    def _entry(self, change: Change, record: Record, queued: float) -> OutboxEntry:
        event = str(record["status"])
        body = {"event": event, "seq": change.seq, "doc_id": change.doc_id, "status": status_json(record)}
        delivery = uuid.uuid4().hex
        data = {
            "delivery": delivery,
            "event": event,
            "doc_id": change.doc_id,
            "body": json.dumps(body, separators=(",", ":"), ensure_ascii=False),
            "queued": queued,
            "attempts": 0,
            "due": 0.0,
        }
        return OutboxEntry(delivery, change.seq, data)

    # -- delivering -----------------------------------------------------------------

    def _deliver(self) -> float:
        """Post the due oldest entry of each document (up to CONCURRENCY); seconds until more are due."""
        now = time.time()
        heads = _oldest_per_document(self._store.outbox(self.name, self.WINDOW))
        due = [e for e in heads if e.data["due"] <= now][: self.CONCURRENCY]
        for attempt in self._n.pool.map(self._attempt, due):
            self._settle(attempt)
        if due:
            return 0.0  # the next round sees the new due times
        later = [float(e.data["due"]) - now for e in heads if e.data["due"] > now]
        return max(0.0, min([self._n.idle_seconds, *later]))

    def _attempt(self, entry: OutboxEntry) -> _Attempt:
        body = entry.data["body"].encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"docstatus/{__version__}",
            "X-Docstatus-Event": entry.data["event"],
            "X-Docstatus-Delivery": entry.data["delivery"],
            "X-Docstatus-Timestamp": timestamp,
            "X-Docstatus-Signature": sign(self._n.secret, timestamp, body),
        }
        return _Attempt(entry, post(self.url, body, headers, self._n.timeout))

    def _settle(self, attempt: _Attempt) -> None:
        entry, data, reply = attempt.entry, dict(attempt.entry.data), attempt.reply
        data["attempts"] = attempts = int(data["attempts"]) + 1
        retry_at = time.time() + self._delay(attempts, reply.retry_after)
        if reply.outcome == "retry" and retry_at <= data["queued"] + self._n.retry_seconds:
            data["due"], data["error"] = retry_at, reply.reason
            self._write(entry.key, data)
            log.debug(
                "webhook to %s for %s: %s; retry %d soon", self.url, data["doc_id"], reply.reason, attempts
            )
            return
        if reply.outcome != "done":
            self._give_up(data, reply.reason)
        self._write(entry.key, None)

    def _delay(self, attempts: int, retry_after: float | None) -> float:
        # A receiver's Retry-After is honoured, up to the backoff's cap.
        backoff = self._n.backoff
        delay = backoff.delay(attempts)
        return delay if retry_after is None else max(delay, min(retry_after, backoff.cap))

    def _give_up(self, data: dict[str, Any], reason: str) -> None:
        waited = time.time() - float(data["queued"])
        log.warning(
            "webhook to %s given up: %s of document %s (delivery %s), %d attempts in %.0fs, last: %s",
            self.url,
            data["event"],
            data["doc_id"],
            data["delivery"],
            data["attempts"],
            waited,
            reason,
        )

    def _write(self, key: str, data: dict[str, Any] | None) -> None:
        if not self._store.settle(self.name, self._n.owner, key, data):
            raise _LostLease

    def release(self) -> None:
        """Give the cursor up now, so another process takes over at once."""
        self._store.release_cursor(self.name, self._n.owner)


def _oldest_per_document(entries: Iterable[OutboxEntry]) -> list[OutboxEntry]:
    seen: set[str] = set()
    heads = []
    for entry in entries:
        doc_id = entry.data["doc_id"]
        if doc_id not in seen:
            seen.add(doc_id)
            heads.append(entry)
    return heads


def _nothing() -> None:
    return None


class Notifier:
    """Completion webhooks to ``urls`` for documents of ``manager``'s store (see the module docstring).

    :meth:`start` starts one thread per URL; :meth:`stop` ends them (a delivery in
    flight gets up to ``timeout`` seconds) and hands each cursor on. Both are
    idempotent. The manager's subscribers are only told to wake a thread, so a
    status write never waits for a receiver. ``lease_seconds`` is how long a
    process that stops without :meth:`stop` (killed) keeps the others from
    taking over; at least twice the ``timeout`` plus a second, so that one round
    always fits in a lease.
    """

    #: Seconds between looks at the log when nothing wakes the thread (changes by other processes).
    idle_seconds = 1.0

    def __init__(
        self,
        manager: StatusManager,
        urls: Iterable[str],
        secret: str,
        *,
        retry_seconds: float = 3600.0,
        backoff: Backoff | None = None,
        timeout: float = 10.0,
        lease_seconds: float = 30.0,
    ) -> None:
        self.manager = manager
        self.secret = secret.encode()
        self.retry_seconds = retry_seconds
        self.backoff = backoff if backoff is not None else Backoff(1.0, 300.0)
        self.timeout = timeout
        self.lease_seconds = max(lease_seconds, 2 * timeout + 1)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.receivers = [_Receiver(self, url) for url in urls]
        self.pool = ThreadPoolExecutor(
            _Receiver.CONCURRENCY * max(1, len(self.receivers)), "docstatus-webhook"
        )
        self._wakes = [threading.Event() for _ in self.receivers]
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._unsubscribe: Callable[[], None] = _nothing
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, manager: StatusManager, settings: ServiceSettings) -> Notifier | None:
        """The notifier the service settings ask for; ``None`` without ``notify_url``."""
        if not settings.notify_url or settings.notify_secret is None:
            return None
        return cls(
            manager,
            settings.notify_url,
            settings.notify_secret,
            retry_seconds=settings.notify_retry_seconds,
            backoff=Backoff(settings.notify_backoff_seconds, settings.notify_backoff_max_seconds),
            timeout=settings.notify_timeout,
            lease_seconds=settings.lease_seconds,
        )

    def start(self) -> None:
        """Start delivering (one thread per URL). Idempotent."""
        with self._lock:
            if self._threads:
                return
            self._stopping.clear()
            for receiver in self.receivers:
                receiver.mark_start()
            self._unsubscribe = self.manager.subscribe(self._wake)
            for receiver, wake in zip(self.receivers, self._wakes, strict=True):
                thread = threading.Thread(
                    target=self._run, args=(receiver, wake), name="docstatus-notify", daemon=True
                )
                thread.start()
                self._threads.append(thread)

    def _wake(self, event: Event) -> None:
        # On the writer's thread, after its lock: only a flag is set.
        if event["status"] is not None and event["status"]["status"] in ENDED:
            for wake in self._wakes:
                wake.set()

    def _run(self, receiver: _Receiver, wake: threading.Event) -> None:
        failing = False
        while not self._stopping.is_set():
            wake.clear()
            try:
                wait = receiver.step()
                failing = False
            except StatusError as exc:
                if not failing:
                    log.warning("webhooks to %s paused: %s", receiver.url, exc)
                failing, wait = True, self.idle_seconds
            wake.wait(wait)

    def stop(self) -> None:
        """Stop the threads and hand the cursors on; pending deliveries stay in the store. Idempotent."""
        with self._lock:
            threads, self._threads = self._threads, []
            self._stopping.set()
            self._unsubscribe()
            for wake in self._wakes:
                wake.set()
            for thread in threads:
                thread.join(self.timeout + 5)
            if threads:
                self._release()

    def _release(self) -> None:
        for receiver in self.receivers:
            try:
                receiver.release()
            except StatusError as exc:
                log.warning("webhooks to %s: could not hand the cursor on: %s", receiver.url, exc)

    def close(self) -> None:
        """:meth:`stop`, and end the delivery threads' pool."""
        self.stop()
        self.pool.shutdown(wait=False)
