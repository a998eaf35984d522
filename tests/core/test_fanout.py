"""Fan-out: a change is handed over once, encoded once, and a slow subscriber holds nobody up."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from docstatus import Event, StatusManager
from docstatus.api.sse import frame_bytes, opening_frame
from docstatus.api.sse_response import EventStreamResponse
from docstatus.events import EventHub
from docstatus.records import new_record
from docstatus.stores.memory import MemoryStore
from helpers import wait_until
from sse_client import AsgiClient


@pytest.fixture
def manager() -> Iterator[StatusManager]:
    # Every report a change: these tests count what reaches the subscribers.
    with StatusManager(cleanup_interval_seconds=None, progress_interval=0) as manager:
        yield manager


class Blocker:
    """A subscriber that stops at its first event until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.entered.set()
        self.release.wait(30)
        self.events.append(event)


def _pages(manager: StatusManager, doc_id: str, pages: int) -> None:
    manager.create_status(doc_id, f"{doc_id}.pdf")
    manager.update_status(doc_id, "parsing")
    for page in range(1, pages + 1):
        manager.update_status(doc_id, "embedding_visual", page=page, total_pages=pages)
    manager.mark_completed(doc_id)


def test_a_blocked_subscriber_blocks_neither_the_writer_nor_the_other_subscribers(
    manager: StatusManager,
) -> None:
    blocked, seen = Blocker(), []
    manager.subscribe(blocked)
    manager.subscribe(seen.append)
    written = threading.Event()

    def write() -> None:
        _pages(manager, "doc", 20)
        written.set()

    threading.Thread(target=write, daemon=True).start()
    assert blocked.entered.wait(10)
    assert written.wait(10)  # every change returned while the first subscriber is still stuck
    assert not blocked.release.is_set()
    wait_until(lambda: len(seen) == manager.last_seq)  # the others went on without it
    assert not blocked.events
    blocked.release.set()
    wait_until(lambda: len(blocked.events) == manager.last_seq)
    # The stuck one catches up from the log: every change once, in order, and then it rejoins.
    assert [e["seq"] for e in blocked.events] == list(range(1, manager.last_seq + 1))
    assert blocked.events == seen
    manager.create_status("after", "a.pdf")
    assert manager.flush_events()
    assert blocked.events[-1]["doc_id"] == seen[-1]["doc_id"] == "after"


