"""The serial fraction in every run's summary (engine/serial.py), and the stat data the worker
returns in its outcome instead of the coordinator stat'ing each file again."""

from __future__ import annotations

import json
import os

from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import SAMPLES, run_cli
from snakebatch.engine.serial import CAUSES, Timeline, serial_fraction
from snakebatch.engine.worker import BatchTask, process_batch
from snakebatch.store.ledger import Ledger

TINYLIB = SAMPLES / "tinylib"


def _check_adds_up(serial: dict) -> None:
    causes = [serial[f"{cause}_s"] for cause in CAUSES]
    assert all(seconds >= 0 for seconds in causes), serial
    assert abs(sum(causes) - serial["total_s"]) < 1e-3, serial
    # Wall time = serial time + the workers' busy seconds spread over all of them.
    assert abs(serial["total_s"] + serial["busy_worker_s"] / serial["workers"] - serial["wall_s"]) < 2e-3, serial


def test_a_known_timeline_splits_into_its_causes():
    timeline = Timeline(process_started=100.0, run_started=100.5, pool_s=0.2, first_submit=101.0,
                        discovery_done=104.0, run_ended=106.5, compaction_started=106.5,
                        compaction_ended=107.0, summary_at=107.25)
    intervals = [
        (101.5, 103.0, 1),  # worker 1 starts 0.5 s after the first submit
        (102.0, 106.0, 2),  # worker 2 starts 1.0 s after it, runs to the end
        (103.5, 105.0, 1),  # worker 1 waits 0.5 s for the coordinator, then ends in the tail
    ]
    serial = serial_fraction(timeline, intervals, workers=2)
    assert serial["interpreter_imports_s"] == 0.5
    assert serial["pool_start_s"] == 0.2 + (0.5 * 2 + 0.5 * 1) / 2  # both slots, then one
    assert serial["discovery_s"] == 0.3
    assert serial["between_batches_s"] == 0.25  # one of two workers idle 0.5 s
    assert serial["tail_s"] == 0.5  # one of two idle from 105 to 106
    assert serial["compaction_s"] == 0.5
    assert serial["exit_s"] == 0.5 + 0.25  # last batch end to the loop's end, and after compaction
    assert serial["busy_worker_s"] == 7.0
    _check_adds_up(serial)


def test_a_run_that_submitted_nothing_is_all_serial():
    timeline = Timeline(process_started=10.0, run_started=10.4, pool_s=0.3, run_ended=11.0, summary_at=11.1)
    serial = serial_fraction(timeline, [], workers=4)
    assert serial["discovery_s"] == 0.3 and serial["exit_s"] == 0.1
    assert serial["total_s"] == serial["wall_s"] == 1.1
    _check_adds_up(serial)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 8), st.lists(st.tuples(st.floats(0, 20), st.floats(0, 5), st.integers(1, 10)), max_size=30),
       st.floats(0, 25), st.floats(0, 3))
def test_causes_are_never_negative_and_add_up(workers, raw, done_after, compaction):
    # Batches on one worker never overlap: lay each worker's out one after another.
    clock: dict = {}
    intervals = []
    for gap, length, worker in raw:
        start = clock.get(worker, 2.0) + gap
        intervals.append((start, start + length, worker))
        clock[worker] = start + length
    last = max((end for _, end, _ in intervals), default=2.0)
    timeline = Timeline(process_started=0.0, run_started=0.5, pool_s=0.4, first_submit=2.0,
                        discovery_done=2.0 + done_after, run_ended=last + 0.1,
                        compaction_started=last + 0.1, compaction_ended=last + 0.1 + compaction,
                        summary_at=last + 0.2 + compaction)
    _check_adds_up(serial_fraction(timeline, intervals, workers))


def test_every_run_reports_its_serial_time_and_the_ledger_keeps_the_workers_stat_data(tmp_path):
    out = tmp_path / "out"
    proc = run_cli("run", TINYLIB, "-o", out, "--no-progress", "--json", "-j", "2", check_codes=[0])
    summary = json.loads(proc.stdout)
    serial = summary["serial"]
    _check_adds_up(serial)
    assert serial["workers"] == 2 and serial["busy_worker_s"] > 0
    assert serial["compaction_s"] > 0  # a complete job is compacted
    assert serial["interpreter_imports_s"] > 0.01  # the interpreter's start and imports
    assert serial["wall_s"] >= summary["elapsed_s"]
    saved = json.loads((out / "_snakebatch" / "stats.json").read_text())["summary"]["serial"]
    assert saved == serial
    entries, _ = Ledger(str(out)).read()
    checked = 0
    for entry in entries:
        for path, stat in zip(entry.paths, entry.stats):
            st_ = os.stat(TINYLIB / path)
            assert stat == [st_.st_ctime_ns, st_.st_ino, st_.st_mode]
            checked += 1
    assert checked == summary["files"] > 0


def test_the_worker_returns_each_files_stat_data_read_or_not(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.py").write_text("def a(): pass\n")
    (src / "locked.py").write_text("x = 1\n")
    os.chmod(src / "locked.py", 0)
    files = [(name, 0, 0) for name in ("a.py", "locked.py", "gone.py")]
    task = BatchTask(batch_id=1, attempt=0, source=str(src), staging=str(tmp_path / "s1"), files=files)
    outcome = process_batch(task)
    expected = [[s.st_ctime_ns, s.st_ino, s.st_mode] for s in (os.stat(src / "a.py"), os.stat(src / "locked.py"))]
    assert outcome.stats == [*expected, [0, 0, 0]]  # a file that cannot be opened is still stat'ed
    assert outcome.started_at <= outcome.ended_at
    forced = BatchTask(batch_id=2, attempt=0, source=str(src), staging=str(tmp_path / "s2"), files=files[:1],
                       forced_status="too_large", forced_message="big")
    assert process_batch(forced).stats == expected[:1]  # not read, stat'ed all the same
