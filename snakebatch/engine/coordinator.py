"""The coordinator: the one owner of a job's state while it runs.

Owns: the loop that moves batches through the stages, retries and isolation of crashing files,
stopping (signals, --fail-fast, --max-errors, fatal errors), progress, and the run's summary.
Must not touch: file contents (workers read them) or the output layout (a sink owns that).

Data flows one way:

    discover()  ->  BatchPlanner  ->  executor.submit(process_batch, BatchTask)  ->  sink.commit
    (metadata)      (by bytes,        (local pool or Dask; at most the governor's     (ledger +
                     governor's        number of batches in flight)                     renames, or
                     target)                                                            a stream)

The batches one wait finds finished are committed together (`sink.commit_group`): with many
workers on small files, an fsynced ledger write per batch queued the coordinator (issue 17).

Worker deaths: a pool that breaks fails every batch in flight, so a death cannot be pinned on
one batch. Those batches are redone one at a time ("isolated"); a batch that kills its worker
while alone is split in halves until the single file is found, which gets `crashed` after
`--retries` more isolated attempts. Every other file of the batch gets its real row.

Hard timeouts (local pool): a watchdog reads the workers' heartbeats several times a second and
kills a worker stuck on one file past `--file-timeout`. The file is known, so nothing needs
isolating: it is retried alone (`--retries`) and then gets `timeout`; the rest of its batch and
every batch the broken pool took down are simply redone.

Closing work in the tail: once discovery has ended, the sink learns which batches are final
(`Sink.tail`: every lower id committed or never to be), and while no batch has finished the loop
gives it a short step of work (`Sink.work`: a part compacted early) instead of only waiting.

--cache DIR: workers read and write its entries; the coordinator only reports what they stored
to the cache's size estimate (store/blobcache.py `SizeKeeper`), which evicts past the bound.

Memory: the governor prices each batch before it is submitted. A file too large for the whole
budget gets a `too_large` row without being read; a batch too large for a worker's share waits
until nothing else runs; when a worker keeps a high RSS after a big file, submissions pause
until the pool is idle and the pool is replaced.
"""

from __future__ import annotations

import shutil
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import NamedTuple

import msgspec

from ..config import RunConfig, is_object_output
from ..errors import JobError
from ..executors import make_executor
from ..executors.base import Executor, WorkerDied
from ..paths import display_path
from ..schema import FAILURE_STATUSES
from ..store.blobcache import SizeKeeper
from ..store.layout import JobLayout
from .batching import BatchPlanner
from .discovery import DiscoveryStats, SourceFile
from .gitsource import source_files
from .governor import MemoryGovernor
from .serial import Timeline, process_started, serial_fraction
from .sinks import Sink
from .tally import Tally
from .watchdog import Stuck, Watchdog
from .worker import BatchOutcome, BatchTask, process_batch

PROGRESS_INTERVAL_S = 0.5
# Isolated worker deaths, with no batch parsed yet, after which the workers are taken to be
# unable to run at all (a poison file costs at most two before a half of its batch succeeds).
WORKERS_NEVER_WORK = 3


class Progress(msgspec.Struct):
    """What `on_progress` receives, at most twice a second and once at the end."""

    files_done: int
    files_total: int | None  # None until discovery ends
    bytes_done: int
    errors: int
    elapsed_s: float
    rss_bytes: int
    memory: str = ""  # the governor's current adaptation, in a few words


class RunSummary(msgspec.Struct):
    """The outcome of one run (the CLI prints it; the API wraps it in RunResult)."""

    state: str  # complete | stopped | interrupted
    exit_code: int
    output: str
    files: int  # files of the job with a committed row (all runs)
    files_this_run: int
    bytes: int
    bytes_this_run: int
    status_counts: dict
    language_counts: dict
    elapsed_s: float
    files_per_s: float
    mb_per_s: float
    peak_rss_bytes: int
    batches_this_run: int
    retries: int
    crashed_isolations: int
    stale_files: int
    stale_sample: list
    removed_files: int
    unreadable_folders: list
    stop_reason: str | None
    resume_command: str | None
    error_samples: list
    governor: dict
    recovery: str | None = None
    watchdog_kills: int = 0  # workers killed while stuck on one file past --file-timeout
    compaction: dict | None = None  # parts_before, parts_after, rows, seconds (a complete job)
    # io_error rows an earlier run committed, removed by this --resume: "gone" files have no
    # row now, those "back" were parsed again.
    io_errors_rechecked: dict = msgspec.field(default_factory=lambda: {"gone": 0, "back": 0})
    job_folders: list = []  # output folders of other snakebatch jobs under SOURCE, not ingested
    warnings: list = []  # what the user should look at although the run went through
    refresh: dict | None = None  # a --refresh's generation, change counts and costs (engine/refresh.py)
    # This run's files whose parser ran, those of a git revision that took the parse of the same
    # blob at another path (engine/worker.py `_Reuse`), and those whose parse came from --cache.
    parses: dict = msgspec.field(default_factory=lambda: {"parsed": 0, "reused": 0, "cached": 0})
    cache: dict | None = None  # --cache: what this run stored and evicted (store/blobcache.py SizeKeeper)
    serial: dict = {}  # seconds during which not every worker was busy, by cause (engine/serial.py)


