"""The processing runtime: worker pool, recovery after a restart, graceful stop, the text pipeline.

Real files in tmp_path, real threads, real StatusManagers over the memory and
SQLite stores. Waiting is done on events (the manager's subscription) with a
deadline, never by sleeping.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from _documents import MARKDOWN
from docstatus import StatusManager
from docstatus.errors import OutputError, StatusError
from docstatus.formats import default_processors
from docstatus.formats.text import TextProcessor
from docstatus.ingest import Intake
from docstatus.output import HashingEmbedder, OutputStore
from docstatus.service import Service
from docstatus.settings import ServiceSettings
from docstatus.worker import Job, Reporter
from docstatus.worker.pool import OUTPUT_FILE, WorkerPool
from helpers import Watcher, assert_legal_and_monotonic, submit, wait_until

DEADLINE = 20.0


# -- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def store_kind(local_store_kind: str) -> str:
    return local_store_kind


@pytest.fixture
def make_pool(uploads: Path, tmp_path: Path) -> Iterator[Callable[..., WorkerPool]]:
    pools: list[WorkerPool] = []

    def make(manager: StatusManager, **kwargs: Any) -> WorkerPool:
        kwargs.setdefault("data_dir", tmp_path / "data")
        kwargs.setdefault("processors", default_processors())
        # In-process, so the tests' processors can share state (events, lists) with the test.
        kwargs.setdefault("engine", "thread")
        pool = WorkerPool(manager, uploads, **kwargs)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.stop(timeout=5)


class Failing:
    """A processor that parses, then raises."""

    def process(self, job: Job, reporter: Reporter) -> Mapping[str, Any]:
        reporter.parsing()
        raise ValueError(f"cannot read {job.filename}")


class Gated:
    """A processor that waits for a gate after parsing, then runs the text processor."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.resumed = threading.Event()
        self.text = TextProcessor()
        self.runs = 0

    def process(self, job: Job, reporter: Reporter) -> Mapping[str, Any]:
        self.runs += 1
        reporter.parsing()
        self.entered.set()
        assert self.gate.wait(DEADLINE)
        try:
            reporter.parsing()
        finally:
            self.resumed.set()
        return self.text.process(job, reporter)


# -- the pool ------------------------------------------------------------------------------------


def test_an_upload_is_processed_to_completed(
    manager: StatusManager, uploads: Path, make_pool: Callable[..., WorkerPool], tmp_path: Path
) -> None:
    watcher = Watcher(manager)
    pool = make_pool(manager)
    intake = Intake(manager, uploads, max_bytes=1 << 20, on_queued=pool.enqueue)
    pool.start()
    doc_id = submit(intake, "guide.md", MARKDOWN)
    final = watcher.wait(doc_id, "completed", "failed")
    assert final["status"] == "completed", final["error"]
    assert final["progress"] == 1.0
    history = watcher.history(doc_id)
    assert history[0]["status"] == "queued"
    assert {"parsing", "embedding_text", "storing"} <= {h["status"] for h in history}
    assert_legal_and_monotonic(history)
    pool.stop()
    with OutputStore(tmp_path / "data" / OUTPUT_FILE) as output:
        stored = output.get(doc_id)
        assert stored is not None
        assert final["metadata"]["num_chunks"] == len(stored.chunks) > 1
        assert final["metadata"]["encoding"] == "utf-8"
        hits = output.search("cosine similarity of vectors", limit=1)
        assert hits[0].doc_id == doc_id
        assert "cosine" in hits[0].text


def test_a_failing_processor_fails_its_document_and_the_next_completes(
    manager: StatusManager, uploads: Path, make_pool: Callable[..., WorkerPool]
) -> None:
    watcher = Watcher(manager)
    registry = {"txt": Failing(), "md": TextProcessor()}
    pool = make_pool(manager, workers=1, processors=registry)
    intake = Intake(manager, uploads, max_bytes=1 << 20, on_queued=pool.enqueue)
    pool.start()
    bad = submit(intake, "bad.txt", b"anything")
    good = submit(intake, "good.md", MARKDOWN)
    failed = watcher.wait(bad, "failed", "completed")
    assert failed["status"] == "failed"
    assert failed["error"] == "cannot read bad.txt"
    assert failed["progress"] == pytest.approx(0.1)  # kept where it failed
    assert watcher.wait(good, "completed", "failed")["status"] == "completed"
    assert_legal_and_monotonic(watcher.history(bad))


