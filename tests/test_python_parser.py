"""The python parser's shortcuts agree with the standard library they replace."""

from __future__ import annotations

import ast
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from snakebatch.parsers.base import count_lines
from snakebatch.parsers.python import _docstring

_TEXT = st.text(alphabet=st.sampled_from(list("ab #\t\n\r\x0c\"'\\é")), max_size=60)


@settings(max_examples=300, deadline=None)
@given(doc=_TEXT)
def test_docstring_matches_ast_get_docstring(doc):
    source = f"def f():\n    {doc!r}\n"
    node = ast.parse(source).body[0]
    assert _docstring(node) == ast.get_docstring(node)


@settings(max_examples=300, deadline=None)
@given(text=_TEXT)
def test_comment_prefix_counts_like_a_pattern(text):
    data = text.encode()
    assert count_lines(data) == count_lines(data, re.compile(rb"#"))
    lines, code, comments, blank = count_lines(data)
    expected = data.split(b"\n")
    if expected and expected[-1] == b"":
        expected.pop()
    assert lines == len(expected)
    assert blank == sum(1 for line in expected if not line.strip())
    assert comments == sum(1 for line in expected if line.lstrip().startswith(b"#"))
    assert code == lines - blank - comments
