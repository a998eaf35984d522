"""The Redis store against real redis-server processes: the records its compare-and-set
gives, its cache of known versions, races between stores, threads and processes, live events
across processes, and a server that goes away and comes back.

The store-independent behaviour is in ``test_conformance.py`` (which runs over Redis too).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from _redis_server import RedisServer
from docstatus import (
    DocumentNotFoundError,
    DuplicateDocumentError,
    InvalidTransitionError,
    Status,
    StatusManager,
)
from docstatus.errors import StoreUnavailableError
from docstatus.events import Event
from docstatus.models import can_transition
from docstatus.records import Mutation, Record, copy_json, new_record
from docstatus.stores import open_store
from docstatus.stores.redis import RedisStore, _commit_args, _library, _script

STATUSES = [s.value for s in Status]

# Processes are started fresh (not forked), as independent workers would be.
_spawn = multiprocessing.get_context("spawn")


@pytest.fixture
def store(redis_url: str) -> Iterator[RedisStore]:
    opened = open_store(redis_url)
    assert isinstance(opened, RedisStore)
    yield opened
    opened.close()


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A plain redis-py client of the session's server, to look behind the store's back."""
    plain = redis.Redis.from_url(redis_server.url)
    yield plain
    plain.close()


def _manager(url: str) -> StatusManager:
    return StatusManager(store=url, cleanup_interval_seconds=None, progress_interval=0)


# -- the store gives the records the Python rules give -------------------------------


def _metadata(rng: random.Random, exotic: bool) -> dict[str, Any]:
    values: list[Any] = [
        rng.randint(0, 40),
        rng.random(),
        3.0,
        2**60,
        'text ✓ "quoted" \\',
        [1, {"k": []}],
        {},
    ]
    values += [None, 0.1, -0.0, 1e-7, 1e20]
    keys = ["format", "x", "nested", "chunk", "total_chunks", "attempt"]
    meta: dict[str, Any] = {}
    for key in rng.sample(keys, rng.randint(0, 3)):
        counter = key in ("chunk", "total_chunks", "attempt")
        if counter and not exotic:
            meta[key] = rng.choice([rng.randint(0, 40), None, 2.5]) if key != "attempt" else rng.randint(1, 5)
        else:
            meta[key] = rng.choice([*values, True, "7"] if exotic else values)
    return meta


def _target(rng: random.Random, current: str) -> str:
    """Mostly a legal next status (or the same one), sometimes anything."""
    legal = [s for s in STATUSES if can_transition(current, s)]
    if legal and rng.random() < 0.85:
        return rng.choice(legal)
    return rng.choice(STATUSES)


def _update(rng: random.Random, current: str, now: float, exotic: bool) -> Mutation:
    target = _target(rng, current)
    progress = rng.choice([None, None, None, None, rng.random(), round(rng.random(), 2), 0.0, 1.0])
    fields: dict[str, Any] = {}
    for name, chance, value in [
        ("page", 0.5, rng.randint(0, 12)),
        ("total_pages", 0.4, rng.choice([None, 0, rng.randint(1, 12)])),
        ("chunk", 0.3, rng.randint(0, 30)),
        ("total_chunks", 0.3, rng.choice([None, 0, rng.randint(1, 30)])),
        ("stage", 0.2, rng.choice(["custom", "ünïcode ✓", 'quote " and \\ backslash', ""])),
        ("estimated_remaining", 0.2, rng.choice([None, rng.uniform(0, 100), 0.0])),
        ("metadata", 0.3, _metadata(rng, exotic)),
    ]:
        if rng.random() < chance:
            fields[name] = value
    if target == "failed":
        fields["error"] = rng.choice(["boom", "ünïcode failure ✗"])
    return Mutation("update", now, target, progress, fields)


def _mutation(rng: random.Random, current: str, now: float, exotic: bool) -> Mutation:
    finished = current in ("completed", "failed")
    kind = rng.choices(["update", "complete", "fail", "requeue"], weights=[20, 1, 1, 30 if finished else 1])[
        0
    ]
    if kind == "update":
        return _update(rng, current, now, exotic)
    if kind == "complete":
        return Mutation("complete", now, fields=_metadata(rng, exotic) if rng.random() < 0.5 else {})
    if kind == "fail":
        return Mutation("fail", now, fields={"error": rng.choice(["x", "disk full"])})
    return Mutation("requeue", now)


