"""A small client for a running docstatus service: its JSON endpoints and its event stream.

Needs the ``cli`` extra (``pip install 'docstatus[cli]'``: httpx, httpx-sse).
Every failure is a :class:`~docstatus.errors.StatusError`:
:class:`~docstatus.errors.ServerUnreachableError` when the service cannot be
reached (or does not answer like one), :class:`~docstatus.errors.DocumentNotFoundError`
for an unknown document, :class:`~docstatus.errors.ApiError` for any other
error answer. Answers keep the server's exact text beside the parsed JSON, so a
caller can pass it on unchanged.

    with Client("http://127.0.0.1:8002") as client:
        print(client.status(doc_id).body["progress"])
        for event in client.events(doc_id=doc_id):
            ...
"""

from __future__ import annotations

import json
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal
from urllib.parse import quote, urlsplit

from ..errors import (
    AmbiguousDocumentIdError,
    ApiError,
    ConfigError,
    DocumentNotFoundError,
    ServerUnreachableError,
)
from .args import MIN_SHORT_ID

try:
    import httpx
    from httpx_sse import EventSource, SSEError
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"docstatus.cli.client needs the 'cli' extra: pip install 'docstatus[cli]' ({exc})"
    ) from exc

__all__ = ["DEFAULT_URL", "MIN_SHORT_ID", "Client", "Reply", "StreamEvent"]

#: Where ``docstatus serve`` listens by default.
DEFAULT_URL = "http://127.0.0.1:8002"

#: How many matches of a short id are asked for: enough to say it is ambiguous, and to show a few.
_PREFIX_MATCHES = 10

#: Seconds without a byte on an event stream before it counts as lost (the server pings every 15).
STREAM_READ_TIMEOUT = 45.0


#: The statuses after which a document's stream has nothing more to send.
_FINAL = frozenset({"completed", "failed"})

#: Ids whose ``/status/{id}`` is another endpoint (see :func:`docstatus.api.status_router`).
_UNADDRESSABLE = frozenset({"queue", "active", "stream"})


