"""The Redis store against its floor and against what users would pick instead.

Everything talks to one redis-server that this suite starts on a free loopback
port (no persistence, so the disk is out of the picture). The floor is one raw
``HSET`` round trip with redis-py; docstatus does the whole ``update_status``
through the manager: validation and the rules in Python, then one ``FCALL``, a
compare-and-set that writes the record and its indexes, logs and publishes the
change.
RQ's ``job.save_meta()`` and Celery's ``backend.store_result(..., "PROGRESS")``
are the progress writes of the two usual task queues, on the same server.
Listings are measured at 100,000 documents, 10 of them active.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

import redis

from docstatus.stores.redis import RedisStore, _commit_args

from ._harness import Row, Table, best_interleaved
from ._stores import DOCS, META, listing_rows, open_manager, population, redis_server, threaded_row, update_fn

TARGET_UPDATE = "≤ 1.3× floor"


def _hset_fn(client: redis.Redis) -> Callable[[], None]:
    pages = itertools.count(1)

    def hset() -> None:
        client.hset("floor:doc", "page", next(pages))

    return hset


def _rq_fn(client: redis.Redis) -> Callable[[], None] | None:
    try:
        from rq.job import Job
    except ImportError:
        return None
    job = Job.create("builtins.len", args=([],), connection=client, meta=dict(META))
    job.save()
    pages = itertools.count(1)

    def save_meta() -> None:
        job.meta["page"] = next(pages)
        job.save_meta()

    return save_meta


def _celery_fn(url: str) -> Callable[[], None] | None:
    try:
        from celery import Celery
    except ImportError:
        return None
    app = Celery("bench", broker=url, backend=url)
    backend = app.backend
    pages = itertools.count(1)

    def store_result() -> None:
        backend.store_result("bench-task", {"page": next(pages), "total_pages": 10**9}, "PROGRESS")

    return store_result


def _server_us(client: redis.Redis, command: str, fn: Callable[[], None], number: int = 2000) -> float:
    """Microseconds the server spends per ``command`` while ``fn`` runs (its own statistics)."""
    client.config_resetstat()
    for _ in range(number):
        fn()
    stats = client.info("commandstats")[f"cmdstat_{command}"]
    return float(stats["usec_per_call"])


def _check_one_round_trip(client: redis.Redis, updates: int) -> None:
    """After ``_server_us``: each of the ``updates`` was one ``FCALL`` (no read, no retry)."""
    stats = client.info("commandstats")
    calls = stats.get("cmdstat_fcall", {}).get("calls")
    if calls != updates or "cmdstat_fcall_ro" in stats:
        raise RuntimeError(f"{updates} updates took {calls} FCALLs and {stats.get('cmdstat_fcall_ro')} reads")


def _update_rows(table: Table, url: str) -> None:
    manager = open_manager(url + "?prefix=bench-update")
    coalesced = open_manager(url + "?prefix=bench-coalesced", progress_interval=0.1)
    client = redis.Redis.from_url(url)
    fns = {
        "docstatus": update_fn(manager, "doc-0"),
        "coalesced": update_fn(coalesced, "doc-0"),
        "hset": _hset_fn(client),
    }
    others = {"rq": _rq_fn(client), "celery": _celery_fn(url)}
    fns.update({name: fn for name, fn in others.items() if fn is not None})
    best = best_interleaved(fns, 2000, rounds=3)
    ours = best["docstatus"]
    table.add(Row("update_status, every report written", ours, "raw HSET round trip", best["hset"]))
    table.add(
        Row(
            "update_status, progress held (progress_interval=0.1)",
            best["coalesced"],
            "raw HSET round trip",
            best["hset"],
            TARGET_UPDATE,
        )
    )
    coalesced.close()
    if "rq" in best:
        table.add(Row("update_status", ours, "RQ job.save_meta()", best["rq"], ""))
    if "celery" in best:
        table.add(Row("update_status", ours, "Celery store_result(PROGRESS)", best["celery"], ""))
    script_us = _server_us(client, "fcall", fns["docstatus"])
    _check_one_round_trip(client, 2000)
    hset_us = _server_us(client, "hset", fns["hset"])
    table.add(Row("update_status: time in redis-server", script_us, "HSET in redis-server", hset_us, ""))
    threaded_row(table, manager)
    client.close()
    manager.close()


def _load(store: RedisStore, client: redis.Redis) -> None:
    # Pipelined creates: the store's own create operation, 1,000 per round trip.
    store.active()  # loads the script
    records = population(time.time())
    while batch := list(itertools.islice(records, 1000)):
        pipe = client.pipeline(transaction=False)
        for record in batch:
            args = _commit_args(None, record)
            pipe.fcall(store._functions["create"], 0, store._prefix, record["doc_id"], *args)
        pipe.execute()


def _listing_rows(table: Table, url: str) -> None:
    manager = open_manager(url + "?prefix=bench-large")
    store = manager.store
    if not isinstance(store, RedisStore):
        raise RuntimeError("not a redis store")
    client = redis.Redis.from_url(url)
    started = time.perf_counter()
    _load(store, client)
    client.close()
    print(f"  (loaded {DOCS:,} documents in {time.perf_counter() - started:.1f} s)", flush=True)
    listing_rows(table, manager, counts=200)
    manager.close()


def run() -> list[Table]:
    table = Table("Redis store (one FCALL per change, server on loopback)")
    with redis_server() as url:
        _update_rows(table, url)
        _listing_rows(table, url)
    return [table]
