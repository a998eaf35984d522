"""The contract's four acceptance tests, verbatim, each with a fresh manager.

Each test body below is copied unchanged from
``shared/spec/status-manager.contract.md``; only the set-up line that gives it
a fresh ``manager`` (DESIGN §2: run in one sequence they contradict each
other) and the imports are added. They run over every store.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from docstatus import ProcessingStatus, StatusManager


def test_1_thread_safe_concurrent_updates(make_manager: Callable[..., StatusManager]) -> None:
    manager = make_manager()
    # Test 1: Thread-safe concurrent updates
    import threading

    doc_id = manager.create_status("abc123", "test.pdf", {})

    def update_worker():  # type: ignore[no-untyped-def]
        for i in range(100):
            manager.update_status(doc_id, status="parsing", progress=0.1)

    threads = [threading.Thread(target=update_worker) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    status = manager.get_status(doc_id)
    assert status is not None
    assert status.progress == 0.1


def test_2_model_validation() -> None:
    # Test 2: Model validation
    status = ProcessingStatus(
        doc_id="abc123",
        filename="test.pdf",
        status="embedding_visual",
        progress=0.65,
        stage="visual_embeddings",
        started_at=datetime.utcnow(),
        updated_at=datetime.utcnow(),
        elapsed_time=45.0,
    )
    assert status.progress >= 0.0 and status.progress <= 1.0
    assert status.status in [
        "queued",
        "parsing",
        "embedding_visual",
        "embedding_text",
        "storing",
        "completed",
        "failed",
    ]


def test_3_list_active_documents(make_manager: Callable[..., StatusManager]) -> None:
    manager = make_manager()
    # Test 3: List active documents
    manager.create_status("doc1", "file1.pdf", {})
    manager.create_status("doc2", "file2.pdf", {})
    manager.mark_completed("doc1")

    active = manager.list_active()
    assert len(active) == 1
    assert active[0].doc_id == "doc2"


def test_4_cleanup_old_entries(make_manager: Callable[..., StatusManager]) -> None:
    manager = make_manager()
    # Test 4: Cleanup old entries
    import time

    manager.create_status("old_doc", "old.pdf", {})
    manager.mark_completed("old_doc")
    time.sleep(2)

    removed = manager.cleanup_old_entries(max_age_seconds=1)
    assert removed == 1
    assert manager.get_status("old_doc") is None