@dataclass(frozen=True, slots=True)
class Reply:
    """A successful answer: its parsed JSON and its exact text."""

    body: Any
    text: str


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One item of :meth:`Client.events`.

    ``kind`` is ``"status"`` (``data`` is the status JSON) or ``"removed"``
    (``data`` is ``{"doc_id": ...}``) for a change; ``"connected"`` once the
    stream is open (changes from then on will follow, so a caller can read the
    current state safely now); ``"disconnected"`` when the stream broke and is
    being reopened; ``"ended"`` when the followed document had already finished
    (the last item); ``"reset"`` when the service says changes were missed
    (``data`` has its ``reason``): read the current state again. ``id`` is the
    last event id seen.
    """

    kind: Literal["status", "removed", "connected", "disconnected", "ended", "reset"]
    id: str
    data: dict[str, Any] | None = None
    #: The event's data exactly as the service sent it ("" for ``connected``/``disconnected``).
    raw: str = ""


def check_url(url: str) -> str:
    """``url`` without a trailing slash; :class:`ConfigError` unless it is an http(s) URL with a host."""
    expected = "expected an http:// or https:// URL with a host, like " + DEFAULT_URL
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
        httpx.URL(url)
    except (ValueError, httpx.InvalidURL) as exc:
        raise ConfigError("url", url, f"{expected} ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("url", url, expected)
    return url.rstrip("/")


class Client:
    """Talks to the service at ``url``; ``token`` is sent with POSTs. Not thread-safe; close it after use."""

    def __init__(self, url: str = DEFAULT_URL, *, token: str | None = None, timeout: float = 10.0) -> None:
        self.url = check_url(url)
        self._token = token
        self._http = httpx.Client(base_url=self.url, timeout=timeout, headers={"Accept": "application/json"})

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections (idempotent)."""
        self._http.close()

    # -- requests ----------------------------------------------------------------------

    def status(self, doc_id: str) -> Reply:
        """``GET /status/{doc_id}``; :class:`DocumentNotFoundError` if the service does not know it."""
        if not doc_id or doc_id in _UNADDRESSABLE:
            # These paths are other endpoints: the API cannot address a document with such an id.
            raise DocumentNotFoundError(doc_id)
        return self._request("GET", f"/status/{quote(doc_id, safe='')}", doc_id=doc_id)

    def lookup(self, doc_id: str) -> Reply:
        """:meth:`status` of the document ``doc_id`` names: its full id, or a unique prefix of it.

        A full id the service knows is used as it is. Otherwise an id of at least
        :data:`MIN_SHORT_ID` characters is resolved as a prefix:
        :class:`AmbiguousDocumentIdError` when it starts several documents' ids,
        :class:`DocumentNotFoundError` when it starts none.
        """
        try:
            return self.status(doc_id)
        except DocumentNotFoundError:
            if len(doc_id) < MIN_SHORT_ID:
                raise
        found = self._request("GET", "/status", params={"id_prefix": doc_id, "limit": _PREFIX_MATCHES})
        ids = [str(d["doc_id"]) for d in found.body.get("documents", [])]
        if not ids:
            raise DocumentNotFoundError(doc_id)
        if len(ids) > 1:
            raise AmbiguousDocumentIdError(doc_id, ids)
        return self.status(ids[0])

    def resolve(self, doc_id: str) -> str:
        """The full id ``doc_id`` names (see :meth:`lookup`)."""
        return str(self.lookup(doc_id).body["doc_id"])

    def queue(self, status: str | None = None, limit: int = 100) -> Reply:
        """``GET /status/queue``: documents (of ``status``), most recently updated first, with counts."""
        params: dict[str, str | int] = {"limit": limit}
        if status is not None:
            params["status"] = status
        return self._request("GET", "/status/queue", params=params)

    def cleanup(self, max_age_seconds: float) -> Reply:
        """``POST /status/cleanup``: remove documents finished over ``max_age_seconds`` ago."""
        return self._request("POST", "/status/cleanup", params={"max_age_seconds": max_age_seconds})

    def workers(self) -> Reply:
        """``GET /workers``: the live worker processes and the documents each holds."""
        return self._request("GET", "/workers")

    def cancel(self, doc_id: str) -> Reply:
        """``POST /status/{doc_id}/cancel``: fail an active document with the error ``cancelled``.

        :class:`DocumentNotFoundError` if the service does not know it; an
        :class:`ApiError` with status 409 if it has already finished.
        """
        if not doc_id:
            raise DocumentNotFoundError(doc_id)
        return self._request("POST", f"/status/{quote(doc_id, safe='')}/cancel", doc_id=doc_id)

    def delete(self, doc_id: str) -> Reply:
        """``DELETE /status/{doc_id}``: remove a finished document with its upload and output.

        :class:`DocumentNotFoundError` if the service does not know it; an
        :class:`ApiError` with status 409 while it is queued or in progress.
        """
        if not doc_id or doc_id in _UNADDRESSABLE:
            raise DocumentNotFoundError(doc_id)
        return self._request("DELETE", f"/status/{quote(doc_id, safe='')}", doc_id=doc_id)

    def documents(self, params: dict[str, Any]) -> Reply:
        """``GET /status`` with the listing's ``params`` (``q``, ``status``, ``since``, ``sort``...)."""
        return self._request("GET", "/status", params=params)

    def retry_failed(self, body: dict[str, Any]) -> Reply:
        """``POST /status/retry``: requeue the failed documents that match ``body``'s filters."""
        return self._request("POST", "/status/retry", json=body)

    def delete_finished(self, body: dict[str, Any]) -> Reply:
        """``POST /status/delete``: remove the finished documents that match ``body``'s filters."""
        return self._request("POST", "/status/delete", json=body)

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        doc_id: str | None = None,
        json: dict[str, Any] | None = None,
    ) -> Reply:
        # UTF-8 bytes: httpx encodes str header values as ASCII, and the service compares the
        # header's bytes with its token's UTF-8 bytes.
        auth = b"Bearer " + self._token.encode(errors="surrogateescape") if self._token else b""
        headers = {b"Authorization": auth} if auth and method in ("POST", "DELETE") else {}
        try:
            response = self._http.request(method, path, params=params, headers=headers, json=json)
        except httpx.TransportError as exc:
            raise ServerUnreachableError(self.url, _reason(exc)) from None
        return self._reply(response, doc_id)

    def _reply(self, response: httpx.Response, doc_id: str | None) -> Reply:
        try:
            body = response.json()
        except ValueError:
            raise ServerUnreachableError(
                self.url,
                f"the answer to {response.request.url.path} is not JSON (HTTP {response.status_code})",
            ) from None
        if response.is_success:
            return Reply(body, response.text)
        error = body if isinstance(body, dict) else {}
        code = str(error.get("code", "HTTP_ERROR"))
        if code == "DOCUMENT_NOT_FOUND" and doc_id is not None:
            raise DocumentNotFoundError(doc_id)
        message = str(error.get("error") or f"HTTP {response.status_code}")
        raise ApiError(response.status_code, code, message)

    # -- the event stream --------------------------------------------------------------

    def events(
        self, doc_id: str | None = None, *, reconnect_seconds: float = 30.0
    ) -> Generator[StreamEvent, None, None]:
        """Follow ``GET /status/stream`` (only ``doc_id``'s changes, if given).

        Yields ``connected`` first, then every change: forever, or with
        ``doc_id`` until the document's final change (completed, failed,
        removed), after which the iterator ends; for a document that has
        already finished, right after ``connected``. A stream that breaks
        (the service restarts) yields ``disconnected`` and is reopened with
        ``Last-Event-ID``, so no change is missed; if it cannot be reopened
        within ``reconnect_seconds``, or cannot be opened at all,
        :class:`ServerUnreachableError`; an unknown ``doc_id`` is a
        :class:`DocumentNotFoundError`. Close the iterator to stop.
        """
        last_id = ""
        down_since: float | None = None
        while True:
            try:
                for event in self._stream(doc_id, last_id):
                    down_since = None
                    last_id = event.id or last_id
                    yield event
                    if event.kind == "ended" or (doc_id is not None and _is_final(event)):
                        return
            except (httpx.TransportError, SSEError) as exc:
                if not last_id:
                    raise ServerUnreachableError(self.url, _reason(exc)) from None
            down_since = down_since or time.monotonic()
            if time.monotonic() - down_since > reconnect_seconds:
                raise ServerUnreachableError(
                    self.url, f"the event stream was lost for {reconnect_seconds:g}s"
                )
            yield StreamEvent("disconnected", last_id)
            time.sleep(min(1.0, reconnect_seconds / 10))  # the service is restarting: give it a moment

    def _stream(self, doc_id: str | None, last_id: str) -> Iterator[StreamEvent]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        if last_id:
            headers["Last-Event-ID"] = last_id
        params = {"doc_id": doc_id} if doc_id is not None else None
        timeout = httpx.Timeout(self._http.timeout.connect or 10.0, read=STREAM_READ_TIMEOUT)
        with self._http.stream("GET", "/status/stream", params=params, headers=headers, timeout=timeout) as r:
            if r.status_code == 204:
                # The document has finished and nothing is left to send: no stream to follow.
                yield StreamEvent("connected", last_id)
                yield StreamEvent("ended", last_id)
                return
            if not r.is_success:
                r.read()
                self._reply(r, doc_id)
            yield from _decode(EventSource(r), last_id)


