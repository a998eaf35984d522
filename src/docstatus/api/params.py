"""Unknown query parameters are refused: a typo (``?ofset=5``) is a 400, never silently ignored.

:data:`STRICT_QUERY` is a router dependency: every route of a router that
carries it compares the request's query keys with the query parameters the
route declares (its own and its dependencies'), and answers an unknown one
with 400 ``INVALID_REQUEST`` in the API's error shape.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant

from ..errors import InvalidRequestError

__all__ = ["STRICT_QUERY", "declared_query", "reject_unknown_query"]


def declared_query(dependant: Dependant) -> frozenset[str]:
    """The query parameter names (aliases) that ``dependant`` and its sub-dependencies declare."""
    names = {field.alias for field in dependant.query_params}
    for sub in dependant.dependencies:
        names |= declared_query(sub)
    return frozenset(names)


def _accepted(route: Any) -> frozenset[str] | None:
    dependant = getattr(route, "dependant", None)
    # A walk of a few short lists, and only for requests that have a query at all.
    return declared_query(dependant) if isinstance(dependant, Dependant) else None


async def reject_unknown_query(request: Request) -> None:
    """Raise :class:`~docstatus.errors.InvalidRequestError` for a query key the route does not declare."""
    if not request.query_params:
        return
    accepted = _accepted(request.scope.get("route"))
    if accepted is None:
        return
    unknown = sorted({key for key in request.query_params if key not in accepted})
    if not unknown:
        return
    listed = ", ".join(sorted(accepted)) if accepted else "none"
    noun = "parameter" if len(unknown) == 1 else "parameters"
    raise InvalidRequestError(
        f"Unknown query {noun} {', '.join(repr(k[:100]) for k in unknown[:10])} "
        f"(this endpoint accepts: {listed})",
        unknown=[k[:100] for k in unknown[:10]],
        accepted=sorted(accepted),
    )


#: Give this to ``APIRouter(dependencies=[...])``: every route of the router refuses unknown queries.
STRICT_QUERY = Depends(reject_unknown_query)
