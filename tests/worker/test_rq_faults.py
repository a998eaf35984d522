"""Faults, for real: killed and stopped processes, poison documents, restarts, cancels, shared files.

The RQ tests run a real redis-server, ``docstatus serve --queue`` replicas and
``docstatus worker`` commands (see ``_cluster.Cluster``), and send real
signals to the work horse (the process named in ``metadata["worker"]``, in a
process group of its own), to its parent RQ worker process, or to a whole
worker command. The local-engine tests run real ``docstatus serve``
processes. Documents wait mid-way on gate files (``_processors.Held``), so
nothing here waits for time to pass: every wait is for a condition, with a
deadline.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from _cluster import Cluster, alive, claims, parent_of
from _documents import numbered_pages, pdf_bytes
from docstatus import StatusManager
from docstatus.output import OutputStore
from docstatus.worker.pool import OUTPUT_FILE
from helpers import wait_until
from servers import GATED, Server

pytestmark = pytest.mark.timeout(60)

DEADLINE = 20.0
TOKEN = "fault-test-token"
#: A text document long enough to be held half-way through its text embedding.
TEXT = b"".join(f"Paragraph {i}. ".encode() * 40 + b"\n\n" for i in range(12))


def _gates(root: Path) -> Path:
    gates = root / "gates"
    gates.mkdir(exist_ok=True)
    return gates


def _held_env(gates: Path) -> dict[str, str]:
    return {"DOCSTATUS_PROCESSORS": "_processors:held_processors", "TEST_GATES": str(gates)}


def _upload(url: str, name: str, content: bytes, headers: dict[str, str] | None = None) -> str:
    answer = httpx.post(f"{url}/uploads", files={"file": (name, content)}, headers=headers)
    assert answer.status_code in (200, 201, 202), answer.text
    doc_id: str = answer.json()["doc_id"]
    return doc_id


def _held_upload(url: str, gates: Path, name: str, content: bytes, **kw: Any) -> str:
    (gates / f"{name}.hold").write_text("0.5")
    return _upload(url, name, content, **kw)


def _holder(manager: StatusManager, doc_id: str, stage: str = "embedding_text") -> tuple[str, int]:
    """Once the document waits at its gate in ``stage``: ``metadata["worker"]`` and that process id."""
    wait_until(lambda: manager.require_status(doc_id).status == stage, DEADLINE)
    holder: str = manager.require_status(doc_id).metadata["worker"]
    return holder, int(holder.rpartition(":")[2])


def _last_seq(manager: StatusManager) -> int:
    changes = manager.changes_since(0, 100_000)
    return int(changes[-1]["seq"]) if changes else 0


def _changes_after(manager: StatusManager, doc_id: str, seq: int) -> list[dict[str, Any]]:
    return [e["status"] for e in manager.changes_since(seq, 100_000) if e["doc_id"] == doc_id and e["status"]]


def _finished(manager: StatusManager, doc_id: str) -> bool:
    status = manager.get_status(doc_id)
    return status is not None and status.is_finished


def _wait_finished(cluster: Cluster, doc_id: str, timeout: float = DEADLINE) -> None:
    try:
        wait_until(lambda: _finished(cluster.manager, doc_id), timeout)
    except AssertionError:
        raise AssertionError(f"{cluster.manager.get_status(doc_id)}\n{cluster.logs()}") from None


def _output(data: Path) -> OutputStore:
    return OutputStore(data / OUTPUT_FILE)


# -- the RQ engine ---------------------------------------------------------------------------


def test_a_killed_work_horse_is_requeued_at_once_not_at_lease_expiry(
    cluster: Cluster, tmp_path: Path
) -> None:
    gates = _gates(tmp_path)
    server = cluster.serve()
    # A 20 s lease: a retry within 10 s can only come from the RQ worker noticing its horse die.
    cluster.worker(DOCSTATUS_LEASE_SECONDS="20", **_held_env(gates))
    doc_id = _held_upload(server.url, gates, "held.txt", TEXT)
    holder, horse = _holder(cluster.manager, doc_id)
    os.kill(horse, signal.SIGKILL)  # only the horse: its RQ worker and the worker command live on
    killed = time.monotonic()
    wait_until(lambda: cluster.manager.require_status(doc_id).metadata.get("attempt") == 2, 10.0)
    (gates / "held.txt.hold").unlink()
    _wait_finished(cluster, doc_id, timeout=10.0 - (time.monotonic() - killed))
    status = cluster.manager.require_status(doc_id)
    assert status.status == "completed", (status.error, cluster.logs())
    assert status.metadata["attempt"] == 2 and status.metadata["worker"] != holder
    recovery = status.metadata["recovery"]
    assert holder in recovery and "work horse was killed by SIGKILL" in recovery, recovery
    assert claims(cluster.manager, doc_id) == 2


def test_an_orphaned_horse_stops_and_its_document_is_retried_after_lease_expiry(
    cluster: Cluster, tmp_path: Path
) -> None:
    gates = _gates(tmp_path)
    server = cluster.serve()
    command = cluster.worker(**_held_env(gates))
    doc_id = _held_upload(server.url, gates, "orphan.txt", TEXT)
    holder, horse = _holder(cluster.manager, doc_id)
    rq_worker = parent_of(horse)
    assert rq_worker != command.pid and parent_of(rq_worker) == command.pid
    seq = _last_seq(cluster.manager)
    os.kill(rq_worker, signal.SIGKILL)  # only the horse's parent: the worker command starts another
    wait_until(lambda: not alive(horse), DEADLINE)  # the orphan noticed, and stopped by itself
    (gates / "orphan.txt.hold").unlink()
    _wait_finished(cluster, doc_id, timeout=12.0)  # lease 1.5 s, janitor every 0.5 s
    status = cluster.manager.require_status(doc_id)
    assert status.status == "completed", (status.error, cluster.logs())
    assert status.metadata["attempt"] == 2
    assert holder in status.metadata["recovery"] and "was lost" in status.metadata["recovery"]
    assert claims(cluster.manager, doc_id) == 2
    # Nothing the orphan might still write is kept: once its lease expired and the document was
    # requeued, every change is the retry's.
    after = _changes_after(cluster.manager, doc_id, seq)
    requeued = next(i for i, c in enumerate(after) if c["status"] == "queued")
    assert after[requeued]["metadata"]["attempt"] == 2, after[requeued]
    assert all(change["metadata"].get("worker") != holder for change in after[requeued:])


def test_a_stopped_worker_resumed_past_its_lease_has_its_writes_refused(
    cluster: Cluster, tmp_path: Path
) -> None:
    gates = _gates(tmp_path)
    server = cluster.serve()
    stopped = cluster.worker(**_held_env(gates))
    doc_id = _held_upload(server.url, gates, "frozen.txt", TEXT)
    holder, horse = _holder(cluster.manager, doc_id)
    os.killpg(stopped.pid, signal.SIGSTOP)  # the worker command and its RQ workers
    os.kill(horse, signal.SIGSTOP)  # and the horse, in its own process group
    try:
        (gates / "frozen.txt.hold").unlink()  # the stopped horse would go on at once, were it running
        cluster.worker(**_held_env(gates))  # another machine's worker takes the retry
        _wait_finished(cluster, doc_id)
        retried = cluster.manager.require_status(doc_id)
        assert retried.status == "completed", (retried.error, cluster.logs())
        assert retried.metadata["attempt"] == 2 and retried.metadata["worker"] != holder
        with _output(tmp_path / "data") as output:
            stored = output.get(doc_id)
        assert stored is not None
        seq = _last_seq(cluster.manager)
    finally:
        os.kill(horse, signal.SIGCONT)
        os.killpg(stopped.pid, signal.SIGCONT)
    try:
        wait_until(lambda: not alive(horse), DEADLINE)  # refused (LeaseLostError), it exited
    except AssertionError:
        state = Path(f"/proc/{horse}/stat").read_text(errors="replace")
        stack = Path(f"/proc/{horse}/wchan").read_text(errors="replace")
        raise AssertionError(f"the stale horse is still alive: {state} {stack}\n{cluster.logs()}") from None
    assert _changes_after(cluster.manager, doc_id, seq) == []
    final = cluster.manager.require_status(doc_id)
    assert final.status == "completed" and final.metadata["attempt"] == 2
    assert final.metadata["worker"] == retried.metadata["worker"]
    with _output(tmp_path / "data") as output:
        kept = output.get(doc_id)
        assert output.count() == 1
    assert kept == stored  # the retry's output, stored once, never replaced by the stale horse
    assert [chunk.index for chunk in stored.chunks] == list(range(len(stored.chunks)))


def test_a_document_that_kills_every_horse_fails_after_max_attempts_and_never_loops(
    cluster: Cluster, tmp_path: Path
) -> None:
    server = cluster.serve(DOCSTATUS_MAX_ATTEMPTS="3")
    cluster.worker(DOCSTATUS_PROCESSORS="_processors:killing_processors", DOCSTATUS_MAX_ATTEMPTS="3")
    doc_id = _upload(server.url, "poison.txt", b"kills whoever parses it")
    _wait_finished(cluster, doc_id)
    status = cluster.manager.require_status(doc_id)
    assert status.status == "failed", cluster.logs()
    assert status.metadata["attempt"] == 3
    assert status.error is not None
    assert "gave up after 3 attempts" in status.error and "SIGKILL" in status.error, status.error
    # The same worker goes on to the next document, and the poison is not taken again.
    after = _upload(server.url, "after.md", b"# A healthy document\n\nIt parses.\n")
    _wait_finished(cluster, after)
    assert cluster.manager.require_status(after).status == "completed", cluster.logs()
    assert claims(cluster.manager, doc_id) == 3
    assert cluster.manager.require_status(doc_id).status == "failed"


def test_restarting_every_replica_leaves_a_held_document_alone(cluster: Cluster, tmp_path: Path) -> None:
    gates = _gates(tmp_path)
    replicas = [cluster.serve(), cluster.serve()]
    cluster.worker(**_held_env(gates))
    doc_id = _held_upload(replicas[0].url, gates, "kept.txt", TEXT)
    holder, _ = _holder(cluster.manager, doc_id)
    [lease] = [e for e in cluster.manager.leases() if e.doc_id == doc_id]
    for replica in replicas:
        replica.stop(signal.SIGTERM)  # and waits until it has exited
    restarted = [cluster.serve(), cluster.serve()]
    # The new replicas' janitors have run for two lease periods: the lease was renewed through them.
    since = time.time()
    wait_until(lambda: _lease_expiry(cluster, doc_id) > since + 2 * 1.5, DEADLINE)
    for replica in restarted:
        body = httpx.get(f"{replica.url}/status/{doc_id}").json()
        assert body["status"] == "embedding_text", body
        assert body["metadata"]["worker"] == holder and body["metadata"]["attempt"] == 1
    assert [e.epoch for e in cluster.manager.leases() if e.doc_id == doc_id] == [lease.epoch]
    (gates / "kept.txt.hold").unlink()
    _wait_finished(cluster, doc_id)
    status = cluster.manager.require_status(doc_id)
    assert status.status == "completed" and status.metadata["attempt"] == 1, (status, cluster.logs())
    assert status.metadata["worker"] == holder and claims(cluster.manager, doc_id) == 1


def _lease_expiry(cluster: Cluster, doc_id: str) -> float:
    return max([e.expires for e in cluster.manager.leases() if e.doc_id == doc_id], default=0.0)


# -- cancel mid-PDF, on both engines ---------------------------------------------------------

PDF = pdf_bytes(numbered_pages(6))
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: Every report written: a page report then meets the cancel at once (by default one held within
#: the progress interval is refused when it is written, and the next report stops the worker).
EVERY_REPORT = {"DOCSTATUS_PROGRESS_INTERVAL": "0"}


def _cancel_mid_pdf(url: str, manager: StatusManager, gates: Path) -> tuple[str, int, int]:
    """Hold a 6-page PDF after page 3, cancel it, let it go: its id, the holder's pid, the seq before."""
    doc_id = _held_upload(url, gates, "report.pdf", PDF, headers=AUTH)
    _, pid = _holder(manager, doc_id, stage="embedding_visual")
    wait_until(lambda: manager.require_status(doc_id).page == 3, DEADLINE)
    seq = _last_seq(manager)
    assert httpx.post(f"{url}/status/{doc_id}/cancel").status_code == 401  # the token is needed
    answer = httpx.post(f"{url}/status/{doc_id}/cancel", headers=AUTH)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "failed" and answer.json()["error"] == "cancelled"
    (gates / "report.pdf.hold").unlink()  # free to go on: it must stop by itself
    return doc_id, pid, seq


