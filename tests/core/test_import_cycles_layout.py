"""No import circle among the report's modules, nor through the pipeline, the layout, the run records
and io: every import in src/clsp, lazy ones inside functions included, read with `ast`.

`from package import name` counts as importing the package (its __init__ runs first), and the submodule
`name` when there is one: that is how clsp.report's lazy `from clsp.report.html import build_report`
and report.html's `from clsp.report import figures` made a circle."""

from __future__ import annotations

import ast
from pathlib import Path

import clsp

SRC = Path(clsp.__file__).parent
WATCHED = ("clsp.pipeline", "clsp.layout", "clsp.rundir", "clsp.io")


def modules() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the clsp modules it imports anywhere in its text."""
    mods = modules()
    graph: dict[str, set[str]] = {name: set() for name in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                graph[name] |= {alias.name for alias in node.names if alias.name in mods}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:                          # a relative import: from . import x, from ..a import b
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                if base in mods:
                    graph[name].add(base)
                graph[name] |= {f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in mods}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (or a module importing itself): Tarjan."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_scanner_sees_a_circle_through_a_package_and_a_lazy_import():
    graph = {"clsp.report": {"clsp.report.html"}, "clsp.report.html": {"clsp.report", "clsp.report.figures"},
             "clsp.report.figures": set(), "clsp.io": set()}
    assert cycles(graph) == [["clsp.report", "clsp.report.html"]]
    assert "clsp.io" in import_graph()["clsp.rundir"]             # a module-level import
    assert "clsp.report.html" in import_graph()["clsp.pipeline"]  # a lazy one, inside Pipeline._execute


def test_no_circle_in_the_report_nor_through_the_pipeline_layout_rundir_or_io():
    bad = [c for c in cycles(import_graph())
           if any(m == "clsp.report" or m.startswith("clsp.report.") or m in WATCHED for m in c)]
    assert bad == []
