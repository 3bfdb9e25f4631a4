"""The Python standard library of this machine: a real corpus nobody here wrote.

Every regular file gets exactly one row; a `.py` file is `ok` exactly when `ast.parse` accepts
it, with the definitions and imports a plain `ast.walk` counts.
"""

from __future__ import annotations

import json
import os
import stat

import duckdb
import pytest

from expectations import ast_counts
from helpers import read_table, run_cli, stdlib_dir

# A run of the whole standard library (~11 s of the default run's budget of 150 s on 2 cores). The
# default run keeps discovery's edge cases (test_hostile.py), the sample repository's rows checked
# against ast (test_engine.py) and real stdlib files parsed (test_python_parser.py).
pytestmark = pytest.mark.slow


def _expected_files(root) -> dict[str, str]:
    """Every regular file under root, as os.walk sees it, minus site-packages (not stdlib)."""
    found = {}
    for folder, dirs, files in os.walk(root):
        rel_folder = os.path.relpath(folder, root)
        if rel_folder == ".":
            dirs[:] = [d for d in dirs if d != "site-packages"]
        dirs[:] = [d for d in dirs if d not in (".git", ".hg", ".svn")]
        for name in files:
            path = os.path.join(folder, name)
            if stat.S_ISREG(os.lstat(path).st_mode):
                found[os.path.relpath(path, root).replace(os.sep, "/")] = path
    return found


@pytest.fixture(scope="module")
def stdlib_run(tmp_path_factory):
    root = stdlib_dir()
    out = tmp_path_factory.mktemp("stdlib") / "out"
    proc = run_cli("run", root, "-o", out, "--exclude", "/site-packages/", "--no-gitignore",
                   "--no-progress", "--json", "-j", "2", "--max-file-size", "64MB", check_codes=[0])
    return root, out, json.loads(proc.stdout)


def test_every_stdlib_file_has_exactly_one_row(stdlib_run):
    root, out, summary = stdlib_run
    expected = _expected_files(root)
    con = duckdb.connect()
    rows = con.execute(f"select path from read_parquet('{out}/files/*.parquet')").fetchall()
    paths = [r[0] for r in rows]
    assert len(paths) == len(set(paths))
    assert set(paths) == set(expected)
    assert summary["files"] == len(expected) and summary["state"] == "complete"


# ast-parses the whole standard library in this process (a third of a minute). The default run
# keeps the same check on the sample repository (test_engine.py::
# test_sample_repo_definitions_and_imports_match_ast) and on real files (test_python_parser.py).
@pytest.mark.slow
def test_stdlib_python_statuses_and_counts_agree_with_ast(stdlib_run):
    root, out, _ = stdlib_run
    files = read_table(out, "files").select(["path", "status", "n_definitions", "n_imports", "parser"]).to_pylist()
    checked = 0
    for row in files:
        if not row["path"].endswith(".py"):
            continue
        data = (root / row["path"]).read_bytes()
        counts = ast_counts(data)
        if b"\0" in data[:8000]:
            assert row["status"] == "binary", row["path"]
            continue
        if counts is None:
            assert row["status"] != "ok", row["path"]
        else:
            assert row["status"] == "ok", row["path"]
            assert (row["n_definitions"], row["n_imports"]) == counts, row["path"]
            checked += 1
    assert checked > 500


def test_stdlib_tables_agree_with_files_counts(stdlib_run):
    _, out, _ = stdlib_run
    con = duckdb.connect()
    n_defs = con.execute(f"select sum(n_definitions) from read_parquet('{out}/files/*.parquet')").fetchall()[0][0]
    rows = con.execute(f"select count(*) from read_parquet('{out}/definitions/*.parquet')").fetchall()[0][0]
    assert n_defs == rows > 10_000
    n_imps = con.execute(f"select sum(n_imports) from read_parquet('{out}/files/*.parquet')").fetchall()[0][0]
    rows = con.execute(f"select count(*) from read_parquet('{out}/imports/*.parquet')").fetchall()[0][0]
    assert n_imps == rows > 1_000
    # The tables join on path: every definition belongs to a file row.
    orphans = con.execute(
        f"select count(*) from read_parquet('{out}/definitions/*.parquet') d "
        f"anti join read_parquet('{out}/files/*.parquet') f using (path)"
    ).fetchall()[0][0]
    assert orphans == 0
