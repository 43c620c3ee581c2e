"""The data modules import each other without a circle: loaders register with a leaf (clsp.data.registry)
and the catalogue (clsp.data.catalogue) loads by name. Every import counts, those inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

import clsp

SRC = Path(clsp.__file__).parent


def module_name(path: Path, src: Path = SRC) -> str:
    parts = path.relative_to(src.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    """Module -> the clsp modules it imports anywhere in its text. `from pkg import name` is an edge to
    pkg.name when that is a module, else to pkg; a package's own __init__ run on the way is not counted."""
    files = {module_name(p, src): p for p in src.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                for alias in node.names:
                    edges.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base)
        graph[name] = {e for e in edges if e in files and e != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

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


def test_cycle_finder_sees_a_lazy_import_circle(tmp_path):
    pkg = tmp_path / "clsp"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "__init__.py").write_text("")
    (pkg / "data" / "a.py").write_text("from clsp.data.b import f\n")
    (pkg / "data" / "b.py").write_text("def f():\n    from clsp.data import a\n")
    (pkg / "data" / "c.py").write_text("import clsp.data.a\n")
    assert cycles(import_graph(pkg)) == [["clsp.data.a", "clsp.data.b"]]


def test_the_data_modules_import_each_other_without_a_circle():
    graph = import_graph()
    data = {m: {e for e in edges if e.startswith("clsp.data")} for m, edges in graph.items() if m.startswith("clsp.data")}
    assert "clsp.data.mnist" in data and "clsp.data.registry" in data["clsp.data.mnist"]   # the scan sees the loaders
    assert cycles(data) == []


def test_the_registry_is_a_leaf_the_loaders_register_with():
    graph = import_graph()
    assert not {e for e in graph["clsp.data.registry"] if e.startswith("clsp.data")}
    loaders = ("mnist", "cifar", "stl", "folder", "imagenet100", "transfer")
    assert all("clsp.data.catalogue" not in graph[f"clsp.data.{name}"] for name in loaders)
    assert {f"clsp.data.{name}" for name in loaders} <= graph["clsp.data.catalogue"]
