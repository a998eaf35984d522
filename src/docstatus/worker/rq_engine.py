"""The RQ engine: each document attempt is an RQ job, run by ``docstatus worker`` on any machine.

``docstatus serve --queue redis://…`` puts every queued document on the
``docstatus`` RQ queue as one job per attempt (``job_id`` =
``"<doc_id>-<attempt>"``, so enqueueing twice collapses; RQ 3 allows only
letters, digits, ``_`` and ``-`` in a job id), through a
:class:`Dispatcher`. ``docstatus worker`` (:class:`WorkerService`) runs
``--processes`` RQ worker processes on any machine that sees the store, the
queue and the uploads folder; each job runs in RQ's work horse
(:func:`run_document`), which **claims** the document in the status store, so
the lease, not RQ, decides who processes it: a job whose document is not
queued any more does nothing.

RQ's own gaps are closed here. A work horse renews its lease every third of
it; it exits as soon as its parent (the RQ worker process) is gone, and the
lease fences its writes meanwhile, so an orphan never keeps writing. A horse
that dies is noticed at once by its RQ worker (the document is given up and
requeued as a new attempt, or failed after ``max_attempts``); a machine that
dies or is cut off is noticed when its leases expire, by the janitor chore
every ``serve --queue`` and ``worker`` process runs (expire leases, enqueue
every queued document that has no job), within the lease plus a few seconds.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DocumentTimeoutError, LeaseLostError, StatusError
from ..manager import Lease, StatusManager
from ..models import Status
from ..output.store import OutputStore
from ..settings import ServiceSettings
from .job import Processor, Reporter
from .leases import LeaseKeeper
from .pool import OUTPUT_FILE
from .run import Outcome, build_job, finish, run_processor

__all__ = ["QUEUE_NAME", "Dispatcher", "WorkerService", "job_id", "run_document"]

log = logging.getLogger(__name__)

#: The RQ queue every docstatus job goes to.
QUEUE_NAME = "docstatus"

#: The environment variable naming a ``module:callable`` that returns the processors mapping.
PROCESSORS_ENV = "DOCSTATUS_PROCESSORS"

#: Extra seconds RQ allows a job past the document time limit, which the horse enforces itself.
RQ_TIMEOUT_MARGIN = 30

#: Job ids a dispatcher remembers having seen on the queue, and for how long.
KNOWN_JOBS = 100_000
RECHECK_SECONDS = 60.0

#: prctl(2) option: the signal a process gets when its parent dies.
PR_SET_PDEATHSIG = 1

#: Exit status of a work horse that found its parent gone, or its lease lost while stuck.
HORSE_GONE = 70


def job_id(doc_id: str, attempt: int) -> str:
    """The RQ job id of one attempt of a document: enqueueing it twice makes one job."""
    return f"{doc_id}-{attempt}"


def _rq() -> Any:
    try:
        import rq
    except ImportError:
        raise ConfigError(
            "queue", "rq", "the RQ engine needs rq: install it with pip install 'docstatus[worker]'"
        ) from None
    return rq


def _redis(url: str) -> Any:
    from redis import Redis

    try:
        return Redis.from_url(url)
    except ValueError as exc:
        raise ConfigError("queue", url, f"not a Redis URL: {exc}") from None


def _is_ours(metadata: Mapping[str, Any]) -> bool:
    return isinstance(metadata.get("path"), str)


class Dispatcher:
    """Puts queued documents on the RQ queue, and runs the janitor chore of a process.

    :meth:`enqueue` is the intake's ``on_queued``. :meth:`start` runs the
    chore every ``lease_seconds / 3`` (at most ``scan_interval``): expire the
    leases of lost workers and enqueue every queued document (created by an
    intake) that has no job for its attempt.
    """

    def __init__(
        self,
        manager: StatusManager,
        queue_url: str,
        *,
        lease_seconds: float = 30.0,
        max_attempts: int = 3,
        document_timeout: float = 600.0,
        scan_interval: float = 2.0,
    ) -> None:
        rq = _rq()
        self.manager = manager
        self.connection = _redis(queue_url)
        self.queue = rq.Queue(QUEUE_NAME, connection=self.connection)
        self.max_attempts = max_attempts
        self.document_timeout = document_timeout
        interval = min(scan_interval, lease_seconds / 3)
        self._keeper = LeaseKeeper(self.chore, interval)
        self._known: dict[str, float] = {}

    def start(self) -> None:
        """Run the chore on a background thread (at once, then every interval). Idempotent."""
        self._keeper.start()
        self._keeper.run_chore_soon()

    def stop(self) -> None:
        """Stop the chore. Idempotent."""
        self._keeper.stop()

    def enqueue(self, doc_id: str) -> bool:
        """Put the document's current attempt on the queue, unless it is not queued or has its job."""
        status = self.manager.get_status(doc_id)
        if status is None or status.status is not Status.QUEUED or not _is_ours(status.metadata):
            return False
        attempt = int(status.metadata.get("attempt", 1))
        return self._enqueue(doc_id, status.filename, attempt)

    def _enqueue(self, doc_id: str, filename: str, attempt: int) -> bool:
        rq = _rq()
        jid = job_id(doc_id, attempt)
        # A job seen lately needs no round trip at each chore; one seen long ago is checked
        # again (a Redis that lost its data has lost the job too).
        seen = self._known.get(jid)
        if seen is not None and time.monotonic() - seen < RECHECK_SECONDS:
            return False
        if rq.job.Job.exists(jid, connection=self.connection):
            self._remember(jid)
            return False
        self.queue.enqueue(
            run_document,
            doc_id,
            job_id=jid,
            description=f"{filename} (attempt {attempt})",
            job_timeout=int(self.document_timeout) + RQ_TIMEOUT_MARGIN,
            result_ttl=3600,
            failure_ttl=86400,
        )
        self._remember(jid)
        return True

    def _remember(self, jid: str) -> None:
        if len(self._known) >= KNOWN_JOBS:
            self._known.clear()  # bounded: forgetting only costs an EXISTS at the next chore
        self._known[jid] = time.monotonic()

    def chore(self) -> None:
        """Expire lost workers' leases, then enqueue every queued document without a job."""
        for doc_id in self.manager.expire_leases(max_attempts=self.max_attempts):
            log.warning("the worker of %s was lost: its lease expired", doc_id)
        for status in reversed(self.manager.list_active()):
            if status.status is Status.QUEUED and _is_ours(status.metadata):
                self._enqueue(status.doc_id, status.filename, int(status.metadata.get("attempt", 1)))


