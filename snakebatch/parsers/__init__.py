"""Parsers: the interface (`Parser`, `ParseResult`), the registry, and routing files to parsers.

Owns: which parsers exist (built-in, entry points of the group `snakebatch.parsers`,
`module:attribute` specs) and the order in which they are tried. Must not touch: files on disk.

Order of resolution, first match wins: parsers named with `--parser` (in the order given), then
parsers installed through entry points (sorted by entry-point name), then the built-in language
parsers (`python`, then the tree-sitter ones in the order of `grammars.GRAMMARS`), and last
`text`, which takes every remaining text file. So when two parsers claim the same pattern, the
one earlier in this order parses the file: a plugin that claims `*.py` replaces `python`, and
`--parser` overrides any plugin. Patterns are tried before shebangs: a file whose name no
parser's patterns match (other than `text`'s `*`) goes to the first parser, in the same order,
whose `interpreters` include the interpreter of its `#!` line. `snakebatch parsers` prints the
parsers in exactly this order.
"""

from __future__ import annotations

import importlib
from functools import cache
from importlib.metadata import entry_points

from ..errors import ConfigError
from ..languages import shebang_interpreter
from .base import Definition, Import, Parser, ParseResult, count_lines

__all__ = [
    "Definition", "Import", "ParseResult", "Parser", "ParserRouter", "available", "count_lines", "get",
    "polyglot_hint", "resolve",
]

ENTRY_POINT_GROUP = "snakebatch.parsers"


@cache
def _language_parsers() -> tuple[Parser, ...]:
    from .python import parser as python

    try:
        from .treesitter import treesitter_parsers
    except ImportError:  # the optional extra snakebatch[polyglot] is not installed
        return (python,)
    return (python, *treesitter_parsers())


def _text() -> Parser:
    from .text import parser

    return parser


def _as_parser(obj: object, spec: str) -> Parser:
    if isinstance(obj, type) and issubclass(obj, Parser):
        obj = obj()
    if not isinstance(obj, Parser):
        raise ConfigError(f"--parser {spec}: {type(obj).__name__} is not a snakebatch.parsers.Parser")
    if not obj.name or not isinstance(obj.patterns, tuple):
        raise ConfigError(f"--parser {spec}: a parser needs a `name` and a tuple of `patterns`")
    return obj


@cache
def _entry_point_parsers() -> tuple[Parser, ...]:
    found = []
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name):
        try:
            parser = _as_parser(ep.load(), ep.value)
        except Exception as err:  # a broken plugin must not break every run
            import warnings

            warnings.warn(f"snakebatch: parser entry point {ep.name} ({ep.value}) failed to load: {err}", stacklevel=2)
            continue
        parser.origin = f"entry point {ep.value} ({ep.dist.name if ep.dist else '?'})"
        found.append(parser)
    return tuple(found)


def builtin_parsers() -> tuple[Parser, ...]:
    return (*_language_parsers(), _text())


@cache
def resolve(spec: str) -> Parser:
    """A parser from a registered name or a `module:attribute` spec; ConfigError otherwise."""
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except Exception as err:  # a module that fails at import is the user's to fix, not a crash
            raise ConfigError(f"--parser {spec}: cannot import module {module_name!r} "
                              f"({type(err).__name__}: {err})") from None
        try:
            obj = getattr(module, attr)
        except AttributeError:
            raise ConfigError(f"--parser {spec}: module {module_name!r} has no attribute {attr!r}") from None
        parser = _as_parser(obj, spec)
        parser.origin = spec
        return parser
    for parser in (*_entry_point_parsers(), *builtin_parsers()):
        if parser.name == spec:
            return parser
    names = ", ".join(sorted(p.name for p in (*_entry_point_parsers(), *builtin_parsers())))
    raise ConfigError(f"--parser {spec}: no parser of that name (available: {names}; or give module:attribute)")


def get(name: str) -> Parser:
    """A registered parser by name (`get("python")`)."""
    return resolve(name)


def available(specs: tuple[str, ...] = ()) -> list[Parser]:
    """Every parser in the order files are routed to them."""
    named = [resolve(spec) for spec in specs]
    seen = {id(p) for p in named}
    rest = [p for p in (*_entry_point_parsers(), *builtin_parsers()) if id(p) not in seen]
    return named + rest


def polyglot_hint(language_counts: dict) -> str | None:
    """One line telling what the extra `snakebatch[polyglot]` would parse among files counted by
    language, when its parsers are missing; None when nothing would change."""
    from .grammars import GRAMMARS

    present = {parser.name for parser in _language_parsers()}
    missing = {g.language: language_counts[g.language] for g in GRAMMARS
               if g.parser_name not in present and language_counts.get(g.language)}
    if not missing:
        return None
    n_files = sum(missing.values())
    return (f"snakebatch: hint: `pip install snakebatch[polyglot]` would parse {n_files} "
            f"file{'s' if n_files != 1 else ''} of {', '.join(sorted(missing))} for definitions "
            f"and imports (they got line counts only)")


class ParserRouter:
    """Chooses the parser of each file: the first whose patterns match its path; for a path that
    only the catch-all `text` parser matched, a shebang naming a parser's interpreter wins."""

    def __init__(self, specs: tuple[str, ...] = ()):
        self.parsers = available(specs)
        self.fallback = _text()
        # `--parser text` names the catch-all on purpose: then it takes every file, as listed.
        self.named_fallback = any(p is self.fallback for p in self.parsers[: len(specs)])

    def route(self, path: str, head: bytes = b"") -> Parser:
        if self.named_fallback:
            return next(p for p in self.parsers if p.matches(path))
        for parser in self.parsers:
            if parser is not self.fallback and parser.matches(path):
                return parser
        if head.startswith(b"#!"):
            interpreter = shebang_interpreter(head)
            if interpreter:
                for parser in self.parsers:
                    if interpreter in parser.interpreters:
                        return parser
        return self.fallback
