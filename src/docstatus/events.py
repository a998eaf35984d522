"""Change events: encoded once, delivered off the writer's thread, in sequence order.

A writer only hands its change to the hub (:meth:`EventHub.pump`): a queue
append, whatever the number of subscribers. One dispatcher thread per hub
(the *lead*) turns each change into one read-only :class:`Event`, shared by
every subscriber (a mutation raises ``TypeError``), and calls the subscribers
in turn. So every subscriber sees every change once, in ``seq`` order, on the
dispatcher's thread, soon after the change; a subscriber may call back into
the manager (its own change is delivered by the same loop, after the current
callback returns). :meth:`EventHub.wait_delivered` waits until the changes
made so far have reached every subscriber.

A subscriber that stays busy with one event for :attr:`EventHub.STALL_SECONDS`
(to twice that) is detached: the stuck thread goes on serving that subscriber
alone, from the store's change log, and rejoins once it has caught up, while a
new dispatcher serves the others. The async streams of one event loop share
one subscription (one hand-over to the loop per change). Derived encodings of
an event (an SSE frame) are built once per event with :func:`encoded_once`.

For a shared store a watcher thread notices when another process changes the
log; it runs only while there are subscribers. While none of them wants
progress reports (``subscribe(progress=False)``), the log is read with
:meth:`~docstatus.stores.base.Store.moves_since`, which spares the reading of
every report that another process wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any, Literal, NoReturn, NotRequired, TypedDict, TypeVar, cast

from .errors import StoreUnavailableError
from .records import copy_json, status_json
from .stores.base import Change, Store

__all__ = [
    "AHEAD",
    "DROPPED",
    "Event",
    "EventFeed",
    "EventHub",
    "Mailbox",
    "Subscriber",
    "encoded_once",
    "reset_event",
    "to_event",
]

log = logging.getLogger(__name__)

T = TypeVar("T")


class Event(TypedDict):
    """One change, as subscribers and the SSE stream receive it.

    Events that the manager hands out are read-only and shared by every
    receiver: changing one raises ``TypeError``; ``copy.deepcopy(event)`` or
    :func:`~docstatus.records.copy_json` gives a plain, mutable copy. They
    are ``dict``/``list`` instances, compare equal to plain ones and serialize
    with ``json.dumps``.

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


_READ_ONLY = "events are shared by every subscriber and read-only; copy.deepcopy(event) gives a mutable copy"


def _refuse(self: object, *args: object, **kwargs: object) -> NoReturn:
    raise TypeError(_READ_ONLY)


