"""Random operation sequences against a tiny reference model of the lifecycle (hypothesis)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from docstatus import (
    DocumentNotFoundError,
    DuplicateDocumentError,
    InvalidTransitionError,
    StatusManager,
)

IDS = st.sampled_from(["a", "b", "c"])
STATUSES = st.sampled_from(
    ["queued", "parsing", "embedding_visual", "embedding_text", "storing", "completed", "failed"]
)
PROGRESS = st.one_of(st.none(), st.floats(0.0, 1.0))

# Written out here, independently of docstatus.models, so that a wrong table fails.
NEXT = {
    "queued": {"parsing", "failed"},
    "parsing": {"embedding_visual", "embedding_text", "failed"},
    "embedding_visual": {"embedding_text", "failed"},
    "embedding_text": {"storing", "failed"},
    "storing": {"completed", "failed"},
    "completed": set(),
    "failed": set(),
}
FIXED = {"queued": 0.0, "parsing": 0.1, "embedding_visual": 0.1, "embedding_text": 0.6, "storing": 0.95}


@dataclass
class Doc:
    status: str = "queued"
    progress: float = 0.0
    attempt: int = 1
    error: str | None = None


class Lifecycle(RuleBasedStateMachine):
    """Drives the memory store; subclasses drive other stores with the same rules."""

    def make_manager(self) -> StatusManager:
        return StatusManager(cleanup_interval_seconds=None)

    def __init__(self) -> None:
        super().__init__()
        self.manager = self.make_manager()
        self.model: dict[str, Doc] = {}

    def teardown(self) -> None:
        self.manager.close()

    @rule(doc_id=IDS)
    def create(self, doc_id: str) -> None:
        if doc_id in self.model:
            with pytest.raises(DuplicateDocumentError):
                self.manager.create_status(doc_id, "f.pdf", {})
            return
        self.manager.create_status(doc_id, "f.pdf", {})
        self.model[doc_id] = Doc()

    def _expect_missing(self, doc_id: str) -> bool:
        return doc_id not in self.model

    @rule(doc_id=IDS, status=STATUSES, progress=PROGRESS)
    def update(self, doc_id: str, status: str, progress: float | None) -> None:
        extra = {"error": "x"} if status == "failed" else {}
        if doc_id not in self.model:
            with pytest.raises(DocumentNotFoundError):
                self.manager.update_status(doc_id, status, progress, **extra)
            return
        doc = self.model[doc_id]
        legal = status in NEXT[doc.status] or (
            status == doc.status and doc.status not in ("completed", "failed")
        )
        if not legal:
            with pytest.raises(InvalidTransitionError):
                self.manager.update_status(doc_id, status, progress, **extra)
            return
        self.manager.update_status(doc_id, status, progress, **extra)
        doc.status = status
        if status == "completed":
            doc.progress = 1.0
        elif status == "failed":
            doc.error = "x"
        else:
            wanted = FIXED[status] if progress is None else progress
            doc.progress = max(doc.progress, wanted)

    @rule(doc_id=IDS, fail=st.booleans())
    def finish(self, doc_id: str, fail: bool) -> None:
        doc = self.model.get(doc_id)
        call = (
            (lambda: self.manager.mark_failed(doc_id, "e"))
            if fail
            else (lambda: self.manager.mark_completed(doc_id))
        )
        if doc is None:
            with pytest.raises(DocumentNotFoundError):
                call()
            return
        if doc.status in ("completed", "failed"):
            with pytest.raises(InvalidTransitionError):
                call()
            return
        call()
        doc.status = "failed" if fail else "completed"
        doc.progress = doc.progress if fail else 1.0
        doc.error = "e" if fail else None

    @rule(doc_id=IDS)
    def requeue(self, doc_id: str) -> None:
        doc = self.model.get(doc_id)
        if doc is None or doc.status != "failed":
            with pytest.raises((DocumentNotFoundError, InvalidTransitionError)):
                self.manager.requeue(doc_id)
            return
        self.manager.requeue(doc_id)
        self.model[doc_id] = Doc(attempt=doc.attempt + 1)

    @invariant()
    def matches_the_model(self) -> None:
        for doc_id, doc in self.model.items():
            status = self.manager.require_status(doc_id)
            assert status.status == doc.status
            assert status.progress == pytest.approx(doc.progress)
            assert status.error == doc.error
            assert status.metadata.get("attempt", 1) == doc.attempt
            assert (status.completed_at is not None) == (doc.status in ("completed", "failed"))
        counts = self.manager.count_by_status()
        assert counts["total"] == len(self.model)
        active = {s.doc_id for s in self.manager.list_active()}
        assert active == {d for d, doc in self.model.items() if doc.status not in ("completed", "failed")}


class SQLiteLifecycle(Lifecycle):
    def make_manager(self) -> StatusManager:
        self._folder = tempfile.TemporaryDirectory()
        return StatusManager(store=f"sqlite:///{self._folder.name}/status.db", cleanup_interval_seconds=None)

    def teardown(self) -> None:
        super().teardown()
        self._folder.cleanup()


Lifecycle.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
SQLiteLifecycle.TestCase.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
test_lifecycle_against_reference_model = Lifecycle.TestCase
test_sqlite_lifecycle_against_reference_model = SQLiteLifecycle.TestCase
