"""What the store benchmarks (SQLite, Redis) share: the documents they measure and the rows they print alike.

Each store suite measures ``update_status`` on one document against its own
floor; then the same four listings on a store of ``DOCS`` documents,
``ACTIVE`` of them still being processed. Keeping those here makes the two
tables measure the same thing. :func:`redis_server` is the private
redis-server every suite that measures Redis starts.
"""

from __future__ import annotations

import itertools
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import redis

from docstatus import StatusManager
from docstatus.records import Record, apply_complete, new_record

from ._harness import Row, Table, per_op, per_op_threads

__all__ = [
    "ACTIVE",
    "DOCS",
    "META",
    "listing_rows",
    "open_manager",
    "population",
    "redis_server",
    "threaded_row",
    "update_fn",
]

DOCS = 100_000
ACTIVE = 10
META = {"format": "pdf", "format_type": "visual", "file_size": 2458624}


def open_manager(url: str, progress_interval: float = 0.0) -> StatusManager:
    """A manager over ``url`` without automatic cleanup (it would run during the timings).

    By default every report is a write (``progress_interval=0``): the rows
    measure the store's change, not how often it is made.
    """
    return StatusManager(store=url, cleanup_interval_seconds=None, progress_interval=progress_interval)


def update_fn(manager: StatusManager, doc_id: str) -> Callable[[], None]:
    """An update_status call that stays legal forever (the page keeps growing); called once already."""
    manager.create_status(doc_id, "report.pdf", META)
    manager.update_status(doc_id, "parsing")
    pages = itertools.count(1)

    def update() -> None:
        manager.update_status(doc_id, "embedding_visual", page=next(pages), total_pages=10**9)

    update()
    return update


def threaded_row(table: Table, manager: StatusManager) -> None:
    """4 threads, each updating a document of its own."""
    updates = [update_fn(manager, f"thread-doc-{i}") for i in range(4)]
    threaded = per_op_threads(lambda i: updates[i], threads=4, number=500)
    table.add(Row("update_status, 4 threads, distinct docs", threaded, "", None, ""))


def population(now: float) -> Iterator[Record]:
    """``DOCS`` records, all finished except ``ACTIVE`` scattered among them."""
    active_at = set(random.Random(7).sample(range(DOCS), ACTIVE))
    for i in range(DOCS):
        record = new_record(f"{i:064x}", f"file-{i}.pdf", {"format": "pdf", "file_size": 1000 + i}, now)
        yield record if i in active_at else apply_complete(record, {"num_chunks": 12}, now)


def listing_rows(table: Table, manager: StatusManager, counts: int) -> None:
    """The listings at ``DOCS`` documents; ``counts`` is how many count_by_status calls to time."""
    if len(manager.list_active()) != ACTIVE or len(manager.list_all(100)) != 100:
        raise RuntimeError("the large store does not hold what was loaded")
    table.add(Row(f"list_all(100) at {DOCS:,} docs", per_op(lambda: manager.list_all(100), 50)))
    table.add(Row(f"list_active() ({ACTIVE} active) at {DOCS:,} docs", per_op(manager.list_active, 200)))
    middle = f"{DOCS // 2:064x}"
    table.add(Row(f"get_status at {DOCS:,} docs", per_op(lambda: manager.get_status(middle), 2000)))
    table.add(Row(f"count_by_status at {DOCS:,} docs", per_op(manager.count_by_status, counts)))


@contextmanager
def redis_server() -> Iterator[str]:
    """A private redis-server on a free loopback port; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (make system-deps installs it)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="docstatus-bench-redis-") as tmp:
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", tmp, "--save", ""]
        process = subprocess.Popen([*args, "--appendonly", "no"], stdout=subprocess.DEVNULL)
        try:
            _wait_until_up(port, process)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            process.wait(30)


def _wait_until_up(port: int, process: subprocess.Popen[bytes]) -> None:
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 15
    try:
        while time.monotonic() < deadline and process.poll() is None:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.02)
    finally:
        client.close()
    raise RuntimeError(f"redis-server did not start on port {port}")
