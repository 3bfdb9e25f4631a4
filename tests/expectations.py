"""Independent expectations for Python files: what a plain `ast.walk` finds.

snakebatch visits statement bodies only; these helpers walk every node, so a file where the two
disagree shows a bug in one of them.
"""

from __future__ import annotations

import ast
import warnings


def ast_counts(data: bytes) -> tuple[int, int] | None:
    """(definitions, imported names) of a Python source, or None when `ast.parse` rejects it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(data)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    definitions = imports = 0
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            definitions += 1
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            imports += len(node.names)
    return definitions, imports


def ast_names(data: bytes) -> list[tuple[str, str]]:
    """(kind of node, name) of every definition, sorted: kinds are the ast class names."""
    tree = ast.parse(data)
    return sorted(
        (type(node).__name__, node.name)
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
    )
