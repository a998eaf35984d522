"""The child process that runs documents for the local engine, one at a time.

A pool slot starts one child (spawn or forkserver: never a ``fork()`` of the
threaded server) and keeps it for document after document. The parent claims
each document and renews its lease; the child runs the processor. With a
shared store (SQLite, Redis) the child writes progress itself, fenced by the
lease's epoch; with a store only the parent can see (``memory://``) every
report goes through the pipe and the parent writes it. The parent finishes the
document (completed or failed) from the child's answer, so a child that dies
mid-way (SIGKILL, a segfault, the out-of-memory killer) is noticed by its
parent as a closed pipe.

Messages on the pipe, parent to child: a :class:`Task`, or ``None`` to stop.
Child to parent: ``("write", status, progress, fields)`` (answered with
``("ok",)``, ``("lost",)`` or ``("error", message, failure metadata)``),
then one of ``("done", metadata)``, ``("failed", (message, failure
metadata))`` or ``("lost",)``.
"""

from __future__ import annotations

import logging
import os
import pickle
import resource
import signal
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from ..errors import LeaseLostError, MemoryLimitError, StatusError
from ..manager import Lease, StatusManager
from ..output.store import OutputStore
from .job import Processor, Reporter
from .run import Outcome, build_job, run_processor

__all__ = ["ChildConfig", "Task", "child_main"]


@dataclass(frozen=True)
class ChildConfig:
    """What every child of one pool needs; sent once, when the child starts."""

    processors: Mapping[str, Processor]
    uploads_dir: Path
    data_dir: Path
    output_path: Path
    #: The store to write progress to directly; ``None``: through the parent.
    store_url: str | None
    #: The level of the parent's ``docstatus`` logger: the child logs at the same level.
    log_level: int = logging.WARNING
    #: The address space a child may use, in MiB (``RLIMIT_AS``); ``None``: no limit of its own.
    memory_mb: int | None = None
    #: The manager's ``progress_interval`` for the child's own writes.
    progress_interval: float = 0.1


@dataclass(frozen=True)
class Task:
    """One claimed document for the child to run."""

    doc_id: str
    filename: str
    epoch: int
    worker: str
    seconds: float
    metadata: dict[str, Any] = field(default_factory=dict)


class _ParentError(StatusError):
    """The parent refused a report; ``failure`` is the document's failure as the parent saw it."""

    def __init__(self, failure: tuple[str, dict[str, Any]]) -> None:
        super().__init__(failure[0])
        self.failure = failure


class _ParentLink:
    """A :class:`~docstatus.worker.job.StatusWriter` whose writes the parent makes (``memory://``)."""

    def __init__(self, conn: Connection, task: Task) -> None:
        self._conn = conn
        self._task = task

    def update_status(self, status: str, progress: float | None = None, **fields: Any) -> None:
        self._conn.send(("write", str(status), progress, fields))
        reply = self._conn.recv()
        if reply[0] == "lost":
            raise LeaseLostError(self._task.doc_id, self._task.epoch)
        if reply[0] == "error":
            raise _ParentError((reply[1], reply[2]))


#: The exit status of a child that found its parent gone.
ORPHANED = 70


def _watch_parent(lifeline: Connection) -> None:
    # An orphan must not go on processing: its parent no longer renews the lease. Only the
    # parent holds the other end of the lifeline, so it reads as closed once the parent is
    # gone, however it died (the child's own parent is the fork server, not the pool).
    wait([lifeline])
    os._exit(ORPHANED)


class _LevelFirst(logging.Formatter):
    """``WARNING:  message``: the shape of the server's own lines (uvicorn's), on the shared stderr."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname}:{' ' * (8 - len(record.levelname))} {super().format(record)}"


def _log_to_stderr(level: int) -> None:
    # The child's stderr is its parent's (the server log): its processors' lines go there too.
    handler = logging.StreamHandler()
    handler.setFormatter(_LevelFirst("%(message)s"))
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(handler)
        root.setLevel(level)


def _load(conn: Connection, pickled: bytes) -> tuple[ChildConfig, StatusManager | None, OutputStore] | None:
    # Loading the processors runs their modules' code: a failure is told to the parent, which
    # refuses to start rather than fail every document one crash at a time.
    try:
        config: ChildConfig = pickle.loads(pickled)
        _log_to_stderr(config.log_level)
        _limit_memory(config.memory_mb)
        manager = (
            StatusManager(store=config.store_url, progress_interval=config.progress_interval)
            if config.store_url
            else None
        )
        output = OutputStore(config.output_path)
    except Exception as exc:
        conn.send(("broken", f"{type(exc).__name__}: {exc}"))
        return None
    conn.send(("ready",))
    return config, manager, output


def _limit_memory(memory_mb: int | None) -> None:
    # A parser that blows up then gets a MemoryError (the document fails with a reason) instead
    # of taking the machine's memory until the out-of-memory killer picks some process.
    if memory_mb is None:
        return
    limit = memory_mb * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def child_main(conn: Connection, lifeline: Connection, pickled: bytes) -> None:
    """Run tasks from ``conn`` until told to stop or the parent goes away.

    ``pickled`` is the :class:`ChildConfig`; the child answers ``("ready",)``
    once it is loaded, or ``("broken", message)`` and exits.
    """
    # Ctrl-C reaches the whole process group: the parent decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(lifeline,), daemon=True).start()
    loaded = _load(conn, pickled)
    if loaded is None:
        return
    config, manager, output = loaded
    try:
        while True:
            try:
                task = conn.recv()
            except (EOFError, OSError):
                return
            if task is None:
                return
            conn.send(_run(conn, config, manager, output, task))
    finally:
        output.close()
        if manager is not None:
            manager.close()


def _run(
    conn: Connection, config: ChildConfig, manager: StatusManager | None, output: OutputStore, task: Task
) -> tuple[Any, ...]:
    writer = (
        Lease(task.doc_id, task.epoch, task.worker, task.seconds, manager)
        if manager is not None
        else _ParentLink(conn, task)
    )
    try:
        job = build_job(
            task.doc_id, task.filename, task.metadata, config.uploads_dir, config.data_dir, output
        )
        result = run_processor(
            config.processors, job, Reporter(manager, task.doc_id, writer=writer, claimed=True)
        )
    except LeaseLostError:
        return ("lost",)
    except _ParentError as exc:
        return ("failed", exc.failure)
    except MemoryError:
        # The limit of _limit_memory: by now the processor's memory is released again.
        return ("failed", Outcome.failed(MemoryLimitError(task.filename, config.memory_mb)).value)
    except Exception as exc:
        return ("failed", Outcome.failed(exc).value)
    return ("done", result)
