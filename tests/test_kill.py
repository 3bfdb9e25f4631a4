"""SIGKILL of the whole process group (coordinator and workers) at many moments of a real run,
resuming after each; SIGINT and SIGTERM to the group; `status --json` at every stage.

The runs parse with tests/logging_parser.py, which logs every parse (to prove that no file is
parsed again once its batch committed) and sleeps a little per file to stretch the run. Kills
land at fixed times (right at the start, during start-up) and at moments taken from the output
folder itself: right after a ledger line appears (between the ledger append and the renames of
that commit) and right after a part appears (between the renames of one commit).
"""

from __future__ import annotations

import json
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import duckdb
import pytest

from helpers import PARSE_SETTINGS as SETTINGS_KEY
from helpers import cli_in_process, run_cli
from logging_parser import SLEEP as SLEEP_KEY
from resume_helpers import (
    LOGGING_PARSER,
    Run,
    assert_same_output,
    committed_paths,
    copy_stdlib,
    env,
    holds_job,
    parse_log,
    read_parts,
    run_args,
    snapshot,
)
from snakebatch.store.ledger import Ledger

SLEEP_PER_FILE = 0.003
OPTIONS = ("--parser", LOGGING_PARSER, "--batch-bytes", "32KB", "-j", "2")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    # ~900 KB: 27 batches of 32 KB, many more than any kill point needs (700 files took ~2.3x
    # as long in each run and resume).
    assert copy_stdlib(root, 300) == 300
    return root


@pytest.fixture(scope="module")
def baseline(corpus, tmp_path_factory):
    """An uninterrupted run of the same job: its output and summary. In this process and
    unhurried: what it gives does not depend on either (~1 s of wall and start-up saved)."""
    out = tmp_path_factory.mktemp("baseline") / "out"
    summary = json.loads(cli_in_process(*run_args(corpus, out, *OPTIONS, "--json"), check_codes=(0,)).stdout)
    assert summary["retries"] == 0  # a clean run: every file parsed once
    return {"snapshot": snapshot(out), "summary": summary}


def startup_of(corpus: Path, work: Path) -> float:
    """Seconds from the start of an uninterrupted CLI run of the job to its engine's start."""
    run = Run(run_args(corpus, work / "out", *OPTIONS, "--json"), env(sleep=SLEEP_PER_FILE), work / "logs")
    assert run.wait() == 0, run.stderr
    return max(time.monotonic() - run.started - json.loads(run.stdout)["elapsed_s"], 0.1)


def status_json(out: Path) -> dict:
    proc = run_cli("status", out, "--json", check_codes=(0,))
    return json.loads(proc.stdout)


def ledger_paths(out: Path) -> set[str]:
    entries, _ = Ledger(str(out)).read()
    return {path for entry in entries for path in entry.paths}


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as fh:
            return fh.read().count(b"\n")
    except FileNotFoundError:
        return 0


def _count_parts(out: Path) -> int:
    try:
        return sum(1 for name in os.listdir(out / "files") if name.endswith(".parquet"))
    except FileNotFoundError:
        return 0


def kill_when(run: Run, out: Path, trigger: tuple) -> int:
    """SIGKILL the run's group when `trigger` happens; its exit code (0 if it finished first).

    ("after", s): s seconds after the start. ("ledger", n): as soon as the ledger has n lines
    (at least one more than now). ("parts", n, s): s seconds after `files` has n parts (at least
    one more than now)."""
    kind = trigger[0]
    ledger = out / "_snakebatch" / "ledger.jsonl"
    if kind == "after":
        deadline = run.started + trigger[1]
        while time.monotonic() < deadline and run.proc.poll() is None:
            time.sleep(0.002)
    else:
        count = (lambda: _count_lines(ledger)) if kind == "ledger" else (lambda: _count_parts(out))
        target = max(trigger[1], count() + 1)
        while count() < target and run.proc.poll() is None:
            time.sleep(0.001)
        if kind == "parts" and trigger[2]:
            time.sleep(trigger[2])
    return run.kill_group()


def check_interrupted(out: Path, baseline_files: int) -> set[str]:
    """What a reader and `status` see between a kill and its resume; returns the committed paths."""
    read_parts(out)  # no torn part, no file twice
    in_tables = committed_paths(out)
    in_ledger = ledger_paths(out)
    # The ledger decides; a kill between its append and the renames leaves parts to roll forward.
    assert in_tables <= in_ledger
    if holds_job(out):
        status = status_json(out)
        assert status["state"] == "incomplete"
        assert status["files_done"] == len(in_ledger) <= baseline_files
        assert sum(status["status_counts"].values()) == status["files_done"]
        assert "--resume" in status["resume_command"] and LOGGING_PARSER in status["resume_command"]
    else:
        assert run_cli("status", out).returncode == 2
    if in_tables != in_ledger:
        print("  killed inside a commit: parts to roll forward")
    return in_tables | in_ledger


