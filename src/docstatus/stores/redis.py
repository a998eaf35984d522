"""The Redis store: one status store shared by many processes and machines.

Every change is one round trip: Lua code (``redis.lua`` beside this file)
checks the rules and applies the change atomically on the server, with the
same result as :class:`~docstatus.records.Mutation` gives in Python. The
code's tables (transitions, default stages, progress ranges) are rendered
from :mod:`docstatus.models`, so the lifecycle is defined once.

On Redis 7 and later the code is a Functions library, loaded once
(``FUNCTION LOAD``, when a call finds it missing) and called with ``FCALL``:
its tables and functions are built at load time, not on every call. Its name
carries a digest of the code (``docstatus_<digest>``), so processes running
different versions share a server safely; libraries of versions no longer in
use can be removed with ``FUNCTION DELETE``. Older servers (no ``FCALL``) run
the same code as a script with ``EVALSHA``.

Data layout, every key under the prefix (``docstatus:`` by default):

* ``doc:<doc_id>`` — the record, kept once: a hash with one field per record key, each
  value that key's JSON text. A change reads it whole and writes back only the fields it
  changed; readers join the fields into one JSON object;
* ``recent`` — sorted set of doc_ids by the seq of their last change (``recent``;
  the score is also the record's version for the optimistic fallback below);
* ``active`` — set of unfinished doc_ids (``active``), written only when a document
  starts or finishes; ``active()`` orders them by their ``recent`` score;
* ``finished`` — sorted set of finished doc_ids by finish time (``expire``);
* ``counts`` — hash of status -> number of records;
* ``seq`` — the change counter; ``log`` — a stream of changes with IDs ``<seq>-0``,
  capped near ``LOG_SIZE`` (``changes_since``); an entry is ``t`` (the change type),
  ``d`` (the doc_id), then the record's fields as in its hash (none for a removal);
* ``changes`` — a pub/sub channel carrying each change's seq (``wait_for_change``).

A mutation the script does not reproduce (values of types the manager never
sends) is applied by an optimistic read-modify-write instead: read the record
and its version, run the Mutation in Python, write it back only if the version
is unchanged, else retry. Either way a change is atomic.

The Lua code uses keys it derives from the prefix, so the store needs a
standalone Redis (or one shard), not Redis Cluster.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from importlib import resources
from json.encoder import encode_basestring_ascii as _json_string  # what json.dumps uses
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic_core import from_json

from ..errors import (
    DocumentNotFoundError,
    DuplicateDocumentError,
    MissingDependencyError,
    StoreUnavailableError,
)
from ..models import _RANGES, DEFAULT_STAGE, FINISHED, RateEstimator, Status, can_transition
from ..records import Mutation, Record, iso
from .base import Change, ChangeType, Store

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.client import PubSub
    from redis.exceptions import NoScriptError, RedisError, ResponseError
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

_KINDS = frozenset({"update", "complete", "fail", "requeue"})
# A status (a plain string or a Status member) -> its value.
_STATUSES: dict[str, str] = {s.value: s.value for s in Status}


def _lua_string(text: str) -> str:
    escaped = "".join(
        chr(b) if 32 <= b < 127 and chr(b) not in '"\\' else f"\\{b:03d}" for b in text.encode()
    )
    return f'"{escaped}"'


def _lua_table(entries: dict[str, str]) -> str:
    return "{" + ", ".join(f"[{_lua_string(k)}] = {v}" for k, v in entries.items()) + "}"


def _rules() -> str:
    """The rules of ``models`` as Lua definitions."""
    statuses = [s.value for s in Status]
    legal = {a: _lua_table({b: "true" for b in statuses if can_transition(a, b)}) for a in statuses}
    ranges = {Status(s).value: span for s, span in _RANGES.items()}
    tables = {
        "LEGAL": legal,
        "FINAL": {s.value: "true" for s in FINISHED},
        "QUOTED": {s: _lua_string(json.dumps(s)) for s in statuses},
        "STAGE": {s.value: _lua_string(json.dumps(DEFAULT_STAGE[s])) for s in Status},
        "START": {s: repr(start) for s, (start, _) in ranges.items()},
        "WIDTH": {s: repr(width) for s, (_, width) in ranges.items()},
    }
    lines = [f"local {name} = {_lua_table(entries)}" for name, entries in tables.items()]
    lines.append(
        f"local SMOOTHING, MIN_INTERVAL = {RateEstimator.SMOOTHING!r}, {RateEstimator.MIN_INTERVAL!r}"
    )
    lines.append(f"local LOG_SIZE = {RedisStore.LOG_SIZE}")
    return "\n".join(lines)


#: Operations that only read (registered with the ``no-writes`` flag, called with ``FCALL_RO``).
_READ_ONLY = frozenset({"read", "recent", "active", "log"})
_OPERATIONS = ("modify", "create", "read", "put", "recent", "active", "log", "expire")

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
    return source.replace("__RULES__", _rules(), 1)


@functools.cache
def _library() -> tuple[str, str]:
    """The Functions library and the prefix of its function names (``docstatus_<digest>_``)."""
    flags = {op: "{'no-writes'}" if op in _READ_ONLY else "{}" for op in _OPERATIONS}
    calls = "".join(f"register('{op}', {flags[op]})\n" for op in _OPERATIONS)
    body = _source().replace("\n__ENTRY__", _REGISTER + calls, 1)
    digest = hashlib.sha1(body.encode()).hexdigest()[:16]
    name = f"docstatus_{digest}"
    header = f"#!lua name={name}\nlocal NAME = {_lua_string(name + '_')}\n"
    return header + body, name + "_"


@functools.cache
def _script() -> str:
    """The same code as a script for ``EVALSHA`` (servers older than Redis 7)."""
    return _source().replace("\n__ENTRY__", _DISPATCH, 1)


def _script_args(change: Callable[[Record], Record]) -> list[str] | None:
    """The script's arguments for ``change``, or ``None`` when it must run in Python."""
    if not isinstance(change, Mutation) or change.kind not in _KINDS:
        return None
    now, target, progress, fields = change.now, change.target, change.progress, change.fields
    if type(now) is not float or not math.isfinite(now) or not isinstance(fields, dict):
        return None
    if change.kind == "update" and target not in _STATUSES:
        return None
    if progress is not None and (type(progress) is not float or not math.isfinite(progress)):
        return None
    pairs = _field_pairs(fields, quote_names=change.kind == "complete")
    if pairs is None:
        return None
    return [
        change.kind,
        repr(now),
        f'"{iso(now)}"',  # ISO timestamps need no JSON escapes
        _STATUSES.get(target, "") if isinstance(target, str) else "",
        "" if progress is None else repr(progress),
        *pairs,
    ]


