"""`snakebatch status OUT [--json]`: complete, incomplete and running jobs, and folders that
hold no job. Every figure is checked against the run's own summary or the Parquet output."""

from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path

import duckdb
import pytest

from helpers import cli_in_process, run_cli
from resume_helpers import LOGGING_PARSER, Run, copy_stdlib, env, run_args
from snakebatch.store.ledger import Ledger

OPTIONS = ("--parser", LOGGING_PARSER, "--batch-bytes", "16KB", "-j", "2")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    copy_stdlib(root, 120)
    (root / "broken").mkdir()
    (root / "broken" / "syntax.py").write_text("def f(:\n    pass\n")
    (root / "broken" / "indent.py").write_text("if x:\npass\n")
    (root / "broken" / "latin.py").write_bytes(b"# -*- coding: nonsense -*-\nx = 1\n")
    (root / "notes.txt").write_text("plain text\n")
    return root


def status(out: Path) -> dict:
    proc = run_cli("status", out, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_status_of_a_complete_job(corpus, tmp_path):
    out = tmp_path / "out"
    proc = cli_in_process(*run_args(corpus, out, *OPTIONS, "--json"))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    got = status(out)
    assert got["state"] == "complete" and got["running_pid"] is None and got["resume_command"] is None
    assert got["files_done"] == summary["files"] == 124
    assert got["status_counts"] == summary["status_counts"]
    assert got["language_counts"] == summary["language_counts"]
    assert got["status_counts"]["syntax_error"] == 2 and got["status_counts"]["decode_error"] == 1
    assert got["batches"] == summary["batches_this_run"] > 1
    assert len(list((out / "files").glob("*.parquet"))) == 1  # compacted once complete
    assert got["runs"] == 1 and got["elapsed_s"] == pytest.approx(summary["elapsed_s"], abs=0.01)
    assert got["files_per_s"] > 0 and got["bytes_done"] == summary["bytes"]
    # Sample errors carry the message stored in the files table.
    con = duckdb.connect()
    messages = dict(con.execute(
        f"select path, error_message from read_parquet('{out}/files/*.parquet') "
        "where status in ('syntax_error', 'decode_error')").fetchall())
    assert {path for path, _, _ in got["error_samples"]} == set(messages)
    for path, state, message in got["error_samples"]:
        assert message == messages[path][:300] and state in ("syntax_error", "decode_error")

    text = run_cli("status", out)
    assert text.returncode == 0
    assert f"{out}: complete" in text.stdout and "124 done" in text.stdout
    assert "syntax_error 2" in text.stdout and "resume with" not in text.stdout


def test_status_of_a_stopped_job_names_the_resume_command(corpus, tmp_path):
    out = tmp_path / "out"
    src = tmp_path / "src"
    shutil.copytree(corpus, src)
    (src / "0_refused.bad").write_text("raise\n")  # a parser failure, discovered first: --max-errors counts it
    proc = cli_in_process(*run_args(src, out, *OPTIONS, "--parser", "misbehaving_parser:parser", "--content",
                                    "--max-errors", "1"))
    assert proc.returncode == 1, proc.stderr
    printed = [line.split(": ", 2)[2] for line in proc.stderr.splitlines() if "resume with:" in line]
    got = status(out)
    assert got["state"] == "incomplete"
    assert got["resume_command"] == printed[0]
    assert "--content" in got["resume_command"] and LOGGING_PARSER in got["resume_command"]
    assert "--max-errors 1" in got["last_stop_reason"]
    con = duckdb.connect()
    rows = con.execute(f"select status, count(*) from read_parquet('{out}/files/*.parquet') group by status").fetchall()
    assert got["status_counts"] == dict(rows) and got["files_done"] == sum(dict(rows).values()) < 125
    text = run_cli("status", out).stdout
    assert "incomplete (last run: --max-errors 1" in text and f"resume with: {printed[0]}" in text


def _wait_for_lines(run: Run, out: Path, more: int) -> None:
    ledger = out / "_snakebatch" / "ledger.jsonl"
    count = lambda: ledger.read_bytes().count(b"\n") if ledger.exists() else 0  # noqa: E731
    target = count() + more
    while count() < target:
        assert run.proc.poll() is None, run.stderr
        time.sleep(0.01)


def test_status_adds_up_every_run_even_a_killed_one(corpus, tmp_path):
    out = tmp_path / "out"
    slow = env(sleep=0.1)
    first = Run(run_args(corpus, out, *OPTIONS, "--json"), slow, tmp_path / "logs")
    _wait_for_lines(first, out, 2)
    first.signal_group(signal.SIGINT)
    assert first.wait() == 130
    killed = Run(run_args(corpus, out, *OPTIONS, resume=True), slow, tmp_path / "logs")
    _wait_for_lines(killed, out, 2)
    running = status(out)
    assert running["state"] == "running" and running["running_pid"] == str(killed.proc.pid)
    assert running["runs"] == 2 and running["resume_command"] is None
    assert killed.kill_group() == -signal.SIGKILL
    entries, _ = Ledger(str(out)).read()
    killed_start = max(e.run_started_at for e in entries)
    killed_span = max(e.committed_at for e in entries) - killed_start
    last = cli_in_process(*run_args(corpus, out, *OPTIONS, "--json", resume=True))
    assert last.returncode == 0, last.stderr
    got = status(out)
    assert got["state"] == "complete" and got["runs"] == 3 and got["files_done"] == 124
    want = json.loads(first.stdout)["elapsed_s"] + killed_span + json.loads(last.stdout)["elapsed_s"]
    assert got["elapsed_s"] == pytest.approx(want, abs=0.01)


def test_status_of_a_folder_without_a_job(tmp_path):
    for out in (tmp_path, tmp_path / "missing"):
        proc = run_cli("status", out)
        assert proc.returncode == 2
        assert proc.stderr.strip() == f"snakebatch: error: {out} holds no snakebatch job (no _snakebatch/job.json)"
        assert proc.stdout == ""
