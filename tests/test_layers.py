"""The tree is the diagram: every import of the package (function-level ones included) points to
its own layer or a lower one, and the modules' import graph has no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import ROOT

PACKAGE = ROOT / "snakebatch"
# Lowest first, as README.md's Layout section lists them.
LAYERS = [
    {"errors", "_version", "schema", "languages", "paths"},
    {"parsers", "gitrepo"},
    {"config"},
    {"store"},
    {"executors"},
    {"engine"},
    {"report"},
    {"api"},
    {"cli", "__main__", ""},  # "": the package's own __init__
]


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict) -> set[str]:
    """The package's modules that `name` imports, anywhere in its file."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    if name == "":
        package = []
    targets = set()
    for node in ast.walk(ast.parse(path.read_bytes())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - node.level + 1]
            prefix = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                candidate = f"{prefix}.{alias.name}".lstrip(".")
                targets.add(candidate if candidate in modules else prefix)
        elif isinstance(node, ast.Import):
            targets.update(a.name.removeprefix("snakebatch.") for a in node.names if a.name.startswith("snakebatch."))
    resolved = set()
    for target in targets:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target in modules and target != name:
            resolved.add(target)
    return resolved


def _layer(name: str) -> int:
    top = name.split(".")[0]
    for rank, members in enumerate(LAYERS):
        if top in members:
            return rank
    raise AssertionError(f"snakebatch.{name} is in no layer of the README's Layout: add it there and here")


def test_no_module_imports_an_upper_layer():
    modules = _modules()
    assert len(modules) > 30  # the walk found the package
    upward = [f"{name or 'snakebatch'} -> {target}" for name, path in modules.items()
              for target in _imports(name, path, modules)
              if target and _layer(target) > _layer(name) and not name.startswith(target + ".")]
    assert upward == []


def test_the_import_graph_has_no_cycle():
    modules = _modules()
    graph = {name: {t for t in _imports(name, path, modules) if t} for name, path in modules.items() if name}
    # A package's __init__ importing its own submodules is not a cycle back up.
    for name in graph:
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, trail: list[str]) -> bool:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                cycle.extend(trail[trail.index(nxt):] + [node, nxt] if nxt in trail else [node, nxt])
                return True
            if nxt not in state and visit(nxt, trail + [node]):
                return True
        state[node] = 2
        return False

    for node in sorted(graph):
        if node not in state and visit(node, []):
            break
    assert cycle == []
