"""The import graph of src/clsp, read with `ast` (every import, lazy ones inside functions included):
no circle anywhere, methods and eval side by side, and the data registry a leaf the loaders register with.

`from package import name` is an import of the submodule package.name when there is one, else of the
package (name is defined in its __init__), as import-graph tools such as grimp read it."""

from __future__ import annotations

import ast
from pathlib import Path

import clsp

SRC = Path(clsp.__file__).parent
LOADERS = ("mnist", "cifar", "stl", "folder", "imagenet100", "transfer")


def modules(src: Path = SRC) -> dict[str, Path]:
    found = {}
    for path in src.rglob("*.py"):
        parts = list(path.relative_to(src.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    """module -> the modules of the package it imports anywhere in its text."""
    mods = modules(src)
    graph: dict[str, set[str]] = {name: set() for name in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                graph[name] |= {alias.name for alias in node.names if alias.name in mods}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:                          # a relative import: from . import x, from ..a import b
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in node.names:
                    target = f"{base}.{alias.name}" if f"{base}.{alias.name}" in mods else base
                    if target in mods:
                        graph[name].add(target)
        graph[name].discard(name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
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
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_scanner_sees_a_lazy_circle_and_one_through_a_package(tmp_path):
    pkg = tmp_path / "clsp"
    (pkg / "data").mkdir(parents=True)
    (pkg / "report").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "__init__.py").write_text("")
    (pkg / "data" / "a.py").write_text("from clsp.data.b import f\n")
    (pkg / "data" / "b.py").write_text("def f():\n    from clsp.data import a\n")      # lazy, inside a function
    (pkg / "data" / "c.py").write_text("import clsp.data.a\n")
    (pkg / "report" / "__init__.py").write_text("def build():\n    from clsp.report.html import build\n")
    (pkg / "report" / "html.py").write_text("from clsp.report import figures, NAME\n")    # NAME: of its __init__
    (pkg / "report" / "figures.py").write_text("")
    assert cycles(import_graph(pkg)) == [["clsp.data.a", "clsp.data.b"], ["clsp.report", "clsp.report.html"]]


def test_src_holds_no_import_circle():
    graph = import_graph()
    assert "clsp.data.registry" in graph["clsp.data.mnist"]           # the scan sees the loaders' imports
    assert "clsp.report.html" in graph["clsp.pipeline"]                # and a lazy one, inside Pipeline
    assert cycles(graph) == []


def test_methods_and_eval_stand_side_by_side():
    graph = import_graph()
    crossing = [(m, e) for m, edges in graph.items() for e in edges
                if (m.startswith("clsp.methods") and e.startswith("clsp.eval"))
                or (m.startswith("clsp.eval") and e.startswith("clsp.methods"))]
    assert crossing == []


def test_the_data_registry_is_a_leaf_the_loaders_register_with():
    graph = import_graph()
    assert not {e for e in graph["clsp.data.registry"] if e.startswith("clsp.data")}
    assert all("clsp.data.catalogue" not in graph[f"clsp.data.{name}"] for name in LOADERS)
    assert {f"clsp.data.{name}" for name in LOADERS} <= graph["clsp.data.catalogue"]