def _same(got: Any, want: Any, where: str = "record") -> None:
    """Equal JSON values of equal types.

    Floats must be equal to the last bit, not merely close: the stored text must read back
    as the very double Python computed, and a tolerance would hide a lossy encoding.
    """
    assert type(got) is type(want), f"{where}: {got!r} ({type(got).__name__}) != {want!r}"
    if isinstance(want, float):
        assert got == want or (math.isnan(got) and math.isnan(want)), f"{where}: {got!r} != {want!r}"
    elif isinstance(want, dict):
        assert got.keys() == want.keys(), where
        for key in want:
            _same(got[key], want[key], f"{where}[{key!r}]")
    elif isinstance(want, list):
        assert len(got) == len(want), where
        for i, (a, b) in enumerate(zip(got, want, strict=True)):
            _same(a, b, f"{where}[{i}]")
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def _apply_both(store: RedisStore, doc_id: str, record: Record, mutation: Mutation) -> Record:
    """Apply ``mutation`` in Python and through the store; both must agree. Returns the new record."""
    try:
        expected: Record | None = mutation(copy_json(record))
        error: Exception | None = None
    except Exception as exc:
        expected, error = None, exc
    if error is not None:
        with pytest.raises(type(error)) as raised:
            store.modify(doc_id, mutation)
        assert str(raised.value) == str(error)
        _same(store.get(doc_id), record)  # a refused change changes nothing
        return record
    assert expected is not None
    change = store.modify(doc_id, mutation)
    assert change.record is not None
    _same(change.record, expected, f"change record after {mutation}")
    _same(store.get(doc_id), expected, f"stored record after {mutation}")
    return expected


def _run_sequences(store: RedisStore, seed: int, sequences: int, exotic: bool) -> list[Record]:
    rng = random.Random(seed)
    finals = []
    for n in range(sequences):
        now = 1.7e9 + rng.uniform(0, 1e7)
        record = new_record(f"doc-{seed}-{n}", "f.pdf", _metadata(rng, exotic=False), now)
        store.create(copy_json(record))
        for _ in range(rng.randint(1, 30)):
            now += rng.choice([0.0, 1e-6, 0.01, 0.05, 0.07, rng.uniform(0, 3), rng.uniform(0, 600)])
            mutation = _mutation(rng, record["status"], now, exotic)
            record = _apply_both(store, record["doc_id"], record, mutation)
        finals.append(record)
    return finals


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_changes_give_the_records_the_python_rules_give(store: RedisStore, seed: int) -> None:
    finals = _run_sequences(store, seed, sequences=60, exotic=False)
    by_status: dict[str, int] = {}
    for record in finals:
        by_status[record["status"]] = by_status.get(record["status"], 0) + 1
    assert store.counts() == by_status
    active = {r["doc_id"] for r in finals if r["status"] not in ("completed", "failed")}
    assert {r["doc_id"] for r in store.active()} == active


def _typical_run(rng: random.Random, now: float) -> Iterator[Mutation]:
    """A document going through the pipeline, with the progress left to the formula."""

    def later() -> float:
        nonlocal now
        now += rng.choice([0.0, 0.01, 0.05, 0.2, rng.uniform(0, 2)])
        return now

    yield Mutation("update", later(), "parsing")
    pages, chunks = rng.randint(1, 40), rng.randint(1, 40)
    for page in range(1, pages + 1):
        yield Mutation("update", later(), "embedding_visual", None, {"page": page, "total_pages": pages})
    for chunk in range(0, chunks + 1, rng.randint(1, 5)):
        fields: dict[str, Any] = {"chunk": chunk, "total_chunks": chunks}
        if rng.random() < 0.2:
            fields["estimated_remaining"] = rng.uniform(0, 60)
        yield Mutation("update", later(), "embedding_text", None, fields)
    yield Mutation("update", later(), "storing")
    yield Mutation("complete", later(), fields={"chunks": chunks})


@pytest.mark.parametrize("seed", [4, 5])
def test_changes_give_the_records_the_python_rules_give_along_typical_runs(
    store: RedisStore, seed: int
) -> None:
    rng = random.Random(seed)
    for n in range(15):
        now = 1.7e9 + rng.uniform(0, 1e7)
        record = new_record(f"run-{seed}-{n}", "f.pdf", {"format": "pdf"}, now)
        store.create(copy_json(record))
        for mutation in _typical_run(rng, now):
            record = _apply_both(store, record["doc_id"], record, mutation)
        assert record["status"] == "completed"


def test_odd_values_round_trip(store: RedisStore) -> None:
    # Booleans, strings of digits, floats where ints are expected, huge and tiny numbers.
    _run_sequences(store, seed=99, sequences=40, exotic=True)


