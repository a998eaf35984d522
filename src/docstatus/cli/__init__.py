"""The ``docstatus`` command line: ``docstatus <command> [options]``.

Each command is a module with its subparser and handler (:mod:`.serve`,
:mod:`.process`, :mod:`.remote` for the commands that talk to a running
service); a handler returns the exit status. Bad input is a one-line
``docstatus <command>: error: ...`` on stderr and exit status 2, never a
traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from .. import __version__
from . import process, remote, serve, worker
from .args import USAGE_ERROR, CommandParser, Handler

__all__ = ["main"]


def _parser() -> CommandParser:
    parser = CommandParser(prog="docstatus", description="Track the processing status of documents.")
    parser.add_argument("--version", action="version", version=f"docstatus {__version__}")
    commands = parser.add_subparsers(title="commands", dest="command", parser_class=CommandParser)
    serve.add_parser(commands)
    process.add_parser(commands)
    worker.add_parser(commands)
    remote.add_parsers(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (no command: the help on stderr, 2)."""
    parser = _parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        # Bare `docstatus` did nothing it was asked to: usage, as argparse reports a bad call.
        parser.print_help(sys.stderr)
        return USAGE_ERROR
    return handler(args)
