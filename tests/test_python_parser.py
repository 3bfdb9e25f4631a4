"""The python parser's shortcuts agree with the standard library they replace."""

from __future__ import annotations

import ast
import os
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snakebatch.parsers.base import count_lines
from snakebatch.parsers.python import _decorator, _docstring, _source

_TEXT = st.text(alphabet=st.sampled_from(list("ab #/\t\n\r\x0b\x0c\"'\\é")), max_size=60)


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


@settings(max_examples=300, deadline=None)
@given(text=_TEXT)
def test_line_counts_without_a_prefix_or_with_a_long_one_match_the_line_by_line_count(text):
    data = text.encode()
    lines, code, comments, blank = count_lines(data, re.compile(rb"#"))
    assert count_lines(data, None) == (lines, lines - blank, None, blank)
    assert count_lines(data, b"//") == count_lines(data, re.compile(rb"//"))


_STDLIB = os.path.dirname(ast.__file__)
# Modules (and their tests, when the interpreter ships them) full of decorators and docstrings of
# every form, test_unparse and test_grammar among them for the odd ones.
_REAL_FILES = [
    "dataclasses.py", "functools.py", "typing.py", "enum.py", "contextlib.py", "inspect.py",
    "unittest/mock.py", "test/test_typing.py", "test/test_functools.py", "test/test_unparse.py",
    "test/test_decorators.py", "test/test_grammar.py", "test/test_enum.py", "test/test_socket.py",
    "test/test_os.py", "test/test_dataclasses/__init__.py", "test/test_bigmem.py",
]


@pytest.fixture(scope="module")
def real_trees() -> list[ast.Module]:
    """The real files parsed once for the tests that read them (~1 s of ast.parse)."""
    paths = [os.path.join(_STDLIB, name) for name in _REAL_FILES]
    trees = []
    for path in filter(os.path.exists, paths):
        with open(path, "rb") as fh:
            trees.append(ast.parse(fh.read()))
    assert len(trees) >= 6, "the stdlib sources these tests read are missing"
    return trees


def _decorated(trees) -> list:
    return [node for tree in trees for node in ast.walk(tree) if getattr(node, "decorator_list", None)]


def test_decorators_of_real_files_match_ast_unparse(real_trees):
    decorators = [d for node in _decorated(real_trees) for d in node.decorator_list]
    calls = [d for d in decorators if isinstance(d, ast.Call)]
    assert len(calls) > 300
    assert [_decorator(d) for d in decorators] == [ast.unparse(d) for d in decorators]
    # The fast path must be the one tested: most call decorators go through it (the rest are
    # mostly `skipIf` conditions, comparisons and boolean operators, left to ast.unparse).
    assert sum(_source(d) is not None for d in calls) > len(calls) // 2


_DECORATOR_FORMS = [
    "f", "a.b.c", "f()", "f(x)", "a.b(x, y=1)", "f(*args, **kwargs)", "f(**{'a': 1})", "f(-1)",
    "f(1.5)", "f(1e999)", "f(u'x')", "f(b'x\\n')", "f('it\\'s \"q\" \\n \\t é')", "f(...)",
    "f(None, True, False, 0, 10**3)", "f((1,))", "f(())", "f((a, b))", "f([])", "f([1, [2, (3,)]])",
    "f({})", "f({'a': [1], 2: (b,)})", "f({**a, 'b': 1})", "f({1, 2})", "f(x for x in y)",
    "f(lambda x: x)", "f(a if b else c)", "f(a < b)", "f(x[0])", "f(a)(b)(c=d)", "f().g", "f(x).g.h()",
    "(1).real", "'s'.join", "f('a'.join)", "f(1 .real)", "f(True.real)", "f([a, b][0])", "x[0]",
    "a or b", "f(f'{x!r}')", "f(a := 1)", "f(await_=1)",
]


@pytest.mark.parametrize("form", _DECORATOR_FORMS)
def test_decorator_forms_match_ast_unparse(form):
    node = ast.parse(f"@{form}\ndef g(): pass\n").body[0].decorator_list[0]
    assert _decorator(node) == ast.unparse(node)


_ATOMS = st.one_of(
    st.from_regex(r"[a-z_][a-z0-9_]{0,3}", fullmatch=True).filter(lambda name: not __import__("keyword").iskeyword(name)),
    st.integers(-(10**20), 10**20).map(repr),
    st.floats(allow_nan=False).map(repr),
    _TEXT.map(repr),
    st.binary(max_size=8).map(repr),
    st.sampled_from(["None", "True", "False", "..."]),
)
_EXPRESSIONS = st.recursive(
    _ATOMS,
    lambda inner: st.one_of(
        st.tuples(inner, st.lists(inner, max_size=3)).map(lambda t: f"{t[0]}({', '.join(t[1])})"),
        st.tuples(inner, inner).map(lambda t: f"{t[0]}(key={t[1]})"),
        inner.map(lambda e: f"({e}).attr"),
        st.lists(inner, max_size=3).map(lambda items: f"[{', '.join(items)}]"),
        st.lists(inner, min_size=1, max_size=3).map(lambda items: f"({', '.join(items)},)"),
        st.lists(st.tuples(inner, inner), max_size=3).map(lambda kv: "{" + ", ".join(f"{k}: {v}" for k, v in kv) + "}"),
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(expression=_EXPRESSIONS)
def test_generated_decorators_match_ast_unparse(expression):
    node = ast.parse(f"@{expression}\ndef g(): pass\n").body[0].decorator_list[0]
    assert _decorator(node) == ast.unparse(node)


def test_docstrings_of_real_files_match_ast_get_docstring(real_trees):
    nodes = [node for tree in real_trees for node in ast.walk(tree)
             if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))]
    docstrings = [ast.get_docstring(node) for node in nodes]
    assert sum(doc is not None and "\n" in doc for doc in docstrings) > 100
    assert [_docstring(node) for node in nodes] == docstrings
