"""End to end: the CLI in a subprocess on the sample repository and on generated trees."""

from __future__ import annotations

import importlib.util
import json
import random
import signal
import time

import duckdb
import pyarrow.dataset as ds
import pytest

from expectations import ast_counts, ast_names
from helpers import SAMPLES, cli_in_process, read_table
from resume_helpers import LOGGING_PARSER, Run, env, run_args
from snakebatch.schema import TABLES

MISBEHAVING = "tests.misbehaving_parser:parser"  # raises on a `.bad` file that says `raise`

TINYLIB = SAMPLES / "tinylib"


@pytest.fixture(scope="module")
def tinylib_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("tinylib") / "out"
    proc = cli_in_process("run", TINYLIB, "-o", out, "--no-progress", "--json", "-j", "2", check_codes=[0])
    return out, json.loads(proc.stdout)


def _files_under(root):
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_sample_repo_rows_and_statuses(tinylib_out):
    out, summary = tinylib_out
    files = {r["path"]: r for r in read_table(out, "files").to_pylist()}
    # Every file except what .gitignore excludes (generated/, *.tmp) has exactly one row.
    expected_paths = {
        p.relative_to(TINYLIB).as_posix()
        for p in _files_under(TINYLIB)
        if "generated" not in p.parts and p.suffix != ".tmp"
    }
    assert set(files) == expected_paths
    assert summary["state"] == "complete" and summary["files"] == len(expected_paths)
    assert files["tinylib/broken.py"]["status"] == "syntax_error"
    assert files["tinylib/broken.py"]["error_line"] == 4
    assert files["tinylib/badbytes.py"]["status"] == "decode_error"
    assert files["tinylib/latin1.py"]["status"] == "ok"  # PEP 263 cookie honoured
    assert files["tinylib/latin1.py"]["docstring"] == "Café: a module in Latin-1 with a coding cookie."
    assert files["tinylib/bom.py"]["status"] == "ok"
    assert files["assets/dot.png"]["status"] == "binary"
    assert files["docs/latin1.txt"]["status"] == "decode_error"
    assert files["docs/utf16.txt"]["status"] == "ok" and files["docs/utf16.txt"]["lines"] == 2
    assert files["scripts/tool"]["parser"] == "python"  # routed by its shebang
    assert files["docs/README.md"]["language"] == "Markdown"
    assert summary["status_counts"] == _count(r["status"] for r in files.values())


def _count(values):
    counts = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return counts


def test_sample_repo_definitions_and_imports_match_ast(tinylib_out):
    out, _ = tinylib_out
    files = {r["path"]: r for r in read_table(out, "files").to_pylist()}
    definitions = read_table(out, "definitions").to_pylist()
    imports = read_table(out, "imports").to_pylist()
    checked = 0
    for path, row in files.items():
        if row["parser"] != "python" or row["status"] != "ok":
            continue
        checked += 1
        data = (TINYLIB / path).read_bytes()
        n_defs, n_imps = ast_counts(data)
        assert row["n_definitions"] == n_defs, path
        assert row["n_imports"] == n_imps, path
        kinds = {"FunctionDef": ("function", "method"), "AsyncFunctionDef": ("async_function", "method"),
                 "ClassDef": ("class",)}
        mine = sorted((d["kind"], d["name"]) for d in definitions if d["path"] == path)
        theirs = ast_names(data)
        assert sorted(name for _, name in mine) == sorted(name for _, name in theirs), path
        for (kind, name) in mine:
            assert any(kind in kinds[k] for k, n in theirs if n == name), (path, kind, name)
        assert sum(1 for i in imports if i["path"] == path) == n_imps
    assert checked > 0


