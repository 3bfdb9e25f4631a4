"""The memory governor: keeps the RSS of the whole process tree under `--memory-budget`.

Owns: sampling memory (psutil, several times a second, in a thread), the batch size target and
the number of batches in flight, and the record of its decisions. Must not touch: executing or
committing batches; the coordinator asks it before each submission and tells it each outcome.
"""

from __future__ import annotations

import os
import threading
import time

import psutil

MIN_BATCH_BYTES = 256 * 1024
DEFAULT_BATCH_BYTES = 4 * 1024 * 1024
MAX_BATCH_BYTES = 16 * 1024 * 1024
SAMPLE_INTERVAL_S = 0.1


class MemoryGovernor:
    """Batch size and submissions from sampled memory: grows when there is headroom, shrinks and
    holds submissions back when the tree nears the budget."""

    def __init__(self, budget: int, workers: int, batch_bytes: int | None = None):
        self.budget = budget
        self.workers = workers
        self.fixed_batch_bytes = batch_bytes
        self.batch_bytes = batch_bytes or DEFAULT_BATCH_BYTES
        self.rss = 0
        self.peak_rss = 0
        self.decisions: list[dict] = []
        self._root = psutil.Process(os.getpid())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._remote_rss = None
        self.peak_remote_rss = 0
        self.sample()

    def attach(self, executor) -> None:
        """Follow the executor's workers: their count, and for remote workers (Dask) their memory
        as the executor reports it, with their memory limits as the budget when it knows them."""
        self.workers = getattr(executor, "workers", self.workers)
        self._remote_rss = getattr(executor, "memory_rss", None)
        self.budget = getattr(executor, "memory_limit", None) or self.budget

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

    def sample(self) -> int:
        """The RSS of this process and all its descendants (workers, forkserver), plus that of
        remote workers when the executor reports it, now."""
        total = 0
        try:
            processes = [self._root, *self._root.children(recursive=True)]
        except psutil.Error:
            processes = [self._root]
        for process in processes:
            try:
                total += process.memory_info().rss
            except psutil.Error:
                pass  # it ended between the listing and the reading
        remote = self._remote_rss() if self._remote_rss is not None else None
        if remote:
            total += remote
            self.peak_remote_rss = max(self.peak_remote_rss, remote)
        self.rss = total
        if total > self.peak_rss:
            self.peak_rss = total
        return total

    def _decide(self, what: str, **details) -> None:
        self.decisions.append({"t": round(time.monotonic(), 3), "decision": what, **details})

    def target_batch_bytes(self) -> int:
        return self.batch_bytes

    def max_in_flight(self) -> int:
        """Batches in flight allowed now: two per worker keeps each busy while one is committed."""
        if self.rss > 0.9 * self.budget:
            return self.workers  # no queue beyond what runs now
        return 2 * self.workers

    def may_submit(self, in_flight: int) -> bool:
        return in_flight < self.max_in_flight()

    def observe(self, outcome) -> None:
        """Learn from a finished batch; adapt the batch size unless --batch-bytes fixed it.

        Batches that parse in under a quarter second spend too much on per-batch overhead
        (three part files and a commit), so they grow while memory allows.
        """
        if self.fixed_batch_bytes:
            return
        if self.rss > 0.8 * self.budget and self.batch_bytes > MIN_BATCH_BYTES:
            self.batch_bytes = max(MIN_BATCH_BYTES, self.batch_bytes // 2)
            self._decide("shrink_batch", batch_bytes=self.batch_bytes, rss=self.rss)
        elif self.rss < 0.5 * self.budget and self.batch_bytes < MAX_BATCH_BYTES and outcome.parse_s < 0.25:
            grown = min(MAX_BATCH_BYTES, self.batch_bytes * 2)
            if grown != self.batch_bytes:
                self.batch_bytes = grown
                self._decide("grow_batch", batch_bytes=self.batch_bytes, rss=self.rss)

    def stats(self) -> dict:
        return {
            "budget_bytes": self.budget,
            "peak_rss_bytes": self.peak_rss,
            "peak_remote_rss_bytes": self.peak_remote_rss,
            "batch_bytes": self.batch_bytes,
            "decisions": self.decisions[-50:],
            "n_decisions": len(self.decisions),
        }
