"""The Dask executor: batches run on a Dask distributed cluster (the optional `dask` extra).

Owns: connecting to a scheduler (`--scheduler tcp://HOST:PORT`) or starting a `LocalCluster`
(`--executor dask` alone), checking that every worker sees SOURCE and can write OUT's staging
folder, submitting batches as `concurrent.futures` futures, and reading worker memory from the
scheduler for the governor. Must not touch: what a batch does (engine/worker.py) or what is committed
(the coordinator and the ledger stay on the client side: workers only write staging folders).

Failures reach the coordinator as the `Executor` protocol says (executors/base.py): a worker
that dies while running a batch makes the scheduler raise `KilledWorker` (a local cluster sets
`allowed-failures` to 0 so that happens on the first death), which becomes `WorkerDied`, and the
coordinator isolates and bisects as for a dead local worker; losing the scheduler becomes a
`ConnectionError`, which stops the job resumably rather than turning its files into error rows.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
import uuid
from concurrent.futures import CancelledError, Future

import dask
import xxhash
from distributed import Client, KilledWorker, LocalCluster

from ..config import RunConfig, is_object_output
from ..errors import ConfigError, JobError
from ..store.layout import JobLayout
from .base import WorkerDied, kill_process

CONNECT_TIMEOUT_S = 10
WORKERS_AT_START_TIMEOUT_S = 60
WORKERS_BACK_TIMEOUT_S = 300  # a remote nanny restarting a worker, or an autoscaler adding one
LOCAL_WORKERS_BACK_TIMEOUT_S = 30
EARLIER_RUN_TIMEOUT_S = 120
MEMORY_REFRESH_S = 1.0

# Spilling to disk would only slow a worker whose memory is parser state, not Dask data; pausing
# (no new batches) and terminating (the batch is lost and retried, its culprit bisected) stay.
LOCAL_CLUSTER_CONFIG = {
    "distributed.worker.memory.target": False,
    "distributed.worker.memory.spill": False,
    "distributed.scheduler.allowed-failures": 0,
    "distributed.worker.preload": ["snakebatch.executors.dask"],  # runs dask_setup below
}


def dask_setup(worker) -> None:
    """Preloaded into a local cluster's workers: Ctrl-C in a terminal reaches the whole process
    group; the coordinator alone decides how to stop, and lets the workers finish their batches."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def check_worker_paths(source: str, staging_root: str | None, probe: str | None) -> str | None:
    """Runs on each worker: None when it sees SOURCE and the coordinator's staging folder (the
    `probe` file the coordinator just wrote in it) and can write there, else why not."""
    if not os.path.isdir(source):
        return f"SOURCE {source} is not a folder there"
    if staging_root is not None:
        if not os.path.isdir(staging_root):
            return f"OUT staging folder {staging_root} does not exist there"
        if probe is not None and not os.path.exists(os.path.join(staging_root, probe)):
            return f"OUT staging folder {staging_root} there is not the coordinator's (not the shared filesystem)"
        try:
            with tempfile.NamedTemporaryFile(dir=staging_root, prefix=".probe-"):
                pass
        except OSError as err:
            return f"cannot write to OUT staging folder {staging_root} there ({err.strerror or err})"
    return None


def executing_keys(prefix: str, dask_worker=None) -> list[str]:
    """Runs on each worker: keys starting with `prefix` still executing (even if released)."""
    return [str(ts.key) for ts in dask_worker.state.executing if str(ts.key).startswith(prefix)]


