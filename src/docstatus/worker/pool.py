"""The worker pool: processes queued documents on threads, survives restarts, stops gracefully.

The store is the queue. :meth:`WorkerPool.start` first recovers what a
previous process left mid-way, then enqueues every queued document (oldest
first); new documents arrive through :meth:`WorkerPool.enqueue` (the intake's
``on_queued``). Work only ever leaves the ``queued`` status through a worker,
so a document that was queued when the process stopped is still queued when
the next one starts.

**One service process per store** is assumed: recovery treats every active
document with an uploaded file as abandoned by a previous process of this
service. Documents without ``metadata["path"]`` (not created by an
:class:`~docstatus.ingest.Intake`) belong to other code sharing the
store and are never touched.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import (
    DocumentTimeoutError,
    PathOutsideUploadsError,
    StatusError,
    UnsupportedFormatError,
    UploadNotFoundError,
)
from ..ingest.paths import stored_path
from ..manager import StatusManager
from ..models import ProcessingStatus, Status
from ..output.store import OutputStore
from .job import Job, Processor, Reporter, failure_message

__all__ = ["OUTPUT_FILE", "WorkerPool"]

log = logging.getLogger(__name__)

#: The output store's file name inside ``data_dir``.
OUTPUT_FILE = "output.db"


def _checked(processors: Mapping[str, Processor]) -> dict[str, Processor]:
    """A copy of ``processors``; ``TypeError`` for a value without ``process(job, reporter)``."""
    for format, processor in processors.items():
        if not isinstance(processor, Processor):
            raise TypeError(
                f"the processor of {format!r} needs a process(job, reporter) method; got {processor!r}"
            )
    return dict(processors)


class _Abandoned(StatusError):
    """Raised into a processor the pool gave up waiting for at stop(); never escapes the pool."""


class _Run:
    """One start-to-stop period of a pool: its queue, its threads and whether it is stopping."""

    def __init__(self, output: OutputStore, owns_output: bool) -> None:
        self.cond = threading.Condition()
        self.queue: deque[str] = deque()
        self.pending: set[str] = set()  # queued here or being processed
        self.stopping = False
        self.abandoned = False
        self.threads: list[threading.Thread] = []
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
            return None if self.stopping else self.queue.popleft()

    def done(self, doc_id: str) -> None:
        with self.cond:
            self.pending.discard(doc_id)
            self.cond.notify_all()

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.queue.clear()  # still queued in the store: the next start picks them up
            self.cond.notify_all()

    def check(self) -> None:
        if self.abandoned:
            raise _Abandoned("the worker pool stopped waiting for this document")


class WorkerPool:
    """Threads that take queued documents and run their format's processor. Thread-safe.

    ``processors`` maps a format name (``metadata["format"]``) to its
    processor, usually :func:`docstatus.formats.default_processors`; a
    document of a format without one fails. Output goes to
    ``<data_dir>/output.db`` (``data_dir`` defaults to the uploads folder's
    parent) unless an ``output`` store is given.
    ``document_timeout`` (seconds) fails a document whose processor is still
    running after it; it is checked whenever the processor reports progress.
    ``adopt_existing=False`` skips the recovery and the scan for queued
    documents at :meth:`start`: the pool then processes only what is given to
    :meth:`enqueue` (``docstatus process`` uses this, so running it beside a
    service on the same store never touches the service's documents).
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
    ) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a positive integer, got {workers!r}")
        if document_timeout is not None and not document_timeout > 0:
            raise ValueError(
                f"document_timeout must be a positive number of seconds, got {document_timeout!r}"
            )
        self.manager = manager
        self.uploads_dir = Path(uploads_dir)
        self.data_dir = Path(data_dir) if data_dir is not None else self.uploads_dir.parent
        self.workers = workers
        self.processors = _checked(processors)
        self.document_timeout = document_timeout
        self._output = output
        self.adopt_existing = adopt_existing
        self._lock = threading.Lock()
        self._run: _Run | None = None

    @property
    def running(self) -> bool:
        """Whether the pool has been started and not stopped."""
        run = self._run
        return run is not None and not run.stopping

    # -- lifetime ----------------------------------------------------------------

    def start(self) -> None:
        """Recover interrupted documents, enqueue the queued ones, start the workers. Idempotent.

        Recovery: a document a previous process left active (``parsing``,
        ``embedding_*``, ``storing``) is marked failed with a note and
        requeued (``metadata["attempt"]`` goes up, ``metadata["recovery"]``
        keeps the note) when its file is still in the uploads folder, and
        otherwise marked failed with an error saying the service stopped
        while processing it and its file is gone.
        """
        with self._lock:
            if self._run is not None:
                return
            run = self._new_run()
            # Visible before the scan, so documents queued meanwhile reach enqueue().
            self._run = run
            try:
                if self.adopt_existing:
                    self._recover()
                    for doc_id in self._queued_oldest_first():
                        run.put(doc_id)
            except BaseException:
                self._run = None
                if run.owns_output:
                    run.output.close()
                raise
            for i in range(self.workers):
                thread = threading.Thread(
                    target=self._work, args=(run,), name=f"docstatus-worker-{i + 1}", daemon=True
                )
                run.threads.append(thread)
                thread.start()

    def _new_run(self) -> _Run:
        if self._output is not None:
            return _Run(self._output, owns_output=False)
        self.uploads_dir.mkdir(parents=True, exist_ok=True)
        return _Run(OutputStore(self.data_dir / OUTPUT_FILE), owns_output=True)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking work; let running documents finish for up to ``timeout`` seconds. Idempotent.

        Documents not yet started stay ``queued`` (in the store) for the next
        start. A document still running when ``timeout`` passes is abandoned:
        its status is left as it is, so the next start's recovery requeues it;
        its worker thread (a daemon) stops at its processor's next report.
        A :meth:`start` meanwhile waits until the stop is over.
        """
        # The lock is held while waiting: a start() in between would "recover" (fail and
        # requeue) the documents the stopping workers are still finishing.
        with self._lock:
            run, self._run = self._run, None
            if run is None:
                return
            run.stop()
            deadline = time.monotonic() + max(0.0, timeout)
            for thread in run.threads:
                thread.join(max(0.0, deadline - time.monotonic()))
            stuck = [t.name for t in run.threads if t.is_alive()]
            if stuck:
                run.abandoned = True
                log.warning(
                    "stopped waiting for %s; their documents will be recovered at the next start", stuck
                )
            if run.owns_output and not stuck:
                run.output.close()

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

    # -- recovery ----------------------------------------------------------------

    def _is_ours(self, status: ProcessingStatus) -> bool:
        return isinstance(status.metadata.get("path"), str)

    def _queued_oldest_first(self) -> list[str]:
        active = self.manager.list_active()  # most recently updated first
        return [s.doc_id for s in reversed(active) if s.status is Status.QUEUED and self._is_ours(s)]

    def _recover(self) -> None:
        for status in self.manager.list_active():
            if status.status is Status.QUEUED or not self._is_ours(status):
                continue
            try:
                self._recover_one(status)
            except StatusError as exc:
                log.warning("could not recover %s: %s", status.doc_id, exc)

    def _recover_one(self, status: ProcessingStatus) -> None:
        stage = status.status.value
        try:
            stored_path(self.uploads_dir, status.metadata)
        except (UploadNotFoundError, PathOutsideUploadsError):
            message = (
                f"The service stopped while processing this document ({stage}) and its uploaded file "
                f"{status.metadata.get('path')!r} is gone, so it cannot be processed again"
            )
            self.manager.mark_failed(status.doc_id, message)
            return
        attempt = int(status.metadata.get("attempt", 1))
        note = (
            f"Interrupted: the service stopped while processing this document ({stage}, attempt "
            f"{attempt}); queued again as attempt {attempt + 1}"
        )
        self.manager.mark_failed(status.doc_id, note)
        self.manager.requeue(status.doc_id)
        # requeue() clears the error; keep the note where the new attempt shows it.
        self.manager.update_status(status.doc_id, Status.QUEUED, metadata={"recovery": note})
        log.info("recovered %s (was %s): requeued as attempt %d", status.doc_id, stage, attempt + 1)

    # -- the workers -------------------------------------------------------------

    def _work(self, run: _Run) -> None:
        while (doc_id := run.take()) is not None:
            try:
                self._process(run, doc_id)
            except Exception:
                # The store itself failed; the document keeps its status for recovery.
                log.exception("processing %s failed outside its processor", doc_id)
            finally:
                run.done(doc_id)

    def _process(self, run: _Run, doc_id: str) -> None:
        status = self.manager.get_status(doc_id)
        if status is None or status.status is not Status.QUEUED:
            return  # finished, removed, or taken by another worker meanwhile
        try:
            result = self._run_processor(run, status)
        except _Abandoned:
            return
        except Exception as exc:
            if not run.abandoned:
                self._fail(doc_id, exc)
            return
        if not run.abandoned:
            self._complete(doc_id, result)

    def _run_processor(self, run: _Run, status: ProcessingStatus) -> Mapping[str, Any] | None:
        fmt = str(status.metadata.get("format", ""))
        processor = self.processors.get(fmt)
        if processor is None:
            raise UnsupportedFormatError(status.filename, f"no processor for format {fmt!r}")
        job = Job(
            doc_id=status.doc_id,
            filename=status.filename,
            format=fmt,
            path=stored_path(self.uploads_dir, status.metadata),
            output=run.output,
            data_dir=self.data_dir,
            metadata=status.metadata,
        )
        reporter = Reporter(self.manager, status.doc_id, checkpoint=self._checkpoint(run, status.doc_id))
        return processor.process(job, reporter)

    def _checkpoint(self, run: _Run, doc_id: str) -> Callable[[], None]:
        deadline = None if self.document_timeout is None else time.monotonic() + self.document_timeout

        def check() -> None:
            run.check()
            if deadline is not None and time.monotonic() > deadline and self.document_timeout is not None:
                raise DocumentTimeoutError(doc_id, self.document_timeout)

        return check

    def _complete(self, doc_id: str, result: Mapping[str, Any] | None) -> None:
        try:
            self.manager.mark_completed(doc_id, **dict(result or {}))
        except (TypeError, ValueError) as exc:
            # Unusable result metadata (not JSON, not str keys): the document did not complete.
            if isinstance(exc, StatusError):
                log.warning("could not complete %s: %s", doc_id, exc)
                return
            self._fail(doc_id, exc)

    def _fail(self, doc_id: str, exc: BaseException) -> None:
        log.info("document %s failed: %s", doc_id, failure_message(exc), exc_info=exc)
        try:
            self.manager.mark_failed(doc_id, failure_message(exc))
        except StatusError as err:
            log.warning("could not mark %s failed: %s", doc_id, err)
