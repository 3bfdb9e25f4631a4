"""`run --refresh`: after edits of every kind, the tables equal a fresh run's (every column but
batch_id and parse_ms); an unchanged tree is not read; crashes at each step of the swap, and
SIGKILLs of the real process group, end in the same tables; readers see one snapshot at a time.

Real files, real runs (the API in-process, the CLI in a subprocess for the kills), Parquet read
back with pyarrow and DuckDB.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import time
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

import snakebatch
from helpers import cli_in_process, run_cli
from resume_helpers import (
    LOGGING_PARSER,
    Run,
    assert_same_output,
    env,
    read_parts,
    run_args,
    snapshot,
)
from snakebatch.engine import refresh
from snakebatch.schema import TABLES
from snakebatch.store import compaction
from snakebatch.store import snapshot as snapshot_store
from snakebatch.store.ledger import Ledger

OLD = time.time() - 3600  # files older than the racy window: a refresh trusts their stat data


def _write(path: Path, text: str, old: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if old:
        os.utime(path, (OLD, OLD))


def _tree(root: Path, count: int = 12) -> Path:
    for index in range(count):
        _write(root / f"pkg{index % 3}" / f"m{index:02d}.py",
               f"import os\nfrom . import sib{index}\n\ndef f{index}(a, b):\n    return a + {index}\n")
    _write(root / "notes.txt", "some notes\n")
    _write(root / "broken.py", "def f(:\n    pass\n")
    _write(root / "folder" / "inner.py", "class Inner:\n    def m(self):\n        pass\n")
    return root


def _run(source: Path, out: Path, **options) -> snakebatch.RunResult:
    result = snakebatch.run(source, output=out, workers=1, progress=False, **options)
    assert result.state == "complete", result.summary
    return result


def _fresh(source: Path, tmp_path: Path, **options) -> dict:
    out = tmp_path / f"fresh-{time.monotonic_ns()}"
    _run(source, out, **options)
    return snapshot(out)


def _check(source: Path, out: Path, tmp_path: Path, **options) -> dict:
    """Refresh `out` and compare it with a fresh run; returns the refresh's report."""
    result = _run(source, out, refresh=True, **options)
    options.pop("redo", None)
    assert_same_output(snapshot(out), _fresh(source, tmp_path, **options))
    return result.summary.refresh


def test_edits_of_every_kind_then_refresh_equals_a_fresh_run(tmp_path):
    source, out = _tree(tmp_path / "src"), tmp_path / "out"
    first = _run(source, out)
    assert first.summary.refresh is None

    # Unchanged and old: nothing is read (no hash, no parse) and no new generation.
    report = _check(source, out, tmp_path)
    assert report["parsed"] == 0 and report["hashed"] == 0
    assert sum(report["changes"].values()) == 0

    # Add, modify with the same size and with another, delete, rename.
    _write(source / "new.py", "import sys\ndef added():\n    pass\n")
    m00 = source / "pkg0" / "m00.py"
    _write(m00, m00.read_text().replace("a + 0", "b + 0"))  # same size
    _write(source / "pkg1" / "m01.py", "def g():\n    return 1\n")
    (source / "pkg2" / "m02.py").unlink()
    (source / "pkg0" / "m03.py").rename(source / "pkg0" / "renamed.py")
    report = _check(source, out, tmp_path)
    assert report["changes"] == {"added": 2, "modified": 2, "deleted": 2, "reparsed": 0, "touched": 0}
    assert report["parsed"] == 4

    # A folder replaced by a file of its name, a touch without a change, a change of mode.
    shutil.rmtree(source / "folder")
    _write(source / "folder", "plain text now\n")
    os.utime(source / "pkg0" / "m06.py", (OLD + 60, OLD + 60))
    os.chmod(source / "pkg1" / "m04.py", 0o600)
    report = _check(source, out, tmp_path)
    assert report["changes"] == {"added": 1, "modified": 0, "deleted": 1, "reparsed": 0, "touched": 1}
    assert report["parsed"] == 1 and report["hashed"] == 2  # the touched and the chmod-ed file
    changes = duckdb.sql(f"select path, change, old_blob_id = new_blob_id as same from "
                         f"read_parquet('{out}/_snakebatch/changes/*.parquet') where change = 'touched'").fetchall()
    assert changes == [("pkg0/m06.py", "touched", True)]

    # An edit in the racy window: same size, and the mtime put back to the recorded one.
    victim = source / "pkg1" / "m07.py"
    recorded = victim.stat().st_mtime_ns
    victim.write_text(victim.read_text().replace("a + 7", "b + 7"))
    os.utime(victim, ns=(recorded, recorded))
    report = _check(source, out, tmp_path)
    assert report["changes"]["modified"] == 1

    # The feed holds every generation's changes; status names the last refresh.
    feed = duckdb.sql(f"select generation, change, count(*) from read_parquet('{out}/_snakebatch/changes/*.parquet') "
                      "group by all order by all").fetchall()
    assert [row[0] for row in feed] == sorted(row[0] for row in feed) and len({row[0] for row in feed}) == 3
    status = json.loads(cli_in_process("status", out, "--json", check_codes=(0,)).stdout)
    assert status["snapshot_generation"] == report["generation"]
    assert status["last_refresh"]["changes"]["modified"] == 1


