"""--resume: recovery of cut-off commits, corrupt ledger entries, the job lock, job identity,
write failures, and files that changed, appeared or vanished between runs.

Real runs of the CLI on stdlib files; output read back with pyarrow and DuckDB.
"""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import duckdb
import pyarrow.dataset as ds
import pytest

from helpers import cli_in_process, run_cli
from resume_helpers import (
    LOGGING_PARSER,
    Run,
    assert_same_output,
    copy_stdlib,
    env,
    file_size_limit,
    parse_log,
    read_parts,
    run_args,
    snapshot,
)
from snakebatch.engine.worker import BatchTask, process_batch
from snakebatch.schema import TABLES
from snakebatch.store import ledger as ledger_module
from snakebatch.store.layout import part_name
from snakebatch.store.ledger import Ledger, LedgerEntry

OPTIONS = ("--parser", LOGGING_PARSER, "--batch-bytes", "16KB", "-j", "2")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    assert copy_stdlib(root, 150) == 150
    return root


@pytest.fixture(scope="module")
def baseline(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("baseline") / "out"
    proc = cli_in_process(*run_args(corpus, out, *OPTIONS))
    assert proc.returncode == 0, proc.stderr
    return snapshot(out)


def _entries(out: Path) -> list[LedgerEntry]:
    entries, corrupt = Ledger(str(out)).read()
    assert not corrupt
    return entries


def test_corrupt_ledger_entries_are_reported_and_their_batches_redone(corpus, baseline, tmp_path):
    # Batch parts, as before compaction (test_compaction.py corrupts a compacted job's entries).
    out, log = tmp_path / "out", tmp_path / "parses.log"
    environ = env(log=log)
    proc = cli_in_process(*run_args(corpus, out, *OPTIONS, "--no-compact"), env=environ)
    assert proc.returncode == 0, proc.stderr
    entries = _entries(out)
    assert len(entries) >= 5
    ledger_path = out / "_snakebatch" / "ledger.jsonl"
    lines = ledger_path.read_bytes().splitlines(keepends=True)
    middle = len(lines) // 2
    # Garbage bytes inside the middle entry, and the last entry cut short (as a torn append).
    damaged = bytearray(lines[middle])
    damaged[20:28] = b"\x00\xffjunk\x01\x02"
    lines[middle] = bytes(damaged)
    lines[-1] = lines[-1][: len(lines[-1]) // 2]
    ledger_path.write_bytes(b"".join(lines))
    redo = set(entries[middle].paths) | set(entries[-1].paths)

    status = json.loads(run_cli("status", out, "--json").stdout)
    assert status["state"] == "incomplete"
    assert status["corrupt_ledger_lines"] == 2
    assert status["files_done"] == len(baseline["files"]) - len(redo)

    log.unlink()
    proc = cli_in_process(*run_args(corpus, out, *OPTIONS, "--no-compact", resume=True), env=environ)
    assert proc.returncode == 0, proc.stderr
    assert f"2 corrupt ledger entries (line {middle + 1}, {len(lines)}) ignored" in proc.stdout
    assert "part file(s) without a valid ledger entry removed" in proc.stdout
    # Exactly the files of the two untrusted entries were parsed again, once each.
    assert Counter(parse_log(log)) == Counter(redo)
    assert_same_output(snapshot(out), baseline)
    _entries(out)  # the ledger was rewritten without the corrupt lines
    status = json.loads(run_cli("status", out, "--json").stdout)
    assert status["state"] == "complete" and status["corrupt_ledger_lines"] == 0


def _flip_middle(path: Path, count: int = 64) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + count] = bytes(b ^ 0xFF for b in data[middle:middle + count])
    path.write_bytes(bytes(data))


def test_a_corrupt_or_deleted_part_is_reported_by_status_and_its_batch_redone(corpus, baseline, tmp_path):
    out, log = tmp_path / "out", tmp_path / "parses.log"
    environ = env(log=log)
    proc = cli_in_process(*run_args(corpus, out, *OPTIONS, "--no-compact"), env=environ)
    assert proc.returncode == 0, proc.stderr
    entries = _entries(out)
    assert all(set(entry.parts) == {"files", "definitions", "imports"} for entry in entries)
    corrupt, deleted = entries[len(entries) // 2], entries[1]
    _flip_middle(out / "files" / part_name(corrupt.batch_id))  # same size: only a checksum tells
    assert run_cli("status", out).returncode == 0
    proc = run_cli("status", out, "--verify", "--json")
    assert proc.returncode == 1, proc.stderr
    status = json.loads(proc.stdout)
    assert status["state"] == "incomplete"
    assert status["damage"] == [["files", part_name(corrupt.batch_id), "checksum"]]
    (out / "definitions" / part_name(deleted.batch_id)).unlink()
    proc = run_cli("status", out)  # existence and size are checked without --verify
    assert proc.returncode == 1 and "DAMAGED:   1 part(s)" in proc.stdout
    assert f"definitions/{part_name(deleted.batch_id)} (missing)" in proc.stdout

    log.unlink()
    proc = cli_in_process(*run_args(corpus, out, *OPTIONS, "--no-compact", resume=True), env=environ)
    assert proc.returncode == 0, proc.stderr
    assert f"files/{part_name(corrupt.batch_id)} (checksum)" in proc.stdout
    assert Counter(parse_log(log)) == Counter(corrupt.paths + deleted.paths)  # exactly those batches, once
    assert_same_output(snapshot(out), baseline)
    proc = run_cli("status", out, "--verify")
    assert proc.returncode == 0 and ": complete" in proc.stdout and "verified:" in proc.stdout, proc.stdout


@pytest.mark.slow  # ledger damage and its repair: corrupt entries, in the default run
def test_an_emptied_ledger_is_damage_and_a_resume_repairs_it(corpus, baseline, tmp_path):
    out = tmp_path / "out"
    proc = cli_in_process(*run_args(corpus, out, *OPTIONS))
    assert proc.returncode == 0, proc.stderr
    (out / "_snakebatch" / "ledger.jsonl").write_bytes(b"")
    proc = run_cli("status", out, "--json")
    assert proc.returncode == 1
    status = json.loads(proc.stdout)
    assert status["state"] == "incomplete" and status["damage"]
    assert ["_snakebatch", "ledger.jsonl", "0 files, not the 150 of the complete job"] in status["damage"]
    proc = cli_in_process(*run_args(corpus, out, *OPTIONS, resume=True))
    assert proc.returncode == 0, proc.stderr
    assert_same_output(snapshot(out), baseline)
    assert run_cli("status", out, "--verify").returncode == 0


def test_a_second_run_on_the_same_out_is_refused_naming_the_pid(corpus, tmp_path):
    out = tmp_path / "out"
    first = Run(run_args(corpus, out, *OPTIONS), env(sleep=0.05), tmp_path / "logs")
    try:
        while not (out / "files").is_dir():  # the job is recorded and its lock held
            assert first.proc.poll() is None, first.stderr
            time.sleep(0.01)
        for extra in (("--resume",), (), ("--fresh",)):
            proc = cli_in_process(*run_args(corpus, out, *OPTIONS, *extra))
            assert proc.returncode == 2, proc.stderr
            assert f"another snakebatch run (PID {first.proc.pid}) is writing" in proc.stderr
            assert "Traceback" not in proc.stderr
        assert (out / "_snakebatch" / "job.json").is_file()  # --fresh deleted nothing
        status = json.loads(run_cli("status", out, "--json").stdout)
        assert status["state"] == "running" and status["running_pid"] == str(first.proc.pid)
    finally:
        first.kill_group()
    # The OS released the lock with the process: no stale lock after a SIGKILL.
    status = json.loads(run_cli("status", out, "--json").stdout)
    assert status["state"] == "incomplete" and status["running_pid"] is None
    proc = cli_in_process(*run_args(corpus, out, *OPTIONS, resume=True))
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow  # two slow runs; the lock's refusals are in the default run
def test_a_deleted_lock_file_neither_lets_a_second_run_in_nor_lets_the_holder_write_on(corpus, baseline, tmp_path):
    out = tmp_path / "out"
    # One worker on large, slow batches: the first commit comes seconds after the job's start.
    first = Run(run_args(corpus, out, *OPTIONS, "-j", "1", "--batch-bytes", "400KB"), env(sleep=0.03),
                tmp_path / "logs")
    try:
        ledger = out / "_snakebatch" / "ledger.jsonl"
        while not (ledger.exists() and ledger.stat().st_size):  # its lock held, the empty first parts committed
            assert first.proc.poll() is None, first.stderr
            time.sleep(0.01)
        (out / "_snakebatch" / "lock").unlink()
        second = cli_in_process(*run_args(corpus, out, *OPTIONS, resume=True))
        assert second.returncode == 2, second.stdout + second.stderr
        assert f"another snakebatch run (PID {first.proc.pid}) is writing" in second.stderr
        assert first.proc.poll() is None  # the refusal was the lock's, not the first run's end
        assert json.loads(run_cli("status", out, "--json").stdout)["state"] == "running"
        # The holder finds its lock file gone at its next commit and stops, resumable.
        assert first.wait(timeout=120) == 1, first.stderr
    finally:
        first.kill_group()
    assert "lock" in first.stderr and "was removed while this run held it" in first.stderr
    assert "resume with: " in first.stderr
    assert len(snapshot(out)["files"]) < len(baseline["files"])
    proc = cli_in_process(*run_args(corpus, out, *OPTIONS, resume=True))
    assert proc.returncode == 0, proc.stderr
    assert_same_output(snapshot(out), baseline)


_HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
fcntl.flock(fd, fcntl.LOCK_EX)
with open(os.path.join(sys.argv[1], "lock"), "w") as fh:
    fh.write(sys.argv[2])
print("locked", flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("content", ["", pytest.param("999999", marks=pytest.mark.slow)],
                         ids=["pid-not-written-yet", "an-earlier-runs-pid"])
def test_the_refusal_names_the_pid_that_holds_the_lock(tmp_path, content):
    """What the lock file says may lag behind the lock (a run between its flock and its write, as
    when two start at once) or be a dead run's: the refusal names the process that holds it."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.py").write_text("x = 1\n")
    out = tmp_path / "out"
    cli_in_process(*run_args(src, out), check_codes=(0,))
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(out / "_snakebatch"), content],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        proc = cli_in_process(*run_args(src, out, resume=True))
        assert proc.returncode == 2, proc.stderr
        assert f"another snakebatch run (PID {holder.pid}) is writing {out}" in proc.stderr
        status = json.loads(run_cli("status", out, "--json").stdout)
        assert status["state"] == "running" and status["running_pid"] == str(holder.pid)
    finally:
        holder.kill()
        holder.wait()


def test_a_changed_row_option_on_resume_is_refused_naming_it(corpus, tmp_path):
    out = tmp_path / "out"
    proc = cli_in_process(*run_args(corpus, out, *OPTIONS, "--exclude", "email/"))
    assert proc.returncode == 0, proc.stderr
    for changed, named in [
        (("--exclude", "email/", "--content"), "--content"),
        (("--exclude", "json/"), "--exclude"),
        (("--exclude", "email/", "--max-file-size", "1MB"), "--max-file-size"),
        (("--exclude", "email/", "--no-gitignore"), "--no-gitignore"),
    ]:
        proc = cli_in_process(*run_args(corpus, out, "--parser", LOGGING_PARSER, *changed, resume=True))
        assert proc.returncode == 2, proc.stderr
        assert "these options differ from the job's" in proc.stderr and named in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    proc = cli_in_process(*run_args(corpus, out, *OPTIONS, "--exclude", "email/", resume=True))
    assert proc.returncode == 0, proc.stderr
    # Options that do not change rows may change freely.
    proc = cli_in_process(*run_args(corpus, out, "--parser", LOGGING_PARSER, "--exclude", "email/", "-j", "1",
                            "--batch-bytes", "1MB", "--memory-budget", "2GiB", resume=True))
    assert proc.returncode == 0, proc.stderr
    # Without the job's --parser the run is a different job.
    proc = cli_in_process(*run_args(corpus, out, "--exclude", "email/", resume=True))
    assert proc.returncode == 2 and "--parser" in proc.stderr


@pytest.mark.slow  # a write failure that stops the job: the ledger's, in the default run
def test_a_worker_write_failure_stops_with_exit_1_and_resumes(corpus, tmp_path):
    source = tmp_path / "src"
    shutil.copytree(corpus, source)
    # With --content this file's part is ~3 MB of incompressible text: past a 1 MB size limit.
    (source / "big.txt").write_text(base64.b64encode(random.Random(1).randbytes(2_400_000)).decode())
    options = ("--content", "--batch-bytes", "64KB", "-j", "2")
    want = cli_in_process(*run_args(source, tmp_path / "want", *options))
    assert want.returncode == 0, want.stderr

    out = tmp_path / "out"
    proc = run_cli(*run_args(source, out, *options), preexec_fn=file_size_limit(1_000_000))
    assert proc.returncode == 1, proc.stderr
    assert "cannot write batch" in proc.stderr and "File too large" in proc.stderr
    assert "snakebatch: resume with: " in proc.stderr and "--content" in proc.stderr
    assert "Traceback" not in proc.stderr
    parts = read_parts(out)  # nothing torn, nothing twice
    committed = {p for t in parts["files"] for p in t.column("path").to_pylist()}
    assert "big.txt" not in committed
    assert not os.listdir(out / "_snakebatch" / "staging")

    proc = cli_in_process(*run_args(source, out, *options, resume=True))
    assert proc.returncode == 0, proc.stderr
    assert_same_output(snapshot(out), snapshot(tmp_path / "want"))


def test_a_ledger_write_failure_stops_with_exit_1_and_resumes(corpus, baseline, tmp_path):
    out = tmp_path / "out"
    # One file per batch: many ledger lines. The ledger outgrows a 30 kB limit, no part does.
    options = (*OPTIONS, "--batch-bytes", "1KB")
    proc = run_cli(*run_args(corpus, out, *options), preexec_fn=file_size_limit(30_000))
    assert proc.returncode == 1, proc.stderr
    assert "cannot commit batch" in proc.stderr and "File too large" in proc.stderr
    assert "Traceback" not in proc.stderr
    ledger_path = out / "_snakebatch" / "ledger.jsonl"
    entries, corrupt = Ledger(str(out)).read()
    assert not corrupt and ledger_path.read_bytes().endswith(b"\n")  # cut back to its last whole line
    in_ledger = {p for e in entries for p in e.paths}
    parts = read_parts(out)
    assert {p for t in parts["files"] for p in t.column("path").to_pylist()} == in_ledger

    proc = cli_in_process(*run_args(corpus, out, *options, resume=True))
    assert proc.returncode == 0, proc.stderr
    assert_same_output(snapshot(out), baseline)


def test_resume_skips_committed_files_and_counts_changed_ones_as_stale(corpus, baseline, tmp_path):
    source = tmp_path / "src"
    shutil.copytree(corpus, source)
    out, log = tmp_path / "out", tmp_path / "parses.log"
    environ = env(log=log)
    assert cli_in_process(*run_args(source, out, *OPTIONS), env=environ).returncode == 0
    committed = snapshot(out)
    changed = sorted(committed["files"])[:2]
    for rel in changed:
        with open(source / rel, "a") as fh:
            fh.write("\nextra = 1\n")
    new = ["new_a.py", "pkg/new_b.py", "new_c.py"]
    for rel in new:
        (source / rel).parent.mkdir(exist_ok=True)
        (source / rel).write_text("import os\n\ndef f(x):\n    return x\n")
    log.unlink()

    proc = cli_in_process(*run_args(source, out, *OPTIONS, "--json", resume=True), env=environ)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert sorted(parse_log(log)) == sorted(new)  # committed files are never read again
    assert summary["files_this_run"] == 3 and summary["files"] == len(committed["files"]) + 3
    assert summary["stale_files"] == 2 and sorted(summary["stale_sample"]) == changed
    got = snapshot(out)
    for rel in changed:  # kept as committed
        assert got["files"][rel] == committed["files"][rel]
    assert set(got["files"]) == set(committed["files"]) | set(new)
    con = duckdb.connect()
    rows = con.execute(f"select path, n_definitions, n_imports from read_parquet('{out}/files/*.parquet') "
                       "where path like '%new_%' order by path").fetchall()
    assert rows == [("new_a.py", 1, 1), ("new_c.py", 1, 1), ("pkg/new_b.py", 1, 1)]
    status = json.loads(run_cli("status", out, "--json").stdout)
    assert status["stale_files"] == 2 and status["state"] == "complete"


def _stage(tmp_path: Path, ledger: Ledger, batch_id: int, names: list[str]) -> tuple[LedgerEntry, str]:
    """A batch processed for real by the worker into its staging folder, and its ledger entry."""
    source = tmp_path / "src"
    for name in names:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text(f"import sys\n\nclass C{batch_id}:\n    def m(self):\n        pass\n")
    files = [(n, (source / n).stat().st_size, (source / n).stat().st_mtime_ns) for n in names]
    staging = ledger.staging_for(batch_id, 0)
    outcome = process_batch(BatchTask(batch_id=batch_id, attempt=0, source=str(source), staging=staging, files=files))
    entry = LedgerEntry(batch_id=batch_id, staging=os.path.relpath(staging, ledger.state), paths=names,
                        sizes=[m[0] for m in outcome.files_meta], mtimes=[m[1] for m in outcome.files_meta],
                        statuses=outcome.statuses, rows=outcome.rows, bytes=outcome.bytes, parse_s=0.0,
                        language_counts=outcome.language_counts, committed_at=time.time())
    return entry, staging


def test_recovery_finishes_or_undoes_each_cut_off_commit(tmp_path):
    out = tmp_path / "out"
    ledger = Ledger(str(out))
    ledger.create()
    whole, staging = _stage(tmp_path, ledger, 1, ["a.py", "b.py"])
    ledger.commit(whole, staging)
    # Cut off after the ledger line, before any rename: rolled forward.
    appended, _ = _stage(tmp_path, ledger, 2, ["c.py"])
    # Cut off between the renames: rolled forward.
    halfway, staging = _stage(tmp_path, ledger, 3, ["d.py", "e.py"])
    os.rename(os.path.join(staging, "files.parquet"), out / "files" / part_name(3))
    # Cut off before the ledger line: undone.
    _stage(tmp_path, ledger, 4, ["f.py"])
    # A part whose line is gone (e.g. found corrupt before): removed.
    stray, staging = _stage(tmp_path, ledger, 5, ["g.py"])
    for table in TABLES:
        os.rename(os.path.join(staging, table + ".parquet"), out / table / part_name(5))
    ledger.close()
    with open(ledger.path, "ab") as fh:
        fh.write(ledger_module._encode_line(appended) + ledger_module._encode_line(halfway))

    entries, report = Ledger(str(out)).recover()
    assert [e.batch_id for e in entries] == [1, 2, 3]
    assert (report.rolled_forward, report.rolled_back, report.removed_staging, report.removed_orphan_parts) == (
        2, 0, 1, 3)
    assert not os.listdir(out / "_snakebatch" / "staging")
    files = ds.dataset(str(out / "files"), format="parquet").to_table()
    assert sorted(files.column("path").to_pylist()) == ["a.py", "b.py", "c.py", "d.py", "e.py"]
    definitions = ds.dataset(str(out / "definitions"), format="parquet").to_table()
    assert Counter(definitions.column("path").to_pylist()) == {p: 2 for p in ["a.py", "b.py", "c.py", "d.py", "e.py"]}
    # Recovering again changes nothing: it is idempotent, as a crash during recovery needs.
    entries, report = Ledger(str(out)).recover()
    assert len(entries) == 3 and report.describe() == ""


def test_recovery_undoes_a_committed_batch_whose_part_is_lost(tmp_path):
    out = tmp_path / "out"
    ledger = Ledger(str(out))
    ledger.create()
    for batch_id, names in ((1, ["a.py"]), (2, ["b.py"])):
        entry, staging = _stage(tmp_path, ledger, batch_id, names)
        ledger.commit(entry, staging)
    ledger.close()
    os.unlink(out / "imports" / part_name(2))  # gone from the table and from staging
    entries, report = Ledger(str(out)).recover()
    assert [e.batch_id for e in entries] == [1] and report.rolled_back == 1
    assert sorted(os.listdir(out / "files")) == [part_name(1)]
    assert [e.batch_id for e in Ledger(str(out)).entries()] == [1]  # the ledger says so too


def test_a_run_killed_before_recording_its_job_can_be_started_again(corpus, tmp_path):
    out = tmp_path / "out"
    (out / "_snakebatch").mkdir(parents=True)
    (out / "_snakebatch" / "lock").write_text("12345")
    proc = cli_in_process(*run_args(corpus, out, *OPTIONS, resume=True))
    assert proc.returncode == 2 and "holds no snakebatch job to resume" in proc.stderr
    proc = cli_in_process(*run_args(corpus, out, *OPTIONS))
    assert proc.returncode == 0, proc.stderr
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("not a job")
    proc = cli_in_process(*run_args(corpus, tmp_path / "other", *OPTIONS))
    assert proc.returncode == 2 and "is not empty and holds no snakebatch job" in proc.stderr


@pytest.mark.parametrize("compact", ["--compact", pytest.param("--no-compact", marks=pytest.mark.slow)])
def test_resume_rechecks_io_error_rows_of_files_that_vanished_or_came_back(tmp_path, compact):
    """Files deleted (or a folder replaced by a file) after discovery got `io_error` rows that
    stayed through every --resume. Now a resume removes them: gone files have no row, files
    that are back are parsed again, each file keeps exactly one row."""
    src, away = tmp_path / "src", tmp_path / "away.py"
    (src / "zdir").mkdir(parents=True)
    for name in ("z_back.py", "z_gone.py", "zdir/inner.py", "m.py"):
        (src / name).write_text(f"# {name}\nx = 1\n")
    # Parsed first, alone in its batch (one worker): takes the z files away after discovery
    # (batches of its size read ahead twice that) and before they are read.
    trigger = src / "a.bad"
    trigger.write_text(f"vanish\nrm\t{src / 'z_gone.py'}\nhide\t{src / 'z_back.py'}\t{away}\n"
                       f"dir2file\t{src / 'zdir'}\n")
    out = tmp_path / "out"
    args = ("run", src, "-o", out, "--no-progress", "-j", "1", "--batch-bytes", trigger.stat().st_size + 5, compact,
            "--parser", "tests.misbehaving_parser:parser")
    proc = cli_in_process(*args)  # none of the three runs is about a process: ~0.6 CPU-s each saved
    assert proc.returncode == 0, proc.stderr
    assert "io_error:  3 files could not be read" in proc.stdout and "--resume re-checks them" in proc.stdout
    rows = {r["path"]: r["status"] for r in ds.dataset(str(out / "files")).to_table().to_pylist()}
    assert rows == {"a.bad": "ok", "m.py": "ok", "z_back.py": "io_error", "z_gone.py": "io_error",
                    "zdir/inner.py": "io_error"}

    os.rename(away, src / "z_back.py")
    proc = cli_in_process(*args, "--resume", "--json")
    assert proc.returncode == 0, proc.stderr
    files = duckdb.sql(f"select path, status from read_parquet('{out}/files/*.parquet') order by path").fetchall()
    assert files == [("a.bad", "ok"), ("m.py", "ok"), ("z_back.py", "ok"), ("zdir", "ok")]
    summary = json.loads(proc.stdout)
    assert summary["io_errors_rechecked"] == {"gone": 2, "back": 1}
    assert summary["files_this_run"] == 2  # z_back.py and the file zdir; a.bad is not parsed again
    assert summary["status_counts"] == {"ok": 4}
    status = json.loads(run_cli("status", out, "--json").stdout)
    assert status["files_done"] == 4 and status["status_counts"] == {"ok": 4}
    # Nothing left to re-check: another resume changes nothing.
    again = json.loads(cli_in_process(*args, "--resume", "--json").stdout)
    assert again["io_errors_rechecked"] == {"gone": 0, "back": 0} and again["files_this_run"] == 0
