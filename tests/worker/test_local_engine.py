"""The local engine for real: documents in child processes, killed, stuck, crashing, orphaned.

Each test runs a real :class:`WorkerPool` with ``engine="process"`` over a real
SQLite file (the children write progress to it themselves) or ``memory://``
(their progress goes through the parent). Processors are module-level so the
children can load them; they coordinate with the test through files in the
data folder, never through timing: a held document waits while
``<data>/<filename>.hold`` exists and writes its process id to
``<data>/<filename>.pid`` first.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from docstatus import StatusManager
from docstatus.errors import ConfigError, LeaseLostError
from docstatus.formats import default_processors
from docstatus.ingest import Intake
from docstatus.worker import Job, Reporter
from docstatus.worker.pool import WorkerPool
from helpers import Watcher, submit, wait_until

pytestmark = pytest.mark.timeout(90)

DEADLINE = 30.0


class Held:
    """Parses, says which process runs it, then waits while its hold file exists; completes."""

    def process(self, job: Job, reporter: Reporter) -> Mapping[str, Any]:
        reporter.parsing(metadata={"pid": os.getpid()})
        hold = job.data_dir / f"{job.filename}.hold"
        (job.data_dir / f"{job.filename}.pid").write_text(str(os.getpid()))
        page = 0
        while hold.exists():
            page += 1
            reporter.visual_page(min(page, 99), 100)
            threading.Event().wait(0.02)
        reporter.text_chunk(1, 1)
        reporter.storing()
        return {"pid": os.getpid()}


class Spinning:
    """Never reports again after parsing: stuck, as a parser inside a C call would be."""

    def process(self, job: Job, reporter: Reporter) -> Mapping[str, Any]:
        reporter.parsing()
        while True:
            pass


class Segfault:
    """Crashes its process in native code, every time."""

    def process(self, job: Job, reporter: Reporter) -> Mapping[str, Any]:
        reporter.parsing(metadata={"about": "to crash"})
        ctypes.string_at(0)  # reads address 0: SIGSEGV
        return {}


class Hog:
    """Asks for 4 GiB, every time: a parser whose memory blows up."""

    def process(self, job: Job, reporter: Reporter) -> Mapping[str, Any]:
        reporter.parsing()
        blocks = [bytearray(64 << 20) for _ in range(64)]
        return {"blocks": len(blocks)}


def processors() -> dict[str, Any]:
    registry: dict[str, Any] = default_processors()
    registry["txt"] = Held()
    registry["md"] = Spinning()
    registry["html"] = Segfault()
    return registry


@pytest.fixture(params=["sqlite", "memory"])
def manager(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StatusManager]:
    url = f"sqlite:///{tmp_path / 'status.db'}" if request.param == "sqlite" else "memory://"
    with StatusManager(store=url, cleanup_interval_seconds=None) as manager:
        yield manager


class Engine:
    """A process-engine pool, its intake and a watcher of every change."""

    def __init__(self, manager: StatusManager, root: Path, **kwargs: Any) -> None:
        self.data = root / "data"
        self.data.mkdir(exist_ok=True)
        kwargs.setdefault("processors", processors())
        kwargs.setdefault("lease_seconds", 1.5)
        self.pool = WorkerPool(manager, root / "uploads", data_dir=self.data, engine="process", **kwargs)
        self.intake = Intake(manager, root / "uploads", max_bytes=1 << 20, on_queued=self.pool.enqueue)
        self.watcher = Watcher(manager, timeout=DEADLINE)
        self.manager = manager
        self.pool.start()

    def held(self, name: str) -> tuple[str, int]:
        """Submit a held document; its id and the pid of the child running it, once it runs."""
        (self.data / f"{name}.hold").touch()
        doc_id = submit(self.intake, name, f"held {name}".encode())
        pid_file = self.data / f"{name}.pid"
        wait_until(pid_file.exists, DEADLINE)
        wait_until(lambda: pid_file.read_text() != "", DEADLINE)
        return doc_id, int(pid_file.read_text())

    def release(self, name: str) -> None:
        (self.data / f"{name}.hold").unlink()
        (self.data / f"{name}.pid").unlink(missing_ok=True)


@pytest.fixture
def make_engine(tmp_path: Path) -> Iterator[Callable[..., Engine]]:
    made: list[Engine] = []

    def make(manager: StatusManager, **kwargs: Any) -> Engine:
        engine = Engine(manager, tmp_path, **kwargs)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        for hold in engine.data.glob("*.hold"):
            hold.unlink()
        engine.pool.stop(timeout=5)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] != "Z"


def test_documents_run_in_child_processes_and_report_progress(
    manager: StatusManager, make_engine: Callable[..., Engine]
) -> None:
    engine = make_engine(manager, workers=2)
    first, pid_a = engine.held("a.txt")
    second, pid_b = engine.held("b.txt")
    assert {pid_a, pid_b}.isdisjoint({os.getpid()}) and pid_a != pid_b  # two children at once
    status = manager.require_status(first)
    assert status.metadata["worker"].endswith(f":{pid_a}")  # the process running the processor
    wait_until(lambda: manager.require_status(first).status == "embedding_visual", DEADLINE)
    engine.release("a.txt")
    engine.release("b.txt")
    for doc_id, pid in ((first, pid_a), (second, pid_b)):
        final = engine.watcher.wait(doc_id, "completed", "failed")
        assert final["status"] == "completed", final["error"]
        assert final["metadata"]["pid"] == pid and final["metadata"]["attempt"] == 1
        assert "worker" in final["metadata"]


def test_the_pool_is_in_the_worker_registry_with_its_children(
    manager: StatusManager, make_engine: Callable[..., Engine]
) -> None:
    engine = make_engine(manager, workers=2)
    _, pid = engine.held("seen.txt")
    [entry] = manager.workers()
    assert entry.worker_id == engine.pool.worker_id
    assert entry.info["engine"] == "local" and entry.info["processes"] == 2
    assert any(child.endswith(f":{pid}") for child in entry.info["children"])
    engine.release("seen.txt")
    engine.pool.stop(timeout=5)
    assert manager.workers() == []  # a clean stop leaves the registry at once


def test_a_sigkilled_child_retries_its_document_and_the_pool_goes_on(
    manager: StatusManager, make_engine: Callable[..., Engine]
) -> None:
    engine = make_engine(manager, workers=1)
    doc_id, pid = engine.held("victim.txt")
    engine.release("victim.txt")  # the next attempt goes straight through
    os.kill(pid, signal.SIGKILL)
    final = engine.watcher.wait(doc_id, "completed", "failed")
    assert final["status"] == "completed", final["error"]
    assert final["metadata"]["attempt"] == 2
    assert "killed by SIGKILL" in final["metadata"]["recovery"]
    assert final["metadata"]["pid"] != pid  # a new child ran it
    after = submit(engine.intake, "after.txt", b"the pool still works")
    assert engine.watcher.wait(after, "completed", "failed")["status"] == "completed"


def test_the_time_limit_kills_a_stuck_child(
    manager: StatusManager, make_engine: Callable[..., Engine]
) -> None:
    engine = make_engine(manager, workers=1, document_timeout=1.0)
    stuck = submit(engine.intake, "loop.md", b"# spins for ever")
    final = engine.watcher.wait(stuck, "completed", "failed")
    assert final["status"] == "failed"
    assert final["error"].startswith("processing took longer than 1 second")
    assert final["metadata"]["error_code"] == "DOCUMENT_TIMEOUT"
    # The next document gets a new child and completes.
    doc_id, _ = engine.held("next.txt")
    engine.release("next.txt")
    assert engine.watcher.wait(doc_id, "completed", "failed")["status"] == "completed"


def test_a_poison_document_fails_after_max_attempts_and_never_loops(
    manager: StatusManager, make_engine: Callable[..., Engine]
) -> None:
    engine = make_engine(manager, workers=1, max_attempts=3)
    doc_id = submit(engine.intake, "poison.html", b"<html><body>crash</body></html>")
    final = engine.watcher.wait(doc_id, "failed")
    assert final["metadata"]["attempt"] == 3
    assert "gave up after 3 attempts" in final["error"] and "SIGSEGV" in final["error"]
    history = [h["status"] for h in engine.watcher.history(doc_id)]
    claims = [i for i in range(1, len(history)) if history[i - 1 : i + 1] == ["queued", "parsing"]]
    assert len(claims) == 3
    assert engine.pool.wait_idle(DEADLINE)
    assert manager.require_status(doc_id).status == "failed"


def test_a_lost_lease_stops_the_child_and_keeps_nothing_it_writes(
    manager: StatusManager, make_engine: Callable[..., Engine]
) -> None:
    engine = make_engine(manager, workers=1, lease_seconds=0.6)
    doc_id, _ = engine.held("cancelled.txt")
    wait_until(lambda: manager.require_status(doc_id).status == "embedding_visual", DEADLINE)
    manager.cancel(doc_id)  # the lease is released
    # Its hold file is still there: the processor stopped because its next report was refused.
    assert engine.pool.wait_idle(DEADLINE)
    status = manager.require_status(doc_id)
    assert status.status == "failed" and status.error == "cancelled"
    assert engine.watcher.history(doc_id)[-1]["error"] == "cancelled"  # nothing written after it
    assert not (engine.data / "output.db").exists() or not _has_output(engine, doc_id)


def _has_output(engine: Engine, doc_id: str) -> bool:
    from docstatus.output import OutputStore

    with OutputStore(engine.data / "output.db") as output:
        return output.has(doc_id)


def test_a_stale_epoch_is_refused_from_a_child_process(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'status.db'}"
    with StatusManager(store=url, cleanup_interval_seconds=None) as manager:
        manager.create_status("doc", "doc.txt", {"path": "doc.txt"})
        lease = manager.claim("doc", worker="test:1", seconds=30)
        assert lease is not None
        manager.mark_failed("doc", "cancelled")
        with pytest.raises(LeaseLostError):
            lease.update_status("embedding_text", chunk=1, total_chunks=2)
        assert manager.require_status("doc").error == "cancelled"


# An engine in its own process, so the test can SIGKILL the parent and watch its child.
ORPHAN = textwrap.dedent(
    """
    import sys, threading
    from pathlib import Path
    sys.path[:0] = sys.argv[2:]
    from docstatus import StatusManager
    from docstatus.ingest import Intake
    from docstatus.worker.pool import WorkerPool
    from test_local_engine import processors
    root = Path(sys.argv[1])
    manager = StatusManager(store=f"sqlite:///{root / 'status.db'}", cleanup_interval_seconds=None)
    pool = WorkerPool(manager, root / "uploads", processors(), data_dir=root / "data", workers=1,
                      engine="process", lease_seconds=1.0)
    intake = Intake(manager, root / "uploads", max_bytes=1 << 20, on_queued=pool.enqueue)
    pool.start()
    (root / "data" / "orphan.txt.hold").touch()
    with intake.open_upload("orphan.txt") as writer:
        writer.write(b"an orphan-to-be")
        print(writer.finish().doc_id, flush=True)
    threading.Event().wait()
    """
)


def test_a_child_whose_parent_is_killed_stops_and_its_document_is_retried(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    here = str(Path(__file__).parent)
    parent = subprocess.Popen(
        [sys.executable, "-c", ORPHAN, str(tmp_path), here, str(Path(here).parent)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        doc_id = parent.stdout.readline().strip()
        pid_file = tmp_path / "data" / "orphan.txt.pid"
        wait_until(lambda: pid_file.exists() and pid_file.read_text() != "", DEADLINE)
        child = int(pid_file.read_text())
        parent.kill()
        parent.wait()
        wait_until(lambda: not _alive(child), DEADLINE)  # it noticed its parent is gone
    finally:
        parent.kill()
        if parent.stdout is not None:
            parent.stdout.close()
    (tmp_path / "data" / "orphan.txt.hold").unlink()
    url = f"sqlite:///{tmp_path / 'status.db'}"
    with StatusManager(store=url, cleanup_interval_seconds=None) as manager:
        pool = WorkerPool(
            manager,
            tmp_path / "uploads",
            processors(),
            data_dir=tmp_path / "data",
            engine="process",
            lease_seconds=1.0,
        )
        pool.start()
        try:
            wait_until(lambda: manager.require_status(doc_id).is_finished, DEADLINE)
        finally:
            pool.stop(timeout=5)
        final = manager.require_status(doc_id)
        assert final.status == "completed", final.error
        assert final.metadata["attempt"] == 2 and "was lost" in final.metadata["recovery"]


def _refuse(reason: str) -> None:
    raise RuntimeError(reason)


class Unloadable:
    """Pickles in the parent, cannot be loaded in a child (as a processor needing a missing model)."""

    def process(self, job: Job, reporter: Reporter) -> Mapping[str, Any]:
        return {}

    def __reduce__(self) -> tuple[Any, ...]:
        return (_refuse, ("the model file is missing",))


def test_processors_a_child_cannot_load_fail_start_with_the_reason(
    manager: StatusManager, tmp_path: Path
) -> None:
    pool = WorkerPool(manager, tmp_path / "uploads", {"txt": Unloadable()}, engine="process")
    with pytest.raises(ConfigError, match="could not load them: RuntimeError: the model file is missing"):
        pool.start()
    assert not pool.running
    pool.stop()  # nothing to stop


def test_processors_that_cannot_be_pickled_are_refused_with_advice(
    manager: StatusManager, tmp_path: Path
) -> None:
    class Local:
        def process(self, job: Job, reporter: Reporter) -> Mapping[str, Any]:
            return {}

    with pytest.raises(TypeError, match=r"define them at module level, or .* engine='thread'"):
        WorkerPool(manager, tmp_path / "uploads", {"txt": Local()}, engine="process")


def test_a_document_over_the_memory_limit_fails_with_a_reason_and_the_child_goes_on(
    manager: StatusManager, make_engine: Callable[..., Engine]
) -> None:
    registry = processors()
    registry["md"] = Hog()
    engine = make_engine(manager, workers=1, processors=registry, child_memory_mb=1024)
    hog = submit(engine.intake, "hog.md", b"# hungry")
    wait_until(lambda: manager.require_status(hog).is_finished, DEADLINE)
    status = manager.require_status(hog)
    assert status.status == "failed", status
    assert status.metadata["error_code"] == "MEMORY_LIMIT" and status.metadata["retryable"] is False
    assert "needed more memory than a worker process may use (1,024 MB" in (status.error or "")
    doc_id, _ = engine.held("after.txt")  # and the pool goes on with the next document
    engine.release("after.txt")
    wait_until(lambda: manager.require_status(doc_id).status == "completed", DEADLINE)
