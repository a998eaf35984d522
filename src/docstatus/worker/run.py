"""Running one claimed document's processor: the part every engine shares.

The local engine's threads and child processes and the RQ engine's work
horses all do the same: build the :class:`~docstatus.worker.job.Job` from the
document's metadata (its file checked to be inside the uploads folder), look
up the processor of its format, run it, and check that the metadata it
returns can be stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import UnsupportedFormatError
from ..ingest.paths import stored_path
from ..models import check_metadata
from ..output.store import OutputStore
from .job import Job, Processor, Reporter

__all__ = ["build_job", "run_processor"]


def build_job(
    doc_id: str,
    filename: str,
    metadata: Mapping[str, Any],
    uploads_dir: Path,
    data_dir: Path,
    output: OutputStore,
) -> Job:
    """The job for a document; ``UploadNotFoundError``/``PathOutsideUploadsError`` for a bad file."""
    meta = dict(metadata)
    return Job(
        doc_id=doc_id,
        filename=filename,
        format=str(meta.get("format", "")),
        path=stored_path(uploads_dir, meta),
        output=output,
        data_dir=data_dir,
        metadata=meta,
    )


def run_processor(processors: Mapping[str, Processor], job: Job, reporter: Reporter) -> dict[str, Any]:
    """Run the processor of ``job.format``; the metadata it returns, checked to be storable.

    Raises what the processor raises, ``UnsupportedFormatError`` when no
    processor handles the format, and ``TypeError``/``ValueError`` when the
    returned metadata cannot be stored (not JSON, not string keys).
    """
    processor = processors.get(job.format)
    if processor is None:
        raise UnsupportedFormatError(job.filename, f"no processor for format {job.format!r}")
    result = processor.process(job, reporter)
    return check_metadata("metadata", dict(result)) if result else {}
