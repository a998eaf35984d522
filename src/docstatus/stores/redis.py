"""The Redis store: one status store shared by many processes and machines.

The rules run in Python, once: a change is the manager's Mutation (any pure
function of the stored record), applied here in the client. The server makes
it atomic with a compare-and-set on the record's version; its code
(``redis.lua`` beside this file) is atomic primitives that never read a record
and know nothing of statuses, progress or times.

Data layout, every key under the prefix (``docstatus:`` by default):

* ``doc:<doc_id>`` - the record, kept once: a hash with ``r``, the record's JSON
  text, and ``c``, the name of the count it is in (its status), so that removing
  it needs no reading of the text;
* ``recent`` - sorted set of doc_ids by the seq of their last change. That score is
  the record's *version*;
* ``active`` - set of the doc_ids of unfinished records, written only when a document
  starts or finishes; ``active()`` orders them by their ``recent`` score;
* ``finished`` - sorted set of finished doc_ids by finish time (``expire``);
* ``counts`` - hash of status -> number of records;
* ``seq`` - the change counter; ``log`` - a stream of changes with IDs ``<seq>-0``,
  capped near ``LOG_SIZE`` (``changes_since``); an entry is ``t`` (the change type),
  ``d`` (the doc_id), ``r`` (the record's JSON text; none for a removal) and, for a
  change that kept the document's status (a report), ``m`` = ``0`` (``moves_since``);
* ``epoch`` - a random id of this history of ``seq``, made again when missing (``epoch()``);
* ``changes`` - a pub/sub channel carrying each change's seq (``wait_for_change``).
* ``q:<status>`` (doc_ids by the seq of their last change), ``t:<status>`` and
  ``n:<status>`` (lex indexes of ``<key>\\0<doc_id>`` by the attempt's start and by
  filename) - the listing indexes (``scan``), moved in the commit of each change; the
  record's hash names its entries (``x<slot>``, ``y<slot>``) so that a removal takes them out;
* ``leases`` (doc_id by expiry), ``lease_epochs``, ``lease_workers`` - the lease index;
* ``tally:<minute>`` - the throughput counters of one minute (``c`` completed, ``f``
  failed, ``p`` pages), a hash written with the change that ends a document, expiring
  ``TALLY_SECONDS`` after its last count;
* ``workers`` (worker_id -> info JSON), ``workers_seen`` (-> last heartbeat), ``workers_expiry``
  (worker_id by expiry) - the worker registry. Lease and registry times are the server's ``TIME``.
* ``cursor:<name>`` (a hash: ``p`` position, ``o`` owner, ``e`` lease expiry), ``outbox:<name>``
  (keys by seq) and ``outbox_data:<name>`` (key -> JSON) - named cursors and their outboxes,
  written in ``WATCH``/``MULTI`` transactions on the cursor's key (a compare-and-set on its
  lease), so a write of an owner whose lease passed on is never made.

A change (``modify``) goes like this:

1. Start from the document's last known version and record: what this store object
   last wrote or read for it (a bounded cache), or else one ``read`` call.
2. Apply the change to that record, in Python. Work out what the indexes need: the
   old and the new status (for ``counts``), whether the record enters the active set
   or the finished set, and its finish time there.
3. One ``cas`` call sends the version the change was computed from, the new record's
   text and those index arguments. In one atomic step the server checks the version
   against the ``recent`` score and, if it matches, writes the record, takes the next
   seq (the new version), updates the indexes, appends the log entry and publishes.
   If another writer got there first, the reply carries the current version and
   record instead, and the change is applied again to those (step 2), with no other
   read, until it lands.

A worker updating its own document thus costs one round trip per change. A stale
cache costs a conflict, never a wrong write: a record is only written onto the
version it was computed from. A change that raises (one the rules refuse) writes
nothing; if it was computed on a cached record, the record is read again and the
change retried on it, so a stale cache never refuses a change either.

On Redis 7 and later the code is a Functions library, loaded once
(``FUNCTION LOAD``, when a call finds it missing) and called with ``FCALL``. Its
name carries a digest of the code (``docstatus_<digest>``), so processes running
different versions share a server safely; libraries of versions no longer in use
can be removed with ``FUNCTION DELETE``. Older servers (no ``FCALL``) run the same
code as a script with ``EVALSHA``.

Data written by versions before this layout (a hash field per record key, and a
server-side copy of the rules) is not read by this one: give it an empty database
or a new ``prefix``.

The code uses keys it derives from the prefix, so the store needs a standalone
Redis (or one shard), not Redis Cluster.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic_core import PydanticSerializationError, from_json, to_json

from ..errors import (
    DocumentNotFoundError,
    DuplicateDocumentError,
    MissingDependencyError,
    StoreUnavailableError,
)
from ..records import Record, finished_at, is_finished, lease_of, tally_of
from .base import Change, ChangeType, LeaseEntry, OutboxEntry, Store, Tally, WorkerEntry
from .query import Entry, Position, Sort, name_key, started_of

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.client import Pipeline, PubSub
    from redis.exceptions import NoScriptError, RedisError, ResponseError, WatchError
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise MissingDependencyError("redis", "redis") from exc

__all__ = ["DEFAULT_PREFIX", "RedisStore"]

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "docstatus:"

#: Query parameters of a store URL handed to redis-py (besides ``prefix``).
_CLIENT_OPTIONS = frozenset(
    {
        "db",
        "password",
        "username",
        "socket_timeout",
        "socket_connect_timeout",
        "socket_keepalive",
        "health_check_interval",
        "max_connections",
        "client_name",
        "protocol",
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_check_hostname",
    }
)
_SECRET_OPTIONS = frozenset({"password"})

#: The record key whose value names the record's entry in ``counts``.
_COUNTED = "status"

# -- the server-side code ------------------------------------------------------------

#: Operations that only read (registered with the ``no-writes`` flag, called with ``FCALL_RO``).
_READ_ONLY = frozenset(
    {"read", "recent", "active", "log", "expired", "leases", "now", "workers", "range", "tallies"}
)
_OPERATIONS = (
    "cas",
    "create",
    "read",
    "recent",
    "active",
    "log",
    "expire",
    "remove",
    "renew",
    "expired",
    "leases",
    "now",
    "heartbeat",
    "workers",
    "forget",
    "range",
    "tallies",
)

# How the code ends as a Functions library: every operation registered under a name that
# carries the code's digest, so processes running different versions of docstatus on one
# server each call their own code.
_REGISTER = """
local function register(name, flags)
  local op = OPS[name]
  redis.register_function{function_name = NAME .. name, flags = flags, callback = function(_, args)
    use_prefix(args[1])
    return op(args)
  end}
