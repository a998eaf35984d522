"""The local engine: a pool of slots that claim queued documents and run them, in child processes.

The store is the queue and the truth about who holds a document. Each slot
takes a candidate document, **claims** it (atomically ``queued`` ->
``parsing`` with a lease; a document another worker holds is simply
skipped), runs its processor and finishes it. While it runs, the pool's
:class:`~docstatus.worker.leases.LeaseKeeper` renews the lease every third
of its duration; every write carries the lease's epoch, so once the lease is
lost (expired and passed on, or cancelled) the work stops and nothing it
would still write is kept.

Engines: ``"process"`` (the default) runs each document in a long-lived
child process per slot (see :mod:`docstatus.worker.child`): a crash, a hang
or a memory blow-up in a parser costs that document, never the service, and
the document time limit kills the child. ``"thread"`` runs processors on the
pool's threads, for processors that only work in this process (closures,
objects that cannot be pickled); its time limit is checked at each report.

Candidates come from :meth:`WorkerPool.enqueue` (the intake's
``on_queued``) and, unless ``adopt_existing=False``, from a periodic look at
the store's queued documents, so documents queued by another process (or
left queued by one that stopped) are picked up. The same periodic chore
expires other workers' leases: a worker that died is noticed within the
lease plus a few seconds, and its document requeued (or failed after
``max_attempts``). Nothing is "recovered" at start: starting or stopping any
number of processes never touches a document whose lease is alive.
Documents without ``metadata["path"]`` (not created by an
:class:`~docstatus.ingest.Intake`) belong to other code sharing the store
and are never touched.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import pickle
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Literal

from ..errors import ConfigError, DocumentTimeoutError, LeaseLostError, StatusError
from ..manager import Lease, StatusManager
from ..models import ProcessingStatus, Status
from ..output.store import OutputStore
from .child import ChildConfig, Task, child_main
from .job import Processor, Reporter
from .leases import LeaseKeeper
from .run import Outcome, build_job, finish, run_processor

__all__ = ["OUTPUT_FILE", "Engine", "WorkerPool"]

log = logging.getLogger(__name__)

#: The output store's file name inside ``data_dir``.
OUTPUT_FILE = "output.db"

Engine = Literal["process", "thread"]

#: Most documents one look at the store's queue hands to the slots.
SCAN_LIMIT = 1000


def _checked(processors: Mapping[str, Processor]) -> dict[str, Processor]:
    """A copy of ``processors``; ``TypeError`` for a value without ``process(job, reporter)``."""
    for format, processor in processors.items():
        if not isinstance(processor, Processor):
            raise TypeError(
                f"the processor of {format!r} needs a process(job, reporter) method; got {processor!r}"
            )
    return dict(processors)


def _sendable(processors: Mapping[str, Processor]) -> None:
    """``TypeError`` unless the processors can be sent to a child process (pickled)."""
    try:
        pickle.dumps(dict(processors))
    except Exception as exc:
        raise TypeError(
            f"the processors cannot be sent to the worker's child processes ({exc}); define them at "
            "module level, or run them in this process with engine='thread'"
        ) from None


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


class _Stopped(StatusError):
    """Raised into a thread-engine processor the pool gave up on; never escapes the pool."""


@dataclass(eq=False)
class _Task:
    """A claimed document while a slot runs it."""

    lease: Lease
    status: ProcessingStatus
    deadline: float | None
    lost: threading.Event
    stop_now: Callable[[], None] = lambda: None


class _Run:
    """One start-to-stop period of a pool: its queue, its threads and whether it is stopping."""

    def __init__(self, output: OutputStore, owns_output: bool) -> None:
        self.cond = threading.Condition()
        self.queue: deque[str] = deque()
        self.pending: set[str] = set()  # queued here or being processed
        self.busy = 0
        self.stopping = False
        self.threads: list[threading.Thread] = []
        self.tasks: set[_Task] = set()
        #: The pid of each slot's child process (for the worker registry).
        self.children: dict[int, int] = {}
        self.started_at = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        self.output = output
        self.owns_output = owns_output

    def put(self, doc_id: str) -> None:
        with self.cond:
            if self.stopping or doc_id in self.pending:
                return
            self.pending.add(doc_id)
            self.queue.append(doc_id)
            self.cond.notify()

    def take(self) -> str | None:
        with self.cond:
            while not self.queue and not self.stopping:
                self.cond.wait()
            if self.stopping:
                return None
            self.busy += 1
            return self.queue.popleft()

    def done(self, doc_id: str) -> None:
        with self.cond:
            self.busy -= 1
            self.pending.discard(doc_id)
            self.cond.notify_all()

    def idle_slots(self, slots: int) -> int:
        with self.cond:
            return max(0, slots - self.busy - len(self.queue))

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.queue.clear()  # still queued in the store: any worker picks them up
            self.cond.notify_all()


# -- the child processes -----------------------------------------------------------


def _context() -> Any:
    # forkserver: children fork from a clean single-threaded server, never from this
    # threaded process, and start in milliseconds; spawn where there is no forkserver.
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    # Imported once in the server, so each child starts with them loaded.
    ctx.set_forkserver_preload(["docstatus.worker.child", "docstatus.formats"])
    return ctx


def _death(exitcode: int | None) -> str:
    if exitcode is None:
        return "its process stopped answering"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"its process was killed by {name}"
    return f"its process exited with status {exitcode}"


_MAIN_HINT = (
    "a program that starts workers when it is imported must do so under "
    "`if __name__ == '__main__':`, since child processes import the main module"
)


class _Child:
    """One long-lived child process of a slot, running one document at a time."""

    def __init__(self, config: ChildConfig, name: str) -> None:
        ctx = _context()
        self.conn, theirs = ctx.Pipe()
        # Never written: the child sees it close when this process is gone.
        lifeline, self._lifeline = ctx.Pipe(duplex=False)
        args = (theirs, lifeline, pickle.dumps(config))
        self.process = ctx.Process(target=child_main, args=args, name=name, daemon=True)
        self.process.start()
        theirs.close()
        lifeline.close()

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait for the child to load its processors; ``ConfigError`` if it cannot."""
        answer: tuple[Any, ...] = ("broken", "it did not start")
        try:
            if self.conn.poll(timeout):
                answer = self.conn.recv()
        except (EOFError, OSError):
            self.process.join(1.0)
            answer = ("broken", f"{_death(self.process.exitcode)} before it was ready ({_MAIN_HINT})")
        if answer[0] != "ready":
            self.stop(timeout=1.0)
            raise ConfigError(
                "processors", "child process", f"a worker process could not load them: {answer[1]}"
            )

    @property
    def pid(self) -> int:
        return int(self.process.pid or 0)

    def alive(self) -> bool:
        return bool(self.process.is_alive())

    def kill(self) -> None:
        """SIGKILL the child (from any thread); :meth:`run` then sees it gone."""
        if self.process.is_alive():
            self.process.kill()

    def _killed(self) -> None:
        # Waited for, so that the slot never hands the next document to a dying child.
        self.kill()
        self.process.join(5.0)

    def stop(self, timeout: float = 5.0) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.process.join(timeout)
        self.kill()
        self.process.join(1.0)
        self.conn.close()
        self._lifeline.close()

    def run(self, task: _Task, relay: Callable[[tuple[Any, ...]], tuple[Any, ...]]) -> Outcome:
        """Send ``task`` and serve the child until it answers, dies, or the task must stop."""
        lease, status = task.lease, task.status
        meta = dict(status.metadata)
        try:
            self.conn.send(
                Task(lease.doc_id, status.filename, lease.epoch, lease.worker, lease.seconds, meta)
            )
            while True:
                timeout = None if task.deadline is None else max(0.0, task.deadline - time.monotonic())
                ready = wait([self.conn, self.process.sentinel], timeout)
                if not ready:
                    self._killed()
                    return Outcome("timeout")
                message = self.conn.recv() if self.conn in ready or self.conn.poll() else None
                if message is None:
                    break
                if message[0] != "write":
                    return Outcome(message[0], message[1] if len(message) > 1 else None)
                self.conn.send(relay(message))
        except (EOFError, OSError):
            pass  # the child is gone
        self._killed()
        return Outcome("lost" if task.lost.is_set() else "crashed", _death(self.process.exitcode))


