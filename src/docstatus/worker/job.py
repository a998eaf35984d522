"""Processors: what turns one document's file into stored output, and how they report progress.

A processor is any object with ``process(job, reporter)``. It reads
``job.path``, reports each stage through the :class:`Reporter` (which moves
the document through the lifecycle with progress computed by the manager),
stores its output in ``job.output`` and returns metadata for the completed
status (e.g. ``{"num_chunks": 12}``). It signals failure by raising: the
worker pool marks the document failed with :func:`failure_message` (a
sentence for people) and :func:`failure_metadata` (the machine-readable
``error_code`` and whether a retry could succeed, ``retryable``).

The worker pool looks processors up by format name (as
:func:`docstatus.formats.detect_format` names it) in the mapping it is
given, usually :func:`docstatus.formats.default_processors`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..errors import StatusError
from ..manager import MAX_ERROR, StatusManager
from ..models import ProcessingStatus, Status
from ..output.store import OutputStore

__all__ = [
    "ERROR_CODE",
    "RETRYABLE",
    "Job",
    "Processor",
    "Reporter",
    "StatusWriter",
    "can_retry",
    "failure_message",
    "failure_metadata",
]

#: The metadata keys a failure sets beside the error message: its code, and whether to offer a retry.
ERROR_CODE = "error_code"
RETRYABLE = "retryable"


class StatusWriter(Protocol):
    """Where a reporter's changes go: a :class:`~docstatus.manager.Lease`, or a link to the parent process.

    Raises ``LeaseLostError`` once the document is no longer this worker's;
    the processor then stops (the error propagates out of the report).
    """

    def update_status(self, status: str, progress: float | None = None, **fields: Any) -> None: ...


@dataclass(frozen=True, slots=True)
class Job:
    """One document to process: its identity, its file (checked: inside uploads), where output goes."""

    doc_id: str
    filename: str
    format: str
    path: Path
    output: OutputStore
    data_dir: Path
    metadata: dict[str, Any] = field(default_factory=dict)


class Reporter:
    """Moves one document through the lifecycle as its processor works. Use from the processor's thread.

    Each method is one ``manager.update_status`` with ``progress=None``, so
    the manager computes progress from the contract's table (pages for the
    visual stage, chunks for the text stage). A processor that has no visual
    stage goes straight from :meth:`parsing` to :meth:`text_chunk`. The
    worker pool completes the document after ``process`` returns.
    """

    def __init__(
        self,
        manager: StatusManager | None,
        doc_id: str,
        *,
        checkpoint: Callable[[], None] | None = None,
        writer: StatusWriter | None = None,
        claimed: bool = False,
    ) -> None:
        if writer is None and manager is None:
            raise TypeError("a Reporter needs a manager or a writer")
        self.manager = manager
        self.doc_id = doc_id
        # Called before every report: raises to stop a document the pool gave up on.
        self._checkpoint = checkpoint
        # A worker's writes go through its lease (fenced); library use writes to the manager.
        self._writer = writer
        # A claimed document is already parsing: a bare parsing() then has nothing to write.
        self._parsing = claimed

    def _update(self, status: Status, **fields: Any) -> None:
        self.check()
        self._parsing = False
        if self._writer is not None:
            self._writer.update_status(status, None, **fields)
        else:
            assert self.manager is not None
            self.manager.update_status(self.doc_id, status, None, **fields)

    def check(self) -> None:
        """Raise if the pool gave up on this document (its time limit passed, or the pool stopped).

        Every report checks this; call it in long loops between reports so a
        document over its time limit stops promptly.
        """
        if self._checkpoint is not None:
            self._checkpoint()

    def parsing(self, *, metadata: Mapping[str, Any] | None = None) -> None:
        """The file is being read; ``metadata`` (e.g. the detected encoding) is merged into the status."""
        if metadata:
            self._update(Status.PARSING, metadata=dict(metadata))
        elif self._parsing:
            self.check()
        else:
            self._update(Status.PARSING)

    def visual_page(self, page: int, total: int) -> None:
        """``page`` of ``total`` pages has been embedded (progress 0.1 to 0.6)."""
        self._update(Status.EMBEDDING_VISUAL, page=page, total_pages=total)

    def text_chunk(self, chunk: int, total: int) -> None:
        """``chunk`` of ``total`` text chunks has been embedded (progress 0.6 to 0.9)."""
        self._update(Status.EMBEDDING_TEXT, chunk=chunk, total_chunks=total)

    def storing(self) -> None:
        """The output is being stored (progress 0.95)."""
        self._update(Status.STORING)


@runtime_checkable
class Processor(Protocol):
    """Processes one document (see the module docstring). Must be safe to call from several threads."""

    def process(self, job: Job, reporter: Reporter) -> Mapping[str, Any] | None:
        """Process ``job``, reporting through ``reporter``; returns metadata for the completed status."""
        ...


def failure_message(exc: BaseException) -> str:
    """The error a failed document gets: the exception's message, for people (within the manager's limit).

    The exception's class is not in it (see :func:`failure_metadata`); an
    exception without a message reads "processing failed unexpectedly".
    """
    message = str(exc).strip() or "processing failed unexpectedly"
    return message if len(message) <= MAX_ERROR else message[: MAX_ERROR - 1] + "…"


def failure_metadata(exc: BaseException) -> dict[str, Any]:
    """What a failed document's metadata records about ``exc``: ``error_code`` and ``retryable``.

    ``error_code`` is a docstatus error's ``code`` (``DOCUMENT_UNREADABLE``...),
    otherwise the exception's class name; ``retryable`` is False when processing
    the same file again can only fail the same way (damaged, encrypted,
    unsupported, over a limit), see :attr:`docstatus.errors.StatusError.retryable`.
    """
    if isinstance(exc, StatusError):
        return {ERROR_CODE: exc.code, RETRYABLE: bool(exc.retryable)}
    return {ERROR_CODE: type(exc).__name__, RETRYABLE: True}


def can_retry(status: ProcessingStatus) -> bool:
    """Whether a retry of ``status``'s document is worth offering: it failed, and not for good."""
    return status.status is Status.FAILED and status.metadata.get(RETRYABLE) is not False