end
"""
# ... and as a script: the operation is the first argument, the prefix the second.
_DISPATCH = """
local args = {unpack(ARGV, 2)}
use_prefix(args[1])
return OPS[ARGV[1]](args)"""


@functools.cache
def _source() -> str:
    source = resources.files(__package__).joinpath("redis.lua").read_text(encoding="utf-8")
    source = source.replace("__LOG_SIZE__", str(RedisStore.LOG_SIZE), 1)
    return source.replace("__TALLY_SECONDS__", str(RedisStore.TALLY_SECONDS), 1)


@functools.cache
def _library() -> tuple[str, str]:
    """The Functions library and the prefix of its function names (``docstatus_<digest>_``)."""
    flags = {op: "{'no-writes'}" if op in _READ_ONLY else "{}" for op in _OPERATIONS}
    calls = "".join(f"register('{op}', {flags[op]})\n" for op in _OPERATIONS)
    body = _source().replace("\n__ENTRY__", _REGISTER + calls, 1)
    digest = hashlib.sha1(body.encode()).hexdigest()[:16]
    name = f"docstatus_{digest}"
    header = f"#!lua name={name}\nlocal NAME = {json.dumps(name + '_')}\n"
    return header + body, name + "_"


@functools.cache
def _script() -> str:
    """The same code as a script for ``EVALSHA`` (servers older than Redis 7)."""
    return _source().replace("\n__ENTRY__", _DISPATCH, 1)


# -- records as stored ------------------------------------------------------------------

_json_encode = json.JSONEncoder().encode


def _encode(record: Record) -> bytes:
    """The record as JSON text (pydantic-core's encoder: a few times faster than json's)."""
    try:
        return to_json(record)
    except PydanticSerializationError:
        # Lone surrogates have no UTF-8 form: \u escapes, as json writes them (and
        # anything else json refuses is refused with json's error).
        return _json_encode(record).encode()


def _decode(text: bytes) -> Record:
    try:
        record: Record = from_json(text)
    except ValueError:
        record = json.loads(text)  # \u escapes of lone surrogates, which pydantic-core refuses
    return record


# Not frozen, for the same reason as Mutation: a frozen dataclass costs more to build.
@dataclass(slots=True)
class _Known:
    """A document's record as stored at ``version`` (the seq of its last change)."""

    version: int
    record: Record


_STAY = ("", "")


def _move(old: Record | None, new: Record) -> tuple[str, str]:
    """The index move of a change from ``old`` (``None``: a new record) to ``new``, and its score."""
    finished = finished_at(new)
    if finished is None:
        return ("active", "") if old is None or is_finished(old) else _STAY
    if old is not None and finished_at(old) == finished:
        return _STAY
    if not math.isfinite(finished):
        raise ValueError(f"record {new.get('doc_id')!r} has no finite finish time ({finished!r})")
    return "finished", repr(finished)


