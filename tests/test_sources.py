"""Several sources in one job: `run SRC1 SRC2 REPO@REV`, `--sources FILE`, the `source` column.

Real folders and a real git repository built with `git`; the tables are read back with pyarrow and
DuckDB; the crash test SIGKILLs a real CLI process group and resumes it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import duckdb
import msgspec
import pyarrow.parquet as pq
import pytest

import snakebatch
from helpers import cli_in_process, read_table, run_cli
from resume_helpers import LOGGING_PARSER, Run, copy_stdlib, env, run_args
from snakebatch.errors import ConfigError
from snakebatch.report.status import job_status
from snakebatch.schema import TABLES

VOLATILE = {"batch_id", "parse_ms"}
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}


def _write(root: Path, files: dict) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def _git(repo: Path, *args) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env={**os.environ, **GIT_ENV}).stdout.strip()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Two folders that share a path (`pkg/m.py`, different content) and a git repository whose
    working tree differs from its first commit."""
    root = tmp_path_factory.mktemp("sources")
    alpha = _write(root / "alpha", {"pkg/m.py": b"import os\n\ndef f(x):\n    return x\n",
                                    "pkg/same.py": b"VALUE = 1\n", "README.md": b"# alpha\n",
                                    "bad.py": b"def (\n"})
    beta = _write(root / "beta", {"pkg/m.py": b"from . import same\n\nclass K:\n    def m(self):\n        pass\n",
                                  "pkg/same.py": b"VALUE = 1\n", ".gitignore": b"*.log\n", "x.log": b"skip me\n"})
    gamma = root / "gamma"
    gamma.mkdir()
    _git(gamma, "init", "-q", "-b", "main")
    _write(gamma, {"g.py": b"import sys\n\ndef g():\n    pass\n", "pkg/same.py": b"VALUE = 1\n"})
    _git(gamma, "add", ".")
    _git(gamma, "commit", "-q", "-m", "first")
    first = _git(gamma, "rev-parse", "HEAD")
    _write(gamma, {"g.py": b"changed = True\n", "new.py": b"def new():\n    pass\n"})  # not committed
    return root, alpha, beta, gamma, first


def _rows(out: Path, table: str, source: str | None = None) -> Counter:
    """The table's rows as a multiset, without timings and batch numbers; `source` replaces
    the rows' label (a single-source run labels its rows with its folder's name)."""
    rows = Counter()
    for row in read_table(out, table).to_pylist():
        row = {k: tuple(v) if isinstance(v, list) else v for k, v in row.items() if k not in VOLATILE}
        if source is not None:
            row["source"] = source
        rows[tuple(sorted(row.items()))] += 1
    return rows


def test_several_sources_equal_the_union_of_single_source_runs(corpus, tmp_path):
    root, alpha, beta, gamma, first = corpus
    result = snakebatch.run([alpha, beta, f"{gamma}@main"], tmp_path / "all", workers=1, progress=False)
    assert result.state == "complete"
    singles = [(snakebatch.run(alpha, tmp_path / "a", workers=1), "alpha"),
               (snakebatch.run(beta, tmp_path / "b", workers=1), "beta"),
               (snakebatch.run(gamma, tmp_path / "g", workers=1, rev="main"), "gamma@main")]
    # A single source's label is its folder's name.
    assert {r["source"] for r in read_table(tmp_path / "a", "files").to_pylist()} == {"alpha"}
    for table in TABLES:
        union = Counter()
        for single, label in singles:
            union += _rows(Path(single.output), table, label)
        assert _rows(tmp_path / "all", table) == union, table
    assert result.files == sum(single.files for single, _ in singles) == 9

    con = duckdb.connect()
    files = f"read_parquet('{tmp_path / 'all'}/files/*.parquet')"
    assert con.execute(f"select source, count(*) from {files} group by source order by source").fetchall() == [
        ("alpha", 4), ("beta", 3), ("gamma@main", 2)]
    assert con.execute(f"select count(*), count(distinct (source, path)) from {files}").fetchall() == [(9, 9)]
    assert con.execute(f"select distinct commit from {files} where source = 'gamma@main'").fetchall() == [(first,)]
    # Definitions join their file on (source, path): pkg/m.py is in two sources.
    joined = con.execute(f"""
        select d.source, d.name, f.status
        from read_parquet('{tmp_path / 'all'}/definitions/*.parquet') d join {files} f using (source, path)
        where d.path = 'pkg/m.py' order by all""").fetchall()
    assert joined == [("alpha", "f", "ok"), ("beta", "K", "ok"), ("beta", "m", "ok")]

    status = job_status(tmp_path / "all")
    assert status.state == "complete" and status.source == ""
    assert status.sources == {"alpha": 4, "beta": 3, "gamma@main": 2}
    text = run_cli("status", tmp_path / "all", check_codes=(0,)).stdout
    assert "sources:   alpha 4, beta 3, gamma@main 2" in text


