"""Progress within a stage is written at most once per interval; transitions at once; nothing lost.

Over every store: the held reports, what flushes them (the interval, the next
transition, a read through the same manager, close), bad reports, reports
that can no longer be applied, and a SIGKILL on SQLite.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from docstatus import Event, StatusManager
from docstatus.coalesce import ProgressBuffer
from docstatus.errors import InvalidTransitionError, LeaseLostError
from docstatus.records import Mutation, check_progress, is_progress, new_record
from docstatus.stores.base import Change
from helpers import wait_until

#: Long enough that nothing in a test's reports is written by the timer meanwhile.
LONG = 60.0


def _stored(manager: StatusManager, doc_id: str) -> dict[str, object]:
    # Behind the manager's back: what other processes and readers see.
    record = manager.store.get(doc_id)
    assert record is not None
    return record


@pytest.fixture
def beside(make_manager: Callable[..., StatusManager]) -> Iterator[Callable[..., StatusManager]]:
    """Another manager over a given manager's store (the same object, so memory:// too)."""
    made: list[StatusManager] = []

    def make(manager: StatusManager, **kwargs: object) -> StatusManager:
        other = StatusManager(store=manager.store, cleanup_interval_seconds=None, **kwargs)  # type: ignore[arg-type]
        made.append(other)
        return other

    yield make
    for other in made:
        other.close()


def _visual(manager: StatusManager, doc_id: str = "doc", pages: int = 100) -> None:
    manager.create_status(doc_id, "a.pdf", {})
    manager.update_status(doc_id, "parsing")
    manager.update_status(doc_id, "embedding_visual", page=0, total_pages=pages)


def test_reports_within_a_stage_are_held_and_the_latest_is_written_once_due(
    make_manager: Callable[..., StatusManager],
) -> None:
    manager = make_manager(progress_interval=0.05)
    _visual(manager)
    seq = manager.last_seq
    for page in range(1, 51):
        manager.update_status("doc", "embedding_visual", page=page, total_pages=100)
    # Nothing asked for it: the progress thread writes the latest report once the interval passed.
    wait_until(lambda: _stored(manager, "doc")["page"] == 50)
    assert manager.last_seq - seq < 50
    assert _stored(manager, "doc")["progress"] == pytest.approx(0.1 + 50 / 100 * 0.5)


def test_a_transition_carries_the_progress_held_before_it_in_the_same_write(
    make_manager: Callable[..., StatusManager],
) -> None:
    manager = make_manager(progress_interval=LONG)
    events: list[Event] = []
    manager.subscribe(events.append)
    _visual(manager, pages=20)
    for page in range(1, 21):
        manager.update_status("doc", "embedding_visual", page=page, total_pages=20)
    before = manager.last_seq
    manager.update_status("doc", "embedding_text", chunk=0, total_chunks=5)
    assert manager.last_seq == before + 1  # one write: the held pages and the transition
    record = _stored(manager, "doc")
    assert (record["status"], record["page"], record["total_pages"]) == ("embedding_text", 20, 20)
    wait_until(lambda: len(events) == 4)
    assert [e["status"]["status"] for e in events if e["status"]] == [
        "queued",
        "parsing",
        "embedding_visual",
        "embedding_text",
    ]


def test_subscribers_see_every_transition_and_the_final_progress(
    make_manager: Callable[..., StatusManager],
) -> None:
    manager = make_manager(progress_interval=LONG)
    events: list[Event] = []
    manager.subscribe(events.append)
    _visual(manager, pages=30)
    for page in range(1, 31):
        manager.update_status("doc", "embedding_visual", page=page, total_pages=30)
    manager.update_status("doc", "embedding_text", chunk=0, total_chunks=40)
    for chunk in range(1, 41):
        manager.update_status("doc", "embedding_text", chunk=chunk, total_chunks=40)
    manager.update_status("doc", "storing")
    manager.mark_completed("doc")
    wait_until(
        lambda: (
            bool(events)
            and events[-1]["status"] is not None
            and events[-1]["status"]["status"] == "completed"
        )
    )
    statuses = [e["status"]["status"] for e in events if e["status"]]
    assert statuses == ["queued", "parsing", "embedding_visual", "embedding_text", "storing", "completed"]
    storing = next(e["status"] for e in events if e["status"] and e["status"]["status"] == "storing")
    assert (storing["page"], storing["metadata"]["chunk"]) == (30, 40)


