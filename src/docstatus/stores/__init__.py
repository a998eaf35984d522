"""Stores: where statuses live. Selected by URL.

``memory://`` (the default), ``sqlite:///path.db`` and ``redis://host:port/db``.
A new backend is one module plus one entry in ``_SCHEMES``.
"""

from __future__ import annotations

import importlib
from urllib.parse import urlsplit

from .base import Change, Store

__all__ = ["Change", "Store", "open_store"]

# scheme -> "module:factory"; the factory takes the URL. Imported lazily so
# that the core never imports an optional dependency it does not use.
_SCHEMES: dict[str, str] = {
    "memory": "docstatus.stores.memory:MemoryStore.from_url",
    "sqlite": "docstatus.stores.sqlite:SQLiteStore.from_url",
    "redis": "docstatus.stores.redis:RedisStore.from_url",
    "rediss": "docstatus.stores.redis:RedisStore.from_url",
}


def open_store(url: str) -> Store:
    """The store a URL names; ``ValueError`` for a scheme docstatus does not know."""
    if not isinstance(url, str):
        raise TypeError(f"store URL must be a string, not {type(url).__name__}")
    scheme = urlsplit(url).scheme
    target = _SCHEMES.get(scheme)
    if target is None:
        known = ", ".join(f"{s}://" for s in _SCHEMES)
        # Only the scheme: the rest of a URL may hold a password.
        raise ValueError(f"unknown store URL scheme {scheme + '://'!r}: expected one of {known}")
    module_name, _, attr = target.partition(":")
    factory: object = importlib.import_module(module_name)
    for part in attr.split("."):
        factory = getattr(factory, part)
    store = factory(url)  # type: ignore[operator]
    if not isinstance(store, Store):
        raise TypeError(f"{target} did not return a Store")
    return store
