"""Git sources (issue 15): `--rev` equals a run on a checkout of the revision, `--history` parses
each unique blob once and its join gives any revision's view, resume after SIGKILL, bad input.

Repositories are built here with `git` itself, with fixed identities and dates and no user or
system git configuration, so every commit id is the same on every machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import duckdb
import pytest

from helpers import cli_command, cli_in_process, read_table, run_cli
from resume_helpers import LOGGING_PARSER, env
from snakebatch.engine.gitsource import HISTORY_TABLES
from snakebatch.schema import TABLES

VOLATILE = {"batch_id", "parse_ms", "mtime_ns", "commit"}
GIT_ENV = {
    "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "A U Thor", "GIT_AUTHOR_EMAIL": "author@example.com",
    "GIT_COMMITTER_NAME": "C O Mitter", "GIT_COMMITTER_EMAIL": "committer@example.com",
}
NON_UTF8 = b"caf\xe9.py"


class Repo:
    def __init__(self, path: Path):
        self.path = path
        self.tick = 0

    def git(self, *args, input=None) -> str:
        self.tick += 1
        stamp = f"{1700000000 + self.tick * 60} +0000"
        proc = subprocess.run(["git", "-C", str(self.path), *args], input=input, capture_output=True, check=True,
                              env={**os.environ, **GIT_ENV, "GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp})
        return proc.stdout.decode().strip()

    def write(self, name: str | bytes, data: bytes) -> None:
        path = os.path.join(os.fsencode(self.path), os.fsencode(name))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data)

    def commit(self, message: str) -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "HEAD")


def build_repo(root: Path) -> tuple[Repo, dict]:
    """One history with a rename, a deletion, a binary file, a symlink, a submodule gitlink, a
    non-UTF-8 name and a merge. Returns the repo and its commits by name."""
    root.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True, env={**os.environ, **GIT_ENV})
    repo = Repo(root)
    repo.write("a.py", b"import os\n\ndef alpha(x):\n    return x\n")
    repo.write("pkg/b.py", b"from . import a\n\nclass Bee:\n    def buzz(self):\n        pass\n")
    repo.write("pkg/same.py", b"VALUE = 1\n")
    repo.write("data.bin", b"\x00\x01\x02binary\x00" * 10)
    repo.write("README.md", b"# demo\n")
    repo.write(NON_UTF8, b"def cafe():\n    pass\n")
    os.symlink("a.py", root / "link.py")
    first = repo.commit("first")
    repo.git("update-index", "--add", "--cacheinfo", f"160000,{first},vendor/mod")
    repo.git("commit", "-q", "-m", "a submodule gitlink")
    repo.git("mv", "pkg/b.py", "pkg/bee.py")
    os.remove(root / "data.bin")
    repo.write("a.py", b"import os\nimport sys\n\ndef alpha(x):\n    return x\n\ndef beta():\n    pass\n")
    repo.write("copy/same.py", b"VALUE = 1\n")  # the same blob at a second path
    second = repo.commit("rename, delete, modify")
    repo.git("checkout", "-q", "-b", "side", first)
    repo.write("side.py", b"def side():\n    return 2\n")
    side = repo.commit("side work")
    repo.git("checkout", "-q", "main")
    repo.git("merge", "-q", "--no-ff", "-m", "merge side", "side")
    merge = repo.git("rev-parse", "HEAD")
    return repo, {"first": first, "second": second, "side": side, "merge": merge}


# A checkout and its repository are folders of different names: their `source` labels differ.
def digests(out: Path, table: str, drop=VOLATILE | {"source"}) -> list[str]:
    rows = read_table(out, table).to_pylist()
    return sorted(hashlib.sha1(json.dumps({k: v for k, v in r.items() if k not in drop}, sort_keys=True,
                                          default=str).encode()).hexdigest() for r in rows)


def run_ok(*args, **kwargs):
    """A run that completes, in this process (no CLI start-up to wait for); `env` may carry the
    logging parser's settings (helpers.cli_in_process)."""
    return cli_in_process("run", *args, "-j", "1", "--no-progress", "--json", check_codes=(0,), **kwargs)


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    root = tmp_path_factory.mktemp("git")
    repo, commits = build_repo(root / "repo")
    return root, repo, commits


