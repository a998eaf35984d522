"""Running one claimed document: the part every engine shares.

The local engine's threads and child processes and the RQ engine's work
horses all do the same: build the :class:`~docstatus.worker.job.Job` from the
document's metadata (its file checked to be inside the uploads folder), look
up the processor of its format, run it, check that the metadata it returns
can be stored, and :func:`finish` the document through its lease from the
:class:`Outcome`.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..errors import ContentChangedError, DocumentTimeoutError, LeaseLostError, UnsupportedFormatError
from ..ingest.paths import open_regular, stored_path
from ..manager import Lease
from ..models import Status, check_metadata
from ..output.store import OutputStore
from .job import Job, Processor, Reporter, failure_message, failure_metadata

__all__ = ["Outcome", "build_job", "finish", "run_processor"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What came of running one document's processor."""

    kind: Literal["done", "failed", "timeout", "lost", "crashed"]
    #: done: the metadata; failed: ``(error, failure metadata)``; crashed: how its process died.
    value: Any = None

    @classmethod
    def failed(cls, exc: BaseException) -> Outcome:
        """The outcome of a processor that raised ``exc``: its message and its failure metadata."""
        return cls("failed", (failure_message(exc), failure_metadata(exc)))


def build_job(
    doc_id: str,
    filename: str,
    metadata: Mapping[str, Any],
    uploads_dir: Path,
    data_dir: Path,
    output: OutputStore,
) -> Job:
    """The job for a document; ``UploadNotFoundError``/``PathOutsideUploadsError`` for a bad file.

    A document the intake created (``metadata["source"]`` is ``upload`` or
    ``path``) has the SHA-256 of its content as doc_id: its file is hashed
    again here, and :class:`~docstatus.errors.ContentChangedError` (not
    retryable) is raised when the content is no longer that.
    """
    meta = dict(metadata)
    path = stored_path(uploads_dir, meta)
    if meta.get("source") in _HASHED_SOURCES and _SHA256.fullmatch(doc_id):
        _check_content(uploads_dir.resolve(), path, doc_id, filename)
    return Job(
        doc_id=doc_id,
        filename=filename,
        format=str(meta.get("format", "")),
        path=path,
        output=output,
        data_dir=data_dir,
        metadata=meta,
    )


#: The intake's sources, whose documents are named by the SHA-256 of their content.
_HASHED_SOURCES = frozenset({"upload", "path"})
_SHA256 = re.compile(r"[0-9a-f]{64}")
_READ_SIZE = 1 << 20


def _check_content(uploads: Path, path: Path, doc_id: str, filename: str) -> None:
    digest = hashlib.sha256()
    with open_regular(uploads, path, path.name) as handle:
        for block in iter(lambda: handle.read(_READ_SIZE), b""):
            digest.update(block)
    found = digest.hexdigest()
    if found != doc_id:
        raise ContentChangedError(filename, doc_id, found)


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


def finish(
    lease: Lease,
    filename: str,
    outcome: Outcome,
    output: OutputStore,
    max_attempts: int,
    timeout: float | None,
) -> bool:
    """Write ``outcome`` through ``lease``; whether the document was requeued for another attempt.

    done: completed with the metadata. failed/timeout: failed with the error,
    and one WARNING line in the log. crashed: given up as an expired lease is
    (requeued as attempt + 1, or failed after ``max_attempts``). lost, or a
    lease lost meanwhile: nothing is written; the output of a document that
    someone else failed (a cancel) is discarded.
    """
    try:
        if outcome.kind == "done":
            lease.mark_completed(**outcome.value)
        elif outcome.kind in ("failed", "timeout"):
            if outcome.kind == "timeout":
                outcome = Outcome.failed(DocumentTimeoutError(lease.doc_id, timeout or 0.0))
            error, meta = outcome.value
            log.warning("document %s (%s) failed: %s [%s]", lease.doc_id, filename, error, meta["error_code"])
            lease.update_status(Status.FAILED, error=error, metadata=meta)
        elif outcome.kind == "crashed":
            log.warning(
                "document %s (%s): %s; giving it another attempt", lease.doc_id, filename, outcome.value
            )
            lease.abandon(
                f"{outcome.value[0].upper()}{outcome.value[1:]} while processing this document.",
                max_attempts=max_attempts,
            )
            again = lease.manager.get_status(lease.doc_id)
            return again is not None and again.status is Status.QUEUED
        else:
            _discard_if_cancelled(lease, output)
    except LeaseLostError:
        log.info("document %s was taken from this worker before it finished", lease.doc_id)
        _discard_if_cancelled(lease, output)
    return False


def _discard_if_cancelled(lease: Lease, output: OutputStore) -> None:
    # A document failed by someone else (a cancel) keeps no output from this attempt;
    # one requeued or taken by another worker keeps whatever that worker stores.
    status = lease.manager.get_status(lease.doc_id)
    if status is not None and status.status is Status.FAILED:
        output.delete(lease.doc_id)