def _field_pairs(fields: dict[str, Any], *, quote_names: bool) -> list[str] | None:
    """``name, JSON value`` for every field (names as JSON too with ``quote_names``)."""
    pairs = []
    try:
        for name, value in fields.items():
            if not isinstance(name, str):
                return None
            pairs.append(json.dumps(name) if quote_names else name)
            pairs.append(_json_value(value))
    except (TypeError, ValueError):
        return None
    return pairs


def _json_value(value: Any) -> str:
    # The common cases without the json module's overhead; same text as json.dumps.
    kind = type(value)
    if value is None:
        return "null"
    if kind is str:
        return _json_string(value)
    if kind is int:
        return str(value)
    if kind is float and math.isfinite(value):
        return repr(value)
    return json.dumps(value, allow_nan=False)


def _record_args(record: Record) -> list[str]:
    """``record`` as the stored hash has it: each name (JSON-escaped, unquoted), then its JSON text."""
    pairs = []
    for name, value in record.items():
        pairs.append(_json_string(name)[1:-1])
        pairs.append(_json_value(value))
    return pairs


def _record(flat: list[bytes]) -> Record:
    """The record from a stored hash's name, JSON text pairs (as HGETALL lists them)."""
    return _join(flat[::2], flat[1::2])


def _join(names: list[bytes], texts: list[bytes]) -> Record:
    """The record whose keys are ``names`` (JSON-escaped) with the JSON ``texts`` as values."""
    # {"name":text,"name":text} put together by slice assignments, without a Python loop.
    parts = [b',"', b"", b'":', b""] * len(names)
    parts[1::4] = names
    parts[3::4] = texts
    parts[0] = b'{"'
    parts.append(b"}")
    return _parse(b"".join(parts))