def _is_final(event: StreamEvent) -> bool:
    if event.kind == "removed":
        return True
    return event.kind == "status" and event.data is not None and event.data.get("status") in _FINAL


def _decode(source: EventSource, last_id: str) -> Iterator[StreamEvent]:
    connected = False
    for sse in source.iter_sse():
        if not connected:
            # The first frame carries only the stream's position: from here on nothing is missed.
            connected = True
            yield StreamEvent("connected", sse.id or last_id)
        if sse.event == "status":
            yield StreamEvent("status", sse.id, _event_data(sse.data), sse.data)
        elif sse.event == "removed":
            yield StreamEvent("removed", sse.id, _event_data(sse.data), sse.data)
        elif sse.event == "reset":
            yield StreamEvent("reset", sse.id, _reset_data(sse.data), sse.data)


def _event_data(raw: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError:
        raise SSEError(f"an event's data is not JSON: {raw[:100]!r}") from None
    if not isinstance(data, dict) or not isinstance(data.get("doc_id"), str):
        raise SSEError(f"an event's data is not a document status: {raw[:100]!r}")
    return data


def _reset_data(raw: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise SSEError(f"a reset event's data is not a JSON object: {raw[:100]!r}")
    return data


def _reason(exc: Exception) -> str:
    if isinstance(exc, httpx.ConnectError):
        return "connection refused or host not found"
    if isinstance(exc, httpx.TimeoutException):
        return "no answer in time"
    return str(exc) or type(exc).__name__
