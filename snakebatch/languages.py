"""Language names (GitHub linguist's) by file extension, file name and shebang interpreter.

Owns: the mapping from a path (or a shebang line) to a language name. Must not touch: parsing.
"""

from __future__ import annotations

import re

_BY_EXTENSION = {
    ".py": "Python", ".pyi": "Python", ".pyw": "Python", ".pyx": "Cython",
    ".js": "JavaScript", ".mjs": "JavaScript", ".cjs": "JavaScript", ".jsx": "JavaScript",
    ".ts": "TypeScript", ".mts": "TypeScript", ".cts": "TypeScript", ".tsx": "TSX",
    ".go": "Go", ".rs": "Rust", ".java": "Java", ".c": "C", ".h": "C",
    ".cc": "C++", ".cpp": "C++", ".cxx": "C++", ".hpp": "C++", ".hh": "C++", ".hxx": "C++",
    ".c++": "C++", ".h++": "C++", ".rb": "Ruby", ".rake": "Ruby", ".gemspec": "Ruby",
    ".cs": "C#", ".php": "PHP", ".sh": "Shell", ".bash": "Shell", ".zsh": "Shell",
    ".md": "Markdown", ".rst": "reStructuredText", ".txt": "Text", ".json": "JSON",
    ".yaml": "YAML", ".yml": "YAML", ".toml": "TOML", ".ini": "INI", ".cfg": "INI",
    ".html": "HTML", ".htm": "HTML", ".css": "CSS", ".xml": "XML", ".sql": "SQL",
    ".csv": "CSV", ".tsv": "TSV", ".bat": "Batchfile", ".ps1": "PowerShell",
    ".kt": "Kotlin", ".swift": "Swift", ".scala": "Scala", ".lua": "Lua", ".pl": "Perl",
    ".r": "R", ".jl": "Julia", ".hs": "Haskell", ".ex": "Elixir", ".erl": "Erlang",
    ".tex": "TeX", ".mk": "Makefile", ".cmake": "CMake", ".proto": "Protocol Buffer",
}
_BY_NAME = {
    "Makefile": "Makefile", "GNUmakefile": "Makefile", "Dockerfile": "Dockerfile",
    "CMakeLists.txt": "CMake", "Gemfile": "Ruby", "Rakefile": "Ruby",
}
_BY_INTERPRETER = {
    "python": "Python", "node": "JavaScript", "nodejs": "JavaScript", "ts-node": "TypeScript",
    "ruby": "Ruby", "php": "PHP", "sh": "Shell",
    "bash": "Shell", "zsh": "Shell", "dash": "Shell", "ksh": "Shell", "perl": "Perl",
}
_SHEBANG = re.compile(rb"#![ \t]*(\S+)(?:[ \t]+(\S+))?")


def language_of(path: str) -> str | None:
    """The language of a path by its file name or extension, or None."""
    base = path.rpartition("/")[2]
    if base in _BY_NAME:
        return _BY_NAME[base]
    dot = base.rfind(".")
    return _BY_EXTENSION.get(base[dot:].lower()) if dot > 0 else None


def shebang_interpreter(head: bytes) -> str | None:
    """The interpreter a `#!` line names, without version digits (`/usr/bin/env python3` -> python)."""
    match = _SHEBANG.match(head)
    if match is None:
        return None
    program = match.group(1).rpartition(b"/")[2]
    if program == b"env" and match.group(2):
        program = match.group(2)
    name = program.decode("ascii", "replace")
    return name.rstrip("0123456789.") or None


def language_of_interpreter(interpreter: str | None) -> str | None:
    return _BY_INTERPRETER.get(interpreter) if interpreter else None


def language_of_file(path: str, head: bytes) -> str | None:
    """The language of a path, or for a path that names none, of the `#!` line `head` starts with."""
    language = language_of(path)
    if language is None and head.startswith(b"#!"):
        language = language_of_interpreter(shebang_interpreter(head))
    return language