def test_a_blob_shared_by_sources_is_parsed_once_in_the_job(corpus, tmp_path):
    """pkg/same.py has one content in all three sources: the job's own blob cache gives it to the
    second and third without a parse (one worker runs the batches one after the other), and the
    cache is gone once the job is complete. Its rows are checked by the union test above."""
    _, alpha, beta, gamma, _ = corpus
    out = tmp_path / "out"
    result = snakebatch.run([alpha, beta, f"{gamma}@main"], out, workers=1, progress=False)
    with_parser = sum(1 for r in read_table(out, "files").to_pylist() if r["parser"] is not None)
    assert result.summary.parses["cached"] == 2
    assert result.summary.parses["parsed"] == with_parser - 2
    assert not (out / "_snakebatch" / "blobs").exists()
    single = snakebatch.run(alpha, tmp_path / "single", workers=1, progress=False)
    assert single.summary.parses["cached"] == 0 and single.summary.cache is None


def test_sources_file_and_stdin_and_plan(corpus, tmp_path, monkeypatch):
    root, alpha, beta, gamma, first = corpus
    listing = root / "list.txt"
    listing.write_text(f"# the job's sources\nalpha\n\n   beta  \n# gamma at its first commit\ngamma@{first[:10]}\n")
    monkeypatch.chdir(tmp_path)  # relative entries: from the list file's folder
    proc = cli_in_process("run", "--sources", listing, "-o", tmp_path / "out", "-j", "1", "--no-progress", "--json",
                          check_codes=(0,))
    assert json.loads(proc.stdout)["files"] == 9
    labels = {r["source"] for r in read_table(tmp_path / "out", "files").to_pylist()}
    assert labels == {"alpha", "beta", f"gamma@{first[:10]}"}

    # A SOURCE on the command line and the rest from stdin.
    proc = cli_in_process("run", alpha, "--sources", "-", "-o", tmp_path / "out2", "-j", "1", "--no-progress",
                          "--json", input=f"{beta}\n", check_codes=(0,))
    assert json.loads(proc.stdout)["files"] == 7

    proc = run_cli("plan", "--sources", listing, "-j", "1", "--json", check_codes=(0,))
    plan = json.loads(proc.stdout)
    assert plan["files"] == 9
    assert {label: c["files"] for label, c in plan["sources"].items()} == {
        "alpha": 4, "beta": 3, f"gamma@{first[:10]}": 2}
    text = run_cli("plan", alpha, beta, "-j", "1", check_codes=(0,)).stdout
    assert "in 2 sources" in text and "sources:   alpha 4 files" in text


