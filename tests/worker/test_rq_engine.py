"""The RQ engine for real: ``serve --queue`` replicas and ``docstatus worker`` processes on one Redis.

Everything is its own process (see ``_cluster.Cluster``): a redis-server,
two ``docstatus serve --queue … --workers 0`` replicas sharing one uploads
folder, and ``docstatus worker`` commands (each in its own process group, as
on separate machines), each running RQ workers whose work horses claim
documents in the status store.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from _cluster import Cluster, alive, claims
from _documents import numbered_pages, pdf_bytes
from _redis_server import RedisServer
from docstatus.output import OutputStore
from docstatus.worker.pool import OUTPUT_FILE
from helpers import wait_until
from servers import SERVE, free_port

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


def test_a_worker_and_its_horse_killed_mid_pdf_retry_it_once_with_each_page_stored_once(
    cluster: Cluster, tmp_path: Path
) -> None:
    gates = tmp_path / "gates"
    gates.mkdir()
    server = cluster.serve()
    victim = cluster.worker(DOCSTATUS_PROCESSORS="_processors:held_processors", TEST_GATES=str(gates))
    (gates / "held.pdf.hold").write_text("0.5")  # held once half its pages are embedded
    content = pdf_bytes(numbered_pages(8))
    doc_id = httpx.post(f"{server.url}/uploads", files={"file": ("held.pdf", content)}).json()["doc_id"]
    wait_until(lambda: (cluster.manager.require_status(doc_id).page or 0) >= 4, DEADLINE)
    holder = cluster.manager.require_status(doc_id).metadata["worker"]
    horse = int(holder.rpartition(":")[2])
    os.killpg(victim.pid, signal.SIGKILL)  # the worker command and its RQ workers...
    wait_until(lambda: not alive(horse), DEADLINE)  # ...and the horse (its own group) dies with them
    (gates / "held.pdf.hold").unlink()
    cluster.worker()  # another machine's worker takes the retry
    wait_until(lambda: cluster.manager.require_status(doc_id).is_finished, DEADLINE)
    status = cluster.manager.require_status(doc_id)
    assert status.status == "completed", (status.error, cluster.logs())
    assert status.metadata["attempt"] == 2
    assert holder in status.metadata["recovery"] and "was lost" in status.metadata["recovery"]
    assert claims(cluster.manager, doc_id) == 2
    with OutputStore(tmp_path / "data" / OUTPUT_FILE) as output:
        stored = output.get(doc_id)
    assert stored is not None
    assert [page.number for page in stored.pages] == list(range(1, 9))  # each page once


def _recipe() -> list[list[str]]:
    """The README's two-machine recipe: its `docstatus serve` and `docstatus worker` commands."""
    text = (Path(__file__).parent.parent.parent / "README.md").read_text(encoding="utf-8")
    section = text[text.index("### Every core, then every machine") :]
    block = section[section.index("```sh\n") + 6 : section.index("```", section.index("```sh\n") + 6)]
    joined = block.replace("\\\n", " ")
    return [shlex.split(line) for line in joined.splitlines() if line.startswith("docstatus ")]


def test_the_readme_two_machine_recipe_runs_as_written(tmp_path: Path, redis: RedisServer) -> None:
    serve, worker = _recipe()
    assert serve[:2] == ["docstatus", "serve"] and worker[:2] == ["docstatus", "worker"]
    port = free_port()

    def here(args: list[str], machine: str) -> list[str]:
        # This machine stands in for each: the recipe's hosts and folders, mapped to local ones.
        mapped = []
        for arg in args[1:]:
            arg = arg.replace("redis-host:6379", f"127.0.0.1:{redis.port}")
            arg = arg.replace("/shared", str(tmp_path / "shared"))
            arg = arg.replace("/var/lib/docstatus", str(tmp_path / machine))
            mapped.append("127.0.0.1" if arg == "0.0.0.0" else arg)
        return mapped

    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCSTATUS_")}
    env["DOCSTATUS_PORT"] = str(port)
    logs = tmp_path / "logs"
    logs.mkdir()
    processes = []
    try:
        for machine, args in (("a", serve), ("b", worker)):
            with open(logs / f"{machine}.log", "wb") as log:
                processes.append(
                    subprocess.Popen(
                        [sys.executable, "-c", SERVE, *here(args, machine)],
                        env=env,
                        stdout=log,
                        stderr=log,
                        start_new_session=True,
                    )
                )
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _healthy(url), DEADLINE)
        answer = httpx.post(f"{url}/uploads", files={"file": ("recipe.txt", b"made on machine A, run on B")})
        doc_id = answer.json()["doc_id"]

        def finished() -> bool:
            return httpx.get(f"{url}/status/{doc_id}").json()["status"] in ("completed", "failed")

        wait_until(finished, DEADLINE)
        status = httpx.get(f"{url}/status/{doc_id}").json()
        assert status["status"] == "completed", (status, _read_logs(logs))
        assert status["metadata"]["worker"] != f"{socket.gethostname()}:{processes[0].pid}"
        assert (tmp_path / "b" / "output.db").exists()  # machine B stored the output
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            process.wait(30)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _read_logs(folder: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted(folder.glob("*.log")))
