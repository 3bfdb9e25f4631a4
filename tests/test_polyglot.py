"""Polyglot repositories: tree-sitter parsers, shebang routing, entry-point plugins, provenance.

Runs the real CLI on sample_repos/polyglot and reads the Parquet back with pyarrow and DuckDB.
Tests that need the extra `snakebatch[polyglot]` skip without `tree_sitter`; the test of a run
without the extra makes `tree_sitter` unimportable in its subprocess instead.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import duckdb
import pytest

from helpers import SAMPLES, cli_env, cli_in_process, read_table, run_cli

POLYGLOT = SAMPLES / "polyglot"
PLUGIN_PKG = Path(__file__).resolve().parent / "plugin_pkg"

# Counted by hand from the sources in sample_repos/polyglot (not produced by the code): for each
# file, its parser, its language, its definitions as (kind, qualname, start_line) and its imports
# as (module, name, alias, line). The counting rules (README "## Parsers"): prototypes and member
# declarations without a body are not definitions (geometry.cpp's in-class `void add(Point p);`),
# abstract members of interfaces and traits are; type aliases (service.ts's `UserId`) are not;
# a JavaScript default import has name `default`, a namespace import name `*`.
EXPECTED = {
    "app.js": ("javascript", "JavaScript", [
        ("function", "createApp", 7), ("class", "Router", 11), ("method", "Router.constructor", 12),
        ("method", "Router.add", 16), ("function", "handle", 21),
    ], [
        ("express", "default", "express", 2), ("fs/promises", "readFile", None, 3),
        ("fs/promises", "writeFile", "write", 3), ("path", "*", "path", 4), ("util", None, None, 5),
    ]),
    "service.ts": ("typescript", "TypeScript", [
        ("interface", "User", 6), ("enum", "Role", 11), ("class", "UserService", 19),
        ("method", "UserService.find", 22), ("method", "UserService.add", 26), ("function", "loadConfig", 31),
        ("module", "Helpers", 35), ("function", "Helpers.slug", 36),
    ], [
        ("@angular/core", "Injectable", None, 2), ("./config", "Config", None, 3), ("fs", "*", "fs", 4),
    ]),
    "main.go": ("go", "Go", [
        ("struct", "Server", 11), ("interface", "Handler", 15), ("method", "Handler.Serve", 16),
        ("function", "NewServer", 19), ("method", "Server.Start", 23), ("method", "Server.Stop", 28),
    ], [
        ("fmt", None, None, 5), ("strings", None, "str", 6), ("os", None, None, 9),
    ]),
    "lib.rs": ("rust", "Rust", [
        ("struct", "Counter", 6), ("enum", "Mode", 10), ("trait", "Named", 15), ("method", "Named.name", 16),
        ("method", "Counter.new", 20), ("method", "Counter.add", 24), ("module", "util", 29),
        ("function", "util.helper", 30), ("function", "main", 35),
    ], [
        ("std::collections", "HashMap", None, 2), ("std::io", "self", None, 3), ("std::io", "Read", None, 3),
        ("serde", "Serialize", "Ser", 4),
    ]),
    "Shapes.java": ("java", "Java", [
        ("class", "Shapes", 9), ("method", "Shapes.Shapes", 12), ("method", "Shapes.add", 15),
        ("interface", "Shapes.Shape", 19), ("method", "Shapes.Shape.area", 20), ("class", "Shapes.Circle", 23),
        ("method", "Shapes.Circle.Circle", 26), ("method", "Shapes.Circle.area", 30), ("enum", "Shapes.Color", 35),
    ], [
        ("java.util", "List", None, 4), ("java.util", "ArrayList", None, 5), ("java.lang.Math", "PI", None, 6),
        ("java.io", "*", None, 7),
    ]),
    "util.c": ("c", "C", [
        ("struct", "point", 6), ("enum", "color", 11), ("function", "add", 13), ("function", "greet", 17),
        ("function", "main", 22),
    ], [
        ("stdio.h", None, None, 2), ("stdlib.h", None, None, 3), ("util.h", None, None, 4),
    ]),
    "geometry.cpp": ("cpp", "C++", [
        ("namespace", "geo", 6), ("struct", "geo.Point", 8), ("class", "geo.Polygon", 12),
        ("method", "geo.Polygon.Polygon", 14), ("method", "geo.Polygon.area", 15),
        ("method", "geo.Polygon.add", 23), ("function", "main", 29),
    ], [
        ("iostream", None, None, 2), ("vector", None, None, 3), ("geometry.hpp", None, None, 4),
    ]),
    "inventory.rb": ("ruby", "Ruby", [
        ("module", "Shop", 5), ("class", "Shop.Item", 6), ("method", "Shop.Item.initialize", 7),
        ("method", "Shop.Item.to_s", 12), ("method", "Shop.Item.parse", 16), ("method", "total", 22),
    ], [
        ("json", None, None, 2), ("lib/store", None, None, 3),
    ]),
    "Program.cs": ("csharp", "C#", [
        ("namespace", "Demo.App", 6), ("interface", "Demo.App.IGreeter", 8),
        ("method", "Demo.App.IGreeter.Greet", 10), ("struct", "Demo.App.Pair", 13), ("enum", "Demo.App.Level", 19),
        ("class", "Demo.App.Greeter", 21), ("method", "Demo.App.Greeter.Greeter", 23),
        ("method", "Demo.App.Greeter.Greet", 25), ("method", "Demo.App.Greeter.Main", 30),
    ], [
        ("System", None, None, 2), ("System.Collections.Generic", None, None, 3),
        ("System.Text.Json.JsonSerializer", None, "Json", 4),
    ]),
    "index.php": ("php", "PHP", [
        ("namespace", "App\\Http", 3), ("interface", "Renderable", 9), ("method", "Renderable.render", 11),
        ("trait", "Greets", 14), ("method", "Greets.greet", 16), ("class", "UserController", 22),
        ("method", "UserController.render", 26), ("function", "helper", 32),
    ], [
        ("App\\Models", "User", None, 5), ("Illuminate\\Support", "Str", "Strings", 6), ("config.php", None, None, 7),
    ]),
    "deploy.sh": ("bash", "Shell", [
        ("function", "build", 6), ("function", "deploy", 10),
    ], [
        ("./lib/common.sh", None, None, 3), ("./lib/env.sh", None, None, 4),
    ]),
    # No extension: routed by the `#!` line.
    "runtool": ("bash", "Shell", [("function", "usage", 5)], [("./helpers.sh", None, None, 3)]),
    "server": ("javascript", "JavaScript", [("function", "listen", 5)], [("http", None, None, 3)]),
    "README.md": ("text", "Markdown", [], []),
}


@pytest.fixture(scope="module")
def polyglot_out(tmp_path_factory):
    pytest.importorskip("tree_sitter")
    out = tmp_path_factory.mktemp("polyglot") / "out"
    proc = cli_in_process("run", POLYGLOT, "-o", out, "--json", check_codes=(0,))
    return out, json.loads(proc.stdout), proc.stderr


def _by_path(table) -> dict:
    rows = defaultdict(list)
    for row in table.to_pylist():
        rows[row["path"]].append(row)
    return rows


def test_sample_rows_match_hand_counts(polyglot_out):
    out, _, _ = polyglot_out
    files = {row["path"]: row for row in read_table(out, "files").to_pylist()}
    definitions = _by_path(read_table(out, "definitions"))
    imports = _by_path(read_table(out, "imports"))
    assert sorted(files) == sorted(EXPECTED)
    for path, (parser, language, expected_defs, expected_imports) in EXPECTED.items():
        row = files[path]
        assert (row["parser"], row["language"], row["status"]) == (parser, language, "ok"), path
        got_defs = sorted((d["kind"], d["qualname"], d["start_line"]) for d in definitions[path])
        assert got_defs == sorted(expected_defs), path
        got_imports = [(i["module"], i["name"], i["alias"], i["line"]) for i in imports[path]]
        assert sorted(got_imports, key=repr) == sorted(expected_imports, key=repr), path
        assert (row["n_definitions"], row["n_imports"]) == (len(expected_defs), len(expected_imports)), path
        for d in definitions[path]:
            assert d["language"] == language
            assert d["qualname"] == (f"{d['parent']}.{d['name']}" if d["parent"] else d["name"])


def test_details_of_rows(polyglot_out):
    """Hand-checked details: parents, end lines, parameter counts, comment lines."""
    out, _, _ = polyglot_out
    con = duckdb.connect()
    defs = f"read_parquet('{out}/definitions/*.parquet')"
    files = f"read_parquet('{out}/files/*.parquet')"
    rows = con.execute(
        f"SELECT qualname, parent, start_line, end_line, start_col, n_params FROM {defs} "
        "WHERE path IN ('main.go', 'geometry.cpp') AND kind = 'method' ORDER BY path, start_line"
    ).fetchall()
    assert rows == [
        ("geo.Polygon.Polygon", "geo.Polygon", 14, 14, 4, 0),
        ("geo.Polygon.area", "geo.Polygon", 15, 17, 4, 0),
        ("geo.Polygon.add", "geo.Polygon", 23, 25, 0, 1),
        ("Handler.Serve", "Handler", 16, 16, 1, 0),
        ("Server.Start", "Server", 23, 26, 0, 0),
        ("Server.Stop", "Server", 28, 30, 0, 0),
    ]
    # util.c: `/* Utilities in C. */` and `// call both`; 26 lines, 5 blank.
    assert con.execute(
        f"SELECT lines, code_lines, comment_lines, blank_lines FROM {files} WHERE path = 'util.c'"
    ).fetchall() == [(26, 19, 2, 5)]
    assert con.execute(f"SELECT decorators FROM {defs} WHERE qualname = 'UserService'").fetchall() == [
        (["Injectable()"],)
    ]
    # The PHP namespace keeps PHP's own separator in its name.
    assert con.execute(f"SELECT name FROM {defs} WHERE kind = 'namespace' AND language = 'PHP'").fetchall() == [
        ("App\\Http",)
    ]


def test_summary_and_status_count_languages(polyglot_out):
    out, summary, stderr = polyglot_out
    expected = {
        "JavaScript": 2, "Shell": 2, "TypeScript": 1, "Go": 1, "Rust": 1, "Java": 1, "C": 1, "C++": 1,
        "Ruby": 1, "C#": 1, "PHP": 1, "Markdown": 1,
    }
    assert summary["language_counts"] == expected
    assert json.loads(run_cli("status", out, "--json", check_codes=(0,)).stdout)["language_counts"] == expected
    assert "hint" not in stderr  # every polyglot file was parsed: nothing to suggest


def test_parsers_lists_each_language_with_its_grammar_version():
    pytest.importorskip("tree_sitter")
    listed = {p["name"]: p for p in json.loads(cli_in_process("parsers", "--json", check_codes=(0,)).stdout)}
    grammars = {
        "javascript": "tree-sitter-javascript", "typescript": "tree-sitter-typescript", "tsx": "tree-sitter-typescript",
        "go": "tree-sitter-go", "rust": "tree-sitter-rust", "java": "tree-sitter-java", "c": "tree-sitter-c",
        "cpp": "tree-sitter-cpp", "ruby": "tree-sitter-ruby", "csharp": "tree-sitter-c-sharp",
        "php": "tree-sitter-php", "bash": "tree-sitter-bash",
    }
    runtime = importlib.metadata.version("tree-sitter")
    for name, distribution in grammars.items():
        entry = listed[name]
        assert entry["version"] == f"{importlib.metadata.version(distribution)} (tree-sitter {runtime})"
        assert entry["origin"] == "builtin" and entry["patterns"]
    assert listed["bash"]["interpreters"] == ["bash", "sh"] and "node" in listed["javascript"]["interpreters"]
    assert listed["python"]["version"] == ".".join(map(str, sys.version_info[:3]))


def test_blob_id_equals_git_hash_object(polyglot_out):
    out, _, _ = polyglot_out
    files = read_table(out, "files").to_pylist()
    paths = [row["path"] for row in files]
    expected = subprocess.run(
        ["git", "hash-object", "--no-filters", *paths], cwd=POLYGLOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert [row["blob_id"] for row in files] == expected
    assert len(set(expected)) == len(files)


# One syntax error per language, each on a known line: (file name, source, line of the error).
SYNTAX_ERRORS = [
    ("broken.js", "function f() {\n  return 1;\n}\nfunction g( {\n", 4),
    ("broken.ts", "let x: number = 1;\nclass {\n", 2),
    ("broken.go", "package main\n\nfunc main() {\n\tx := \n}\n", 4),
    ("broken.rs", "fn main() {\n    let x = ;\n}\n", 2),
    ("Broken.java", "class A {\n  void f() {\n    int x = ;\n  }\n}\n", 3),
    ("broken.c", "int main(void) {\n  return 1 +;\n}\n", 2),
    ("broken.cpp", "int main() {\n  int x = (1;\n}\n", 2),
    ("broken.rb", "def f\n  x = (1\nend\n", 2),
    ("Broken.cs", "class A {\n  void F() {\n    int x = ;\n  }\n}\n", 3),
    ("broken.php", "<?php\nfunction f() {\n  $x = ;\n}\n", 3),
    ("broken.sh", "f() {\n  echo hi\n}\necho (\n", 4),
]


def test_syntax_error_in_each_language(tmp_path):
    pytest.importorskip("tree_sitter")
    src = tmp_path / "src"
    src.mkdir()
    for name, text, _ in SYNTAX_ERRORS:
        (src / name).write_text(text)
    cli_in_process("run", src, "-o", tmp_path / "out", check_codes=(0,))
    files = {row["path"]: row for row in read_table(tmp_path / "out", "files").to_pylist()}
    for name, _, line in SYNTAX_ERRORS:
        row = files[name]
        assert row["parser"] not in ("text", "python"), name
        assert (row["status"], row["error_line"]) == ("syntax_error", line), (name, row["error_message"])
        assert row["error_col"] >= 1 and row["error_message"], name
    # Definitions before the error are still found (broken.js's `f`, broken.sh's `f`).
    names = {(d["path"], d["name"]) for d in read_table(tmp_path / "out", "definitions").to_pylist()}
    assert {("broken.js", "f"), ("broken.sh", "f")} <= names


def test_python_rejected_by_ast_still_gets_rows_from_tree_sitter(tmp_path):
    pytest.importorskip("tree_sitter_python")
    src = tmp_path / "src"
    src.mkdir()
    (src / "legacy.py").write_text(
        "import os\nfrom ..pkg import a as b\n\nclass A:\n    async def m(self, x):\n        pass\n\n"
        "    def n(self):\n        print 'py2'\n\nasync def top():\n    pass\n"
    )
    cli_in_process("run", src, "-o", tmp_path / "out", check_codes=(0,))
    (row,) = read_table(tmp_path / "out", "files").to_pylist()
    # `ast` decides the status and the error; tree-sitter only recovers the rows around it.
    assert (row["parser"], row["status"], row["error_type"], row["error_line"]) == ("python", "syntax_error", "SyntaxError", 9)
    defs = [(d["kind"], d["qualname"], d["start_line"], d["n_params"])
            for d in read_table(tmp_path / "out", "definitions").to_pylist()]
    assert defs == [("class", "A", 4, None), ("method", "A.m", 5, 2), ("method", "A.n", 8, 1),
                    ("async_function", "top", 11, 0)]
    imports = [(i["module"], i["name"], i["alias"], i["level"], i["line"])
               for i in read_table(tmp_path / "out", "imports").to_pylist()]
    assert imports == [("os", None, None, 0, 1), ("pkg", "a", "b", 2, 2)]


def test_without_the_extra_text_rows_and_one_hint(tmp_path):
    # A sitecustomize that makes `import tree_sitter` fail, as if the extra were not installed.
    blocker = tmp_path / "no_tree_sitter"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['tree_sitter'] = None\n")
    env = cli_env()
    env["PYTHONPATH"] = f"{blocker}:{env['PYTHONPATH']}"
    out = tmp_path / "out"
    proc = run_cli("run", POLYGLOT, "-o", out, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    files = {row["path"]: row for row in read_table(out, "files").to_pylist()}
    for path, (_, language, _, _) in EXPECTED.items():
        row = files[path]
        assert (row["parser"], row["status"], row["language"], row["n_definitions"]) == ("text", "ok", language, 0), path
        assert row["lines"] > 0
    assert read_table(out, "definitions").num_rows == 0
    hints = [line for line in proc.stderr.splitlines() if "pip install snakebatch[polyglot]" in line]
    assert len(hints) == 1, proc.stderr
    assert "would parse 13 files of C, C#, C++, Go, Java, JavaScript, PHP, Ruby, Rust, Shell, TypeScript" in hints[0]

    listed = run_cli("parsers", "--json", env=env, timeout=120, check_codes=(0,))
    names = [p["name"] for p in json.loads(listed.stdout)]
    assert "python" in names and names[-1] == "text" and "go" not in names


@pytest.fixture(scope="session")
def todo_plugin(tmp_path_factory):
    """The third-party parser package in tests/plugin_pkg, installed into a temporary folder (never
    into this environment): its name, the folder to put on a subprocess's PYTHONPATH, and whether
    something had installed it into the environment before. Entry points are found on sys.path, so
    the CLI subprocesses given the folder see the plugin and nothing else does."""
    installed_before = _todo_installed()
    build = tmp_path_factory.mktemp("todo_plugin")
    source = build / "src"
    shutil.copytree(PLUGIN_PKG, source)  # the build writes beside its sources: not in the checkout
    target = build / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(target), str(source)],
        check=True, capture_output=True, timeout=300,
    )
    assert _todo_installed() == installed_before
    return "todo", target, installed_before


def _todo_installed() -> bool:
    try:
        importlib.metadata.distribution("snakebatch-todo")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def test_entry_point_plugin_is_listed_and_used(tmp_path, todo_plugin):
    name, site, installed_before = todo_plugin
    listed = json.loads(run_cli("parsers", "--json", check_codes=(0,), env=cli_env([site])).stdout)
    todo = next(p for p in listed if p["name"] == name)
    assert todo["patterns"] == ["*.todo"] and todo["version"] == "1.2.3"
    assert "entry point" in todo["origin"] and "snakebatch-todo" in todo["origin"]
    names = [p["name"] for p in listed]
    # Documented order: entry points before the built-in parsers, `text` last.
    assert names.index("todo") < names.index("python") and names[-1] == "text"

    (line,) = [line for line in run_cli("parsers", check_codes=(0,), env=cli_env([site])).stdout.splitlines() if line.startswith("todo ")]
    assert "1.2.3" in line and "entry point snakebatch_todo:TodoParser (snakebatch-todo)" in line and "*.todo" in line

    src = tmp_path / "src"
    src.mkdir()
    (src / "week.todo").write_text("- [ ] write tests\nsee: notes.md\n- [ ] ship\n")
    run_cli("run", src, "-o", tmp_path / "out", check_codes=(0,), env=cli_env([site]))
    (row,) = read_table(tmp_path / "out", "files").to_pylist()
    assert (row["parser"], row["parser_version"], row["language"], row["n_definitions"]) == ("todo", "1.2.3", "Todo", 2)
    defs = read_table(tmp_path / "out", "definitions").to_pylist()
    assert [(d["kind"], d["name"], d["start_line"]) for d in defs] == [("task", "write tests", 1), ("task", "ship", 3)]
    assert [i["module"] for i in read_table(tmp_path / "out", "imports").to_pylist()] == ["notes.md"]

    # A parser named with --parser comes before the plugin that claims the same file.
    run_cli("run", src, "-o", tmp_path / "out2", "--parser", "text", check_codes=(0,), env=cli_env([site]))
    (row,) = read_table(tmp_path / "out2", "files").to_pylist()
    assert row["parser"] == "text"

    # The environment is as the tests found it (where nothing had installed the plugin before, a
    # run without the plugin's folder knows no `todo`).
    assert _todo_installed() == installed_before
    if not installed_before:
        names = [p["name"] for p in json.loads(cli_in_process("parsers", "--json", check_codes=(0,)).stdout)]
        assert name not in names


def test_parsers_are_safe_in_threads_and_picklable():
    """Dask runs tasks in threads and may pickle parsers: each thread gets its own tree-sitter parser."""
    pytest.importorskip("tree_sitter")
    import pickle
    import threading

    from snakebatch.parsers import get

    parser = get("rust")
    data = (POLYGLOT / "lib.rs").read_bytes()
    data = data + data.split(b"\n", 5)[5] * 200  # the body again and again, one valid file
    serial = parser.parse("lib.rs", data)
    assert serial.status == "ok" and len(serial.definitions) == 9 + 200 * 9
    results = []
    threads = [threading.Thread(target=lambda: results.append(parser.parse("lib.rs", data))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.definitions for r in results] == [serial.definitions] * 4
    assert pickle.loads(pickle.dumps(parser)).parse("lib.rs", data).definitions == serial.definitions


def test_utf16_source_is_parsed_as_text_not_bytes():
    pytest.importorskip("tree_sitter")
    from snakebatch.parsers import get

    source = "// utf-16\nint main(void) {\n  return 0;\n}\n"
    result = get("c").parse("w.c", source.encode("utf-16"))  # with a BOM
    assert result.status == "ok"
    assert [(d[0], d[1], d[4]) for d in result.definitions] == [("function", "main", 2)]
    assert (result.lines, result.comment_lines) == (4, 1)


def test_any_bytes_give_a_status_never_an_exception():
    pytest.importorskip("tree_sitter")
    from hypothesis import example, given, settings
    from hypothesis import strategies as st

    from snakebatch.parsers import available

    parsers = [p for p in available() if p.origin == "builtin" and p.name not in ("python", "text")]
    assert len(parsers) == 12
    checked = Counter()  # the filtered assertions below ran, not only the status check

    @settings(max_examples=40, deadline=None)
    @example(b"class A {}\nfn f() {}\nfunction g() {}\n")  # definitions in some grammars, an error in others
    @given(st.binary(max_size=300) | st.text(alphabet="{}()[];:.,'\"\\/*#$<>?= \nabcfnrstuv0", max_size=300).map(str.encode))
    def check(data):
        for parser in parsers:
            result = parser.parse("x", data)
            assert result.status in ("ok", "syntax_error", "decode_error")  # decode: a broken UTF-16 BOM
            if result.status == "syntax_error":
                assert 1 <= result.error_line <= data.count(b"\n") + 1
                checked["syntax_errors"] += 1
            for d in result.definitions:
                assert d[4] <= d[5] and d[2].endswith(d[1])
                checked["definitions"] += 1

    check()
    assert checked["syntax_errors"] > 0 and checked["definitions"] > 0


def test_header_with_cpp_features_is_read_as_cpp():
    pytest.importorskip("tree_sitter")
    from snakebatch.parsers import get

    cpp_header = b"#pragma once\n#include <vector>\n\nnamespace geo {\nclass Shape {\npublic:\n  virtual double area() const { return 0; }\n};\n}\n"
    c_header = b"#ifndef UTIL_H\n#define UTIL_H\nstruct point { int x; };\nstatic inline int twice(int x) { return 2 * x; }\n#endif\n"
    as_cpp = get("c").parse("shape.h", cpp_header)
    assert (as_cpp.language, as_cpp.status) == ("C++", "ok")
    assert [(d[0], d[2]) for d in as_cpp.definitions] == [
        ("namespace", "geo"), ("class", "geo.Shape"), ("method", "geo.Shape.area")]
    as_c = get("c").parse("util.h", c_header)
    assert (as_c.language, as_c.status) == ("C", "ok")
    assert [(d[0], d[2]) for d in as_c.definitions] == [("struct", "point"), ("function", "twice")]


def test_annotations_and_attributes_are_decorators():
    pytest.importorskip("tree_sitter")
    from snakebatch.parsers import get

    cases = [
        ("java", "A.java", b'@Deprecated\n@SuppressWarnings("x")\nclass A { @Override public void f() {} void g() {} }',
         [("A", ["Deprecated", 'SuppressWarnings("x")']), ("A.f", ["Override"]), ("A.g", [])]),
        ("csharp", "A.cs", b'[Serializable]\nclass A { [Obsolete("x"), Test] public void F() {} }',
         [("A", ["Serializable"]), ("A.F", ['Obsolete("x")', "Test"])]),
        ("typescript", "a.ts", b"@Component({})\nexport class A { f() {} }\n@Injectable()\nclass B {}",
         [("A", ["Component({})"]), ("A.f", []), ("B", ["Injectable()"])]),
        ("php", "a.php", b"<?php\n#[Attr]\nclass A { #[Route('/x'), Other] public function f() {} }",
         [("A", ["Attr"]), ("A.f", ["Route('/x')", "Other"])]),
    ]
    for parser, path, source, expected in cases:
        result = get(parser).parse(path, source)
        assert result.status == "ok", parser
        assert [(d[2], d[7]) for d in result.definitions] == expected, parser