def test_wrong_and_duplicate_entries_are_usage_errors(corpus, tmp_path):
    root, alpha, beta, gamma, first = corpus
    out = tmp_path / "out"
    for args, message in [
        ([alpha, f"{alpha}/."], "is the same source as"),
        ([alpha, root / "nope"], "does not exist"),
        ([alpha, f"{gamma}@no-such-rev"], "is not a commit of the repository"),
        ([alpha, f"{alpha}@main"], "is not a git repository"),
        ([f"{gamma}@main", f"{gamma}@{first}"], "is the same source as"),
        ([alpha, beta, "--rev", "main"], "give each git source as REPO@REV"),
        ([alpha, beta, "--history"], "--history: not supported in a job of several sources"),
        ([], "give a SOURCE folder"),
        (["--sources", root / "missing.txt"], "--sources: cannot read"),
    ]:
        proc = cli_in_process("run", *args, "-o", out, "--no-progress")
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr)
        assert not out.exists()
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    assert "names no source" in cli_in_process("run", "--sources", empty, "-o", out).stderr
    with pytest.raises(ConfigError, match="--refresh: not supported in a job of several sources"):
        snakebatch.run([alpha, beta], out, refresh=True)
    with pytest.raises(ConfigError, match="watch: one SOURCE only"):
        snakebatch.watch([alpha, beta], out)


def test_labels_are_unique_stable_on_resume_and_old_jobs_are_refused(tmp_path, monkeypatch):
    one = _write(tmp_path / "x" / "src", {"a.py": b"A = 1\n"})
    two = _write(tmp_path / "y" / "src", {"a.py": b"A = 2\n"})
    out = tmp_path / "out"
    result = snakebatch.run([one, two], out, workers=1)
    assert {r["source"] for r in read_table(out, "files").to_pylist()} == {"x/src", "y/src"}
    # Resumed with the sources spelled otherwise (relative, from another folder): the same job.
    monkeypatch.chdir(tmp_path / "x")
    proc = cli_in_process("run", "src", "../y/src", "-o", out, "--resume", "-j", "1", "--no-progress", "--json",
                          check_codes=(0,))
    assert json.loads(proc.stdout)["files_this_run"] == 0 and json.loads(proc.stdout)["files"] == result.files
    # In another order they are another job.
    proc = cli_in_process("run", two, one, "-o", out, "--resume", "--no-progress")
    assert proc.returncode == 2 and "these options differ" in proc.stderr

    # A job written before jobs had sources: its job.json has no `sources`, its rows no `source`.
    old = tmp_path / "old"
    snakebatch.run(one, old, workers=1)
    record_path = old / "_snakebatch" / "job.json"
    record = msgspec.json.decode(record_path.read_bytes())
    del record["job"]["sources"]
    record_path.write_bytes(msgspec.json.encode(record))
    for mode in ("--resume", "--refresh"):
        proc = cli_in_process("run", one, "-o", old, mode, "--no-progress")
        assert proc.returncode == 2, proc.stderr
        assert "no `source` column" in proc.stderr and "--fresh" in proc.stderr and "Traceback" not in proc.stderr
    assert cli_in_process("run", one, "-o", old, "--fresh", "--no-progress").returncode == 0


def _rows_by_key(out: Path) -> dict:
    """files rows by (source, path), read part by part as a reader would; a key twice fails."""
    rows = {}
    for part in sorted((out / "files").glob("*.parquet")):
        for row in pq.read_table(part).to_pylist():
            key = (row["source"], row["path"])
            assert key not in rows, f"{key} has two rows"
            rows[key] = {k: v for k, v in row.items() if k not in VOLATILE}
    return rows


