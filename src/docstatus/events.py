"""Change events: delivery to subscribers, in sequence order, outside the store's lock.

The store's change log is the queue. After a change, the thread that made it
"pumps": it reads the log from the last delivered sequence number and calls
every subscriber. Only one thread pumps at a time; a thread that finds another
pumping leaves its change to that one, which re-checks the log before it stops.
So every subscriber sees every change once, in ``seq`` order, and a subscriber
may call back into the manager (its own change is delivered by the same loop,
after the current callback returns).

For a shared store a watcher thread also pumps when another process changes
the log; it runs only while there are subscribers.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Literal, NotRequired, TypedDict

from .errors import StoreUnavailableError
from .records import copy_json, status_json
from .stores.base import Change, Store

__all__ = ["Event", "EventHub", "Mailbox", "Subscriber", "reset_event"]

log = logging.getLogger(__name__)


class Event(TypedDict):
    """One change, as subscribers and the SSE stream receive it.

    Type ``reset`` (only for subscribers that ask for it, and in
    :meth:`~docstatus.manager.StatusManager.events`) is no change: it says that
    changes were missed (``reason``; ``doc_id`` is empty, ``status`` ``None``),
    so the receiver reads the listing again; ``seq`` is where events go on from.
    """

    seq: int
    type: Literal["created", "updated", "removed", "reset"]
    doc_id: str
    #: The status JSON exactly as ``GET /status/{doc_id}`` returns it; ``None`` when removed.
    status: dict[str, Any] | None
    #: Why changes were missed (``reset`` only).
    reason: NotRequired[str]
    #: The oldest change the log still holds, when the missed ones were dropped from it (``reset`` only).
    first_seq: NotRequired[int]


def reset_event(seq: int, reason: str, first_seq: int | None = None) -> Event:
    """A ``reset``: changes before ``seq`` were missed for ``reason``; read the listing again."""
    event: Event = {"seq": seq, "type": "reset", "doc_id": "", "status": None, "reason": reason}
    if first_seq is not None:
        event["first_seq"] = first_seq
    return event


Subscriber = Callable[[Event], object]


def to_event(change: Change) -> Event:
    """The event for a logged change."""
    body = None if change.record is None else status_json(change.record)
    return {"seq": change.seq, "type": change.type, "doc_id": change.doc_id, "status": body}


class EventHub:
    """The subscribers of one manager and the position they have been served to."""

    BATCH = 500

    def __init__(self, store: Store) -> None:
        self._store = store
        self._subscribers: tuple[Subscriber, ...] = ()
        #: The subscribers that also receive ``reset`` events.
        self._resets: tuple[Subscriber, ...] = ()
        #: The store's epoch when the first subscriber came (see Store.epoch).
        self._epoch = ""
        #: Whether anyone is listening (the hot path skips pumping otherwise). An
        #: attribute, not a property, because every change reads it.
        self.active = False
        self._delivered = 0
        self._pending = False
        self._edit = threading.Lock()
        self._pumping = threading.Lock()
        self._watcher: threading.Thread | None = None
        self._closed = False

    def subscribe(self, callback: Subscriber, *, resets: bool = False) -> Callable[[], None]:
        """Call ``callback(event)`` for every change from now on; returns the unsubscribe.

        With ``resets``, also a ``reset`` event when the store's history started
        again (a server that restarted empty): changes may have been missed.
        """
        if not callable(callback):
            raise TypeError("subscriber must be callable")
        with self._edit:
            if not self._subscribers:
                self._delivered = self._store.last_seq()
                self._epoch = self._store.epoch() if self._store.shared else ""
            self._set_subscribers((*self._subscribers, callback))
            if resets:
                self._resets = (*self._resets, callback)
            if self._store.shared and self._watcher is None and not self._closed:
                self._start_watcher()

        def unsubscribe() -> None:
            with self._edit:
                self._set_subscribers(tuple(s for s in self._subscribers if s is not callback))
                self._resets = tuple(s for s in self._resets if s is not callback)

        return unsubscribe

    def resync(self) -> None:
        """Start over from the store's latest change if its history started again (its epoch changed).

        Then every ``resets`` subscriber gets a ``reset`` event, and changes
        are delivered from there on. Called by the watcher after each wait.
        """
        epoch = self._store.epoch()
        if epoch == self._epoch:
            return
        with self._pumping:
            self._restart(epoch)

    def _restart(self, epoch: str) -> None:
        # Called with self._pumping held.
        if epoch == self._epoch:
            return
        self._epoch = epoch
        self._delivered = self._store.last_seq()
        log.warning("status store %s started a new history (reset); streams start over", self._store.url)
        event = reset_event(self._delivered, "the status store was reset: its change numbers started again")
        for callback in self._resets:
            try:
                callback(copy_json(event))
            except Exception:
                log.exception("status subscriber %r failed on a reset", callback)

    def pump(self, change: Change | None = None) -> None:
        """Deliver every logged change not yet delivered. Safe from any thread.

        ``change`` is the change the caller just made, if any: when it is the
        next one due, it is delivered as is instead of being read back from
        the store's log (a query per change for SQLite and Redis).
        """
        while self._subscribers:
            if not self._pumping.acquire(blocking=False):
                # Leave this change to the thread pumping now: it checks _pending after it
                # lets go. Set only after a failed try, and tried once more, so that the
                # flag always means "someone else changed something", never our own change.
                self._pending = True
                if not self._pumping.acquire(blocking=False):
                    return
            try:
                # Read and cleared in one step (no call in between, so no thread switch). A
                # change flagged before this may not be `change`'s successor: read the log.
                signalled, self._pending = self._pending, False
                self._drain(None if signalled else change)
                change = None
            finally:
                self._pumping.release()
            if not self._pending:
                return

    def _drain(self, change: Change | None) -> None:
        if change is not None and change.seq <= self._delivered and self._store.shared:
            # Our own change numbered at or below what was delivered: usually another thread
            # delivered it first, but a store that restarted empty numbers from 1 again.
            self._restart(self._store.epoch())
        if change is not None and change.seq == self._delivered + 1:
            # Nothing else can be due: threads of this process that changed
            # something meanwhile set _pending, and changes of other
            # processes sharing the store wake the watcher.
            self._deliver(change)
            self._delivered = change.seq
            return
        while True:
            changes = self._store.changes_since(self._delivered, self.BATCH)
            if not changes:
                return
            for logged in changes:
                self._deliver(logged)
                self._delivered = logged.seq

    def _deliver(self, change: Change) -> None:
        subscribers = self._subscribers
        if not subscribers:
            return
        event = to_event(change)
        for i, callback in enumerate(subscribers):
            try:
                callback(event if i == 0 else copy_json(event))
            except Exception:
                log.exception("status subscriber %r failed on change %d", callback, change.seq)

    def _start_watcher(self) -> None:
        ref = weakref.ref(self)
        thread = threading.Thread(target=_watch, args=(ref,), name="docstatus-events", daemon=True)
        self._watcher = thread
        thread.start()

    def _retire_watcher(self) -> bool:
        """Whether the watcher should stop (then it is forgotten), decided under the lock
        that subscribe() holds, so a subscriber arriving meanwhile always has a watcher."""
        with self._edit:
            if self._closed or not self._subscribers:
                self._watcher = None
                return True
            return False

    def close(self) -> None:
        """Stop the watcher and forget every subscriber."""
        with self._edit:
            self._closed = True
            self._set_subscribers(())
            self._resets = ()

    def _set_subscribers(self, subscribers: tuple[Subscriber, ...]) -> None:
        # Called with self._edit held.
        self._subscribers = subscribers
        self.active = bool(subscribers)


def _watch(ref: weakref.ReferenceType[EventHub]) -> None:
    # Holds the hub only for one wait at a time, so a dropped manager's hub dies.
    unreachable = False
    while True:
        hub = ref()
        if hub is None or hub._retire_watcher():
            return
        try:
            hub._store.wait_for_change(hub._delivered, timeout=1.0)
            hub.resync()
            hub.pump()
        except StoreUnavailableError as exc:
            # An outage is one line when it starts, not a traceback a second while it lasts.
            if not unreachable:
                log.warning("%s; events resume when it answers", exc)
            unreachable = True
            time.sleep(1.0)
        except Exception:
            log.exception("watching the status store for changes failed; retrying")
            time.sleep(1.0)
        else:
            if unreachable:
                log.warning("status store %s answers again; events resume", hub._store.url)
            unreachable = False
        del hub


class Mailbox:
    """The events one async consumer has not taken yet: bounded, and coalesced once it lags.

    Used on one event loop's thread only. The first ``exact`` pending events
    are kept as they came. Past that the consumer is lagging: an event replaces
    its document's pending one (and moves to the end, so ``seq`` order holds),
    so a lagging consumer gets each document's latest state, not every frame.
    :meth:`put` refuses an event (``False``) once ``limit`` are pending; the
    caller then reads the store's log instead. A ``reset`` replaces everything.
    """

    def __init__(self, exact: int, limit: int) -> None:
        self._exact = exact
        self._limit = limit
        # Keyed by seq while exact, by doc_id once coalescing (an int never equals a str).
        self._items: OrderedDict[int | str, Event] = OrderedDict()
        self._ready = asyncio.Event()

    def put(self, event: Event) -> bool:
        """Keep ``event`` for the consumer; ``False`` (nothing kept) when ``limit`` are pending."""
        items = self._items
        if event["type"] == "reset":
            items.clear()
            items[event["seq"]] = event
        elif len(items) >= self._limit and event["doc_id"] not in items:
            return False
        elif len(items) < self._exact:
            items[event["seq"]] = event
        else:
            items.pop(event["doc_id"], None)
            items[event["doc_id"]] = event
        self._ready.set()
        return True

    def __len__(self) -> int:
        return len(self._items)

    async def get(self) -> Event:
        """The oldest pending event, once there is one."""
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.popitem(last=False)[1]
