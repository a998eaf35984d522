"""Fixtures of the RQ engine's real-process tests: a redis-server of the test's own, and a Cluster on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from _cluster import Cluster
from _redis_server import RedisServer


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own (its processes share it), stopped afterwards."""
    server = RedisServer(tmp_path / "redis")
    (tmp_path / "redis").mkdir()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def cluster(tmp_path: Path, redis: RedisServer) -> Iterator[Cluster]:
    """A :class:`Cluster` on the test's redis-server; every process it started is stopped afterwards."""
    made = Cluster(tmp_path, redis)
    yield made
    made.close()