def test_python_rows_carry_qualnames_decorators_and_imports(tinylib_out):
    out, _ = tinylib_out
    defs = {d["qualname"]: d for d in read_table(out, "definitions").to_pylist() if d["path"] == "tinylib/core.py"}
    assert defs["Engine"]["kind"] == "class" and defs["Engine"]["docstring"] == "Runs things."
    assert defs["Engine.label"]["kind"] == "method" and defs["Engine.label"]["decorators"] == ["property"]
    assert defs["Engine.make"]["n_params"] == 3 and defs["Engine.make"]["docstring"] == "Make an engine."
    assert defs["Engine.Config.load"]["parent"] == "Engine.Config"
    assert defs["Engine.Config.load.<locals>._inner"]["kind"] == "function"
    assert defs["main"]["kind"] == "async_function"
    assert defs["Engine.__init__"]["start_line"] == 17 and defs["Engine.__init__"]["end_line"] == 18
    imports = duckdb.connect().execute(
        f"select module, name, alias, level from read_parquet('{out}/imports/*.parquet') "
        "where path = 'tinylib/core.py' order by line, name"
    ).fetchall()
    assert ("collections", "OrderedDict", "OD", 0) in imports
    assert (None, "sub", None, 1) in imports
    assert ("sub.helpers", "scale", "rescale", 1) in imports
    assert ("os.path", None, None, 0) in imports
    assert ("json", None, None, 0) in imports  # an import inside a function body
    assert ("tomllib", None, None, 0) in imports  # an import inside try:


def test_line_counts(tinylib_out):
    out, _ = tinylib_out
    row = next(r for r in read_table(out, "files").to_pylist() if r["path"] == "tinylib/sub/helpers.py")
    text = (TINYLIB / "tinylib/sub/helpers.py").read_text().splitlines()
    assert row["lines"] == len(text)
    assert row["blank_lines"] == sum(1 for line in text if not line.strip())
    assert row["comment_lines"] == sum(1 for line in text if line.strip().startswith("#"))
    assert row["code_lines"] == row["lines"] - row["blank_lines"] - row["comment_lines"]


def test_hashes_are_xxh3_and_git_blob_ids(tinylib_out):
    import hashlib

    import xxhash

    out, _ = tinylib_out
    rows = read_table(out, "files").to_pylist()
    assert rows
    for row in rows:
        data = (TINYLIB / row["path"]).read_bytes()
        assert row["content_hash"] == xxhash.xxh3_128_hexdigest(data)
        assert row["blob_id"] == hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        assert row["size"] == len(data)


# With the extra snakebatch[polyglot], a Python file `ast` rejects still gets the definitions and
# imports tree-sitter-python recovers (README, Parsers); its status stays syntax_error.
_RECOVERS_PYTHON = all(importlib.util.find_spec(m) is not None for m in ("tree_sitter", "tree_sitter_python"))


def _generated_tree(root, n_files: int, seed: int):
    """A tree of valid and broken Python modules with known definitions and imports."""
    rng = random.Random(seed)
    expected = {}
    for i in range(n_files):
        folder = root / f"pkg{i % 7}" / f"sub{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        n_funcs, n_classes, n_imports = rng.randint(0, 6), rng.randint(0, 3), rng.randint(0, 4)
        lines = [f"import mod{j}" for j in range(n_imports)]
        for c in range(n_classes):
            lines += [f"class C{c}:", "    def m(self):", "        return 1"]
        lines += [f"def f{k}(a, b=2):\n    return a + b" for k in range(n_funcs)]
        broken = rng.random() < 0.1
        if broken:
            lines.append("def oops(:")
        path = folder / f"m{i}.py"
        path.write_text("\n".join(lines) + "\n")
        rel = path.relative_to(root).as_posix()
        if broken and _RECOVERS_PYTHON:  # tree-sitter-python finds the rows around `def oops(:`
            expected[rel] = ("syntax_error", n_funcs + 2 * n_classes + 1, n_imports)
        else:
            expected[rel] = ("syntax_error", 0, 0) if broken else ("ok", n_funcs + 2 * n_classes, n_imports)
    return expected


def test_generated_tree_counts_with_small_batches(tmp_path):
    src = tmp_path / "src"
    expected = _generated_tree(src, 400, seed=7)
    out = tmp_path / "out"
    cli_in_process("run", src, "-o", out, "--no-progress", "-j", "2", "--batch-bytes", "4KB", check_codes=[0])
    con = duckdb.connect()
    rows = con.execute(
        f"select path, status, n_definitions, n_imports from read_parquet('{out}/files/*.parquet')"
    ).fetchall()
    assert {r[0]: r[1:] for r in rows} == expected
    assert len(rows) == len(expected)  # exactly one row per file
    n_batches = con.execute(f"select count(distinct batch_id) from read_parquet('{out}/files/*.parquet')").fetchall()[0][0]
    assert n_batches > 4  # small batches really were used
    total_defs = con.execute(f"select count(*) from read_parquet('{out}/definitions/*.parquet')").fetchall()[0][0]
    assert total_defs == sum(e[1] for e in expected.values())


