"""``docstatus worker``: RQ worker processes on any machine, for a ``docstatus serve --queue`` service.

Runs ``--processes`` RQ workers on the ``docstatus`` queue (see
:mod:`docstatus.worker.rq_engine`). The machine needs the status store
(Redis), the queue (Redis), the uploads folder the service writes (a shared
folder when the service runs elsewhere) and a data folder for the output.
SIGTERM or Ctrl-C stops it gracefully: each worker finishes its document for
up to ``DOCSTATUS_SHUTDOWN_TIMEOUT`` seconds.
"""

from __future__ import annotations

import argparse
import os
import signal
from typing import Any

from ..errors import ConfigError, StatusError
from ..settings import ServiceSettings, cpu_count
from .args import fail, number

__all__ = ["add_parser"]

_processes = number(int, "an integer", lambda v: 1 <= v <= 256, "between 1 and 256")


def add_parser(commands: Any) -> None:
    """Add ``worker`` to the ``commands`` of the main parser."""
    worker = commands.add_parser(
        "worker",
        help="run RQ worker processes for a service started with --queue",
        description=(
            "Process the documents a `docstatus serve --queue URL` service enqueues, on this machine. "
            "Any number of worker commands on any number of machines may share one queue; each "
            "document is claimed under a lease in the status store, so it is processed once, and a "
            "lost worker's documents are retried. Options can also be set with DOCSTATUS_STORE, "
            "DOCSTATUS_QUEUE, DOCSTATUS_UPLOADS, DOCSTATUS_DATA, DOCSTATUS_LEASE_SECONDS, "
            "DOCSTATUS_MAX_ATTEMPTS, DOCSTATUS_DOCUMENT_TIMEOUT and DOCSTATUS_PROCESSORS "
            "(module:callable returning the processors)."
        ),
    )
    worker.add_argument("--store", help="status store URL (a redis:// URL shared with the service)")
    worker.add_argument(
        "--queue", help="RQ queue URL (redis://...; default: DOCSTATUS_QUEUE, else the store)"
    )
    worker.add_argument("--uploads", help="the service's uploads folder (shared with it)")
    worker.add_argument("--data-dir", help="data folder for the pipeline output")
    worker.add_argument(
        "--processes", type=_processes, help="RQ worker processes, one document each (default: CPU count)"
    )
    worker.set_defaults(handler=_worker)


def _settings(args: argparse.Namespace) -> ServiceSettings:
    settings = ServiceSettings.from_env(
        store=args.store, queue=args.queue, uploads=args.uploads, data_dir=args.data_dir
    )
    queue = settings.queue
    if not queue and settings.store.startswith(("redis://", "rediss://")):
        queue = settings.store
    if not queue:
        raise ConfigError("queue", None, "give the RQ queue with --queue redis://host:6379/0")
    return settings.replace(queue=queue)


def _export(settings: ServiceSettings) -> None:
    # The RQ worker processes and their work horses read their settings from here.
    os.environ.update(
        DOCSTATUS_STORE=settings.store,
        DOCSTATUS_UPLOADS=str(settings.uploads),
        DOCSTATUS_DATA=str(settings.data_dir),
        DOCSTATUS_LEASE_SECONDS=repr(settings.lease_seconds),
        DOCSTATUS_MAX_ATTEMPTS=str(settings.max_attempts),
        DOCSTATUS_DOCUMENT_TIMEOUT=repr(settings.document_timeout),
        DOCSTATUS_SHUTDOWN_TIMEOUT=repr(settings.shutdown_timeout),
        DOCSTATUS_PROGRESS_INTERVAL=repr(settings.progress_interval),
    )


def _worker(args: argparse.Namespace) -> int:
    try:
        settings = _settings(args)
        from ..worker.rq_engine import WorkerService

        _export(settings)
        settings.uploads.mkdir(parents=True, exist_ok=True)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        assert settings.queue is not None
        service = WorkerService(settings, settings.queue, args.processes or cpu_count())
        service.check()
    except ConfigError as exc:
        return fail("worker", str(exc))
    except ImportError as exc:
        return fail("worker", f"{exc}; install it with: pip install 'docstatus[worker]'")
    except (StatusError, OSError) as exc:
        return fail("worker", str(exc), status=1)

    def stop(signum: int, frame: object) -> None:
        service.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    service.run()
    return 0
