"""docstatus's log lines in the server's log: the ``docstatus`` loggers borrow uvicorn's handlers.

Under uvicorn only uvicorn's own loggers have handlers, so without this the
``docstatus`` loggers' lines would reach nobody (Python's last-resort handler
prints bare WARNINGs and drops the rest). :func:`follow_server_logging` hands
them uvicorn's handlers, and with them its format and level, unless the user
configured logging themselves (a handler on the root or the ``docstatus``
logger): then their configuration is left exactly as it is, and no line is
written twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

__all__ = ["LOGGER", "SERVER_LOGGER", "follow_server_logging"]

#: The logger every docstatus module's logger is a child of.
LOGGER = "docstatus"
#: The server's logger whose handlers docstatus borrows (uvicorn's default configuration).
SERVER_LOGGER = "uvicorn"
# The logger uvicorn gives its --log-level (the "uvicorn" logger itself stays at INFO).
_LEVEL_LOGGER = "uvicorn.error"


def _nothing() -> None:
    return None


def follow_server_logging() -> Callable[[], None]:
    """Make ``docstatus`` log lines go where the server's go, formatted alike; returns the undo.

    Does nothing (and the undo is a no-op) when the root or the ``docstatus``
    logger has a handler, or when the server's logger has none (uvicorn run
    with ``log_config=None``). Otherwise the ``docstatus`` logger gets the
    server logger's handlers and, unless it has a level of its own, the
    server's level (``--log-level``); the undo removes exactly that.
    """
    ours = logging.getLogger(LOGGER)
    server = logging.getLogger(SERVER_LOGGER)
    if ours.handlers or logging.getLogger().handlers or not server.handlers:
        return _nothing
    borrowed = list(server.handlers)
    for handler in borrowed:
        ours.addHandler(handler)
    own_level = ours.level
    if own_level == logging.NOTSET:
        ours.setLevel(logging.getLogger(_LEVEL_LOGGER).getEffectiveLevel())

    def undo() -> None:
        for handler in borrowed:
            ours.removeHandler(handler)
        ours.setLevel(own_level)

    return undo