# About a minute. The default run keeps real SIGKILLs of the group and their resumes in
# test_compaction.py::test_sigkill_during_compaction_then_resume and
# test_status.py::test_status_adds_up_every_run_even_a_killed_one, and each cut-off commit in
# test_resume.py::test_recovery_finishes_or_undoes_each_cut_off_commit.
@pytest.mark.slow
def test_sigkill_at_many_moments_then_resume(corpus, baseline, tmp_path):
    out, log = tmp_path / "out", tmp_path / "parses.log"
    environ = env(log=log, sleep=SLEEP_PER_FILE)
    startup, batches = startup_of(corpus, tmp_path / "timed"), baseline["summary"]["batches_this_run"]
    rng = random.Random(1234)
    triggers = [
        ("after", 0.0),          # right at the start
        ("after", 0.25),         # importing, before the job is recorded
        ("after", startup),      # starting the pool, discovering
        ("after", startup),      # the same moment of a resume: recovering, skipping committed files
    ]
    # Then inside commits, spread over the job: at these fractions of the uninterrupted run's
    # batches, alternately right after a ledger line and right after (or soon after) a part.
    for number, fraction in enumerate((0.03, 0.1, 0.2, 0.3, 0.45, 0.6, 0.7, 0.8)):
        target = max(1, round(fraction * batches))
        if number % 2:
            triggers.append(("parts", target, rng.choice([0.0, rng.uniform(0, 0.05)])))
        else:
            triggers.append(("ledger", target))
    kills, seen = [], []  # (committed paths, parse-log length) at each kill
    for trigger in triggers:
        run = Run(run_args(corpus, out, *OPTIONS, resume=holds_job(out)), environ, tmp_path / "logs")
        code = kill_when(run, out, trigger)
        if code == 0:
            break  # finished before this moment: nothing left to kill
        assert code == -signal.SIGKILL, (trigger, code, run.stderr)
        time.sleep(0.05)
        kills.append(trigger)
        seen.append((check_interrupted(out, len(baseline["snapshot"]["files"])), len(parse_log(log))))
        print(trigger, "->", len(seen[-1][0]), "committed")
    assert len(kills) >= 10, f"only {len(kills)} kills landed before the job finished: {kills}"

    final = Run(run_args(corpus, out, *OPTIONS, resume=holds_job(out)), environ, tmp_path / "logs")
    assert final.wait() == 0, final.stderr
    print(final.stdout)
    assert_same_output(snapshot(out), baseline["snapshot"])
    status = status_json(out)
    assert status["state"] == "complete" and status["resume_command"] is None
    assert status["files_done"] == baseline["summary"]["files"]
    assert status["status_counts"] == baseline["summary"]["status_counts"]
    con = duckdb.connect()
    total, distinct = con.execute(
        f"select count(*), count(distinct path) from read_parquet('{out}/files/*.parquet')").fetchall()[0]
    assert total == distinct == baseline["summary"]["files"]

    # Exactly once: a file committed before a kill is never parsed after it.
    parses = parse_log(log)
    for committed, offset in seen:
        again = committed & set(parses[offset:])
        assert not again, f"parsed again after their batch committed: {sorted(again)[:5]}"
    counts = Counter(parses)
    assert set(counts) == set(baseline["snapshot"]["files"])
    assert max(counts.values()) - 1 <= len(kills)


def _wait_for_parts(run: Run, out: Path, parts: int) -> None:
    """Until `parts` batches of files are committed (after the job's empty first part)."""
    while _count_parts(out) < parts + 1:
        assert run.proc.poll() is None, f"the run ended before it was interrupted\n{run.stderr}"
        time.sleep(0.005)


def _resume_as_printed(stderr: str, environ: dict) -> None:
    """Run the resume command exactly as the stopped run printed it, to its successful end. In
    this process: what is tested is the command and the resume, not a process (~0.6 CPU-s saved)."""
    lines = [line for line in stderr.splitlines() if line.startswith("snakebatch: resume with: ")]
    assert lines, stderr
    words = shlex.split(lines[-1].split(": ", 2)[2])
    assert words[:2] == ["snakebatch", "run"] and "--resume" in words
    cli_in_process(*words[1:], env=environ, check_codes=(0,))


@pytest.mark.parametrize("signum", [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)],
                         ids=["SIGINT", "SIGTERM"])
