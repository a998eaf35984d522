"""The house rules of src/: every module imports alone, no import cycle, layers, no private names.

The module graph is read from the source with ``ast``: every import, also
those inside functions and under ``TYPE_CHECKING``. Importing ``a.b.c``
also runs ``a`` and ``a.b`` first, so those are dependencies too, except
for the importing module's own packages (already being imported).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: The layers, lowest first: a module may import its own layer and those below, never above.
LAYERS: tuple[tuple[str, ...], ...] = (
    (
        "docstatus",
        "docstatus.errors",
        "docstatus.models",
        "docstatus.records",
        "docstatus.settings",
        "docstatus.stores",
        "docstatus.events",
        "docstatus.janitor",
        "docstatus.manager",
    ),
    ("docstatus.worker", "docstatus.worker.job", "docstatus.output"),
    ("docstatus.formats",),
    (
        "docstatus.worker.pool",
        "docstatus.worker.child",
        "docstatus.worker.run",
        "docstatus.worker.leases",
        "docstatus.worker.rq_engine",
        "docstatus.ingest",
        "docstatus.notify",
    ),
    ("docstatus.service",),
    ("docstatus.api", "docstatus.cli"),
)


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    is_package: bool

    @property
    def packages(self) -> set[str]:
        """The packages this module is inside (itself too, for a package)."""
        parts = self.name.split(".")
        inside = {".".join(parts[:i]) for i in range(1, len(parts))}
        return inside | {self.name} if self.is_package else inside

    def resolve(self, node: ast.ImportFrom) -> str:
        """The absolute module name a ``from ... import`` names."""
        if node.level == 0:
            return node.module or ""
        parts = self.name.split(".") if self.is_package else self.name.split(".")[:-1]
        parts = parts[: len(parts) - (node.level - 1)]
        return ".".join([*parts, *([node.module] if node.module else [])])


def _modules() -> dict[str, Module]:
    found = {}
    for path in sorted((SRC / "docstatus").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        found[name] = Module(name, path, is_package)
    return found


MODULES = _modules()


def _with_parents(name: str) -> Iterator[str]:
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        yield ".".join(parts[:i])


def _imports(module: Module) -> Iterator[tuple[str, list[str]]]:
    """Every (module imported from, names imported) of ``module``; plain imports give no names."""
    for node in ast.walk(ast.parse(module.path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            yield module.resolve(node), [alias.name for alias in node.names]


def _dependencies(module: Module) -> set[str]:
    """The modules of src/ that importing ``module`` runs first (its own packages excluded)."""
    found: set[str] = set()
    for source, names in _imports(module):
        targets = [source, *(f"{source}.{name}" for name in names)]
        if source in module.packages and any(f"{source}.{name}" not in MODULES for name in names):
            found.add(source)  # a name from its own package's __init__, which is still running
        for target in targets:
            found.update(t for t in _with_parents(target) if t in MODULES and t not in module.packages)
    found.discard(module.name)
    return found


GRAPH = {name: _dependencies(module) for name, module in MODULES.items()}


def _cycle_from(start: str) -> list[str] | None:
    """A path start -> ... -> start in the graph, if there is one."""
    stack = [(start, [start])]
    seen: set[str] = set()
    while stack:
        name, path = stack.pop()
        for dependency in sorted(GRAPH[name]):
            if dependency == start:
                return [*path, start]
            if dependency not in seen:
                seen.add(dependency)
                stack.append((dependency, [*path, dependency]))
    return None


def _layer(name: str) -> int:
    """The layer of a module: that of the longest layer entry it is or is inside."""
    best = (-1, -1)
    for level, entries in enumerate(LAYERS):
        for entry in entries:
            if name == entry or name.startswith(entry + "."):
                best = max(best, (len(entry), level))
    if best[1] < 0:
        raise AssertionError(f"{name} is in no layer: add it to LAYERS")
    return best[1]


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _private_imports() -> set[tuple[str, str]]:
    found = set()
    for module in MODULES.values():
        for source, names in _imports(module):
            if source == "docstatus" or source.startswith("docstatus."):
                found.update((module.name, name) for name in names if _is_private(name))
                found.update((module.name, part) for part in source.split(".") if _is_private(part))
    return found


def test_the_graph_sees_the_imports() -> None:
    # Guards the reading itself: a graph with no edges would pass every rule below.
    assert "docstatus.worker.job" in GRAPH["docstatus.formats.base"]
    assert "docstatus.formats" in GRAPH["docstatus.ingest.intake"]
    assert "docstatus.api.routes.stream" in GRAPH["docstatus.api.routes.status"]
    assert "docstatus.formats" not in GRAPH["docstatus.formats.text"]  # its own package


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_import_cycle(name: str) -> None:
    assert _cycle_from(name) is None, " -> ".join(_cycle_from(name) or [])


def test_each_module_imports_only_its_layer_and_below() -> None:
    upward = [
        f"{name} (layer {_layer(name)}) imports {dependency} (layer {_layer(dependency)})"
        for name, dependencies in GRAPH.items()
        for dependency in sorted(dependencies)
        if _layer(dependency) > _layer(name)
    ]
    assert upward == []


def test_nothing_in_worker_or_the_format_base_imports_a_format() -> None:
    formats = {name for name in MODULES if name.startswith("docstatus.formats")}
    base = {"docstatus.formats.registry", "docstatus.formats.base", "docstatus.formats.checks"}
    for name in [n for n in MODULES if n.startswith("docstatus.worker")] + sorted(base):
        assert GRAPH[name] & formats <= base | {"docstatus.formats.limits", "docstatus.formats.chunking"}, (
            name
        )


def test_no_module_imports_a_private_name_of_another() -> None:
    assert _private_imports() == set()


def _import_alone(name: str) -> tuple[str, int, str]:
    done = subprocess.run(
        [sys.executable, "-c", f"import {name}"], capture_output=True, text=True, timeout=120
    )
    return name, done.returncode, done.stderr[-2000:]


@pytest.mark.slow
def test_every_module_imports_alone_in_a_fresh_interpreter() -> None:
    # Each module first, in its own interpreter: a cycle that only breaks for one entry point shows here.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results = list(pool.map(_import_alone, sorted(MODULES)))
    failed = {name: stderr for name, code, stderr in results if code != 0}
    assert failed == {}
    assert len(results) == len(MODULES) > 40