def _assert_stopped_within_one_page(
    manager: StatusManager, gates: Path, data: Path, doc_id: str, seq: int
) -> None:
    pages = (gates / "report.pdf.pages").read_text().split()
    assert pages[:3] == ["1", "2", "3"] and len(pages) <= 4, pages  # at most one page past the cancel
    visual = [c for c in _changes_after(manager, doc_id, seq) if c["status"] == "embedding_visual"]
    assert len(visual) <= 1
    status = manager.require_status(doc_id)
    assert status.status == "failed" and status.error == "cancelled"
    with _output(data) as output:
        assert not output.has(doc_id)


def test_cancel_mid_pdf_stops_the_rq_worker_within_one_page(cluster: Cluster, tmp_path: Path) -> None:
    gates = _gates(tmp_path)
    server = cluster.serve(DOCSTATUS_API_TOKEN=TOKEN)
    cluster.worker(**_held_env(gates), **EVERY_REPORT)
    doc_id, horse, seq = _cancel_mid_pdf(server.url, cluster.manager, gates)
    wait_until(lambda: not alive(horse), DEADLINE)
    # The one RQ worker is free again: the next document completes.
    after = _upload(server.url, "after.txt", b"a short note", headers=AUTH)
    _wait_finished(cluster, after)
    assert cluster.manager.require_status(after).status == "completed"
    _assert_stopped_within_one_page(cluster.manager, gates, tmp_path / "data", doc_id, seq)


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()


