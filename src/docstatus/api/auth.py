"""Bearer-token protection for the endpoints that change something."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..errors import AuthenticationError

__all__ = ["token_dependencies"]

_bearer = HTTPBearer(auto_error=False, description="The service's DOCSTATUS_API_TOKEN")


def _checker(token: str) -> Callable[..., Awaitable[None]]:
    expected = token.encode("utf-8")

    async def require_token(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    ) -> None:
        # Starlette decodes headers as latin-1; encoding back gives the bytes the client sent.
        given = credentials.credentials.encode("latin-1") if credentials else b""
        # compare_digest: the time taken does not reveal how much of a guess was right.
        if not credentials or not hmac.compare_digest(given, expected):
            raise AuthenticationError()

    return require_token


def token_dependencies(api_token: str | None) -> list[Any]:
    """Route dependencies that demand ``Authorization: Bearer <api_token>``; none without a token."""
    if not api_token:
        return []
    return [Depends(_checker(api_token))]
