"""The Python API as an ETL extract stage uses it: run, stream, dataset, DuckDB and plan agree on a
real corpus; progress callbacks are throttled and end with every file; a stream left early stops
its workers and removes its staging folder; stats.json holds the job's totals, after a resume too."""

from __future__ import annotations

import gc
import json
import shutil
import subprocess
import sys
import tempfile
import time

import duckdb
import psutil
import pytest

import snakebatch
from _corpus import copy_stdlib_corpus, files_on_disk
from helpers import cli_env, run_cli
from snakebatch.schema import TABLES


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return copy_stdlib_corpus(tmp_path_factory.mktemp("corpus"))


def test_run_stream_dataset_duckdb_and_plan_agree(corpus, tmp_path):
    on_disk = files_on_disk(corpus)
    assert len(on_disk) > 300
    calls = []
    out = tmp_path / "out"
    # Small batches make the run last long enough for several progress calls.
    result = snakebatch.run(corpus, output=out, workers=2, batch_bytes="64k",
                            on_progress=lambda p: calls.append((time.monotonic(), p)))
    assert result.state == "complete" and result.exit_code == 0
    assert result.files == len(on_disk)
    assert sum(result.status_counts.values()) == len(on_disk)
    assert result.status_counts["ok"] > 300 and result.status_counts.get("binary", 0) > 0

    files = result.dataset("files").to_table(columns=["path"])
    assert sorted(files.column("path").to_pylist()) == on_disk
    definitions = result.dataset("definitions").count_rows()
    con = duckdb.connect()
    (duck_files,) = con.execute(f"SELECT count(*) FROM read_parquet('{out}/files/*.parquet')").fetchall()[0]
    (duck_defs,) = con.execute(f"SELECT count(*) FROM read_parquet('{out}/definitions/*.parquet')").fetchall()[0]
    assert (duck_files, duck_defs) == (len(on_disk), definitions)

    streamed = {"files": 0, "definitions": 0, "imports": 0}
    streamed_paths = []
    for table, batch in snakebatch.stream(corpus, workers=2):
        streamed[table] += batch.num_rows
        if table == "files":
            streamed_paths += batch.column("path").to_pylist()
    assert sorted(streamed_paths) == on_disk
    assert streamed["definitions"] == definitions
    assert streamed["imports"] == result.dataset("imports").count_rows()

    assert snakebatch.plan(corpus, workers=2).files == len(on_disk)
    proc = run_cli("plan", corpus, "-j", "2", "--json", check_codes=[0])
    assert json.loads(proc.stdout)["files"] == len(on_disk)

    # Progress: throttled to two a second, and the last call reports every file.
    assert len(calls) >= 2
    gaps = [b[0] - a[0] for a, b in zip(calls, calls[1:-1])]
    assert all(gap >= 0.45 for gap in gaps), gaps
    last = calls[-1][1]
    assert last.files_done == last.files_total == len(on_disk)
    assert last.bytes_done == result.bytes and last.rss_bytes > 0
    done = [p.files_done for _, p in calls]
    assert done == sorted(done)


def _descendants() -> dict[int, int]:
    """pid -> parent pid of every process below this one."""
    found = {}
    for process in psutil.Process().children(recursive=True):
        try:
            found[process.pid] = process.ppid()
        except psutil.NoSuchProcess:
            pass
    return found


def test_stream_left_early_stops_the_pool_and_removes_its_staging(corpus, tmp_path, monkeypatch):
    staging_parent = tmp_path / "tmp"
    staging_parent.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(staging_parent))
    me = psutil.Process().pid
    before = _descendants()
    stream = snakebatch.stream(corpus, workers=2, batch_bytes="16k")
    rows = 0
    for _table, batch in stream:
        rows += batch.num_rows
        workers = {pid for pid, parent in _descendants().items() if pid not in before and parent != me}
        assert len(list(staging_parent.glob("snakebatch-stream-*"))) == 1  # while it runs
        break
    assert workers, "the pool should be running while the stream is consumed"
    del stream, batch
    gc.collect()
    deadline = time.monotonic() + 10
    while any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in workers):
        assert time.monotonic() < deadline, f"workers still alive: {workers}"
        time.sleep(0.05)
    # Nothing new below this process but multiprocessing's own helpers (forkserver, resource
    # tracker), which are this process's children and outlive any pool.
    left = {pid: parent for pid, parent in _descendants().items() if pid not in before}
    assert all(parent == me for parent in left.values()), left
    assert list(staging_parent.glob("snakebatch-stream-*")) == []

    never_iterated = snakebatch.stream(corpus, workers=2)
    del never_iterated
    gc.collect()
    assert list(staging_parent.glob("snakebatch-stream-*")) == []