def test_a_read_through_the_same_manager_sees_every_report(
    make_manager: Callable[..., StatusManager],
) -> None:
    manager = make_manager(progress_interval=LONG)
    _visual(manager)
    manager.update_status("doc", "embedding_visual", page=7, total_pages=100)
    assert _stored(manager, "doc")["page"] == 0  # held
    status = manager.get_status("doc")
    assert status is not None and status.page == 7
    assert _stored(manager, "doc")["page"] == 7  # the read wrote it
    manager.update_status("doc", "embedding_visual", page=9, total_pages=100)
    assert [s.page for s in manager.list_active()] == [9]
    manager.update_status("doc", "embedding_visual", page=11, total_pages=100)
    assert manager.count_by_status()["embedding_visual"] == 1
    assert _stored(manager, "doc")["page"] == 11


def test_close_writes_what_is_held(
    make_manager: Callable[..., StatusManager], beside: Callable[..., StatusManager]
) -> None:
    manager = make_manager(progress_interval=LONG)
    # Another store object where the store is shared (closing the manager closes its own).
    reader = make_manager() if manager.store.shared else beside(manager)
    _visual(manager)
    manager.update_status("doc", "embedding_visual", page=42, total_pages=100)
    manager.close()
    status = reader.get_status("doc")
    assert status is not None and status.page == 42


def test_a_bad_report_raises_at_once_and_holds_nothing(make_manager: Callable[..., StatusManager]) -> None:
    manager = make_manager(progress_interval=LONG)
    _visual(manager, pages=10)
    manager.update_status("doc", "embedding_visual", page=3, total_pages=10)
    with pytest.raises(ValueError, match="page 11 is beyond total_pages 10"):
        manager.update_status("doc", "embedding_visual", page=11)
    status = manager.get_status("doc")
    assert status is not None and status.page == 3


def test_metadata_and_stage_changes_are_written_at_once(make_manager: Callable[..., StatusManager]) -> None:
    manager = make_manager(progress_interval=LONG)
    _visual(manager)
    manager.update_status("doc", "embedding_visual", page=1, metadata={"note": "x"})
    assert _stored(manager, "doc")["metadata"]["note"] == "x"
    manager.update_status("doc", "embedding_visual", page=2, stage="rendering")
    assert (_stored(manager, "doc")["stage"], _stored(manager, "doc")["page"]) == ("rendering", 2)


def test_progress_interval_zero_writes_every_report(make_manager: Callable[..., StatusManager]) -> None:
    manager = make_manager(progress_interval=0)
    _visual(manager)
    seq = manager.last_seq
    for page in range(1, 11):
        manager.update_status("doc", "embedding_visual", page=page)
        assert _stored(manager, "doc")["page"] == page
    assert manager.last_seq == seq + 10


@pytest.mark.parametrize("bad", [-1, float("nan"), "0.1"])
def test_a_bad_progress_interval_is_refused(bad: object) -> None:
    with pytest.raises((ValueError, TypeError), match="progress_interval"):
        StatusManager(progress_interval=bad)  # type: ignore[arg-type]