# -- the pool ----------------------------------------------------------------------


class WorkerPool:
    """Slots that claim queued documents and run their format's processor. Thread-safe.

    ``processors`` maps a format name (``metadata["format"]``) to its
    processor, usually :func:`docstatus.formats.default_processors`; a
    document of a format without one fails. With the ``"process"`` engine the
    processors are pickled once into each child (define them at module level).
    Output goes to ``<data_dir>/output.db`` (``data_dir`` defaults to the
    uploads folder's parent) unless an ``output`` store is given; children open
    the same file. ``store_url`` is how children open the status store
    (default: the manager's, which has no credentials); a store only this
    process can see (``memory://``) gets the children's progress through the
    parent. ``document_timeout`` (seconds) fails a document still running
    after it. ``lease_seconds`` is each claim's lease, renewed every third of
    it; a lost worker's document is retried up to ``max_attempts`` in all.
    ``child_memory_mb`` limits the address space of each child process (a
    document past it fails with ``MEMORY_LIMIT``).
    ``adopt_existing=False`` processes only what is given to :meth:`enqueue`
    (``docstatus process`` uses this, so it never takes a service's documents).
    """

    def __init__(
        self,
        manager: StatusManager,
        uploads_dir: Path,
        processors: Mapping[str, Processor],
        *,
        workers: int = 2,
        data_dir: Path | None = None,
        document_timeout: float | None = None,
        output: OutputStore | None = None,
        adopt_existing: bool = True,
        engine: Engine = "process",
        store_url: str | None = None,
        lease_seconds: float = 30.0,
        max_attempts: int = 3,
        scan_interval: float = 2.0,
        child_memory_mb: int | None = None,
    ) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a positive integer, got {workers!r}")
        if engine not in ("process", "thread"):
            raise ValueError(f"engine must be 'process' or 'thread', got {engine!r}")
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValueError(f"max_attempts must be an integer >= 1, got {max_attempts!r}")
        self.document_timeout = (
            None if document_timeout is None else _positive("document_timeout", document_timeout)
        )
        self.lease_seconds = _positive("lease_seconds", lease_seconds)
        self.scan_interval = _positive("scan_interval", scan_interval)
        self.manager = manager
        self.uploads_dir = Path(uploads_dir)
        self.data_dir = Path(data_dir) if data_dir is not None else self.uploads_dir.parent
        self.workers = workers
        self.processors = _checked(processors)
        if engine == "process":
            _sendable(self.processors)
        self.engine: Engine = engine
        self.max_attempts = max_attempts
        self.child_memory_mb = child_memory_mb
        self.adopt_existing = adopt_existing
        store = manager.store
        # A store only this process can see (memory://) gets the children's writes through it.
        self.store_url = (store_url or store.url) if store.shared else None
        self._output = output
        self._host = socket.gethostname()
        self._lock = threading.Lock()
        self._run: _Run | None = None
        self._keeper: LeaseKeeper | None = None

    @property
    def running(self) -> bool:
        """Whether the pool has been started and not stopped."""
        run = self._run
        return run is not None and not run.stopping

    # -- lifetime ----------------------------------------------------------------

    def start(self) -> None:
        """Start the slots and the lease keeper. Idempotent.

        Queued documents of the store are picked up by the periodic look at
        the queue (at once, then every ``scan_interval`` seconds) unless
        ``adopt_existing=False``.
        """
        with self._lock:
            if self._run is not None:
                return
            run = self._run = self._new_run()
            chore_interval = min(self.scan_interval, self.lease_seconds / 3)
            self._keeper = keeper = LeaseKeeper(lambda: self._chore(run), chore_interval)
            if self.adopt_existing:
                try:
                    for doc_id in self._queued_oldest_first():
                        run.put(doc_id)
                except BaseException:
                    self._run = self._keeper = None
                    if run.owns_output:
                        run.output.close()
                    raise
            children = self._start_children(run)
            for i in range(self.workers):
                thread = threading.Thread(
                    target=self._slot,
                    args=(run, i, children[i]),
                    name=f"docstatus-worker-{i + 1}",
                    daemon=True,
                )
                run.threads.append(thread)
                thread.start()
            keeper.start()
            try:
                self._heartbeat(run)
            except Exception as exc:  # the store is unreachable: the chore beats again soon
                log.warning("could not register this worker: %s", exc)

    def _start_children(self, run: _Run) -> list[_Child | None]:
        # Started together and awaited before any work, so processors that a child cannot
        # load fail start() with the reason, not every document with a crash.
        if self.engine != "process":
            return [None] * self.workers
        children = [self._start_child(run) for _ in range(self.workers)]
        try:
            for child in children:
                child.wait_ready()
        except BaseException:
            for child in children:
                child.stop(timeout=1.0)
            self._run = self._keeper = None
            if run.owns_output:
                run.output.close()
            raise
        return list(children)

    def _new_run(self) -> _Run:
        if self._output is not None:
            return _Run(self._output, owns_output=False)
        self.uploads_dir.mkdir(parents=True, exist_ok=True)
        return _Run(OutputStore(self.data_dir / OUTPUT_FILE), owns_output=True)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking work; let running documents finish for up to ``timeout`` seconds. Idempotent.

        Documents not yet started stay ``queued`` in the store for any worker.
        A document still running when ``timeout`` passes is given up at once
        (its child killed; a thread is told to stop at its next report) and
        requeued as a new attempt, so another worker takes it without waiting
        for its lease to expire.
        """
        with self._lock:
            run, self._run = self._run, None
            keeper, self._keeper = self._keeper, None
            if run is None:
                return
            run.stop()
            deadline = time.monotonic() + max(0.0, timeout)
            for thread in run.threads:
                thread.join(max(0.0, deadline - time.monotonic()))
            stuck = [t for t in run.threads if t.is_alive()]
            if stuck:
                self._give_up(run)
                for thread in stuck:
                    thread.join(5.0)
            if keeper is not None:
                keeper.stop()
            with contextlib.suppress(Exception):  # an unreachable store forgets it when it expires
                self.manager.forget_worker(self.worker_id)
            if run.owns_output and not any(t.is_alive() for t in run.threads):
                run.output.close()

    def _give_up(self, run: _Run) -> None:
        with run.cond:
            tasks = list(run.tasks)
        for task in tasks:
            try:
                task.lease.abandon("The worker stopped before it finished.", max_attempts=self.max_attempts)
            except (LeaseLostError, StatusError) as exc:
                log.info("could not give %s back: %s", task.lease.doc_id, exc)
            task.lost.set()
            task.stop_now()
        log.warning("stopped while processing %s: requeued", [t.lease.doc_id for t in tasks])

    def enqueue(self, doc_id: str) -> None:
        """Process ``doc_id`` soon (it must be queued in the store). Ignored while stopped.

        A document already waiting or running in this pool is not added
        twice. Pass this as the intake's ``on_queued``.
        """
        run = self._run
        if run is not None:
            run.put(doc_id)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is waiting or running (or ``timeout``); whether the pool is idle."""
        run = self._run
        if run is None:
            return True
        with run.cond:
            return run.cond.wait_for(lambda: not run.pending, timeout)

    # -- the periodic chore ------------------------------------------------------

    @property
    def worker_id(self) -> str:
        """This pool's entry in the store's worker registry: ``"<hostname>:<pid>"``."""
        return f"{self._host}:{os.getpid()}"

    def _heartbeat(self, run: _Run) -> None:
        with run.cond:
            children = [f"{self._host}:{pid}" for pid in run.children.values()]
        info = {
            "host": self._host,
            "pid": os.getpid(),
            "engine": "local",
            "processes": self.workers,
            "started_at": run.started_at,
            "children": children,
        }
        # Lives two renewal rounds past the last beat, as a lease does.
        self.manager.heartbeat(self.worker_id, info, self.lease_seconds)

    def _chore(self, run: _Run) -> None:
        if run.stopping:
            return
        self._heartbeat(run)
        if not self.adopt_existing:
            return
        for doc_id in self.manager.expire_leases(max_attempts=self.max_attempts):
            log.warning("the worker of %s was lost: its lease expired", doc_id)
        if run.idle_slots(self.workers):
            for doc_id in self._queued_oldest_first():
                run.put(doc_id)

    def _queued_oldest_first(self) -> list[str]:
        active = self.manager.list_active()  # most recently updated first
        queued = [s.doc_id for s in reversed(active) if s.status is Status.QUEUED and _is_ours(s)]
        return queued[:SCAN_LIMIT]

    # -- the slots ---------------------------------------------------------------

    def _slot(self, run: _Run, slot: int, child: _Child | None) -> None:
        if child is not None:
            run.children[slot] = child.pid
        try:
            while (doc_id := run.take()) is not None:
                again = False
                try:
                    child, again = self._process(run, doc_id, child)
                    if child is not None:
                        run.children[slot] = child.pid
                except Exception as exc:
                    # The store itself failed: the lease (if any) expires and the document is retried.
                    log.warning("processing %s failed outside its processor: %s", doc_id, exc)
                finally:
                    run.done(doc_id)
                if again:
                    run.put(doc_id)  # requeued as a new attempt: this pool may take it at once
        finally:
            if child is not None:
                child.stop()

    def _process(self, run: _Run, doc_id: str, child: _Child | None) -> tuple[_Child | None, bool]:
        """Claim and run one document; the slot's child (perhaps a new one), whether it was requeued."""
        if self.engine == "process" and (child is None or not child.alive()):
            if child is not None:
                child.stop()
            child = self._start_child(run)
            child.wait_ready()
        worker = f"{self._host}:{child.pid if child is not None else os.getpid()}"
        lease = self.manager.claim(doc_id, worker=worker, seconds=self.lease_seconds)
        if lease is None:
            return child, False  # finished, removed, or held by another worker
        status = self.manager.get_status(doc_id)
        if status is None:
            return child, False
        deadline = None if self.document_timeout is None else time.monotonic() + self.document_timeout
        task = _Task(lease, status, deadline, threading.Event())
        if child is not None:
            task.stop_now = child.kill
        keeper = self._keeper
        with run.cond:
            run.tasks.add(task)
        if keeper is not None:
            keeper.hold(lease, lambda: self._lost(task))
        try:
            outcome = (
                child.run(task, lambda m: self._relay(lease, m)) if child else self._in_thread(run, task)
            )
        finally:
            if keeper is not None:
                keeper.release(lease)
            with run.cond:
                run.tasks.discard(task)
        return child, self._finish(run, task, outcome)

    def _start_child(self, run: _Run) -> _Child:
        config = ChildConfig(
            processors=self.processors,
            uploads_dir=self.uploads_dir,
            data_dir=self.data_dir,
            output_path=Path(run.output.path),
            store_url=self.store_url,
            log_level=logging.getLogger("docstatus").getEffectiveLevel(),
            memory_mb=self.child_memory_mb,
            progress_interval=self.manager.progress_interval,
        )
        return _Child(config, name="docstatus-child")

    @staticmethod
    def _lost(task: _Task) -> None:
        task.lost.set()
        task.stop_now()

    def _relay(self, lease: Lease, message: tuple[Any, ...]) -> tuple[Any, ...]:
        # A child's report, written here for a store the child cannot see.
        _, status, progress, fields = message
        try:
            lease.update_status(status, progress, **fields)
        except LeaseLostError:
            return ("lost",)
        except (StatusError, TypeError, ValueError) as exc:
            return ("error", *Outcome.failed(exc).value)
        return ("ok",)

    def _in_thread(self, run: _Run, task: _Task) -> Outcome:
        lease = task.lease

        def check() -> None:
            if task.lost.is_set():
                raise _Stopped("the worker pool stopped this document")
            if task.deadline is not None and time.monotonic() > task.deadline:
                raise DocumentTimeoutError(lease.doc_id, self.document_timeout or 0.0)

        try:
            job = build_job(
                lease.doc_id,
                task.status.filename,
                task.status.metadata,
                self.uploads_dir,
                self.data_dir,
                run.output,
            )
            reporter = Reporter(self.manager, lease.doc_id, checkpoint=check, writer=lease, claimed=True)
            return Outcome("done", run_processor(self.processors, job, reporter))
        except (LeaseLostError, _Stopped):
            return Outcome("lost")
        except DocumentTimeoutError:
            return Outcome("timeout")
        except Exception as exc:
            if task.lost.is_set():
                return Outcome("lost")
            log.debug("processor of %s raised", lease.doc_id, exc_info=exc)
            return Outcome.failed(exc)

    # -- finishing ---------------------------------------------------------------

    def _finish(self, run: _Run, task: _Task, outcome: Outcome) -> bool:
        """Write the outcome through the lease; whether the document was requeued for another attempt."""
        return finish(
            task.lease, task.status.filename, outcome, run.output, self.max_attempts, self.document_timeout
        )


def _is_ours(status: ProcessingStatus) -> bool:
    return isinstance(status.metadata.get("path"), str)
