"""The core behaviour, run against every store (see ``STORE_KINDS`` in conftest).

Whatever the store, the manager must give the same answers: this suite is the
contract a new store has to pass.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from docstatus import (
    DocumentNotFoundError,
    DuplicateDocumentError,
    InvalidTransitionError,
    ProcessingStatus,
    Status,
    StatusError,
    StatusManager,
)
from docstatus.events import Event
from docstatus.models import can_transition
from helpers import wait_until

PATH = {
    "queued": [],
    "parsing": ["parsing"],
    "embedding_visual": ["parsing", "embedding_visual"],
    "embedding_text": ["parsing", "embedding_text"],
    "storing": ["parsing", "embedding_text", "storing"],
    "completed": ["parsing", "embedding_text", "storing", "completed"],
    "failed": ["parsing", "failed"],
}


def _at(manager: StatusManager, doc_id: str, status: str) -> None:
    """Create ``doc_id`` and walk it legally to ``status``."""
    manager.create_status(doc_id, f"{doc_id}.pdf", {"format": "pdf"})
    for step in PATH[status]:
        extra = {"error": "boom"} if step == "failed" else {}
        manager.update_status(doc_id, step, **extra)


def _dump(manager: StatusManager, doc_id: str) -> dict[str, Any]:
    status = manager.get_status(doc_id)
    assert status is not None
    body = status.model_dump(mode="json")
    body.pop("elapsed_time")  # live while active
    body.pop("estimated_remaining")
    body.pop("wait_time")  # live while queued
    body.pop("run_time")  # live while processing
    return body


def _unchanged(manager: StatusManager, doc_id: str, before: dict[str, Any]) -> None:
    assert _dump(manager, doc_id) == before


# -- create -------------------------------------------------------------------


def test_create_returns_a_queued_snapshot(manager: StatusManager) -> None:
    created = manager.create_status("a" * 64, "report.pdf", {"format": "pdf", "file_size": 10})
    assert isinstance(created, ProcessingStatus)
    assert created.status is Status.QUEUED
    assert created.progress == 0.0
    assert created.stage == "queued"
    assert created.metadata == {"format": "pdf", "file_size": 10}
    assert created.started_at.tzinfo is not None
    assert created.completed_at is None
    assert created.error is None
    by_ref = manager.get_status(created)  # a snapshot is a document reference too
    assert by_ref is not None
    assert by_ref.doc_id == "a" * 64
    assert _dump(manager, "a" * 64)["status"] == "queued"


def test_duplicate_create_is_refused_and_changes_nothing(manager: StatusManager) -> None:
    manager.create_status("d1", "first.pdf", {"v": 1})
    manager.update_status("d1", "parsing")
    before = _dump(manager, "d1")
    with pytest.raises(DuplicateDocumentError) as info:
        manager.create_status("d1", "second.pdf", {"v": 2})
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, StatusError)
    assert info.value.doc_id == "d1"
    _unchanged(manager, "d1", before)


@pytest.mark.parametrize(
    ("doc_id", "error"),
    [
        ("", ValueError),
        ("x" * 257, ValueError),
        ("bad\nid", ValueError),
        ("nul\x00", ValueError),
        (123, TypeError),
        (None, TypeError),
    ],
)
def test_invalid_doc_ids_are_refused(manager: StatusManager, doc_id: Any, error: type) -> None:
    with pytest.raises(error):
        manager.create_status(doc_id, "f.pdf", {})
    assert manager.list_all() == []


def test_longest_doc_id_is_accepted(manager: StatusManager) -> None:
    manager.create_status("x" * 256, "f.pdf", {})
    assert manager.get_status("x" * 256) is not None


@pytest.mark.parametrize(
    "metadata",
    [{"when": object()}, {"nan": math.nan}, {"big": "x" * 70_000}, ["not", "a", "dict"]],
)
def test_bad_metadata_is_refused(manager: StatusManager, metadata: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        manager.create_status("m", "f.pdf", metadata)
    assert manager.get_status("m") is None


def _nested(depth: int) -> dict[str, Any]:
    top: dict[str, Any] = {}
    level = top
    for _ in range(depth):
        level["a"] = {}
        level = level["a"]
    return top


@pytest.mark.parametrize("depth", [900, 5000])
def test_metadata_nested_too_deep_is_a_valueerror_and_stores_nothing(
    manager: StatusManager, depth: int
) -> None:
    # Deep enough that copying or encoding it recursively would blow the stack: the
    # document would be stored, then fail every read (and every listing with it).
    with pytest.raises(ValueError, match="nested"):
        manager.create_status("deep", "deep.txt", _nested(depth))
    assert manager.get_status("deep") is None
    assert manager.list_all() == []
    manager.create_status("doc", "doc.txt")
    with pytest.raises(ValueError, match="nested"):
        manager.update_status("doc", "parsing", metadata=_nested(depth))
    with pytest.raises(ValueError, match="nested"):
        manager.mark_completed("doc", result=_nested(depth))
    status = manager.require_status("doc")
    assert status.status == "queued" and status.metadata == {}
    assert [s.doc_id for s in manager.list_all()] == ["doc"]


def test_metadata_nested_moderately_is_kept(manager: StatusManager) -> None:
    manager.create_status("doc", "doc.txt", _nested(30))
    assert manager.require_status("doc").metadata == _nested(30)


@pytest.mark.parametrize("filename", ["", "x" * 2000, None])
def test_bad_filenames_are_refused(manager: StatusManager, filename: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        manager.create_status("f", filename, {})
    assert manager.get_status("f") is None


def test_snapshots_in_and_out(manager: StatusManager) -> None:
    metadata: dict[str, Any] = {"tags": ["a"], "nested": {"k": 1}}
    manager.create_status("s", "f.pdf", metadata)
    metadata["tags"].append("changed by caller")
    snapshot = manager.get_status("s")
    assert snapshot is not None
    assert snapshot.metadata == {"tags": ["a"], "nested": {"k": 1}}
    snapshot.metadata["nested"]["k"] = 99
    snapshot.metadata["tags"].append("changed via snapshot")
    again = manager.get_status("s")
    assert again is not None
    assert again.metadata == {"tags": ["a"], "nested": {"k": 1}}


# -- lookups --------------------------------------------------------------------


@pytest.mark.parametrize("doc_id", ["missing", "", "x" * 1000, "\x00"])
def test_lookups_of_unknown_ids_find_nothing(manager: StatusManager, doc_id: str) -> None:
    assert manager.get_status(doc_id) is None


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.update_status("nope", "parsing"),
        lambda m: m.mark_completed("nope"),
        lambda m: m.mark_failed("nope", "x"),
        lambda m: m.requeue("nope"),
        lambda m: m.require_status("nope"),
    ],
)
def test_changes_to_unknown_documents_raise_not_found(
    manager: StatusManager, call: Callable[[StatusManager], None]
) -> None:
    with pytest.raises(DocumentNotFoundError) as info:
        call(manager)
    assert isinstance(info.value, KeyError)
    assert info.value.doc_id == "nope"
    assert "nope" in str(info.value)


# -- the lifecycle ------------------------------------------------------------------


@pytest.mark.parametrize("current", list(PATH))
@pytest.mark.parametrize("target", [s.value for s in Status])
def test_every_transition_is_allowed_or_refused_by_the_table(
    manager: StatusManager, current: str, target: str
) -> None:
    _at(manager, "doc", current)
    before = _dump(manager, "doc")
    extra = {"error": "it broke"} if target == "failed" else {}
    if can_transition(Status(current), Status(target)):
        manager.update_status("doc", target, **extra)
        assert _dump(manager, "doc")["status"] == target
        return
    with pytest.raises(InvalidTransitionError) as info:
        manager.update_status("doc", target, **extra)
    assert info.value.current == current
    assert info.value.target == target
    assert current in str(info.value)
    assert target in str(info.value)
    _unchanged(manager, "doc", before)


@pytest.mark.parametrize("current", ["queued", "parsing", "embedding_visual", "embedding_text", "storing"])
def test_mark_completed_and_failed_work_from_every_active_status(
    manager: StatusManager, current: str
) -> None:
    _at(manager, "c", current)
    manager.mark_completed("c")
    _at(manager, "f", current)
    manager.mark_failed("f", "went wrong")
    assert _dump(manager, "c")["status"] == "completed"
    assert _dump(manager, "f")["status"] == "failed"


@pytest.mark.parametrize("final", ["completed", "failed"])
@pytest.mark.parametrize(
    "change",
    [
        lambda m: m.update_status("doc", "parsing"),
        lambda m: m.update_status("doc", "completed"),
        lambda m: m.update_status("doc", "failed", error="again"),
        lambda m: m.mark_completed("doc", more=1),
        lambda m: m.mark_failed("doc", "again"),
    ],
)
def test_finished_is_final(
    manager: StatusManager, final: str, change: Callable[[StatusManager], None]
) -> None:
    _at(manager, "doc", final)
    before = _dump(manager, "doc")
    with pytest.raises(InvalidTransitionError, match=final):
        change(manager)
    _unchanged(manager, "doc", before)


def test_requeue_starts_a_new_attempt_of_a_failed_document(manager: StatusManager) -> None:
    manager.create_status("r", "f.pdf", {"format": "pdf"})
    manager.update_status("r", "parsing")
    manager.update_status("r", "embedding_visual", page=3, total_pages=10, estimated_remaining=5.0)
    manager.mark_failed("r", "GPU fell over")
    failed = manager.require_status("r")
    manager.requeue("r")
    again = manager.require_status("r")
    assert again.status is Status.QUEUED
    assert again.progress == 0.0
    assert again.error is None
    assert again.page is None and again.total_pages is None
    assert again.completed_at is None and again.estimated_remaining is None
    assert again.metadata == {"format": "pdf", "attempt": 2}
    assert again.started_at >= failed.started_at
    manager.mark_failed("r", "again")
    manager.requeue("r")
    assert manager.require_status("r").metadata["attempt"] == 3


@pytest.mark.parametrize("status", ["queued", "parsing", "storing", "completed"])
def test_requeue_of_anything_but_failed_is_refused(manager: StatusManager, status: str) -> None:
    _at(manager, "r", status)
    before = _dump(manager, "r")
    with pytest.raises(InvalidTransitionError, match="only a failed document"):
        manager.requeue("r")
    _unchanged(manager, "r", before)


# -- progress and fields ------------------------------------------------------------


def test_progress_is_computed_from_pages_and_chunks(manager: StatusManager) -> None:
    manager.create_status("p", "f.pdf", {})
    manager.update_status("p", "parsing")
    assert manager.require_status("p").progress == pytest.approx(0.1)
    manager.update_status("p", "embedding_visual", page=13, total_pages=20)
    status = manager.require_status("p")
    assert status.progress == pytest.approx(0.425)
    assert (status.page, status.total_pages, status.stage) == (13, 20, "visual_embeddings")
    manager.update_status("p", "embedding_text", chunk=5, total_chunks=10)
    status = manager.require_status("p")
    assert status.progress == pytest.approx(0.75)
    assert status.metadata == {"chunk": 5, "total_chunks": 10}
    manager.update_status("p", "storing")
    assert manager.require_status("p").progress == pytest.approx(0.95)
    manager.mark_completed("p", num_chunks=10, storage_ids=["a", "b"])
    done = manager.require_status("p")
    assert done.progress == 1.0
    assert done.completed_at is not None
    assert done.metadata["num_chunks"] == 10
    assert done.metadata["storage_ids"] == ["a", "b"]


def test_progress_never_decreases_within_an_attempt(manager: StatusManager) -> None:
    manager.create_status("p", "f.pdf", {})
    manager.update_status("p", "parsing", progress=0.3)
    manager.update_status("p", "parsing", progress=0.2)
    assert manager.require_status("p").progress == pytest.approx(0.3)
    manager.update_status("p", "embedding_visual", page=1, total_pages=100)  # formula gives 0.105
    assert manager.require_status("p").progress == pytest.approx(0.3)


def test_failed_keeps_the_last_progress(manager: StatusManager) -> None:
    manager.create_status("p", "f.pdf", {})
    manager.update_status("p", "parsing")
    manager.update_status("p", "embedding_visual", page=10, total_pages=20)
    manager.mark_failed("p", "out of memory")
    failed = manager.require_status("p")
    assert failed.progress == pytest.approx(0.35)
    assert failed.error == "out of memory"
    assert failed.completed_at is not None


@pytest.mark.parametrize("progress", [-0.01, 1.01, math.nan, math.inf, -math.inf])
def test_progress_out_of_range_is_refused(manager: StatusManager, progress: float) -> None:
    _at(manager, "p", "parsing")
    before = _dump(manager, "p")
    with pytest.raises(ValueError, match="progress"):
        manager.update_status("p", "parsing", progress=progress)
    _unchanged(manager, "p", before)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"bogus": 1}, TypeError, "accepted: status, progress, stage"),
        ({"started_at": "now"}, TypeError, "set by the StatusManager"),
        ({"filename": "x"}, TypeError, "set by the StatusManager"),
        ({"page": -1}, ValueError, "page"),
        ({"page": 1.5}, TypeError, "page"),
        ({"page": True}, TypeError, "page"),
        ({"total_pages": "9"}, TypeError, "total_pages"),
        ({"estimated_remaining": -3}, ValueError, "estimated_remaining"),
        ({"estimated_remaining": math.nan}, ValueError, "estimated_remaining"),
        ({"stage": 5}, TypeError, "stage"),
        ({"stage": "s" * 1000}, ValueError, "stage"),
        ({"metadata": {"x": {1, 2}}}, ValueError, "JSON"),
        ({"error": "not failing"}, ValueError, "only accepted with status 'failed'"),
        ({"page": 21, "total_pages": 20}, ValueError, "beyond"),
        ({"chunk": 5, "total_chunks": 4}, ValueError, "beyond"),
    ],
)
def test_bad_fields_are_refused_and_change_nothing(
    manager: StatusManager, kwargs: dict[str, Any], error: type, match: str
) -> None:
    _at(manager, "p", "embedding_visual")
    manager.update_status("p", "embedding_visual", page=2, total_pages=20)
    before = _dump(manager, "p")
    with pytest.raises(error, match=match):
        manager.update_status("p", "embedding_visual", **kwargs)
    _unchanged(manager, "p", before)


def test_page_beyond_stored_total_is_refused(manager: StatusManager) -> None:
    _at(manager, "p", "parsing")
    manager.update_status("p", "embedding_visual", page=1, total_pages=5)
    before = _dump(manager, "p")
    with pytest.raises(ValueError, match="beyond"):
        manager.update_status("p", "embedding_visual", page=6)
    _unchanged(manager, "p", before)


@pytest.mark.parametrize("status", ["finished", "", None, 3, "COMPLETED"])
def test_unknown_status_is_refused(manager: StatusManager, status: Any) -> None:
    _at(manager, "p", "parsing")
    before = _dump(manager, "p")
    with pytest.raises(ValueError, match="unknown status"):
        manager.update_status("p", status)
    _unchanged(manager, "p", before)


def test_failed_needs_an_error_message(manager: StatusManager) -> None:
    _at(manager, "p", "parsing")
    with pytest.raises(ValueError, match="needs error"):
        manager.update_status("p", "failed")
    with pytest.raises(ValueError, match="error"):
        manager.mark_failed("p", "")
    manager.update_status("p", "failed", error="bad scan")
    assert manager.require_status("p").error == "bad scan"


def test_metadata_is_merged(manager: StatusManager) -> None:
    manager.create_status("m", "f.pdf", {"format": "pdf", "size": 1})
    manager.update_status("m", "parsing", metadata={"size": 2, "pages": 3})
    assert manager.require_status("m").metadata == {"format": "pdf", "size": 2, "pages": 3}


def test_stage_defaults_and_overrides(manager: StatusManager) -> None:
    _at(manager, "s", "parsing")
    assert manager.require_status("s").stage == "parsing"
    manager.update_status("s", "parsing", stage="ocr page images")
    assert manager.require_status("s").stage == "ocr page images"
    manager.update_status("s", "parsing", progress=0.05)
    assert manager.require_status("s").stage == "ocr page images"
    manager.update_status("s", "embedding_text")
    assert manager.require_status("s").stage == "text_embeddings"


def test_update_returns_none(manager: StatusManager) -> None:
    manager.create_status("n", "f.pdf", {})
    assert manager.update_status("n", "parsing") is None  # type: ignore[func-returns-value]
    assert manager.mark_completed("n") is None  # type: ignore[func-returns-value]


# -- time and the ETA -------------------------------------------------------------


def test_elapsed_is_live_while_active_and_frozen_once_finished(manager: StatusManager) -> None:
    first = manager.create_status("t", "f.pdf", {})
    wait_until(lambda: manager.require_status("t").elapsed_time > first.elapsed_time)
    manager.mark_completed("t")
    frozen = manager.require_status("t").elapsed_time
    assert frozen > 0
    start = time.monotonic()
    wait_until(lambda: time.monotonic() - start > 0.05)
    assert manager.require_status("t").elapsed_time == frozen


def test_eta_from_observed_progress(manager: StatusManager) -> None:
    manager.create_status("e", "f.pdf", {})
    assert manager.require_status("e").estimated_remaining is None
    manager.update_status("e", "parsing")
    manager.update_status("e", "embedding_visual", page=0, total_pages=10)
    for page in range(1, 4):
        mark = time.monotonic()
        wait_until(lambda m=mark: time.monotonic() - m > 0.06)
        manager.update_status("e", "embedding_visual", page=page, total_pages=10)
    eta = manager.require_status("e").estimated_remaining
    assert eta is not None
    assert 0 < eta < 3600
    manager.update_status("e", "embedding_visual", page=4, total_pages=10, estimated_remaining=42.0)
    assert manager.require_status("e").estimated_remaining == 42.0
    manager.mark_completed("e")
    assert manager.require_status("e").estimated_remaining is None


# -- listings -------------------------------------------------------------------------


def test_listings_are_most_recently_updated_first(manager: StatusManager) -> None:
    for name in ("a", "b", "c", "d"):
        manager.create_status(name, f"{name}.pdf", {})
    manager.update_status("b", "parsing")
    manager.mark_completed("c")
    assert [s.doc_id for s in manager.list_all()] == ["c", "b", "d", "a"]
    assert [s.doc_id for s in manager.list_all(limit=2)] == ["c", "b"]
    assert manager.list_all(limit=0) == []
    assert [s.doc_id for s in manager.list_active()] == ["b", "d", "a"]
    manager.update_status("a", "parsing")
    assert [s.doc_id for s in manager.list_active()] == ["a", "b", "d"]


@pytest.mark.parametrize(("limit", "error"), [(-1, ValueError), ("10", TypeError), (1.5, TypeError)])
def test_bad_limits_are_refused(manager: StatusManager, limit: Any, error: type) -> None:
    with pytest.raises(error):
        manager.list_all(limit)


def test_count_by_status(manager: StatusManager) -> None:
    _at(manager, "q", "queued")
    _at(manager, "p", "parsing")
    _at(manager, "c", "completed")
    _at(manager, "f", "failed")
    _at(manager, "f2", "failed")
    counts = manager.count_by_status()
    assert counts == {
        "queued": 1,
        "parsing": 1,
        "embedding_visual": 0,
        "embedding_text": 0,
        "storing": 0,
        "completed": 1,
        "failed": 2,
        "active": 2,
        "total": 5,
    }


# -- cleanup --------------------------------------------------------------------------


def test_cleanup_removes_only_old_finished_documents(manager: StatusManager) -> None:
    _at(manager, "active", "embedding_text")
    _at(manager, "done", "completed")
    _at(manager, "broken", "failed")
    assert manager.cleanup_old_entries(max_age_seconds=3600) == 0
    wait_until(lambda: manager.cleanup_old_entries(max_age_seconds=0) > 0)
    assert manager.get_status("done") is None
    assert manager.get_status("broken") is None
    assert manager.get_status("active") is not None
    assert manager.count_by_status()["total"] == 1
    assert [s.doc_id for s in manager.list_all()] == ["active"]
    manager.create_status("done", "again.pdf", {})  # the id is free again


def test_cleanup_refuses_a_bad_age(manager: StatusManager) -> None:
    with pytest.raises(ValueError, match="max_age_seconds"):
        manager.cleanup_old_entries(max_age_seconds=-1)


# -- events ---------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self.lock:
            self.events.append(event)

    def wait_for(self, count: int) -> list[Event]:
        wait_until(lambda: len(self.events) >= count)
        return list(self.events)


def test_subscribers_see_every_change_in_order(manager: StatusManager) -> None:
    seen = Recorder()
    unsubscribe = manager.subscribe(seen)
    _at(manager, "e", "completed")  # create + 4 updates
    events = seen.wait_for(5)
    assert [e["type"] for e in events] == ["created", "updated", "updated", "updated", "updated"]
    assert [e["status"]["status"] for e in events if e["status"]] == [
        "queued",
        "parsing",
        "embedding_text",
        "storing",
        "completed",
    ]
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    final = events[-1]["status"]
    assert final is not None
    get = manager.require_status("e").model_dump(mode="json")
    get["timestamp"] = get["updated_at"]
    assert json.loads(json.dumps(final)) == get
    wait_until(lambda: manager.cleanup_old_entries(0) == 1)
    removed = seen.wait_for(6)[-1]
    assert removed["type"] == "removed" and removed["doc_id"] == "e" and removed["status"] is None
    unsubscribe()
    manager.create_status("after", "f.pdf", {})
    assert all(e["doc_id"] != "after" for e in seen.events)


def test_a_failing_subscriber_does_not_break_updates(
    manager: StatusManager, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(event: Event) -> None:
        raise RuntimeError("subscriber bug")

    seen = Recorder()
    manager.subscribe(broken)
    manager.subscribe(seen)
    manager.create_status("x", "f.pdf", {})
    manager.update_status("x", "parsing")
    assert len(seen.wait_for(2)) == 2
    assert manager.require_status("x").status is Status.PARSING
    assert "subscriber bug" in caplog.text


def test_subscribers_may_call_back_into_the_manager(manager: StatusManager) -> None:
    def advance(event: Event) -> None:
        status = event["status"]
        if event["type"] == "created" or (status and status["status"] == "parsing"):
            nxt = "parsing" if event["type"] == "created" else "embedding_text"
            manager.update_status(event["doc_id"], nxt)

    manager.subscribe(advance)
    seen = Recorder()
    manager.subscribe(seen)
    manager.create_status("chain", "f.pdf", {})
    wait_until(lambda: manager.require_status("chain").status is Status.EMBEDDING_TEXT)
    statuses = [e["status"]["status"] for e in seen.wait_for(3) if e["status"]]
    assert statuses == ["queued", "parsing", "embedding_text"]


def test_async_stream_resumes_from_a_sequence_number(manager: StatusManager) -> None:
    manager.create_status("a", "a.pdf", {})
    resume_from = manager.last_seq
    manager.update_status("a", "parsing")
    manager.create_status("b", "b.pdf", {})

    async def consume() -> list[Event]:
        got: list[Event] = []
        stream = manager.events(since=resume_from)
        async for event in stream:
            got.append(event)
            if len(got) == 2:
                await asyncio.to_thread(manager.update_status, "b", "parsing")
            if len(got) == 3:
                break
        await stream.aclose()  # type: ignore[attr-defined]
        return got

    got = asyncio.run(asyncio.wait_for(consume(), timeout=10))
    assert [(e["doc_id"], e["type"]) for e in got] == [("a", "updated"), ("b", "created"), ("b", "updated")]
    assert [e["seq"] for e in got] == sorted(e["seq"] for e in got)
    assert got[0]["seq"] == resume_from + 1


def test_changes_since_is_the_resumable_log(manager: StatusManager) -> None:
    manager.create_status("a", "a.pdf", {})
    start = manager.last_seq
    manager.update_status("a", "parsing")
    manager.mark_completed("a")
    changes = manager.changes_since(start)
    assert [(c["type"], c["status"]["status"] if c["status"] else None) for c in changes] == [
        ("updated", "parsing"),
        ("updated", "completed"),
    ]
    assert manager.changes_since(manager.last_seq) == []


def test_the_log_read_for_moves_keeps_every_move_in_order(make_manager: Callable[..., StatusManager]) -> None:
    manager = make_manager(progress_interval=0)
    start = manager.last_seq
    manager.create_status("a", "a.pdf", {})
    manager.update_status("a", "parsing")
    for page in range(1, 4):
        manager.update_status("a", "embedding_visual", page=page, total_pages=3)
    manager.mark_completed("a")
    manager.remove("a")
    everything = manager.store.changes_since(start, 100)
    moves, seen = manager.store.moves_since(start, 100)
    # What a store may leave out is reports alone; every move is there, in the log's order.
    assert moves == [c for c in everything if c in moves]
    reports = {everything[3].seq, everything[4].seq}  # pages 2 and 3, within embedding_visual
    assert {c.seq for c in everything} - {c.seq for c in moves} <= reports
    assert seen == everything[-1].seq == manager.last_seq
    assert manager.store.moves_since(manager.last_seq, 100) == ([], manager.last_seq)


@pytest.mark.parametrize("store_kind", ["sqlite", "redis"])  # the stores whose log is shared
def test_the_log_read_for_moves_leaves_out_exactly_the_reports(
    make_manager: Callable[..., StatusManager],
) -> None:
    manager = make_manager(progress_interval=0)
    start = manager.last_seq
    manager.create_status("a", "a.pdf")
    manager.update_status("a", "parsing")
    for page in range(1, 6):
        manager.update_status("a", "embedding_visual", page=page, total_pages=5)
    manager.update_status("a", "embedding_visual", metadata={"note": "same status"})
    manager.mark_completed("a")
    manager.remove("a")
    everything = manager.store.changes_since(start, 100)
    moves, seen = manager.store.moves_since(start, 100)
    assert [(c.type, c.record["status"] if c.record else None) for c in moves] == [
        ("created", "queued"),
        ("updated", "parsing"),
        ("updated", "embedding_visual"),
        ("updated", "completed"),
        ("removed", None),
    ]
    assert moves == [c for c in everything if c in moves]  # the same changes, in order
    assert seen == everything[-1].seq == manager.last_seq
    # A window that holds only reports (pages 2 to 5): none of them, and where to go on from.
    assert manager.store.moves_since(start + 3, 4) == ([], start + 7)


# -- lifetime -------------------------------------------------------------------------


def test_context_manager_closes(make_manager: Callable[..., StatusManager]) -> None:
    with make_manager() as manager:
        manager.create_status("x", "f.pdf", {})
        assert manager.get_status("x") is not None
    assert "StatusManager" in repr(manager)


def test_a_slow_stream_consumer_catches_up_from_the_log(make_manager: Callable[..., StatusManager]) -> None:
    manager = make_manager(progress_interval=0)  # every report a change, so the consumer falls behind
    manager.STREAM_BUFFER = 5  # type: ignore[misc]
    log_reads: list[int] = []
    read_log = manager.changes_since

    def counted(seq: int, limit: int = 1000) -> list[Event]:
        log_reads.append(seq)
        return read_log(seq, limit)

    manager.changes_since = counted  # type: ignore[method-assign]

    def burst() -> None:
        manager.update_status("slow", "parsing")
        manager.update_status("slow", "embedding_visual", page=0, total_pages=60)
        for page in range(1, 61):
            manager.update_status("slow", "embedding_visual", page=page, total_pages=60)

    async def consume() -> list[Event]:
        stream = manager.events()  # live only: nothing is read from the log up front
        first = asyncio.ensure_future(stream.__anext__())
        while manager._hub.active is False:  # wait until the stream has subscribed
            await asyncio.sleep(0.001)
        await asyncio.to_thread(manager.create_status, "slow", "s.pdf", {})
        got = [await first]
        await asyncio.to_thread(burst)  # 62 changes while this consumer reads nothing
        async for event in stream:
            got.append(event)
            if len(got) == 63:
                break
        await stream.aclose()  # type: ignore[attr-defined]
        return got

    got = asyncio.run(asyncio.wait_for(consume(), timeout=20))
    seqs = [e["seq"] for e in got]
    assert seqs == list(range(seqs[0], seqs[0] + 63))
    pages = [e["status"]["page"] for e in got[3:] if e["status"]]
    assert pages == list(range(1, 61))
    # Past its buffer the stream stopped buffering and read the log instead.
    assert log_reads


def test_status_json_is_the_snapshots_json(manager: StatusManager) -> None:
    assert manager.get_status_json("missing") is None
    _at(manager, "j", "completed")
    body = manager.get_status_json("j")
    snapshot = manager.require_status("j").model_dump(mode="json")
    assert body == {**snapshot, "timestamp": snapshot["updated_at"]}


def test_listings_as_json_are_the_snapshots_json(manager: StatusManager) -> None:
    _at(manager, "done", "completed")
    _at(manager, "failed", "failed")
    _at(manager, "busy", "embedding_text")
    manager.update_status("busy", "embedding_text", chunk=1, total_chunks=4)
    live = (
        "elapsed_time",
        "wait_time",
        "run_time",
        "estimated_remaining",
    )  # as of each call: compared apart, below

    def settled(bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in body.items() if k not in live} for body in bodies]

    def as_json(statuses: list[ProcessingStatus]) -> list[dict[str, Any]]:
        dumped = [s.model_dump(mode="json") for s in statuses]
        return settled([{**body, "timestamp": body["updated_at"]} for body in dumped])

    assert settled(manager.list_all_json(2)) == as_json(manager.list_all(2))
    assert [b["doc_id"] for b in manager.list_all_json()] == ["busy", "failed", "done"]
    active = manager.list_active_json()
    assert settled(active) == as_json(manager.list_active())
    assert [b["doc_id"] for b in active] == ["busy"]
    assert active[0]["metadata"]["chunk"] == 1 and active[0]["elapsed_time"] >= 0.0
    finished = {b["doc_id"]: b for b in manager.list_all_json()}
    for doc_id in ("done", "failed"):  # frozen once finished: equal in full
        snapshot = manager.require_status(doc_id).model_dump(mode="json")
        assert finished[doc_id] == {**snapshot, "timestamp": snapshot["updated_at"]}
    assert manager.list_all_json(0) == []