def test_option_changes_and_redo_reparse_what_they_change(tmp_path):
    source, out = _tree(tmp_path / "src"), tmp_path / "out"
    _write(source / "big.py", "x = 1\n" * 40)
    _run(source, out)
    report = _check(source, out, tmp_path, max_file_size="100")
    assert report["changes"]["reparsed"] == 1  # big.py is too_large now
    report = _check(source, out, tmp_path, max_file_size="100", content=True)
    assert report["changes"]["reparsed"] == report["parsed"] == 16
    report = _check(source, out, tmp_path, max_file_size="100", content=True, redo="syntax_error,too_large")
    assert report["changes"]["reparsed"] == 2
    # Run-only options change nothing.
    report = _check(source, out, tmp_path, max_file_size="100", content=True, batch_bytes="1KB")
    assert report["parsed"] == 0


def test_refusals_name_refresh_and_exit_2(tmp_path):
    source, out = _tree(tmp_path / "src", 2), tmp_path / "out"
    _run(source, out)
    proc = cli_in_process(*run_args(source, out))
    assert proc.returncode == 2 and "--refresh" in proc.stderr
    proc = cli_in_process(*run_args(source, out, "--redo", "timeout"))
    assert proc.returncode == 2 and "--redo needs --refresh" in proc.stderr
    proc = cli_in_process(*run_args(source, out, "--refresh", "--redo", "nonsense"))
    assert proc.returncode == 2 and "nonsense" in proc.stderr
    other = _tree(tmp_path / "other", 1)
    proc = cli_in_process(*run_args(other, out, "--refresh"))
    assert proc.returncode == 2 and "SOURCE" in proc.stderr


def _edit(source: Path) -> None:
    _write(source / "pkg0" / "m00.py", "def changed():\n    pass\n")
    (source / "pkg1" / "m01.py").unlink()
    _write(source / "added.py", "import json\n")


@pytest.fixture(scope="module")
def edited(tmp_path_factory) -> tuple[Path, Path, dict, dict]:
    """A tree run once then edited, read only by the tests of the swap (each refreshes a copy of
    the run's OUT): (source, OUT, its snapshot, a fresh run's snapshot of the edited tree)."""
    root = tmp_path_factory.mktemp("edited")
    source, out = _tree(root / "src"), root / "out"
    _run(source, out)
    old = snapshot(out)
    _edit(source)
    return source, out, old, _fresh(source, root)


class _Crash(BaseException):
    pass


@pytest.mark.parametrize(("step", "then"), [("before_manifest", "refresh"), ("before_manifest", "resume"),
                                            ("after_manifest", "refresh"), ("after_one_exchange", "resume")])
def test_a_refresh_cut_off_at_each_step_of_the_swap_then_refresh_or_resume(tmp_path, monkeypatch, step, then,
                                                                           edited):
    source, first, _, want = edited
    out = tmp_path / "out"
    shutil.copytree(first, out)
    real_write, real_exchange = snapshot_store.atomic_write, snapshot_store.exchange
    exchanges = []

    def write(path, data):
        if step == "before_manifest" and path.endswith("compaction.json"):
            raise _Crash
        real_write(path, data)
        if step == "after_manifest" and path.endswith("compaction.json"):
            raise _Crash

    def exchange(a, b):
        real_exchange(a, b)
        exchanges.append(b)
        if step == "after_one_exchange":
            raise _Crash

    monkeypatch.setattr(snapshot_store, "atomic_write", write)
    monkeypatch.setattr(snapshot_store, "exchange", exchange)
    with pytest.raises(_Crash):
        snakebatch.run(source, output=out, workers=1, progress=False, refresh=True)
    monkeypatch.undo()
    read_parts(out)  # whole parts, no file twice
    result = _run(source, out, **({"refresh": True} if then == "refresh" else {"resume": True}))
    assert_same_output(snapshot(out), want)
    assert not (out / "_snakebatch" / "refresh").exists() and not (out / "_snakebatch" / "compacting").exists()
    assert sorted(os.listdir(out / "_snakebatch" / "changes")) == ["000002.parquet"]
    if step == "before_manifest":
        assert result.summary.refresh["changes"]["added"] == 1  # the refresh ran again
    # The ledger agrees with the tables: a resume has nothing to do, and status counts them all.
    again = _run(source, out, resume=True)
    assert again.summary.files_this_run == 0
    status = cli_in_process("status", out, "--json", check_codes=(0,))  # not about a process: ~0.6 CPU-s saved
    assert json.loads(status.stdout)["files_done"] == len(want["files"])


