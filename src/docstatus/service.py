"""The service: everything ``docstatus serve`` runs besides HTTP, put together.

The composition root: :class:`Service` builds the status manager, the
intake, the formats' processors, the worker pool and the output store from
one :class:`~docstatus.settings.ServiceSettings`. :func:`open_manager` and
:func:`open_output` open the two stores as the service does, for other
commands (``docstatus process``).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from .errors import ConfigError, StatusError
from .formats import default_processors
from .ingest.intake import Intake
from .ingest.retention import Reaper, Removed
from .manager import StatusManager
from .models import ProcessingStatus
from .notify import Notifier
from .output.store import OutputStore
from .settings import ServiceSettings
from .worker.job import Processor
from .worker.pool import OUTPUT_FILE, Engine, WorkerPool

if TYPE_CHECKING:
    from .worker.rq_engine import Dispatcher

__all__ = ["Service", "open_manager", "open_output"]

log = logging.getLogger(__name__)


def _make_dir(name: str, path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(name, str(path), f"cannot create the folder: {exc.strerror or exc}") from None


def open_manager(url: str, progress_interval: float = 0.1) -> StatusManager:
    """A manager over the store at ``url``, creating a SQLite file's folder first.

    A URL the stores refuse is a :class:`~docstatus.errors.ConfigError` naming the ``store``
    setting; the store's own errors (:class:`~docstatus.errors.StatusError`) propagate.
    """
    if url.startswith("sqlite:///"):
        # The database's folder must exist before SQLite can create the file.
        path = Path(url.removeprefix("sqlite:///").partition("?")[0])
        if path.name and str(path) != ":memory:":
            _make_dir("store", path.parent)
    try:
        return StatusManager(store=url, progress_interval=progress_interval)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, StatusError):
            raise
        raise ConfigError("store", url, str(exc)) from None


def open_output(path: Path) -> OutputStore:
    """The output store at ``path``; a :class:`~docstatus.errors.ConfigError` when it cannot be opened."""
    try:
        return OutputStore(path)
    except (OSError, sqlite3.Error) as exc:
        raise ConfigError(
            "data_dir", str(path.parent), f"cannot open the output store {path}: {exc}"
        ) from None


def _dispatcher(manager: StatusManager, settings: ServiceSettings) -> Dispatcher | None:
    if settings.queue is None:
        return None
    from .worker.rq_engine import Dispatcher

    return Dispatcher(
        manager,
        settings.queue,
        lease_seconds=settings.lease_seconds,
        max_attempts=settings.max_attempts,
        document_timeout=settings.document_timeout,
    )


class Service:
    """Everything ``docstatus serve`` runs besides HTTP: manager, intake, worker pool, output store.

    ``output`` (default: ``<data_dir>/output.db``, beside the default status
    store) is where the processors store pages, chunks, vectors and
    thumbnails, and what the ``/documents`` and ``/search`` endpoints read; a
    given one is not closed by :meth:`close`. Each document may take
    ``settings.document_timeout`` seconds before it fails.
    ``engine`` is where documents run: ``"process"`` (child processes, the
    default: the service process never parses a document) or ``"thread"``
    (this process's threads, for processors that cannot be pickled). With
    ``settings.queue`` every queued document is also put on the RQ queue for
    ``docstatus worker`` processes, and ``settings.workers`` (0 by default
    then) local workers run beside them; ``pool`` is ``None`` without local
    workers.
    Building one opens the store and creates the uploads and data folders
    (a folder that cannot be created is a :class:`~docstatus.errors.ConfigError`).
    :meth:`start` starts the workers; :meth:`stop` stops them gracefully
    (waiting up to ``settings.shutdown_timeout``) and can be followed by
    another :meth:`start`; :meth:`close` also closes the store. All three are
    idempotent and thread-safe. Any number of services may share one store:
    each claims documents under a lease (see :mod:`docstatus.worker.pool`).
    """

    def __init__(
        self,
        settings: ServiceSettings | None = None,
        *,
        processors: Mapping[str, Processor] | None = None,
        output: OutputStore | None = None,
        engine: Engine = "process",
    ) -> None:
        self.settings = settings if settings is not None else ServiceSettings()
        _make_dir("uploads", self.settings.uploads)
        _make_dir("data_dir", self.settings.data_dir)
        self.manager = open_manager(self.settings.store, self.settings.progress_interval)
        self._owns_output = output is None
        try:
            self.output = output if output is not None else open_output(self.settings.data_dir / OUTPUT_FILE)
        except BaseException:
            self.manager.close()
            raise
        self.dispatcher = _dispatcher(self.manager, self.settings)
        self.pool = (
            None
            if self.settings.workers == 0
            else WorkerPool(
                self.manager,
                self.settings.uploads,
                processors if processors is not None else default_processors(),
                workers=self.settings.workers,
                data_dir=self.settings.data_dir,
                document_timeout=self.settings.document_timeout,
                output=self.output,
                engine=engine,
                store_url=self.settings.store,
                lease_seconds=self.settings.lease_seconds,
                max_attempts=self.settings.max_attempts,
                child_memory_mb=self.settings.child_memory_mb,
            )
        )
        self.intake = Intake(
            self.manager,
            self.settings.uploads,
            max_bytes=self.settings.max_upload_bytes,
            on_queued=self.enqueue,
        )
        # A removed status takes its upload and output with it, whoever removed it.
        self.reaper = Reaper(self.manager, self.intake, self.output)
        self._unsubscribe: Callable[[], None] = self.manager.subscribe(self.reaper.on_event, progress=False)
        #: The completion webhooks (``settings.notify_url``), running while the service is started.
        self.notifier = Notifier.from_settings(self.manager, self.settings)
        self._lock = threading.Lock()
        self._closed = False
        self._started = False

    def remove(self, doc_id: str) -> tuple[ProcessingStatus, Removed]:
        """Remove a finished document now, with its upload and its output; its last status and what went.

        Raises ``DocumentNotFoundError`` for an unknown document and
        ``DocumentActiveError`` (nothing removed) while it is queued or active.
        """
        upload = self.intake.upload_of(self.manager.require_status(doc_id))
        had_output = self.output.has(doc_id)
        last = self.manager.remove(doc_id)
        # The subscribed reaper has usually removed the content already (on the
        # removed event); this covers a service that is not started.
        self.reaper.remove(doc_id, upload)
        return last, Removed(upload, had_output)

    def enqueue(self, doc_id: str) -> None:
        """Process the queued document ``doc_id`` soon: the intake's (and a requeue's) hook."""
        if self.pool is not None:
            self.pool.enqueue(doc_id)
        if self.dispatcher is not None:
            self.dispatcher.enqueue(doc_id)

    @property
    def running(self) -> bool:
        """Whether the service is started (its workers, or its queue dispatcher, run)."""
        return self._started

    def start(self) -> None:
        """Start processing. Idempotent; not after :meth:`close`."""
        with self._lock:
            if self._closed:
                raise ConfigError("service", "closed", "a closed service cannot be started again")
            removed = self.intake.remove_stale_uploads()
            if removed:
                log.info("removed %d unfinished uploads left by a previous process", removed)
            swept = self.reaper.sweep()
            if swept.uploads or swept.outputs:
                log.info(
                    "removed %d uploads and the output of %d documents whose status was gone",
                    len(swept.uploads),
                    len(swept.outputs),
                )
            if self.pool is not None:
                self.pool.start()
            if self.dispatcher is not None:
                self.dispatcher.start()
            if self.notifier is not None:
                self.notifier.start()
            self._started = True

    def stop(self) -> None:
        """Stop taking work; running documents get ``shutdown_timeout`` seconds. Idempotent.

        Queued documents stay queued for any worker; documents still running
        when the timeout passes are requeued as a new attempt.
        The store stays open (status reads keep working until :meth:`close`).
        """
        with self._lock:
            self._started = False
            if self.notifier is not None:
                self.notifier.stop()
            if self.dispatcher is not None:
                self.dispatcher.stop()
            if self.pool is not None:
                self.pool.stop(self.settings.shutdown_timeout)

    def close(self) -> None:
        """:meth:`stop`, then close the store. Idempotent."""
        self.stop()
        with self._lock:
            if not self._closed:
                self._closed = True
                # The reaper is called on the event thread: let it have the removals so far
                # (briefly: a sweep at the next start takes whatever it could not).
                self.manager.flush_events(2.0)
                self._unsubscribe()
                if self.notifier is not None:
                    self.notifier.close()
                self.manager.close()
                if self._owns_output:
                    self.output.close()

    def __enter__(self) -> Service:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Service store={self.settings.store!r} uploads={str(self.settings.uploads)!r}>"