class _Stop:
    def __init__(self) -> None:
        self.reason: str | None = None
        self.exit_code = 0

    def request(self, reason: str, exit_code: int) -> None:
        if self.reason is None:
            self.reason, self.exit_code = reason, exit_code

    def __bool__(self) -> bool:
        return self.reason is not None


class InFlight(NamedTuple):
    """A batch submitted and not settled yet."""

    task: BatchTask
    isolated: bool  # run alone, so that a worker death is its own
    estimate: int  # its predicted peak bytes, reserved with the governor while it runs


# Statuses a file's (path, blob) decides alone: rows another source's identical file can copy.
COPYABLE_STATUSES = frozenset({"ok", "syntax_error", "decode_error", "binary"})


def cache_folder(config: RunConfig) -> str | None:
    """The blob cache the run's workers use: `--cache DIR`; else, in a job of several sources with
    a local OUT, the job's own (`OUT/_snakebatch/blobs`, deleted once the job is complete), so
    that a blob parsed for one source is taken from it for the others (`parses.cached`): 20
    copies of a repository cost about one parse of each blob, not 20."""
    if config.cache is not None:
        return config.cache
    if len(config.job.sources) > 1 and not is_object_output(config.output):
        return JobLayout(config.output).blob_cache
    return None


class Coordinator:
    def __init__(self, config: RunConfig, sink: Sink, on_progress: Callable[[Progress], None] | None = None,
                 executor_factory: Callable[[RunConfig], Executor] = make_executor,
                 files: Iterable[SourceFile] | None = None):
        self.config = config
        self.sink = sink
        self.on_progress = on_progress
        self.executor_factory = executor_factory
        self.stop = _Stop()
        self.governor = MemoryGovernor(config.memory_budget, config.workers, config.batch_bytes,
                                       parsers=config.job.parsers)
        self.discovery_stats = DiscoveryStats()
        self.sources = {spec.label: spec for spec in config.job.sources}
        committed = sink.committed
        self.planner = BatchPlanner(  # discovery is lazy: nothing is walked before `run`
            # `files`: the ones a refresh chose to parse, instead of all that discovery finds
            files if files is not None else source_files(config.job, skip=config.output or None,
                                                         stats=self.discovery_stats,
                                                         source_options=config.source_store_options),
            workers=config.workers,
            first_batch_id=sink.first_batch_id,
            # A fresh job has nothing committed: no look-up per discovered file.
            committed=committed if committed is not None and committed.files else None,
        )
        self.executor: Executor | None = None  # started by `run`
        self.watchdog: Watchdog | None = None  # when the executor's workers write heartbeats
        self.inflight: dict[Future, InFlight] = {}
        self.suspects: deque[BatchTask] = deque()  # batches to run alone, one at a time
        self._redo: deque[BatchTask] = deque()  # batches a broken pool took down, to run again
        self._next: tuple[BatchTask, int] | None = None  # the next batch and its estimate, waiting for room
        self._pool_broke = False  # a worker died: settle the rest in flight, then rebuild
        self._watchdog_broke = False  # the watchdog killed a worker since the last rebuild
        self._killed = False  # a second signal: shut down without waiting for the batches in flight
        self.tally = Tally()  # this run's committed batches (`sink.before` holds earlier runs')
        self.batches_parsed = 0  # committed batches a worker parsed (not forced-status rows)
        self.retries = 0
        self.crashed_isolations = 0
        self.watchdog_kills = 0
        self.error_samples: list = []
        self.complete = False  # set when `run` ends
        self.compaction: dict | None = None  # what `compact` did to a complete job
        self.final_summary: RunSummary | None = None  # set by `close`
        self._ended = False  # `run` and `compact` got to their end
        self._last_progress = 0.0
        self._started = time.monotonic()
        self.timeline = Timeline(process_started=process_started(), run_started=time.time())
        self.busy: list[tuple[float, float, int]] = []  # (started, ended, pid) of each batch a worker ran
        self.cache_folder = cache_folder(config)
        # A job of several sources into a local OUT: (path, blob id) -> the batch of this run that
        # committed its rows, which later batches of other sources copy (engine/worker.py `_Copies`).
        self.copyable: dict[tuple[str, str], int] | None = (
            {} if len(config.job.sources) > 1 and not is_object_output(config.output) else None)
        self.cache = SizeKeeper(self.cache_folder, config.cache_size) if self.cache_folder is not None else None

    # -- stopping ------------------------------------------------------------------------------

    def install_signal_handlers(self) -> Callable[[], None]:
        """SIGINT/SIGTERM: the first stops submitting and commits what finished; a second one
        stops at once. Returns a function that restores the previous handlers."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum, frame):
            if self.stop:
                raise KeyboardInterrupt
            self.stop.request(f"interrupted by {signal.Signals(signum).name}", 130)

        for sig in previous:
            signal.signal(sig, handler)

        def restore():
            for sig, old in previous.items():
                signal.signal(sig, old)

        return restore

    # -- the loop ------------------------------------------------------------------------------

    def _task(self, batch_id: int, files: list, attempt: int = 0, forced: tuple | None = None,
              source: str | None = None) -> BatchTask:
        """`source`: the label of the files' source (a batch is of one); None: the first file's
        (SourceFile.source), or the job's only one."""
        job = self.config.job
        if source is None and files and len(files[0]) > 4:
            source = files[0][4]
        spec = self.sources[source] if source is not None else job.sources[0]
        return BatchTask(
            batch_id=batch_id,
            attempt=attempt,
            source=spec.path,
            source_label=spec.label,
            staging=self.sink.staging_for(batch_id, attempt),
            # (path, size, mtime_ns), and a git source's blob id after them
            files=[tuple(f[:4]) if len(f) > 3 and f[3] is not None else tuple(f[:3]) for f in files],
            parsers=job.parsers,
            max_file_size=job.max_file_size,
            content=job.content,
            file_timeout=self.config.file_timeout,
            retries=self.config.retries,
            forced_status=forced[0] if forced else None,
            forced_message=forced[1] if forced else None,
            heartbeat_dir=self.watchdog.folder if self.watchdog is not None and not forced else None,
            storage_options=self.config.storage_options,
            source_options=self.config.source_store_options,
            commit=None if job.history else spec.commit,  # a history's blobs have no one commit
            cache=self.cache_folder,
            copy_from=self._copies(files) if not forced else {},
            output=self.config.output,
        )

    def _copies(self, files: list) -> dict:
        """display path -> the batch whose committed rows a file of a git source takes (its path
        and blob committed by this run already, in another source)."""
        if not self.copyable:
            return {}
        copies = {}
        for f in files:
            if len(f) > 3 and f[3] is not None:
                path = display_path(f[0])
                origin = self.copyable.get((path, f[3]))
                if origin is not None:
                    copies[path] = origin
        return copies

    def _learn_copies(self, task: BatchTask, outcome: BatchOutcome) -> None:
        """Remember the rows a committed batch holds that depend only on path and blob (not on
        the run: a crash, a timeout, the memory governor's too_large, an unreadable object)."""
        if self.copyable is None or task.forced_status is not None:
            return
        for f, status in zip(task.files, outcome.statuses):
            if len(f) > 3 and f[3] is not None and status in COPYABLE_STATUSES:
                self.copyable.setdefault((display_path(f[0]), f[3]), task.batch_id)

    def run(self) -> Iterator:
        """Process the job; yields whatever the sink yields per commit (nothing for the ledger,
        record batches for a stream). Then `compact()`, and `close()` for the summary."""
        pool_started = time.time()
        self._start()  # first: an executor that refuses the job (a Dask worker blind to OUT) writes nothing
        self.timeline.pool_s = time.time() - pool_started
        yield from self._commit_first_part()
        try:
            while True:
                if not self.stop:
                    yield from self._submit_ready()
                if not self.inflight:
                    if self.suspects and not self.stop:
                        continue
                    break
                done = self._wait()
                self._watchdog_broke = self._check_watchdog()
                yield from self._settle_finished(done)
                if self._pool_broke:
                    yield from self._rebuild_after_death()
                if self.planner.discovery_done and not self.stop:
                    self.sink.tail(self._final_below())
                self._maybe_progress()
        except KeyboardInterrupt:
            self.stop.request("interrupted", 130)
            self.stop.reason += "; a second signal stopped it at once, without the batches in flight"
            self._killed = True
        except JobError as err:
            self.stop.request(str(err), 1)
        finally:
            self._shut_down()
            if self.cache is not None:
                self.cache.flush()  # what this run stored counts toward the bound (may evict)
            self.timeline.run_ended = time.time()
        self._finish()
        self._maybe_progress(final=True)

    def _start(self) -> None:
        """Start the workers; the governor samples them, the watchdog reads their heartbeats."""
        self.executor = self.executor_factory(self.config)
        self.governor.attach(self.executor)
        if self.executor.runs_heartbeats:
            self.watchdog = Watchdog(self.config.file_timeout)
        self.governor.start()

    def _submit(self, task: BatchTask, isolated: bool, estimate: int) -> None:
        if not self.timeline.first_submit:
            self.timeline.first_submit = time.time()
        self.inflight[self.executor.submit(process_batch, task)] = InFlight(task, isolated, estimate)

    def _submit_ready(self):
        """Submit what may run now: the next suspect, alone, once nothing else runs; else new
        batches while the governor allows. Yields what forced rows commit."""
        if not self.suspects:
            yield from self._fill()
        elif not self.inflight:
            task = self.suspects.popleft()
            self._submit(task, isolated=True, estimate=self.governor.batch_estimate(task.files))

    def _wait(self) -> set[Future]:
        """The batches that finished; while none has, a step of the sink's closing work (one
        part compacted early, a few ms) instead of waiting."""
        done, _ = wait(list(self.inflight), timeout=0, return_when=FIRST_COMPLETED)
        if not done and (self.stop or not self.sink.work()):
            done, _ = wait(list(self.inflight), timeout=0.2, return_when=FIRST_COMPLETED)
        return done

    def _settle_finished(self, done: Iterable[Future], drained: bool = False):
        """Batches that finished together: decide what each failure means, and commit the others
        as one group (the output folder's one ledger write and fsync for them all)."""
        finished = []
        for future in done:
            settled = yield from self._settle(future, drained)
            if settled is not None:
                finished.append(settled)
        if finished:
            yield from self._commit_group(finished)

    def _settle(self, future: Future, drained: bool = False):
        """One finished batch: (task, outcome) to commit, or None once its failure is dealt with.
        `drained`: it was waited for after a worker died, so whatever it failed with, it went
        down with the pool."""
        task, isolated, _ = self.inflight.pop(future)
        try:
            outcome = future.result()
        except KeyboardInterrupt:
            raise
        except BaseException as err:  # noqa: BLE001 - sorted out below
            shutil.rmtree(task.staging, ignore_errors=True)
            if self.stop:
                return  # stopping: unfinished work stays undone, to resume
            if drained or isinstance(err, WorkerDied):
                self._pool_broke = True
                yield from self._after_death(task, isolated and not drained)
            elif isinstance(err, OSError):
                self.stop.request(f"cannot write batch {task.batch_id} to {task.staging}: {err}", 1)
            else:
                yield from self._after_failure(task, True, "parser_error", f"{type(err).__name__}: {err}"[:2000])
            return
        self.busy.append((outcome.started_at, outcome.ended_at, outcome.pid))
        return task, outcome

    def _rebuild_after_death(self):
        """Every batch in flight fails with the pool: settle them as they end, then rebuild."""
        yield from self._settle_finished(list(self.inflight), drained=True)
        self._pool_broke = False
        time.sleep(0.05)  # a SIGTERM to the group kills workers first; let its handler run
        if not self.stop:
            self.executor.rebuild()
            if self.watchdog is not None:
                self.watchdog.reset()

    def _final_below(self) -> int:
        """The lowest batch id that may still commit: every batch below it has committed or
        never will (new batches get higher ids; a retried one keeps its id while pending)."""
        pending = [entry.task.batch_id for entry in self.inflight.values()]
        pending += [task.batch_id for task in (*self.suspects, *self._redo)]
        if self._next is not None:
            pending.append(self._next[0].batch_id)
        return min(pending, default=self.planner.next_id)

    def _shut_down(self) -> None:
        self.governor.stop()
        self.executor.shutdown(kill=self._killed or bool(self.inflight))
        if self.watchdog is not None:
            self.watchdog.close()
        for entry in self.inflight.values():
            shutil.rmtree(entry.task.staging, ignore_errors=True)

    def _commit_first_part(self):
        """A job's first commit is one empty part per table: a reader given `OUT/files/*.parquet`
        gets zero rows with the schema, not "no files found", before the first batch ends and in
        a job of no files."""
        if self.sink.committed is not None and self.sink.first_batch_id == 1:
            empty = self._task(self.planner.new_id(), [])
            yield from self._commit(empty, process_batch(empty))

    def _finish(self) -> None:
        self.complete = (not self.stop and not self.suspects and not self._redo and self._next is None
                         and self.planner.discovery_done)

    def compact(self) -> None:
        """After `run`: a complete job's closing work in the sink (compaction). A signal during
        it leaves the job resumable."""
        if self.complete:
            self.timeline.compaction_started = time.time()
            try:
                self.compaction = self.sink.finish(should_stop=lambda: bool(self.stop))
            except JobError as err:  # the job's lock is no longer this run's
                self.stop.request(str(err), 1)
            finally:
                self.timeline.compaction_ended = time.time()
            if self.compaction is not None:
                self.timeline.compaction_overlapped_s = self.compaction.get("early_s", 0.0)
            self.complete = not self.stop
        self._ended = True

    def close(self) -> RunSummary:
        """The run's summary, saved by the sink, which is closed. A run that did not get to its
        end (the consumer stopped early, or an error escaped) is stopped, resumable."""
        if not self._ended:
            self.complete = False
            self.stop.request(self.stop.reason or "stopped by the caller", 1)
        self.final_summary = self.sink.amend(self.summary())
        if self.final_summary.state == "complete" and self.cache_folder == JobLayout(self.config.output).blob_cache:
            shutil.rmtree(self.cache_folder, ignore_errors=True)  # the job's own cache: done with
        self.sink.close(self.final_summary, self.sink.before + self.tally)
        return self.final_summary

    def _fill(self):
        """Submit batches while the governor allows; yields what forced rows commit."""
        governor = self.governor
        if governor.recycle_wanted:
            if self.inflight:
                return  # let the pool go idle first
            recycled = self.executor.recycle()
            if recycled and self.watchdog is not None:
                self.watchdog.reset()
            governor.recycled(recycled)
        while governor.may_submit(len(self.inflight)):
            if self._next is None:
                self._next = yield from self._next_task()
                if self._next is None:
                    return
            task, estimate = self._next
            reserved = sum(entry.estimate for entry in self.inflight.values())
            if not governor.admit(estimate, reserved, len(self.inflight)):
                return
            self._next = None
            self._submit(task, isolated=False, estimate=estimate)

    def _next_task(self):
        """The next batch to run and its estimated peak: one to redo, else a new one. Files the
        budget cannot hold get their `too_large` rows at once, unread."""
        if self._redo:
            task = self._redo.popleft()
            return task, self.governor.batch_estimate(task.files)
        while True:
            batch = self.planner.next_batch(self.governor.target_batch_bytes())
            if self.planner.discovery_done and not self.timeline.discovery_done:
                self.timeline.discovery_done = time.time()
            if batch is None:
                return None
            files = batch.files
            too_large = self.governor.too_large(files)
            if too_large:
                for index, why in too_large.items():
                    forced = self._task(self.planner.new_id(), [files[index]], forced=("too_large", why))
                    yield from self._commit(forced, process_batch(forced))
                files = [f for i, f in enumerate(files) if i not in too_large]
            if files:
                task = self._task(batch.batch_id, files)
                return task, self.governor.batch_estimate(task.files)

    def _check_watchdog(self) -> bool:
        """Kill workers stuck on one file; whether the watchdog broke the pool (a pool it broke
        took innocent batches down with the stuck one)."""
        if self.watchdog is None:
            return False
        if not self.stop:
            for stuck in self.watchdog.overdue(self.executor.worker_pids()):
                self.executor.kill_worker(stuck.pid)
                self.watchdog_kills += 1
                self.governor.record("killed_stuck_worker", pid=stuck.pid, batch_id=stuck.batch_id,
                                     file_index=stuck.index, seconds=stuck.seconds)
        return bool(self.watchdog.killed)

    def _after_death(self, task: BatchTask, isolated: bool):
        """A batch failed with its worker: killed by the watchdog, taken down with the pool by
        that kill, or a crash to isolate."""
        stuck = self.watchdog.take(task.batch_id, task.attempt) if self.watchdog else None
        if stuck is not None:
            yield from self._after_timeout(task, stuck)
        elif self._watchdog_broke:
            self._redo.append(task)
        else:
            if isolated and self.batches_parsed == 0 and self.crashed_isolations >= WORKERS_NEVER_WORK:
                # Not a poison file: workers that cannot even start (a script calling run() without
                # the __main__ guard, a plugin that kills its importer) would mark every file crashed.
                raise JobError(
                    f"worker processes died {self.crashed_isolations + 1} times in a row without finishing "
                    "any batch: they cannot start or run; check that --parser modules import cleanly and "
                    "that a script calling snakebatch.run guards it with `if __name__ == \"__main__\":`"
                )
            yield from self._after_failure(task, isolated, "crashed",
                                           "the worker process died while parsing this file")

    def _after_timeout(self, task: BatchTask, stuck: Stuck):
        """The watchdog killed a worker stuck on one file: retry that file alone or give it
        `timeout`; the rest of its batch is redone."""
        self.retries += 1
        files = task.files
        culprit = files[stuck.index]
        rest = files[:stuck.index] + files[stuck.index + 1:]
        if rest:
            self._redo.append(self._task(self.planner.new_id(), rest, source=task.source_label))
        # A batch of one is the culprit's own retry: its attempt counts the kills before.
        kills = (task.attempt if len(files) == 1 else 0) + 1
        if kills <= self.config.retries:
            self._redo.append(self._task(self.planner.new_id(), [culprit], attempt=kills, source=task.source_label))
            return
        message = (f"parsing took longer than --file-timeout {self.config.file_timeout:g}s without returning; "
                   f"the worker was killed after {stuck.seconds:.1f}s ({kills} attempt{'s' if kills > 1 else ''})")
        forced = self._task(self.planner.new_id(), [culprit], attempt=kills, forced=("timeout", message),
                            source=task.source_label)
        yield from self._commit(forced, process_batch(forced))

    def _after_failure(self, task: BatchTask, isolated: bool, status: str, message: str):
        """A batch failed: redo it alone, split it, or give its one file the failure's status."""
        self.retries += 1
        if not isolated:
            self.suspects.append(task)
            return
        self.crashed_isolations += 1
        files = task.files
        if len(files) > 1:
            half = len(files) // 2
            for part in (files[:half], files[half:]):
                self.suspects.append(self._task(self.planner.new_id(), part, attempt=0, source=task.source_label))
            return
        if task.attempt < self.config.retries:
            self.suspects.append(self._task(task.batch_id, files, attempt=task.attempt + 1, source=task.source_label))
            return
        attempts = task.attempt + 1
        forced = self._task(task.batch_id, files, attempt=task.attempt + 1,
                            forced=(status, f"{message} ({attempts} attempt{'s' if attempts > 1 else ''})"),
                            source=task.source_label)
        yield from self._commit(forced, process_batch(forced))

    def _commit(self, task: BatchTask, outcome: BatchOutcome):
        yield from self._commit_group([(task, outcome)])

    def _commit_group(self, done: list[tuple[BatchTask, BatchOutcome]]):
        try:
            yield from self.sink.commit_group(done)
        except OSError as err:
            ids = ", ".join(str(task.batch_id) for task, _ in done[:5]) + (", ..." if len(done) > 5 else "")
            raise JobError(f"cannot commit batch{'es' if len(done) > 1 else ''} {ids} to {self.config.output}: "
                           f"{err}") from err
        except JobError:  # the job's lock is no longer this run's
            raise
        for task, outcome in done:
            self._committed(task, outcome)

    def _committed(self, task: BatchTask, outcome: BatchOutcome) -> None:
        """What this run learns from a batch once it is committed."""
        self._learn_copies(task, outcome)
        failures_before = self.tally.failures
        self.tally.add(outcome)
        if self.cache is not None:
            self.cache.stored(outcome.cache_bytes)
        failures = self.tally.failures - failures_before
        if task.forced_status is None and task.files:
            self.batches_parsed += 1
        if len(self.error_samples) < 10:
            self.error_samples.extend(outcome.errors[: 10 - len(self.error_samples)])
        # Only a worker's outcome teaches the governor: the job's empty first part and forced rows
        # (too_large, timeout, crashed) were written here, and their RSS is this process's (117 MB
        # beside 70 MB workers; taken for a worker's rest it made the next small files too_large).
        if task.files and task.forced_status is None:
            self.governor.observe(outcome)
        if failures and self.config.fail_fast:
            path, status = next(((p, s) for p, s, _ in outcome.errors if s in FAILURE_STATUSES), ("a file", "error"))
            self.stop.request(f"--fail-fast: {path} has status {status}", 1)
        elif self.config.max_errors is not None and self.tally.failures >= self.config.max_errors:
            self.stop.request(f"--max-errors {self.config.max_errors}: {self.tally.failures} files have status "
                              "crashed, timeout or parser_error", 1)
        self._maybe_progress()

    # -- reporting -----------------------------------------------------------------------------

    def progress(self) -> Progress:
        total = None
        if self.planner.discovery_done:
            seen_before = self.sink.committed.seen if self.sink.committed is not None else 0
            total = seen_before + self.planner.discovered
        before, run = self.sink.before, self.tally
        return Progress(
            files_done=before.files + run.files,
            files_total=total,
            bytes_done=before.bytes + run.bytes,
            errors=before.errors + run.errors,
            elapsed_s=time.monotonic() - self._started,
            rss_bytes=self.governor.rss,
            memory=self.governor.brief(),
        )

    def _maybe_progress(self, final: bool = False) -> None:
        if self.on_progress is None:
            return
        now = time.monotonic()
        if final or now - self._last_progress >= PROGRESS_INTERVAL_S:
            self._last_progress = now
            self.on_progress(self.progress())

    def summary(self) -> RunSummary:
        elapsed = time.monotonic() - self._started
        committed = self.sink.committed
        run = self.tally
        job = self.sink.before + run
        if self.complete:
            state, exit_code = "complete", 0
        else:
            state = "interrupted" if self.stop.exit_code == 130 else "stopped"
            exit_code = self.stop.exit_code or 1
        warnings = []
        took_nothing = self.discovery_stats.filters_took_nothing(job.files)
        if self.complete and took_nothing:
            warnings.append(took_nothing)
        if self.cache is not None and self.cache.problem:
            warnings.append(self.cache.problem)
        removed = 0
        if committed is not None and self.complete:
            removed = len(committed.files) - committed.seen
        return RunSummary(
            state=state,
            exit_code=exit_code,
            output=self.config.output,
            files=job.files,
            files_this_run=run.files,
            bytes=job.bytes,
            bytes_this_run=run.bytes,
            status_counts=dict(sorted(job.status_counts.items(), key=lambda kv: -kv[1])),
            language_counts=dict(sorted(job.language_counts.items(), key=lambda kv: -kv[1])),
            elapsed_s=round(elapsed, 3),
            files_per_s=round(run.files / elapsed, 1) if elapsed > 0 else 0.0,
            mb_per_s=round(run.bytes / 1e6 / elapsed, 2) if elapsed > 0 else 0.0,
            peak_rss_bytes=self.governor.peak_rss,
            batches_this_run=run.batches,
            retries=self.retries,
            crashed_isolations=self.crashed_isolations,
            stale_files=committed.stale_count if committed is not None else 0,
            stale_sample=committed.stale[:10] if committed is not None else [],
            removed_files=removed,
            unreadable_folders=self.discovery_stats.unreadable_folders[:20],
            stop_reason=self.stop.reason,
            resume_command=None if self.complete else self.sink.resume_command(),
            error_samples=self.error_samples,
            governor=self.governor.stats(),
            recovery=self.sink.recovery,
            watchdog_kills=self.watchdog_kills,
            compaction=self.compaction,
            io_errors_rechecked=dict(self.sink.io_errors_rechecked),
            job_folders=self.discovery_stats.job_folders[:20],
            warnings=warnings,
            parses=dict(run.parses),
            cache=self.cache.summary() if self.cache is not None else None,
            serial=self._serial(),
        )

    def _serial(self) -> dict:
        self.timeline.summary_at = time.time()
        return serial_fraction(self.timeline, self.busy, self.config.workers)
