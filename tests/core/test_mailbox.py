"""A stream consumer's mailbox: exact while it keeps up, the latest state per document once it lags."""

from __future__ import annotations

import asyncio

from docstatus.events import Event, Mailbox, reset_event


def _event(seq: int, doc_id: str) -> Event:
    return {"seq": seq, "type": "updated", "doc_id": doc_id, "status": {"doc_id": doc_id, "page": seq}}


def _drain(box: Mailbox) -> list[Event]:
    async def take() -> list[Event]:
        return [await box.get() for _ in range(len(box))]

    return asyncio.run(take())


def test_a_lagging_consumer_holds_one_event_per_document_past_the_exact_ones() -> None:
    box = Mailbox(exact=10, limit=100)
    for seq in range(1, 10_001):
        assert box.put(_event(seq, f"doc-{seq % 5}"))
    assert len(box) == 10 + 5  # bounded: the first ten as they came, then one per document
    got = _drain(box)
    seqs = [e["seq"] for e in got]
    assert seqs == sorted(seqs) and seqs[:10] == list(range(1, 11))
    # Each document's latest state is the one kept.
    assert {e["doc_id"]: e["seq"] for e in got[10:]} == {f"doc-{n % 5}": n for n in range(9996, 10_001)}


def test_a_full_mailbox_refuses_new_documents_but_still_updates_pending_ones() -> None:
    box = Mailbox(exact=2, limit=4)
    for seq, doc in enumerate(["a", "b", "c", "d"], start=1):
        assert box.put(_event(seq, doc))
    assert not box.put(_event(5, "e"))  # a new document past the limit: read the log instead
    assert box.put(_event(6, "d"))  # a pending document's newer state replaces it
    assert [(e["doc_id"], e["seq"]) for e in _drain(box)] == [("a", 1), ("b", 2), ("c", 3), ("d", 6)]


def test_a_reset_replaces_everything_pending() -> None:
    box = Mailbox(exact=10, limit=100)
    for seq in range(1, 6):
        box.put(_event(seq, "a"))
    box.put(reset_event(3, "the status store was reset"))
    box.put(_event(4, "b"))
    got = _drain(box)
    assert [e["type"] for e in got] == ["reset", "updated"]
    assert got[0]["reason"] == "the status store was reset"
