"""Hostile inputs, generated here: every file gets the right status and nothing hangs."""

from __future__ import annotations

import json
import os
import shutil

import pyarrow.parquet as pq
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from helpers import cli_in_process, read_table, run_cli
from snakebatch.paths import display_path, source_path


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile")
    src = base / "src"
    src.mkdir()
    expected: dict[str, str] = {}

    def put(rel: str, data: bytes, status: str | None):
        path = src / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if status is not None:
            expected[rel] = status

    put("enc/latin1_no_cookie.py", b'x = "caf\xe9"\n', "decode_error")
    put("enc/bogus_cookie.py", b"# coding: no-such-codec\nx = 1\n", "decode_error")
    put("enc/cp1252_cookie.py", b'# -*- coding: cp1252 -*-\nx = "\x93quoted\x94"\n', "ok")
    put("enc/utf8_bom.py", b"\xef\xbb\xbfx = 1\n", "ok")
    put("syntax/missing_colon.py", b"def f()\n    pass\n", "syntax_error")
    put("syntax/py2_print.py", b"print 'hello'\n", "syntax_error")
    put("syntax/tabs.py", b"if True:\n\tx = 1\n        y = 2\n", "syntax_error")
    put("deep/parens.py", b"x = " + b"(" * 300 + b"1" + b")" * 300 + b"\n", "syntax_error")
    # Deep enough to exhaust the parser's own limits: a status, never a dead worker.
    put("deep/unary.py", b"x = " + b"-" * 200_000 + b"1\n", "parser_error")
    put("deep/sum.py", b"x = " + b"1+" * 200_000 + b"1\n", "parser_error")
    put("nul/with_nul.py", b"x = 1\n\0\n", "binary")
    put("bin/random.bin", os.urandom(4096) + b"\0", "binary")
    put("big/huge.py", b"x = 1\n" * 400_000, "too_large")  # 2.4 MB > --max-file-size 1MB
    put("big/empty.py", b"", "ok")
    put("names/sp ace.py", b"a = 1\n", "ok")
    put("names/ünïcödé.py", b"b = 2\n", "ok")
    put("names/new\nline.txt", b"text\n", "ok")
    bad_name = os.fsencode(str(src / "names")) + b"/bad\xffname.py"
    with open(bad_name, "wb") as fh:
        fh.write(b"c = 3\n")
    expected["names/bad\\xffname.py"] = "ok"
    # VCS folders are never ingested; nor what .gitignore files exclude, at any depth.
    put(".git/config", b"[core]\n", None)
    put(".git/objects/ab/cdef", b"\0\0", None)
    put("sub/.git", b"gitdir: ../.git/modules/sub\n", None)  # a submodule's .git file
    put(".gitignore", b"*.log\nbuild/\n", "ok")
    put("app.log", b"log\n", None)
    put("build/out.py", b"x = 1\n", None)
    put("pkg/.gitignore", b"!keep.log\nlocal/\n", "ok")
    put("pkg/keep.log", b"kept by negation\n", "ok")
    put("pkg/drop.log", b"dropped\n", None)
    put("pkg/local/secret.py", b"x = 1\n", None)
    put("pkg/mod.py", b"import os\n", "ok")
    # Links: a loop, a link leaving SOURCE, a link inside SOURCE (not followed by default).
    outside = base / "outside"
    outside.mkdir()
    (outside / "stolen.py").write_text("x = 1\n")
    os.symlink(src, src / "loop")
    os.symlink(outside, src / "escape")
    os.symlink(outside / "stolen.py", src / "escape_file.py")
    os.symlink(src / "pkg" / "mod.py", src / "alias.py")
    os.mkfifo(src / "pipe.py")
    return src, expected


def test_hostile_tree_every_file_has_its_status(hostile, tmp_path):
    src, expected = hostile
    out = tmp_path / "out"
    proc = cli_in_process("run", src, "-o", out, "--no-progress", "--json", "-j", "2", "--max-file-size", "1MB",
                          check_codes=[0])
    summary = json.loads(proc.stdout)
    rows = read_table(out, "files").to_pylist()
    statuses = {r["path"]: r["status"] for r in rows}
    assert len(rows) == len(statuses)  # no path twice
    assert statuses == expected
    assert summary["files"] == len(expected)
    by_path = {r["path"]: r for r in rows}
    assert by_path["big/huge.py"]["content_hash"] is None
    assert "1000000" in by_path["big/huge.py"]["error_message"]
    assert by_path["deep/sum.py"]["error_type"] == "RecursionError"
    assert by_path["syntax/missing_colon.py"]["error_line"] == 1


def test_follow_symlinks_stays_inside_source_and_survives_loops(hostile, tmp_path):
    src, expected = hostile
    out = tmp_path / "out"
    cli_in_process("run", src, "-o", out, "--no-progress", "-j", "2", "--max-file-size", "1MB",
                   "--follow-symlinks", check_codes=[0])
    paths = {r["path"] for r in read_table(out, "files").to_pylist()}
    assert "alias.py" in paths  # a link to a file inside SOURCE
    assert not any(p.startswith("escape") for p in paths)  # links leaving SOURCE are never followed
    assert not any(p.startswith("loop/") for p in paths)  # the loop back to SOURCE is not walked again
    assert set(expected) <= paths