def _commit_args(old: Record | None, new: Record) -> list[bytes | str]:
    """What the server's ``commit`` needs: the counts to move, the index move, the record's text."""
    count = new[_COUNTED]
    before = "" if old is None else old[_COUNTED]
    counts = _STAY if before == count else (before, count)
    return [*counts, *_move(old, new), _encode(new), *_lease_move(old, new)]


_NO_LEASE_MOVE = ("", "", "", "")


def _lease_move(old: Record | None, new: Record) -> tuple[str, str, str, str]:
    """The lease index move of a change (see ``move_lease`` in redis.lua)."""
    if "_lease" not in new:
        return _NO_LEASE_MOVE
    before, after = None if old is None else lease_of(old), lease_of(new)
    if after is None:
        return _NO_LEASE_MOVE if before is None else ("del", "", "", "")
    if before is not None and before[0] == after[0]:
        return _NO_LEASE_MOVE
    return "set", str(after[0]), after[1], repr(after[2])


# Always three arguments: the listing's index moves follow them, as many as there are.
_NO_TALLY: tuple[str, ...] = ("", "", "")


def _tally_args(old: Record | None, new: Record) -> tuple[str, ...]:
    """The throughput counters of a change (see ``tally`` in redis.lua): three, empty for none."""
    counted = tally_of(old, new)
    if counted is None:
        return _NO_TALLY
    minute, status, pages = counted
    return str(minute), "c" if status == "completed" else "f", str(pages)


class _Cache:
    """The last known version of recently written or read records; thread-safe, bounded.

    Least recently *stored* entries go first: every change a process makes
    stores its document again, so the documents in work stay.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: dict[str, _Known] = {}
        self._lock = threading.Lock()

    def get(self, doc_id: str) -> _Known | None:
        with self._lock:
            return self._entries.get(doc_id)

    def put(self, doc_id: str, known: _Known) -> None:
        """Keep ``known`` unless a newer version is kept already (replies of threads may cross)."""
        entries = self._entries
        with self._lock:
            current = entries.pop(doc_id, None)
            if current is not None and current.version > known.version:
                known = current
            entries[doc_id] = known
            if len(entries) > self._size:
                del entries[next(iter(entries))]

    def drop(self, doc_id: str) -> None:
        with self._lock:
            self._entries.pop(doc_id, None)

    def __len__(self) -> int:
        return len(self._entries)


# -- URLs -------------------------------------------------------------------------------


def _public_url(url: str) -> str:
    """``url`` without credentials (user, password), for messages and ``Store.url``.

    Also checks what redis-py would let through unnoticed: the port and the database number.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"invalid redis store URL: {exc}") from None
    if parts.path.strip("/") and not parts.path.strip("/").isdigit():
        raise ValueError(f"invalid redis store URL: the path must be a database number, not {parts.path!r}")
    netloc = host if port is None else f"{host}:{port}"
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in _SECRET_OPTIONS]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query), ""))


def _query(query: str) -> tuple[str, list[tuple[str, str]]]:
    """The prefix and the redis-py options of a store URL's query."""
    prefix, options = DEFAULT_PREFIX, []
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == "prefix":
            prefix = _prefix(value)
        elif name in _CLIENT_OPTIONS:
            options.append((name, value))
        else:
            accepted = ", ".join(sorted({"prefix", *_CLIENT_OPTIONS}))
            raise ValueError(f"unknown parameter {name!r} in redis store URL; accepted: {accepted}")
    return prefix, options


def _prefix(value: str) -> str:
    if not value:
        raise ValueError("the prefix of a redis store URL must not be empty")
    return value if value.endswith(":") else value + ":"


