"""Settings of the docstatus service (``docstatus serve``), from arguments or ``DOCSTATUS_*``.

Nothing is read at import time: :meth:`ServiceSettings.from_env` reads the
environment when it is called. Every value is checked when the settings are
built, so a bad value fails at start-up with a :class:`~docstatus.errors.ConfigError`
that names the setting, never later inside a request or a worker.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError

__all__ = ["ENV_PREFIX", "ServiceSettings", "cpu_count"]

ENV_PREFIX = "DOCSTATUS_"

MAX_WORKERS = 256


def cpu_count() -> int:
    """The CPUs this process may run on (a container's or taskset's limit), not the machine's."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _env_name(field_name: str) -> str:
    return ENV_PREFIX + _ENV_SUFFIX.get(field_name, field_name.upper())


# Settings whose variable is not simply the upper-cased field name.
_ENV_SUFFIX = {"data_dir": "DATA"}


def _parse_int(name: str, raw: str) -> int:
    try:
        return int(raw.strip().replace("_", ""))
    except ValueError:
        raise ConfigError(name, raw, "not an integer") from None


def _parse_float(name: str, raw: str) -> float:
    try:
        return float(raw.strip())
    except ValueError:
        raise ConfigError(name, raw, "not a number") from None


def _parse_origins(name: str, raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _parse_token(name: str, raw: str) -> str | None:
    return raw or None


def _parse_str(name: str, raw: str) -> str:
    return raw.strip()


def _parse_path(name: str, raw: str) -> Path:
    if not raw.strip():
        raise ConfigError(name, raw, "must not be empty")
    return Path(raw.strip()).expanduser()


# How each setting's environment string becomes a value.
_PARSERS: dict[str, Callable[[str, str], Any]] = {
    "host": _parse_str,
    "port": _parse_int,
    "store": _parse_str,
    "queue": _parse_token,
    "uploads": _parse_path,
    "data_dir": _parse_path,
    "workers": _parse_int,
    "max_upload_bytes": _parse_int,
    "max_body_bytes": _parse_int,
    "api_token": _parse_token,
    "cors_origins": _parse_origins,
    "shutdown_timeout": _parse_float,
    "document_timeout": _parse_float,
    "lease_seconds": _parse_float,
    "max_attempts": _parse_int,
    "max_streams": _parse_int,
    "limit_concurrency": _parse_int,
    "header_timeout": _parse_float,
    "keep_alive_timeout": _parse_float,
    "child_memory_mb": _parse_int,
    "progress_interval": _parse_float,
    "notify_url": _parse_str,
    "notify_secret": _parse_token,
    "notify_retry_seconds": _parse_float,
    "notify_backoff_seconds": _parse_float,
    "notify_backoff_max_seconds": _parse_float,
    "notify_timeout": _parse_float,
}


def _check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(name, value, "must be an integer")
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ConfigError(name, value, f"must be {bounds}")
    return value


def _check_text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(name, value, "must be a non-empty string")
    if not value.isprintable():
        raise ConfigError(name, value, "must contain only printable characters")
    return value


def _check_store(value: object) -> str:
    url = _check_text("store", value)
    if not urlsplit(url).scheme:
        raise ConfigError("store", url, "must be a store URL such as sqlite:///path.db or memory://")
    return url


def _check_queue(value: object) -> str | None:
    if value is None or value == "":
        return None
    url = _check_text("queue", value)
    if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
        raise ConfigError("queue", url, "must be a Redis URL such as redis://localhost:6379/0")
    return url


def _check_path(name: str, value: object) -> Path:
    if isinstance(value, str):
        value = Path(value).expanduser() if value.strip() else None
    if not isinstance(value, Path) or "\x00" in str(value):
        raise ConfigError(name, value, "must be a non-empty path")
    return value


def _check_timeout(value: object, name: str = "shutdown_timeout") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(name, value, "must be a number of seconds")
    if not math.isfinite(value) or value < 0:
        raise ConfigError(name, value, "must be a finite number of seconds >= 0")
    return float(value)


def _check_positive_seconds(value: object, name: str) -> float:
    seconds = _check_timeout(value, name)
    if seconds <= 0:
        raise ConfigError(name, value, "must be more than 0 seconds")
    return seconds


def _check_origins(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        value = _parse_origins("cors_origins", value)
    if not isinstance(value, (tuple, list)) or not all(isinstance(o, str) and o for o in value):
        raise ConfigError("cors_origins", value, "must be a list of origins")
    return tuple(value)


def _check_token(value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not value.isprintable() or value != value.strip():
        # The token itself is a secret: never echo it in the error.
        raise ConfigError("api_token", "<hidden>", "must be printable text without surrounding spaces")
    return value


def _check_notify_urls(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    if not isinstance(value, (tuple, list)) or not all(isinstance(u, str) for u in value):
        raise ConfigError("notify_url", value, "must be one or more http:// or https:// URLs")
    for url in value:
        _check_notify_url(url)
    if len(set(value)) < len(value):
        raise ConfigError("notify_url", value, "names a URL twice")
    return tuple(value)


def _check_notify_url(url: str) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises for a port that is not a number in range
    except ValueError as exc:
        raise ConfigError("notify_url", url, f"is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("notify_url", url, "must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ConfigError("notify_url", url, "must not hold credentials (they would not be sent)")
    if not url.isprintable() or parts.fragment:
        raise ConfigError("notify_url", url, "must be printable and have no #fragment")


def _check_notify_secret(value: object, urls: tuple[str, ...]) -> str | None:
    if value is None or value == "":
        if urls:
            raise ConfigError(
                "notify_url", " ".join(urls), "needs a notify_secret (DOCSTATUS_NOTIFY_SECRET) to sign with"
            )
        return None
    if not isinstance(value, str) or not value.isprintable():
        # A secret: never echo it in the error.
        raise ConfigError("notify_secret", "<hidden>", "must be printable text")
    return value


@dataclass(frozen=True)
class ServiceSettings:
    """Everything ``docstatus serve`` needs; immutable and validated on construction.

    Building one with an invalid value raises :class:`~docstatus.errors.ConfigError`
    (a ``ValueError``) naming the setting. ``str`` paths are accepted and
    become :class:`~pathlib.Path`; a comma-separated string is accepted for
    ``cors_origins``; an empty ``api_token`` means no token.
    """

    host: str = "127.0.0.1"
    port: int = 8002
    store: str = "sqlite:///docstatus-data/status.db"
    #: The RQ queue (redis://...) documents are enqueued on for ``docstatus worker``; None: local only.
    queue: str | None = None
    uploads: Path = Path("docstatus-data/uploads")
    data_dir: Path = Path("docstatus-data")
    workers: int = field(default_factory=cpu_count)
    max_upload_bytes: int = 100 * 1024 * 1024
    max_body_bytes: int = 1 * 1024 * 1024
    api_token: str | None = field(default=None, repr=False)
    cors_origins: tuple[str, ...] = ()
    shutdown_timeout: float = 30.0
    document_timeout: float = 600.0
    lease_seconds: float = 30.0
    max_attempts: int = 3
    #: Event streams (``GET /status/stream``) served at once; one more is a 503.
    max_streams: int = 500
    #: Open connections (event streams included) and requests at once; beyond it a request gets a 503.
    limit_concurrency: int = 1000
    #: Seconds a connection may take to send a request's headers before it is closed.
    header_timeout: float = 10.0
    #: Seconds an idle connection is kept open between requests.
    keep_alive_timeout: float = 5.0
    #: MiB of address space each document's child process may use; past it the document fails.
    child_memory_mb: int = 4096
    #: Seconds between writes of one document's progress within a stage (0: every report).
    progress_interval: float = 0.1
    #: Receivers of a POST for every document that completes or fails (see :mod:`docstatus.notify`).
    notify_url: tuple[str, ...] = ()
    #: The key of the deliveries' HMAC-SHA256 signature; needed with ``notify_url``.
    notify_secret: str | None = field(default=None, repr=False)
    #: Seconds after a document ended during which its delivery is retried; then it is given up.
    notify_retry_seconds: float = 3600.0
    #: The delay before the first retry; each further one doubles, up to ``notify_backoff_max_seconds``.
    notify_backoff_seconds: float = 1.0
    notify_backoff_max_seconds: float = 300.0
    #: Seconds a receiver may take to answer a delivery before it counts as failed (and is retried).
    notify_timeout: float = 10.0

    def __post_init__(self) -> None:
        checked = {
            "host": _check_text("host", self.host),
            "port": _check_int("port", self.port, 0, 65535),
            "store": _check_store(self.store),
            "uploads": _check_path("uploads", self.uploads),
            "data_dir": _check_path("data_dir", self.data_dir),
            "queue": _check_queue(self.queue),
            "workers": _check_int("workers", self.workers, 0, MAX_WORKERS),
            "max_upload_bytes": _check_int("max_upload_bytes", self.max_upload_bytes, 1),
            "max_body_bytes": _check_int("max_body_bytes", self.max_body_bytes, 1),
            "api_token": _check_token(self.api_token),
            "cors_origins": _check_origins(self.cors_origins),
            "shutdown_timeout": _check_timeout(self.shutdown_timeout),
            "document_timeout": _check_positive_seconds(self.document_timeout, "document_timeout"),
            "lease_seconds": _check_positive_seconds(self.lease_seconds, "lease_seconds"),
            "max_attempts": _check_int("max_attempts", self.max_attempts, 1, 100),
            "max_streams": _check_int("max_streams", self.max_streams, 1, 100_000),
            "limit_concurrency": _check_int("limit_concurrency", self.limit_concurrency, 1),
            "header_timeout": _check_positive_seconds(self.header_timeout, "header_timeout"),
            "keep_alive_timeout": _check_positive_seconds(self.keep_alive_timeout, "keep_alive_timeout"),
            "child_memory_mb": _check_int("child_memory_mb", self.child_memory_mb, 64),
            "progress_interval": _check_timeout(self.progress_interval, "progress_interval"),
            **self._checked_notify(),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    def _checked_notify(self) -> dict[str, Any]:
        urls = _check_notify_urls(self.notify_url)
        base = _check_positive_seconds(self.notify_backoff_seconds, "notify_backoff_seconds")
        cap = _check_positive_seconds(self.notify_backoff_max_seconds, "notify_backoff_max_seconds")
        if cap < base:
            raise ConfigError("notify_backoff_max_seconds", cap, "must be at least notify_backoff_seconds")
        return {
            "notify_url": urls,
            "notify_secret": _check_notify_secret(self.notify_secret, urls),
            "notify_retry_seconds": _check_timeout(self.notify_retry_seconds, "notify_retry_seconds"),
            "notify_backoff_seconds": base,
            "notify_backoff_max_seconds": cap,
            "notify_timeout": _check_positive_seconds(self.notify_timeout, "notify_timeout"),
        }

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ServiceSettings:
        """Settings from ``DOCSTATUS_*`` variables (``os.environ`` by default), then ``overrides``.

        Variables: ``DOCSTATUS_HOST``, ``_PORT``, ``_STORE``, ``_UPLOADS``,
        ``_DATA``, ``_QUEUE``, ``_WORKERS``, ``_MAX_UPLOAD_BYTES``, ``_MAX_BODY_BYTES``,
        ``_API_TOKEN``, ``_CORS_ORIGINS`` (comma-separated),
        ``_SHUTDOWN_TIMEOUT``, ``_DOCUMENT_TIMEOUT`` (seconds: how long one
        document may take to process before it fails), ``_LEASE_SECONDS``
        (how long a worker's claim lasts without a renewal; a lost worker's
        document is retried after it) and ``_MAX_ATTEMPTS`` (attempts of a
        document whose worker was lost, before it fails), ``_MAX_STREAMS`` (event
        streams served at once), ``_LIMIT_CONCURRENCY`` (connections and requests at
        once; more get a 503), ``_HEADER_TIMEOUT`` (seconds a client may take to send
        its request headers), ``_KEEP_ALIVE_TIMEOUT`` (seconds an idle connection
        stays open) and ``_CHILD_MEMORY_MB`` (address space of each document's
        process). Completion webhooks: ``_NOTIFY_URL`` (receivers, separated by
        commas or spaces), ``_NOTIFY_SECRET`` (the signing key, needed with them),
        ``_NOTIFY_RETRY_SECONDS``, ``_NOTIFY_BACKOFF_SECONDS``,
        ``_NOTIFY_BACKOFF_MAX_SECONDS`` and ``_NOTIFY_TIMEOUT``. ``_WORKERS``
        defaults to the number of CPUs this process may use, and to 0 when a
        ``_QUEUE`` is given (``docstatus worker`` processes do the work then).
        An override of ``None`` counts as not given (convenient for optional
        command-line flags); an unknown override name is a ``ConfigError``.
        When ``data_dir`` is set but ``store`` or ``uploads`` are not, those
        default to ``<data_dir>/status.db`` and ``<data_dir>/uploads``, so one
        variable moves everything.
        """
        env = os.environ if environ is None else environ
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(
                unknown[0], overrides[unknown[0]], f"unknown setting; known: {', '.join(sorted(known))}"
            )
        values: dict[str, Any] = {}
        for name, parse in _PARSERS.items():
            raw = env.get(_env_name(name))
            if raw is not None:
                values[name] = parse(_env_name(name), raw)
        from_environment = set(values) - {k for k, v in overrides.items() if v is not None}
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**_derived_defaults(values))
        except ConfigError as exc:
            if exc.name not in from_environment:
                raise
            # Name the variable the user actually set, not the field.
            shown = exc.value if exc.name not in ("api_token", "notify_secret") else "<hidden>"
            raise ConfigError(_env_name(exc.name), shown, exc.reason) from None

    def replace(self, **changes: Any) -> ServiceSettings:
        """A copy with ``changes`` applied (and validated)."""
        return replace(self, **changes)


def _derived_defaults(values: dict[str, Any]) -> dict[str, Any]:
    if values.get("queue") and "workers" not in values:
        values["workers"] = 0  # with a queue, `docstatus worker` processes the documents
    if "data_dir" not in values:
        return values
    data_dir = _check_path("data_dir", values["data_dir"])
    values.setdefault("uploads", data_dir / "uploads")
    values.setdefault("store", f"sqlite:///{data_dir / 'status.db'}")
    return values
