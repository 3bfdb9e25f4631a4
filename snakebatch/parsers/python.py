"""The built-in `python` parser: the standard `ast` module on the raw bytes.

Owns: turning one Python source into its definitions, imports, docstring and line counts.
Must not touch: anything outside the bytes it is given.

Parsing the raw bytes (not decoded text) lets `ast` honour PEP 263 coding cookies and BOMs.
A file that `ast` rejects keeps status `syntax_error`; with the extra `snakebatch[polyglot]`
installed it still gets the definitions and imports tree-sitter-python recovers around the error
(qualnames there are dot-joined, without `<locals>`, and carry no docstrings).
Only statement bodies are visited: definitions and imports are statements, so walking every
expression node (`ast.walk`) would cost ~70% on top of the parse for nothing.
"""

from __future__ import annotations

import ast
import gc
import inspect
import operator
import platform
import warnings

from .base import Definition, Import, Parser, ParseResult, count_lines

_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
# Statements whose nested bodies can hold definitions and imports, and their body fields.
_COMPOUND_BODIES = {
    ast.If: ("body", "orelse"),
    ast.For: ("body", "orelse"),
    ast.AsyncFor: ("body", "orelse"),
    ast.While: ("body", "orelse"),
    ast.With: ("body",),
    ast.AsyncWith: ("body",),
    ast.Try: ("body", "orelse", "finalbody"),
}
if hasattr(ast, "TryStar"):
    _COMPOUND_BODIES[ast.TryStar] = ("body", "orelse", "finalbody")
# Statements `extract` looks at; most statements (assignments, expressions, returns) are none of
# these, and one set lookup skips them instead of a chain of type tests.
_VISITED = frozenset({*_FUNCTIONS, ast.ClassDef, ast.Import, ast.ImportFrom, *_COMPOUND_BODIES, ast.Match})
_BY_POSITION = operator.itemgetter(4, 6)  # (start_line, start_col) of a definition row
_BY_LINE = operator.itemgetter(4)  # line of an import row


# Constants whose `ast.unparse` is their `repr` (floats are not: it spells infinity `1e309`).
_REPR_CONSTANTS = frozenset({str, bytes, int, bool, type(None)})


def _source(node: ast.expr) -> str | None:
    """`ast.unparse(node)` for the forms decorators mostly take, None for any other.

    Only forms that `ast.unparse` writes the same in any context (no operator precedence) are
    handled: names, attributes, calls, lists, tuples, dicts and plain constants (outside
    f-strings `ast.unparse` writes a constant's `repr`). A whole decorator goes to `ast.unparse`
    as soon as one part is not handled, because parentheses depend on the context of a part.
    """
    kind = type(node)
    if kind is ast.Name:
        return node.id
    if kind is ast.Attribute:
        # `1 .real`: ast.unparse writes a space after an int (or bool) base; constant bases are
        # left to it.
        value = None if type(node.value) is ast.Constant else _source(node.value)
        return None if value is None else value + "." + node.attr
    if kind is ast.Constant:
        value = node.value
        return repr(value) if node.kind is None and type(value) in _REPR_CONSTANTS else None
    if kind is ast.Call:
        return _call_source(node)
    if kind is ast.List:
        items = _sources(node.elts)
        return None if items is None else "[" + ", ".join(items) + "]"
    if kind is ast.Tuple:
        items = _sources(node.elts)
        if items is None:
            return None
        return "(" + items[0] + ",)" if len(items) == 1 else "(" + ", ".join(items) + ")"
    if kind is ast.Dict:
        return _dict_source(node)
    return None


def _sources(nodes: list) -> list[str] | None:
    items = [_source(node) for node in nodes]
    return None if None in items else items


def _dict_source(node: ast.Dict) -> str | None:
    if None in node.keys:  # `**mapping` entries
        return None
    keys = _sources(node.keys)
    values = _sources(node.values)
    if keys is None or values is None:
        return None
    return "{" + ", ".join([key + ": " + value for key, value in zip(keys, values)]) + "}"


def _call_source(node: ast.Call) -> str | None:
    func = _source(node.func)
    items = _sources(node.args)
    if func is None or items is None:
        return None
    for keyword in node.keywords:
        value = _source(keyword.value)
        if value is None:
            return None
        items.append(("**" if keyword.arg is None else keyword.arg + "=") + value)
    return func + "(" + ", ".join(items) + ")"


def _decorator(node: ast.expr) -> str:
    """A decorator as `ast.unparse` writes it, without its general (slow) visitor where possible."""
    text = _source(node)
    return ast.unparse(node) if text is None else text


def _n_params(args: ast.arguments) -> int:
    return (
        len(args.posonlyargs)
        + len(args.args)
        + len(args.kwonlyargs)
        + (args.vararg is not None)
        + (args.kwarg is not None)
    )


