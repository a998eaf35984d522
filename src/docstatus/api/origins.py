"""Cross-site request refusal: a web page on another site cannot make the service change anything.

A browser lets any page send a form post (multipart included) to any address
without asking first, so without a token a page a local user visits could
upload files to ``http://127.0.0.1:8002``. Browsers say where such a request
comes from (``Origin``, ``Sec-Fetch-Site``): a mutating request from another
origin is refused with a 403 ``CROSS_SITE_REQUEST`` unless that origin is one
of the configured ``cors_origins``. Requests without those headers (curl,
scripts, the CLI) and the service's own dashboard are unaffected.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import CrossSiteRequestError
from .errors import status_error_response

__all__ = ["SameOriginMiddleware", "cross_site_origin"]

#: Methods that only read: never refused.
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: ``Sec-Fetch-Site`` values of requests another site's page started.
_FOREIGN_SITES = frozenset({"cross-site", "same-site"})


def cross_site_origin(method: str, headers: Headers, allowed: frozenset[str]) -> str | None:
    """Where a mutating request came from when that is another site's page; ``None`` when it may run.

    The ``Origin`` decides when the browser sent one: the service's own
    (its ``Host``) or an ``allowed`` one may. Without it, ``Sec-Fetch-Site``
    (sent by browsers even where ``Origin`` is not) decides; with neither
    the client is not a browser page, and may.
    """
    if method in _SAFE_METHODS:
        return None
    origin = headers.get("origin")
    if origin is not None:
        if origin in allowed or "*" in allowed:
            return None
        if origin != "null" and urlsplit(origin).netloc == headers.get("host"):
            return None
        return origin
    site = headers.get("sec-fetch-site")
    return f"<a {site} page>" if site in _FOREIGN_SITES else None


class SameOriginMiddleware:
    """ASGI middleware refusing cross-site mutating requests (see the module docstring)."""

    def __init__(self, app: ASGIApp, allowed_origins: Iterable[str] = ()) -> None:
        self.app = app
        self.allowed = frozenset(o.rstrip("/") for o in allowed_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            origin = cross_site_origin(scope["method"], Headers(scope=scope), self.allowed)
            if origin is not None:
                response = status_error_response(CrossSiteRequestError(origin, scope["path"]))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