class RedisStore(Store):
    """Records in Redis, shared by every process that opens the same URL and prefix.

    Thread-safe (redis-py's connection pool; the cache of known versions has
    its own lock). Every change is atomic on the server (a compare-and-set,
    see the module docstring); durability is the server's (``appendonly yes``
    with ``appendfsync always`` loses no acknowledged change). When the server
    cannot be reached, every method raises
    :class:`~docstatus.errors.StoreUnavailableError`; the store works again
    as soon as the server is back. A change whose reply was lost with the
    connection may or may not have been made.
    """

    shared = True

    #: Changes kept in the log for event streams to resume from (approximately:
    #: the stream is trimmed in whole blocks, so a few more may be kept).
    LOG_SIZE = 10_000

    #: Documents whose last known version and record this store keeps, so that
    #: a change to one of them needs no read first.
    CACHED_RECORDS = 4096

    def __init__(self, client: redis.Redis, *, prefix: str = DEFAULT_PREFIX, url: str = "redis://") -> None:
        self._client = client
        self._prefix = _prefix(prefix)
        self.url = url
        self._library, names = _library()
        # Functions are named after their code: if another process loaded it already, no load is needed.
        self._functions = {op: names + op for op in _OPERATIONS}
        # Each operation's command up to its own arguments, encoded once (FCALL_RO for reads,
        # which a read-only replica may serve too).
        prefix_bytes = self._prefix.encode()
        self._calls = {
            op: ("FCALL_RO" if op in _READ_ONLY else "FCALL", name.encode(), 0, prefix_bytes)
            for op, name in self._functions.items()
        }
        # redis-py's own path, without the per-command wrapper methods.
        self._execute: Callable[..., Any] = client.execute_command
        self._script = _script()
        self._sha = hashlib.sha1(self._script.encode()).hexdigest()
        #: False on a server without Functions (before Redis 7): scripts (EVALSHA) instead.
        self._use_functions = True
        self._cache = _Cache(self.CACHED_RECORDS)
        self._listen_lock = threading.Lock()
        self._pubsub: PubSub | None = None

    @classmethod
    def from_url(cls, url: str) -> RedisStore:
        """``redis://[user:password@]host[:port][/db][?prefix=name&...]`` (``rediss://`` for TLS).

        ``prefix`` (default ``docstatus``) namespaces every key, so several
        stores can share one database. redis-py's connection options
        (``socket_timeout``, ``socket_connect_timeout``, ``max_connections``,
        ``health_check_interval``, ``client_name``, ``ssl_*``...) are accepted
        too. Any other parameter, or a malformed URL, is a ``ValueError``.
        Nothing is connected until the store is first used.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"not a redis URL: scheme {parts.scheme!r}")
        public = _public_url(url)
        prefix, options = _query(parts.query)
        try:
            client = redis.Redis.from_url(
                urlunsplit(parts._replace(query=urlencode(options))),
                socket_connect_timeout=5.0,
                socket_timeout=30.0,
                # No retries: a change resent after a lost reply could be applied twice.
                retry=Retry(NoBackoff(), 0),
            )
        except ValueError as exc:
            raise ValueError(f"invalid redis store URL {public!r}: {exc}") from None
        return cls(client, prefix=prefix, url=public)

    # -- plumbing -----------------------------------------------------------------

    def _unavailable(self, exc: RedisError) -> StoreUnavailableError:
        return StoreUnavailableError(self.url, exc)

    def _call(self, op: str, *args: bytes | str | int) -> Any:
        """Run ``op`` on the server (loading the code first if the server lacks it)."""
        try:
            try:
                return self._run(op, args)
            except ResponseError as exc:
                # A new or restarted server, or one without Functions: nothing ran, so running
                # again is safe.
                self._load(exc)
                return self._run(op, args)
        except RedisError as exc:
            raise self._unavailable(exc) from exc

    def _run(self, op: str, args: tuple[bytes | str | int, ...]) -> Any:
        if self._use_functions:
            return self._execute(*self._calls[op], *args)
        return self._execute("EVALSHA", self._sha, 0, op, self._prefix, *args)

    def _load(self, exc: ResponseError) -> None:
        """Load the code after ``exc`` said the server lacks it; re-raise any other ``exc``."""
        message = str(exc)
        if self._use_functions and message.startswith("Function not found"):
            self._client.function_load(self._library, replace=True)
        elif self._use_functions and message.lower().startswith("unknown command"):
            self._use_functions = False
            self._client.script_load(self._script)
        elif isinstance(exc, NoScriptError):
            self._client.script_load(self._script)
        else:
            raise exc

    def _key(self, name: str) -> str:
        return self._prefix + name

    # -- the Store contract ------------------------------------------------------

    def create(self, record: Record) -> Change:
        doc_id = record["doc_id"]
        reply = self._call(
            "create",
            doc_id,
            *_commit_args(None, record),
            *_tally_args(None, record),
            *_index_moves(None, record),
        )
        if reply[0] == b"duplicate":
            raise DuplicateDocumentError(doc_id)
        seq: int = reply[1]
        self._cache.put(doc_id, _Known(seq, record))
        return Change(seq, "created", doc_id, record)

    def modify(self, doc_id: str, change: Callable[[Record], Record]) -> Change:
        """Apply ``change`` in Python and compare-and-set the result (see the module docstring).

        ``change`` may run more than once, on newer records, when other writers
        change the document in between; it must be pure.
        """
        if not _encodable(doc_id):
            raise DocumentNotFoundError(doc_id)
        known = self._cache.get(doc_id)
        fresh = known is None
        if known is None:
            known = self._read(doc_id)
        while True:
            try:
                new = change(known.record)
            except Exception:
                if fresh:
                    raise
                # Computed on a cached record, which may be stale: decide on the stored one.
                known, fresh = self._read(doc_id), True
                continue
            landed = self._compare_and_set(doc_id, known, new)
            if isinstance(landed, Change):
                return landed
            if landed is None:  # cannot happen without a lease precondition
                raise RuntimeError("the store refused a change it had no precondition for")
            known, fresh = landed, True

    def _read(self, doc_id: str) -> _Known:
        """The stored version and record of ``doc_id`` (now cached)."""
        reply = self._call("read", doc_id)
        if not reply or not reply[1]:
            self._cache.drop(doc_id)
            raise DocumentNotFoundError(doc_id)
        known = _Known(int(reply[0]), _decode(reply[1]))
        self._cache.put(doc_id, known)
        return known

    def _compare_and_set(
        self, doc_id: str, known: _Known, new: Record, expired_epoch: str = ""
    ) -> Change | _Known | None:
        """Write ``new`` if the record is still at ``known``'s version; else the current one.

        With ``expired_epoch``: only if that lease has expired, else ``None``.
        """
        args = _commit_args(known.record, new)
        try:
            moves = _index_moves(known.record, new)
            tally = _tally_args(known.record, new)
            reply = self._call("cas", doc_id, known.version, *args, expired_epoch, *tally, *moves)
        except StoreUnavailableError:
            self._cache.drop(doc_id)  # the change may or may not have been made
            raise
        outcome = reply[0]
        if outcome == b"ok":
            seq: int = reply[1]
            self._cache.put(doc_id, _Known(seq, new))
            return Change(seq, "updated", doc_id, new)
        if outcome == b"unexpired":
            return None
        if outcome == b"missing" or not reply[2]:
            self._cache.drop(doc_id)
            raise DocumentNotFoundError(doc_id)
        current = _Known(int(reply[1]), _decode(reply[2]))
        self._cache.put(doc_id, current)
        return current

    # -- throughput counters ---------------------------------------------------------

    def tallies(self, since: float, until: float) -> list[Tally]:
        # Minutes before the oldest that can still be kept are not asked for: the
        # server looks up each minute of the range, so the range stays a day's at most.
        first = math.ceil(max(since, time.time() - self.TALLY_SECONDS - 3600) / 60) * 60
        last = math.ceil(until / 60) * 60 - 60
        if last < first:
            return []
        minutes = range(first, last + 1, 60)
        reply = self._call("tallies", *(str(m) for m in minutes))
        return [
            Tally(minute, int(done or 0), int(failed or 0), int(pages or 0))
            for minute, (done, failed, pages) in zip(minutes, reply, strict=True)
            if done is not None or failed is not None
        ]

    # -- leases (the server's clock: see redis.lua) --------------------------------

    def now(self) -> float:
        """The Redis server's ``TIME``."""
        return float(self._call("now"))

    def renew_lease(self, doc_id: str, epoch: int, seconds: float) -> bool:
        if not _encodable(doc_id):
            return False
        return bool(self._call("renew", doc_id, str(epoch), repr(float(seconds))))

    def expired_leases(self, limit: int) -> list[tuple[str, int]]:
        if limit <= 0:
            return []
        reply = self._call("expired", str(limit))
        return [(reply[i].decode(), int(reply[i + 1])) for i in range(0, len(reply), 2)]

    def leases(self) -> list[LeaseEntry]:
        reply = self._call("leases")
        return [
            LeaseEntry(reply[i].decode(), int(reply[i + 1]), reply[i + 2].decode(), float(reply[i + 3]))
            for i in range(0, len(reply), 4)
        ]

    def expire_lease(self, doc_id: str, epoch: int, change: Callable[[Record], Record]) -> Change | None:
        if not _encodable(doc_id):
            return None
        try:
            known = self._read(doc_id)
        except DocumentNotFoundError:
            return None
        while True:
            landed = self._compare_and_set(doc_id, known, change(known.record), str(epoch))
            if landed is None or isinstance(landed, Change):
                return landed
            known = landed

    # -- the worker registry (the server's clock) -----------------------------------

    def heartbeat(self, worker_id: str, info: Mapping[str, Any], seconds: float) -> None:
        self._call("heartbeat", worker_id, _encode(dict(info)), repr(float(seconds)))

    def workers(self) -> list[WorkerEntry]:
        reply = self._call("workers")
        entries = [
            WorkerEntry(reply[i].decode(), _decode(reply[i + 1]), float(reply[i + 2]), float(reply[i + 3]))
            for i in range(0, len(reply), 4)
        ]
        return sorted(entries, key=lambda e: e.worker_id)

    def forget_worker(self, worker_id: str) -> None:
        self._call("forget", worker_id)

    # -- named cursors and their outboxes (WATCH/MULTI on the cursor's key) -------------

    def _cursor_key(self, name: str) -> str:
        return self._key("cursor:" + name)

    def _transaction(self, keys: tuple[str, ...], attempt: Callable[[Pipeline], Any]) -> Any:
        """``attempt(pipe)`` with ``keys`` watched, again whenever another client wrote one meanwhile.

        ``attempt`` reads (immediate mode), then either returns without ``multi()`` or
        queues its writes after ``multi()``; they are executed only if no key changed.
        """
        try:
            with self._client.pipeline() as pipe:
                while True:
                    try:
                        pipe.watch(*keys)  # type: ignore[no-untyped-call]
                        result = attempt(pipe)
                        if pipe.explicit_transaction:
                            pipe.execute()
                        return result
                    except WatchError:
                        continue
        except RedisError as exc:
            raise self._unavailable(exc) from exc

    @staticmethod
    def _server_now(pipe: Pipeline) -> float:
        seconds, micros = pipe.time()
        return seconds + micros / 1_000_000

    def claim_cursor(self, name: str, owner: str, seconds: float, start: int) -> int | None:
        key = self._cursor_key(name)

        def claim(pipe: Pipeline) -> int | None:
            position, held_by, expires = cast(list[bytes | None], pipe.hmget(key, ["p", "o", "e"]))
            now = self._server_now(pipe)
            if held_by and held_by.decode() != owner and float(expires or 0) >= now:
                return None
            pipe.multi()
            fields: dict[str, str | int] = {"o": owner, "e": repr(now + seconds)}
            if position is None:
                fields["p"] = start
            pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
            return start if position is None else int(position)

        result: int | None = self._transaction((key,), claim)
        return result

    def _fenced(
        self,
        name: str,
        owner: str,
        writes: Callable[[Pipeline], None],
        also_watch: str = "",
        multi: bool = True,
    ) -> bool:
        """Run ``writes`` in a transaction made only while ``owner`` holds a live lease on ``name``.

        With ``multi`` the transaction is started for ``writes``; else ``writes`` may read
        first and starts it itself (or makes no write).
        """
        key = self._cursor_key(name)

        def attempt(pipe: Pipeline) -> bool:
            held_by, expires = cast(list[bytes | None], pipe.hmget(key, ["o", "e"]))
            if held_by is None or held_by.decode() != owner or float(expires or 0) < self._server_now(pipe):
                return False
            if multi:
                pipe.multi()
            writes(pipe)
            return True

        done: bool = self._transaction((key, also_watch) if also_watch else (key,), attempt)
        return done

    def move_cursor(self, name: str, owner: str, position: int, add: Sequence[OutboxEntry]) -> bool:
        order, data = self._key("outbox:" + name), self._key("outbox_data:" + name)
        texts = {e.key: _encode(e.data) for e in add}

        def writes(pipe: Pipeline) -> None:
            pipe.hset(self._cursor_key(name), "p", position)
            if add:
                pipe.zadd(order, {e.key: e.seq for e in add})
                pipe.hset(data, mapping=texts)  # type: ignore[arg-type]

        return self._fenced(name, owner, writes)

    def outbox(self, name: str, limit: int) -> list[OutboxEntry]:
        if limit <= 0:
            return []
        try:
            ranked = cast(
                list[tuple[bytes, float]],
                self._client.zrange(self._key("outbox:" + name), 0, limit - 1, withscores=True),
            )
            texts = (
                cast(
                    list[bytes | None],
                    self._client.hmget(self._key("outbox_data:" + name), [k for k, _ in ranked]),
                )
                if ranked
                else []
            )
        except RedisError as exc:
            raise self._unavailable(exc) from exc
        return [
            OutboxEntry(key.decode(), int(seq), _decode(text))
            for (key, seq), text in zip(ranked, texts, strict=True)
            if text is not None  # settled between the two reads
        ]

    def settle(self, name: str, owner: str, key: str, data: dict[str, Any] | None) -> bool:
        order, stored = self._key("outbox:" + name), self._key("outbox_data:" + name)
        text = None if data is None else _encode(data)

        def writes(pipe: Pipeline) -> None:
            if text is None:
                pipe.zrem(order, key)
                pipe.hdel(stored, key)
            elif pipe.hexists(stored, key):
                pipe.multi()
                pipe.hset(stored, key, text)

        return self._fenced(name, owner, writes, also_watch=stored, multi=text is None)

    def release_cursor(self, name: str, owner: str) -> None:
        key = self._cursor_key(name)

        def release(pipe: Pipeline) -> None:
            if cast(bytes | None, pipe.hget(key, "o")) == owner.encode():
                pipe.multi()
                pipe.hset(key, mapping={"o": "", "e": "0"})

        self._transaction((key,), release)

    def get(self, doc_id: str) -> Record | None:
        if not _encodable(doc_id):
            return None
        try:
            text = cast(bytes | None, self._client.hget(self._key("doc:" + doc_id), "r"))
        except RedisError as exc:
            raise self._unavailable(exc) from exc
        return None if text is None else _decode(text)

    def recent(self, limit: int) -> list[Record]:
        if limit <= 0:
            return []
        return [_decode(text) for text in self._call("recent", str(limit - 1))]

    def active(self) -> list[Record]:
        return [_decode(text) for text in self._call("active")]

    def counts(self) -> dict[str, int]:
        try:
            stored = cast(dict[bytes, bytes], self._client.hgetall(self._key("counts")))
        except RedisError as exc:
            raise self._unavailable(exc) from exc
        return {status.decode(): int(n) for status, n in stored.items() if int(n) > 0}

    def expire(self, before: float, limit: int) -> list[Change]:
        if limit <= 0:
            return []
        reply = self._call("expire", f"({float(before)!r}", str(limit))
        removed = [
            Change(int(reply[i]), "removed", reply[i + 1].decode(), None) for i in range(0, len(reply), 2)
        ]
        for change in removed:
            self._cache.drop(change.doc_id)
        return removed

    def remove_finished(self, doc_id: str) -> Change | None:
        if not _encodable(doc_id):
            return None
        seq = int(self._call("remove", doc_id))
        self._cache.drop(doc_id)
        return Change(seq, "removed", doc_id, None) if seq else None

    def changes_since(self, seq: int, limit: int) -> list[Change]:
        return [_change(entry_id, fields) for entry_id, fields in self._log_window(seq, limit)]

    def moves_since(self, seq: int, limit: int) -> tuple[list[Change], int]:
        # The window of changes_since; a report's entry has the "m" field (eight fields, not six).
        entries = self._log_window(seq, limit)
        moves = [_change(entry_id, fields) for entry_id, fields in entries if len(fields) <= 6]
        return moves, _seq_of(entries[-1][0]) if entries else seq

    def _log_window(self, seq: int, limit: int) -> list[tuple[bytes, list[bytes]]]:
        if limit <= 0:
            return []
        return cast(list[tuple[bytes, list[bytes]]], self._call("log", f"{max(seq, 0) + 1}-0", str(limit)))

    def last_seq(self) -> int:
        try:
            value = self._client.get(self._key("seq"))
        except RedisError as exc:
            raise self._unavailable(exc) from exc
        return int(cast(bytes, value)) if value is not None else 0

    def epoch(self) -> str:
        """A random id kept in the ``epoch`` key, made by the first reader that finds it missing.

        A server that restarted empty has lost the key with everything else, so
        the next reader makes a new one (``SET NX``: one wins when several race).
        """
        key = self._key("epoch")
        try:
            pipe = self._client.pipeline(transaction=False)
            pipe.set(key, secrets.token_hex(8), nx=True)
            pipe.get(key)
            _, value = pipe.execute()
        except RedisError as exc:
            raise self._unavailable(exc) from exc
        return cast(bytes, value).decode()

    def wait_for_change(self, after_seq: int, timeout: float) -> None:
        """Block until a change after ``after_seq`` is published, or ``timeout`` passes.

        Wakes on the store's pub/sub channel, not by polling. Waiters in
        several threads take turns on one subscription.
        """
        deadline = time.monotonic() + timeout
        if not self._listen_lock.acquire(timeout=max(timeout, 0.0)):
            return
        try:
            self._wait(after_seq, deadline)
        except RedisError as exc:
            self._drop_pubsub()
            raise self._unavailable(exc) from exc
        finally:
            self._listen_lock.release()

    def _wait(self, after_seq: int, deadline: float) -> None:
        pubsub = self._subscribed(deadline)
        # Subscribed before reading the counter, so no change falls between the two.
        heard = self.last_seq()
        while heard <= after_seq:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            message = pubsub.get_message(timeout=left)
            if message is not None and message["type"] == "message":
                heard = max(heard, int(message["data"]))

    def _subscribed(self, deadline: float) -> PubSub:
        if self._pubsub is None:
            # Kept from the start, so that a failure below closes it (_drop_pubsub).
            self._pubsub = pubsub = self._client.pubsub()  # type: ignore[no-untyped-call]
            pubsub.subscribe(self._key("changes"))
            # Wait for the server's confirmation: only then are changes certain to arrive.
            while (left := deadline - time.monotonic()) > 0:
                message = pubsub.get_message(timeout=left)
                if message is not None and message["type"] == "subscribe":
                    break
        return self._pubsub

    def _drop_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            try:
                pubsub.close()
            except RedisError:
                log.debug("closing a broken pub/sub connection failed", exc_info=True)

    # -- listing -----------------------------------------------------------------

    GLOBAL_SORTS = frozenset({"updated"})

    def scan(
        self,
        status: str | None,
        sort: Sort,
        descending: bool,
        after: Position | None,
        limit: int,
        text: str | None,
    ) -> list[Entry]:
        """One round trip: a range of one listing index, O(limit) (``text`` is checked by the caller)."""
        if sort == "updated":
            index = "recent" if status is None else f"q:{status}"
            first, last = _score_bounds(after, descending)
            reply = self._call("range", index, "score", "1" if descending else "0", first, last, str(limit))
            return [
                (int(float(reply[i + 1])), reply[i].decode(), _decode(reply[i + 2]))
                for i in range(0, len(reply), 3)
            ]
        if status is None:
            raise ValueError("the redis store walks one status at a time in this order")
        index = f"{_LEX_INDEX[sort]}:{status}"
        first, last = _lex_bounds(sort, after, descending)
        reply = self._call("range", index, "lex", "1" if descending else "0", first, last, str(limit))
        return [_lex_entry(sort, reply[i], reply[i + 2]) for i in range(0, len(reply), 3)]

    def close(self) -> None:
        locked = self._listen_lock.acquire(timeout=2.0)
        try:
            self._drop_pubsub()
        finally:
            if locked:
                self._listen_lock.release()
        self._client.close()

    def __repr__(self) -> str:
        return f"<RedisStore {self.url!r} prefix={self._prefix!r}>"