def _parse(text: bytes) -> Record:
    try:
        record: Record = from_json(text)
    except ValueError:
        record = json.loads(text)  # \u escapes of lone surrogates, which pydantic-core refuses
    return record


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

    Thread-safe (redis-py's connection pool). Every change is atomic on the
    server; durability is the server's (``appendonly yes`` with
    ``appendfsync always`` loses no acknowledged change). When the server
    cannot be reached, every method raises
    :class:`~docstatus.errors.StoreUnavailableError`; the store works again
    as soon as the server is back. A change whose reply was lost with the
    connection may or may not have been made.
    """

    shared = True

    #: Changes kept in the log for event streams to resume from (approximately:
    #: the stream is trimmed in whole blocks, so a few more may be kept).
    LOG_SIZE = 10_000

    #: How many changes were applied by the Python fallback rather than the
    #: script (mutations with values the script does not reproduce).
    fallbacks: int

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
        self.fallbacks = 0
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

    def _call(self, op: str, *args: str) -> Any:
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

    def _run(self, op: str, args: tuple[str, ...]) -> Any:
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
        reply = self._call("create", doc_id, *_record_args(record))
        if reply[0] == b"duplicate":
            raise DuplicateDocumentError(doc_id)
        return Change(int(reply[1]), "created", doc_id, record)

    def modify(self, doc_id: str, change: Callable[[Record], Record]) -> Change:
        args = _script_args(change) if _encodable(doc_id) else None
        if args is None:
            return self._modify_in_python(doc_id, change)
        reply = self._call("modify", doc_id, *args)
        outcome = reply[0]
        if outcome == b"ok":
            return Change(reply[1], "updated", doc_id, _record(reply[2]))
        if outcome == b"missing":
            raise DocumentNotFoundError(doc_id)
        if outcome == b"refused":
            # The script refused the change for the record it saw; the same rules
            # in Python, on that record, raise the exact error they define.
            change(_record(reply[1]))
            log.warning("the redis script refused a change the Python rules allow; applying it in Python")
        return self._modify_in_python(doc_id, change)

    def _modify_in_python(self, doc_id: str, change: Callable[[Record], Record]) -> Change:
        if not _encodable(doc_id):
            raise DocumentNotFoundError(doc_id)
        self.fallbacks += 1
        while True:
            read = self._call("read", doc_id)
            if not read:
                raise DocumentNotFoundError(doc_id)
            new = change(_record(read[0]))
            reply = self._call("put", doc_id, read[1].decode(), *_record_args(new))
            if reply[0] == b"ok":
                return Change(int(reply[1]), "updated", doc_id, new)

    def get(self, doc_id: str) -> Record | None:
        if not _encodable(doc_id):
            return None
        try:
            stored = cast(dict[bytes, bytes], self._client.hgetall(self._key("doc:" + doc_id)))
        except RedisError as exc:
            raise self._unavailable(exc) from exc
        if not stored:
            return None
        return _join(list(stored), list(stored.values()))

    def recent(self, limit: int) -> list[Record]:
        if limit <= 0:
            return []
        return [_record(flat) for flat in self._call("recent", str(limit - 1))]

    def active(self) -> list[Record]:
        return [_record(flat) for flat in self._call("active")]

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
        return [
            Change(int(reply[i]), "removed", reply[i + 1].decode(), None) for i in range(0, len(reply), 2)
        ]

    def changes_since(self, seq: int, limit: int) -> list[Change]:
        if limit <= 0:
            return []
        entries = self._call("log", f"{max(seq, 0) + 1}-0", str(limit))
        return [_change(entry_id, fields) for entry_id, fields in entries]

    def last_seq(self) -> int:
        try:
            value = self._client.get(self._key("seq"))
        except RedisError as exc:
            raise self._unavailable(exc) from exc
        return int(cast(bytes, value)) if value is not None else 0

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
    # fields: 't', the change type, 'd', the doc_id, then the record's pairs (none for a removal).
    kind = cast(ChangeType, fields[1].decode())
    record = _record(fields[4:]) if len(fields) > 4 else None
    return Change(int(entry_id.split(b"-", 1)[0]), kind, fields[3].decode(), record)