def test_output_inside_source_is_not_ingested(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(20):
        (src / f"m{i}.py").write_text(f"def f{i}(): pass\n")
    out = src / "snakebatch-out"
    cli_in_process("run", src, "-o", out, "--no-progress", check_codes=[0])
    paths = {r["path"] for r in read_table(out, "files").to_pylist()}
    assert paths == {f"m{i}.py" for i in range(20)}
    cli_in_process("run", src, "-o", out, "--no-progress", "--fresh", check_codes=[0])
    assert {r["path"] for r in read_table(out, "files").to_pylist()} == paths


def test_an_earlier_output_folder_inside_source_is_not_ingested_into_another(tmp_path):
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    for i in range(5):
        (src / "pkg" / f"m{i}.py").write_text(f"def f{i}(): pass\n")
    cli_in_process("run", src, "-o", src / "old-out", "--no-progress", check_codes=[0])
    (src / "pkg" / "_snakebatch").mkdir()  # a folder merely named like the state folder is source
    (src / "pkg" / "_snakebatch" / "keep.py").write_text("x = 1\n")
    out = tmp_path / "out"
    proc = cli_in_process("run", src, "-o", out, "--no-progress", "--json", check_codes=[0])
    paths = {r["path"] for r in read_table(out, "files").to_pylist()}
    assert paths == {f"pkg/m{i}.py" for i in range(5)} | {"pkg/_snakebatch/keep.py"}
    assert json.loads(proc.stdout)["job_folders"] == ["old-out"]
    plan = json.loads(run_cli("plan", src, "-o", out, "--json", check_codes=[0]).stdout)
    assert plan["files"] == 6 and any("old-out" in note for note in plan["notes"])


def test_filters_that_take_nothing_warn(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.py").write_text("x = 1\n")
    (src / "sub").mkdir()
    (src / "sub" / "b.py").write_text("y = 2\n")
    proc = cli_in_process("run", src, "-o", tmp_path / "out", "--exclude", "*", "--no-progress", "--json",
                          check_codes=[0])
    summary = json.loads(proc.stdout)
    assert summary["files"] == 0
    (warning,) = summary["warnings"]
    assert "no file was taken" in warning and "2 files and folders" in warning
    assert f"snakebatch: warning: {warning}" in proc.stderr
    plan = json.loads(run_cli("plan", src, "--include", "*.rs", "--json", check_codes=[0]).stdout)
    assert plan["files"] == 0 and any("no file was taken" in note for note in plan["notes"])
    # A folder with nothing in it is not a filter's doing: no warning.
    (tmp_path / "empty").mkdir()
    proc = cli_in_process("run", tmp_path / "empty", "-o", tmp_path / "out2", "--no-progress", "--json",
                          check_codes=[0])
    assert json.loads(proc.stdout)["warnings"] == []


def test_include_and_exclude(tmp_path):
    src = tmp_path / "src"
    for rel in ("a/x.py", "a/y.txt", "b/z.py", "b/tests/t.py", "c.md"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text("x = 1\n")
    out = tmp_path / "out"
    cli_in_process("run", src, "-o", out, "--no-progress", "--include", "*.py", "--exclude", "tests/", check_codes=[0])
    assert {r["path"] for r in read_table(out, "files").to_pylist()} == {"a/x.py", "b/z.py"}


def test_no_gitignore_takes_ignored_files(hostile, tmp_path):
    src, expected = hostile
    out = tmp_path / "out"
    cli_in_process("run", src, "-o", out, "--no-progress", "--no-gitignore", "--max-file-size", "1MB", check_codes=[0])
    paths = {r["path"] for r in read_table(out, "files").to_pylist()}
    assert {"app.log", "build/out.py", "pkg/drop.log", "pkg/local/secret.py"} <= paths
    assert not any(p.startswith(".git/") for p in paths)  # VCS folders are always skipped


def test_a_name_that_is_not_utf8_and_its_escaped_spelling_get_two_paths(tmp_path):
    """The bytes `bad\\xff\\xfe` and a name spelled with the characters `bad\\xff\\xfe` both became
    the path `bad\\xff\\xfe`, and a resume took the second for the first, committed already."""
    src = tmp_path / "src"
    src.mkdir()
    raw = b"bad\xff\xfe.py"
    spelled = rb"bad\xff\xfe.py"
    with open(os.fsencode(src) + b"/" + raw, "wb") as fh:
        fh.write(b"raw = 1\n")
    out = tmp_path / "out"
    cli_in_process("run", src, "-o", out, "--no-progress", check_codes=[0])
    with open(os.fsencode(src) + b"/" + spelled, "wb") as fh:
        fh.write(b"spelled = 2\n")
    proc = cli_in_process("run", src, "-o", out, "--no-progress", "--resume", "--json", check_codes=[0])
    assert json.loads(proc.stdout)["files_this_run"] == 1  # the new file, not taken as committed
    rows = read_table(out, "files").to_pylist()
    assert len(rows) == 2 and len({r["path"] for r in rows}) == 2
    assert {source_path(r["path"]) for r in rows} == {raw, spelled}  # each path gives its name back

    # A fresh run with both present: the same two rows.
    cli_in_process("run", src, "-o", out, "--no-progress", "--fresh", check_codes=[0])
    assert sorted(r["path"] for r in read_table(out, "files").to_pylist()) == sorted(r["path"] for r in rows)


@given(st.lists(st.binary(min_size=1, max_size=12).filter(lambda b: b"/" not in b and b"\0" not in b),
                min_size=1, max_size=3))
@example([rb"bad\xff"]).via("the spelled name of the test above")
@example([b"a\\\xff"]).via("a backslash before an undecodable byte")
@example([rb"a\\b", rb"\x4", b"\\"]).via("backslashes that are not escapes")
def test_every_name_has_a_path_that_gives_it_back(components):
    name = b"/".join(components)
    path = display_path(os.fsdecode(name))
    path.encode("utf-8")  # valid UTF-8: a Parquet string
    assert source_path(path) == name


def _small_job(tmp_path, n=12):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(n):
        (src / f"m{i:02d}.py").write_text(f"def f{i}(x):\n    return x + {i}\n" + "# pad\n" * 40)
    return src


def test_fresh_refuses_a_source_inside_out_and_deletes_nothing(tmp_path):
    """`run p3/files/jsrc -o p3 --fresh` deleted `p3/files/jsrc` with the table folder."""
    src = _small_job(tmp_path)
    out = tmp_path / "p3"
    cli_in_process("run", src, "-o", out, "--no-progress", check_codes=[0])
    def rows():  # the parts, as `read_parquet('p3/files/*.parquet')` would read them
        return pq.read_table(sorted((out / "files").glob("*.parquet"))).num_rows

    before = rows()
    jsrc = out / "files" / "jsrc"
    shutil.copytree(src, jsrc)
    proc = cli_in_process("run", jsrc, "-o", out, "--no-progress", "--fresh")
    assert proc.returncode == 2, proc.stderr
    assert "inside OUT" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(os.listdir(jsrc)) == sorted(os.listdir(src))
    assert rows() == before  # the job is untouched too
    # OUT inside a job's table or state folders: refused, not created.
    for inner in (out / "files" / "sub", out / "_snakebatch" / "sub", out / "imports"):
        proc = cli_in_process("run", src, "-o", inner, "--no-progress")
        assert proc.returncode == 2 and "own folders" in proc.stderr, proc.stderr
    assert not (out / "files" / "sub").exists() and not (out / "_snakebatch" / "sub").exists()


def test_fresh_recovery_and_compaction_delete_only_what_snakebatch_wrote(tmp_path):
    src = _small_job(tmp_path)
    out = tmp_path / "out"
    # Many parts, not compacted yet.
    cli_in_process("run", src, "-o", out, "--no-progress", "-j", "1", "--batch-bytes", "1KB", "--no-compact",
                   check_codes=[0])
    assert len(os.listdir(out / "files")) > 2
    (out / "files" / "notes.txt").write_text("mine\n")
    (out / "definitions" / "mine").mkdir()
    (out / "definitions" / "mine" / "keep.parquet").write_bytes(b"mine")
    # Recovery (a file no ledger line names) and compaction (the table folders are exchanged).
    proc = cli_in_process("run", src, "-o", out, "--no-progress", "--resume", "--json", check_codes=[0])
    assert json.loads(proc.stdout)["compaction"] is not None
    assert (out / "files" / "notes.txt").read_text() == "mine\n"
    assert (out / "definitions" / "mine" / "keep.parquet").read_bytes() == b"mine"
    assert not (out / "_snakebatch" / "compacting").exists()
    # --fresh: the job's parts go, the user's files stay.
    cli_in_process("run", src, "-o", out, "--no-progress", "--fresh", "--no-compact", check_codes=[0])
    assert (out / "files" / "notes.txt").read_text() == "mine\n"
    assert (out / "definitions" / "mine" / "keep.parquet").read_bytes() == b"mine"
    parts = sorted((out / "files").glob("*.parquet"))
    assert not any(p.name.startswith("part-c") for p in parts)  # the old job's compacted parts are gone
    assert pq.read_table(parts).num_rows == 12
    # A `_snakebatch` folder no run created (no lock in it) is not taken for a killed run's.
    other = tmp_path / "other"
    (other / "_snakebatch").mkdir(parents=True)
    (other / "_snakebatch" / "diary.txt").write_text("mine\n")
    proc = cli_in_process("run", src, "-o", other, "--no-progress")
    assert proc.returncode == 2 and "not empty" in proc.stderr, proc.stderr
    assert (other / "_snakebatch" / "diary.txt").read_text() == "mine\n"
