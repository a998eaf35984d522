"""A real HTTP receiver of webhooks on loopback (stdlib ``http.server`` in a thread), for the tests.

``answer`` decides each request's HTTP status from what has been received so
far; every request is kept (headers and raw body) in arrival order.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Received", "Receiver"]


@dataclass
class Received:
    """One request as it arrived, and the status it was answered with."""

    path: str
    headers: dict[str, str]
    body: bytes
    code: int = 0

    @property
    def json(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.body)
        return loaded

    @property
    def doc_id(self) -> str:
        return str(self.json["doc_id"])


@dataclass
class Receiver:
    """``answer(request, earlier)`` gives the status code (``earlier``: the requests before it)."""

    answer: Callable[[Received, list[Received]], int] = lambda request, earlier: 200
    requests: list[Received] = field(default_factory=list)
    #: Extra headers for every answer (``Location`` for a redirect).
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                request = Received(self.path, dict(self.headers.items()), body)
                with receiver._cond:
                    earlier = list(receiver.requests)
                    receiver.requests.append(request)
                    receiver._cond.notify_all()
                request.code = receiver.answer(request, earlier)
                self.send_response(request.code)
                for name, value in receiver.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()
                with receiver._cond:
                    receiver._cond.notify_all()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def wait(self, predicate: Callable[[list[Received]], bool], timeout: float = 20.0) -> list[Received]:
        """The requests so far, once ``predicate(requests)`` holds (answered ones have their code)."""
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self.requests), timeout):
                raise AssertionError(f"receiver never got what was waited for: {self.requests}")
            return list(self.requests)

    def delivered(self) -> list[Received]:
        """The requests answered with a 2xx, in arrival order."""
        with self._cond:
            return [r for r in self.requests if 200 <= r.code < 300]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