# -- in the work horse ------------------------------------------------------------------


#: The processors a horse runs unless ``DOCSTATUS_PROCESSORS`` names others.
DEFAULT_PROCESSORS = "docstatus.formats:default_processors"


def _processors() -> Mapping[str, Processor]:
    # Named, not imported: the worker package sits below the formats, which build on it.
    target = os.environ.get(PROCESSORS_ENV) or DEFAULT_PROCESSORS
    module, _, name = target.partition(":")
    factory: Callable[[], Mapping[str, Processor]] = getattr(importlib.import_module(module), name)
    return factory()


def _die_with_parent() -> None:
    """Make this work horse end with its RQ worker: RQ's horse outlives a killed parent otherwise."""
    try:  # Linux: the kernel kills the horse the moment its parent dies.
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    # Elsewhere, and for a parent that died before the call above: look every half second.
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()


def _watch_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(HORSE_GONE)
        threading.Event().wait(0.5)


def _lost(lease: Lease) -> None:
    # The renewal was refused: the document is someone else's now (expired and passed on, or
    # cancelled). Writes are refused already; stopping at once also stops a parser stuck in C.
    log.warning("lost the lease on %s: this work horse stops", lease.doc_id)
    os._exit(HORSE_GONE)


def run_document(doc_id: str) -> str:
    """The RQ job: claim ``doc_id``, run its processor under the lease, finish it. Runs in the horse.

    Settings come from the ``DOCSTATUS_*`` environment the worker command
    sets. Returns what happened (RQ keeps it as the job's result): a document
    that is not queued any more (another worker has it, or it finished) is
    left alone.
    """
    _die_with_parent()
    settings = ServiceSettings.from_env()
    with StatusManager(
        store=settings.store, cleanup_interval_seconds=None, progress_interval=settings.progress_interval
    ) as manager:
        worker = f"{socket.gethostname()}:{os.getpid()}"
        lease = manager.claim(doc_id, worker=worker, seconds=settings.lease_seconds)
        if lease is None:
            return "not queued: left alone"
        status = manager.require_status(doc_id)
        keeper = LeaseKeeper()
        keeper.hold(lease, lambda: _lost(lease))
        keeper.start()
        output = OutputStore(settings.data_dir / OUTPUT_FILE)
        try:
            outcome = _run(lease, status.filename, status.metadata, settings, output)
            finish(lease, status.filename, outcome, output, settings.max_attempts, settings.document_timeout)
        finally:
            keeper.stop()
            output.close()
        return outcome.kind


