"""Poison files: a parser that kills its worker, hangs, spins in C or raises costs that one file.

The plugin is tests/misbehaving_parser.py, loaded in every worker as
`--parser tests.misbehaving_parser:parser`. The runs are in process (helpers.cli_in_process): what
is tested is the coordinator's answer to its pool's workers crashing, hanging or spinning, and the
pool's workers are real processes there too.
"""

from __future__ import annotations

import errno
import json
import os
import time

import duckdb
import pytest

from helpers import cli_in_process, read_table
from snakebatch.executors.base import WorkerDied
from snakebatch.executors.local import LocalExecutor

PARSER = "tests.misbehaving_parser:parser"


def make_tree(root, actions: dict, n_good: int = 40):
    """`n_good` ordinary Python files and .bad files between them, one per action."""
    (root / "pkg").mkdir(parents=True)
    for i in range(n_good):
        (root / "pkg" / f"mod_{i:03d}.py").write_text(f'"""Module {i}."""\nimport os\n\ndef f_{i}(a, b):\n    return a + b\n')
        (root / "pkg" / f"note_{i:03d}.bad").write_text("fine\n")
    for name, action in actions.items():
        (root / "pkg" / name).write_text(action + "\n")
    return root


def statuses(out) -> dict:
    table = read_table(out, "files").to_pydict()
    return dict(zip(table["path"], table["status"]))


def test_each_misbehaving_file_costs_only_itself(tmp_path):
    actions = {"crash.bad": "crash", "hang.bad": "hang", "spin.bad": "spin", "raise.bad": "raise"}
    src = make_tree(tmp_path / "src", actions)
    out = tmp_path / "out"
    # --file-timeout 0.5: each hang costs half a second per attempt, each spin 1.5 s of CPU (the
    # watchdog's grace is 1 s); the good files parse in ms.
    proc = cli_in_process("run", src, "-o", out, "-j", "2", "--parser", PARSER, "--file-timeout", "0.5",
                          "--retries", "1", "--batch-bytes", "2KB", "--json", check_codes=(0,))
    summary = json.loads(proc.stdout)

    found = statuses(out)
    assert len(found) == 80 + len(actions)  # one row per file, none lost, none twice
    assert {p: s for p, s in found.items() if s != "ok"} == {
        "pkg/crash.bad": "crashed", "pkg/hang.bad": "timeout", "pkg/spin.bad": "timeout",
        "pkg/raise.bad": "parser_error",
    }
    assert summary["state"] == "complete"
    assert summary["status_counts"] == {"ok": 80, "timeout": 2, "crashed": 1, "parser_error": 1}
    # Only the watchdog can stop a parser spinning in C: the worker was killed, twice (--retries 1).
    assert summary["watchdog_kills"] == 2

    con = duckdb.connect()
    rows = con.execute(
        f"SELECT path, error_type, error_message FROM read_parquet('{out}/files/*.parquet') "
        "WHERE status <> 'ok' ORDER BY path").fetchall()
    messages = {path: (etype, message) for path, etype, message in rows}
    assert messages["pkg/raise.bad"] == ("ValueError", "this parser refuses pkg/raise.bad")
    assert "died" in messages["pkg/crash.bad"][1] and "2 attempts" in messages["pkg/crash.bad"][1]
    assert "--file-timeout 0.5s" in messages["pkg/hang.bad"][1]
    assert "killed" in messages["pkg/spin.bad"][1] and "2 attempts" in messages["pkg/spin.bad"][1]
    # The files that shared a batch with a poison file still have their real rows.
    (n_defs,) = con.execute(f"SELECT count(*) FROM read_parquet('{out}/definitions/*.parquet')").fetchone()
    assert n_defs == 40


def test_retries_zero_gives_up_after_one_kill(tmp_path):
    src = make_tree(tmp_path / "src", {"spin.bad": "spin"}, n_good=10)
    out = tmp_path / "out"
    proc = cli_in_process("run", src, "-o", out, "-j", "2", "--parser", PARSER, "--file-timeout", "0.5",
                          "--retries", "0", "--json", check_codes=(0,))
    summary = json.loads(proc.stdout)
    assert summary["watchdog_kills"] == 1
    assert statuses(out)["pkg/spin.bad"] == "timeout"
    assert summary["status_counts"] == {"ok": 20, "timeout": 1}


