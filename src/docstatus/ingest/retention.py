"""A document's content lives as long as its status: its upload and its output go with it.

The status store knows nothing of files, so whatever removes a status (a
cleanup by age, the janitor, an on-demand removal, in this process or another
sharing the store) only logs a ``removed`` change. :class:`Reaper` follows
those changes and removes the document's stored upload and its output.

The status goes first and the content after it, so a crash in between
leaves content without a status, never a status without its content; such
leftovers are found by :meth:`Reaper.sweep`, which the service runs at start.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..events import Event
from ..manager import StatusManager
from ..output.store import OutputStore
from .intake import Intake

__all__ = ["Reaper", "Removed", "Swept"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Removed:
    """What went with one document: its upload's file name (or ``None``) and whether it had output."""

    upload: str | None
    output: bool


@dataclass(frozen=True, slots=True)
class Swept:
    """What a sweep removed: upload file names and doc_ids whose output was removed."""

    uploads: list[str]
    outputs: list[str]


class Reaper:
    """Removes the content of documents whose status is gone. Thread-safe.

    Subscribe :meth:`on_event` to the manager's events. A document that
    exists again by the time its content is looked at (the same content
    uploaded anew) keeps it.
    """

    #: Files younger than this are left to the intake by :meth:`sweep` (seconds).
    SWEEP_GRACE = 600.0
    #: Most upload folder entries, and most output documents, one sweep looks at.
    SWEEP_LIMIT = 100_000

    def __init__(self, manager: StatusManager, intake: Intake, output: OutputStore) -> None:
        self.manager = manager
        self.intake = intake
        self.output = output

    def remove(self, doc_id: str, upload: str | None = None) -> Removed:
        """Remove the upload and the output of ``doc_id`` if it has no status; what was removed.

        ``upload`` is the upload's file name when known (see :meth:`Intake.upload_of`).
        """
        upload = self.intake.remove_upload(doc_id, upload)
        output = self.manager.get_status(doc_id) is None and self.output.delete(doc_id)
        return Removed(upload, output)

    def on_event(self, event: Event) -> None:
        """The subscriber: a ``removed`` change removes the document's content."""
        if event["type"] == "removed":
            removed = self.remove(event["doc_id"])
            if removed.upload or removed.output:
                log.debug("removed the content of %s: %s", event["doc_id"], removed)

    def sweep(self) -> Swept:
        """Remove uploads and output left without a status (by a crash, or before this existed).

        Bounded: looks at up to :attr:`SWEEP_LIMIT` folder entries and as many
        stored documents. Uploads younger than :attr:`SWEEP_GRACE` seconds are
        left alone (they may be being accepted by another process).
        """
        uploads = self.intake.orphans(self.SWEEP_GRACE, self.SWEEP_LIMIT)
        outputs: list[str] = []
        after, seen = "", 0
        while seen < self.SWEEP_LIMIT and (batch := self.output.doc_ids(after, 1000)):
            seen, after = seen + len(batch), batch[-1]
            outputs.extend(d for d in batch if self.manager.get_status(d) is None and self.output.delete(d))
        return Swept(uploads, outputs)
