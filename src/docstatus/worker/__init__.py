"""The worker: what a processor sees (:mod:`.job`) and the pool that runs processors (:mod:`.pool`).

This package's face is :mod:`.job` only (``Job``, ``Reporter``, the
``Processor`` protocol, ``failure_message``): the formats build on it, and
the pool sits above the formats, so ``WorkerPool`` is imported from
:mod:`docstatus.worker.pool`.
"""

from __future__ import annotations

from .job import Job, Processor, Reporter, can_retry, failure_message, failure_metadata

__all__ = ["Job", "Processor", "Reporter", "can_retry", "failure_message", "failure_metadata"]