def _encodable(doc_id: str) -> bool:
    # A doc_id redis-py cannot encode (a lone surrogate) cannot have been stored.
    try:
        doc_id.encode()
    except UnicodeEncodeError:
        return False
    return True


def _change(entry_id: bytes, fields: list[bytes]) -> Change:
    # fields: 't', the change type, 'd', the doc_id, then 'r', the record's text (none for a
    # removal), then 'm' for a report.
    kind = cast(ChangeType, fields[1].decode())
    record = _decode(fields[5]) if len(fields) > 4 else None
    return Change(_seq_of(entry_id), kind, fields[3].decode(), record)


def _seq_of(entry_id: bytes) -> int:
    # A log entry's ID is "<seq>-0".
    return int(entry_id.split(b"-", 1)[0])


# -- listing indexes ------------------------------------------------------------------
# Per status: "q:<status>", doc_ids by the seq of their last change (written by every
# change, in its commit); "t:<status>" and "n:<status>", lex indexes of
# "<key>\0<doc_id>" by the attempt's start (fixed width, so that text order is number
# order) and by filename (see docstatus.stores.query).

_LEX_INDEX = {"started": "t", "filename": "n"}
#: The slot of each lex index in a record's hash (slot 1 is its "q:" entry).
_LEX_SLOTS: tuple[tuple[str, Sort], ...] = (("2", "started"), ("3", "filename"))