def test_stream_writes_nothing(corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = files_on_disk(corpus)
    batches = sum(1 for _ in snakebatch.stream(corpus, workers=1))
    assert batches >= 3
    assert list(tmp_path.iterdir()) == []
    assert files_on_disk(corpus) == before


def _stats(out):
    return json.loads((out / "_snakebatch" / "stats.json").read_text())


def test_stats_hold_the_job_totals_and_are_rewritten_after_a_resume(corpus, tmp_path):
    out = tmp_path / "out"
    # --fail-fast stops at a file its parser raises on, discovered first: a partial, resumable job.
    src = tmp_path / "src"
    shutil.copytree(corpus, src)
    (src / "0_refused.bad").write_text("raise\n")
    parsers = ["tests.misbehaving_parser:parser"]
    first = snakebatch.run(src, output=out, workers=2, batch_bytes="64k", fail_fast=True, parsers=parsers)
    assert first.state == "stopped" and first.files < len(files_on_disk(src))
    stats = _stats(out)
    assert stats["summary"]["state"] == "stopped"
    assert stats["job"]["files"] == first.files == first.dataset("files").count_rows()

    second = snakebatch.run(src, output=out, resume=True, workers=2, batch_bytes="64k", parsers=parsers)
    assert second.state == "complete" and second.files == len(files_on_disk(src))
    stats = _stats(out)
    summary, job, batches = stats["summary"], stats["job"], stats["batches"]
    assert summary["state"] == "complete"
    assert summary["files_this_run"] == second.files - first.files
    assert job["files"] == second.files
    for table in TABLES:
        assert job["rows"][table] == second.dataset(table).count_rows(), table
    assert job["batches"] == first.summary.batches_this_run + summary["batches_this_run"]
    # This run's batches, each with its files, bytes, parse time, rows and attempt.
    assert len(batches) == summary["batches_this_run"]
    assert sum(b["files"] for b in batches) == summary["files_this_run"]
    assert sum(b["bytes"] for b in batches) == summary["bytes_this_run"]
    assert all({"parse_s", "rows", "attempt", "worker_rss_bytes"} <= set(b) for b in batches)
    assert job["parse_s"] >= sum(b["parse_s"] for b in batches) - 0.01
    assert {"retries", "crashed_isolations"} <= set(summary)
    assert "decisions" in summary["governor"] and summary["governor"]["budget_bytes"] > 0


def test_a_slow_stream_consumer_holds_the_pool_back(corpus, tmp_path, monkeypatch):
    """Finished batches wait for the consumer in the staging folder: their number stays bounded
    by the batches in flight (two per worker), however slowly the loop runs."""
    staging_parent = tmp_path / "tmp"
    staging_parent.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(staging_parent))
    workers = 2
    most_staged = 0
    batches = 0
    for table, _ in snakebatch.stream(corpus, workers=workers, batch_bytes="16k"):
        if table != "files":
            continue
        batches += 1
        if batches > 40:
            break
        time.sleep(0.05)  # a slow load step
        (staging,) = staging_parent.glob("snakebatch-stream-*")
        most_staged = max(most_staged, sum(1 for _ in staging.iterdir()))
    assert batches > 40
    assert 1 <= most_staged <= 2 * workers + 1, most_staged


def test_dataset_of_a_job_with_no_files_has_the_columns(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = snakebatch.run(empty, output=tmp_path / "out", workers=1, content=True)
    assert result.state == "complete" and result.files == 0
    files = result.dataset("files").to_table()
    assert files.num_rows == 0 and {"path", "status", "content"} <= set(files.column_names)
    assert "qualname" in result.dataset("definitions").schema.names
    with pytest.raises(snakebatch.ConfigError, match="not one of"):
        result.dataset("functions")
    with pytest.raises(snakebatch.ConfigError, match="holds no snakebatch job"):
        snakebatch.open_dataset(empty)


def test_run_from_a_script_on_stdin_or_in_c(tmp_path):
    """`python -` names its main module `<stdin>`, no file a worker could run again; `-c` has none."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"m{i}.py").write_text(f"def f{i}(): pass\n")
    for how in ("stdin", "-c"):
        out = tmp_path / f"out-{how}"
        script = (f"import snakebatch\n"
                  f"result = snakebatch.run({str(src)!r}, output={str(out)!r}, workers=1)\n"
                  f"print(result.state, result.files, result.summary.stop_reason)\n")
        args, stdin = ([sys.executable, "-"], script) if how == "stdin" else ([sys.executable, "-c", script], None)
        proc = subprocess.run(args, input=stdin, capture_output=True, text=True, cwd=tmp_path, env=cli_env(), check=False,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split() == ["complete", "3", "None"], (how, proc.stdout, proc.stderr)
