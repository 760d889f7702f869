"""No import cycle between tukio's modules, at run time or hidden inside functions."""

from __future__ import annotations

import ast
import concurrent.futures
import os
import subprocess
import sys
from pathlib import Path

import tukio

ROOT = Path(tukio.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Every tukio module `module` imports when it runs: at top level or inside functions."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name.startswith("tukio"))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    package = module if is_package else module.rpartition(".")[0]
                    for _ in range(child.level - 1):
                        package = package.rpartition(".")[0]
                    base = f"{package}.{base}" if base else package
                if base.startswith("tukio"):
                    found.add(base)
                    found.update(f"{base}.{a.name}" for a in child.names)
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the tukio modules it imports (a package's import also runs its ``__init__``)."""
    paths = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        targets = _imports(ast.parse(path.read_text(encoding="utf-8")), name, path.name == "__init__.py")
        edges = set()
        for target in targets:
            if target not in paths:
                continue
            # Importing tukio.a.b runs tukio.a's __init__ first (unless it is our own package).
            parts = target.split(".")
            for n in range(1, len(parts) + 1):
                edges.add(".".join(parts[:n]))
        own = name.split(".")
        packages = {".".join(own[:n]) for n in range(1, len(own) + (path.name == "__init__.py"))}
        graph[name] = edges - packages - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of `graph` (one per strongly connected component), module names sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph[node]:
            if succ not in index:
                connect(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_no_module_imports_itself_back() -> None:
    assert cycles(import_graph()) == []


def test_the_checker_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    tree = ast.parse(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import tukio.x\ndef f():\n    import tukio.y\n"
    )
    assert _imports(tree, "tukio.z", False) == {"tukio.y"}


def test_every_module_imports_first_in_a_fresh_interpreter() -> None:
    names = sorted(n for n in import_graph() if not n.startswith("tukio.__main__"))
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"

    def first(name: str) -> subprocess.CompletedProcess[str]:
        # Each module first, alone: a cycle hidden by import order fails here.
        return subprocess.run([sys.executable, "-c", code, name], capture_output=True, text=True, timeout=60)

    # One interpreter per module, as many at once as there are cores.
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        for name, done in zip(names, pool.map(first, names), strict=True):
            assert done.returncode == 0, f"{name}: {done.stderr[-2000:]}"
