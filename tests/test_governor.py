"""The memory governor, end to end: the budget holds for the whole process tree, sampled from
outside; files the budget cannot hold get `too_large`; a worker that keeps memory is recycled.

Generated modules of many small functions need about 265 bytes of `ast` per source byte, so a
1 MB module takes ~265 MB to parse (measured in the worker; the run's --json shows it).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import psutil
import pytest

from helpers import cli_in_process, read_table
from treepeak import generated_module
from treepeak import run_sampled as run_tree_sampled

MB = 1_000_000
AST_BYTES_PER_SOURCE_BYTE = 265  # measured for treepeak.generated_module()


def run_sampled(*args) -> tuple[subprocess.CompletedProcess, int]:
    """`snakebatch ARGS` with the RSS of its whole process tree summed every 50 ms; (proc, peak)."""
    return run_tree_sampled(list(args), timeout=600)


def small_files(root, n: int) -> None:
    pkg = root / "pkg"
    pkg.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (pkg / f"mod_{i:03d}.py").write_text(
            f'"""Module {i}."""\nimport os\nfrom . import sibling\n\n\nclass C{i}:\n    def m(self, x):\n'
            f"        return x * {i}\n\n\ndef f(a, b=2):\n    return a + b\n")
        (pkg / f"notes_{i:03d}.txt").write_text(f"line {i}\n" * 20)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> int:
    """The tree's RSS with nothing big to parse (coordinator, forkserver, two workers), sampled
    (in the setup of a serial test: only those use it)."""
    root = tmp_path_factory.mktemp("baseline")
    small_files(root / "src", 150)
    proc, peak = run_sampled("run", root / "src", "-o", root / "out", "-j", "2", "--batch-bytes", "16KB")
    assert proc.returncode == 0, proc.stderr
    return peak


def big_tree(root, n_big: int, big_size: int, n_small: int = 150, n_measured: int = 0):
    """`n_big` modules of `big_size` (sorted first: each is a batch of its own beside the first),
    then `n_measured` of 80 KB, parsed in a fraction of a second but still measured by the worker."""
    small_files(root, n_small)
    for i in range(n_big):
        (root / "pkg" / f"generated_{i}.py").write_bytes(generated_module(big_size, seed=i))
    for i in range(n_measured):
        (root / "pkg" / f"measured_{i}.py").write_bytes(generated_module(80_000, seed=n_big + i))
    return root


@pytest.mark.serial  # the process tree's peak, sampled from outside: nothing else may run beside
def test_budget_for_one_big_parse_holds_with_two_workers(tmp_path, baseline):
    # One parse fits beside the baseline, two at once would not.
    one_parse = AST_BYTES_PER_SOURCE_BYTE * MB
    budget = baseline + int(1.45 * one_parse)
    # Two big parses are what could overlap (a third took ~2 s more, held behind them); the
    # 80 KB one is measured too (>= MEASURE_MIN_BYTES in engine/worker.py).
    src = big_tree(tmp_path / "src", n_big=2, big_size=MB, n_measured=1)
    out = tmp_path / "out"
    # Small batches, so each big module is a batch of its own and two could run at once.
    proc, peak = run_sampled("run", src, "-o", out, "-j", "2", "--memory-budget", budget,
                             "--batch-bytes", "256KB", "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    table = read_table(out, "files").to_pydict()
    assert len(table["path"]) == 300 + 2 + 1
    assert set(table["status"]) == {"ok"}, (baseline, budget, summary["governor"])
    assert peak < 1.1 * budget, f"peak {peak / MB:.0f} MB, budget {budget / MB:.0f} MB"

    governor = summary["governor"]
    assert governor["held_for_big_batch"] >= 1
    python = governor["ratios"]["python"]
    # The workers measured the big parses and the 80 KB one: what they cost per source byte is
    # learned and shown.
    assert python["measured_files"] >= 3
    assert 150 < python["largest_measured"] < 500
    assert governor["peak_rss_bytes"] <= peak * 1.05


@pytest.mark.serial  # the process tree's peak, sampled from outside: nothing else may run beside
@pytest.mark.slow
def test_budget_for_one_big_parse_holds_with_eight_workers(tmp_path):
    """As with two workers, with eight, where admissions take a recent sample of the tree rather
    than one each (engine/governor.py ADMISSION_SAMPLE_AGE_S)."""
    root = tmp_path / "baseline"
    small_files(root / "src", 150)
    proc, baseline = run_sampled("run", root / "src", "-o", root / "out", "-j", "8", "--batch-bytes", "16KB")
    assert proc.returncode == 0, proc.stderr
    budget = baseline + int(1.45 * AST_BYTES_PER_SOURCE_BYTE * MB)
    src = big_tree(tmp_path / "src", n_big=3, big_size=MB)
    out = tmp_path / "out"
    proc, peak = run_sampled("run", src, "-o", out, "-j", "8", "--memory-budget", budget,
                             "--batch-bytes", "16KB", "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    governor = summary["governor"]
    assert set(read_table(out, "files").to_pydict()["status"]) == {"ok"}, (baseline, budget, governor)
    assert peak < 1.1 * budget, f"peak {peak / MB:.0f} MB, budget {budget / MB:.0f} MB"
    assert governor["held_for_big_batch"] >= 1
    assert governor["admission_samples"] < summary["batches_this_run"] / 2, governor["admission_samples"]


def test_before_any_worker_reported_too_large_prices_workers_at_the_least_measured_rest():
    """`too_large` is final, so before a worker has reported its rest RSS it prices workers at
    LEAST_WORKER_RSS, not at the admission's cautious prior."""
    from snakebatch.engine.governor import LEAST_WORKER_RSS, PRIOR_WORKER_RSS, MemoryGovernor

    workers, coordinator = 8, 150 * MB
    one_parse = AST_BYTES_PER_SOURCE_BYTE * MB
    # Fits with the workers at their least, not with them at the prior.
    budget = coordinator + workers * LEAST_WORKER_RSS + int(1.1 * one_parse)
    assert budget < coordinator + workers * PRIOR_WORKER_RSS + one_parse
    governor = MemoryGovernor(budget=budget, workers=workers)
    governor.rss = coordinator  # sampled before the pool started: no worker yet
    files = [("pkg/big.py", MB, 0), ("pkg/huge.py", 2 * MB, 0)]
    found = governor.too_large(files)
    assert list(found) == [1], found  # the 1 MB module fits; twice that does not
    assert governor.baseline() == coordinator + workers * PRIOR_WORKER_RSS  # admissions stay cautious


