"""Helpers several test modules share: waiting with a deadline, watching a manager's events, uploading.

Imported as ``from helpers import ...`` (this folder is on ``sys.path`` under
pytest, as for ``servers`` and ``_documents``).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from docstatus import Event, StatusManager
from docstatus.models import FINISHED, Status, can_transition

if TYPE_CHECKING:  # the pipeline's libraries stay unloaded for the tests that only wait
    from docstatus.ingest import Intake


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``predicate`` until it holds; AssertionError if it still does not after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached before the deadline")
        time.sleep(0.01)


class Watcher:
    """Every event of a manager, and a way to wait for a document to reach a status.

    ``timeout`` bounds each wait (seconds); a wait that runs out fails the test.
    """

    def __init__(self, manager: StatusManager, timeout: float = 20.0) -> None:
        self.events: list[Event] = []
        self.timeout = timeout
        self._cond = threading.Condition()
        self.unsubscribe = manager.subscribe(self._on_event)

    def _on_event(self, event: Event) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def history(self, doc_id: str) -> list[dict[str, Any]]:
        """The statuses ``doc_id`` went through, in the order its events came."""
        with self._cond:
            return [e["status"] for e in self.events if e["doc_id"] == doc_id and e["status"] is not None]

    def _last(self, doc_id: str) -> str | None:
        history = self.history(doc_id)
        return history[-1]["status"] if history else None

    def wait(self, doc_id: str, *statuses: str) -> dict[str, Any]:
        """The status of ``doc_id`` once its latest event is in one of ``statuses``."""
        with self._cond:
            reached = self._cond.wait_for(lambda: self._last(doc_id) in statuses, self.timeout)
        assert reached, f"{doc_id[:12]} never reached {statuses}; history: {self.history(doc_id)}"
        return self.history(doc_id)[-1]

    def final(self, doc_id: str) -> dict[str, Any]:
        """The status of ``doc_id`` once it completed or failed."""
        return self.wait(doc_id, "completed", "failed")


def assert_legal_and_monotonic(history: Sequence[Mapping[str, Any]]) -> None:
    """Only lifecycle transitions between consecutive statuses, and progress never going down."""
    for before, after in itertools.pairwise(history):
        a, b = Status(before["status"]), Status(after["status"])
        final_from_active = b in FINISHED and a not in FINISHED
        assert can_transition(a, b) or final_from_active, f"illegal {a} -> {b}"
        assert after["progress"] >= before["progress"], f"progress went down: {before} -> {after}"


def submit(intake: Intake, name: str, data: bytes) -> str:
    """Upload ``data`` as ``name`` in one write; the queued document's id."""
    with intake.open_upload(name) as writer:
        writer.write(data)
        return writer.finish().doc_id


def outcomes_on_threads(
    calls: Sequence[Callable[[], Any]], started: Callable[[], None] = lambda: None, timeout: float = 30.0
) -> list[Any]:
    """Each of ``calls`` on a thread of its own, at once; what each returned or raised, in order.

    ``started()`` runs once every thread has started, before they are joined
    (to wait until they are all queued somewhere, then let them go).
    """
    outcomes: list[Any] = [None] * len(calls)

    def call(i: int) -> None:
        try:
            outcomes[i] = calls[i]()
        except Exception as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    started()
    for thread in threads:
        thread.join(timeout)
    return outcomes


class Held:
    """``target(*args, **kwargs)`` on a thread of its own, holding a turn until released.

    ``target`` calls :meth:`wait_for_release` where it holds the turn (inside
    a lock or a transaction). ``with held:`` starts it and returns once it
    holds the turn; leaving the block releases it and joins the thread.
    """

    def __init__(self, target: Callable[..., object], *args: Any, **kwargs: Any) -> None:
        self.inside = threading.Event()
        self.release = threading.Event()
        self.thread = threading.Thread(target=target, args=args, kwargs=kwargs)

    def wait_for_release(self) -> None:
        self.inside.set()
        if not self.release.wait(30):
            raise RuntimeError("never released")

    def __enter__(self) -> Held:
        self.thread.start()
        assert self.inside.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.thread.join(30)
