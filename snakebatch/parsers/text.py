"""The built-in `text` parser: line counts for every text file no other parser takes.

Owns: decoding checks and line counts of plain text. Must not touch: anything outside the bytes.
"""

from __future__ import annotations

from .._version import __version__
from ..languages import language_of_file
from .base import Parser, ParseResult, count_lines


def decode_text(data: bytes) -> str | None:
    """The text of `data` (UTF-8, or UTF-16 with a BOM), or None when it is neither."""
    try:
        if data.startswith((b"\xff\xfe", b"\xfe\xff")):
            return data.decode("utf-16")
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None


class TextParser(Parser):
    name = "text"
    patterns = ("*",)
    version = __version__

    def parse(self, path: str, data: bytes) -> ParseResult:
        language = language_of_file(path, data[:256])
        if data.startswith((b"\xff\xfe", b"\xfe\xff")):
            text = decode_text(data)
            data = text.encode("utf-8") if text is not None else data
        lines, code, comments, blank = count_lines(data, comment=None)
        result = ParseResult(
            language=language, lines=lines, code_lines=code, comment_lines=comments, blank_lines=blank
        )
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as err:
            result.status = "decode_error"
            result.error_type = "UnicodeDecodeError"
            result.error_message = f"not UTF-8: {err.reason} at byte {err.start}"
            result.error_line = data.count(b"\n", 0, err.start) + 1
            result.error_col = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        return result


parser = TextParser()
