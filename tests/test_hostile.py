"""Hostile inputs, generated here: every file gets the right status and nothing hangs."""

from __future__ import annotations

import json
import os

import pytest

from helpers import read_table, run_cli


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
    proc = run_cli("run", src, "-o", out, "--no-progress", "--json", "-j", "2", "--max-file-size", "1MB",
                   check_codes=[0], timeout=300)
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
    run_cli("run", src, "-o", out, "--no-progress", "-j", "2", "--max-file-size", "1MB",
            "--follow-symlinks", check_codes=[0], timeout=300)
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
    run_cli("run", src, "-o", out, "--no-progress", check_codes=[0])
    paths = {r["path"] for r in read_table(out, "files").to_pylist()}
    assert paths == {f"m{i}.py" for i in range(20)}
    run_cli("run", src, "-o", out, "--no-progress", "--fresh", check_codes=[0])
    assert {r["path"] for r in read_table(out, "files").to_pylist()} == paths


def test_include_and_exclude(tmp_path):
    src = tmp_path / "src"
    for rel in ("a/x.py", "a/y.txt", "b/z.py", "b/tests/t.py", "c.md"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text("x = 1\n")
    out = tmp_path / "out"
    run_cli("run", src, "-o", out, "--no-progress", "--include", "*.py", "--exclude", "tests/", check_codes=[0])
    assert {r["path"] for r in read_table(out, "files").to_pylist()} == {"a/x.py", "b/z.py"}


def test_no_gitignore_takes_ignored_files(hostile, tmp_path):
    src, expected = hostile
    out = tmp_path / "out"
    run_cli("run", src, "-o", out, "--no-progress", "--no-gitignore", "--max-file-size", "1MB", check_codes=[0])
    paths = {r["path"] for r in read_table(out, "files").to_pylist()}
    assert {"app.log", "build/out.py", "pkg/drop.log", "pkg/local/secret.py"} <= paths
    assert not any(p.startswith(".git/") for p in paths)  # VCS folders are always skipped