def test_a_reader_sees_the_old_or_the_new_snapshot_of_each_table_never_a_mix(tmp_path, monkeypatch, edited):
    source, first, old, new = edited
    out = tmp_path / "out"
    shutil.copytree(first, out)
    real_exchange = snapshot_store.exchange
    seen = []

    def look():
        state = snapshot(out)
        for table in TABLES:
            seen.append((table, state[table] == old[table], state[table] == new[table]))

    def exchange(a, b):
        look()
        real_exchange(a, b)
        look()

    monkeypatch.setattr(snapshot_store, "exchange", exchange)
    _run(source, out, refresh=True)
    assert seen and all(was_old or is_new for _, was_old, is_new in seen), seen
    assert {table for table, _, is_new in seen if is_new} == set(TABLES)


@pytest.mark.parametrize("moments", [
    [("refresh", 0.1)],  # while the changed files are parsed into the side folder
    pytest.param([("refresh", 0.0), ("refresh", 0.6), ("compacting", 0.0)], marks=pytest.mark.slow),
])
def test_sigkill_during_a_refresh_then_refresh_gives_the_same_tables(tmp_path, moments):
    source, out = _tree(tmp_path / "src", 16), tmp_path / "out"
    options = ("--parser", LOGGING_PARSER, "-j", "1", "--batch-bytes", "200")
    assert cli_in_process(*run_args(source, out, *options)).returncode == 0
    for index in range(16):
        _write(source / f"pkg{index % 3}" / f"m{index:02d}.py", f"def edited{index}():\n    pass\n")
    (source / "notes.txt").unlink()
    clean = tmp_path / "clean"
    shutil.copytree(out, clean)
    assert cli_in_process(*run_args(source, clean, "--refresh", *options)).returncode == 0
    want = snapshot(clean)
    landed = 0
    for number, (watch, delay) in enumerate(moments):
        target = tmp_path / f"out{number}"
        shutil.copytree(out, target)
        run = Run(run_args(source, target, "--refresh", *options), env(sleep=0.03), tmp_path / "logs")
        marker = target / "_snakebatch" / watch
        while not marker.exists() and run.proc.poll() is None:
            time.sleep(0.0005)
        time.sleep(delay)
        landed += run.kill_group() == -signal.SIGKILL
        read_parts(target)
        final = cli_in_process(*run_args(source, target, "--refresh", *options))
        assert final.returncode == 0, final.stderr
        assert_same_output(snapshot(target), want)
    assert landed >= 1


@pytest.mark.slow
def test_random_edit_sequences_then_refresh_equal_fresh_runs(tmp_path):
    rng = random.Random(14)
    source, out = _tree(tmp_path / "src", 20), tmp_path / "out"
    _run(source, out)
    for round_ in range(8):
        files = sorted(p for p in source.rglob("*") if p.is_file())
        for _ in range(rng.randint(1, 5)):
            victim = rng.choice(files)
            action = rng.choice(["add", "modify", "resize", "delete", "rename", "touch", "chmod", "folder"])
            if not victim.exists():
                continue
            if action == "add":
                _write(source / f"r{round_}" / f"n{rng.randint(0, 99)}.py", f"def n{round_}():\n    return {rng.random()}\n")
            elif action == "modify":
                text = victim.read_text(errors="replace")
                _write(victim, text[::-1], old=rng.random() < 0.5)
            elif action == "resize":
                _write(victim, victim.read_text(errors="replace") + "\n# more\n", old=rng.random() < 0.5)
            elif action == "delete":
                victim.unlink()
            elif action == "rename":
                victim.rename(victim.with_name("mv_" + victim.name))
            elif action == "touch":
                os.utime(victim, None)
            elif action == "chmod":
                os.chmod(victim, 0o600)
            elif victim.parent != source:
                shutil.rmtree(victim.parent)
                _write(victim.parent, "was a folder\n")
        _check(source, out, tmp_path)


def _worker_pids(out: Path) -> set:
    return {batch["worker_pid"] for batch in json.loads((out / "_snakebatch" / "stats.json").read_text())["batches"]}


