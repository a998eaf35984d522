"""The queue wait and the run, apart: in the status JSON and in the Prometheus histograms.

The histograms are fed the manager's events, built here from records changed
at explicit times, so every observed value is known exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from docstatus import Event, StatusManager
from docstatus.api import Metrics, install_error_handlers, status_router
from docstatus.records import Mutation, Record, new_record, status_json

T0 = 1_700_000_000.0


class _EventSource:
    """What Metrics needs of a manager: subscribe, and counts to scrape."""

    def __init__(self) -> None:
        self.callbacks: list[Callable[[Event], None]] = []
        self.seq = 0

    def subscribe(self, callback: Callable[[Event], None], *, progress: bool = True) -> Callable[[], None]:
        self.callbacks.append(callback)  # every event, as a manager may give a progress=False one
        return lambda: self.callbacks.remove(callback)

    def count_by_status(self) -> dict[str, int]:
        return {}

    def send(self, record: Record) -> None:
        self.seq += 1
        event: Event = {
            "seq": self.seq,
            "type": "updated",
            "doc_id": record["doc_id"],
            "status": status_json(record),
        }
        for callback in self.callbacks:
            callback(event)


def _sample(text: str, name: str) -> float:
    line = next(line for line in text.splitlines() if line.startswith(name))
    return float(line.rsplit(" ", 1)[1])


def _walk(doc_id: str, wait: float, run: float) -> list[Record]:
    queued = new_record(doc_id, f"{doc_id}.pdf", {"format": "pdf"}, T0)
    claimed = Mutation("claim", T0 + wait, fields={"worker": "h:1", "seconds": 30.0})(queued)
    page = Mutation("update", T0 + wait + run / 2, "embedding_visual", None, {"page": 1, "total_pages": 2})(
        claimed
    )
    done = Mutation("complete", T0 + wait + run)(page)
    return [queued, claimed, page, done]


def test_processing_seconds_observe_the_run_and_the_wait_has_its_own_histogram() -> None:
    source = _EventSource()
    metrics = Metrics(source)  # type: ignore[arg-type]  # a stand-in with the two methods it uses
    metrics.start()
    for record in [*_walk("a", 3.0, 2.0), *_walk("b", 10.0, 4.0)]:
        source.send(record)
    text = metrics.render().decode()
    assert _sample(text, 'docstatus_processing_seconds_count{format="pdf",outcome="completed"}') == 2
    assert _sample(text, 'docstatus_processing_seconds_sum{format="pdf",outcome="completed"}') == 6.0
    assert _sample(text, 'docstatus_queue_wait_seconds_count{format="pdf"}') == 2
    assert _sample(text, 'docstatus_queue_wait_seconds_sum{format="pdf"}') == 13.0


def test_a_document_cancelled_in_the_queue_is_in_neither_histogram() -> None:
    source = _EventSource()
    metrics = Metrics(source)  # type: ignore[arg-type]
    metrics.start()
    queued = new_record("c", "c.pdf", {"format": "pdf"}, T0)
    source.send(queued)
    source.send(Mutation("cancel", T0 + 5.0)(queued))
    text = metrics.render().decode()
    assert 'docstatus_processing_seconds_count{format="pdf",outcome="failed"}' not in text
    assert 'docstatus_queue_wait_seconds_count{format="pdf"}' not in text


def test_completing_straight_from_the_queue_observes_its_wait_and_a_zero_run() -> None:
    source = _EventSource()
    metrics = Metrics(source)  # type: ignore[arg-type]
    metrics.start()
    source.send(Mutation("complete", T0 + 2.5)(new_record("q", "q.md", {"format": "md"}, T0)))
    text = metrics.render().decode()
    assert _sample(text, 'docstatus_queue_wait_seconds_sum{format="md"}') == 2.5
    assert _sample(text, 'docstatus_processing_seconds_sum{format="md",outcome="completed"}') == 0.0


def test_the_api_shows_when_processing_started_the_wait_and_the_run(tmp_path: Path) -> None:
    manager = StatusManager(store=f"sqlite:///{tmp_path / 'status.db'}", cleanup_interval_seconds=None)
    done = _walk("d" * 64, 3.0, 2.0)[-1]
    manager.store.create(done)
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(status_router(manager))
    with TestClient(app) as client:
        body: dict[str, Any] = client.get(f"/status/{'d' * 64}").json()
        listed = client.get("/status").json()
    manager.close()
    assert body["started_at"] == "2023-11-14T22:13:20Z"
    assert body["processing_started_at"] == "2023-11-14T22:13:23Z"
    assert (body["elapsed_time"], body["wait_time"], body["run_time"]) == (5.0, 3.0, 2.0)
    assert any(d["doc_id"] == "d" * 64 and d["wait_time"] == 3.0 for d in listed["documents"])