def extract(tree: ast.Module) -> tuple[list[Definition], list[Import]]:
    """Definitions and imports of a module, found by visiting statement bodies only."""
    definitions: list = []
    imports: list = []
    # (statements, qualname prefix, parent qualname, directly inside a class body)
    stack = [(tree.body, "", None, False)]
    while stack:
        body, prefix, parent, in_class = stack.pop()
        for node in body:
            kind = type(node)
            if kind not in _VISITED:
                continue
            if kind in _FUNCTIONS or kind is ast.ClassDef:
                qualname = prefix + node.name
                if kind is ast.ClassDef:
                    def_kind, n_params = "class", None
                    stack.append((node.body, qualname + ".", qualname, True))
                else:
                    if in_class:
                        def_kind = "method"
                    else:
                        def_kind = "function" if kind is ast.FunctionDef else "async_function"
                    n_params = _n_params(node.args)
                    stack.append((node.body, qualname + ".<locals>.", qualname, False))
                definitions.append(
                    (
                        def_kind,
                        node.name,
                        qualname,
                        parent,
                        node.lineno,
                        node.end_lineno,
                        node.col_offset,
                        [_decorator(d) for d in node.decorator_list],
                        n_params,
                        _docstring(node),
                    )
                )
            elif kind is ast.Import:
                for alias in node.names:
                    imports.append((alias.name, None, alias.asname, 0, node.lineno))
            elif kind is ast.ImportFrom:
                for alias in node.names:
                    imports.append((node.module, alias.name, alias.asname, node.level, node.lineno))
            elif kind in _COMPOUND_BODIES:
                for field in _COMPOUND_BODIES[kind]:
                    stack.append((getattr(node, field), prefix, parent, False))
                for handler in getattr(node, "handlers", ()):
                    stack.append((handler.body, prefix, parent, False))
            elif kind is ast.Match:
                for case in node.cases:
                    stack.append((case.body, prefix, parent, False))
    definitions.sort(key=_BY_POSITION)
    imports.sort(key=_BY_LINE)
    return definitions, imports


def _recover(path: str, data: bytes) -> tuple[list, list] | None:
    """Rows of a file `ast` rejects, from tree-sitter-python when the extra `snakebatch[polyglot]`
    is installed (its status stays `syntax_error`); None without it."""
    try:
        from .treesitter import recover_python
    except ImportError:
        return None
    return recover_python(path, data)


def _docstring(node) -> str | None:
    """`ast.get_docstring(node)`, without `inspect.cleandoc` for one-line strings (most)."""
    body = node.body
    if not body or type(body[0]) is not ast.Expr:
        return None
    value = body[0].value
    if type(value) is not ast.Constant or type(value.value) is not str:
        return None
    text = value.value
    return inspect.cleandoc(text) if "\n" in text else text.expandtabs().lstrip()


def _is_decode_error(err: SyntaxError) -> bool:
    msg = err.msg or ""
    return msg.startswith("(unicode error)") or "encoding" in msg and not msg.startswith("invalid")


class PythonParser(Parser):
    name = "python"
    patterns = ("*.py", "*.pyi", "*.pyw")
    interpreters = ("python",)
    version = platform.python_version()  # `ast` accepts the grammar of the running interpreter

    def parse(self, path: str, data: bytes) -> ParseResult:
        lines, code, comments, blank = count_lines(data)
        result = ParseResult(
            language="Python", lines=lines, code_lines=code, comment_lines=comments, blank_lines=blank
        )
        # AST nodes hold no reference cycles, yet the collector would traverse millions of fresh
        # nodes (~15% of the parse). It stays off until the tree is gone, so that no collection
        # is triggered while the tree is alive.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            try:
                # SyntaxWarnings (`is` with a literal, bad escapes) are the file's business, not
                # lines on the user's terminal.
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    tree = ast.parse(data, filename=path)
            except SyntaxError as err:
                result.status = "decode_error" if _is_decode_error(err) else "syntax_error"
                result.error_type = type(err).__name__
                result.error_message = err.msg
                result.error_line = err.lineno
                result.error_col = err.offset
                if result.status == "syntax_error":
                    recovered = _recover(path, data)
                    if recovered is not None:
                        result.definitions, result.imports = recovered
                return result
            except ValueError as err:  # NUL bytes on some Python versions
                result.status = "syntax_error"
                result.error_type = type(err).__name__
                result.error_message = str(err)
                return result
            result.docstring = _docstring(tree)
            result.definitions, result.imports = extract(tree)
            del tree
        finally:
            if gc_was_enabled:
                gc.enable()
        return result


parser = PythonParser()
