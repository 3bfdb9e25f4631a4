"""Executors: where batches run. A local process pool, or a Dask cluster (optional extra).

Owns: starting, rebuilding and stopping worker processes, and reporting their PIDs for memory
sampling. Must not touch: what a batch does (worker.py) or what happens to its result.

Both are `concurrent.futures.Executor`s to the coordinator: `submit(fn, task)` returns a Future.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from .config import RunConfig


def _init_worker() -> None:
    # Ctrl-C in a terminal reaches the whole process group; the coordinator alone decides how to
    # stop, and lets the workers finish the batches they hold.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def _main_module_left_alone():
    """Workers started by forkserver or spawn run the caller's main script again, by its
    `__file__`. A script read from stdin (`python -`) has the `__file__` `<stdin>`, which names no
    file: every worker would die on it. While workers start, such a main module goes without a
    `__file__`, so that workers leave it alone, as they do for `python -c` and the interactive
    interpreter (nothing in it can be run again)."""
    main = sys.modules["__main__"]
    path = getattr(main, "__file__", None)
    if main.__spec__ is not None or not isinstance(path, str) or not (path.startswith("<") and path.endswith(">")):
        yield
        return
    del main.__file__
    try:
        yield
    finally:
        main.__file__ = path


class LocalExecutor:
    """A `ProcessPoolExecutor` that can be rebuilt after a worker died."""

    kind = "local"

    def __init__(self, workers: int):
        self.workers = workers
        # forkserver: workers start from a clean, single-threaded process with the worker module
        # preloaded, unaffected by the coordinator's threads.
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(["snakebatch.worker"])
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.workers, mp_context=self._context, initializer=_init_worker)

    def submit(self, fn, task) -> Future:
        try:
            with _main_module_left_alone():  # the pool starts its workers in submit
                return self._pool.submit(fn, task)
        except BrokenProcessPool as err:
            # The pool broke since the coordinator last looked: fail like the batches in flight,
            # so the coordinator's one path for worker deaths handles this one too.
            future: Future = Future()
            future.set_exception(err)
            return future

    def worker_pids(self) -> list[int]:
        processes = getattr(self._pool, "_processes", None) or {}
        return list(processes)

    def kill_worker(self, pid: int) -> None:
        """Kill one worker (stuck in a parse); the pool breaks and must be rebuilt."""
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def kill_workers(self) -> None:
        for pid in self.worker_pids():
            self.kill_worker(pid)

    def recycle(self) -> None:
        """Replace idle workers with fresh processes (to give memory a worker holds back)."""
        self._pool.shutdown(wait=True)
        self._pool = self._new_pool()

    def rebuild(self) -> None:
        """Replace a broken pool (a worker died) with a fresh one."""
        self.kill_workers()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool = self._new_pool()

    def shutdown(self, kill: bool = False) -> None:
        if kill:
            self.kill_workers()
        self._pool.shutdown(wait=True, cancel_futures=True)


def make_executor(config: RunConfig):
    if config.executor == "dask":
        from .dask_executor import DaskExecutor  # imported lazily: an optional extra

        return DaskExecutor(config)
    return LocalExecutor(config.workers)
