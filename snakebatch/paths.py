"""The `path` of a file in the tables, and back: valid UTF-8, unique per file, reversible.

Owns: the encoding of a name's bytes (relative to SOURCE) as the tables' `path`, and its
inverse. Must not touch: the filesystem. Every layer that names a file by its `path` (discovery,
the worker, the resume index, the ledger) uses these two functions, so they agree.
"""

from __future__ import annotations

import re


def display_path(path: str) -> str:
    """The path as it appears in the tables: valid UTF-8, unique per file and reversible
    (`source_path` turns it back into the name's bytes).

    A byte that is not UTF-8 is written `\\xNN` (two lower-case hex digits). A backslash of the
    name is written doubled, `\\\\`, exactly where it would otherwise read as the start of an
    escape: before another backslash, before an undecodable byte, or before `x` and two hex
    digits. Every other name is its own path, backslashes included.
    """
    if "\\" not in path:
        try:
            path.encode("utf-8")
            return path
        except UnicodeEncodeError:
            pass
    out = []
    end = len(path)
    for i, char in enumerate(path):
        if "\udc80" <= char <= "\udcff":  # a byte surrogateescape could not decode
            out.append(f"\\x{ord(char) - 0xDC00:02x}")
        elif char == "\\" and i + 1 < end and (
                path[i + 1] == "\\" or "\udc80" <= path[i + 1] <= "\udcff"
                or path[i + 1] == "x" and _HEX.fullmatch(path[i + 2:i + 4])):
            out.append("\\\\")
        else:
            out.append(char)
    return "".join(out)


_HEX = re.compile(r"[0-9a-fA-F]{2}")
_ESCAPE = re.compile(r"\\(\\|x[0-9a-fA-F]{2})")


def source_path(path: str) -> bytes:
    """The bytes of the name a table's `path` stands for (relative to SOURCE): the inverse of
    `display_path`. `\\\\` is a backslash, `\\xNN` the byte NN, any other character itself."""
    def unescape(match: re.Match) -> bytes:
        code = match.group(1)
        return b"\\" if code == "\\" else bytes([int(code[1:], 16)])

    parts, last = [], 0
    for match in _ESCAPE.finditer(path):
        parts.append(path[last:match.start()].encode("utf-8"))
        parts.append(unescape(match))
        last = match.end()
    parts.append(path[last:].encode("utf-8"))
    return b"".join(parts)