def test_many_uploads_on_two_workers_all_complete_legally(
    manager: StatusManager, uploads: Path, make_pool: Callable[..., WorkerPool]
) -> None:
    watcher = Watcher(manager)
    pool = make_pool(manager, workers=2)
    intake = Intake(manager, uploads, max_bytes=1 << 20, on_queued=pool.enqueue)
    pool.start()
    docs: list[str] = []
    lock = threading.Lock()

    def send(i: int) -> None:
        doc_id = submit(intake, f"doc{i}.md", MARKDOWN + f"\n\nDocument number {i}.\n".encode())
        with lock:
            docs.append(doc_id)

    senders = [threading.Thread(target=send, args=(i,)) for i in range(10)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    assert len(set(docs)) == 10
    for doc_id in docs:
        assert watcher.wait(doc_id, "completed", "failed")["status"] == "completed"
        assert_legal_and_monotonic(watcher.history(doc_id))


def test_reporter_maps_stages_to_the_contract_progress(
    make_manager: Callable[..., StatusManager], uploads: Path, make_pool: Callable[..., WorkerPool]
) -> None:
    manager = make_manager(progress_interval=0)  # every report a change, to see each one's progress

    class Visual:
        def process(self, job: Job, reporter: Reporter) -> Mapping[str, Any]:
            reporter.parsing()
            for page in range(1, 5):
                reporter.visual_page(page, 4)
            for chunk in range(3):
                reporter.text_chunk(chunk, 2)
            reporter.storing()
            return {"num_pages": 4}

    pool = make_pool(manager, processors={"txt": Visual()})
    intake = Intake(manager, uploads, max_bytes=1 << 20, on_queued=pool.enqueue)
    watcher = Watcher(manager)
    pool.start()
    doc_id = submit(intake, "pages.txt", b"four pages")
    final = watcher.wait(doc_id, "completed", "failed")
    assert final["metadata"]["num_pages"] == 4
    steps = [(h["status"], round(h["progress"], 4)) for h in watcher.history(doc_id)]
    assert steps == [
        ("queued", 0.0),
        ("parsing", 0.1),
        ("embedding_visual", 0.225),
        ("embedding_visual", 0.35),
        ("embedding_visual", 0.475),
        ("embedding_visual", 0.6),
        ("embedding_text", 0.6),
        ("embedding_text", 0.75),
        ("embedding_text", 0.9),
        ("storing", 0.95),
        ("completed", 1.0),
    ]


def test_a_queued_document_whose_file_is_gone_fails_with_a_clear_error(
    manager: StatusManager, uploads: Path, make_pool: Callable[..., WorkerPool]
) -> None:
    intake = Intake(manager, uploads, max_bytes=1 << 20)
    doc_id = submit(intake, "gone.txt", b"soon deleted")
    (uploads / f"{doc_id}.txt").unlink()
    watcher = Watcher(manager)
    make_pool(manager).start()
    final = watcher.wait(doc_id, "failed", "completed")
    assert final["error"].startswith("No file ") and final["error"].endswith(" in the uploads folder")


def test_queued_documents_are_taken_oldest_first_and_once(
    manager: StatusManager, uploads: Path, make_pool: Callable[..., WorkerPool]
) -> None:
    seen: list[str] = []

    class Recording:
        def process(self, job: Job, reporter: Reporter) -> Mapping[str, Any]:
            seen.append(job.doc_id)
            reporter.parsing()
            return {"recorded": True}

    intake = Intake(manager, uploads, max_bytes=1 << 20)
    docs = [submit(intake, f"{i}.txt", f"document {i}".encode()) for i in range(5)]
    watcher = Watcher(manager)
    pool = make_pool(manager, workers=1, processors={"txt": Recording()})
    pool.start()
    for doc_id in docs:
        pool.enqueue(doc_id)  # already queued by start(): not taken twice
    pool.start()  # idempotent
    for doc_id in docs:
        assert watcher.wait(doc_id, "completed")["metadata"]["recorded"] is True
    assert pool.wait_idle(DEADLINE)
    assert seen == docs


def test_a_document_timeout_fails_the_document(
    manager: StatusManager, uploads: Path, make_pool: Callable[..., WorkerPool]
) -> None:
    class Endless:
        """Reports progress until the pool says the time is up."""

        def process(self, job: Job, reporter: Reporter) -> Mapping[str, Any]:
            while True:
                reporter.parsing()

    pool = make_pool(manager, processors={"txt": Endless()}, document_timeout=0.05)
    intake = Intake(manager, uploads, max_bytes=1 << 20, on_queued=pool.enqueue)
    watcher = Watcher(manager)
    pool.start()
    doc_id = submit(intake, "slow.txt", b"slow")
    final = watcher.wait(doc_id, "failed", "completed")
    assert final["error"] == "processing took longer than 0.05 seconds"


def test_pool_arguments_are_checked(manager: StatusManager, uploads: Path) -> None:
    with pytest.raises(ValueError, match="workers"):
        WorkerPool(manager, uploads, default_processors(), workers=0)
    with pytest.raises(ValueError, match="document_timeout"):
        WorkerPool(manager, uploads, default_processors(), document_timeout=0)
    with pytest.raises(TypeError, match="'txt' needs a process"):
        WorkerPool(manager, uploads, {"txt": object()})  # type: ignore[dict-item]


# -- graceful stop -----------------------------------------------------------------------------


def test_stop_lets_the_running_document_finish_and_leaves_the_rest_queued(
    manager: StatusManager, uploads: Path, make_pool: Callable[..., WorkerPool]
) -> None:
    gated = Gated()
    registry = {"txt": gated, "md": TextProcessor()}
    pool = make_pool(manager, workers=1, processors=registry)
    intake = Intake(manager, uploads, max_bytes=1 << 20, on_queued=pool.enqueue)
    watcher = Watcher(manager)
    pool.start()
    running = submit(intake, "first.txt", b"first " * 50)
    assert gated.entered.wait(DEADLINE)
    waiting = [submit(intake, f"{i}.md", f"# Doc {i}\n\nwaiting".encode()) for i in range(3)]
    stopper = threading.Thread(target=pool.stop, kwargs={"timeout": DEADLINE})
    stopper.start()
    wait_until(lambda: not pool.running, DEADLINE)
    gated.gate.set()
    stopper.join(DEADLINE)
    assert not stopper.is_alive()
    assert watcher.wait(running, "completed", "failed")["status"] == "completed"
    for doc_id in waiting:
        assert manager.require_status(doc_id).status == "queued"
    pool.stop()  # idempotent
    pool.enqueue(waiting[0])  # ignored while stopped
    assert manager.require_status(waiting[0]).status == "queued"

    again = make_pool(manager, workers=2)
    again.start()
    for doc_id in waiting:
        assert watcher.wait(doc_id, "completed", "failed")["status"] == "completed"


def test_a_document_still_running_at_the_stop_timeout_is_given_back_at_once(
    manager: StatusManager, uploads: Path, make_pool: Callable[..., WorkerPool]
) -> None:
    gated = Gated()
    pool = make_pool(manager, workers=1, processors={"txt": gated})
    intake = Intake(manager, uploads, max_bytes=1 << 20, on_queued=pool.enqueue)
    watcher = Watcher(manager)
    pool.start()
    doc_id = submit(intake, "stuck.txt", b"stuck " * 50)
    assert gated.entered.wait(DEADLINE)
    pool.stop(timeout=0.01)
    assert not pool.running
    # Requeued as a new attempt without waiting for the lease to expire.
    status = manager.require_status(doc_id)
    assert status.status == "queued" and status.metadata["attempt"] == 2
    assert "stopped before it finished" in status.metadata["recovery"]
    gated.gate.set()
    assert gated.resumed.wait(DEADLINE)  # its next report was refused
    assert manager.require_status(doc_id).status == "queued"

    recovered = make_pool(manager)
    recovered.start()
    final = watcher.wait(doc_id, "completed")
    assert final["metadata"]["attempt"] == 2


def test_start_while_stop_waits_for_running_work_does_not_recover_it(
    uploads: Path, make_pool: Callable[..., WorkerPool]
) -> None:
    manager = StatusManager(cleanup_interval_seconds=None)
    watcher = Watcher(manager)
    gated = Gated()
    pool = make_pool(manager, workers=1, processors={"txt": gated})
    intake = Intake(manager, uploads, max_bytes=1 << 20, on_queued=pool.enqueue)
    pool.start()
    doc_id = submit(intake, "a.txt", b"some text")
    assert gated.entered.wait(DEADLINE)

    # stop() waits for the running document; a start() meanwhile (another thread) must not
    # mistake that document for one a dead process left behind.
    stopper = threading.Thread(target=pool.stop, kwargs={"timeout": DEADLINE})
    stopper.start()
    wait_until(lambda: not pool.running, DEADLINE)
    starter = threading.Thread(target=pool.start)
    starter.start()
    starter.join(1.0)  # long enough for an unguarded start() to run its recovery
    gated.gate.set()
    stopper.join(DEADLINE)
    starter.join(DEADLINE)
    assert not stopper.is_alive() and not starter.is_alive()
    wait_until(lambda: (s := manager.get_status(doc_id)) is not None and s.is_finished, DEADLINE)
    pool.stop(timeout=DEADLINE)

    final = manager.require_status(doc_id)
    assert final.status == "completed", final
    assert final.metadata.get("attempt") == 1 and "recovery" not in final.metadata, final.metadata
    assert "failed" not in [e["status"]["status"] for e in watcher.events if e["status"] is not None]
    assert gated.runs == 1


# -- a service's process stops: leases, not start-up recovery --------------------------------


@pytest.fixture
def settings(tmp_path: Path) -> ServiceSettings:
    return ServiceSettings(
        store=f"sqlite:///{tmp_path / 'data' / 'status.db'}",
        uploads=tmp_path / "data" / "uploads",
        data_dir=tmp_path / "data",
        workers=2,
        shutdown_timeout=5,
        lease_seconds=0.6,
    )


def _claimed(settings: ServiceSettings, data: bytes, seconds: float) -> str:
    """A document a process claimed for ``seconds`` and then left (as if it died mid-way)."""
    service = Service(settings)
    doc_id = submit(service.intake, "interrupted.md", data)
    assert service.manager.claim(doc_id, worker="gone-host:1", seconds=seconds) is not None
    service.close()
    return doc_id


def test_a_document_whose_worker_died_is_requeued_when_its_lease_expires(settings: ServiceSettings) -> None:
    doc_id = _claimed(settings, MARKDOWN, seconds=0.5)
    with Service(settings) as service:
        wait_until(lambda: service.manager.require_status(doc_id).is_finished, DEADLINE)
        status = service.manager.require_status(doc_id)
        assert status.status == "completed", status.error
        assert status.metadata["attempt"] == 2
        assert "gone-host:1 was lost" in status.metadata["recovery"]
        assert status.error is None


def test_a_retried_document_whose_file_is_gone_fails_with_a_clear_error(settings: ServiceSettings) -> None:
    doc_id = _claimed(settings, MARKDOWN, seconds=0.5)
    (settings.uploads / f"{doc_id}.md").unlink()
    with Service(settings) as service:
        wait_until(lambda: service.manager.require_status(doc_id).is_finished, DEADLINE)
        status = service.manager.require_status(doc_id)
        assert status.status == "failed"
        assert status.error is not None and f"{doc_id}.md" in status.error
        assert status.metadata["attempt"] == 2


def test_starting_a_service_leaves_live_leases_and_other_code_alone(settings: ServiceSettings) -> None:
    settings.data_dir.mkdir()
    with StatusManager(store=settings.store, cleanup_interval_seconds=None) as other:
        other.create_status("theirs", "theirs.pdf")
        other.update_status("theirs", "parsing")
    live = _claimed(settings, MARKDOWN, seconds=60.0)
    dead = _claimed(settings, b"# Another\n\nthe marker: its lease expires at once", seconds=0.3)
    with Service(settings) as service:
        # Once the dead worker's document is done, expiry has run after its lease ended...
        wait_until(lambda: service.manager.require_status(dead).is_finished, DEADLINE)
        assert service.manager.require_status(dead).metadata["attempt"] == 2
        # ...and it left the live lease and the documents of other code as they were.
        status = service.manager.require_status(live)
        assert status.status == "parsing" and status.metadata["attempt"] == 1
        assert status.metadata["worker"] == "gone-host:1"
        assert service.manager.require_status("theirs").status == "parsing"


def test_queued_work_survives_a_stop_and_the_next_service_processes_it(settings: ServiceSettings) -> None:
    first = Service(settings)  # never started: uploads stay queued
    docs = [submit(first.intake, f"{i}.txt", f"queued before restart {i}".encode()) for i in range(3)]
    first.stop()
    first.close()
    first.close()
    with Service(settings) as second:
        assert second.pool.wait_idle(DEADLINE)
        for doc_id in docs:
            assert second.manager.require_status(doc_id).status == "completed"


def test_a_closed_service_cannot_start_again(settings: ServiceSettings) -> None:
    service = Service(settings)
    service.start()
    service.stop()
    service.start()  # stop() is not final
    assert service.running
    service.close()
    assert not service.running
    with pytest.raises(StatusError):
        service.start()


# -- the output of the text pipeline ---------------------------------------------------------


def test_output_store_round_trip_and_search(tmp_path: Path) -> None:
    embedder = HashingEmbedder(32)
    texts = ["apples and pears", "rockets and engines"]
    with OutputStore(tmp_path / "out.db", embedder=embedder) as output:
        output.save(
            "d1", texts, [embedder.embed(t) for t in texts], {"k": "v"}, chunk_info=[{"n": 1}, {"n": 2}]
        )
        stored = output.get("d1")
        assert stored is not None
        assert [c.text for c in stored.chunks] == texts
        assert stored.metadata == {"k": "v"}
        assert stored.chunks[1].info == {"n": 2}
        assert stored.chunks[0].vector == pytest.approx(embedder.embed(texts[0]), abs=1e-6)
        assert output.search("engines", limit=1)[0].text == "rockets and engines"
        output.save("d1", ["replaced"], [embedder.embed("replaced")])
        replaced = output.get("d1")
        assert replaced is not None
        assert [c.text for c in replaced.chunks] == ["replaced"]
        with pytest.raises(OutputError):
            output.save("d2", ["a", "b"], [embedder.embed("a")])
        with pytest.raises(OutputError):
            output.save("d2", ["a"], [[math.nan] * 32])
        assert output.get("d2") is None
        assert output.get("nothing") is None
        assert output.delete("d1")
        assert output.count() == 0


def test_text_processor_with_a_plugged_in_embedder(
    manager: StatusManager, uploads: Path, make_pool: Callable[..., WorkerPool], tmp_path: Path
) -> None:
    class Constant:
        dimension = 3

        def embed(self, text: str) -> list[float]:
            return [1.0, 0.0, 0.0]

    pool = make_pool(manager, processors={"txt": TextProcessor(Constant())})
    intake = Intake(manager, uploads, max_bytes=1 << 20, on_queued=pool.enqueue)
    watcher = Watcher(manager)
    pool.start()
    data = b"plain words"
    doc_id = submit(intake, "p.txt", data)
    assert doc_id == hashlib.sha256(data).hexdigest()
    assert watcher.wait(doc_id, "completed")["metadata"]["num_chunks"] == 1
    pool.stop()
    with OutputStore(tmp_path / "data" / OUTPUT_FILE) as output:
        stored = output.get(doc_id)
        assert stored is not None
        assert stored.dimension == 3