def test_a_held_report_cancelled_elsewhere_is_dropped_and_the_next_one_raises(
    make_manager: Callable[..., StatusManager], beside: Callable[..., StatusManager]
) -> None:
    worker = make_manager(progress_interval=LONG)
    api = beside(worker)
    worker.create_status("doc", "a.pdf", {})
    lease = worker.claim("doc", worker="w1")
    assert lease is not None
    lease.update_status("embedding_visual", page=1, total_pages=9)
    lease.update_status("embedding_visual", page=2, total_pages=9)  # held
    api.cancel("doc")
    worker.flush()  # the held report no longer applies: dropped, not raised here
    with pytest.raises(LeaseLostError):
        lease.update_status("embedding_visual", page=3, total_pages=9)
    status = api.require_status("doc")
    assert (status.status, status.error, status.page) == ("failed", "cancelled", 1)


def test_a_plain_report_after_a_cancel_elsewhere_raises_within_one_flush(
    make_manager: Callable[..., StatusManager], beside: Callable[..., StatusManager]
) -> None:
    writer = make_manager(progress_interval=LONG)
    other = beside(writer)
    _visual(writer)
    writer.update_status("doc", "embedding_visual", page=5)
    other.cancel("doc")
    writer.flush()
    with pytest.raises(InvalidTransitionError):
        writer.update_status("doc", "embedding_visual", page=6)


def test_a_transition_is_written_even_when_the_held_reports_no_longer_apply(
    make_manager: Callable[..., StatusManager], beside: Callable[..., StatusManager]
) -> None:
    writer = make_manager(progress_interval=LONG)
    other = beside(writer, progress_interval=0)
    _visual(writer, pages=10)
    writer.update_status("doc", "embedding_visual", page=8)  # held
    other.update_status("doc", "embedding_visual", total_pages=5)  # page 8 of 5 can no longer be stored
    writer.update_status("doc", "embedding_text", chunk=0, total_chunks=3)
    status = other.require_status("doc")
    assert (status.status, status.page, status.total_pages) == ("embedding_text", 0, 5)


def test_held_reports_fold_into_the_latest_of_each_counter(
    make_manager: Callable[..., StatusManager],
) -> None:
    held = make_manager(progress_interval=LONG)
    each = make_manager(progress_interval=0)
    for manager, doc in ((held, "held"), (each, "each")):
        _visual(manager, doc, pages=50)
        manager.update_status(doc, "embedding_visual", page=3, total_pages=60)
        manager.update_status(doc, "embedding_visual", page=9, estimated_remaining=12.0)
        manager.update_status(doc, "embedding_visual", page=10)
    a, b = held.get_status("held"), each.get_status("each")
    assert a is not None and b is not None
    assert (
        (a.page, a.total_pages, a.progress)
        == (b.page, b.total_pages, b.progress)
        == (10, 60, pytest.approx(0.1 + 10 / 60 * 0.5))
    )


def test_a_given_progress_and_a_computed_one_are_never_folded(
    make_manager: Callable[..., StatusManager],
) -> None:
    manager = make_manager(progress_interval=LONG)
    _visual(manager, pages=10)
    manager.update_status("doc", "embedding_visual", 0.5)  # given: held
    manager.update_status(
        "doc", "embedding_visual", page=1
    )  # computed (0.15): the given one is written first
    status = manager.get_status("doc")
    assert status is not None and (status.page, status.progress) == (1, 0.5)


def test_what_may_be_held() -> None:
    record = new_record("doc", "a.pdf", {}, 1000.0)
    visual = Mutation("update", 1002.0, "embedding_visual", None, {"page": 0, "total_pages": 50})(
        Mutation("update", 1001.0, "parsing")(record)
    )
    assert is_progress(Mutation("update", 1003.0, "embedding_visual", None, {"page": 4}), visual)
    assert is_progress(
        Mutation("update", 1003.0, "embedding_visual", 0.3, {"estimated_remaining": 9.0}), visual
    )
    assert not is_progress(Mutation("update", 1005.0, "embedding_text"), visual)
    assert not is_progress(Mutation("update", 1005.0, "embedding_visual", None, {"metadata": {}}), visual)
    assert not is_progress(Mutation("update", 1005.0, "embedding_visual", None, {"stage": "other"}), visual)
    assert not is_progress(Mutation("complete", 1005.0), visual)
    with pytest.raises(ValueError, match="page 51 is beyond total_pages 50"):
        check_progress(visual, {"page": 51})
    check_progress(visual, {"page": 51, "total_pages": 60})
    # Counters held back count as if stored: a total reported earlier bounds a later page.
    with pytest.raises(ValueError, match="page 55 is beyond total_pages 52"):
        check_progress(visual, {"page": 55}, {"total_pages": 52})
    with pytest.raises(ValueError, match="chunk 3 is beyond total_chunks 2"):
        check_progress(visual, {"chunk": 3}, {"chunk": 1, "total_chunks": 2})


