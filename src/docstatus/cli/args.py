"""What every command shares: the one-line error, the parser that reports errors so, number types."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn, TypeVar

__all__ = ["MIN_SHORT_ID", "USAGE_ERROR", "CommandParser", "Handler", "fail", "number"]

#: Exit status for bad usage or configuration (as argparse uses).
USAGE_ERROR = 2

#: The fewest characters a short id (a unique prefix of a doc id) may have.
MIN_SHORT_ID = 8

#: A command's handler: the parsed arguments in, the exit status out.
Handler = Callable[[argparse.Namespace], int]


class CommandParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (argparse prints the usage too)."""

    def error(self, message: str) -> NoReturn:
        """Exit with :data:`USAGE_ERROR` after ``<prog>: error: <message>`` on stderr."""
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message}\n")


def fail(command: str, message: str, status: int = USAGE_ERROR) -> int:
    """Print ``docstatus <command>: error: <message>`` on stderr; returns ``status``."""
    print(f"docstatus {command}: error: {message}", file=sys.stderr)
    return status


_N = TypeVar("_N", int, float)


def number(
    convert: Callable[[str], _N], kind: str, fits: Callable[[_N], bool], must: str
) -> Callable[[str], _N]:
    """An argparse type: the text read by ``convert``, refused unless it ``fits``.

    The refusals read "not <kind>: '...'" and "must be <must>: '...'".
    """

    def parse(raw: str) -> _N:
        try:
            value = convert(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {kind}: {raw!r}") from None
        if not fits(value):
            raise argparse.ArgumentTypeError(f"must be {must}: {raw!r}")
        return value

    return parse