def test_admission_right_after_the_first_submission_counts_the_pool_it_started():
    """The first submission starts the pool: a forkserver with the worker module preloaded, a
    resource tracker, a worker. The admission that follows at once must count them (in a run
    they are ~123 MB; missed, two 1 MB parses were let start together past the budget)."""
    from snakebatch.engine.governor import MemoryGovernor
    from snakebatch.executors.local import LocalExecutor

    executor = LocalExecutor(2)
    governor = MemoryGovernor(budget=100 * 10**9, workers=2)
    governor.attach(executor)
    governor.start()
    try:
        own = psutil.Process().memory_info().rss
        running = executor.submit(time.sleep, 0.2)
        governor.admit(MB, MB, in_flight=1)
        workers = set(executor.worker_pids())
        assert workers, "the submission started no worker"
        helpers = sum(p.memory_info().rss for p in psutil.Process().children(recursive=True) if p.pid not in workers)
        assert helpers > 20 * MB  # the forkserver alone imports pyarrow with the worker module
        beside_workers = governor.last_baseline - governor.workers * governor.worker_rest_rss()
        assert beside_workers >= own + 0.8 * helpers, (beside_workers / MB, own / MB, helpers / MB)
        running.result(timeout=30)
    finally:
        governor.stop()
        executor.shutdown()


class NamedWorkers:  # an `Executor` as the governor sees it: which processes are its workers
    memory_limit = None

    def __init__(self, workers: int):
        self.workers = workers
        self.pids: list[int] = []

    def worker_pids(self) -> list[int]:
        return list(self.pids)

    def memory_rss(self) -> None:
        return None


HOLDS_80_MB = "import sys, time; b = bytearray(80 * 10**6); b[::4096] = b'x' * len(b[::4096]); print(1, flush=True); time.sleep(60)"


@pytest.mark.serial  # admissions counted against elapsed time
def test_many_workers_admit_on_a_recent_sample_and_sample_a_new_pool_at_once():
    """With many workers a sample (~40 us a process) per admission was a sample per batch: an
    admission now takes one at most ADMISSION_SAMPLE_AGE_S old. A pool started since the last
    sample (its forkserver and tracker are outside the model) is still sampled before the next
    admission decides, and with few workers every admission samples."""
    from snakebatch.engine.governor import ADMISSION_SAMPLE_AGE_S, MemoryGovernor

    executor = NamedWorkers(16)
    governor = MemoryGovernor(budget=100 * 10**9, workers=16)
    governor.attach(executor)
    started = time.monotonic()
    for _ in range(200):
        governor.admit(MB, MB, in_flight=1)
    allowed = (time.monotonic() - started) / ADMISSION_SAMPLE_AGE_S + 1
    assert governor.admission_samples <= allowed < 100, (governor.admission_samples, allowed)

    pool = subprocess.Popen([sys.executable, "-c", HOLDS_80_MB], stdout=subprocess.PIPE)
    try:
        assert pool.stdout.readline().strip() == b"1"
        before, samples = governor.rss, governor.admission_samples
        executor.pids = [pool.pid]  # a new pool named its first worker
        governor.admit(MB, MB, in_flight=1)
        assert governor.admission_samples == samples + 1
        assert governor.rss - before > 70 * MB and governor.workers_rss > 70 * MB
        time.sleep(ADMISSION_SAMPLE_AGE_S + 0.05)  # older than allowed: sampled again
        governor.admit(MB, MB, in_flight=1)
        assert governor.admission_samples == samples + 2
    finally:
        pool.kill()
        pool.wait()

    few = MemoryGovernor(budget=100 * 10**9, workers=2)
    few.attach(NamedWorkers(2))
    for _ in range(20):
        few.admit(MB, MB, in_flight=1)
    assert few.admission_samples == 20


