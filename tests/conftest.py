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

#: Store kinds the suites run against: the one list of them. Each maps to a
#: function that returns a fresh, empty store URL for one test; kinds that
#: need a server take it from a session fixture via ``request``.
STORE_KINDS: dict[str, Callable[[pytest.FixtureRequest, Path], str]] = {
    "memory": lambda request, tmp_path: "memory://",
    "sqlite": lambda request, tmp_path: f"sqlite:///{tmp_path / 'status.db'}",
    "redis": lambda request, tmp_path: str(request.getfixturevalue("redis_url")),
}

#: The kinds that need a server of their own.
SERVER_KINDS = frozenset({"redis"})

#: The stores of the tests about what runs around the manager (the pipeline): the conformance
#: suite already runs the manager itself over every store, Redis too.
LOCAL_STORE_KINDS = [kind for kind in STORE_KINDS if kind not in SERVER_KINDS]


@pytest.fixture(params=list(STORE_KINDS))
def store_kind(request: pytest.FixtureRequest) -> str:
    """Each store kind in turn."""
    kind: str = request.param
    return kind


@pytest.fixture(params=LOCAL_STORE_KINDS)
def local_store_kind(request: pytest.FixtureRequest) -> str:
    """Each store kind that needs no server, in turn; a module runs over these with
    ``def store_kind(local_store_kind): return local_store_kind``."""
    kind: str = request.param
    return kind


@pytest.fixture
def store_url(store_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL for a fresh, empty store of ``store_kind``."""
    return STORE_KINDS[store_kind](request, tmp_path)


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