@pytest.fixture(scope="module")
def checkouts(history):
    """A run on a `git worktree add` checkout and a `--rev` run, for three commits."""
    root, repo, commits = history
    runs = {}
    for name in ("first", "second", "merge"):
        tree = root / f"checkout-{name}"
        repo.git("worktree", "add", "-q", "--detach", str(tree), commits[name])
        run_ok(tree, "-o", root / f"out-tree-{name}")
        run_ok(repo.path, "--rev", commits[name], "-o", root / f"out-rev-{name}")
        runs[name] = (root / f"out-tree-{name}", root / f"out-rev-{name}")
    return runs


def test_rev_equals_a_checkout_run(history, checkouts):
    _, _, commits = history
    for name, (tree_out, rev_out) in checkouts.items():
        for table in TABLES:
            assert digests(rev_out, table) == digests(tree_out, table), (name, table)
        files = read_table(rev_out, "files").to_pylist()
        assert {r["commit"] for r in files} == {commits[name]}
        assert all(r["mtime_ns"] is None for r in files)
        assert all(r["commit"] is None for r in read_table(tree_out, "files").to_pylist())
        paths = {r["path"] for r in files}
        assert "link.py" not in paths and not any(p.startswith("vendor") for p in paths)
        assert "caf\\xe9.py" in paths
    first = {r["path"]: r["status"] for r in read_table(checkouts["first"][1], "files").to_pylist()}
    assert first["data.bin"] == "binary"


def test_rev_from_a_bare_repository_and_a_git_folder(history, tmp_path):
    root, repo, commits = history
    bare = tmp_path / "bare.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo.path), str(bare)], check=True,
                   env={**os.environ, **GIT_ENV})
    expected = digests(root / "out-rev-second", "files")
    run_ok(bare, "--rev", "main~1", "-o", tmp_path / "bare-out")
    run_ok(repo.path / ".git", "--rev", commits["second"], "-o", tmp_path / "dotgit-out")
    assert digests(tmp_path / "bare-out", "files") == expected
    assert digests(tmp_path / "dotgit-out", "files") == expected


def test_follow_symlinks_and_max_file_size_as_in_a_checkout(history, checkouts, tmp_path):
    root, repo, commits = history
    tree = root / "checkout-first"
    for extra in (["--follow-symlinks"], ["--max-file-size", "40"]):
        run_ok(tree, "-o", tmp_path / "tree", "--fresh", *extra)
        run_ok(repo.path, "--rev", commits["first"], "-o", tmp_path / "rev", "--fresh", *extra)
        drop = VOLATILE | {"blob_id", "source"}  # a too_large blob's id is known from the tree, a file's is not read
        assert digests(tmp_path / "rev", "files", drop) == digests(tmp_path / "tree", "files", drop), extra
    rows = {r["path"]: r for r in read_table(tmp_path / "rev", "files").to_pylist()}
    assert rows["data.bin"]["status"] == "too_large" and rows["data.bin"]["blob_id"]


def test_include_exclude_apply_to_tree_paths(history, tmp_path):
    _, repo, commits = history
    run_ok(repo.path, "--rev", commits["second"], "-o", tmp_path / "out", "--exclude", "copy/", "--include", "*.py")
    paths = sorted(r["path"] for r in read_table(tmp_path / "out", "files").to_pylist())
    assert paths == ["a.py", "caf\\xe9.py", "pkg/bee.py", "pkg/same.py"]


