"""Real threads racing on one manager; invariants checked afterwards (every store, and the memory
store alone where the race is in its own locking or in the event hub)."""

from __future__ import annotations

import contextlib
import itertools
import sys
import threading
from collections.abc import Callable, Iterator
from functools import partial

import pytest

from docstatus import (
    DocumentNotFoundError,
    DuplicateDocumentError,
    InvalidTransitionError,
    Status,
    StatusManager,
)
from docstatus.events import Event
from docstatus.models import can_transition
from helpers import wait_until


def _race(workers: list[Callable[[], None]]) -> list[BaseException]:
    """Start every worker at once; return the exceptions they raised."""
    barrier = threading.Barrier(len(workers))
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(work: Callable[[], None]) -> None:
        barrier.wait()
        try:
            work()
        except BaseException as exc:  # collected and checked by the test
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive(), "a racing thread hung"
    return errors


@contextlib.contextmanager
def _switching_often() -> Iterator[None]:
    """Within the block, the interpreter switches threads as often as it can: races show up sooner."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


def test_exactly_one_of_16_creates_wins(manager: StatusManager) -> None:
    winners: list[str] = []

    def create(i: int) -> Callable[[], None]:
        def work() -> None:
            manager.create_status("contested", f"file-{i}.pdf", {"who": i})
            winners.append(f"file-{i}.pdf")

        return work

    errors = _race([create(i) for i in range(16)])
    assert len(winners) == 1
    assert len(errors) == 15
    assert all(isinstance(e, DuplicateDocumentError) for e in errors)
    status = manager.require_status("contested")
    assert status.filename == winners[0]
    assert status.metadata["who"] == int(winners[0].split("-")[1].split(".")[0])
    assert manager.count_by_status()["total"] == 1


def test_concurrent_progress_on_distinct_documents_loses_nothing(manager: StatusManager) -> None:
    docs = [f"doc-{i}" for i in range(8)]
    for doc in docs:
        manager.create_status(doc, f"{doc}.pdf", {})
        manager.update_status(doc, "parsing")

    def pages(doc: str) -> Callable[[], None]:
        def work() -> None:
            for page in range(1, 101):
                manager.update_status(doc, "embedding_visual", page=page, total_pages=100)

        return work

    assert _race([pages(d) for d in docs]) == []
    for doc in docs:
        status = manager.require_status(doc)
        assert (status.page, status.total_pages) == (100, 100)
        assert status.progress == pytest.approx(0.6)


def test_threads_changing_one_document_lose_no_update(manager: StatusManager) -> None:
    manager.create_status("one", "one.pdf", {})
    manager.update_status("one", "parsing")
    threads, count = 8, 40

    def report(me: int) -> Callable[[], None]:
        def work() -> None:
            for i in range(count):
                # Pages out of order, and a metadata key of each change's own.
                fields = {"page": 1 + (i * 13 + me * 7) % 40, "total_pages": 40, "metadata": {f"{me}-{i}": i}}
                manager.update_status("one", "embedding_visual", **fields)

        return work

    with _switching_often():
        assert _race([report(me) for me in range(threads)]) == []
    status = manager.require_status("one")
    assert status.metadata == {f"{me}-{i}": i for me in range(threads) for i in range(count)}
    assert status.progress == pytest.approx(0.6)
    log = manager.changes_since(0, 10_000)
    assert [e["seq"] for e in log] == list(range(1, threads * count + 3))
    progress = [e["status"]["progress"] for e in log]
    assert progress == sorted(progress)


def test_only_one_thread_moves_a_document_out_of_a_state(manager: StatusManager) -> None:
    manager.create_status("d", "d.pdf", {})
    manager.update_status("d", "parsing")
    manager.update_status("d", "embedding_text")
    manager.update_status("d", "storing")
    finishers: list[str] = []

    def finish(i: int) -> Callable[[], None]:
        def work() -> None:
            if i % 2:
                manager.mark_completed("d", by=i)
            else:
                manager.mark_failed("d", f"failed by {i}")
            finishers.append(str(i))

        return work

    errors = _race([finish(i) for i in range(12)])
    assert len(finishers) == 1
    assert len(errors) == 11
    assert manager.require_status("d").status in (Status.COMPLETED, Status.FAILED)


def _full_pipeline(manager: StatusManager, doc: str, pages: int = 50, chunks: int = 20) -> None:
    manager.create_status(doc, f"{doc}.pdf", {})
    manager.update_status(doc, "parsing")
    for page in range(1, pages + 1):
        manager.update_status(doc, "embedding_visual", page=page, total_pages=pages)
    for chunk in range(1, chunks + 1):
        manager.update_status(doc, "embedding_text", chunk=chunk, total_chunks=chunks)
    manager.update_status(doc, "storing")
    manager.mark_completed(doc)


def _read_until(manager: StatusManager, docs: list[str], stop: threading.Event, torn: list[str]) -> None:
    while not stop.is_set():
        snapshots = manager.list_all(10) + [manager.get_status(d) for d in docs]
        for status in snapshots:
            if status is not None:
                torn.extend(_torn(status))


def test_readers_never_see_a_torn_status(manager: StatusManager) -> None:
    docs = [f"r{i}" for i in range(4)]
    stop = threading.Event()
    torn: list[str] = []
    readers = [threading.Thread(target=_read_until, args=(manager, docs, stop, torn)) for _ in range(3)]
    for r in readers:
        r.start()
    try:
        assert _race([partial(_full_pipeline, manager, d) for d in docs]) == []
    finally:
        stop.set()
        for r in readers:
            r.join()
    assert torn == []
    assert all(manager.require_status(d).status is Status.COMPLETED for d in docs)


def _torn(status: object) -> list[str]:
    from docstatus import ProcessingStatus

    assert isinstance(status, ProcessingStatus)
    problems = []
    if status.status is Status.COMPLETED and (status.progress != 1.0 or status.completed_at is None):
        problems.append(f"completed with progress {status.progress}")
    if status.page is not None and status.total_pages is not None and status.page > status.total_pages:
        problems.append(f"page {status.page} > total {status.total_pages}")
    if status.status is Status.EMBEDDING_VISUAL and status.total_pages is None:
        problems.append("visual embedding without total_pages")
    if not status.is_finished and status.completed_at is not None:
        problems.append("active with completed_at")
    return problems


def test_subscribers_see_legal_transitions_and_monotone_progress_under_load(
    make_manager: Callable[..., StatusManager],
) -> None:
    manager = make_manager(progress_interval=0)  # every report is a change: 25 per document
    events: list[Event] = []
    manager.subscribe(events.append)
    docs = [f"s{i}" for i in range(6)]
    assert _race([partial(_full_pipeline, manager, d, 20, 1) for d in docs]) == []
    expected = len(docs) * 25
    wait_until(lambda: len(events) >= expected)
    assert len(events) == expected
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs)
    assert seqs[-1] == manager.last_seq
    for doc in docs:
        states = [e["status"] for e in events if e["doc_id"] == doc and e["status"]]
        assert len(states) == 25
        for before, after in itertools.pairwise(states):
            assert can_transition(Status(before["status"]), Status(after["status"])), doc
            assert after["progress"] >= before["progress"], doc


def test_concurrent_updates_never_report_an_existing_document_as_missing() -> None:
    # The memory store checks that a document exists before it takes its lock; a change of
    # status moves the document in the recency index (remove, re-insert) under the lock, and
    # a thread switch in between made that unlocked check see a document that exists as missing.
    manager = StatusManager(cleanup_interval_seconds=None)
    manager.create_status("d", "d.txt")
    done = threading.Event()
    missing: list[Exception] = []

    def flip() -> None:
        try:
            for _ in range(20_000):
                manager.mark_failed("d", "again")
                manager.requeue("d")
        finally:
            done.set()

    def update() -> None:
        while not done.is_set():
            try:
                manager.update_status("d", "queued")
            except InvalidTransitionError:
                pass  # failed at that moment: a legitimate refusal
            except DocumentNotFoundError as exc:
                missing.append(exc)

    with _switching_often():
        assert _race([flip, update, update]) == []
    assert missing == []
    assert manager.require_status("d").metadata["attempt"] == 20_001


# -- event delivery ---------------------------------------------------------------------------

WRITERS = 3
ROUNDS = 15_000


def _in_rounds(writers: list[Callable[[], None]], after_round: Callable[[int], None]) -> None:
    """Run each writer once per round, all at once, then ``after_round`` with every writer stopped."""
    barrier = threading.Barrier(len(writers) + 1)

    def loop(write: Callable[[], None]) -> None:
        for _ in range(ROUNDS):
            barrier.wait()
            write()
            barrier.wait()

    threads = [threading.Thread(target=loop, args=(write,)) for write in writers]
    with _switching_often():
        try:
            for thread in threads:
                thread.start()
            for round_ in range(ROUNDS):
                barrier.wait()
                barrier.wait()
                after_round(round_)
        except BaseException:
            barrier.abort()  # release the writers
            raise
        finally:
            for thread in threads:
                thread.join()


def test_no_change_is_left_undelivered_when_writers_race() -> None:
    # Once every change call has returned, every change is delivered (once the event thread has
    # caught up: flush_events). Writers racing hand their changes over at once; if a hand-over is
    # lost, the change stays undelivered until some later change, and the flush times out.
    # (Every call a change: none is held for later.)
    manager = StatusManager(cleanup_interval_seconds=None, progress_interval=0)
    seen: list[int] = []
    manager.subscribe(lambda event: seen.append(event["seq"]))
    for i in range(WRITERS):
        manager.create_status(f"d{i}", "d.txt")
    stranded: list[tuple[int, int, int]] = []

    def check(round_: int) -> None:
        if not manager.flush_events(5) or len(seen) != manager.last_seq:
            stranded.append((round_, len(seen), manager.last_seq))

    writers = [lambda doc_id=f"d{i}": manager.update_status(doc_id, "queued") for i in range(WRITERS)]
    _in_rounds(writers, check)
    assert stranded == []
    assert seen == list(range(1, manager.last_seq + 1))