def test_signal_to_the_group_stops_with_130_and_resumes(signum, corpus, baseline, tmp_path):
    out = tmp_path / "out"
    environ = env(sleep=SLEEP_PER_FILE)
    run = Run(run_args(corpus, out, *OPTIONS), environ, tmp_path / "logs")
    _wait_for_parts(run, out, 5)
    status = status_json(out)
    assert status["state"] == "running" and status["running_pid"] == str(run.proc.pid)
    run.signal_group(signum)  # as a terminal's Ctrl-C reaches every process of the group
    assert run.wait(timeout=120) == 130, run.stderr
    assert f"interrupted by {signal.Signals(signum).name}" in run.stderr
    committed = committed_paths(out)
    assert 0 < len(committed) < len(baseline["snapshot"]["files"])
    assert not os.listdir(out / "_snakebatch" / "staging")
    status = status_json(out)
    assert status["state"] == "incomplete" and status["files_done"] == len(committed)

    _resume_as_printed(run.stderr, env())  # unhurried: nothing stops it
    assert_same_output(snapshot(out), baseline["snapshot"])
    assert status_json(out)["state"] == "complete"


def test_second_sigint_stops_at_once_and_stays_resumable(corpus, baseline, tmp_path):
    out = tmp_path / "out"
    # The workers read the logging parser's settings from a file at each parse: quick parses up
    # to the first commit, then 2 s each, so after the first Ctrl-C the run would wait many
    # seconds for the batches in flight; the second one stops it without them. (Batches slow
    # from the start took ~3 s to reach the first commit; at SLEEP_PER_FILE a loaded machine
    # finished every batch before the switch: 20 ms a file leaves ~3 s of them after it.)
    settings = tmp_path / "parse-settings.json"
    settings.write_text(json.dumps({SLEEP_KEY: 0.02}))
    environ = env(**{SETTINGS_KEY: str(settings)})
    run = Run(run_args(corpus, out, *OPTIONS), environ, tmp_path / "logs")
    _wait_for_parts(run, out, 1)
    slow = settings.with_suffix(".slow")
    slow.write_text(json.dumps({SLEEP_KEY: 2.0}))
    slow.replace(settings)
    run.signal_group(signal.SIGINT)
    time.sleep(0.3)
    assert run.proc.poll() is None  # still finishing the batches in flight
    run.signal_group(signal.SIGINT)
    assert run.wait(timeout=60) == 130, run.stderr
    assert "interrupted by SIGINT; a second signal stopped it at once" in run.stderr
    assert not os.listdir(out / "_snakebatch" / "staging")
    read_parts(out)
    _resume_as_printed(run.stderr, env())  # unhurried: nothing stops it
    assert_same_output(snapshot(out), baseline["snapshot"])


def test_sigkill_of_the_coordinator_alone_ends_every_process_it_started(corpus, baseline, tmp_path):
    """Not the group: only the coordinator dies, as with `kill -9 PID` or the OOM killer. Its
    workers, the forkserver and the resource tracker must not live on (and write staging folders)."""
    import psutil

    out = tmp_path / "out"
    environ = env(sleep=SLEEP_PER_FILE)
    run = Run(run_args(corpus, out, *OPTIONS), environ, tmp_path / "logs")
    _wait_for_parts(run, out, 3)
    children = psutil.Process(run.proc.pid).children(recursive=True)
    assert len(children) >= 3  # the forkserver, two workers (and the resource tracker)
    os.kill(run.proc.pid, signal.SIGKILL)
    run.proc.wait(timeout=10)
    killed = time.monotonic()

    def running(process) -> bool:  # a zombie has ended; reaping it is up to PID 1 here
        try:
            return process.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    alive = children
    while alive and time.monotonic() < killed + 3:
        time.sleep(0.02)
        alive = [process for process in alive if running(process)]
    assert not alive, [(p.pid, " ".join(p.cmdline())[:80]) for p in alive]
    print(f"  every child gone {time.monotonic() - killed:.2f}s after the coordinator")

    before = Ledger(str(out)).read()[0]
    cli_in_process(*run_args(corpus, out, *OPTIONS, resume=True), env=env(), check_codes=(0,))
    assert_same_output(snapshot(out), baseline["snapshot"])
    # Each run stages under its own names: none of the resumed run's folders was the killed run's.
    after = Ledger(str(out)).read()[0][len(before):]
    assert after and not {e.staging for e in after} & {f"staging/b{e.batch_id:08d}.0" for e in after}
    assert len({e.staging.rsplit(".", 1)[1] for e in before} | {e.staging.rsplit(".", 1)[1] for e in after}) == 2
    assert not os.listdir(out / "_snakebatch" / "staging")  # the killed run's folders were removed