@pytest.mark.serial  # the process tree's peak, sampled from outside: nothing else may run beside
@pytest.mark.slow
def test_without_a_budget_the_same_job_parses_big_files_together(tmp_path, baseline):
    """The premise of the test above: with no budget, two big parses overlap and exceed it."""
    budget = baseline + int(1.45 * AST_BYTES_PER_SOURCE_BYTE * MB)
    src = big_tree(tmp_path / "src", n_big=3, big_size=MB)
    proc, peak = run_sampled("run", src, "-o", tmp_path / "out", "-j", "2", "--memory-budget", "100GB",
                             "--batch-bytes", "256KB", "--json")
    assert proc.returncode == 0, proc.stderr
    assert peak > 1.1 * budget


@pytest.mark.serial  # the process tree's peak, sampled from outside: nothing else may run beside
def test_file_too_large_for_the_budget_is_not_parsed(tmp_path, baseline):
    # A 1 MB module needs ~265 MB. Since the governor counts the whole tree once the pool runs
    # (forkserver and tracker included), 100 MB beside the sampled baseline (a peak) leaves room
    # for the workers' RSS to drift as they parse (50 MB did not, 1 run in 10), and is still well
    # under that parse even for the first batch, priced before the pool exists.
    budget = baseline + 100 * MB
    src = big_tree(tmp_path / "src", n_big=1, big_size=MB, n_small=60)
    out = tmp_path / "out"
    proc, peak = run_sampled("run", src, "-o", out, "-j", "2", "--memory-budget", budget, "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["status_counts"] == {"ok": 120, "too_large": 1}
    table = read_table(out, "files").to_pylist()
    (row,) = [r for r in table if r["status"] != "ok"]
    assert row["path"] == "pkg/generated_0.py" and row["status"] == "too_large"
    assert row["content_hash"] is None  # never read
    message = row["error_message"]
    assert "estimated" in message and "--memory-budget" in message
    # The message names the estimate (prior: 250 bytes per byte) and the budget, in MB.
    assert f"{MB * 250 / MB:.1f} MB" in message
    assert f"{budget / MB:.1f} MB" in message
    assert summary["governor"]["too_large_files"] == 1
    assert peak < budget + 50 * MB


def test_worker_that_keeps_memory_is_recycled(tmp_path):
    src = tmp_path / "src"
    small_files(src, 60)
    (src / "pkg" / "a_hoard.bad").write_text("hoard\n")  # sorts first: ~20 small batches follow
    out = tmp_path / "out"
    # One worker: batches finish in the order they were submitted, whatever the machine's load.
    # In process: the pool's worker is what is recycled, a real process here too (~0.6 CPU-s saved).
    proc = cli_in_process("run", src, "-o", out, "-j", "1", "--parser", "tests.misbehaving_parser:hoarding_parser",
                          "--memory-budget", "2GB", "--batch-bytes", "1KB", "--json", check_codes=(0,))
    summary = json.loads(proc.stdout)
    assert summary["status_counts"] == {"ok": 121}
    assert summary["governor"]["recycles"] == 1
    decisions = [d["decision"] for d in summary["governor"]["decisions"]]
    assert decisions.index("recycle_wanted") < decisions.index("recycled_pool")

    batches = json.loads((out / "_snakebatch" / "stats.json").read_text())["batches"]
    # Of the batches of files: the job's empty first part is written by the coordinator, here
    # this process, whose RSS passes 160 MiB once other in-process runs came before.
    hoarder = next(i for i, b in enumerate(batches) if b["files"] and b["worker_rss_bytes"] > 160 * 2**20)
    hoarder_pid = batches[hoarder]["worker_pid"]
    after = batches[hoarder + 2:]  # the batch queued behind it was submitted before the recycle
    assert after, f"no batches after the recycle: {[(b['worker_pid'], b['worker_rss_bytes']) for b in batches]}"
    assert all(b["worker_pid"] != hoarder_pid for b in after)
    assert all(b["worker_rss_bytes"] < 160 * 2**20 for b in after)