def _local(root: Path, servers: list[Server], script: str | None = None, **env: str) -> Server:
    settings = {"DOCSTATUS_LEASE_SECONDS": "1.5", "DOCSTATUS_API_TOKEN": TOKEN, **env}
    server = Server(root, env=settings).start(script)
    servers.append(server)
    return server


def test_cancel_mid_pdf_stops_the_local_worker_within_one_page(tmp_path: Path, servers: list[Server]) -> None:
    gates = _gates(tmp_path)
    server = _local(tmp_path, servers, GATED, DOCSTATUS_WORKERS="1", TEST_GATES=str(gates), **EVERY_REPORT)
    url = f"sqlite:///{tmp_path / 'status.db'}"
    with StatusManager(store=url, cleanup_interval_seconds=None) as manager:
        doc_id, _, seq = _cancel_mid_pdf(server.url, manager, gates)
        # The one slot is free again: the next document completes.
        after = _upload(server.url, "after.txt", b"a short note", headers=AUTH)
        assert server.wait_status(after, "completed", "failed")["status"] == "completed"
        _assert_stopped_within_one_page(manager, gates, tmp_path / "data", doc_id, seq)


def test_two_local_services_on_one_sqlite_file_process_each_document_once(
    tmp_path: Path, servers: list[Server]
) -> None:
    a = _local(tmp_path, servers, DOCSTATUS_WORKERS="2")
    b = _local(tmp_path, servers, DOCSTATUS_WORKERS="2")
    ids = [
        _upload((a if n % 2 == 0 else b).url, f"doc-{n}.txt", f"document {n}\n".encode() * (20 + n), AUTH)
        for n in range(20)
    ]
    url = f"sqlite:///{tmp_path / 'status.db'}"
    with StatusManager(store=url, cleanup_interval_seconds=None) as manager:
        wait_until(lambda: all(_finished(manager, d) for d in ids), DEADLINE)
        for doc_id in ids:
            status = manager.require_status(doc_id)
            assert status.status == "completed", (status.error, a.log(), b.log())
            assert status.metadata["attempt"] == 1
            assert claims(manager, doc_id) == 1