def test_a_total_held_back_bounds_the_next_report(make_manager: Callable[..., StatusManager]) -> None:
    manager = make_manager(progress_interval=LONG)
    _visual(manager, pages=100)
    manager.update_status("doc", "embedding_visual", page=3, total_pages=20)
    with pytest.raises(ValueError, match="page 21 is beyond total_pages 20"):
        manager.update_status("doc", "embedding_visual", page=21)
    status = manager.get_status("doc")
    assert status is not None and (status.page, status.total_pages) == (3, 20)


def test_a_report_stamped_before_the_last_write_is_still_written_within_the_interval() -> None:
    # The wall clock stepped back (NTP): the report is held, but not until the clock catches up.
    written: list[Mutation] = []
    record = Mutation("update", time.time(), "parsing")(new_record("doc", "a.pdf", {}, time.time()))

    def write(doc_id: str, change: Callable[[dict[str, Any]], dict[str, Any]]) -> Change:
        assert isinstance(change, Mutation)
        written.append(change)
        return Change(2, "updated", doc_id, change(record))

    buffer = ProgressBuffer(0.05, write, lambda change: None)
    buffer.wrote("doc", Change(1, "updated", "doc", record))
    assert buffer.hold("doc", "parsing", None, {"page": 1}, time.time() - 3600)
    wait_until(lambda: len(written) == 1)
    assert written[0].fields == {"page": 1}


# -- a killed process loses at most the last interval of progress, never a transition -----------

ctx = multiprocessing.get_context("forkserver")


def _pipeline(url: str, conn: multiprocessing.connection.Connection) -> None:
    # Reports pages, says when a transition returned, then waits to be killed.
    manager = StatusManager(store=url, cleanup_interval_seconds=None, progress_interval=0.05)
    manager.update_status("doc", "parsing")
    manager.update_status("doc", "embedding_visual", page=0, total_pages=100)
    for page in range(1, 61):
        manager.update_status("doc", "embedding_visual", page=page, total_pages=100)
    manager.update_status("doc", "embedding_text", chunk=0, total_chunks=10)
    conn.send("transition")
    for chunk in range(1, 8):
        manager.update_status("doc", "embedding_text", chunk=chunk, total_chunks=10)
    conn.send("reported")
    threading.Event().wait(LONG)


def test_sigkill_loses_no_transition_and_at_most_the_last_interval_of_progress(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'status.db'}"
    with StatusManager(store=url, cleanup_interval_seconds=None) as reader:
        reader.create_status("doc", "a.pdf", {})
        parent, child_end = ctx.Pipe(duplex=False)
        child = ctx.Process(target=_pipeline, args=(url, child_end), daemon=True)
        child.start()
        assert parent.poll(30) and parent.recv() == "transition"
        record = _stored(reader, "doc")
        # The transition returned: it is stored, carrying every page reported before it.
        assert (record["status"], record["page"]) == ("embedding_text", 60)
        assert parent.poll(30) and parent.recv() == "reported"
        # No call follows the last report: the child's progress thread writes it once due.
        wait_until(lambda: _stored(reader, "doc")["metadata"].get("chunk") == 7)
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
        assert child.exitcode == -signal.SIGKILL
        after = reader.require_status("doc")
        assert (after.status, after.page, after.metadata["chunk"]) == ("embedding_text", 60, 7)
