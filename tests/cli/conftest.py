"""Fixtures of the CLI tests that drive a real service's documents themselves."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from docstatus import StatusManager
from servers import Server


@pytest.fixture
def store(server: Server) -> Iterator[StatusManager]:
    """A manager on the module's ``server``'s own store, as a worker process would have.

    Every report is written at once: the tests set the state up and read it through the server.
    """
    url = f"sqlite:///{server.root / 'status.db'}"
    with StatusManager(store=url, cleanup_interval_seconds=None, progress_interval=0) as m:
        yield m


@pytest.fixture
def plain_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """No service URL or token from the environment, and a wide terminal."""
    for name in ("DOCSTATUS_URL", "DOCSTATUS_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "160")