def test_refuses_existing_job_without_resume_or_fresh(tmp_path):
    src = tmp_path / "src"
    _generated_tree(src, 5, seed=1)
    out = tmp_path / "out"
    cli_in_process("run", src, "-o", out, "--no-progress", check_codes=[0])
    again = cli_in_process("run", src, "-o", out, "--no-progress")
    assert again.returncode == 2
    assert "--resume" in again.stderr and "--fresh" in again.stderr
    assert "Traceback" not in again.stderr
    fresh = cli_in_process("run", src, "-o", out, "--no-progress", "--fresh", "--json", check_codes=[0])
    assert json.loads(fresh.stdout)["files"] == 5
    assert read_table(out, "files").num_rows == 5


def test_fresh_refuses_a_folder_that_is_not_a_job(tmp_path):
    src = tmp_path / "src"
    _generated_tree(src, 3, seed=1)
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("do not delete")
    proc = cli_in_process("run", src, "-o", out, "--no-progress", "--fresh")
    assert proc.returncode == 2 and "holds no snakebatch job" in proc.stderr
    assert (out / "thesis.tex").read_text() == "do not delete"


def test_fail_fast_stops_with_exit_1_and_prints_resume(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(50):
        (src / f"m{i:02d}.py").write_text("x = 1\n" if i != 3 else "def (:\n")  # a syntax error does not stop it
    (src / "m05.bad").write_text("raise\n")
    out = tmp_path / "out"
    proc = cli_in_process("run", src, "-o", out, "--no-progress", "--fail-fast", "-j", "1", "--batch-bytes", "64",
                          "--parser", MISBEHAVING)
    assert proc.returncode == 1, proc.stderr
    assert "--fail-fast: m05.bad has status parser_error" in proc.stderr
    assert f"snakebatch run {src} -o {out} --resume --parser {MISBEHAVING}" in proc.stderr
    done = read_table(out, "files").num_rows
    assert 5 <= done < 51
    resumed = cli_in_process("run", src, "-o", out, "--no-progress", "--resume", "--parser", MISBEHAVING, "--json",
                             check_codes=[0])
    assert json.loads(resumed.stdout)["files"] == 51
    assert read_table(out, "files").num_rows == 51


def test_max_errors_counts_parser_failures(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(40):
        (src / f"m{i:02d}.py").write_text("def (:\n" if i % 2 else "y = 2\n")
        (src / f"m{i:02d}.bad").write_text("raise\n")
    out = tmp_path / "out"
    proc = cli_in_process("run", src, "-o", out, "--no-progress", "--max-errors", "3", "-j", "1",
                          "--batch-bytes", "16", "--parser", MISBEHAVING, "--json")
    assert proc.returncode == 1
    summary = json.loads(proc.stdout)
    assert summary["state"] == "stopped" and summary["status_counts"].get("parser_error", 0) >= 3
    assert "--max-errors 3: 3 files have status crashed, timeout or parser_error" == summary["stop_reason"]
    assert summary["files"] < 80


def test_parsers_command_lists_builtins():
    proc = cli_in_process("parsers", "--json", check_codes=[0])
    parsers = {p["name"]: p for p in json.loads(proc.stdout)}
    assert "*.py" in parsers["python"]["patterns"]
    assert parsers["text"]["patterns"] == ["*"]
    names = [p["name"] for p in json.loads(proc.stdout)]
    assert names[-1] == "text"  # the catch-all is tried last


def test_custom_parser_by_module_attribute(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.foo").write_text("alpha\nbeta\n")
    (src / "b.py").write_text("import os\n")
    plugin = tmp_path / "plug"
    plugin.mkdir()
    (plugin / "fooparser.py").write_text(
        "from snakebatch.parsers import Parser, ParseResult\n"
        "class Foo(Parser):\n"
        "    name = 'foo'\n"
        "    patterns = ('*.foo',)\n"
        "    def parse(self, path, data):\n"
        "        words = data.split()\n"
        "        return ParseResult(language='Foo', lines=len(words),\n"
        "            definitions=[('word', w.decode(), w.decode(), None, i + 1, i + 1, 0, [], None, None)\n"
        "                         for i, w in enumerate(words)])\n"
        "parser = Foo()\n"
    )
    out = tmp_path / "out"
    monkeypatch.syspath_prepend(plugin)  # a pool started here gives its workers this sys.path
    cli_in_process("run", src, "-o", out, "--no-progress", "--parser", "fooparser:parser", check_codes=[0])
    files = {r["path"]: r for r in read_table(out, "files").to_pylist()}
    assert files["a.foo"]["parser"] == "foo" and files["a.foo"]["language"] == "Foo"
    assert files["b.py"]["parser"] == "python"
    names = sorted(d["name"] for d in read_table(out, "definitions").to_pylist())
    assert names == ["alpha", "beta"]


def test_bad_parser_spec_is_a_usage_error(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    proc = cli_in_process("run", src, "-o", tmp_path / "out", "--parser", "no_such_module_xyz:parser")
    assert proc.returncode == 2
    assert "no_such_module_xyz" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_workers_that_cannot_run_stop_the_job_instead_of_crashing_every_file(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(30):
        (src / f"m{i:02d}.py").write_text(f"x = {i}\n")
    plugin = tmp_path / "plug"
    plugin.mkdir()
    # Imports cleanly in the coordinator (so the option is valid) but kills every worker process.
    (plugin / "deadly_import.py").write_text(
        "import multiprocessing, os\n"
        "from snakebatch.parsers import Parser, ParseResult\n"
        "if multiprocessing.parent_process() is not None:\n"
        "    os._exit(3)\n"
        "class Never(Parser):\n"
        "    name = 'never'\n"
        "    patterns = ('*.never',)\n"
        "    def parse(self, path, data):\n"
        "        return ParseResult()\n"
        "parser = Never()\n"
    )
    out = tmp_path / "out"
    monkeypatch.syspath_prepend(plugin)
    proc = cli_in_process("run", src, "-o", out, "--no-progress", "--json", "-j", "2", "--parser",
                          "deadly_import:parser")
    assert proc.returncode == 1, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["state"] == "stopped" and "without finishing any batch" in summary["stop_reason"]
    assert summary["status_counts"].get("crashed", 0) <= 2  # not every file marked crashed
    assert "--resume" in proc.stderr


def test_a_job_of_no_files_is_readable_by_duckdb(tmp_path):
    src = tmp_path / "empty"
    src.mkdir()
    out = tmp_path / "out"
    proc = cli_in_process("run", src, "-o", out, "--no-progress", "--json", check_codes=[0])
    assert json.loads(proc.stdout)["files"] == 0
    con = duckdb.connect()
    for table in TABLES:
        assert con.execute(f"select count(*) from read_parquet('{out}/{table}/*.parquet')").fetchall() == [(0,)]
    assert "status" in read_table(out, "files").schema.names


def test_tables_are_readable_before_the_first_batch_commits(tmp_path):
    """From the moment a job exists, `OUT/T/*.parquet` matches at least one part (empty, with the
    table's schema): DuckDB and pyarrow read zero rows instead of failing on an empty folder."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "slow.py").write_text("x = 1\n")
    out = tmp_path / "out"
    run = Run(run_args(src, out, "--parser", LOGGING_PARSER, "-j", "1"), env(sleep=60), tmp_path / "logs")
    try:
        deadline = time.monotonic() + 20  # the one parse takes 60 s
        while not list((out / "files").glob("*.parquet")):
            assert run.proc.poll() is None and time.monotonic() < deadline, run.stderr
            time.sleep(0.05)
        con = duckdb.connect()
        for table, column in (("files", "status"), ("definitions", "qualname"), ("imports", "module")):
            (count,) = con.execute(f"SELECT count({column}) FROM read_parquet('{out}/{table}/*.parquet')").fetchone()
            assert count == 0, table
            assert ds.dataset(str(out / table), format="parquet").to_table().num_rows == 0
        assert "status" in ds.dataset(str(out / "files"), format="parquet").schema.names
        assert run.proc.poll() is None  # the one file is still being parsed
    finally:
        run.signal_group(signal.SIGKILL)
        run.wait()