def test_fail_fast_counts_a_crash_and_resume_finishes(tmp_path):
    src = make_tree(tmp_path / "src", {"crash.bad": "crash"}, n_good=20)
    out = tmp_path / "out"
    proc = cli_in_process("run", src, "-o", out, "-j", "2", "--parser", PARSER, "--fail-fast", "--retries", "0",
                          "--json", check_codes=(1,))
    summary = json.loads(proc.stdout)
    assert summary["state"] == "stopped"
    assert "--fail-fast" in summary["stop_reason"] and "crashed" in summary["stop_reason"]
    assert "--resume" in proc.stderr

    proc = cli_in_process("run", src, "-o", out, "--resume", "--parser", PARSER, "--retries", "0", "--json",
                          check_codes=(0,))
    found = statuses(out)
    assert len(found) == 41
    assert found["pkg/crash.bad"] == "crashed"
    assert sum(s == "ok" for s in found.values()) == 40


def test_max_errors_counts_timeouts_and_parser_errors(tmp_path):
    # Named to sort first: discovery is in name order, so files remain when the third error lands.
    src = make_tree(tmp_path / "src", {"a_hang.bad": "hang", "b_raise.bad": "raise", "c_raise.bad": "raise"},
                    n_good=20)
    out = tmp_path / "out"
    proc = cli_in_process("run", src, "-o", out, "-j", "1", "--parser", PARSER, "--file-timeout", "0.5", "--retries", "0",
                          "--max-errors", "3", "--batch-bytes", "1KB", "--json", check_codes=(1,))
    summary = json.loads(proc.stdout)
    assert summary["state"] == "stopped"
    assert "--max-errors 3" in summary["stop_reason"]
    found = statuses(out)
    errors = {p: s for p, s in found.items() if s != "ok"}
    assert errors == {"pkg/a_hang.bad": "timeout", "pkg/b_raise.bad": "parser_error", "pkg/c_raise.bad": "parser_error"}
    assert len(found) < 43


def test_memory_error_row_has_a_message(tmp_path):
    # str(MemoryError()) is empty: the row must still say what happened.
    src = make_tree(tmp_path / "src", {"oom.bad": "oom"}, n_good=2)
    out = tmp_path / "out"
    cli_in_process("run", src, "-o", out, "-j", "1", "--parser", PARSER, check_codes=(0,))
    (row,) = [r for r in read_table(out, "files").to_pylist() if r["path"] == "pkg/oom.bad"]
    assert (row["status"], row["error_type"]) == ("parser_error", "MemoryError")
    assert row["error_message"] == "out of memory while parsing this file"


def test_fail_fast_and_max_errors_ignore_data_errors(tmp_path):
    # A syntax error or an undecodable file is the repository's data, not a failure of the run.
    src = make_tree(tmp_path / "src", {}, n_good=5)
    (src / "pkg" / "broken.py").write_text("def f(:\n")
    (src / "pkg" / "latin1.py").write_bytes(b'x = "caf\xe9"\n')
    for flags in (["--fail-fast"], ["--max-errors", "1"]):
        out = tmp_path / f"out{len(flags)}"
        proc = cli_in_process("run", src, "-o", out, "-j", "1", "--parser", PARSER, *flags, "--json", check_codes=(0,))
        summary = json.loads(proc.stdout)
        assert summary["state"] == "complete"
        assert summary["status_counts"] == {"ok": 10, "syntax_error": 1, "decode_error": 1}


def test_a_pool_breaking_while_submit_starts_a_worker_is_a_worker_death():
    # Seen under load: a worker crashed while submit started the pool's next worker, the pool's
    # manager thread closed the pool's queues in between, and `handle is closed` (OSError) escaped
    # submit. Here the crash is real and the race is made certain: the second worker's start waits
    # until the manager thread has torn the pool down.
    executor = LocalExecutor(2)
    pool = executor._pool
    start_worker = pool._spawn_process

    def start_worker_once_torn_down():
        deadline = time.monotonic() + 30
        while not pool._call_queue._reader.closed and time.monotonic() < deadline:
            time.sleep(0.01)
        start_worker()

    try:
        crashed = executor.submit(os._exit, 3)  # starts the first worker, which dies at once
        pool._spawn_process = start_worker_once_torn_down
        second = executor.submit(abs, -1)
        with pytest.raises(WorkerDied, match="handle is closed"):
            second.result(timeout=30)
        with pytest.raises(WorkerDied):
            crashed.result(timeout=30)
    finally:
        executor.shutdown(kill=True)


def test_a_healthy_pool_that_cannot_start_a_worker_fails_as_itself():
    # Not a worker death: as WorkerDied the coordinator would rebuild the pool and retry forever.
    executor = LocalExecutor(1)

    def cannot_start():
        raise OSError(errno.EAGAIN, "Resource temporarily unavailable")

    executor._pool._spawn_process = cannot_start
    try:
        with pytest.raises(OSError, match="Resource temporarily unavailable"):
            executor.submit(abs, -1)
    finally:
        executor.shutdown(kill=True)
