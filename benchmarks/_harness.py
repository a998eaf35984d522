"""Timing helpers and the table every benchmark prints.

Each row measures docstatus and, where there is one, its floor in the same
run, and prints the ratio. Timings are the best of several repeats (the least
disturbed by the rest of the machine), in microseconds per operation, or,
for runs of seconds where the best would reward one lucky moment, the median
of interleaved rounds (:func:`median_interleaved`).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

__all__ = ["Row", "Table", "best_interleaved", "median_interleaved", "per_op", "per_op_threads"]


def per_op(fn: Callable[[], object], number: int, repeat: int = 5) -> float:
    """Best microseconds per call of ``fn`` over ``repeat`` runs of ``number`` calls."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, time.perf_counter() - start)
    return best / number * 1e6


def best_interleaved(fns: Mapping[str, Callable[[], object]], number: int, rounds: int) -> dict[str, float]:
    """Best microseconds per call of each of ``fns`` (by name) over ``rounds`` turns of 2 runs each.

    The turns go round all of ``fns``, so that none gets a quieter moment of
    the machine than the others.
    """
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            best[name] = min(best[name], per_op(fn, number, repeat=2))
    return best


def median_interleaved(fns: Mapping[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """The median of what each of ``fns`` (by name) returns over ``rounds`` interleaved turns.

    Each function measures itself once per call (e.g. the wall seconds of one
    batch) and returns the number. A turn runs every function once, A B A B;
    every other turn goes in the reverse order, so that none always runs
    right after the same neighbour (a warm cache, a busy disk).
    """
    samples: dict[str, list[float]] = {name: [] for name in fns}
    order = list(fns)
    for turn in range(rounds):
        for name in order if turn % 2 == 0 else reversed(order):
            samples[name].append(fns[name]())
    return {name: statistics.median(values) for name, values in samples.items()}


def per_op_threads(
    make_fn: Callable[[int], Callable[[], object]], threads: int, number: int, repeat: int = 3
) -> float:
    """Best wall-clock microseconds per call with ``threads`` threads each making ``number`` calls.

    ``make_fn(i)`` gives thread ``i`` its operation.
    """
    best = float("inf")
    for _ in range(repeat):
        fns = [make_fn(i) for i in range(threads)]
        barrier = threading.Barrier(threads + 1)

        def work(fn: Callable[[], object], barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            for _ in range(number):
                fn()

        pool = [threading.Thread(target=work, args=(fn,)) for fn in fns]
        for t in pool:
            t.start()
        barrier.wait()
        start = time.perf_counter()
        for t in pool:
            t.join()
        best = min(best, time.perf_counter() - start)
    return best / (threads * number) * 1e6


@dataclass
class Row:
    name: str
    us: float
    floor_name: str = ""
    floor_us: float | None = None
    target: str = ""
    #: Unit of ``us`` and ``floor_us`` when a row is not a time per operation (e.g. "req/s", "ms").
    unit: str = "µs"

    @property
    def ratio(self) -> float | None:
        return None if not self.floor_us else self.us / self.floor_us


@dataclass
class Table:
    title: str
    rows: list[Row] = field(default_factory=list)

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        print(f"  {row.name}: {row.us:,.2f} {row.unit}", flush=True)
        return row

    def markdown(self) -> str:
        lines = [
            f"### {self.title}",
            "",
            "| measurement | docstatus µs/op | floor | floor µs/op | ratio | target |",
            "|---|---:|---|---:|---:|---|",
        ]
        for r in self.rows:
            unit = "" if r.unit == "µs" else f" {r.unit}"
            floor = f"{r.floor_us:,.2f}{unit}" if r.floor_us is not None else ""
            ratio = f"{r.ratio:.2f}×" if r.ratio is not None else ""
            lines.append(
                f"| {r.name} | {r.us:,.2f}{unit} | {r.floor_name} | {floor} | {ratio} | {r.target} |"
            )
        return "\n".join(lines)