def test_a_few_changed_files_are_parsed_in_process_with_the_rows_a_pool_gives(tmp_path, monkeypatch):
    source, out = _tree(tmp_path / "src"), tmp_path / "out"
    _run(source, out)
    pooled = tmp_path / "pooled"
    shutil.copytree(out, pooled)
    _write(source / "pkg0" / "m00.py", "def changed(x):\n    return x\n")
    _write(source / "added.py", "import sys\nclass Added:\n    pass\n")
    report = _check(source, out, tmp_path)
    assert report["parsed"] == 2
    assert _worker_pids(out) == {os.getpid()}  # no pool: parsed by this process
    assert not (out / "_snakebatch" / "refresh").exists()
    monkeypatch.setattr(refresh, "IN_PROCESS_FILES", 0)
    _check(source, pooled, tmp_path)
    assert os.getpid() not in _worker_pids(pooled)
    assert_same_output(snapshot(pooled), snapshot(out))


def test_a_crash_while_parsing_in_process_leaves_the_old_snapshot_then_the_pool_parses(tmp_path):
    source, out = _tree(tmp_path / "src"), tmp_path / "out"
    _write(source / "x.bad", "fine\n")
    options = ("--parser", "tests.misbehaving_parser:parser", "-j", "1")
    assert cli_in_process(*run_args(source, out, *options)).returncode == 0  # x.bad is fine: nothing dies
    before = snapshot(out)
    _write(source / "x.bad", "crash\n")  # the parser kills the process that parses it
    # The refreshes in a subprocess: the first kills the process that parses in process, and the
    # second would too if it parsed x.bad in process again.
    crashed = run_cli(*run_args(source, out, "--refresh", *options))
    assert crashed.returncode == 3, crashed.stderr  # the coordinator itself: it parsed in process
    intent = snapshot_store.read_intent(str(out))
    assert intent is not None and intent.in_process
    assert_same_output(snapshot(out), before)  # nothing live changed
    again = run_cli(*run_args(source, out, "--refresh", "--json", *options), check_codes=(0, 1))
    assert json.loads(again.stdout)["refresh"]["changes"]["modified"] == 1
    rows = snapshot(out)["files"]
    assert rows["x.bad"]["status"] == "crashed"  # a worker of the pool died on it, not the refresh
    assert {row["status"] for path, row in rows.items() if path != "x.bad"} == {
        row["status"] for path, row in before["files"].items() if path != "x.bad"}
    assert snapshot_store.read_intent(str(out)) is None


def _parts(out: Path, table: str) -> dict:
    """part name -> inode, of the table folder's parts."""
    return {p.name: p.stat().st_ino for p in (out / table).glob("*.parquet")}


def test_a_refresh_rewrites_only_the_bounded_parts_that_hold_a_change(tmp_path, monkeypatch):
    source, out = _tree(tmp_path / "src", 40), tmp_path / "out"
    _run(source, out, batch_bytes=300)  # one part per table: parts were not bounded before
    assert all(len(_parts(out, table)) == 1 for table in TABLES)
    monkeypatch.setattr(compaction, "PART_ROWS", 8)
    monkeypatch.setattr(snapshot_store, "PART_ROWS", 8)
    _write(source / "pkg1" / "m01.py", "def one():\n    pass\n")
    _check(source, out, tmp_path, batch_bytes=300)  # the big parts are cut into parts of 8 rows
    manifest = compaction.read_manifest(str(out / "_snakebatch"))
    for part in manifest.parts("files"):
        held = pq.read_table(out / "files" / part.name, columns=["batch_id"])["batch_id"].to_pylist()
        assert set(held) == set(part.batches) and len(held) <= 16
    ledger = {path: entry.batch_id for entry in Ledger(str(out)).read()[0] for path in entry.paths}
    for table in ("definitions", "imports"):
        for part in manifest.parts(table):
            paths = pq.read_table(out / table / part.name, columns=["path"])["path"].to_pylist()
            assert {ledger[path] for path in paths} <= set(part.batches)  # (a batch without rows here may be named)
    before = {table: _parts(out, table) for table in TABLES}
    assert len(before["files"]) >= 4
    _write(source / "pkg2" / "m38.py", "def two():\n    pass\n")
    _check(source, out, tmp_path, batch_bytes=300)
    batch = next(entry.batch_id for entry in Ledger(str(out)).read()[0] if "pkg2/m38.py" in entry.paths)
    for table in TABLES:
        after = _parts(out, table)
        kept = {name for name, inode in after.items() if before[table].get(name) == inode}
        assert len(after) - len(kept) <= 2, table  # the part with the change (and its new rows)
        assert len(kept) >= len(before[table]) - 2, table
        holding = [p.name for p in compaction.read_manifest(str(out / "_snakebatch")).parts(table) if batch in p.batches]
        assert holding and not set(holding) & kept