_ODD: dict[str, Any] = {
    "unicode": "ünïcode ✓ 日本語 \U0001f600",
    "surrogate": "lone \ud800 surrogate \udfff",
    "controls": '\x00\x1f\x7f \n\t"\\',
    "numbers": [2**70, -(2**63), 1e-320, -0.0, 1e308, 0.1 + 0.2, 3.0],
    "nested": {"a": [{"b": [None, True, False, {}]}], "ключ": "значение", "\ud83d": 1},
    "huge": "x" * 2_000_000,
}


def test_unicode_lone_surrogates_and_huge_metadata_round_trip(store: RedisStore) -> None:
    record = new_record("odd", "f.pdf", copy_json(_ODD), 1.7e9)
    store.create(copy_json(record))
    _same(store.get("odd"), record)
    mutation = Mutation("update", 1.7e9 + 1, "parsing", None, {"metadata": {"more": _ODD["surrogate"] * 3}})
    record = _apply_both(store, "odd", record, mutation)
    assert record["metadata"]["more"] == _ODD["surrogate"] * 3
    for seen in (store.recent(1)[0], store.active()[0]):
        _same(seen, record)
    logged = store.changes_since(0, 10)
    assert [c.type for c in logged] == ["created", "updated"]
    assert logged[1].record is not None
    _same(logged[1].record, record)
    # A fresh store (nothing cached) reads the same record back and changes it alike.
    other = RedisStore.from_url(store.url)
    try:
        _apply_both(other, "odd", record, Mutation("update", 1.7e9 + 2, "embedding_text", 0.5))
    finally:
        other.close()


def test_a_change_computed_on_a_stale_record_is_applied_again_to_the_current_one(
    store: RedisStore,
) -> None:
    record = new_record("cas", "f.pdf", {}, 1.7e9)
    store.create(record)
    other = RedisStore.from_url(store.url)
    calls = []

    def change(current: Record) -> Record:
        # Any function of the record will do. The first time, another writer changes the
        # record in between: the write must not go through, and the change is applied
        # again to the new record.
        calls.append(current["stage"])
        if len(calls) == 1:
            other.modify("cas", Mutation("update", 1.7e9 + 1, "parsing"))
        return {**current, "stage": current["stage"] + "+mine"}

    try:
        change_made = store.modify("cas", change)
    finally:
        other.close()
    assert calls == ["queued", "parsing"]
    assert change_made.record is not None
    assert change_made.record["stage"] == "parsing+mine"
    stored = store.get("cas")
    assert stored is not None
    assert (stored["status"], stored["stage"]) == ("parsing", "parsing+mine")


def test_indexes_follow_documents_that_finish_and_start_again(store: RedisStore) -> None:
    # The active set is written only when a document starts or finishes: by the rules'
    # changes (failing, requeueing) and by any other change of the record.
    for doc_id in ("x", "y"):
        store.create(new_record(doc_id, "f.pdf", {}, 1000.0))
    store.modify("x", Mutation("fail", 1001.0, fields={"error": "boom"}))
    assert [r["doc_id"] for r in store.active()] == ["y"]
    store.modify("x", Mutation("requeue", 1002.0))
    assert [r["doc_id"] for r in store.active()] == ["x", "y"]
    assert store.expire(before=5000.0, limit=10) == []  # x is no longer finished

    def finish_in_python(record: Record) -> Record:
        return {**record, "status": "completed", "elapsed_time": 1.0}

    store.modify("y", finish_in_python)
    assert [r["doc_id"] for r in store.active()] == ["x"]
    assert store.counts() == {"queued": 1, "completed": 1}
    assert [c.doc_id for c in store.expire(before=5000.0, limit=10)] == ["y"]
    assert [r["doc_id"] for r in store.recent(10)] == ["x"]


# -- the server-side code, the cache of known versions, conflicts ----------------------


def test_the_server_side_code_knows_no_rules() -> None:
    # Atomic primitives only: no status, no transition, no progress or ETA formula, no
    # reading of a record's JSON. The rules live in docstatus.records, once.
    library, _ = _library()
    for source in (library, _script()):
        text = source.lower().replace("docstatus", "")  # the name of the library
        for word in [*STATUSES, "status", "transition", "progress", "estimat", "elapsed", "_track"]:
            assert word not in text, f"{word!r} in the server-side code"
        for word in ["stage", "metadata", "smoothing", "json", "tonumber(a"]:
            assert word not in text, f"{word!r} in the server-side code"