def test_history_parses_each_blob_once_and_its_join_gives_each_revision(history, checkouts, tmp_path):
    root, repo, commits = history
    log = tmp_path / "parses.log"
    out = tmp_path / "hist"
    run_ok(repo.path, "--history", "-o", out, "--parser", LOGGING_PARSER, env=env(log))
    files = read_table(out, "files")
    blob_ids = files.column("blob_id").to_pylist()
    assert len(blob_ids) == len(set(blob_ids))
    con = duckdb.connect()
    con.execute(f"create view files as select * from read_parquet('{out}/files/*.parquet')")
    con.execute(f"create view tree_entries as select * from read_parquet('{out}/tree_entries/*.parquet')")
    con.execute(f"create view commits as select * from read_parquet('{out}/commits/*.parquet')")
    distinct = con.execute("select count(distinct blob_id) from tree_entries").fetchone()[0]
    assert distinct == len(blob_ids)
    # each unique .py blob parsed exactly once (the same content at two paths too)
    parsed = log.read_text().splitlines()
    py_blobs = con.execute("select count(*) from files where parser = 'logging-python'").fetchone()[0]
    assert len(parsed) == py_blobs
    assert con.execute("select count(*) from commits").fetchone()[0] == 5
    merge_parents = con.execute("select parents from commits where commit = ?", [commits["merge"]]).fetchone()[0]
    assert merge_parents == [commits["second"], commits["side"]]
    # the join gives a revision's view: a --rev run with the same parser
    for name in ("first", "merge"):
        rev_out = tmp_path / f"rev-{name}"
        run_ok(repo.path, "--rev", commits[name], "-o", rev_out, "--parser", LOGGING_PARSER)
        joined = con.execute(
            "select t.path, f.* exclude (path, commit, batch_id, parse_ms, mtime_ns) from tree_entries t "
            "join files f using (blob_id) where t.commit = ? order by t.path", [commits[name]]).fetchall()
        rev = duckdb.connect().execute(
            f"select path, * exclude (path, commit, batch_id, parse_ms, mtime_ns) "
            f"from read_parquet('{rev_out}/files/*.parquet') order by path").fetchall()
        assert joined == rev, name
        join_defs = con.execute(
            f"select t.path, d.* exclude (path) from tree_entries t join read_parquet('{out}/definitions/*.parquet') d "
            "using (blob_id) where t.commit = ? order by all", [commits[name]]).fetchall()
        rev_defs = duckdb.connect().execute(
            f"select path, * exclude (path) from read_parquet('{rev_out}/definitions/*.parquet') order by all").fetchall()
        assert join_defs == rev_defs, name


def test_revs_range_takes_only_its_commits(history, tmp_path):
    _, repo, commits = history
    out = tmp_path / "range"
    run_ok(repo.path, "--revs", f"{commits['second']}..main", "-o", out)
    listed = read_table(out, "commits").column("commit").to_pylist()
    assert sorted(listed) == sorted([commits["side"], commits["merge"]])


@pytest.mark.slow  # SIGKILL and resume: of a folder job in test_kill.py, of a bucket job in test_s3.py
def test_sigkill_then_resume_gives_the_same_tables(history, tmp_path):
    _, repo, _ = history
    baseline = tmp_path / "baseline"
    run_ok(repo.path, "--history", "-o", baseline, "--batch-bytes", "1", "--no-compact")
    out = tmp_path / "killed"
    args = ["run", repo.path, "--history", "-o", out, "-j", "1", "--no-progress", "--batch-bytes", "1",
            "--no-compact", "--parser", LOGGING_PARSER]
    proc = subprocess.Popen(cli_command(*args), env=env(tmp_path / "log", sleep=0.3), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (tmp_path / "log").exists():
        time.sleep(0.05)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len((tmp_path / "log").read_text().splitlines())
    run_cli(*args, "--resume", check_codes=(0,), env=env(tmp_path / "log"))
    parsed = (tmp_path / "log").read_text().splitlines()
    assert 0 < done_before < len(parsed)
    for table in (*TABLES, *HISTORY_TABLES):
        assert digests(out, table, VOLATILE | {"parser", "parser_version"}) == \
            digests(baseline, table, VOLATILE | {"parser", "parser_version"}), table


def test_not_a_repository_unknown_revision_and_shallow_clone_exit_2(history, tmp_path):
    _, repo, commits = history
    folder = tmp_path / "plain"
    folder.mkdir()
    proc = cli_in_process("run", folder, "--rev", "HEAD", "-o", tmp_path / "o1", check_codes=(2,),
                          env={**env(), "GIT_CEILING_DIRECTORIES": str(tmp_path)})
    assert "is not a git repository" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli_in_process("run", repo.path, "--rev", "no-such-branch", "-o", tmp_path / "o2", check_codes=(2,))
    assert "'no-such-branch' is not a commit" in proc.stderr
    shallow = tmp_path / "shallow"
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{repo.path}", str(shallow)], check=True,
                   env={**os.environ, **GIT_ENV})
    proc = cli_in_process("run", shallow, "--history", "-o", tmp_path / "o3", check_codes=(2,))
    assert "shallow clone" in proc.stderr and "git fetch --unshallow" in proc.stderr
    run_ok(shallow, "--rev", "HEAD", "-o", tmp_path / "o4")  # one revision needs no history


