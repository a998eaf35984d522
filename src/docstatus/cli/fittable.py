"""A terminal table that fits its width: every line of it, from 80 columns up.

rich's own :class:`~rich.table.Table` shrinks every column when a terminal is
narrow, headers included ("ETA" became "E"), and wraps long cells into a
column a few characters wide. :class:`FitTable` is laid out the other way:
columns that hold short values (a status, a duration) always get their
whole width, headers included; only the columns marked ``flexible`` (a file
name, a stage) give up width, and show an ellipsis where they are cut.
A row's ``note`` (an error message) takes its own line below the row,
across the whole table. Needs the ``cli`` extra (rich).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.measure import Measurement
from rich.segment import Segment
from rich.text import Text

__all__ = ["Column", "FitTable"]

_GAP = 2  # spaces between two columns
_RULE = "─"
_NOTE_INDENT = 2


@dataclass(frozen=True, slots=True)
class Column:
    """One column: its header, alignment, and whether it may be narrowed (with an ellipsis).

    A flexible column is never narrower than ``min_width`` (nor its header)
    and never wider than ``max_width`` (``None``: as wide as its content).
    """

    header: str
    justify: Literal["left", "right"] = "left"
    flexible: bool = False
    min_width: int = 0
    max_width: int | None = None


@dataclass(frozen=True, slots=True)
class _Row:
    cells: tuple[RenderableType, ...]
    note: Text | None


class FitTable:
    """A header, a rule, and one line per row (plus its note); see the module docstring.

    A cell is any one-line renderable (``Text``, a string, a progress bar);
    a note is wrapped to the table's width, at most ``note_lines`` lines (an
    ellipsis ends one that is longer). On a terminal too narrow even for the
    fixed columns and the flexible columns' minimums, lines are cropped at
    its width.
    """

    def __init__(self, columns: Iterable[Column], *, note_lines: int = 3) -> None:
        self.columns = tuple(columns)
        self.note_lines = note_lines
        self._rows: list[_Row] = []

    def add_row(self, *cells: RenderableType, note: Text | None = None) -> None:
        """Add a row of one cell per column, with an optional note shown below it."""
        if len(cells) != len(self.columns):
            raise ValueError(f"a row needs {len(self.columns)} cells, got {len(cells)}")
        self._rows.append(_Row(cells, note))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        """Render within ``options.max_width``."""
        widths = self._widths(console, options)
        total = min(options.max_width, sum(widths) + _GAP * (len(widths) - 1))
        headers = [Text(c.header, style="bold") for c in self.columns]
        yield from self._line(console, options, headers, widths, total)
        yield Segment(_RULE * total)
        yield Segment.line()
        for row in self._rows:
            yield from self._line(console, options, row.cells, widths, total)
            if row.note is not None:
                yield from self._note(console, options, row.note, total)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        """As wide as the widths it lays out for ``options``."""
        widths = self._widths(console, options)
        width = min(options.max_width, sum(widths) + _GAP * (len(widths) - 1))
        return Measurement(width, width)

    def _widths(self, console: Console, options: ConsoleOptions) -> list[int]:
        natural = [self._natural(console, options, i) for i in range(len(self.columns))]
        fixed = sum(w for w, c in zip(natural, self.columns, strict=True) if not c.flexible)
        available = options.max_width - fixed - _GAP * (len(self.columns) - 1)
        flexible = [i for i, c in enumerate(self.columns) if c.flexible]
        fitted = _shrink([natural[i] for i in flexible], [self._minimum(i) for i in flexible], available)
        for i, width in zip(flexible, fitted, strict=True):
            natural[i] = width
        return natural

    def _natural(self, console: Console, options: ConsoleOptions, index: int) -> int:
        column = self.columns[index]
        cells = [row.cells[index] for row in self._rows]
        content = max((Measurement.get(console, options, c).maximum for c in cells), default=0)
        width = max(len(column.header), content)
        if column.flexible:
            width = max(self._minimum(index), min(width, column.max_width or width))
        return width

    def _minimum(self, index: int) -> int:
        return max(len(self.columns[index].header), self.columns[index].min_width)

    def _line(
        self,
        console: Console,
        options: ConsoleOptions,
        cells: Iterable[RenderableType],
        widths: list[int],
        total: int,
    ) -> RenderResult:
        segments: list[Segment] = []
        for i, (cell, width, column) in enumerate(zip(cells, widths, self.columns, strict=True)):
            if i:
                segments.append(Segment(" " * _GAP))
            cell_options = options.update(
                width=width, no_wrap=True, overflow="ellipsis", justify=column.justify, height=None
            )
            segments.extend(console.render_lines(cell, cell_options, pad=True)[0])
        yield from Segment.adjust_line_length(segments, total)
        yield Segment.line()

    def _note(self, console: Console, options: ConsoleOptions, note: Text, total: int) -> RenderResult:
        width = max(1, total - _NOTE_INDENT)
        lines = list(note.wrap(console, width))
        if len(lines) > self.note_lines:
            lines = lines[: self.note_lines]
            lines[-1].append("…")
            lines[-1].truncate(width, overflow="ellipsis")
        for line in lines:
            yield Segment(" " * _NOTE_INDENT)
            yield from line.render(console)
            yield Segment.line()


def _shrink(widths: list[int], minimums: list[int], available: int) -> list[int]:
    """``widths`` narrowed, widest first, until they sum to ``available`` or all are at their minimum."""
    widths = list(widths)
    excess = sum(widths) - available
    while excess > 0:
        room = [w - m for w, m in zip(widths, minimums, strict=True)]
        widest = max(range(len(widths)), key=room.__getitem__, default=None)
        if widest is None or room[widest] <= 0:
            break
        widths[widest] -= 1
        excess -= 1
    return widths
