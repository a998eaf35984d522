"""EventFeed: one async consumer's changes taken one ``next()`` at a time, woken or closed from outside."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from docstatus import StatusManager
from docstatus.events import AHEAD, Event, Mailbox


@pytest.fixture
def manager() -> Iterator[StatusManager]:
    with StatusManager(cleanup_interval_seconds=None, progress_interval=0) as manager:
        yield manager


def test_a_woken_feed_answers_none_and_goes_on(manager: StatusManager) -> None:
    async def main() -> tuple[Event | None, bool, Event | None]:
        feed = manager.event_feed()
        waiting = asyncio.ensure_future(feed.next())
        await asyncio.sleep(0)  # it waits: nothing has changed
        feed.wake()
        woken = await asyncio.wait_for(waiting, 10)
        still_open = not feed.closed
        await asyncio.to_thread(manager.create_status, "doc", "doc.pdf")
        after = await asyncio.wait_for(feed.next(), 10)
        feed.close()
        return woken, still_open, after

    woken, still_open, after = asyncio.run(main())
    assert woken is None and still_open
    assert after is not None and after["doc_id"] == "doc" and after["type"] == "created"


def test_a_closed_feed_answers_none_and_leaves_the_subscription(manager: StatusManager) -> None:
    async def main() -> tuple[Event | None, Event | None, bool, bool]:
        feed = manager.event_feed()
        subscribed = manager._hub.active
        waiting = asyncio.ensure_future(feed.next())
        await asyncio.sleep(0)
        feed.close()
        feed.close()  # idempotent
        return await asyncio.wait_for(waiting, 10), await feed.next(), subscribed, manager._hub.active

    pending, later, subscribed, still_subscribed = asyncio.run(main())
    assert pending is None and later is None
    assert subscribed and not still_subscribed


def test_a_resumed_feed_gives_the_logged_changes_then_the_live_ones_without_repeats(
    manager: StatusManager,
) -> None:
    for n in range(5):
        manager.create_status(f"old-{n}", "old.pdf")

    async def main() -> list[Event]:
        feed = manager.event_feed(2)
        got: list[Event] = []
        for _ in range(3):
            event = await asyncio.wait_for(feed.next(), 10)
            assert event is not None
            got.append(event)
        await asyncio.to_thread(manager.create_status, "new", "new.pdf")
        event = await asyncio.wait_for(feed.next(), 10)
        assert event is not None
        got.append(event)
        feed.close()
        return got

    got = asyncio.run(main())
    assert [e["seq"] for e in got] == [3, 4, 5, 6]
    assert [e["doc_id"] for e in got] == ["old-2", "old-3", "old-4", "new"]


def test_a_feed_resumed_from_beyond_the_store_starts_with_a_reset(manager: StatusManager) -> None:
    manager.create_status("doc", "doc.pdf")

    async def main() -> Event | None:
        feed = manager.event_feed(50)
        try:
            return await asyncio.wait_for(feed.next(), 10)
        finally:
            feed.close()

    reset = asyncio.run(main())
    assert reset is not None and reset["type"] == "reset"
    assert reset["seq"] == 1 and reset.get("reason") == AHEAD


def test_a_mailbox_wake_answers_one_get_with_none() -> None:
    async def main() -> tuple[Event | None, Event | None]:
        box = Mailbox(exact=10, limit=100)
        box.wake()  # before anyone waits: the next get that finds nothing answers None
        first = await box.get()
        box.put({"seq": 1, "type": "created", "doc_id": "d", "status": {"doc_id": "d"}})
        return first, await box.get()

    first, second = asyncio.run(main())
    assert first is None
    assert second is not None and second["seq"] == 1


def test_changes_taken_directly_never_come_out_of_next_and_refused_ones_do(manager: StatusManager) -> None:
    taken: list[str] = []

    def take(event: Event) -> bool:
        if event["doc_id"].startswith("refused"):
            return False
        taken.append(event["doc_id"])
        return True

    async def main() -> Event | None:
        feed = manager.event_feed()
        feed.take_directly(take)
        waiting = asyncio.ensure_future(feed.next())
        await asyncio.sleep(0)  # it waits: the next changes go to take()
        for name in ("taken-1", "taken-2", "refused"):
            await asyncio.to_thread(manager.create_status, name, "doc.pdf")
        got = await asyncio.wait_for(waiting, 10)
        feed.close()
        return got

    got = asyncio.run(main())
    assert taken == ["taken-1", "taken-2"]
    assert got is not None and got["doc_id"] == "refused"
