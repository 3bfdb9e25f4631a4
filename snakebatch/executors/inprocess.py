"""The in-process executor: each batch runs at once in the thread that submits it.

Owns: running a batch inside the coordinator's process, for a refresh with only a few small
files to parse (engine/refresh.py decides when). Must not touch: what a batch does
(engine/worker.py, a pure function of its batch) or what happens to its result.

Why: starting a local pool of 2 workers (the forkserver, then each worker's imports) took 0.6-2
s of a 1-file refresh of 100k files on the shared 2-core machine, to parse one file in ~0.05 s.
There is no process to kill here: the worker's own SIGALRM limit (--file-timeout) is the only
one, and a parser that crashes takes the coordinator down; engine/refresh.py therefore notes in
the refresh's intent that it parses in process, and the next refresh after one that never
committed uses the pool.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future


class InProcessExecutor:
    """An `Executor` with one "worker": the caller's own thread."""

    workers = 1
    memory_limit = None  # the coordinator is sampled as the process tree's root
    runs_heartbeats = False  # nothing to kill

    def submit(self, fn: Callable, task) -> Future:
        future: Future = Future()
        future.set_running_or_notify_cancel()
        try:
            future.set_result(fn(task))
        except Exception as err:  # noqa: BLE001 - the batch's own failure, as a pool reports it
            future.set_exception(err)
        return future

    def worker_pids(self) -> list[int]:
        return []

    def memory_rss(self) -> None:
        return None

    def kill_worker(self, pid: int) -> None:
        """Never asked: there are no worker processes to watch."""

    def recycle(self) -> bool:
        return False

    def rebuild(self) -> None:
        """Nothing breaks that a rebuild would mend: a batch's exception is its future's."""

    def shutdown(self, kill: bool = False) -> None:
        """Nothing runs once `submit` has returned."""