def _run(
    lease: Lease, filename: str, metadata: Mapping[str, Any], settings: ServiceSettings, output: OutputStore
) -> Outcome:
    deadline = time.monotonic() + settings.document_timeout

    def check() -> None:
        if time.monotonic() > deadline:
            raise DocumentTimeoutError(lease.doc_id, settings.document_timeout)

    try:
        job = build_job(lease.doc_id, filename, metadata, settings.uploads, settings.data_dir, output)
        reporter = Reporter(lease.manager, lease.doc_id, checkpoint=check, writer=lease, claimed=True)
        return Outcome("done", run_processor(_processors(), job, reporter))
    except LeaseLostError:
        return Outcome("lost")
    except DocumentTimeoutError:
        return Outcome("timeout")
    except Exception as exc:
        if type(exc).__name__ == "JobTimeoutException":  # RQ's last resort, past our own limit
            return Outcome("timeout")
        return Outcome.failed(exc)


# -- the worker processes and their supervisor -------------------------------------------------


def _horse_killed(
    manager: StatusManager, max_attempts: int, dispatcher: Dispatcher | None
) -> Callable[..., None]:
    host = socket.gethostname()

    def handler(job: Any, retpid: int, ret_val: int, rusage: Any) -> None:
        # A horse that died (SIGKILL, segfault, out of memory): give its document up now
        # rather than when the lease expires.
        doc_id = str(job.args[0]) if job.args else ""
        holder = f"{host}:{retpid}"
        for entry in manager.leases():
            if entry.doc_id == doc_id and entry.worker == holder:
                how = _signal_phrase(ret_val)
                lease = Lease(doc_id, entry.epoch, holder, 1.0, manager)
                try:
                    lease.abandon(
                        f"Its work horse {how} while processing this document.", max_attempts=max_attempts
                    )
                except (LeaseLostError, StatusError) as exc:
                    log.info("could not give %s back: %s", doc_id, exc)
                    return
                log.warning("the work horse of %s %s: requeued", doc_id, how)
                if dispatcher is not None:
                    dispatcher.enqueue(doc_id)

    return handler


def _signal_phrase(ret_val: int | None) -> str:
    if ret_val is not None and os.WIFSIGNALED(ret_val):
        number = os.WTERMSIG(ret_val)
        try:
            return f"was killed by {signal.Signals(number).name}"
        except ValueError:
            return f"was killed by signal {number}"
    code = os.WEXITSTATUS(ret_val) if ret_val is not None and os.WIFEXITED(ret_val) else ret_val
    return f"exited with status {code}"


def rq_worker_main(queue_url: str, name: str) -> None:
    """One RQ worker process: take jobs from the docstatus queue until told to stop (SIGTERM).

    A store or queue it cannot reach ends it with one line in the log and
    status 1: its supervisor starts another at its next round.
    """
    from redis.exceptions import RedisError

    try:
        _work(queue_url, name)
    except (RedisError, StatusError) as exc:
        log.warning("RQ worker %s stopped: %s", name, exc)
        raise SystemExit(1) from None


def _work(queue_url: str, name: str) -> None:
    rq = _rq()
    settings = ServiceSettings.from_env()
    manager = StatusManager(store=settings.store, cleanup_interval_seconds=None)
    connection = _redis(queue_url)
    dispatcher = Dispatcher(
        manager,
        queue_url,
        lease_seconds=settings.lease_seconds,
        max_attempts=settings.max_attempts,
        document_timeout=settings.document_timeout,
    )
    worker = rq.Worker(
        [rq.Queue(QUEUE_NAME, connection=connection)],
        connection=connection,
        name=name,
        work_horse_killed_handler=_horse_killed(manager, settings.max_attempts, dispatcher),
    )
    worker.work(logging_level="WARNING")


