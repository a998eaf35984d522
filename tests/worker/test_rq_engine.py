"""The RQ engine for real: ``serve --queue`` replicas and ``docstatus worker`` processes on one Redis.

Everything is its own process (see ``_cluster.Cluster``): a redis-server,
two ``docstatus serve --queue … --workers 0`` replicas sharing one uploads
folder, and ``docstatus worker`` commands (each in its own process group, as
on separate machines), each running RQ workers whose work horses claim
documents in the status store.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from _cluster import Cluster, alive, claims
from helpers import wait_until

pytestmark = pytest.mark.timeout(180)

DEADLINE = 60.0


def _follow(url: str, seen: list[dict[str, Any]], stop: threading.Event) -> None:
    with httpx.stream("GET", f"{url}/status/stream", timeout=None) as response:
        for line in response.iter_lines():
            if line.startswith("data:"):
                seen.append(json.loads(line.removeprefix("data:")))
            if stop.is_set():
                return


def test_two_replicas_and_three_workers_process_fifty_documents_once_each(cluster: Cluster) -> None:
    a, b = cluster.serve(), cluster.serve()
    for _ in range(3):
        cluster.worker(processes=1)
    seen: list[dict[str, Any]] = []
    stop = threading.Event()
    follower = threading.Thread(target=_follow, args=(b.url, seen, stop), daemon=True)
    follower.start()

    ids = []
    for n in range(50):
        replica = a if n % 2 == 0 else b
        content = f"document {n}\n".encode() * (20 + n)
        answer = httpx.post(f"{replica.url}/uploads", files={"file": (f"doc-{n}.txt", content)})
        assert answer.status_code in (200, 201, 202), answer.text
        ids.append(answer.json()["doc_id"])

    def all_done() -> bool:
        return all((s := cluster.manager.get_status(d)) is not None and s.is_finished for d in ids)

    try:
        wait_until(all_done, DEADLINE)
    except AssertionError:
        raise AssertionError(cluster.logs()) from None
    for doc_id in ids:
        status = cluster.manager.require_status(doc_id)
        assert status.status == "completed", (status.error, cluster.logs())
        assert status.metadata["attempt"] == 1
        assert claims(cluster.manager, doc_id) == 1
    workers = {cluster.manager.require_status(d).metadata.get("worker") for d in ids}
    assert len(workers) >= 2  # the work was shared
    # The stream on replica B saw the documents uploaded to replica A, to their end.
    wait_until(lambda: {e["doc_id"] for e in seen if e.get("status") == "completed"} >= set(ids), 10)
    stop.set()
    assert "Traceback" not in cluster.logs()


def test_a_worker_killed_mid_document_is_noticed_and_the_document_completes_once(
    cluster: Cluster, tmp_path: Path
) -> None:
    gates = tmp_path / "gates"
    gates.mkdir()
    server = cluster.serve()
    victim = cluster.worker(DOCSTATUS_PROCESSORS="_processors:held_processors", TEST_GATES=str(gates))
    (gates / "held.txt.hold").write_text("0.5")
    content = b"".join(f"Paragraph {i}. ".encode() * 40 + b"\n\n" for i in range(12))
    doc_id = httpx.post(f"{server.url}/uploads", files={"file": ("held.txt", content)}).json()["doc_id"]
    wait_until(lambda: cluster.manager.require_status(doc_id).status == "embedding_text", DEADLINE)
    holder = cluster.manager.require_status(doc_id).metadata["worker"]
    horse = int(holder.rpartition(":")[2])
    os.killpg(victim.pid, signal.SIGKILL)  # the worker command and its RQ workers, not the horse
    wait_until(lambda: not alive(horse), DEADLINE)  # the orphaned horse stopped by itself
    (gates / "held.txt.hold").unlink()
    cluster.worker()  # another machine's worker takes the retry
    wait_until(lambda: cluster.manager.require_status(doc_id).is_finished, DEADLINE)
    status = cluster.manager.require_status(doc_id)
    assert status.status == "completed", (status.error, cluster.logs())
    assert status.metadata["attempt"] == 2
    assert holder in status.metadata["recovery"] and "was lost" in status.metadata["recovery"]
    assert claims(cluster.manager, doc_id) == 2, [
        e["status"]["status"]
        for e in cluster.manager.changes_since(0, 100_000)
        if e["doc_id"] == doc_id and e["status"]
    ]
