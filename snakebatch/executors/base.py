"""What the coordinator may ask of an executor, and the failures an executor may report.

Owns: the `Executor` protocol, `WorkerDied`, and killing a worker process. Must not touch:
anything else; the local pool and the Dask cluster implement the protocol in their own modules.

A future returned by `submit` ends in one of four ways, and only these:

    its result             the batch's `BatchOutcome`
    WorkerDied             the process running the batch died (a crash, a kill, an OOM kill)
    JobError               the executor cannot go on (its cluster is gone): the job stops, resumable
    any other exception    raised by the batch itself (OSError: its staging folder cannot be written)

Each executor translates its own machinery's failures into these (as CPython's
`_terminate_broken` turns every failure of a process pool into `BrokenProcessPool`), so the
coordinator never inspects an exception's class name or probes an executor's attributes.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from concurrent.futures import Future
from typing import Protocol

from ..errors import SnakebatchError


class WorkerDied(SnakebatchError):
    """The worker process running a batch died before the batch finished."""


def kill_process(pid: int) -> None:
    """SIGKILL `pid`, which may have ended already (each executor's `kill_worker`)."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class Executor(Protocol):
    workers: int  # batches it runs at once
    memory_limit: int | None  # the workers' own memory limit (a remote cluster's), else None
    runs_heartbeats: bool  # its workers are local processes the heartbeat watchdog can watch and kill

    def submit(self, fn: Callable, task) -> Future:
        """Run `fn(task)` on a worker; the future ends as the module docstring says."""

    def worker_pids(self) -> list[int]:
        """PIDs of the worker processes on this machine (sampled for memory, killed when stuck)."""

    def memory_rss(self) -> int | None:
        """The RSS of workers outside this process tree, when the executor knows it, else None."""

    def kill_worker(self, pid: int) -> None:
        """Kill one worker (stuck in a parse); the batches it takes down fail with WorkerDied."""

    def recycle(self) -> bool:
        """Replace idle workers by fresh processes (to give back memory); False if it cannot."""

    def rebuild(self) -> None:
        """Get working again after a worker died (nothing is in flight); JobError if it cannot."""

    def shutdown(self, kill: bool = False) -> None:
        """Stop every worker; `kill` does not wait for batches in flight."""