class WorkerService:
    """``docstatus worker``: ``processes`` RQ worker processes, kept running, plus the janitor chore.

    The processes are spawned (never forked from this threaded process); one
    that dies is started again. The chore (see :class:`Dispatcher`) and the
    heartbeat into the store's worker registry run on this process's thread.
    :meth:`stop` asks every worker to finish its current document (RQ's warm
    shutdown) for ``settings.shutdown_timeout`` seconds, then kills it: its
    document is then given back by lease expiry.
    """

    def __init__(self, settings: ServiceSettings, queue_url: str, processes: int) -> None:
        if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
            raise ConfigError("processes", processes, "must be an integer >= 1")
        self.settings = settings
        self.queue_url = queue_url
        self.processes = processes
        self.manager = StatusManager(store=settings.store, cleanup_interval_seconds=None)
        self.dispatcher = Dispatcher(
            self.manager,
            queue_url,
            lease_seconds=settings.lease_seconds,
            max_attempts=settings.max_attempts,
            document_timeout=settings.document_timeout,
        )
        self._host = socket.gethostname()
        self._started_at = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        self._children: list[Any] = []
        self._generation = 0
        self._stopping = threading.Event()

    @property
    def worker_id(self) -> str:
        """This process's entry in the store's worker registry: ``"<hostname>:<pid>"``."""
        return f"{self._host}:{os.getpid()}"

    def _spawn(self, index: int) -> Any:
        ctx = multiprocessing.get_context("spawn")
        # A new name for each start: RQ refuses a name whose killed owner is still registered.
        self._generation += 1
        name = f"docstatus-{self._host}-{os.getpid()}-{index}-{self._generation}"
        process = ctx.Process(target=rq_worker_main, args=(self.queue_url, name), name=name)
        process.start()
        return process

    def check(self) -> None:
        """Raise ``StoreUnavailableError``/``ConfigError`` unless the store and the queue answer."""
        from redis.exceptions import RedisError

        self.manager.last_seq  # noqa: B018 - a read that reaches the store
        try:
            self.dispatcher.connection.ping()
        except RedisError as exc:
            raise ConfigError("queue", self.queue_url, f"the queue does not answer: {exc}") from None

    def run(self) -> None:
        """Start the workers and keep them running until :meth:`stop` (or SIGTERM/SIGINT)."""
        self._children = [self._spawn(i) for i in range(self.processes)]
        self.dispatcher.start()
        interval = min(2.0, self.settings.lease_seconds / 3)
        try:
            while not self._stopping.wait(interval):
                self._revive()
                self._heartbeat()
        finally:
            self._shutdown()

    def stop(self) -> None:
        """Ask :meth:`run` to stop (from any thread or a signal handler)."""
        self._stopping.set()

    def _revive(self) -> None:
        for index, child in enumerate(self._children):
            if not child.is_alive():
                log.warning(
                    "RQ worker process %s exited with %s: starting another", child.pid, child.exitcode
                )
                self._children[index] = self._spawn(index)

    def _children_pids(self) -> list[int]:
        pids = [int(c.pid) for c in self._children if c.pid]
        horses = []
        for pid in pids:
            try:
                horses += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
            except (OSError, ValueError):
                continue
        return pids + horses

    def _heartbeat(self) -> None:
        info = {
            "host": self._host,
            "pid": os.getpid(),
            "engine": "rq",
            "processes": self.processes,
            "started_at": self._started_at,
            "children": [f"{self._host}:{pid}" for pid in self._children_pids()],
        }
        try:
            self.manager.heartbeat(self.worker_id, info, self.settings.lease_seconds)
        except Exception as exc:
            log.warning("could not send the worker heartbeat: %s", exc)

    def _shutdown(self) -> None:
        self.dispatcher.stop()
        for child in self._children:
            if child.is_alive() and child.pid:
                os.kill(child.pid, signal.SIGTERM)  # RQ's warm shutdown: finish the current job
        deadline = time.monotonic() + self.settings.shutdown_timeout
        for child in self._children:
            child.join(max(0.0, deadline - time.monotonic()))
            if child.is_alive():
                child.kill()
                child.join(5.0)
        try:
            self.manager.forget_worker(self.worker_id)
        finally:
            self.manager.close()
