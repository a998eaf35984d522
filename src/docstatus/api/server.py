"""The HTTP server settings of ``docstatus serve``: a connection cap and read timeouts on uvicorn.

uvicorn bounds what it offers options for: ``limit_concurrency`` (beyond it a
request is answered 503), ``timeout_keep_alive`` (an idle connection between
requests), ``h11_max_incomplete_event_size`` (the size of unfinished
headers). It has no timeout for a connection that never finishes its request
headers, so such "slowloris" connections would count against the cap for
good; :func:`guarded_protocol` adds one: a connection whose request headers
are not complete ``header_timeout`` seconds after it opened (or after its
previous response) is closed.
"""

from __future__ import annotations

import asyncio
import resource
from typing import Any

__all__ = ["MAX_HEADER_BYTES", "guarded_protocol", "raise_open_files_limit", "uvicorn_config"]

#: Bytes of request headers a client may send (uvicorn's h11 limit; httptools has its own).
MAX_HEADER_BYTES = 64 * 1024


def _base_protocol() -> type[asyncio.Protocol]:
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # httptools is optional: uvicorn's pure-Python parser then
        from uvicorn.protocols.http.h11_impl import H11Protocol

        return H11Protocol
    return HttpToolsProtocol


class _HeaderDeadline:
    """Mixed in before uvicorn's protocol class: closes a connection whose headers are overdue."""

    header_timeout = 10.0
    _header_timer: asyncio.TimerHandle | None = None
    # uvicorn's protocol provides these.
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    cycle: Any

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_overdue)

    def _headers_overdue(self) -> None:
        # A request whose headers arrived has a cycle still running: the app bounds that one.
        cycle = self.cycle
        if (cycle is None or cycle.response_complete) and not self.transport.is_closing():
            self.transport.close()


def guarded_protocol(header_timeout: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class with a deadline for each request's headers (see the module)."""
    made: type[asyncio.Protocol] = type(
        "HeaderDeadlineProtocol", (_HeaderDeadline, _base_protocol()), {"header_timeout": header_timeout}
    )
    return made


def raise_open_files_limit(wanted: int) -> int:
    """Raise this process's soft limit of open files towards ``wanted`` (never above the hard limit).

    The connection cap only protects the server if the process can open that
    many sockets and still its own files; returns the soft limit now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


def uvicorn_config(app: Any, settings: Any, log_level: str) -> Any:
    """The ``uvicorn.Config`` of ``docstatus serve`` for ``app`` and its :class:`ServiceSettings`."""
    import uvicorn

    raise_open_files_limit(settings.limit_concurrency + 1024)
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        http=guarded_protocol(settings.header_timeout),
        limit_concurrency=settings.limit_concurrency,
        timeout_keep_alive=max(1, round(settings.keep_alive_timeout)),
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        # Streams end by themselves at shutdown; this only bounds a stuck client.
        timeout_graceful_shutdown=max(1, int(settings.shutdown_timeout)),
    )
