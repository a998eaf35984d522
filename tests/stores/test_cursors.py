"""Named cursors and their outboxes in the store contract, over every store: lease, fencing, order."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from docstatus import StatusManager
from docstatus.stores.base import OutboxEntry, Store
from helpers import wait_until

LONG = 60.0


@pytest.fixture
def store(manager: StatusManager) -> Store:
    return manager.store


def _entries(store: Store, name: str = "hooks") -> list[tuple[str, int, dict[str, object]]]:
    return [(e.key, e.seq, e.data) for e in store.outbox(name, 100)]


def test_a_new_cursor_starts_where_its_first_claim_says(store: Store) -> None:
    assert store.claim_cursor("hooks", "a", LONG, start=17) == 17
    # A later claim (by the holder) returns the stored position, whatever start it passes.
    assert store.claim_cursor("hooks", "a", LONG, start=99) == 17
    assert store.claim_cursor("other", "a", LONG, start=0) == 0


def test_a_live_lease_keeps_other_owners_out(store: Store) -> None:
    assert store.claim_cursor("hooks", "a", LONG, start=5) == 5
    assert store.claim_cursor("hooks", "b", LONG, start=5) is None
    assert store.move_cursor("hooks", "b", 9, [OutboxEntry("k", 9, {"x": 1})]) is False
    assert store.claim_cursor("hooks", "a", LONG, start=0) == 5
    assert _entries(store) == []


def test_the_holder_moves_the_cursor_and_fills_the_outbox_in_order(store: Store) -> None:
    store.claim_cursor("hooks", "a", LONG, start=0)
    added = [OutboxEntry("b", 7, {"n": 2}), OutboxEntry("a", 7, {"n": 1}), OutboxEntry("c", 3, {"n": 0})]
    assert store.move_cursor("hooks", "a", 7, added) is True
    assert store.claim_cursor("hooks", "a", LONG, start=0) == 7
    assert _entries(store) == [("c", 3, {"n": 0}), ("a", 7, {"n": 1}), ("b", 7, {"n": 2})]
    assert [e.key for e in store.outbox("hooks", 2)] == ["c", "a"]
    assert store.outbox("hooks", 0) == []
    assert store.outbox("nothing here", 10) == []
    # A key added again replaces its entry.
    assert store.move_cursor("hooks", "a", 8, [OutboxEntry("a", 8, {"n": 5})])
    assert _entries(store) == [("c", 3, {"n": 0}), ("b", 7, {"n": 2}), ("a", 8, {"n": 5})]


def test_outboxes_of_other_cursors_are_apart(store: Store) -> None:
    store.claim_cursor("one", "a", LONG, start=0)
    store.claim_cursor("two", "a", LONG, start=0)
    store.move_cursor("one", "a", 1, [OutboxEntry("k", 1, {"box": 1})])
    store.move_cursor("two", "a", 1, [OutboxEntry("k", 1, {"box": 2})])
    assert _entries(store, "one") == [("k", 1, {"box": 1})]
    assert _entries(store, "two") == [("k", 1, {"box": 2})]


def test_entries_are_copies(store: Store) -> None:
    store.claim_cursor("hooks", "a", LONG, start=0)
    data: dict[str, object] = {"list": [1]}
    store.move_cursor("hooks", "a", 1, [OutboxEntry("k", 1, data)])
    data["list"] = [2]
    first = store.outbox("hooks", 1)[0]
    first.data["list"] = [3]
    assert store.outbox("hooks", 1)[0].data == {"list": [1]}


def test_settle_updates_or_removes_an_entry_and_never_adds_one(store: Store) -> None:
    store.claim_cursor("hooks", "a", LONG, start=0)
    store.move_cursor("hooks", "a", 2, [OutboxEntry("x", 1, {"try": 0}), OutboxEntry("y", 2, {"try": 0})])
    assert store.settle("hooks", "a", "x", {"try": 1}) is True
    assert store.settle("hooks", "a", "y", None) is True
    assert _entries(store) == [("x", 1, {"try": 1})]
    assert store.settle("hooks", "a", "gone", {"try": 1}) is True
    assert store.settle("hooks", "a", "gone", None) is True
    assert _entries(store) == [("x", 1, {"try": 1})]


def test_settle_needs_the_lease(store: Store) -> None:
    store.claim_cursor("hooks", "a", LONG, start=0)
    store.move_cursor("hooks", "a", 1, [OutboxEntry("x", 1, {"try": 0})])
    assert store.settle("hooks", "b", "x", None) is False
    assert store.settle("hooks", "b", "x", {"try": 9}) is False
    assert _entries(store) == [("x", 1, {"try": 0})]


def _taken_by_b(store: Store, name: str) -> Callable[[], bool]:
    # Owner b's claim succeeds once the lease of the holder has expired.
    return lambda: store.claim_cursor(name, "b", LONG, start=0) is not None


def test_an_expired_lease_passes_on_with_the_position_and_fences_the_old_owner(store: Store) -> None:
    store.claim_cursor("hooks", "a", 0.2, start=0)
    store.move_cursor("hooks", "a", 4, [OutboxEntry("x", 4, {"try": 0})])
    wait_until(_taken_by_b(store, "hooks"))
    assert store.claim_cursor("hooks", "b", LONG, start=0) == 4
    assert store.move_cursor("hooks", "a", 10, []) is False
    assert store.settle("hooks", "a", "x", None) is False
    assert store.claim_cursor("hooks", "a", LONG, start=0) is None
    assert _entries(store) == [("x", 4, {"try": 0})]


def test_an_expired_lease_of_an_owner_fences_it_before_anyone_claims(store: Store) -> None:
    store.claim_cursor("hooks", "a", 0.2, start=0)
    store.move_cursor("hooks", "a", 1, [OutboxEntry("x", 1, {})])
    wait_until(lambda: not store.move_cursor("hooks", "a", 1, []))
    assert store.settle("hooks", "a", "x", None) is False
    # Claiming again renews it, from where it was.
    assert store.claim_cursor("hooks", "a", LONG, start=0) == 1


def test_release_lets_another_owner_in_at_once(store: Store) -> None:
    store.claim_cursor("hooks", "a", LONG, start=3)
    store.release_cursor("hooks", "b")  # not the holder: nothing happens
    assert store.claim_cursor("hooks", "b", LONG, start=0) is None
    store.release_cursor("hooks", "a")
    assert store.move_cursor("hooks", "a", 4, []) is False
    assert store.claim_cursor("hooks", "b", LONG, start=0) == 3
    store.release_cursor("nothing here", "a")


def test_one_of_many_concurrent_claims_of_a_free_cursor_wins(store: Store) -> None:
    barrier = threading.Barrier(8)
    won: list[str] = []

    def claim(owner: str) -> None:
        barrier.wait()
        if store.claim_cursor("hooks", owner, LONG, start=0) is not None:
            won.append(owner)

    threads = [threading.Thread(target=claim, args=(f"owner{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1


@pytest.mark.parametrize("store_kind", ["sqlite", "redis"])
def test_a_shared_store_keeps_cursors_for_every_process(store_url: str, store: Store) -> None:
    store.claim_cursor("hooks", "a", LONG, start=0)
    store.move_cursor("hooks", "a", 6, [OutboxEntry("x", 6, {"n": 1})])
    other = StatusManager(store=store_url, cleanup_interval_seconds=None)
    try:
        assert other.store is not store
        assert other.store.claim_cursor("hooks", "b", LONG, start=0) is None
        assert [(e.key, e.data) for e in other.store.outbox("hooks", 10)] == [("x", {"n": 1})]
        store.release_cursor("hooks", "a")
        assert other.store.claim_cursor("hooks", "b", LONG, start=0) == 6
    finally:
        other.close()