class DaskExecutor:
    """`submit(fn, task) -> concurrent.futures.Future` on a Dask cluster (an `Executor`)."""

    runs_heartbeats = False  # its workers may be on other machines

    def __init__(self, config: RunConfig):
        self.config = config
        self.client = None
        self.cluster = None
        self.scheduler = config.scheduler
        # Keys name the job's OUT, so a later run can wait for batches a dead client left running.
        self.key_prefix = f"snakebatch-{xxhash.xxh64_hexdigest((config.output or 'stream').encode())}-"
        self._dask_futures: dict = {}  # dask future -> its concurrent.futures twin
        self._lock = threading.Lock()
        self._memory_checked = 0.0
        self._memory_rss: int | None = None
        try:
            if self.scheduler:
                try:
                    self.client = Client(self.scheduler, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
                except (OSError, TimeoutError) as err:
                    raise ConfigError(f"--scheduler: cannot connect to {self.scheduler} ({err})") from None
            else:
                self._start_local_cluster()
            self._wait_for_workers(WORKERS_AT_START_TIMEOUT_S)
            self._check_paths()
            self._wait_for_earlier_run()
            self._pids = self._fetch_pids()
        except BaseException:
            self._close()
            raise
        info = self._workers()
        self.workers = sum(w.get("nthreads", 1) for w in info.values()) or config.workers
        limits = [w.get("memory_limit") or 0 for w in info.values()]
        # The governor's budget on a remote cluster is what its workers were given.
        self.memory_limit = sum(limits) if self.cluster is None and limits and all(limits) else None

    def _start_local_cluster(self) -> None:
        config = self.config
        with dask.config.set(LOCAL_CLUSTER_CONFIG):
            self.cluster = LocalCluster(
                n_workers=config.workers, threads_per_worker=1, processes=True,
                host="127.0.0.1", dashboard_address=":0",
                memory_limit=max(config.memory_budget // config.workers, 1),
            )
        self.client = Client(self.cluster, set_as_default=False)
        self.scheduler = self.cluster.scheduler_address

    # -- start-up checks -----------------------------------------------------------------------

    def _wait_for_workers(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self._workers():
            if time.monotonic() > deadline:
                raise ConfigError(f"no Dask worker is connected to the scheduler {self.scheduler} "
                                  f"(waited {timeout:.0f}s)")
            time.sleep(0.2)

    def _check_paths(self) -> None:
        # An OUT in object storage needs no shared disk: workers put their parts there themselves.
        local_out = self.config.output and not is_object_output(self.config.output)
        staging = JobLayout(self.config.output).staging_root if local_out else None
        probe = None
        if staging is not None:
            probe = f".probe-{uuid.uuid4().hex}"
            open(os.path.join(staging, probe), "wb").close()
        try:
            problems: dict = {}
            for spec in self.config.job.sources:  # every source of the job, each at its own path
                for address, problem in self.client.run(check_worker_paths, spec.path, staging, probe).items():
                    problems[address] = problems.get(address) or problem
        finally:
            if probe is not None:
                os.unlink(os.path.join(staging, probe))
        for address, problem in sorted(problems.items()):
            if problem:
                raise ConfigError(f"Dask worker {address}: {problem}; SOURCE and OUT must be the same "
                                  f"paths on every worker (a shared filesystem)")

    def _workers(self) -> dict:
        """Every worker the scheduler knows, by address."""
        try:
            return self.client.scheduler_info(n_workers=-1)["workers"]
        except TypeError:  # distributed before n_workers (it returned all of them)
            return self.client.scheduler_info()["workers"]

    def _wait_for_earlier_run(self) -> None:
        """A client that died leaves its running batches to finish on the workers; they would
        write into the staging folder this run is about to use, so wait until they are done."""
        deadline = time.monotonic() + EARLIER_RUN_TIMEOUT_S
        while any(self.client.run(executing_keys, self.key_prefix).values()):
            if time.monotonic() > deadline:
                raise ConfigError(f"Dask workers of {self.scheduler} still run batches of an earlier run "
                                  f"into {self.config.output} after {EARLIER_RUN_TIMEOUT_S}s; "
                                  "restart them or try again later")
            time.sleep(0.2)

    def _fetch_pids(self) -> list[int]:
        if self.cluster is None:
            return []  # remote processes: neither sampled nor killed from here
        return list(self.client.run(os.getpid, on_error="ignore").values())

    # -- the executor interface ----------------------------------------------------------------

    def submit(self, fn, task) -> Future:
        key = f"{self.key_prefix}{task.batch_id}-{task.attempt}-{uuid.uuid4().hex[:8]}"
        dask_future = self.client.submit(fn, task, key=key, pure=False)
        future: Future = Future()
        future.set_running_or_notify_cancel()
        with self._lock:
            self._dask_futures[dask_future] = future
        dask_future.add_done_callback(self._settle)
        return future

    def _settle(self, dask_future) -> None:
        """Runs in Dask's callback thread: pass the outcome on, translating a cancellation."""
        with self._lock:
            future = self._dask_futures.pop(dask_future, None)
        if future is None or future.done():
            return
        try:
            future.set_result(dask_future.result())
        except CancelledError as err:
            future.set_exception(ConnectionError(f"Dask cancelled the batch (scheduler {self.scheduler}: {err})"))
        except KilledWorker as err:
            future.set_exception(WorkerDied(f"a Dask worker died running the batch ({err})"))
        except BaseException as err:  # noqa: BLE001 - the batch's own exception, for the coordinator
            future.set_exception(err)

    def worker_pids(self) -> list[int]:
        return list(self._pids)

    def kill_worker(self, pid: int) -> None:
        kill_process(pid)

    def kill_workers(self) -> None:
        for pid in self.worker_pids():
            kill_process(pid)

    def recycle(self) -> bool:
        return False  # a nanny restarts a worker only when it dies or passes its memory limit

    def rebuild(self) -> None:
        """After a worker died (nothing is in flight): its nanny restarts it; go on once a worker
        is connected. A local cluster that gets none back is replaced, as the local pool is."""
        try:
            if self.cluster is not None:
                try:
                    self._wait_for_workers(LOCAL_WORKERS_BACK_TIMEOUT_S)
                except ConfigError:
                    self._close()
                    self._start_local_cluster()
                    self._wait_for_workers(WORKERS_AT_START_TIMEOUT_S)
            else:
                self._wait_for_workers(WORKERS_BACK_TIMEOUT_S)
        except ConfigError as err:
            raise JobError(str(err)) from None
        self._pids = self._fetch_pids()

    def memory_rss(self) -> int | None:
        """The workers' RSS as the scheduler last heard it, for a remote cluster (a local
        cluster's workers are this process's children, which the governor samples itself)."""
        if self.cluster is not None:
            return None
        now = time.monotonic()
        if now - self._memory_checked >= MEMORY_REFRESH_S:
            self._memory_checked = now
            try:
                workers = self._workers().values()
                self._memory_rss = sum(w.get("metrics", {}).get("memory", 0) for w in workers)
            except Exception:  # noqa: BLE001 - a missed sample keeps the last one
                pass
        return self._memory_rss

    def shutdown(self, kill: bool = False) -> None:
        with self._lock:
            pending = list(self._dask_futures)
            self._dask_futures.clear()
        if pending and self.client is not None:
            try:
                self.client.cancel(pending)
            except Exception:  # noqa: BLE001 - the scheduler may be gone already
                pass
        if kill:
            self.kill_workers()
        self._close()

    def _close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            client.close()
        if self.cluster is not None:
            self.cluster.close()
