"""Worker-pool findings of the review: a start() during a stop() must not treat running work as abandoned."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from docstatus import StatusManager
from docstatus.events import Event
from docstatus.pipeline import Intake, Job, ProcessorRegistry, Reporter, WorkerPool

DEADLINE = 20.0


class Held:
    """Parses, then waits for the test's gate before it finishes."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.runs = 0

    def process(self, job: Job, reporter: Reporter) -> Mapping[str, Any]:
        self.runs += 1
        reporter.parsing()
        self.entered.set()
        self.gate.wait(DEADLINE)
        return {"done": True}


def poll(predicate: Any) -> None:
    deadline = time.monotonic() + DEADLINE
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached before the deadline"
        time.sleep(0.01)


def test_start_while_stop_waits_for_running_work_does_not_recover_it(tmp_path: Path) -> None:
    manager = StatusManager(cleanup_interval_seconds=None)
    seen: list[Event] = []
    manager.subscribe(seen.append)
    held = Held()
    uploads = tmp_path / "uploads"
    pool = WorkerPool(
        manager, uploads, processors=ProcessorRegistry({"txt": held}), data_dir=tmp_path / "data", workers=1
    )
    intake = Intake(manager, uploads, max_bytes=1 << 20, on_queued=pool.enqueue)
    pool.start()
    with intake.open_upload("a.txt") as writer:
        writer.write(b"some text")
        doc_id = writer.finish().doc_id
    assert held.entered.wait(DEADLINE)

    # stop() waits for the running document; a start() meanwhile (another thread) must not
    # mistake that document for one a dead process left behind.
    stopper = threading.Thread(target=pool.stop, kwargs={"timeout": DEADLINE})
    stopper.start()
    poll(lambda: not pool.running)
    starter = threading.Thread(target=pool.start)
    starter.start()
    starter.join(1.0)  # long enough for an unguarded start() to run its recovery
    held.gate.set()
    stopper.join(DEADLINE)
    starter.join(DEADLINE)
    assert not stopper.is_alive() and not starter.is_alive()
    poll(lambda: (s := manager.get_status(doc_id)) is not None and s.is_finished)
    pool.stop(timeout=DEADLINE)

    final = manager.require_status(doc_id)
    assert final.status == "completed", final
    assert final.metadata.get("attempt") == 1 and "recovery" not in final.metadata, final.metadata
    assert "failed" not in [e["status"]["status"] for e in seen if e["status"] is not None]
    assert held.runs == 1
