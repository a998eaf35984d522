"""Shared fixtures: a manager over every store, so one suite covers them all."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from _redis_server import RedisServer, RedisServerError
from docstatus import StatusManager

#: Store kinds the conformance suite runs against. Each maps to a function
#: that returns a fresh, empty store URL for one test; kinds that need a
#: server take it from a session fixture via ``request``.
STORE_KINDS = ["memory", "sqlite", "redis"]


def _store_url(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if kind == "memory":
        return "memory://"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'status.db'}"
    if kind == "redis":
        url: str = request.getfixturevalue("redis_url")
        return url
    raise AssertionError(kind)


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    """Each store kind in turn."""
    kind: str = request.param
    return kind


@pytest.fixture
def store_url(store_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL for a fresh, empty store of ``store_kind``."""
    return _store_url(store_kind, request, tmp_path)


@pytest.fixture
def make_manager(store_url: str) -> Iterator[Callable[..., StatusManager]]:
    """Build managers over the test's store (several share it); closes them afterwards."""
    made: list[StatusManager] = []

    def make(**kwargs: Any) -> StatusManager:
        kwargs.setdefault("cleanup_interval_seconds", None)
        manager = StatusManager(store=store_url, **kwargs)
        made.append(manager)
        return manager

    yield make
    for manager in made:
        manager.close()


@pytest.fixture
def manager(make_manager: Callable[..., StatusManager]) -> StatusManager:
    """A fresh manager over each store kind."""
    return make_manager()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server for the whole session, on a free loopback port; fails if it cannot start."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        server.start()
    except RedisServerError as exc:
        pytest.fail(str(exc))
    yield server
    server.stop()


_redis_prefixes = itertools.count()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A store URL on the session's redis-server with a key prefix of its own: a fresh, empty store."""
    return f"{redis_server.url}?prefix=test{os.getpid()}-{next(_redis_prefixes)}"


@pytest.fixture
def uploads(tmp_path: Path) -> Path:
    """An uploads folder under the test's ``tmp_path`` (not created: the code under test makes it)."""
    return tmp_path / "uploads"
