"""The ``docstatus`` command line."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from . import __version__

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="docstatus", description="Track the processing status of documents."
    )
    parser.add_argument("--version", action="version", version=f"docstatus {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    _parser().parse_args(argv)
    print(f"docstatus {__version__}")
    return 0