# A run whose batches all finish at once (an in-process executor of 4 "workers": each batch runs
# as it is submitted, so each wait finds up to 8 finished), SIGKILLed by its own rename of a
# staged part: after `kill_at` such renames, having printed how many lines the ledger holds then.
GROUP_KILL = """
import os, signal, sys
from snakebatch.config import build_config
from snakebatch.engine.coordinator import Coordinator
from snakebatch.engine.sinks import OutputSink
from snakebatch.executors.inprocess import InProcessExecutor

source, out, parser, kill_at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

class AllAtOnce(InProcessExecutor):
    workers = 4

renames = 0
real_rename = os.rename

def rename(src, dst):
    global renames
    if os.sep + "staging" + os.sep in os.fsdecode(src):
        if renames == kill_at:
            with open(os.path.join(out, "_snakebatch", "ledger.jsonl"), "rb") as fh:
                print(fh.read().count(b"\\n"), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        renames += 1
    real_rename(src, dst)

os.rename = rename
config = build_config(source, out, use_config_file=False, parsers=[parser], batch_bytes="32KB")
coordinator = Coordinator(config, OutputSink(config), executor_factory=lambda config: AllAtOnce())
for _ in coordinator.run():
    pass
"""


# A commit is 3 renames (one part per table); the job's empty first part is committed alone
# (renames 0-2), then the first group of 8 batches (renames 3-26).
@pytest.mark.parametrize("kill_at", [3, pytest.param(13, marks=pytest.mark.slow), pytest.param(26, marks=pytest.mark.slow)])
def test_sigkill_inside_a_group_commit_then_resume(kill_at, corpus, baseline, tmp_path):
    """Batches that finished together are committed by one ledger write: all 8 lines are there
    before the first of their renames. A SIGKILL after that write (before any rename, between two
    batches' renames, before the last) then --resume gives the tables of an uninterrupted run."""
    out, log = tmp_path / "out", tmp_path / "parses.log"
    proc = subprocess.run([sys.executable, "-c", GROUP_KILL, corpus, out, LOGGING_PARSER, str(kill_at)],
                          capture_output=True, text=True, env=env(), timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert int(proc.stdout) == 1 + 8  # the first part's line and the whole group's, in one write
    committed = check_interrupted(out, len(baseline["snapshot"]["files"]))
    assert len(Ledger(str(out)).read()[0]) == 9 and committed == ledger_paths(out)
    resumed = cli_in_process(*run_args(corpus, out, *OPTIONS, "--json", resume=True),
                             env=env(log=log), check_codes=(0,))
    unfinished = 8 - (kill_at - 3) // 3  # batches of the group with a part still in staging
    assert json.loads(resumed.stdout)["recovery"] == f"{unfinished} interrupted commit(s) finished"
    assert_same_output(snapshot(out), baseline["snapshot"])
    assert not committed & set(parse_log(log))  # exactly once: nothing of the group parsed again


@pytest.mark.slow
def test_done_when_four_sigkills_and_a_sigint_on_6000_files(tmp_path):
    """The issue's done-when check: a 6,000-file run, killed four times and interrupted once at
    arbitrary moments, each followed by --resume, ends equal row for row to an uninterrupted run;
    `status --json` describes the job correctly at every stage."""
    corpus = tmp_path / "corpus"
    assert copy_stdlib(corpus, 6000, max_size=30_000, copies=5) == 6000
    options = ("-j", "2")
    environ = env()
    base = Run(run_args(corpus, tmp_path / "base", *options, "--json"), environ, tmp_path / "logs")
    assert base.wait() == 0, base.stderr
    wall = time.monotonic() - base.started
    want = snapshot(tmp_path / "base")
    assert len(want["files"]) == 6000

    out = tmp_path / "out"
    rng = random.Random(6000)
    stages = ["kill", "kill", "int", "kill", "kill"]
    for stage in stages:
        run = Run(run_args(corpus, out, *options, resume=holds_job(out)), environ, tmp_path / "logs")
        time.sleep(rng.uniform(0.08, 0.18) * wall)  # five stops, all before the job can end
        if run.proc.poll() is None and holds_job(out):
            status = status_json(out)
            assert status["state"] == "running" and status["running_pid"] == str(run.proc.pid)
        if stage == "kill":
            code = run.kill_group()
            assert code == -signal.SIGKILL, run.stderr
        else:
            run.signal_group(signal.SIGINT)
            assert run.wait() == 130, run.stderr
        in_ledger = ledger_paths(out)
        assert committed_paths(out) <= in_ledger
        status = status_json(out)
        assert status["state"] == "incomplete" and status["files_done"] == len(in_ledger) < 6000
        print(stage, "at", status["files_done"], "files")
    final = Run(run_args(corpus, out, *options, resume=True), environ, tmp_path / "logs")
    assert final.wait() == 0, final.stderr
    assert_same_output(snapshot(out), want)
    status = status_json(out)
    assert status["state"] == "complete" and status["files_done"] == 6000
    assert status["status_counts"] == json.loads(base.stdout)["status_counts"]