@pytest.mark.slow  # the resume key (source, path) is in test_batching; kill tests of one source are in the default run
def test_sigkill_of_a_job_of_several_sources_then_resume(tmp_path):
    """Two sources with the same relative paths: killed (whole process group) right after a
    ledger line and again during the resume, each (source, path) ends with exactly one row,
    equal to an uninterrupted run's."""
    first, second = tmp_path / "one" / "lib", tmp_path / "two" / "lib"
    count = copy_stdlib(first, 250)
    copy_stdlib(second, 250)
    options = ("--parser", LOGGING_PARSER, "--batch-bytes", "24KB", "-j", "2")
    environ = env(sleep=0.004)

    baseline = Run(run_args(first, tmp_path / "base", *options, "--json") + [second], environ, tmp_path / "logs")
    assert baseline.wait() == 0, baseline.stderr
    want = _rows_by_key(tmp_path / "base")
    assert len(want) == 2 * count and {s for s, _ in want} == {"one/lib", "two/lib"}

    out = tmp_path / "out"
    ledger = out / "_snakebatch" / "ledger.jsonl"
    for resume in (False, True):
        run = Run(run_args(first, out, *options, resume=resume) + [second], environ, tmp_path / "logs")
        lines = ledger.read_text().count("\n") if ledger.exists() else 0
        while run.proc.poll() is None and (not ledger.exists() or ledger.read_text().count("\n") < lines + 4):
            time.sleep(0.002)
        assert run.kill_group() == -signal.SIGKILL, run.stderr
        _rows_by_key(out)  # between the kill and the resume: no torn part, no file twice
    status = job_status(out)
    assert status.state == "incomplete" and 0 < status.files_done < 2 * count
    assert sum(status.sources.values()) == status.files_done

    final = Run(run_args(first, out, *options, "--json", resume=True) + [second], environ, tmp_path / "logs")
    assert final.wait() == 0, final.stderr
    summary = json.loads(final.stdout)
    assert summary["files"] == 2 * count and summary["files_this_run"] < 2 * count
    assert _rows_by_key(out) == want
    con = duckdb.connect()
    assert con.execute(f"select count(*), count(distinct (source, path)) from read_parquet('{out}/files/*.parquet')"
                       ).fetchall() == [(2 * count, 2 * count)]


def test_several_sources_on_dask(corpus, tmp_path):
    pytest.importorskip("distributed")
    root, alpha, beta, gamma, first = corpus
    result = snakebatch.run([alpha, f"{gamma}@{first}"], tmp_path / "out", workers=1, executor="dask", progress=False)
    assert result.state == "complete" and result.files == 6
    labels = Counter(r["source"] for r in read_table(tmp_path / "out", "files").to_pylist())
    assert labels == {"alpha": 4, f"gamma@{first}": 2}


def test_files_of_a_revision_already_committed_are_copied_with_their_rows(tmp_path):
    """Four revisions of one repository as four sources: a file whose (path, blob) an earlier
    batch committed takes that batch's rows (counted `reused`), with its own `source` and
    `commit`; the tables equal the union of four single-revision runs."""
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    _write(repo, {"a.py": b"import os\n\ndef a():\n    return 1\n", "pkg/b.py": b"class B:\n    def m(self):\n        pass\n",
                  "bad.py": b"def (\n", "notes.txt": b"some text\n", "data.bin": b"\x00\x01binary\x00" * 4})
    tags = []
    for k in range(4):
        if k:
            _write(repo, {"a.py": f"import os\n\ndef a():\n    return {k}\n".encode()})
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "--allow-empty", "-m", f"v{k}")
        _git(repo, "tag", f"v{k}")
        tags.append(f"v{k}")
    out = tmp_path / "all"
    result = snakebatch.run([f"{repo}@{tag}" for tag in tags], out, workers=1, progress=False)
    assert result.state == "complete" and result.files == 20
    union = {table: Counter() for table in TABLES}
    for tag in tags:
        single = snakebatch.run(repo, tmp_path / tag, rev=tag, workers=1, progress=False)
        for table in union:
            union[table] += _rows(Path(single.output), table, f"repo@{tag}")
    for table in union:
        assert _rows(out, table) == union[table], table
    # The last sources' unchanged files were copied, not parsed: 4 a.py blobs, the other 4 files once.
    assert result.summary.parses["reused"] >= 4, result.summary.parses
    assert result.summary.parses["parsed"] + result.summary.parses["cached"] < 4 * 4