def _operations(store: Any) -> list[str]:
    """From now on, every command ``store`` sends (its operations by name: 'cas', 'read'...)."""
    sent: list[str] = []
    execute = store._client.execute_command

    def counting(*args: Any, **options: Any) -> Any:
        if args[0] in ("FCALL", "FCALL_RO"):
            sent.append(args[1].decode().rsplit("_", 1)[-1])
        else:
            sent.append(args[3] if args[0] == "EVALSHA" else args[0])
        return execute(*args, **options)

    store._execute = store._client.execute_command = counting
    return sent


def test_a_worker_changing_its_own_document_needs_one_round_trip_per_change(redis_url: str) -> None:
    with _manager(redis_url) as manager:
        sent = _operations(manager.store)
        manager.create_status("own", "o.pdf")
        manager.update_status("own", "parsing")
        for page in range(1, 11):
            manager.update_status("own", "embedding_visual", page=page, total_pages=10)
        manager.mark_completed("own")
        assert sent == ["create"] + ["cas"] * 12


def test_a_conflict_is_retried_on_the_record_its_reply_carries(redis_url: str) -> None:
    rounds = 40
    with _manager(redis_url) as a, _manager(redis_url) as b:
        sent_a, sent_b = _operations(a.store), _operations(b.store)
        a.create_status("shared", "s.pdf", {"start": True})
        a.update_status("shared", "parsing")
        for i in range(rounds):
            # a reports pages 2, 4, 6..., b the page before each: progress must never go down.
            writer, page = (a, i + 2) if i % 2 == 0 else (b, i)
            fields = {"page": page, "total_pages": rounds, "metadata": {f"k{i}": i}}
            writer.update_status("shared", "embedding_visual", **fields)
        # a: create, parsing, its first page; then each change finds one of b's in between,
        # and the conflict's reply is all the retry needs.
        assert sent_a == ["create", "cas", "cas"] + ["cas", "cas"] * (rounds // 2 - 1)
        # b: nothing known at first (one read); then likewise.
        assert sent_b == ["read", "cas"] + ["cas", "cas"] * (rounds // 2 - 1)
        status = b.get_status("shared")
        assert status is not None
        assert status.metadata == {"start": True, **{f"k{i}": i for i in range(rounds)}}
        assert (status.page, status.progress) == (rounds - 1, 0.6)
        log = b.changes_since(0)
        assert [e["seq"] for e in log] == list(range(1, rounds + 3))
        pages = [e["status"]["page"] for e in log[2:]]
        assert pages != sorted(pages)
        progress = [e["status"]["progress"] for e in log]
        assert progress == sorted(progress)


def test_a_stale_cache_never_refuses_a_change_the_stored_record_allows(redis_url: str) -> None:
    with _manager(redis_url) as a, _manager(redis_url) as b:
        a.create_status("again", "a.pdf")
        a.mark_failed("again", "boom")  # a knows it as failed
        b.requeue("again")
        sent = _operations(a.store)
        a.update_status("again", "parsing")  # refused by a's cached record, not by the stored one
        assert sent == ["read", "cas"]
        status = b.get_status("again")
        assert status is not None
        assert (status.status, status.metadata) == (Status.PARSING, {"attempt": 2})


def test_a_refused_change_writes_nothing(redis_url: str) -> None:
    with _manager(redis_url) as a, _manager(redis_url) as b:
        a.create_status("final", "f.pdf")  # a knows it as queued
        b.mark_completed("final")
        before = b.last_seq
        sent = _operations(a.store)
        with pytest.raises(InvalidTransitionError, match="completed"):
            a.update_status("final", "parsing")  # allowed on a's cached record; the reply shows it final
        assert sent == ["cas"]
        with pytest.raises(InvalidTransitionError, match="completed"):
            a.update_status("final", "parsing")  # refused by the cache: confirmed on the stored record
        assert sent == ["cas", "read"]
        assert b.last_seq == before
        status = b.get_status("final")
        assert status is not None
        assert status.status is Status.COMPLETED


def test_the_cache_is_bounded_and_forgets_removed_documents(redis_url: str) -> None:
    class SmallCache(RedisStore):
        CACHED_RECORDS = 3

    small, other = SmallCache.from_url(redis_url), RedisStore.from_url(redis_url)
    try:
        for i in range(5):
            small.create(new_record(f"c{i}", "f.pdf", {}, 1000.0 + i))
        assert len(small._cache) == 3
        sent = _operations(small)
        small.modify("c0", Mutation("update", 1010.0, "parsing"))  # pushed out: read first
        small.modify("c4", Mutation("update", 1010.0, "parsing"))
        assert sent == ["read", "cas", "cas"]
        small.modify("c4", Mutation("complete", 1011.0))
        assert [c.doc_id for c in small.expire(1011.5, 10)] == ["c4"]
        sent.clear()
        with pytest.raises(DocumentNotFoundError):
            small.modify("c4", Mutation("update", 1012.0, "parsing"))
        assert sent == ["read"]
        # Removed by another store: the cached version is found missing, and forgotten.
        other.modify("c3", Mutation("complete", 1012.0))
        assert [c.doc_id for c in other.expire(1012.5, 10)] == ["c3"]
        with pytest.raises(DocumentNotFoundError):
            small.modify("c3", Mutation("update", 1013.0, "parsing"))
        assert small._cache.get("c3") is None
        # Removed and created again elsewhere: the new record has a new version.
        other.modify("c0", Mutation("complete", 1013.0))
        other.expire(1013.5, 10)
        other.create(new_record("c0", "again.pdf", {"new": True}, 1014.0))
        sent.clear()
        change = small.modify("c0", Mutation("update", 1015.0, "parsing"))
        assert change.record is not None
        assert (change.record["filename"], change.record["metadata"]) == ("again.pdf", {"new": True})
        assert sent == ["cas", "cas"]
    finally:
        small.close()
        other.close()


def _update_one(url: str, doc_id: str, me: int, count: int, barrier: Any) -> None:
    """``count`` updates to ``doc_id`` with pages out of order, each adding a metadata key of its own."""
    with _manager(url) as manager:
        barrier.wait(60)
        for i in range(count):
            fields = {"page": 1 + (i * 13 + me * 7) % 50, "total_pages": 50, "metadata": {f"{me}-{i}": i}}
            manager.update_status(doc_id, "embedding_visual", **fields)


def _check_no_update_lost(manager: StatusManager, doc_id: str, writers: int, count: int) -> None:
    status = manager.get_status(doc_id)
    assert status is not None
    assert status.metadata == {f"{me}-{i}": i for me in range(writers) for i in range(count)}
    log = manager.changes_since(0, 100_000)
    assert [e["seq"] for e in log] == list(range(1, writers * count + 3))
    progress = [e["status"]["progress"] for e in log]
    assert progress == sorted(progress)
    assert status.progress == pytest.approx(0.6)


def test_threads_with_a_store_each_changing_one_document_lose_no_update(redis_url: str) -> None:
    writers, count = 6, 60
    with _manager(redis_url) as manager:
        manager.create_status("crowded", "c.pdf")
        manager.update_status("crowded", "parsing")
        barrier = threading.Barrier(writers)
        threads = [
            threading.Thread(target=_update_one, args=(redis_url, "crowded", me, count, barrier))
            for me in range(writers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not any(thread.is_alive() for thread in threads)
        _check_no_update_lost(manager, "crowded", writers, count)


# -- the store on its own -----------------------------------------------------------


def test_prefixes_keep_stores_apart(redis_url: str) -> None:
    base = redis_url.split("?")[0]
    with _manager(base + "?prefix=apart-a") as a, _manager(base + "?prefix=apart-b") as b:
        a.create_status("same-id", "a.pdf")
        b.create_status("same-id", "b.pdf")
        status_a, status_b = a.get_status("same-id"), b.get_status("same-id")
        assert status_a is not None and status_b is not None
        assert (status_a.filename, status_b.filename) == ("a.pdf", "b.pdf")


def test_the_worker_registry_lives_under_the_prefix_and_drops_expired_entries(
    redis_server: RedisServer, client: redis.Redis
) -> None:
    prefix = "registry-keys:"
    with _manager(redis_server.url + "?prefix=registry-keys") as manager:
        manager.heartbeat("gone", {"host": "h"}, 0.05)
        deadline = time.monotonic() + 10
        while manager.workers():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert client.hexists(prefix + "workers", "gone")  # expired, not yet dropped
        manager.heartbeat("live", {"host": "h"}, 60)  # a heartbeat drops the expired
        keys = {key.decode() for key in client.scan_iter(match="*registry-keys*")}
        assert keys == {prefix + "workers", prefix + "workers_seen", prefix + "workers_expiry"}
        assert client.hkeys(prefix + "workers") == [b"live"]
        assert client.zrange(prefix + "workers_expiry", 0, -1) == [b"live"]
        manager.forget_worker("live")
        assert not any(client.scan_iter(match="*registry-keys*"))


def test_default_prefix(redis_server: RedisServer, client: redis.Redis) -> None:
    with _manager(redis_server.url) as manager:
        manager.create_status("default-prefix-doc", "a.pdf")
        assert client.exists("docstatus:doc:default-prefix-doc") == 1
        assert manager.cleanup_old_entries(0) == 0
        manager.mark_completed("default-prefix-doc")
        assert manager.cleanup_old_entries(0) == 1


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://127.0.0.1:6379/0?prefix=", "prefix"),
        ("redis://127.0.0.1:6379/0?colour=blue", "colour"),
        ("redis://127.0.0.1:notaport/0", "port"),
        ("redis://127.0.0.1:6379/notadb", "database number"),
        ("redis://127.0.0.1:6379/0?socket_timeout=soon", "socket_timeout"),
    ],
)
def test_bad_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RedisStore.from_url(url)


def test_the_url_shown_has_no_credentials() -> None:
    store = RedisStore.from_url("redis://user:s3cret@127.0.0.1:1/2?prefix=p&password=other")
    try:
        assert "s3cret" not in store.url and "other" not in store.url and "user" not in store.url
        assert store.url.startswith("redis://127.0.0.1:1/2")
    finally:
        store.close()


def test_missing_redis_package_names_the_extra() -> None:
    code = "import sys; sys.modules['redis'] = None; import docstatus.stores.redis"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "MissingDependencyError" in result.stderr
    assert "pip install 'docstatus[redis]'" in result.stderr


def test_the_functions_are_reloaded_when_the_server_forgot_them(
    store: RedisStore, client: redis.Redis
) -> None:
    store.create(new_record("forgetful", "f.pdf", {}, 1.7e9))
    client.function_flush()
    store.modify("forgetful", Mutation("update", 1.7e9 + 1, "parsing"))
    record = store.get("forgetful")
    assert record is not None
    assert record["status"] == "parsing"


def test_a_server_without_functions_runs_the_same_code_as_a_script(tmp_path: Path) -> None:
    # As a server before Redis 7 answers FCALL: "unknown command".
    server = RedisServer(tmp_path, options=["--rename-command", "FCALL", ""])
    server.start()
    try:
        old = RedisStore.from_url(server.url)
        try:
            _run_sequences(old, seed=6, sequences=10, exotic=False)
            _check_reads_and_expiry(old)
        finally:
            old.close()
        plain = redis.Redis.from_url(server.url)
        try:
            assert plain.function_list() == []
        finally:
            plain.close()
    finally:
        server.stop()


def _check_reads_and_expiry(store: RedisStore) -> None:
    store.create(new_record("reads", "r.pdf", {}, 1.7e9))
    assert [r["doc_id"] for r in store.recent(1)] == ["reads"]
    assert "reads" in {r["doc_id"] for r in store.active()}
    assert store.changes_since(store.last_seq() - 1, 10)[0].doc_id == "reads"
    store.modify("reads", Mutation("complete", 1.7e9 + 1))
    assert "reads" in [c.doc_id for c in store.expire(2e9, 1000)]
    assert store.get("reads") is None


def test_ids_redis_cannot_encode_are_simply_not_found(store: RedisStore) -> None:
    assert store.get("\ud800") is None
    with pytest.raises(DocumentNotFoundError):
        store.modify("\ud800", Mutation("update", 1.7e9, "parsing"))


def test_wait_for_change_wakes_on_a_change_from_elsewhere(store: RedisStore, redis_url: str) -> None:
    store.create(new_record("wake", "f.pdf", {}, 1.7e9))
    after = store.last_seq()
    woke = threading.Event()

    def wait() -> None:
        store.wait_for_change(after, timeout=120)
        woke.set()

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    with _manager(redis_url) as elsewhere:
        # Whether the waiter subscribed yet or not, it must see this change.
        elsewhere.update_status("wake", "parsing")
    assert woke.wait(60), "wait_for_change did not return after a change"
    assert store.last_seq() > after
    waiter.join(10)


def test_wait_for_change_returns_at_the_timeout(store: RedisStore) -> None:
    before = store.last_seq()
    store.wait_for_change(before, timeout=0.2)
    assert store.last_seq() == before


def test_expire_removes_in_batches_and_logs_each_removal(store: RedisStore) -> None:
    for i in range(25):
        store.create(new_record(f"old-{i}", "f.pdf", {}, 1000.0 + i))
        store.modify(f"old-{i}", Mutation("complete", 1000.5 + i))
    store.create(new_record("young", "f.pdf", {}, 5000.0))
    store.modify("young", Mutation("complete", 5000.0))
    first = store.expire(before=1010.0, limit=4)
    assert [c.doc_id for c in first] == ["old-0", "old-1", "old-2", "old-3"]
    assert all(c.type == "removed" and c.record is None for c in first)
    rest = store.expire(before=1010.0, limit=100)
    assert [c.doc_id for c in rest] == [f"old-{i}" for i in range(4, 10)]
    assert [c.seq for c in first + rest] == list(range(first[0].seq, first[0].seq + 10))
    assert store.get("old-3") is None and store.get("old-10") is not None
    assert store.counts() == {"completed": 16}
    logged = store.changes_since(first[0].seq - 1, 100)
    assert [(c.type, c.doc_id) for c in logged] == [("removed", c.doc_id) for c in first + rest]


def test_the_log_keeps_about_log_size_changes(store: RedisStore, client: redis.Redis) -> None:
    record = new_record("chatty", "f.pdf", {}, 1.7e9)
    store.create(record)
    total = RedisStore.LOG_SIZE + 500
    for start in range(0, total, 1000):
        # The store's own compare-and-set, pipelined: change i lands on version i + 1.
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(start + 1000, total)):
            new = Mutation("update", 1.7e9 + i, "parsing")(record)
            args = _commit_args(record, new)
            pipe.fcall(store._functions["cas"], 0, store._prefix, "chatty", i + 1, *args)
            record = new
        assert all(reply[0] == b"ok" for reply in pipe.execute())
    last = store.last_seq()
    assert last == total + 1
    kept = client.xlen(store._prefix + "log")
    assert RedisStore.LOG_SIZE <= kept < RedisStore.LOG_SIZE + 500
    tail = store.changes_since(last - 10, 100)
    assert [c.seq for c in tail] == list(range(last - 9, last + 1))
    assert store.changes_since(0, 1)[0].seq > 1  # the oldest are gone: a gap the caller sees


# -- processes ------------------------------------------------------------------------


def _race(url: str, doc_id: str, barrier: Any, results: Any) -> None:
    with _manager(url) as manager:
        barrier.wait(60)
        try:
            manager.create_status(doc_id, "race.pdf", {"pid": os.getpid()})
            results.put(("create", "won"))
        except DuplicateDocumentError:
            results.put(("create", "lost"))
        barrier.wait(60)
        try:
            manager.mark_failed(doc_id, f"failed by {os.getpid()}")
            results.put(("fail", "won"))
        except InvalidTransitionError:
            results.put(("fail", "lost"))


def _run_processes(target: Callable[..., None], args_for: Callable[[int], tuple[Any, ...]], n: int) -> None:
    processes = [_spawn.Process(target=target, args=args_for(i)) for i in range(n)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
    assert [p.exitcode for p in processes] == [0] * n


def test_of_eight_processes_exactly_one_creates_and_one_fails(redis_url: str) -> None:
    barrier, results = _spawn.Barrier(8), _spawn.Queue()
    _run_processes(_race, lambda i: (redis_url, "contested", barrier, results), 8)
    outcomes = sorted(results.get(timeout=10) for _ in range(16))
    assert outcomes.count(("create", "won")) == 1
    assert outcomes.count(("fail", "won")) == 1
    assert outcomes.count(("create", "lost")) == outcomes.count(("fail", "lost")) == 7
    with _manager(redis_url) as manager:
        status = manager.get_status("contested")
        assert status is not None and status.status is Status.FAILED
        assert manager.last_seq == 2
        assert manager.count_by_status()["total"] == 1


def _update_many(url: str, doc_id: str, count: int, barrier: Any) -> None:
    with _manager(url) as manager:
        manager.create_status(doc_id, f"{doc_id}.pdf")
        barrier.wait(60)
        manager.update_status(doc_id, "parsing")
        for page in range(1, count + 1):
            manager.update_status(doc_id, "embedding_visual", page=page, total_pages=count)


def test_eight_processes_updating_lose_nothing(redis_url: str) -> None:
    count, n = 1000, 8
    barrier = _spawn.Barrier(n)
    _run_processes(_update_many, lambda i: (redis_url, f"busy-{i}", count, barrier), n)
    with _manager(redis_url) as manager:
        assert manager.last_seq == n * (count + 2)
        for i in range(n):
            status = manager.get_status(f"busy-{i}")
            assert status is not None
            assert (status.page, status.total_pages, status.progress) == (count, count, 0.6)
        log = manager.changes_since(0, 100_000)
        assert [e["seq"] for e in log] == list(range(1, n * (count + 2) + 1))
        for i in range(n):
            pages = [e["status"]["page"] for e in log if e["doc_id"] == f"busy-{i}" and e["status"]]
            assert pages == [None, None, *range(1, count + 1)]
        assert manager.count_by_status()["embedding_visual"] == n


def test_processes_changing_one_document_lose_no_update(redis_url: str) -> None:
    writers, count = 4, 150
    with _manager(redis_url) as manager:
        manager.create_status("together", "t.pdf")
        manager.update_status("together", "parsing")
        barrier = _spawn.Barrier(writers)
        _run_processes(_update_one, lambda me: (redis_url, "together", me, count, barrier), writers)
        _check_no_update_lost(manager, "together", writers, count)


def test_a_subscriber_sees_every_change_of_other_processes_in_order(redis_url: str) -> None:
    count, n = 50, 4
    expected = n * (count + 2)
    seen: list[Event] = []
    done = threading.Event()

    def collect(event: Event) -> None:
        seen.append(event)
        if len(seen) == expected:
            done.set()

    with _manager(redis_url) as manager:
        manager.subscribe(collect)
        barrier = _spawn.Barrier(n)
        _run_processes(_update_many, lambda i: (redis_url, f"watched-{i}", count, barrier), n)
        assert done.wait(60), f"saw {len(seen)} of {expected} changes"
    assert [e["seq"] for e in seen] == list(range(1, expected + 1))
    for i in range(n):
        mine = [e for e in seen if e["doc_id"] == f"watched-{i}"]
        assert [e["type"] for e in mine] == ["created"] + ["updated"] * (count + 1)
        assert [e["status"]["page"] for e in mine if e["status"]] == [None, None, *range(1, count + 1)]


# -- the server goes away and comes back ---------------------------------------------


def _unavailable_calls(manager: StatusManager) -> list[Callable[[], object]]:
    return [
        lambda: manager.update_status("survivor", "embedding_visual", page=99, total_pages=100),
        lambda: manager.mark_completed("survivor"),
        lambda: manager.create_status("newcomer", "n.pdf"),
        lambda: manager.get_status("survivor"),
        lambda: manager.list_all(),
        lambda: manager.list_active(),
        lambda: manager.count_by_status(),
        lambda: manager.cleanup_old_entries(0),
        lambda: manager.changes_since(0),
        lambda: manager.last_seq,
        lambda: manager.store.wait_for_change(0, 1.0),
    ]


def test_a_stopped_server_is_unavailable_and_a_restarted_one_loses_nothing(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, persistent=True)
    server.start()
    try:
        url = server.url + "?prefix=restart"
        with _manager(url) as manager:
            manager.create_status("survivor", "s.pdf", {"k": "v"})
            manager.update_status("survivor", "parsing")
            for page in range(1, 41):
                manager.update_status("survivor", "embedding_visual", page=page, total_pages=100)
            acknowledged = manager.last_seq
            server.stop(kill=True)  # a crash: no shutdown save
            for call in _unavailable_calls(manager):
                with pytest.raises(StoreUnavailableError) as raised:
                    call()
                assert isinstance(raised.value.__cause__, redis.RedisError)
                assert "restart" in str(raised.value)
            server.start()  # same port, same files
            status = manager.get_status("survivor")
            assert status is not None
            assert (status.status, status.page, status.metadata) == (Status.EMBEDDING_VISUAL, 40, {"k": "v"})
            assert manager.last_seq == acknowledged
            manager.update_status("survivor", "embedding_visual", page=41, total_pages=100)
            assert manager.last_seq == acknowledged + 1
            assert [e["seq"] for e in manager.changes_since(0)] == list(range(1, acknowledged + 2))
    finally:
        server.stop()


def test_the_epoch_is_kept_in_the_store_and_made_again_when_missing(
    store: RedisStore, redis_url: str, client: redis.Redis
) -> None:
    first = store.epoch()
    assert first and store.epoch() == first
    with _manager(redis_url) as other:
        assert other.store.epoch() == first  # every process sharing the store sees the same one
    keys = [k for k in client.scan_iter(match="*epoch") if client.get(k) == first.encode()]
    assert len(keys) == 1
    client.delete(keys[0])  # what a server that restarted empty has lost
    second = store.epoch()
    assert second and second != first and store.epoch() == second
