"""Tree-sitter parsers: definitions, imports, syntax errors and line counts for the languages of
`grammars.GRAMMARS`, driven by one query file per language (queries/<language>.scm).

Owns: running a grammar and its query over one file's bytes and turning the captures into rows.
Must not touch: anything outside the bytes it is given, or which parser a file goes to.

Importing this module raises ImportError when the `tree-sitter` package is missing (the optional
extra `snakebatch[polyglot]`); the registry then falls back to `python` and `text`. Grammar
packages are imported on a parser's first parse, in the process that parses, and a language whose
grammar package is not installed simply has no parser.

Query captures (the vocabulary of the .scm files):
  @definition.<kind>   the whole definition; <kind> is `function`, `method`, `class`, `struct`, ...
  @name                its name
  @receiver            the type a method belongs to when it is written outside it (Go receivers,
                       C++ `Type::method`): it becomes the parent
  @params              the parameter list (its named children are counted for `n_params`)
  @scope               a block that names its contents without being a definition (Rust `impl`)
  @decorator           a decorator, annotation or attribute (its text, without `@`) of the
                       definition captured as @decorated; one match per decorator
  @import              the import statement (its line), with @import.module, @import.name and
                       @import.alias as the statement has them; one match per imported name
                       (@import.default: a JavaScript default import, name `default`;
                       @import.level: the dots of a Python relative import)
A `function` directly inside a class-like definition or scope is reported as a `method`.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import threading
from functools import cache
from importlib import metadata, resources

import tree_sitter

from .base import Parser, ParseResult, count_lines
from .grammars import GRAMMARS, Grammar
from .text import decode_text

__all__ = ["TreeSitterParser", "treesitter_parsers"]

TREE_SITTER_VERSION = metadata.version("tree-sitter")
# Definitions whose nested functions are methods.
CONTAINER_KINDS = frozenset({"class", "struct", "interface", "trait", "enum", "record", "union", "impl"})
_QUOTES = "\"'`<>"


# linguist's heuristics for a `.h` that is C++ rather than C (languages/heuristics.yml); such a
# header is parsed by the C++ grammar and counted as C++, though the `c` parser took it.
_CPP_HEADER = re.compile(
    rb"^[ \t]*(?:template[ \t]*<|(?:class|(?:using[ \t]+)?namespace)[ \t]+\w+|(?:private|public|protected):$)"
    rb"|std::\w|^[ \t]*#[ \t]*include[ \t]*<(?:cstdint|string|vector|map|list|array|bitset|queue|set|"
    rb"unordered_map|unordered_set|deque|memory|iostream|algorithm|utility|functional|atomic)>",
    re.M,
)
CPP_SNIFF_BYTES = 64 * 1024


def _cpp_parser() -> TreeSitterParser | None:
    """The built-in C++ parser, or None when its grammar is not installed (the header is read as C)."""
    return next((p for p in treesitter_parsers() if p.name == "cpp"), None)


def _text(node) -> str:
    return node.text.decode("utf-8", "replace")


def _first_error(root):
    """The first ERROR or MISSING node of a tree that has one, in document order."""
    node = root
    while True:
        for child in node.children:
            if child.is_error or child.is_missing:
                return child
            if child.has_error:
                node = child
                break
        else:
            return node


def _n_params(params) -> int:
    named = [c for c in params.named_children if "comment" not in c.type]
    if len(named) == 1 and named[0].text == b"void":  # C's `f(void)`
        return 0
    return len(named)


class TreeSitterParser(Parser):
    """One language: its grammar, its query, and the rows they give."""

    def __init__(self, grammar: Grammar):
        self.grammar = grammar
        self.name = grammar.parser_name
        self.patterns = grammar.patterns
        self.interpreters = grammar.interpreters
        try:
            grammar_version = metadata.version(grammar.distribution)
        except metadata.PackageNotFoundError:
            grammar_version = "?"
        self.version = f"{grammar_version} (tree-sitter {TREE_SITTER_VERSION})"
        # (tree_sitter.Parser, tree_sitter.Query) made on the first parse in each thread: a
        # tree-sitter parser must not be shared by threads (Dask workers run tasks in threads).
        self._local = threading.local()

    def __getstate__(self):
        state = dict(self.__dict__)
        del state["_local"]  # native objects stay in the process that made them
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._local = threading.local()

    def _load(self):
        grammar = self.grammar
        language = tree_sitter.Language(getattr(importlib.import_module(grammar.module), grammar.function)())
        source = resources.files(__package__).joinpath("queries", grammar.query + ".scm").read_text("utf-8")
        loaded = self._local.loaded = (tree_sitter.Parser(language), tree_sitter.Query(language, source))
        return loaded

    def parse(self, path: str, data: bytes) -> ParseResult:
        if self.name == "c" and path.endswith(".h") and _CPP_HEADER.search(data, 0, CPP_SNIFF_BYTES):
            cpp = _cpp_parser()
            if cpp is not None:
                return cpp.parse(path, data)
        parser, query = getattr(self._local, "loaded", None) or self._load()
        if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 with a BOM: grammars read UTF-8
            text = decode_text(data)
            if text is None:
                return ParseResult(language=self.grammar.language, status="decode_error",
                                   error_type="UnicodeDecodeError", error_message="not UTF-16 despite its BOM")
            data = text.encode("utf-8")
        lines, code, comments, blank = count_lines(data, self.grammar.comment)
        result = ParseResult(language=self.grammar.language, lines=lines, code_lines=code,
                             comment_lines=comments, blank_lines=blank)
        root = parser.parse(data).root_node
        if root.has_error:
            error = _first_error(root)
            result.status = "syntax_error"
            result.error_type = "SyntaxError"
            if error.is_missing:
                result.error_message = f"missing {error.type}"
            else:
                # Sliced from the source: an ERROR node can span most of a large file.
                start = error.start_byte
                snippet = data[start:min(error.end_byte, start + 80)].decode("utf-8", "replace")
                result.error_message = f"unexpected {snippet!r}"
            result.error_line = error.start_point.row + 1
            result.error_col = error.start_point.column + 1
        # A tree with errors still holds the definitions around them: keep those rows.
        result.definitions, result.imports = extract(query, root)
        return result


def extract(query, root) -> tuple[list, list]:
    """Definition and import rows (DEFINITION_FIELDS / IMPORT_FIELDS order) of a parsed tree."""
    entries = {}  # node id -> [node, kind, name, receiver, params]; kind None for a scope
    imports = {}
    decorators: dict[int, list] = {}  # node id of a definition -> its decorator nodes
    for _, captures in tree_sitter.QueryCursor(query).matches(root):
        if "decorated" in captures:
            decorators.setdefault(captures["decorated"][0].id, []).append(captures["decorator"][0])
            continue
        if "import" in captures:
            statement = captures["import"][0]
            module, name, alias = (
                _text(captures[field][0]).strip(_QUOTES) if field in captures else None
                for field in ("import.module", "import.name", "import.alias")
            )
            if "import.default" in captures:  # JavaScript's `import x from "m"`
                name, alias = "default", _text(captures["import.default"][0])
            level = captures["import.level"][0].text.count(b".") if "import.level" in captures else 0
            row = (module, name, alias, level)
            imports.setdefault((statement.start_byte, row), (*row, statement.start_point.row + 1))
            continue
        if "name" not in captures:
            continue
        for capture, nodes in captures.items():
            if capture.startswith("definition.") or capture == "scope":
                node = nodes[0]
                if node.id not in entries:
                    kind = capture[len("definition."):] if capture != "scope" else None
                    receiver = captures.get("receiver")
                    params = captures.get("params")
                    entries[node.id] = [node, kind, _text(captures["name"][0]),
                                        _text(receiver[0]) if receiver else None, params[0] if params else None]
                break
    # Outer definitions first; a stack of the open ones gives each its enclosing definition
    # (byte ranges of tree nodes nest, so containment is ancestry, without walking parents).
    ordered = sorted(entries.values(), key=lambda e: (e[0].start_byte, -e[0].end_byte))
    open_definitions: list = []  # (end_byte, qualname, kind or "impl")
    definitions = []
    for node, kind, name, receiver, params in ordered:
        start_byte = node.start_byte
        while open_definitions and open_definitions[-1][0] <= start_byte:
            open_definitions.pop()
        enclosing, enclosing_kind = open_definitions[-1][1:] if open_definitions else (None, None)
        parent = enclosing
        if receiver is not None:
            receiver = receiver.lstrip("*&").replace("::", ".")
            parent = f"{enclosing}.{receiver}" if enclosing else receiver
        qualname = f"{parent}.{name}" if parent else name
        open_definitions.append((node.end_byte, qualname, kind or "impl"))
        if kind is None:
            continue
        if kind in ("function", "async_function") and (receiver is not None or enclosing_kind in CONTAINER_KINDS):
            kind = "method"
        if params is not None:
            n_params = _n_params(params)
        else:
            n_params = 0 if kind in ("function", "async_function", "method") else None
        start, end = node.start_point, node.end_point
        decorated = sorted(decorators.get(node.id, ()), key=lambda d: d.start_byte)
        definitions.append((kind, name, qualname, parent, start.row + 1, end.row + 1, start.column,
                            [_text(d).lstrip("@").strip() for d in decorated], n_params, None))
    definitions.sort(key=lambda d: (d[4], d[6]))
    return definitions, sorted(imports.values(), key=lambda i: i[4])


# Not a parser of its own: `ast` stays the Python parser (tree-sitter's error recovery is not a
# verdict on Python syntax); this one only recovers rows from files that `ast` rejects.
PYTHON_RECOVERY = Grammar("python-recovery", "Python", "tree_sitter_python", "language", "tree-sitter-python",
                          "python", (), (), None)
_python_recovery: list = []


def recover_python(path: str, data: bytes) -> tuple[list, list] | None:
    """Definitions and imports that tree-sitter-python finds in a file `ast` rejects, or None when
    tree-sitter-python is not installed."""
    if not _python_recovery:
        if importlib.util.find_spec(PYTHON_RECOVERY.module) is None:
            return None
        _python_recovery.append(TreeSitterParser(PYTHON_RECOVERY))
    result = _python_recovery[0].parse(path, data)
    return result.definitions, result.imports


@cache
def treesitter_parsers() -> tuple[TreeSitterParser, ...]:
    """A parser for each grammar whose package is installed (found without importing it); one
    instance each, shared by the router and the C++ sniffing of `.h` files."""
    return tuple(TreeSitterParser(g) for g in GRAMMARS if importlib.util.find_spec(g.module) is not None)
