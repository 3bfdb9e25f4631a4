"""The memory governor: keeps the RSS of the whole process tree under `--memory-budget`.

Owns: sampling memory (psutil, several times a second in a thread, and afresh at an admission
unless many workers run: then the thread's sample when it is recent), the model of what a batch
will cost (bytes of memory per byte of source, learned per parser from the workers'
measurements), the admission of each batch (in budget? alone?), the batch size target, the
number of batches in flight, when the pool should be recycled, which files are too large for the
budget, and the record of its decisions. Must not touch: executing or committing batches; the
coordinator asks it before each submission and tells it the outcome of each batch a worker ran.

The model: the tree costs a baseline (the coordinator and its helpers, plus each worker at
rest) and each batch in flight adds its predicted peak: its largest file's parse (files of a
batch are parsed one after another, each tree freed before the next) plus the rows it builds.
A batch is admitted when the larger of (baseline + what is in flight) and the sampled RSS, plus
its own peak, fits the budget; both come from a sample no older than ADMISSION_SAMPLE_AGE_S with
many workers (below), taken afresh otherwise and whenever the submission just before started a
pool (its forkserver alone measured 110 MB). A batch predicted to need more than one worker's
share of the free budget runs only once nothing else is in flight; batches that fit beside it
may follow.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections import deque

import psutil

from ..executors.base import Executor

MIN_BATCH_BYTES = 256 * 1024
DEFAULT_BATCH_BYTES = 4 * 1024 * 1024
MAX_BATCH_BYTES = 16 * 1024 * 1024
SAMPLE_INTERVAL_S = 0.1
TREE_REFRESH_S = 1.0
# A sample reads each process of the tree (1.0 ms of CPU for 65 processes, 2.6 ms under cProfile
# at -j 32), so one per admission cost the coordinator's loop a sample per batch (issue 17: 16,081
# memory_info calls for 480 batches at -j 32; with this and group commits the loop's CPU fell 19%
# on 200k files at -j 32 and 64, benchmarks/RESULTS.md session 5). From MANY_WORKERS on, an
# admission takes the sampling thread's sample when it is at most ADMISSION_SAMPLE_AGE_S old (the
# thread takes one each SAMPLE_INTERVAL_S; the rest is slack for a late thread on a loaded
# machine). What can grow
# unseen in that time is covered by the model, not the sample: the batches in flight are reserved
# at their predicted peaks, and every worker counts at its rest RSS in the baseline even before
# it has started. What the model does not hold is a new pool's forkserver and resource tracker
# (110-123 MB), so an admission after a submission that started a pool samples afresh.
MANY_WORKERS = 8
ADMISSION_SAMPLE_AGE_S = 0.15

# Memory per source byte before anything is measured. Python: `ast` of dense generated code
# (many small functions) measured 266x; 250x is the calibration, and it stays a floor
# because a repository's next file can always be denser than the ones seen so far.
PRIOR_RATIO = {"python": 250.0, "text": 3.0}
FLOOR_RATIO = {"python": 250.0}
DEFAULT_PRIOR_RATIO = 100.0  # a plugin or tree-sitter parser, until its first measurement
# Files below this size are not routed to a parser for their estimate: each costs at most
# SMALL_FILE_BYTES times the largest ratio known, which is small next to any budget.
SMALL_FILE_BYTES = 64 * 1024
# The rows, Arrow tables and Parquet buffers a batch accumulates, per source byte.
ROWS_RATIO = 4.0
# A worker at rest before one has reported (measured: 45 MB after small files, 73 MB after the
# standard library); too high a guess would call files too large that fit.
PRIOR_WORKER_RSS = 64 * 1024 * 1024
# The least a worker at rest was measured at (47 MB after small files, the parser router built in
# the forkserver). `too_large` prices workers that have not reported yet at this, not at the prior:
# its verdict is final (the file is never parsed), while an admission that guessed high only waits.
# With the prior, 8 workers' guess was 136 MB over the truth and gave 1 MB modules that fit beside
# the measured tree `too_large`.
LEAST_WORKER_RSS = 44 * 1024 * 1024
RATIO_WINDOW = 256  # a ratio is the largest of this many recent measurements


def minimum_budget(workers: int) -> tuple[int, int]:
    """(the least budget a local run can keep, this process's RSS now): the coordinator as
    measured, the forkserver and each worker at rest (PRIOR_WORKER_RSS until one reports), and
    the parse of one small file (64 KB at the `python` prior: 16 MB). Below it, every file but
    the smallest would get `too_large` before a worker even started."""
    coordinator = psutil.Process().memory_info().rss
    return coordinator + (workers + 1) * PRIOR_WORKER_RSS + int(SMALL_FILE_BYTES * PRIOR_RATIO["python"]), coordinator


def low_budget(budget: int, workers: int) -> str | None:
    """Why `budget` is too low for `workers` local workers to parse anything, or None."""
    minimum, coordinator = minimum_budget(workers)
    if budget >= minimum:
        return None
    return (f"{human(budget)} is below the {human(minimum)} a run with {workers} worker(s) needs: "
            f"this process ({human(coordinator)}, measured now), the forkserver and each worker at rest "
            f"(about {human(PRIOR_WORKER_RSS)} each) and the parse of one small file; give at least "
            f"{human(minimum)}, or fewer workers (-j)")


def human(n: float) -> str:
    """Bytes for a person, in decimal units: `512 B`, `4.2 MB`, `1.5 TB` (also the CLI's)."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


class MemoryGovernor:
    """Batch size, admission and recycling from a learned model checked against sampled memory."""

    def __init__(self, budget: int, workers: int, batch_bytes: int | None = None,
                 parsers: tuple = ()):
        self.budget = budget
        self.workers = workers
        self.fixed_batch_bytes = batch_bytes
        self.batch_bytes = batch_bytes or DEFAULT_BATCH_BYTES
        self.parser_specs = tuple(parsers)
        self.rss = 0
        self.peak_rss = 0
        self.workers_rss = 0  # of the processes the executor names as its workers
        self.decisions: list[dict] = []
        self.n_decisions = 0
        self.in_flight_limit = 2 * workers
        self.last_baseline = 0
        self.recycle_wanted = False
        self.recycles = 0
        self.held_alone = 0
        self.held_budget = 0
        self.too_large_files = 0
        self.note = ""
        self._samples: dict[str, deque] = {}
        self._ratios: dict[str, float] = {}
        self._largest: float | None = None
        self._worker_rest: deque[int] = deque(maxlen=32)
        self._router = None
        self._worker_pids = lambda: ()
        self._external_rss = None
        self._root = psutil.Process(os.getpid())
        self._processes: dict[int, psutil.Process] = {}
        self._tree_listed = float("-inf")
        self._sampled_at = float("-inf")
        self._sampled_workers: frozenset[int] = frozenset()  # the executor's workers in the last sample
        self.admission_samples = 0  # samples taken for an admission (the thread's are not counted)
        self._listed_workers: frozenset[int] = frozenset()
        self._stop = threading.Event()
        self._sampling = threading.Lock()  # the sampling thread and admissions both sample
        self._thread: threading.Thread | None = None
        self._holding: str | None = None
        self.peak_remote_rss = 0
        self.sample()

    # -- sampling ------------------------------------------------------------------------------

    def attach(self, executor: Executor) -> None:
        """Learn which processes are the executor's workers (and any it runs outside this tree)."""
        self._worker_pids = executor.worker_pids
        self._external_rss = executor.memory_rss
        # A remote cluster sets the worker count, and its workers' memory limits are the budget.
        self.workers = executor.workers
        self.budget = executor.memory_limit or self.budget

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="snakebatch-governor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL_S):
            self.sample()

    def _tree(self, worker_pids: set) -> list:
        """This process and its descendants. Listing descendants scans every process of the
        machine (~5 ms), so the list is refreshed once a second, and at once when the executor
        names a worker it does not hold: a new pool started its forkserver and resource tracker
        with it (123 MB beside 70 MB workers, measured), and they are no workers."""
        now = time.monotonic()
        if now - self._tree_listed >= TREE_REFRESH_S or not worker_pids <= self._listed_workers:
            try:
                self._processes = {p.pid: p for p in self._root.children(recursive=True)}
            except psutil.Error:
                self._processes = {}
            self._tree_listed = now
            self._listed_workers = frozenset(worker_pids)
        for pid in worker_pids - self._processes.keys():
            try:
                self._processes[pid] = psutil.Process(pid)
            except psutil.Error:
                pass
        return [self._root, *self._processes.values()]

    def sample(self) -> int:
        """The RSS of this process and all its descendants (workers, forkserver), now."""
        with self._sampling:
            return self._sample()

    def _admission_sample(self) -> None:
        """Make the sample an admission decides on current enough (see ADMISSION_SAMPLE_AGE_S)."""
        with self._sampling:
            if self.workers >= MANY_WORKERS and time.monotonic() - self._sampled_at <= ADMISSION_SAMPLE_AGE_S:
                named = set(self._worker_pids())
                if not named or named & self._sampled_workers:
                    return  # no pool was started since the sample
            self.admission_samples += 1
            self._sample()

    def _sample(self) -> int:
        total = workers = 0
        worker_pids = set(self._worker_pids())
        self._sampled_at = time.monotonic()
        for process in self._tree(worker_pids):
            try:
                rss = process.memory_info().rss
            except psutil.Error:
                self._processes.pop(process.pid, None)  # it ended since the listing
                continue
            total += rss
            if process.pid in worker_pids:
                workers += rss
        if self._external_rss is not None:
            try:
                external = int(self._external_rss() or 0)
            except Exception:  # noqa: BLE001 - a cluster that does not answer adds nothing
                external = 0
            total += external
            workers += external
            self.peak_remote_rss = max(self.peak_remote_rss, external)
        self.rss, self.workers_rss = total, workers
        self._sampled_workers = frozenset(worker_pids)
        if total > self.peak_rss:
            self.peak_rss = total
        return total

    # -- the model -----------------------------------------------------------------------------

    def record(self, what: str, **details) -> None:
        """Note a decision (the governor's own, or one the coordinator made on its advice)."""
        self.n_decisions += 1
        self.decisions.append({"t": round(time.monotonic(), 3), "decision": what, **details})
        if len(self.decisions) > 200:
            del self.decisions[:100]

    def ratio(self, parser: str) -> float:
        """Bytes of memory one byte of source costs this parser at its peak (conservative)."""
        ratio = self._ratios.get(parser)
        if ratio is None:
            seen = self._samples.get(parser)
            if not seen:
                ratio = PRIOR_RATIO.get(parser, DEFAULT_PRIOR_RATIO)
            else:
                ratio = max(max(seen), FLOOR_RATIO.get(parser, 1.0))
            self._ratios[parser] = ratio
        return ratio

    def _largest_ratio(self) -> float:
        """The largest ratio known: the bound for files not worth routing (cached: per file)."""
        if self._largest is None:
            self._largest = max(self.ratio(name) for name in (*PRIOR_RATIO, *self._samples))
        return self._largest

    def _parser_of(self, path: str) -> str:
        if self._router is None:
            from ..parsers import ParserRouter

            self._router = ParserRouter(self.parser_specs)
        return self._router.route(path).name

    def file_estimate(self, path: str, size: int) -> tuple[int, str | None]:
        """(peak bytes parsing this file may add to a worker, the parser it was costed for)."""
        if size < SMALL_FILE_BYTES:
            return int(size * self._largest_ratio()), None
        parser = self._parser_of(path)
        return int(size * self.ratio(parser)), parser

    def batch_estimate(self, files) -> int:
        """Peak bytes a batch adds to its worker: its costliest file plus the rows it builds."""
        largest = 0
        total = 0
        bound = self._largest_ratio()
        for path, size, *_ in files:
            total += size
            if size * bound > largest:  # a cheap bound first: route only the candidates
                largest = max(largest, self.file_estimate(path, size)[0])
        return largest + int(ROWS_RATIO * total)

    def worker_rest_rss(self) -> int:
        """A worker's RSS between batches (the median of recent ones)."""
        if not self._worker_rest:
            return PRIOR_WORKER_RSS
        return int(statistics.median(self._worker_rest))

    def baseline(self, least: bool = False) -> int:
        """The tree's RSS with no parse running: everything but the workers, plus each at rest
        (with `least`, LEAST_WORKER_RSS each until one has reported)."""
        rest = LEAST_WORKER_RSS if least and not self._worker_rest else self.worker_rest_rss()
        return max(0, self.rss - self.workers_rss) + self.workers * rest

    def free_budget(self) -> int:
        return self.budget - self.baseline()

    def worker_share(self) -> int:
        return self.free_budget() // self.workers

    def too_large(self, files) -> dict[int, str]:
        """The files of a batch that cannot be parsed within the budget: index -> why."""
        baseline = self.baseline(least=True)
        free = self.budget - baseline
        bound = free / (self._largest_ratio() + ROWS_RATIO)
        found = {}
        for index, (path, size, *_) in enumerate(files):
            if size <= bound:
                continue  # the cheap bound: no need to route it
            estimate, parser = self.file_estimate(path, size)
            if estimate + int(ROWS_RATIO * size) <= free:
                continue
            self.too_large_files += 1
            self.record("too_large", path=path, estimate=estimate, baseline=baseline)
            found[index] = (
                f"parsing needs an estimated {human(estimate)} ({size} bytes x {estimate / max(size, 1):.0f} for "
                f"{parser or 'its parser'}); --memory-budget {human(self.budget)} leaves about "
                f"{human(max(free, 0))} beside the {human(baseline)} the workers need at rest")
        return found

    # -- admission -----------------------------------------------------------------------------

    def max_in_flight(self) -> int:
        """Two batches per worker keep each busy while one is committed; one when memory is tight."""
        limit = self.workers if self.rss > 0.85 * self.budget else 2 * self.workers
        if limit != self.in_flight_limit:
            self.in_flight_limit = limit
            self.record("in_flight", limit=limit, rss=self.rss)
        return limit

    def may_submit(self, in_flight: int) -> bool:
        return not self.recycle_wanted and in_flight < self.max_in_flight()

    def admit(self, estimate: int, reserved: int, in_flight: int) -> bool:
        """Whether a batch predicted to add `estimate` may start beside `in_flight` batches
        predicted to add `reserved` in all."""
        self._admission_sample()
        self.last_baseline = self.baseline()
        if in_flight == 0:
            if self._holding:
                self.record("resume", after=self._holding, estimate=estimate)
                self._holding = None
            self.note = "1 big batch alone" if estimate > self.worker_share() else ""
            return True
        if estimate > self.worker_share():
            self._hold("alone", estimate)
            return False
        projected = max(self.baseline() + reserved, self.rss) + estimate
        if projected > self.budget:
            self._hold("budget", estimate, projected=projected)
            return False
        if self._holding:
            self.record("resume", after=self._holding, estimate=estimate)
            self._holding = None
        self.note = ""
        return True

    def _hold(self, why: str, estimate: int, **details) -> None:
        if self._holding != why:
            self._holding = why
            if why == "alone":
                self.held_alone += 1
                self.note = f"waiting to run a {human(estimate)} batch alone"
            else:
                self.held_budget += 1
                self.note = "holding: budget"
            self.record(f"hold_{why}", estimate=estimate, rss=self.rss, **details)

    # -- learning ------------------------------------------------------------------------------

    def target_batch_bytes(self) -> int:
        return self.batch_bytes

    def observe(self, outcome) -> None:
        """Learn from a finished batch: per-parser costs, the workers' rest RSS, the batch size.

        Batches that parse in under a quarter second spend too much on per-batch overhead
        (three part files and a commit), so they grow while two of them fit a worker's share.
        """
        for parser, size, extra in outcome.memory_samples:
            if size > 0 and extra > 0:
                window = self._samples.setdefault(parser, deque(maxlen=RATIO_WINDOW))
                before = self.ratio(parser)
                window.append(extra / size)
                self._ratios.pop(parser, None)
                self._largest = None
                if self.ratio(parser) > before * 1.1:
                    self.record("learned_ratio", parser=parser, ratio=round(self.ratio(parser), 1))
        rest = outcome.rss_bytes
        if rest > 0:
            excess = max(64 * 1024 * 1024, self.budget // 20)
            if rest > self.worker_rest_rss() + excess:
                if not self.recycle_wanted:
                    self.recycle_wanted = True
                    self.record("recycle_wanted", pid=outcome.pid, worker_rss=rest,
                                 typical=self.worker_rest_rss())
            else:
                self._worker_rest.append(rest)
        if self.fixed_batch_bytes:
            return
        share = self.worker_share()
        small_file_cost = int(SMALL_FILE_BYTES * self._largest_ratio())
        def fits(batch_bytes: int) -> bool:
            return small_file_cost + ROWS_RATIO * batch_bytes <= share / 2
        if (self.rss > 0.8 * self.budget or not fits(self.batch_bytes)) and self.batch_bytes > MIN_BATCH_BYTES:
            self.batch_bytes = max(MIN_BATCH_BYTES, self.batch_bytes // 2)
            self.record("shrink_batch", batch_bytes=self.batch_bytes, rss=self.rss)
        elif self.rss < 0.5 * self.budget and self.batch_bytes < MAX_BATCH_BYTES and outcome.parse_s < 0.25:
            grown = min(MAX_BATCH_BYTES, self.batch_bytes * 2)
            if fits(grown):
                self.batch_bytes = grown
                self.record("grow_batch", batch_bytes=self.batch_bytes, rss=self.rss)

    def recycled(self, done: bool = True) -> None:
        """The coordinator replaced the pool (or its executor cannot: then the wish is dropped)."""
        self.recycle_wanted = False
        if done:
            self.recycles += 1
        self.record("recycled_pool" if done else "recycle_unavailable")

    # -- reporting -----------------------------------------------------------------------------

    def brief(self) -> str:
        """A few words for the progress line."""
        if self.recycle_wanted:
            return "recycling workers"
        return self.note or f"batch {human(self.batch_bytes)}"

    def stats(self) -> dict:
        return {
            "budget_bytes": self.budget,
            "peak_rss_bytes": self.peak_rss,
            "baseline_bytes": self.last_baseline,  # as of the last admission (the pool is gone now)
            "worker_rest_rss_bytes": self.worker_rest_rss(),
            "peak_remote_rss_bytes": self.peak_remote_rss,
            "batch_bytes": self.batch_bytes,
            "in_flight_limit": self.in_flight_limit,
            "ratios": {name: {"bytes_per_source_byte": round(self.ratio(name), 1),
                              "measured_files": len(self._samples.get(name, ())),
                              "largest_measured": round(max(self._samples[name]), 1) if self._samples.get(name) else None}
                       for name in sorted({*PRIOR_RATIO, *self._samples})},
            "held_for_big_batch": self.held_alone,
            "held_for_budget": self.held_budget,
            "too_large_files": self.too_large_files,
            "recycles": self.recycles,
            "admission_samples": self.admission_samples,
            "decisions": self.decisions[-50:],
            "n_decisions": self.n_decisions,
        }