class _ReadOnlyDict(dict[str, Any]):
    """A dict that refuses changes; carries the encodings built from it (see encoded_once)."""

    __slots__ = ("_encoded",)

    def __copy__(self) -> dict[str, Any]:
        return dict(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        copied: dict[str, Any] = copy_json(self)
        return copied

    def __reduce__(self) -> tuple[type[dict[str, Any]], tuple[dict[str, Any]]]:
        return dict, (dict(self),)


class _ReadOnlyList(list[Any]):
    """A list that refuses changes."""

    __slots__ = ()

    def __copy__(self) -> list[Any]:
        return list(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        copied: list[Any] = copy_json(self)
        return copied

    def __reduce__(self) -> tuple[type[list[Any]], tuple[list[Any]]]:
        return list, (list(self),)


# Every mutator refuses; set here because each has its own signature, which a stub would restate.
for _name in ("__setitem__", "__delitem__", "__ior__", "clear", "pop", "popitem", "setdefault", "update"):
    setattr(_ReadOnlyDict, _name, _refuse)
for _name in (
    "__setitem__", "__delitem__", "__iadd__", "__imul__",
    "append", "clear", "extend", "insert", "pop", "remove", "reverse", "sort",
):  # fmt: skip
    setattr(_ReadOnlyList, _name, _refuse)


def _read_only(value: Any) -> Any:
    if isinstance(value, dict):
        return _ReadOnlyDict({key: _read_only(item) for key, item in value.items()})
    if isinstance(value, list):
        return _ReadOnlyList([_read_only(item) for item in value])
    return value


def reset_event(seq: int, reason: str, first_seq: int | None = None) -> Event:
    """A ``reset``: changes before ``seq`` were missed for ``reason``; read the listing again."""
    event: dict[str, Any] = {"seq": seq, "type": "reset", "doc_id": "", "status": None, "reason": reason}
    if first_seq is not None:
        event["first_seq"] = first_seq
    return cast(Event, _ReadOnlyDict(event))


def to_event(change: Change) -> Event:
    """The read-only event for a logged change (built once per change, then shared)."""
    body = None if change.record is None else _read_only(status_json(change.record))
    event = _ReadOnlyDict(seq=change.seq, type=change.type, doc_id=change.doc_id, status=body)
    return cast(Event, event)


def encoded_once(event: Event, encode: Callable[[Event], T]) -> T:
    """``encode(event)``, built once per event and shared by everyone who asks for it.

    ``encode`` must be a pure function of the event (the same function object
    each time: it is the key). Events the manager hands out keep the result;
    any other mapping is simply encoded. Safe from any thread (two threads
    racing may both encode; either result is kept).
    """
    if type(event) is not _ReadOnlyDict:
        return encode(event)
    shared: Any = event  # a _ReadOnlyDict: its slot keeps the encodings
    try:
        encoded: dict[object, Any] = shared._encoded
    except AttributeError:
        encoded = shared._encoded = {}
    try:
        return cast(T, encoded[encode])
    except KeyError:
        value = encoded[encode] = encode(shared)
        return value


Subscriber = Callable[[Event], object]


class _Feed:
    """One subscriber and the last change it has been given."""

    __slots__ = ("callback", "delivered", "gone", "progress", "resets")

    def __init__(self, callback: Subscriber, resets: bool, delivered: int, progress: bool) -> None:
        self.callback = callback
        self.resets = resets
        self.progress = progress
        self.delivered = delivered
        self.gone = False


class _Lead:
    """A dispatcher thread's state, watched for a subscriber that does not return."""

    __slots__ = ("busy", "calls", "kept", "retired", "thread")

    def __init__(self) -> None:
        #: The feed being called now, if any, and how many calls were started (the watchdog's token).
        self.busy: _Feed | None = None
        self.calls = 0
        #: Set when the watchdog replaced this dispatcher; it then serves ``kept`` alone.
        self.retired = False
        self.kept: _Feed | None = None
        self.thread: threading.Thread | None = None


class _LoopFanout:
    """The async streams of one event loop: one hub subscription, one hand-over per change."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.offers: dict[int, Callable[[Event], None]] = {}
        self.unsubscribe: Callable[[], None] = lambda: None

    def __call__(self, event: Event) -> None:  # on the dispatcher's thread
        with contextlib.suppress(RuntimeError):  # the loop has closed: its streams are gone too
            self.loop.call_soon_threadsafe(self._offer, event)

    def _offer(self, event: Event) -> None:  # on the loop's thread
        for offer in tuple(self.offers.values()):
            try:
                offer(event)
            except Exception:
                log.exception("an event stream failed on change %d", event["seq"])


class EventHub:
    """The subscribers of one manager and the dispatcher that serves them."""

    #: Changes read from the store's log at a time.
    BATCH = 500
    #: Seconds a subscriber may stay busy with one event before it is detached (it is then
    #: served alone from the log, on the thread it is stuck on, and the others go on).
    STALL_SECONDS = 0.5
    #: Changes handed over and not yet taken by the dispatcher, past which a writer waits
    #: for it (only when the subscribers together are slower than the writers).
    BACKLOG = 10_000

    def __init__(self, store: Store) -> None:
        self._store = store
        self._feeds: tuple[_Feed, ...] = ()
        #: The store's epoch when the first subscriber came (see Store.epoch).
        self._epoch = ""
        #: Whether anyone is listening (the hot path skips pumping otherwise). An
        #: attribute, not a property, because every change reads it.
        self.active = False
        #: Whether a subscriber wants progress reports (else the log is read for moves only).
        self._reports_wanted = False
        #: Every attached subscriber has been given every change up to this one.
        self._delivered = 0
        #: The change the dispatcher is delivering (its list of subscribers is taken).
        self._claimed = 0
        #: The end of the log window being delivered when it was read for moves only: a
        #: subscriber of reports rejoins past it (the reports in it are not delivered).
        self._window = 0
        self._inbox: deque[Change] = deque()
        #: Changes to read from the store's log (another process's, or a gap in the inbox).
        self._log_due = False
        self._epoch_due: str | None = None
        self._wake = threading.Event()
        self._busy = threading.Event()
        self._lock = threading.Lock()
        self._progress = threading.Condition(self._lock)
        self._waiting = 0
        self._lead: _Lead | None = None
        self._watchdog: threading.Thread | None = None
        self._watcher: threading.Thread | None = None
        self._loops: dict[asyncio.AbstractEventLoop, _LoopFanout] = {}
        self._stream_ids = itertools.count()
        self._closed = False
        _hubs.add(self)

    # -- subscribing -----------------------------------------------------------------

    def subscribe(
        self, callback: Subscriber, *, resets: bool = False, progress: bool = True
    ) -> Callable[[], None]:
        """Call ``callback(event)`` for every change from now on; returns the unsubscribe.

        Calls come from the hub's dispatcher thread, one at a time, in ``seq``
        order; the event is read-only and shared with the other subscribers.
        With ``resets``, also a ``reset`` event when the store's history started
        again (a server that restarted empty), or when this subscriber, detached
        for being slow, fell behind the store's retained log: changes were missed.
        ``progress=False`` says the callback ignores changes that keep a
        document's status: it may then be spared them (see the module docstring).
        """
        if not callable(callback):
            raise TypeError("subscriber must be callable")
        with self._lock:
            if not self._feeds:
                self._epoch = self._store.epoch() if self._store.shared else ""
                self._claimed = self._delivered = self._store.last_seq()
                self._window = 0
                self._inbox.clear()
                self._log_due = False
            # From now on, even while the dispatcher is still behind with older changes.
            feed = _Feed(callback, resets, max(self._claimed, self._store.last_seq()), progress)
            self._set_feeds((*self._feeds, feed))
            self._start_threads()

        def unsubscribe() -> None:
            with self._lock:
                feed.gone = True
                self._set_feeds(tuple(f for f in self._feeds if f is not feed))

        return unsubscribe

    def join_stream(
        self, loop: asyncio.AbstractEventLoop, offer: Callable[[Event], None]
    ) -> Callable[[], None]:
        """Call ``offer(event)`` on ``loop`` for every change and ``reset``; returns the leave function.

        Call both on ``loop``'s thread. Every stream of one loop shares one
        subscription: one hand-over to the loop per change, then each offer
        gets the same event.
        """
        with self._lock:
            fanout = self._loops.get(loop)
            if fanout is None:
                fanout = self._loops[loop] = _LoopFanout(loop)
                created = True
            else:
                created = False
        if created:
            fanout.unsubscribe = self.subscribe(fanout, resets=True)
        token = next(self._stream_ids)
        fanout.offers[token] = offer

        def leave() -> None:
            fanout.offers.pop(token, None)
            if fanout.offers:
                return
            with self._lock:
                if self._loops.get(loop) is fanout:
                    del self._loops[loop]
            fanout.unsubscribe()

        return leave

    def _set_feeds(self, feeds: tuple[_Feed, ...]) -> None:
        # Called with self._lock held.
        self._feeds = feeds
        self.active = bool(feeds)
        self._reports_wanted = any(feed.progress for feed in feeds)

    # -- handing changes over --------------------------------------------------------

    def pump(self, change: Change | None = None) -> None:
        """Hand ``change`` over for delivery, or (``None``) have the store's log read for changes.

        Never calls a subscriber, safe from any thread, and costs the same
        whatever the number of subscribers. A writer waits only when
        :attr:`BACKLOG` changes are already waiting for the dispatcher.
        """
        if not self._feeds:
            return
        if change is None:
            self._log_due = True
        elif len(self._inbox) < self.BACKLOG:
            self._inbox.append(change)
        else:
            self._wait_for_room(change)
        if not self._wake.is_set():
            self._wake.set()

    def _deliver(self, change: Change) -> None:
        """Deliver ``change`` (after the ones before it): the same as ``pump(change)``."""
        self.pump(change)

    def _wait_for_room(self, change: Change) -> None:
        lead = self._lead
        if lead is None or lead.thread is not threading.current_thread():
            with self._progress:
                self._waiting += 1
                try:
                    while len(self._inbox) >= self.BACKLOG and self._feeds and not self._closed:
                        self._wake.set()
                        self._progress.wait(0.5)
                finally:
                    self._waiting -= 1
        # A subscriber's own change (on the dispatcher's thread) never waits for the dispatcher.
        self._inbox.append(change)

    def resync(self) -> None:
        """Start over from the store's latest change if its history started again (its epoch changed).

        Then every ``resets`` subscriber gets a ``reset`` event (from the
        dispatcher, in order), and changes are delivered from there on. Called
        by the watcher after each wait.
        """
        epoch = self._store.epoch()
        if epoch != self._epoch:
            self._epoch_due = epoch
            self._wake.set()

    def behind(self, seq: int) -> bool:
        """Whether a change up to ``seq`` may not have been delivered yet.

        ``False`` means every change up to ``seq`` has been: the watcher need
        not have the log read for a change this process made itself.
        """
        return seq > self._delivered

    def wait_delivered(self, seq: int, timeout: float | None = None) -> bool:
        """Wait until every attached subscriber has been given every change up to ``seq``.

        ``True`` when they have (or there is no subscriber), ``False`` after
        ``timeout`` seconds. A detached (slow) subscriber is not waited for.
        Called by a subscriber itself, it cannot wait for its own dispatcher
        and answers at once.
        """
        lead = self._lead
        if lead is not None and lead.thread is threading.current_thread():
            return self._delivered >= seq
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._progress:
            self._waiting += 1
            try:
                while self._delivered < seq and self._feeds and not self._closed:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return False
                    self._progress.wait(left)
                return True
            finally:
                self._waiting -= 1

    # -- the dispatcher --------------------------------------------------------------

    def _start_threads(self) -> None:
        # Called with self._lock held.
        ref = weakref.ref(self)
        if self._lead is None:
            self._lead = _Lead()
            self._lead.thread = _thread(_dispatch, (ref, self._wake, self._lead), "docstatus-events")
        if self._watchdog is None:
            self._watchdog = _thread(_supervise, (ref, self._busy), "docstatus-events-watchdog")
        if self._store.shared and self._watcher is None and not self._closed:
            # From the last change delivered, not from when the thread first runs: another
            # process's change in between is then noticed too.
            self._watcher = _thread(_watch, (ref, self._delivered), "docstatus-events-watcher")

    def _retire(self, lead: _Lead) -> bool:
        """Whether dispatcher ``lead`` should stop (then it is forgotten), decided under the lock
        that subscribe() holds, so a subscriber arriving meanwhile always has a dispatcher."""
        with self._lock:
            if self._closed or not self._feeds or lead.retired:
                if self._lead is lead:
                    self._lead = None
                    self._busy.clear()
                return True
            return False

    def _round(self, lead: _Lead) -> bool:
        """Deliver what is due; ``False`` when there was nothing (the dispatcher may sleep)."""
        batch, seen = self._take()
        if not batch and seen <= self._delivered:
            return self._idle()
        if batch and not self._busy.is_set():
            self._busy.set()
        for change in batch:
            if not self._deliver_as(lead, change):
                self._serve_alone(lead)
                return True
            self._delivered = change.seq
        if seen > self._delivered:
            self._skip_to(seen)
        elif self._waiting:
            with self._progress:
                self._progress.notify_all()
        return True

    def _idle(self) -> bool:
        """Nothing was due: ``False`` when the dispatcher may sleep (nothing came meanwhile)."""
        self._wake.clear()
        if self._inbox or self._log_due or self._epoch_due is not None:
            return True
        self._busy.clear()
        return False

    def _skip_to(self, seen: int) -> None:
        # The log up to seen held only reports, which no subscriber wants: they are done.
        with self._lock:
            self._claimed = max(self._claimed, seen)
            self._delivered = max(self._delivered, seen)
            self._progress.notify_all()

    def _take(self) -> tuple[list[Change], int]:
        """The changes due next, in order: the handed-over ones, or the log's when they leave a gap.

        Also the last change they stand for: past the last of them when the
        log's reports after it were left out (no subscriber wants them).
        """
        handed = self._handed()
        if self._epoch_due is not None:
            epoch, self._epoch_due = self._epoch_due, None
            self._restart(epoch)
            return [], 0
        log_due, self._log_due = self._log_due, False
        after = self._delivered
        fresh = sorted((c for c in handed if c.seq > after), key=_seq)
        if len(fresh) < len(handed) and self._store.shared:
            # Our own change numbered at or below what was delivered: usually the log had it
            # already, but a store that restarted empty numbers from 1 again.
            epoch = self._store.epoch()
            self._epoch_due = epoch if epoch != self._epoch else None
        if not log_due and (not fresh or (fresh[0].seq == after + 1 and fresh[-1].seq == after + len(fresh))):
            return fresh, 0
        logged, seen = self._read_log(after)
        if seen == after:
            return fresh, 0  # nothing logged after them (a store that keeps no log of these)
        # A full window's changes are distinct seqs after `after`: it spans at least BATCH.
        if seen - after >= self.BATCH or (fresh and fresh[-1].seq > seen):
            self._log_due = True
        return logged, seen

    def _read_log(self, after: int) -> tuple[list[Change], int]:
        """The log's next window after ``after``: its changes, and the last change it spans."""
        if not self._reports_wanted:
            moves, seen = self._store.moves_since(after, self.BATCH)
            with self._lock:
                # A subscriber of reports that came during the read starts at the store's
                # last change, past this window, unless it came before this check.
                if not self._reports_wanted:
                    self._window = seen
                    return moves, seen
        logged = self._store.changes_since(after, self.BATCH)
        return logged, logged[-1].seq if logged else after

    def _handed(self) -> list[Change]:
        inbox = self._inbox
        handed = [inbox.popleft() for _ in range(len(inbox))]
        if handed and self._waiting:
            with self._progress:
                self._progress.notify_all()  # writers waiting for room
        return handed

    def _deliver_as(self, lead: _Lead, change: Change) -> bool:
        """Give ``change`` to every attached subscriber; ``False`` once ``lead`` was replaced."""
        event = to_event(change)
        seq = change.seq
        with self._lock:
            if lead.retired:
                return False
            self._claimed = seq
            feeds = self._feeds
        for feed in feeds:
            if feed.delivered >= seq or feed.gone:
                continue
            with self._lock:
                if lead.retired:
                    return False
                lead.busy = feed
                lead.calls += 1
            _call(feed.callback, event)
            feed.delivered = seq
            lead.busy = None
        return not lead.retired

    def _restart(self, epoch: str) -> None:
        # On the dispatcher's thread, so that the reset takes its place among the changes.
        if epoch == self._epoch:
            return
        self._epoch = epoch
        seq = self._store.last_seq()
        with self._lock:
            self._claimed = self._delivered = seq
            self._window = 0
            feeds = self._feeds
        for feed in feeds:
            feed.delivered = seq
        log.warning("status store %s started a new history (reset); streams start over", self._store.url)
        event = reset_event(seq, "the status store was reset: its change numbers started again")
        for feed in feeds:
            if feed.resets:
                _call(feed.callback, event)

    # -- a subscriber that does not return ---------------------------------------------

    def _check_stall(self, seen: tuple[_Lead, int] | None) -> tuple[_Lead, int] | None:
        """The watchdog's look: the call in progress; the same one as last time is a stall."""
        with self._lock:
            lead = self._lead
            if lead is None or lead.busy is None:
                return None
            token = (lead, lead.calls)
            if token != seen:
                return token
            feed = lead.busy
            lead.retired, lead.kept = True, feed
            self._set_feeds(tuple(f for f in self._feeds if f is not feed))
            self._lead = None
            self._log_due = True  # the new dispatcher reads on from the last change all were given
            self._wake.set()
            self._start_threads()
        log.warning(
            "status subscriber %r has been busy with one change for over %.1f s: it goes on alone"
            " (from the change log, on its own thread) until it catches up; the others go on",
            feed.callback,
            self.STALL_SECONDS,
        )
        return None

    def _serve_alone(self, lead: _Lead) -> None:
        """On the stuck thread, once its call returned: the change log to its subscriber, then rejoin."""
        feed = lead.kept
        while feed is not None and not feed.gone and not self._closed:
            try:
                if self._catch_up(feed):
                    return
            except StoreUnavailableError as exc:
                log.warning("%s; events resume when it answers", exc)
                time.sleep(1.0)

    def _catch_up(self, feed: _Feed) -> bool:
        """One batch of the log for a detached ``feed``; ``True`` once it has rejoined the others."""
        with self._lock:
            if feed.delivered >= max(self._claimed, self._window if feed.progress else 0):
                if not feed.gone:
                    self._set_feeds((*self._feeds, feed))
                return True
        changes = self._store.changes_since(feed.delivered, self.BATCH)
        if not changes:
            feed.delivered = max(feed.delivered, self._claimed)
        elif changes[0].seq > feed.delivered + 1:
            self._missed(feed, changes[0].seq)
        for change in changes:
            if feed.gone:
                return True
            _call(feed.callback, to_event(change))
            feed.delivered = change.seq
        return False

    def _missed(self, feed: _Feed, first: int) -> None:
        log.warning("status subscriber %r missed changes %d to %d: gone from the log", feed.callback,
                    feed.delivered + 1, first - 1)  # fmt: skip
        if feed.resets:
            _call(feed.callback, reset_event(first - 1, "changes were dropped from the retained log", first))

    def _after_fork(self) -> None:
        # In a forked child only the forking thread lives on: fresh locks, and new threads
        # for the subscribers the child inherited (an RQ work horse keeps the parent's).
        self._lock = threading.Lock()
        self._progress = threading.Condition(self._lock)
        self._wake, self._busy = threading.Event(), threading.Event()
        self._waiting = 0
        self._lead = None
        self._watchdog = self._watcher = None
        self._loops = {}
        if self._feeds and not self._closed:
            self._log_due = True
            with self._lock:
                self._start_threads()

    def _retire_watchdog(self) -> bool:
        with self._lock:
            if self._closed or not self._feeds:
                self._watchdog = None
                return True
            return False

    def _retire_watcher(self) -> bool:
        """Whether the watcher should stop (then it is forgotten), decided under the lock
        that subscribe() holds, so a subscriber arriving meanwhile always has a watcher."""
        with self._lock:
            if self._closed or not self._feeds:
                self._watcher = None
                return True
            return False

    def close(self) -> None:
        """Stop the dispatcher and the watcher and forget every subscriber."""
        with self._lock:
            self._closed = True
            self._set_feeds(())
            self._progress.notify_all()
        self._wake.set()
        self._busy.set()


_hubs: weakref.WeakSet[EventHub] = weakref.WeakSet()


def _reset_after_fork() -> None:
    for hub in list(_hubs):
        hub._after_fork()


os.register_at_fork(after_in_child=_reset_after_fork)


def _seq(change: Change) -> int:
    return change.seq


def _call(callback: Subscriber, event: Event) -> None:
    try:
        callback(event)
    except Exception:
        log.exception("status subscriber %r failed on change %d", callback, event["seq"])


def _thread(target: Callable[..., None], args: tuple[Any, ...], name: str) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, name=name, daemon=True)
    thread.start()
    return thread


# The threads hold their hub only for one step at a time, so a dropped manager's hub dies.


def _dispatch(ref: weakref.ReferenceType[EventHub], wake: threading.Event, lead: _Lead) -> None:
    unreachable = False
    while True:
        hub = ref()
        if hub is None or hub._retire(lead):
            return
        try:
            worked = hub._round(lead)
        except Exception as exc:
            unreachable = _failed(hub, exc, unreachable)
            del hub
            time.sleep(1.0)
            continue
        unreachable = False
        del hub
        if not worked:
            wake.wait(1.0)


def _failed(hub: EventHub, exc: Exception, unreachable: bool) -> bool:
    """Log a failed round once (an outage is one line when it starts); whether the store is out."""
    hub._log_due = True  # what was taken is read again from the log
    if not isinstance(exc, StoreUnavailableError):
        log.error("delivering status events failed; retrying", exc_info=exc)
        return unreachable
    if not unreachable and not hub._closed:
        log.warning("%s; events resume when it answers", exc)
    return True


def _supervise(ref: weakref.ReferenceType[EventHub], busy: threading.Event) -> None:
    seen: tuple[_Lead, int] | None = None
    while True:
        hub = ref()
        if hub is None or hub._retire_watchdog():
            return
        stall = hub.STALL_SECONDS
        seen = hub._check_stall(seen)
        del hub
        if seen is None and not busy.wait(1.0):
            continue  # nothing is being delivered: nothing can stall
        time.sleep(stall)


def _watch(ref: weakref.ReferenceType[EventHub], seen: int) -> None:
    unreachable = False
    while True:
        hub = ref()
        if hub is None or hub._retire_watcher():
            return
        try:
            seen = _watch_once(hub, seen)
        except StoreUnavailableError as exc:
            # An outage is one line when it starts, not a traceback a second while it lasts;
            # a closed manager's store is gone for good, and nobody listens.
            if not unreachable and not hub._closed:
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


def _watch_once(hub: EventHub, seen: int) -> int:
    """One wait for another process's change after ``seen``; returns the latest seq it saw."""
    store = hub._store
    store.wait_for_change(seen, timeout=1.0)
    hub.resync()
    latest = store.last_seq()
    if latest != seen and hub.behind(latest):
        hub.pump()
    return latest


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
        #: The consumer's wait while nothing is pending (a bare future: cheaper than an asyncio.Event).
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._woken = False
        #: Whether the consumer reads the store's log instead (see :meth:`offer`).
        self.lagging = False

    def offer(self, event: Event) -> None:
        """:meth:`put` while the consumer is live; once refused, :attr:`lagging` (the consumer
        then reads the log, and sets it back) until a ``reset`` makes the log moot."""
        if event["type"] == "reset":
            self.lagging = False
        if not self.lagging and not self.put(event):
            self.lagging = True

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
        self._notify()
        return True

    def __len__(self) -> int:
        return len(self._items)

    def waiting(self) -> bool:
        """Whether the consumer waits in :meth:`get` for an event (so nothing is pending)."""
        waiter = self._waiter
        return waiter is not None and not waiter.done()

    def follows(self, seq: int) -> bool:
        """Whether the pending events go on right after ``seq`` (the oldest is at most ``seq + 1``)."""
        for event in self._items.values():
            return event["seq"] <= seq + 1
        return False

    def close(self) -> None:
        """Make :meth:`get` answer ``None`` once nothing is pending (the consumer is stopping)."""
        self._closed = True
        self._notify()

    def wake(self) -> None:
        """Make the pending (or else the next) :meth:`get` that finds nothing answer ``None`` once."""
        self._woken = True
        self._notify()

    async def get(self) -> Event | None:
        """The oldest pending event, once there is one; ``None`` once closed and empty, or woken."""
        while not self._items:
            if self._closed or self._woken:
                self._woken = False
                return None
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        return self._items.popitem(last=False)[1]

    def _notify(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


#: The reason of the ``reset`` a consumer gets when it resumes from an id the store never reached.
AHEAD = "the stream's position is ahead of the status store: it was reset"

#: The reason of the ``reset`` a consumer gets when changes it never saw left the retained log.
DROPPED = "changes were dropped from the retained log"


class EventFeed:
    """One async consumer's changes, taken one at a time (what :meth:`StatusManager.events` iterates).

    Made by :meth:`~docstatus.manager.StatusManager.event_feed`; used on one
    event loop's thread. :meth:`next` gives every change after ``since`` (first
    the logged ones when ``since`` is given, read off the loop), then the live
    ones, in ``seq`` order, never repeated; a consumer that lags gets each
    document's latest state, then the log (see :class:`Mailbox`). A live change
    costs the consumer one wake-up (none when it takes changes directly, see
    :meth:`take_directly`): no generator, no task of its own. Another
    callback of the loop may :meth:`wake` a waiting :meth:`next` (it answers
    ``None``: the consumer checks why, e.g. a keep-alive is due) or
    :meth:`close` the feed (it leaves the subscription; :meth:`next` answers
    ``None`` from then on).
    """

    def __init__(
        self,
        join: Callable[[Callable[[Event], None]], Callable[[], None]],
        changes_since: Callable[[int, int], list[Event]],
        last_seq: Callable[[], int],
        since: int | None,
        *,
        exact: int,
        limit: int,
        batch: int,
    ) -> None:
        self._box = Mailbox(exact, limit)
        self._box.lagging = since is not None  # a resumed feed starts by reading the log
        self._changes_since, self._last_seq, self._batch = changes_since, last_seq, batch
        #: The last event given out (``-1``: none yet).
        self._last = since if since is not None else -1
        #: While catching up from the log: the last logged event taken, and the batch read.
        self._log_seq: int | None = None
        self._backlog: deque[Event] = deque()
        self._checked_ahead = False
        self.closed = False
        self._direct: Callable[[Event], bool] | None = None
        self._leave = join(self._offer)

    async def next(self) -> Event | None:
        """The next change (or ``reset``); ``None`` once closed, or when woken with nothing due."""
        box = self._box
        while not self.closed:
            if self._log_seq is not None:
                logged = await self._from_log(self._log_seq)
                if logged is not None and not self.closed:
                    self._last = logged["seq"]
                    return logged
                continue
            if box.lagging and not len(box):
                box.lagging = False  # buffer again from here; the log covers what came before
                self._log_seq = self._last
                continue
            live = await box.get()
            if live is None:
                return None
            if live["seq"] > self._last or live["type"] == "reset":
                self._last = live["seq"]
                return live
        return None

    def wake(self) -> None:
        """Make a waiting :meth:`next` answer ``None`` (or the next one, if none is waiting)."""
        self._box.wake()

    def take_directly(self, take: Callable[[Event], bool] | None) -> None:
        """While a :meth:`next` waits with nothing pending, give each change to ``take(event)``
        at once (in the loop's callback that brings it) instead of waking the consumer.

        ``take`` returns ``True`` when it has taken the event (it then counts
        as given out: :meth:`next` never returns it), ``False`` to have it
        pending as usual (the waiting :meth:`next` then returns it). The same
        order and no repeats as :meth:`next`; only live changes go this way
        (never the log's). ``None`` stops it.
        """
        self._direct = take

    def _offer(self, event: Event) -> None:
        # The subscription's callback, on the loop's thread.
        take, box = self._direct, self._box
        fresh = event["seq"] > self._last or event["type"] == "reset"
        if take is not None and fresh and box.waiting() and take(event):
            self._last = event["seq"]
            return
        box.offer(event)

    def close(self) -> None:
        """Leave the subscription; :meth:`next` answers ``None`` from now on. Idempotent."""
        if not self.closed:
            self.closed = True
            self._box.close()
            self._leave()

    async def _from_log(self, seq: int) -> Event | None:
        """The next logged event after ``seq``; ``None`` once the live events go on from there."""
        if not self._checked_ahead:
            self._checked_ahead = True
            latest = await asyncio.to_thread(self._last_seq)
            if seq > latest:
                self._log_seq = latest
                return reset_event(latest, AHEAD)
        if self._box.follows(seq):
            self._caught_up()
            return None
        if not self._backlog:
            backlog = await asyncio.to_thread(self._changes_since, seq, self._batch)
            if not backlog:
                self._caught_up()
                return None
            if backlog[0]["seq"] > seq + 1:
                # Retention dropped changes this consumer never saw: say so, and go on from now.
                self._log_seq = latest = await asyncio.to_thread(self._last_seq)
                return reset_event(latest, DROPPED, backlog[0]["seq"])
            self._backlog.extend(backlog)
        event = self._backlog.popleft()
        self._log_seq = event["seq"]
        return event

    def _caught_up(self) -> None:
        self._log_seq = None
        self._backlog.clear()
        self._checked_ahead = False
