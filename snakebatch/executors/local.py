"""The local executor: a process pool on this machine.

Owns: starting, rebuilding and stopping worker processes, reporting their PIDs for memory
sampling, and turning the pool's failures into `WorkerDied`. Must not touch: what a batch does
(engine/worker.py) or what happens to its result.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import multiprocessing.forkserver
import os
import select
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from ..errors import JobError
from .base import WorkerDied, kill_process

# The module the forkserver imports before it forks any worker (by name: the executors do not
# import the engine). Workers start from a clean, single-threaded process with it loaded,
# unaffected by the coordinator's threads.
PRELOAD = ["snakebatch.engine.prefork"]


def _context() -> multiprocessing.context.ForkServerContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def start_forkserver() -> None:
    """Start the pool's forkserver now, so that its imports (0.3 s) overlap the caller's: the CLI
    calls this before it imports the API. A pool started later uses this forkserver; one that is
    never started leaves it to end with this process. JobError when it cannot start (its Unix
    socket is made under the temporary folder: a path too long for a socket is the usual cause)."""
    _context()
    try:
        multiprocessing.forkserver.ensure_running()
    except OSError as err:
        raise JobError(f"cannot start the local pool's forkserver: {err} (its socket goes under the temporary "
                       f"folder {tempfile.gettempdir()}; a shorter TMPDIR, e.g. /tmp, fixes a path too long)") from None


def _init_worker(coordinator: int) -> None:
    # Ctrl-C in a terminal reaches the whole process group; the coordinator alone decides how to
    # stop, and lets the workers finish the batches they hold.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A worker's parent is the forkserver, not the coordinator, so PR_SET_PDEATHSIG cannot tie it
    # to the coordinator; and the forkserver (and with it the resource tracker) lives exactly as
    # long as a worker holds its "alive" pipe. A worker that ends with the coordinator therefore
    # takes the whole tree down, and none is left to write a staging folder after a SIGKILL.
    threading.Thread(target=_exit_with, args=(coordinator,), name="snakebatch-orphan-watch", daemon=True).start()


def _exit_with(coordinator: int) -> None:
    """Wait until the coordinator process has ended, then end this worker at once."""
    if sys.platform == "linux":
        try:
            pidfd = os.pidfd_open(coordinator)
        except ProcessLookupError:
            os._exit(1)
        except OSError:
            pidfd = None  # no pidfd (a kernel before 5.3, a sandbox): poll below
        if pidfd is not None:
            select.select([pidfd], [], [])  # readable once it has exited, even as an unreaped zombie
            os._exit(1)
    while True:
        try:
            os.kill(coordinator, 0)
        except ProcessLookupError:
            os._exit(1)
        time.sleep(0.5)


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
    """A `ProcessPoolExecutor` that can be rebuilt after a worker died (an `Executor`)."""

    memory_limit = None  # the governor's budget holds: the workers are this process's children
    runs_heartbeats = True

    def __init__(self, workers: int):
        self.workers = workers
        self._context = _context()
        start_forkserver()  # its failure is the job's (JobError), not the first batch's
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.workers, mp_context=self._context, initializer=_init_worker,
                                   initargs=(os.getpid(),))

    def submit(self, fn, task) -> Future:
        future: Future = Future()
        future.set_running_or_notify_cancel()
        try:
            with _main_module_left_alone():  # the pool starts its workers in submit
                pooled = self._pool.submit(fn, task)
        except BrokenProcessPool as err:
            # The pool broke since the coordinator last looked: fail like the batches in flight,
            # so the coordinator's one path for worker deaths handles this one too.
            future.set_exception(WorkerDied(str(err)))
            return future
        except OSError as err:
            # submit starts a worker while the pool's manager thread may be tearing the pool down
            # after a crash; the start then fails on the queue the manager closed ("handle is
            # closed"). That is the same worker death. An OSError of a healthy pool (no process
            # can be started) stays itself: as WorkerDied it would be rebuilt and retried forever.
            if not self._pool_breaking():
                raise
            future.set_exception(WorkerDied(f"the pool broke while a worker was starting: {err}"))
            return future
        pooled.add_done_callback(lambda done: _settle(done, future))
        return future

    def _pool_breaking(self) -> bool:
        """The pool is broken, or one of its workers has ended (its manager thread will break it)."""
        if self._pool._broken:  # set by the manager thread before it closes the pool's queues
            return True
        sentinels = [process.sentinel for process in (self._pool._processes or {}).values()]
        # Readiness only: reading the exit code here would race the manager thread for it.
        return bool(sentinels) and bool(multiprocessing.connection.wait(sentinels, timeout=0))

    def worker_pids(self) -> list[int]:
        return list(self._pool._processes or {})  # the pool has no public list of its processes

    def memory_rss(self) -> None:
        return None  # its workers are children: the governor samples them itself

    def kill_worker(self, pid: int) -> None:
        """Kill one worker (stuck in a parse); the pool breaks and must be rebuilt."""
        kill_process(pid)

    def kill_workers(self) -> None:
        for pid in self.worker_pids():
            kill_process(pid)

    def recycle(self) -> bool:
        """Replace idle workers with fresh processes (to give memory a worker holds back)."""
        self._pool.shutdown(wait=True)
        self._pool = self._new_pool()
        return True

    def rebuild(self) -> None:
        """Replace a broken pool (a worker died) with a fresh one."""
        self.kill_workers()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool = self._new_pool()

    def shutdown(self, kill: bool = False) -> None:
        if kill:
            self.kill_workers()
        self._pool.shutdown(wait=True, cancel_futures=True)



def _settle(pooled: Future, future: Future) -> None:
    """Pass a pool future's end on, a broken pool as `WorkerDied` (runs in the pool's thread)."""
    if pooled.cancelled():
        future.set_exception(WorkerDied("the pool was shut down before the batch ran"))
        return
    err = pooled.exception()
    if err is None:
        future.set_result(pooled.result())
    elif isinstance(err, BrokenProcessPool):
        future.set_exception(WorkerDied(str(err)))
    else:
        future.set_exception(err)
