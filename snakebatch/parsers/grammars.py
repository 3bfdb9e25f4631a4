"""The tree-sitter grammars snakebatch knows: language, file patterns, grammar package, comments.

Owns: the table of polyglot languages (what the optional extra `snakebatch[polyglot]` parses),
readable without importing tree-sitter, so that a run without the extra can say what it missed.
Must not touch: tree-sitter itself (parsers/treesitter.py loads the grammars).
"""

from __future__ import annotations

import re
from typing import NamedTuple


class Grammar(NamedTuple):
    parser_name: str  # the name of the parser, for --parser and `snakebatch parsers`
    language: str  # GitHub linguist's name of the language
    module: str  # the grammar's Python module (a wheel on PyPI, no download at run time)
    function: str  # the module's function returning the language pointer
    distribution: str  # the grammar's distribution name, for its version
    query: str  # queries/<query>.scm: the definitions and imports of the language
    patterns: tuple[str, ...]
    interpreters: tuple[str, ...]  # shebang interpreters of files without a matching pattern
    comment: re.Pattern[bytes] | bytes | None  # the start of a comment line (count_lines)


# What a comment line starts with, after its indentation (count_lines). In C-family languages
# `*` continues a block comment only when a blank, `/` or the end of the line follows, so that a
# line starting with a dereference (`*p = 1;`) still counts as code.
_C_COMMENT = re.compile(rb"//|/\*|\*(?:[ \t/\r]|$)")
_HASH_COMMENT = b"#"
_PHP_COMMENT = re.compile(rb"//|#(?!\[)|/\*|\*(?:[ \t/\r]|$)")  # `#[...]` is an attribute

GRAMMARS: tuple[Grammar, ...] = (
    Grammar("javascript", "JavaScript", "tree_sitter_javascript", "language", "tree-sitter-javascript",
            "javascript", ("*.js", "*.mjs", "*.cjs", "*.jsx"), ("node", "nodejs"), _C_COMMENT),
    Grammar("typescript", "TypeScript", "tree_sitter_typescript", "language_typescript",
            "tree-sitter-typescript", "typescript", ("*.ts", "*.mts", "*.cts"), ("ts-node",), _C_COMMENT),
    Grammar("tsx", "TSX", "tree_sitter_typescript", "language_tsx", "tree-sitter-typescript",
            "typescript", ("*.tsx",), (), _C_COMMENT),
    Grammar("go", "Go", "tree_sitter_go", "language", "tree-sitter-go", "go", ("*.go",), (), _C_COMMENT),
    Grammar("rust", "Rust", "tree_sitter_rust", "language", "tree-sitter-rust", "rust", ("*.rs",), (),
            _C_COMMENT),
    Grammar("java", "Java", "tree_sitter_java", "language", "tree-sitter-java", "java", ("*.java",), (),
            _C_COMMENT),
    # linguist calls `.h` C unless heuristics say otherwise; the C grammar is the safe reading.
    Grammar("c", "C", "tree_sitter_c", "language", "tree-sitter-c", "c", ("*.c", "*.h"), (), _C_COMMENT),
    Grammar("cpp", "C++", "tree_sitter_cpp", "language", "tree-sitter-cpp", "cpp",
            ("*.cc", "*.cpp", "*.cxx", "*.c++", "*.hpp", "*.hh", "*.hxx", "*.h++"), (), _C_COMMENT),
    Grammar("ruby", "Ruby", "tree_sitter_ruby", "language", "tree-sitter-ruby", "ruby",
            ("*.rb", "*.rake", "*.gemspec", "Gemfile", "Rakefile"), ("ruby",), _HASH_COMMENT),
    Grammar("csharp", "C#", "tree_sitter_c_sharp", "language", "tree-sitter-c-sharp", "csharp", ("*.cs",),
            (), _C_COMMENT),
    Grammar("php", "PHP", "tree_sitter_php", "language_php", "tree-sitter-php", "php", ("*.php",), ("php",),
            _PHP_COMMENT),
    Grammar("bash", "Shell", "tree_sitter_bash", "language", "tree-sitter-bash", "bash", ("*.sh", "*.bash"),
            ("bash", "sh"), _HASH_COMMENT),
)

POLYGLOT_LANGUAGES = frozenset(g.language for g in GRAMMARS)