def test_an_object_that_cannot_be_read_is_an_io_error_row(tmp_path):
    repo, commits = build_repo(tmp_path / "repo")
    blob = repo.git("rev-parse", f"{commits['first']}:README.md")
    os.remove(repo.path / ".git" / "objects" / blob[:2] / blob[2:])
    out = tmp_path / "out"
    proc = cli_in_process("run", repo.path, "--rev", commits["first"], "-o", out, "-j", "1", "--no-progress",
                          check_codes=(0,))
    assert "Traceback" not in proc.stderr
    rows = {r["path"]: r for r in read_table(out, "files").to_pylist()}
    assert rows["README.md"]["status"] == "io_error"
    assert blob in rows["README.md"]["error_message"]
    assert rows["a.py"]["status"] == "ok"


def test_a_blob_at_three_paths_is_parsed_once_and_has_a_row_at_each(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True, env={**os.environ, **GIT_ENV})
    repo = Repo(root)
    shared = b"import os\n\nclass Shared:\n    def go(self):\n        pass\n"
    for name in ("a/shared.py", "b/deep/shared.py", "c/other_name.py"):
        repo.write(name, shared)
    repo.write("b/own.py", b"def own():\n    pass\n")
    repo.write("c/bad.py", b"def broken(:\n")  # the same syntax error at two paths, parsed once too
    repo.write("d/bad.py", b"def broken(:\n")
    commit = repo.commit("one blob at three paths")
    log = tmp_path / "parses.log"
    out = tmp_path / "rev"
    summary = json.loads(run_ok(root, "--rev", commit, "-o", out, "--parser", LOGGING_PARSER, "-j", "2",
                                env=env(log)).stdout)
    parsed = sorted(line.split("\t")[0] for line in log.read_text().splitlines())
    assert len(parsed) == 3 and "b/own.py" in parsed  # shared, own, bad: one parse each
    assert summary["parses"] == {"parsed": 3, "reused": 3, "cached": 0}
    status = run_cli("status", out, "--json", check_codes=(0,))
    assert json.loads(status.stdout)["parses"] == {"parsed": 3, "reused": 3, "cached": 0}  # the ledger's, job-wide
    assert "3 parsed, 3 reused" in run_cli("status", out, check_codes=(0,)).stdout
    files = {r["path"]: r for r in read_table(out, "files").to_pylist()}
    assert len(files) == 6
    shared_rows = [files[p] for p in ("a/shared.py", "b/deep/shared.py", "c/other_name.py")]
    assert len({r["blob_id"] for r in shared_rows}) == 1
    assert all(r["status"] == "ok" and r["n_definitions"] == 2 for r in shared_rows)
    definitions = read_table(out, "definitions").to_pylist()
    assert sorted(d["path"] for d in definitions if d["name"] == "go") == [
        "a/shared.py", "b/deep/shared.py", "c/other_name.py"]
    # the same tables as a folder run on a checkout, which parses every file
    tree = tmp_path / "checkout"
    repo.git("worktree", "add", "-q", "--detach", str(tree), commit)
    tree_out = tmp_path / "tree"
    tree_log = tmp_path / "tree-parses.log"
    tree_summary = json.loads(run_ok(tree, "-o", tree_out, "--parser", LOGGING_PARSER, env=env(tree_log)).stdout)
    assert len(tree_log.read_text().splitlines()) == 6  # a folder's files are each parsed
    assert tree_summary["parses"] == {"parsed": 6, "reused": 0, "cached": 0}
    for table in TABLES:
        assert digests(tree_out, table) == digests(out, table), table


