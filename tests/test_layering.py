"""The package's shape, computed from the source: parts import only parts below them (so the
graph between ramster's top-level parts has no cycle), modules stay small, and the heavy
third-party libraries stay in the one part each that may use them.

Every import counts: at module level, inside functions and under TYPE_CHECKING.
"""

from __future__ import annotations

import ast
import gc
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ramster"

LAYERS: list[set[str]] = [
    {"ramster", "ramster.__main__"},
    {"ramster.cli"},
    {"ramster.testing"},  # its simulation runs whole nodes
    {"ramster.node"},
    {"ramster.admin", "ramster.nbd", "ramster.client"},
    {"ramster.frontswap"},
    {"ramster.cluster"},
    {"ramster.rpc", "ramster.pagestore", "ramster.disk", "ramster.protocol"},
    {
        "ramster.telemetry",
        "ramster.settings",
        "ramster.errors",
        "ramster.types",
        "ramster._version",
    },
]
"""ramster's top-level parts, from the top (entry points) down to the leaves. A part may import
parts of lower layers only; docs/architecture.md shows the same picture."""

ONLY_IN = {"aiohttp": "ramster.admin", "msgpack": "ramster.rpc", "zeroconf": "ramster.cluster"}
"""Third-party packages that one part alone may import."""
MAX_LINES = 600
MAX_TOP_LEVEL_MODULES = 8


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _part(module: str) -> str:
    return ".".join(module.split(".")[:2])


def _parse(path: Path) -> ast.Module:
    """The file's syntax tree, parsed with the cyclic collector held off."""
    # CPython 3.11.7's AST constructor fails ("AST constructor recursion depth mismatch",
    # gh-106905) when a collection during the parse runs a finalizer that warns, and earlier
    # tests leave such garbage (coroutines of processes a simulation crashed): collect it first.
    gc.collect()
    gc.disable()
    try:
        return ast.parse(path.read_text(), str(path))
    finally:
        gc.enable()


def _imports(module: str, path: Path) -> list[tuple[str, int]]:
    """(imported module, line) for every import in the file, wherever it stands."""
    is_package = path.name == "__init__.py"
    found: list[tuple[str, int]] = []
    for node in ast.walk(_parse(path)):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target == "ramster":
                # `from ramster import x`: the submodule x, or a name the root re-exports.
                found += [(f"ramster.{alias.name}", node.lineno) for alias in node.names]
            else:
                found.append((target, node.lineno))
    return found


def _edges() -> dict[tuple[str, str], list[str]]:
    modules = _modules()
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for module, path in modules.items():
        src = _part(module)
        for target, line in _imports(module, path):
            if target.split(".")[0] != "ramster":
                continue
            dst = _part(target)
            if dst not in {_part(m) for m in modules}:
                dst = "ramster"  # a name from the root package, not a part of its own
            if dst != src:
                edges[(src, dst)].append(f"{path.relative_to(PACKAGE.parent)}:{line}")
    return edges


def _layer(part: str) -> int:
    for i, layer in enumerate(LAYERS):
        if part in layer:
            return i
    raise AssertionError(f"{part} is in no layer: add it to LAYERS (and the architecture doc)")


def test_every_part_has_a_layer() -> None:
    for part in {_part(m) for m in _modules()}:
        _layer(part)


def test_imports_point_down_only() -> None:
    upward = [
        f"{src} -> {dst} ({', '.join(where[:3])})"
        for (src, dst), where in sorted(_edges().items())
        if _layer(dst) <= _layer(src)
    ]
    assert not upward, "imports that do not point down:\n" + "\n".join(upward)


def test_the_graph_of_parts_has_no_cycle() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for src, dst in _edges():
        graph[src].add(dst)
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_the_checker_sees_a_cycle(tmp_path: Path) -> None:
    """The import walk finds imports inside functions and under TYPE_CHECKING."""
    src = tmp_path / "mod.py"
    src.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from ramster.node import Node\n"
        "def f():\n    from ramster.cli import main\n"
    )
    assert [m for m, _ in _imports("ramster.pagestore.mod", src)] == [
        "typing",
        "ramster.node",
        "ramster.cli",
    ]


def test_heavy_libraries_stay_in_their_part() -> None:
    strays = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}"
        for module, path in _modules().items()
        for target, line in _imports(module, path)
        if target.split(".")[0] in ONLY_IN and _part(module) != ONLY_IN[target.split(".")[0]]
    ]
    assert not strays, "\n".join(strays)


def test_modules_stay_small() -> None:
    big = {
        str(path.relative_to(PACKAGE.parent)): n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not big, f"modules over {MAX_LINES} lines: {big}"


def test_few_modules_at_the_top() -> None:
    top = sorted(
        p.name for p in PACKAGE.glob("*.py") if p.name not in {"__init__.py", "__main__.py"}
    )
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top
