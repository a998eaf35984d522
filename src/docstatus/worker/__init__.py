"""The worker: what a processor sees (:mod:`.job`) and the pool that runs processors (:mod:`.pool`)."""

from __future__ import annotations

from .job import Job, Processor, Reporter

__all__ = ["Job", "Processor", "Reporter"]