def test_refresh_to_another_revision_parses_only_the_changed_blobs(history, checkouts, tmp_path):
    """`--refresh --rev NEW` on a job of an older revision: the tables of a `--rev NEW` run,
    found through `git diff-tree` (only changed paths looked at), each changed blob parsed once."""
    _, repo, commits = history
    out, log = tmp_path / "out", tmp_path / "parses.log"
    logged = ["--parser", LOGGING_PARSER]
    run_ok(repo.path, "--rev", commits["first"], "-o", out, *logged, env=env(log))
    first_parses = len(log.read_text().splitlines())
    proc = run_ok(repo.path, "--rev", commits["second"], "-o", out, "--refresh", *logged, env=env(log))
    parsed = log.read_text().splitlines()[first_parses:]
    refresh = json.loads(proc.stdout)["refresh"]
    assert refresh["walk"] == "diff"
    # first -> second: a.py modified; pkg/b.py renamed to pkg/bee.py (the same blob); data.bin
    # deleted; copy/same.py added (the blob of pkg/same.py); a submodule added (no row)
    assert refresh["changes"] == {"added": 2, "modified": 1, "deleted": 2, "reparsed": 0, "touched": 0}
    assert sorted(line.split("\t")[0] for line in parsed) == ["a.py", "copy/same.py", "pkg/bee.py"]
    feed = {r["path"]: r["change"] for r in read_table(out / "_snakebatch", "changes").to_pylist()}
    assert feed == {"a.py": "modified", "pkg/b.py": "deleted", "data.bin": "deleted",
                    "pkg/bee.py": "added", "copy/same.py": "added"}
    expected = tmp_path / "expected"
    run_ok(repo.path, "--rev", commits["second"], "-o", expected, *logged)
    exact = {"batch_id", "parse_ms"}  # the commit column too: every row has the new revision's
    for table in TABLES:
        assert digests(out, table, exact) == digests(expected, table, exact), table
    # and back to the older revision with the default parser: every row reparsed, the same tables
    proc = run_ok(repo.path, "--rev", commits["first"], "-o", out, "--refresh")
    assert json.loads(proc.stdout)["refresh"]["walk"] == "full"
    for table in TABLES:
        assert digests(out, table, exact) == digests(checkouts["first"][1], table, exact), table


def test_refresh_of_a_revision_job_needs_rev_and_a_folder_job_refuses_rev(history, tmp_path):
    _, repo, commits = history
    run_ok(repo.path, "--rev", commits["first"], "-o", tmp_path / "rev-job")
    proc = cli_in_process("run", repo.path, "-o", tmp_path / "rev-job", "--refresh", "--no-progress", check_codes=(2,))
    assert "--rev" in proc.stderr and "Traceback" not in proc.stderr
    run_ok(repo.path, "-o", tmp_path / "folder-job")
    proc = cli_in_process("run", repo.path, "-o", tmp_path / "folder-job", "--refresh", "--rev", "HEAD",
                          "--no-progress", check_codes=(2,))
    assert "folder" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli_in_process("run", repo.path, "--history", "-o", tmp_path / "h", "--refresh", "--no-progress",
                          check_codes=(2,))
    assert "--history" in proc.stderr
