"""The package's layout rules: no import cycle (every import counts, at module level or inside a
function), in the package or in bench/, and SQL only inside aggregator/index/."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "aggregator"
BENCH = REPO / "bench"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The package's modules ``path`` imports (``from aggregator import x`` counts as ``aggregator.x``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in modules:
                found.add(node.module)
            found.update(
                f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules
            )
    return found


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    paths = {module_name(p): p for p in package.rglob("*.py")}
    modules = set(paths)
    return {name: imports_of(path, modules) - {name, package.name} for name, path in paths.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected group of modules (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_the_checker_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert "aggregator.postfile" in graph and "aggregator.model" in graph["aggregator.postfile"]
    assert cycles(graph) == []


def test_the_benchmark_has_no_import_cycle() -> None:
    """The bench tools take their shared pieces from ``bench.driver``, not from ``bench.__main__``."""
    graph = import_graph(BENCH)
    assert "bench.driver" in graph["bench.__main__"]
    assert cycles(graph) == []


def test_the_model_imports_no_stage() -> None:
    """Every stage imports the model's types, so the model imports nothing of ours but pure text helpers."""
    graph = import_graph()
    assert graph["aggregator.model"] == {"aggregator.text"}
    assert graph["aggregator.text"] == set()


def test_the_config_does_not_reach_the_store() -> None:
    """Reading a config opens nothing: the store is opened from a config (``store.open_store``)."""
    graph = import_graph()
    assert not {
        m for m in graph["aggregator.config"] if m == "aggregator.store" or m.startswith("aggregator.index")
    }


def test_only_the_index_runs_sql() -> None:
    """SQL belongs to aggregator/index/ (behind its Protocol), so a second backend replaces it whole."""
    offenders = [
        str(path.relative_to(PACKAGE.parent))
        for path in sorted(PACKAGE.rglob("*.py"))
        if "index" not in path.relative_to(PACKAGE).parts[:1]
        and re.search(r"^\s*import sqlite3|\.execute(many)?\(", path.read_text(), re.MULTILINE)
    ]
    assert offenders == []
