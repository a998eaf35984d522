"""The dashboard: ``GET /`` serves a page that shows every document's progress live.

The page is three static files shipped inside the package
(``docstatus/api/static``): no CDN, no build step, works offline. It reads
one page of ``GET /status`` at a time (the next as the list is scrolled) and
the counts of ``GET /status/health``, then follows ``GET /status/stream``; a
document's page (``/#/doc/<id>``) reads ``GET /status/{doc_id}``, its
``/timeline`` and ``GET /documents/{doc_id}``; the charts read
``GET /stats/throughput``. It uploads through ``POST /uploads``, acts through
``POST /status/{doc_id}/requeue`` and ``/cancel``, ``DELETE /status/{doc_id}``,
``POST /status/retry`` and ``POST /status/delete``. It addresses them with
relative URLs, so mount :func:`dashboard_router` beside the other routers,
under the same prefix.

Responses carry a strict Content-Security-Policy (the page has no inline
script or style, and talks only to its own origin), and an ``ETag`` so a
browser revalidates instead of downloading the files again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from ..errors import error_json

__all__ = ["CONTENT_SECURITY_POLICY", "dashboard_router"]

#: What the page may load and talk to: its own origin only, no inline code.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

#: The files under ``static/`` the router serves at ``/dashboard/<name>``, with their media types.
ASSETS: dict[str, str] = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}

_COMMON_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    media_type: str
    etag: str


def _load(name: str, media_type: str) -> _Asset:
    body = (resources.files("docstatus.api") / "static" / name).read_bytes()
    return _Asset(body, media_type, f'"{hashlib.sha256(body).hexdigest()[:32]}"')


def _respond(request: Request, asset: _Asset, extra: dict[str, str] | None = None) -> Response:
    headers = {**_COMMON_HEADERS, "ETag": asset.etag, **(extra or {})}
    if asset.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    body = b"" if request.method == "HEAD" else asset.body
    return Response(body, media_type=asset.media_type, headers=headers)


def dashboard_router() -> APIRouter:
    """``GET /`` (the page) and ``GET /dashboard/{app.js,style.css,favicon.svg}``.

    The files are read once, when the router is built. Any other name under
    ``/dashboard/`` is a 404 in the API's error shape; no path from the request
    ever reaches the file system.
    """
    page = _load("index.html", "text/html; charset=utf-8")
    assets = {name: _load(name, media_type) for name, media_type in ASSETS.items()}
    router = APIRouter(tags=["dashboard"], include_in_schema=False)

    @router.api_route("/", methods=["GET", "HEAD"])
    async def dashboard(request: Request) -> Response:
        return _respond(request, page, {"Content-Security-Policy": CONTENT_SECURITY_POLICY})

    @router.api_route("/dashboard/{name}", methods=["GET", "HEAD"])
    async def asset(request: Request, name: str) -> Response:
        found = assets.get(name)
        if found is None:
            body = error_json("Not found", "NOT_FOUND", {"path": f"/dashboard/{name}"[:300]})
            return JSONResponse(body, status_code=404)
        return _respond(request, found)

    return router