def test_subscribers_see_every_transition_and_the_final_progress(manager: StatusManager) -> None:
    seen: list[Event] = []
    manager.subscribe(seen.append)
    writers = [threading.Thread(target=_pages, args=(manager, f"d{i}", 50)) for i in range(4)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    assert manager.flush_events()
    assert [e["seq"] for e in seen] == list(range(1, manager.last_seq + 1))
    for i in range(4):
        mine = [e["status"] for e in seen if e["doc_id"] == f"d{i}" and e["status"] is not None]
        assert [s["status"] for s in mine][:2] == ["queued", "parsing"]
        assert [s["page"] for s in mine[2:-1]] == list(range(1, 51))
        assert mine[-1]["status"] == "completed" and mine[-1]["progress"] == 1.0
        final = manager.get_status_json(f"d{i}")
        assert final is not None and mine[-1]["progress"] == final["progress"]


def test_every_subscriber_gets_the_same_read_only_event(manager: StatusManager) -> None:
    first: list[Event] = []
    second: list[Event] = []

    def mutate(event: Event) -> None:
        event["doc_id"] = "changed"  # type: ignore[typeddict-unknown-key]

    manager.subscribe(first.append)
    manager.subscribe(mutate)
    manager.subscribe(second.append)
    manager.create_status("doc", "doc.pdf", {"tags": ["a"], "nested": {"k": 1}})
    assert manager.flush_events()
    [event] = first
    assert second[0] is event  # one event object, however many subscribers
    assert event["doc_id"] == "doc"  # the mutating subscriber failed (logged), nobody else saw it
    status = event["status"]
    assert status is not None
    with pytest.raises(TypeError, match="read-only"):
        status["metadata"]["nested"]["k"] = 2
    with pytest.raises(TypeError, match="read-only"):
        status["metadata"]["tags"].append("b")
    mutable: Any = copy.deepcopy(event)
    mutable["status"]["metadata"]["tags"].append("b")
    assert type(mutable) is dict and mutable["status"]["metadata"]["tags"] == ["a", "b"]
    assert json.loads(json.dumps(event)) == event
    assert status["metadata"] == {"tags": ["a"], "nested": {"k": 1}}


def test_a_subscriber_may_flush_and_call_back_without_waiting_for_itself(manager: StatusManager) -> None:
    answers: list[bool] = []

    def chain(event: Event) -> None:
        if event["type"] == "created":
            answers.append(manager.flush_events())
            manager.update_status(event["doc_id"], "parsing")

    manager.subscribe(chain)
    manager.create_status("doc", "doc.pdf")
    wait_until(lambda: manager.require_status("doc").status == "parsing")
    assert manager.flush_events()
    assert answers == [False]  # its own change was not delivered yet: it answered at once


def test_a_writer_waits_only_past_the_backlog() -> None:
    hub_store = MemoryStore()
    hub = EventHub(hub_store)
    hub.BACKLOG = 3
    hub.STALL_SECONDS = 60.0  # this test is about the backlog, not about detaching
    blocked = Blocker()
    hub.subscribe(blocked)
    done = threading.Event()

    def write() -> None:
        for n in range(10):
            hub.pump(hub_store.create(new_record(f"d{n}", "d.pdf", {}, 0.0)))
        done.set()

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    assert blocked.entered.wait(10)
    wait_until(lambda: hub._waiting == 1)  # the writer is waiting for room
    assert not done.is_set()
    blocked.release.set()
    assert done.wait(10)
    assert hub.wait_delivered(10, 10)
    assert [e["seq"] for e in blocked.events] == list(range(1, 11))
    hub.close()


def test_a_detached_subscriber_that_falls_out_of_the_log_gets_a_reset() -> None:
    class SmallLog(MemoryStore):
        LOG_SIZE = 5

    store = SmallLog()
    hub = EventHub(store)
    hub.STALL_SECONDS = 0.05
    blocked, others = Blocker(), []
    hub.subscribe(blocked, resets=True)
    hub.subscribe(others.append)
    hub.pump(store.create(new_record("first", "d.pdf", {}, 0.0)))
    assert blocked.entered.wait(10)
    wait_until(lambda: len(others) == 1)  # detached: the others go on
    for n in range(20):
        hub.pump(store.create(new_record(f"d{n}", "d.pdf", {}, 0.0)))
    assert hub.wait_delivered(21, 10)
    blocked.release.set()
    wait_until(lambda: bool(blocked.events) and blocked.events[-1]["seq"] == 21)
    kinds = [(e["type"], e["seq"]) for e in blocked.events]
    assert kinds[0] == ("created", 1)
    reset = blocked.events[1]
    assert reset["type"] == "reset" and reset.get("first_seq") == reset["seq"] + 1
    assert [e["seq"] for e in blocked.events[2:]] == list(range(reset["seq"] + 1, 22))
    hub.close()


def test_the_streams_of_one_loop_share_each_event(manager: StatusManager) -> None:
    async def main() -> list[Event]:
        streams = [manager.events() for _ in range(3)]
        pending = [asyncio.ensure_future(anext(s)) for s in streams]
        await asyncio.sleep(0)  # each stream has subscribed (its first step) and waits
        await asyncio.to_thread(manager.create_status, "doc", "doc.pdf")
        got = await asyncio.wait_for(asyncio.gather(*pending), 10)
        for stream in streams:
            await stream.aclose()
        return got

    events = asyncio.run(main())
    assert events[0] is events[1] is events[2]  # one event object for every stream of the loop
    frame = frame_bytes(events[0])
    assert frame_bytes(events[2]) is frame  # and one encoded frame
    assert frame.startswith(b"id: 1") and b"event: status" in frame and b'"doc_id":"doc"' in frame


def test_sse_streams_send_one_shared_frame_object(manager: StatusManager) -> None:
    async def main() -> bool:
        clients = [AsgiClient() for _ in range(3)]
        since = manager.last_seq
        responses = [EventStreamResponse(manager.event_feed(since), opening_frame(since)) for _ in clients]
        running = [
            asyncio.ensure_future(r({"type": "http"}, c.receive, c.send))
            for r, c in zip(responses, clients, strict=True)
        ]
        try:
            # A resumed stream reads the log until it is live; once all are, they share frames.
            for n in range(50):
                counts = [len(c.bodies) for c in clients]
                await asyncio.to_thread(manager.create_status, f"doc-{n}", "doc.pdf")
                for client, count in zip(clients, counts, strict=True):
                    await client.wait_for(lambda c, count=count: len(c.bodies) > count)
                frames = [c.bodies[-1] for c in clients]
                assert len(set(frames)) == 1
                if frames[0] is frames[1] is frames[2]:
                    return True
            return False
        finally:
            for client in clients:
                client.left.set()
            await asyncio.gather(*running)

    assert asyncio.run(main())


def test_a_forked_child_delivers_its_own_changes(manager: StatusManager) -> None:
    seen: list[Event] = []
    manager.subscribe(seen.append)
    manager.create_status("doc", "doc.pdf")
    assert manager.flush_events()
    pid = os.fork()
    if pid == 0:  # the child: its subscriber is the inherited one; the event thread is new
        code = 1
        try:
            manager.update_status("doc", "parsing")
            code = 0 if manager.flush_events(10) and seen[-1]["status"]["status"] == "parsing" else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_subscriber_gets_the_changes_after_it_subscribed_even_while_delivery_is_behind(
    manager: StatusManager,
) -> None:
    manager._hub.STALL_SECONDS = 60.0  # keep the event thread stuck in the first subscriber
    blocked = Blocker()
    manager.subscribe(blocked)
    manager.create_status("before", "b.pdf")
    assert blocked.entered.wait(10)
    manager.create_status("still-before", "b.pdf")  # made, not delivered yet
    late: list[Event] = []
    manager.subscribe(late.append)
    manager.create_status("after", "a.pdf")
    blocked.release.set()
    assert manager.flush_events()
    assert [e["doc_id"] for e in late] == ["after"]
    assert [e["doc_id"] for e in blocked.events] == ["before", "still-before", "after"]
