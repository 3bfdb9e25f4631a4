"""Compaction of a complete job: few large parts with row-group statistics, the same rows as the
batch parts, and exactly-once kept through SIGKILLs at any moment of it, resumes that add files,
and ledger entries found corrupt afterwards.

Real CLI runs on stdlib files; parts read back with pyarrow and DuckDB. The crash states between
the protocol's steps are also assembled from real outputs (a `--no-compact` job and a compacted
copy of it) and handed to `--resume`, so that each recovery branch runs for certain.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections import Counter
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
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
from snakebatch.schema import TABLES
from snakebatch.store.compaction import MANIFEST, read_manifest
from snakebatch.store.ledger import Ledger

# ~44 batches of ~5 files: "many batches" (> 20) at a third of the work of 8KB batches (132).
OPTIONS = ("--parser", LOGGING_PARSER, "--batch-bytes", "24KB", "-j", "2")


def _parts(out: Path, table: str) -> list[str]:
    return sorted(name for name in os.listdir(out / table) if name.endswith(".parquet"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    assert copy_stdlib(root, 240) == 240
    (root / "broken.py").write_text("def f(:\n    pass\n")
    return root


@pytest.fixture(scope="module")
def uncompacted(corpus, tmp_path_factory):
    """The job run to its end with --no-compact: one part per batch and table."""
    out = tmp_path_factory.mktemp("uncompacted") / "out"
    proc = cli_in_process(*run_args(corpus, out, *OPTIONS, "--no-compact", "--json"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["compaction"] is None
    assert len(_parts(out, "files")) == json.loads(proc.stdout)["batches_this_run"] > 20
    return out


@pytest.fixture(scope="module")
def compacted(corpus, uncompacted, tmp_path_factory):
    """A copy of the uncompacted job, compacted by a resume that has nothing left to parse."""
    out = tmp_path_factory.mktemp("compacted") / "out"
    shutil.copytree(uncompacted, out)
    proc = cli_in_process(*run_args(corpus, out, *OPTIONS, "--json", resume=True))
    return out, proc


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def test_a_complete_job_ends_with_one_part_per_table_and_the_same_rows(corpus, uncompacted, tmp_path):
    out = tmp_path / "out"
    proc = cli_in_process(*run_args(corpus, out, *OPTIONS, "--json"))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    batches = summary["batches_this_run"]
    assert summary["compaction"]["parts_before"] == 3 * batches
    assert summary["compaction"]["parts_after"] == 3
    for table in TABLES:
        assert _parts(out, table) == ["part-c0001-00000.parquet"]
    assert not (out / "_snakebatch" / "compacting").exists()
    assert_same_output(snapshot(out), snapshot(uncompacted))

    manifest = read_manifest(str(out / "_snakebatch"))
    assert sorted(manifest.covers) == sorted(e.batch_id for e in Ledger(str(out)).entries())
    # The batch_id column still tells each file's batch, and the manifest agrees with it (the
    # job's empty first batch has no rows to tell).
    files = pq.read_table(out / "files")
    assert set(files["batch_id"].to_pylist()) == set(manifest.covers) - {1}

    con = duckdb.connect()
    total, distinct = con.execute(
        f"select count(*), count(distinct path) from read_parquet('{out}/files/*.parquet')").fetchall()[0]
    assert total == distinct == 241
    # Row groups carry min/max statistics on path, so a reader can skip them.
    meta = pq.ParquetFile(out / "files" / "part-c0001-00000.parquet").metadata
    path_column = meta.schema.names.index("path")
    stats = meta.row_group(0).column(path_column).statistics
    assert stats is not None and stats.has_min_max and stats.min <= stats.max

    # `status` reads an error's message from the compacted part, and counts the parts.
    status = run_cli("status", out)
    assert status.returncode == 0, status.stderr
    assert "broken.py" in status.stdout and "invalid syntax" in status.stdout
    assert "parts:     files 1, definitions 1, imports 1 (compacted, generation 1)" in status.stdout
    got = json.loads(run_cli("status", out, "--json").stdout)
    assert got["parts"] == dict.fromkeys(TABLES, 1) and got["compaction_generation"] == 1

    # A resume with nothing new to do leaves the compacted parts as they are.
    before = {t: (out / t / _parts(out, t)[0]).stat().st_ino for t in TABLES}
    proc = cli_in_process(*run_args(corpus, out, *OPTIONS, "--json", resume=True))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["compaction"] is None
    assert {t: (out / t / _parts(out, t)[0]).stat().st_ino for t in TABLES} == before


def test_parts_and_row_groups_are_cut_by_size_with_path_statistics(tmp_path, monkeypatch):
    """Compaction in this process, with small limits, on a real uncompacted job: several parts,
    several row groups each, whose path ranges do not overlap (discovery order is path order)."""
    from snakebatch.store import compaction

    source = tmp_path / "src"
    for folder in range(30):
        (source / f"d{folder:02d}").mkdir(parents=True)
        for index in range(20):
            (source / f"d{folder:02d}" / f"m{index:02d}.py").write_text(f"import os\ndef f():\n    return {index}\n")
    out = tmp_path / "out"
    proc = cli_in_process(*run_args(source, out, "-j", "2", "--batch-bytes", "2KB", "--no-compact"))
    assert proc.returncode == 0, proc.stderr
    want = snapshot(out)
    batch_ids = [entry.batch_id for entry in Ledger(str(out)).entries()]
    monkeypatch.setattr(compaction, "ROW_GROUP_ROWS", 64)
    files_bytes = sum((out / "files" / name).stat().st_size for name in _parts(out, "files"))
    monkeypatch.setattr(compaction, "TARGET_PART_BYTES", files_bytes // 3)
    manifest, report = compaction.Compactor(str(out)).compact(None, batch_ids, lambda: False)
    assert report.parts_before == 3 * len(batch_ids) and 3 < report.parts_after < report.parts_before
    assert_same_output(snapshot(out), want)
    names = _parts(out, "files")
    assert len(names) > 1 and names == sorted(p.name for p in manifest.parts("files"))
    assert sorted(b for p in manifest.parts("files") for b in p.batches) == sorted(batch_ids)
    ranges = []
    for name in names:
        meta = pq.ParquetFile(out / "files" / name).metadata
        column = meta.schema.names.index("path")
        for group in range(meta.num_row_groups):
            stats = meta.row_group(group).column(column).statistics
            assert meta.row_group(group).num_rows <= 64
            ranges.append((stats.min, stats.max))
    assert len(ranges) >= 600 // 64
    assert all(ranges[i][1] < ranges[i + 1][0] for i in range(len(ranges) - 1)), ranges
    con = duckdb.connect()
    assert con.execute(f"select count(*) from read_parquet('{out}/files/*.parquet') "
                       f"where path = 'd29/m07.py'").fetchall()[0][0] == 1


def test_a_resume_that_adds_files_compacts_again_and_parses_only_the_new_ones(corpus, tmp_path):
    source = _copy(corpus, tmp_path / "src")
    out, log = tmp_path / "out", tmp_path / "parses.log"
    proc = cli_in_process(*run_args(source, out, *OPTIONS), env=env(log=log))
    assert proc.returncode == 0, proc.stderr
    first = Counter(parse_log(log))
    (source / "added").mkdir()
    for index in range(30):
        (source / "added" / f"n{index}.py").write_text(f"import os\ndef f{index}():\n    return {index}\n")
    proc = cli_in_process(*run_args(source, out, *OPTIONS, "--json", resume=True), env=env(log=log))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["files_this_run"] == 30 and summary["files"] == 271
    assert Counter(parse_log(log)) - first == Counter(f"added/n{i}.py" for i in range(30))
    for table in TABLES:
        assert _parts(out, table) == ["part-c0002-00000.parquet"]
    assert read_manifest(str(out / "_snakebatch")).generation == 2
    got = snapshot(out)
    assert len(got["files"]) == 271
    assert sum(1 for row in got["imports"] if dict(row)["path"].startswith("added/")) == 30


def _assemble(uncompacted: Path, compacted: Path, dst: Path, manifest: bool, swapped: tuple) -> Path:
    """The job folder as a compaction cut off at one step would leave it: twins built, the
    manifest written or not, and the tables in `swapped` already exchanged."""
    out = _copy(uncompacted, dst)
    twins = out / "_snakebatch" / "compacting"
    twins.mkdir()
    for table in TABLES:
        if table in swapped:
            os.rename(out / table, twins / table)
            shutil.copytree(compacted / table, out / table)
        else:
            shutil.copytree(compacted / table, twins / table)
    if manifest:
        shutil.copyfile(compacted / "_snakebatch" / MANIFEST, out / "_snakebatch" / MANIFEST)
    (out / "_snakebatch" / "complete.json").unlink(missing_ok=True)
    return out


@pytest.mark.parametrize("manifest,swapped", [
    (False, ()),                        # twins built, killed before the commit point: undone
    # One state undone and one rolled forward in the default run.
    (True, ()),                         # committed, nothing exchanged yet: rolled forward
    pytest.param(True, ("files",), marks=pytest.mark.slow),  # killed between two exchanges
    pytest.param(True, TABLES, marks=pytest.mark.slow),      # all exchanged, the old parts not yet deleted
], ids=["before-manifest", "after-manifest", "between-exchanges", "before-cleanup"])
def test_recovery_settles_a_compaction_cut_off_at_each_step(corpus, uncompacted, compacted, tmp_path, manifest, swapped):
    compacted_out, proc = compacted
    assert proc.returncode == 0, proc.stderr
    out = _assemble(uncompacted, compacted_out, tmp_path / "out", manifest, swapped)
    # What a reader sees in that state: every file once (each table either all old or all new).
    read_parts(out)
    log = tmp_path / "parses.log"
    proc = cli_in_process(*run_args(corpus, out, *OPTIONS, "--json", resume=True), env=env(log=log))
    assert proc.returncode == 0, proc.stderr
    assert not parse_log(log), "a file was parsed again"
    summary = json.loads(proc.stdout)
    # Undone, it compacts now; rolled forward, there is nothing left to compact.
    assert (summary["compaction"] is not None) == (not manifest)
    assert_same_output(snapshot(out), snapshot(uncompacted))
    for table in TABLES:
        assert _parts(out, table) == ["part-c0001-00000.parquet"]
    assert not (out / "_snakebatch" / "compacting").exists()


@pytest.mark.slow  # ~27 s; every crash state it lands in is also built and resumed (two of them in the
# default run) by test_recovery_settles_a_compaction_cut_off_at_each_step, and real SIGKILLs of a swap by test_refresh.py
def test_sigkill_during_compaction_then_resume(corpus, uncompacted, tmp_path):
    """Kill the real process group at moments of a compaction, taken from the folder itself."""
    want = snapshot(uncompacted)
    environ = env()
    moments = [("twins", 0.0), ("twins", 0.01), ("twins", 0.03), ("manifest", 0.0), ("manifest", 0.002),
               ("twins", 0.06), ("manifest", 0.005)]
    landed, states = 0, set()
    for number, (event, delay) in enumerate(moments):
        out = _copy(uncompacted, tmp_path / f"out{number}")
        run = Run(run_args(corpus, out, *OPTIONS, resume=True), environ, tmp_path / "logs")
        watch = out / "_snakebatch" / ("compacting" if event == "twins" else MANIFEST)
        while not watch.exists() and run.proc.poll() is None:
            time.sleep(0.0005)
        time.sleep(delay)
        code = run.kill_group()
        if code == -signal.SIGKILL:
            landed += 1
            states.add(((out / "_snakebatch" / "compacting").exists(), (out / "_snakebatch" / MANIFEST).exists()))
        read_parts(out)  # no torn part and no file twice, whatever the moment
        final = cli_in_process(*run_args(corpus, out, *OPTIONS, "--json", resume=True))
        assert final.returncode == 0, final.stderr
        assert json.loads(final.stdout)["files_this_run"] == 0
        assert_same_output(snapshot(out), want)
        for table in TABLES:
            assert len(_parts(out, table)) == 1, (event, delay, os.listdir(out / table))
    assert landed >= 4, f"only {landed} kills landed during compaction"
    # (twins present, manifest written): at least before and after the commit point.
    assert (True, False) in states and any(manifest for _, manifest in states), states


@pytest.mark.slow  # damage of a compacted job: a corrupt part and an unreadable manifest, in the default run
def test_a_corrupt_entry_of_a_compacted_batch_is_cut_out_and_redone_once(corpus, compacted, uncompacted, tmp_path):
    out = _copy(compacted[0], tmp_path / "out")
    ledger_path = out / "_snakebatch" / "ledger.jsonl"
    lines = ledger_path.read_bytes().splitlines(keepends=True)
    entries = list(Ledger(str(out)).entries())
    middle = len(lines) // 2
    damaged = bytearray(lines[middle])
    damaged[20:28] = b"\x00\xffjunk\x01\x02"
    lines[middle] = bytes(damaged)
    ledger_path.write_bytes(b"".join(lines))
    redo = set(entries[middle].paths)

    log = tmp_path / "parses.log"
    proc = cli_in_process(*run_args(corpus, out, *OPTIONS, resume=True), env=env(log=log))
    assert proc.returncode == 0, proc.stderr
    assert "rows of 1 batch(es) without a valid ledger entry removed from compacted parts" in proc.stdout
    assert Counter(parse_log(log)) == Counter(redo)
    assert_same_output(snapshot(out), snapshot(uncompacted))
    for table in TABLES:
        assert _parts(out, table) == ["part-c0002-00000.parquet"]


def test_no_compact_keeps_one_part_per_batch_and_is_refused_with_a_bad_value(corpus, uncompacted, tmp_path):
    entries = list(Ledger(str(uncompacted)).entries())
    assert _parts(uncompacted, "files") == sorted(f"part-{e.batch_id:08d}.parquet" for e in entries)
    assert not (uncompacted / "_snakebatch" / MANIFEST).exists()
    got = json.loads(run_cli("status", uncompacted, "--json").stdout)
    assert got["parts"] == dict.fromkeys(TABLES, len(entries)) and got["compaction_generation"] is None
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "snakebatch.toml").write_text("compact = 'yes'\n")
    proc = cli_in_process(*run_args(tmp_path / "src", tmp_path / "out"))
    assert proc.returncode == 2 and "compact" in proc.stderr and "Traceback" not in proc.stderr


def test_sigint_during_compaction_stops_with_130_and_the_resume_compacts(corpus, uncompacted, tmp_path):
    want = snapshot(uncompacted)
    for attempt in range(5):
        out = _copy(uncompacted, tmp_path / f"out{attempt}")
        run = Run(run_args(corpus, out, *OPTIONS, resume=True), env(), tmp_path / "logs")
        while not (out / "_snakebatch" / "compacting").exists() and run.proc.poll() is None:
            time.sleep(0.0005)
        run.signal_group(signal.SIGINT)
        code = run.wait()
        if code == 130:
            break
        assert code == 0, run.stderr  # finished before the signal landed: try again
    else:
        pytest.skip("the compaction always finished before SIGINT landed")
    assert "resume with: " in run.stderr and "--resume" in run.stderr
    assert not (out / "_snakebatch" / "compacting").exists()  # given up cleanly, nothing half-done
    assert not (out / "_snakebatch" / MANIFEST).exists()
    assert len(_parts(out, "files")) > 1
    assert json.loads(run_cli("status", out, "--json").stdout)["state"] == "incomplete"
    final = cli_in_process(*run_args(corpus, out, *OPTIONS, "--json", resume=True))
    assert final.returncode == 0, final.stderr
    assert json.loads(final.stdout)["compaction"]["parts_after"] == 3
    assert_same_output(snapshot(out), want)


@pytest.mark.slow  # damage of a compacted job: a corrupt part and an unreadable manifest, in the default run
def test_a_lost_compacted_part_undoes_its_batches_everywhere_and_they_are_redone(corpus, uncompacted, tmp_path,
                                                                               monkeypatch):
    from snakebatch.store import compaction

    out = _copy(uncompacted, tmp_path / "out")
    entries = {entry.batch_id: entry for entry in Ledger(str(out)).entries()}
    files_bytes = sum((out / "files" / name).stat().st_size for name in _parts(out, "files"))
    monkeypatch.setattr(compaction, "TARGET_PART_BYTES", files_bytes // 4)
    manifest, _ = compaction.Compactor(str(out)).compact(None, sorted(entries), lambda: False)
    assert len(manifest.parts("files")) >= 3
    lost = manifest.parts("files")[1]
    (out / "files" / lost.name).unlink()
    redo = {path for batch in lost.batches for path in entries[batch].paths}

    log = tmp_path / "parses.log"
    proc = cli_in_process(*run_args(corpus, out, *OPTIONS, resume=True), env=env(log=log))
    assert proc.returncode == 0, proc.stderr
    assert f"{len(lost.batches)} incomplete commit(s) undone" in proc.stdout
    assert Counter(parse_log(log)) == Counter(redo)
    assert_same_output(snapshot(out), snapshot(uncompacted))


@pytest.mark.slow  # three runs; a resume that compacts again is in the default run
def test_a_resume_links_large_compacted_parts_and_rewrites_only_the_rest(corpus, tmp_path, monkeypatch):
    """Compacted parts closed full are kept as they are (hard links into the twin), so adding a
    few files does not rewrite the whole job; the last, partly filled one is rewritten."""
    from snakebatch.store import compaction

    source = _copy(corpus, tmp_path / "src")
    out = tmp_path / "out"
    assert cli_in_process(*run_args(source, out, *OPTIONS, "--no-compact")).returncode == 0
    files_bytes = sum((out / "files" / name).stat().st_size for name in _parts(out, "files"))
    monkeypatch.setattr(compaction, "TARGET_PART_BYTES", files_bytes // 3)
    first, _ = compaction.Compactor(str(out)).compact(None, [e.batch_id for e in Ledger(str(out)).entries()],
                                                      lambda: False)
    full = [part.name for part in first.parts("files")[:-1]]
    assert len(full) >= 2
    inodes = {name: (out / "files" / name).stat().st_ino for name in full}

    (source / "added").mkdir()
    for index in range(5):
        (source / "added" / f"n{index}.py").write_text(f"def g{index}():\n    pass\n")
    assert cli_in_process(*run_args(source, out, *OPTIONS, "--no-compact", resume=True)).returncode == 0
    entries = list(Ledger(str(out)).entries())
    second, report = compaction.Compactor(str(out)).compact(first, [e.batch_id for e in entries], lambda: False)
    names = [part.name for part in second.parts("files")]
    assert names[:len(full)] == full and all(n.startswith("part-c0002-") for n in names[len(full):])
    assert {name: (out / "files" / name).stat().st_ino for name in full} == inodes  # not rewritten
    assert sorted(second.covers) == sorted(e.batch_id for e in entries)
    got = snapshot(out)
    assert len(got["files"]) == 246 and {f"added/n{i}.py" for i in range(5)} <= set(got["files"])
    # A later recovery keeps every part: the linked ones are named by the manifest too.
    proc = cli_in_process(*run_args(source, out, *OPTIONS, "--json", resume=True))
    assert proc.returncode == 0 and json.loads(proc.stdout)["files_this_run"] == 0, proc.stderr
    assert _parts(out, "files") == sorted(names)


def test_a_compaction_that_cannot_write_leaves_the_batch_parts_and_the_job_complete(corpus, uncompacted, tmp_path):
    """A file size limit below the compacted parts' size (none of the batch parts reaches it):
    the compaction fails with a warning, the job is complete with its batch parts, and a later
    resume compacts."""
    out = _copy(uncompacted, tmp_path / "out")
    before = {table: _parts(out, table) for table in TABLES}
    proc = run_cli(*run_args(corpus, out, *OPTIONS, "--json", resume=True), preexec_fn=file_size_limit(30_000))
    assert proc.returncode == 0, proc.stderr
    assert "warning: cannot compact the tables" in proc.stderr and "Traceback" not in proc.stderr
    assert json.loads(proc.stdout)["compaction"] is None
    assert {table: _parts(out, table) for table in TABLES} == before
    assert not (out / "_snakebatch" / "compacting").exists() and not (out / "_snakebatch" / MANIFEST).exists()
    assert json.loads(run_cli("status", out, "--json").stdout)["state"] == "complete"

    proc = cli_in_process(*run_args(corpus, out, *OPTIONS, "--json", resume=True))
    assert proc.returncode == 0 and json.loads(proc.stdout)["compaction"]["parts_after"] == 3, proc.stderr
    assert_same_output(snapshot(out), snapshot(uncompacted))


def test_a_corrupt_compacted_part_is_found_and_exactly_its_batches_redone(corpus, uncompacted, tmp_path, monkeypatch):
    from snakebatch.store import compaction

    out = _copy(uncompacted, tmp_path / "out")
    entries = {entry.batch_id: entry for entry in Ledger(str(out)).entries()}
    files_bytes = sum((out / "imports" / name).stat().st_size for name in _parts(out, "imports"))
    monkeypatch.setattr(compaction, "TARGET_PART_BYTES", files_bytes // 3)
    manifest, _ = compaction.Compactor(str(out)).compact(None, sorted(entries), lambda: False)
    damaged = manifest.parts("imports")[1]
    assert damaged.size == (out / "imports" / damaged.name).stat().st_size and damaged.xxh3
    data = bytearray((out / "imports" / damaged.name).read_bytes())
    data[len(data) // 2:len(data) // 2 + 64] = bytes(64)
    (out / "imports" / damaged.name).write_bytes(bytes(data))
    assert run_cli("status", out).returncode == 0  # same size: only the checksum tells
    proc = run_cli("status", out, "--verify", "--json")
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["damage"] == [["imports", damaged.name, "checksum"]]

    log = tmp_path / "parses.log"
    proc = cli_in_process(*run_args(corpus, out, *OPTIONS, resume=True), env=env(log=log))
    assert proc.returncode == 0, proc.stderr
    assert f"imports/{damaged.name} (checksum)" in proc.stdout
    assert Counter(parse_log(log)) == Counter(p for batch in damaged.batches for p in entries[batch].paths)
    assert_same_output(snapshot(out), snapshot(uncompacted))
    assert run_cli("status", out, "--verify").returncode == 0


def test_an_unreadable_manifest_is_damage_and_a_resume_rebuilds_it_without_parsing(corpus, compacted, uncompacted,
                                                                                  tmp_path):
    out = _copy(compacted[0], tmp_path / "out")
    generation = read_manifest(str(out / "_snakebatch")).generation
    (out / "_snakebatch" / MANIFEST).write_bytes(b'{"generation": 1, "cov')
    proc = run_cli("status", out, "--json")
    assert proc.returncode == 1, proc.stderr
    status = json.loads(proc.stdout)
    assert status["state"] == "incomplete" and status["damage"] == [["_snakebatch", MANIFEST, "unreadable"]]

    log = tmp_path / "parses.log"
    proc = cli_in_process(*run_args(corpus, out, *OPTIONS, resume=True), env=env(log=log))
    assert proc.returncode == 0, proc.stderr
    assert "unreadable compaction.json rebuilt from the compacted parts" in proc.stdout
    assert parse_log(log) == []
    assert read_manifest(str(out / "_snakebatch")).generation == generation
    assert_same_output(snapshot(out), snapshot(uncompacted))
    assert run_cli("status", out, "--verify").returncode == 0


# -- compaction begun in the tail (store/compaction.py EarlyCompaction) --------------------------

TAIL_SLEEP = 0.01  # seconds per file: ~1 s of batches after compaction begins (at the 8th batch)


def test_compaction_begins_while_the_last_batches_run_and_keeps_rows_in_batch_order(corpus, uncompacted, tmp_path):
    out = tmp_path / "out"
    proc = cli_in_process(*run_args(corpus, out, *OPTIONS, "--json"), env=env(sleep=TAIL_SLEEP / 2))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    compaction = summary["compaction"]
    # Part of it was written before the last batch committed, and is not serial time.
    assert 1 <= compaction["early_batches"] < summary["batches_this_run"], compaction
    assert compaction["early_s"] > 0
    assert summary["serial"]["compaction_overlapped_s"] == compaction["early_s"]
    assert summary["serial"]["compaction_s"] > 0
    assert compaction["parts_before"] == 3 * summary["batches_this_run"] and compaction["parts_after"] == 3
    for table in TABLES:
        assert _parts(out, table) == ["part-c0001-00000.parquet"]
    assert not (out / "_snakebatch" / "compacting").exists()
    assert_same_output(snapshot(out), snapshot(uncompacted))
    # The early batches and the rest were written in batch order: the row groups' path
    # statistics stay as narrow as after a compaction at the end.
    batch_ids = pq.read_table(out / "files" / "part-c0001-00000.parquet", columns=["batch_id"])["batch_id"].to_pylist()
    assert batch_ids == sorted(batch_ids)
    assert read_manifest(str(out / "_snakebatch")).covers == sorted(e.batch_id for e in Ledger(str(out)).entries())


def _run_until_twins(corpus: Path, out: Path, logs: Path) -> Run:
    """A fresh run of the corpus, returned once its compaction has begun (batches still running)."""
    run = Run(run_args(corpus, out, *OPTIONS), env(sleep=TAIL_SLEEP), logs)
    while not (out / "_snakebatch" / "compacting").exists() and run.proc.poll() is None:
        time.sleep(0.0005)
    return run


@pytest.mark.slow  # 16 s; the SIGINT in the tail below stays in the default run
def test_sigkill_while_compaction_runs_in_the_tail_then_resume(corpus, uncompacted, tmp_path):
    want = snapshot(uncompacted)
    entries = len(list(Ledger(str(uncompacted)).entries()))
    landed = 0
    for number, delay in enumerate((0.0, 0.2)):
        out = tmp_path / f"out{number}"
        run = _run_until_twins(corpus, out, tmp_path / "logs")
        time.sleep(delay)
        code = run.kill_group()
        if code == -signal.SIGKILL:
            # Killed with twins begun and nothing committed by them; in the tail when batches
            # were left to run (a loaded machine may have committed them all by the later kill).
            assert (out / "_snakebatch" / "compacting").exists()
            assert not (out / "_snakebatch" / MANIFEST).exists()
            landed += len(list(Ledger(str(out)).entries())) < entries
        read_parts(out)  # no torn part and no file twice
        final = cli_in_process(*run_args(corpus, out, *OPTIONS, "--json", resume=True))
        assert final.returncode == 0, final.stderr
        assert json.loads(final.stdout)["state"] == "complete"
        assert_same_output(snapshot(out), want)
        for table in TABLES:
            assert _parts(out, table) == ["part-c0001-00000.parquet"], os.listdir(out / table)
        assert not (out / "_snakebatch" / "compacting").exists()
    assert landed >= 1, "no kill landed while compaction ran in the tail"


def test_sigint_while_compaction_runs_in_the_tail_deletes_its_twins(corpus, uncompacted, tmp_path):
    out = tmp_path / "out"
    run = _run_until_twins(corpus, out, tmp_path / "logs")
    run.signal_group(signal.SIGINT)
    assert run.wait() == 130, run.stderr
    assert len(list(Ledger(str(out)).entries())) < len(list(Ledger(str(uncompacted)).entries()))
    assert not (out / "_snakebatch" / "compacting").exists()  # given up, nothing half-done left
    assert not (out / "_snakebatch" / MANIFEST).exists()
    assert json.loads(run_cli("status", out, "--json").stdout)["state"] == "incomplete"
    final = cli_in_process(*run_args(corpus, out, *OPTIONS, "--json", resume=True))
    assert final.returncode == 0, final.stderr
    assert json.loads(final.stdout)["compaction"]["parts_after"] == 3
    assert_same_output(snapshot(out), snapshot(uncompacted))