def _lex_member(sort: Sort, key: Any, doc_id: str) -> str:
    text = f"{float(key):020.6f}" if sort == "started" else str(key)
    return f"{text}\0{doc_id}"


def _index_moves(old: Record | None, new: Record) -> list[str]:
    """The listing index moves of a change (see ``move_indexes`` in redis.lua): four strings each."""
    doc_id, status = new["doc_id"], new["status"]
    moved = old is None or old["status"] != status
    moves: list[str] = []
    if old is not None and moved:
        moves += ["1", f"q:{old['status']}", "", doc_id]
    moves += ["1", f"q:{status}", "#", doc_id]
    if old is None or moved or started_of(old) != started_of(new):
        for slot, sort in _LEX_SLOTS:
            if old is not None:
                moves += [
                    slot,
                    f"{_LEX_INDEX[sort]}:{old['status']}",
                    "",
                    _lex_member(sort, _key(old, sort), doc_id),
                ]
            moves += [slot, f"{_LEX_INDEX[sort]}:{status}", "0", _lex_member(sort, _key(new, sort), doc_id)]
    return moves


def _key(record: Record, sort: Sort) -> Any:
    return started_of(record) if sort == "started" else name_key(record["filename"])


def _score_bounds(after: Position | None, descending: bool) -> tuple[str, str]:
    if descending:
        return ("+inf" if after is None else f"({after[0]}"), "-inf"
    return ("-inf" if after is None else f"({after[0]}"), "+inf"


def _lex_bounds(sort: Sort, after: Position | None, descending: bool) -> tuple[str, str]:
    start = None if after is None else "(" + _lex_member(sort, after[0], after[1])
    return (start or "+", "-") if descending else (start or "-", "+")


def _lex_entry(sort: Sort, member: bytes, text: bytes) -> Entry:
    key_text, _, doc_id = member.decode().rpartition("\0")
    key: Any = float(key_text) if sort == "started" else key_text
    return key, doc_id, _decode(text)
