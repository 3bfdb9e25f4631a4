"""Sinks: where a finished batch goes. The output folder with its ledger, or a stream of Arrow.

Owns: the `Sink` protocol; turning a worker's staged part files into committed output
(`OutputSink` for a folder, `ObjectStoreSink` for object storage) or into record batches handed to the caller (`StreamSink`), and what a run needs
to know of earlier runs (committed files, their counts, the next batch id). Must not touch:
scheduling, parsing, or counting this run's batches (the coordinator's `Tally` does).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Generic, Protocol, TypeVar

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from .._version import __version__
from ..config import JobConfig, RunConfig
from ..errors import ConfigError, JobError
from ..paths import source_path
from ..schema import TABLES
from ..store.compaction import EARLY_FROM_BATCHES, Compactor, EarlyCompaction
from ..store.jobfolder import (
    JobRecord,
    clear_complete,
    job_differences,
    open_job,
    read_json,
    write_json,
)
from ..store.ledger import Ledger, LedgerEntry
from ..store.objectcompaction import EarlyGeneration, ObjectCompactor, pending_refresh
from ..store.objectsource import has_object
from ..store.objectstore import ObjectJob, is_object_url, last_refresh, object_resume_command, store_error
from ..store.snapshot import Intent, settle
from .batching import CommittedIndex, ledger_key
from .tally import Tally
from .worker import BatchOutcome, BatchTask


class Sink(Protocol):
    """Where the coordinator sends each finished batch."""

    committed: CommittedIndex | None  # files earlier runs committed; None: nothing is resumed
    before: Tally  # what earlier runs committed
    first_batch_id: int
    recovery: str | None  # what opening the job repaired, in words
    io_errors_rechecked: dict  # {"gone": n, "back": n}: io_error rows a --resume removed

    def staging_for(self, batch_id: int, attempt: int) -> str:
        """The folder a worker writes this attempt's part files into."""

    def commit(self, task: BatchTask, outcome: BatchOutcome) -> Iterator[tuple[str, pa.RecordBatch]]:
        """Commit a finished batch, yielding what the caller receives of it (a stream's
        `(table, record batch)` pairs; nothing for the output folder). Committed once exhausted."""

    def commit_group(self, done: list[tuple[BatchTask, BatchOutcome]]) -> Iterator[tuple[str, pa.RecordBatch]]:
        """Commit batches that finished together, as `commit` would each (`commit_each`); the
        output folder makes them durable together (one ledger write and fsync)."""

    def resume_command(self) -> str | None:
        """The command that continues this job, if it can be continued."""

    def amend(self, summary):
        """The run's summary as this sink completes it (a refresh tells the new snapshot's counts)."""

    def tail(self, final_below: int) -> None:
        """Discovery has ended, and every batch below `final_below` that will commit has
        committed: the closing work may begin on those while the last batches run."""

    def work(self) -> bool:
        """One short step of the closing work `tail` allowed, in a moment the coordinator has
        nothing else to do; False when there is none."""

    def finish(self, should_stop: Callable[[], bool]) -> dict | None:
        """Work once the job is complete (compaction); what was done, or None. JobError when
        the job's lock is no longer this run's."""

    def close(self, summary, job: Tally) -> None:
        """The run is over (`summary`, `job` the whole job's counts): save its record, release OUT."""


def commit_each(sink: Sink, done: list[tuple[BatchTask, BatchOutcome]]) -> Iterator[tuple[str, pa.RecordBatch]]:
    """`Sink.commit_group` of a sink with nothing to share between commits: one after another."""
    for task, outcome in done:
        yield from sink.commit(task, outcome)


class EarlyWork(Protocol):
    """Compaction begun while a complete job's last batches run: a folder's twins
    (store/compaction.py `EarlyCompaction`) or object storage's next generation
    (store/objectcompaction.py `EarlyGeneration`)."""

    def add(self, batch_ids: list[int]) -> None:
        """Batches whose parts are final, after those added before."""

    def step(self) -> bool:
        """One part written; False when none is left. OSError (or JobError) when it cannot be."""

    def abandon(self) -> None:
        """Delete what was written."""


Early = TypeVar("Early", bound=EarlyWork)


class TailCompaction(Generic[Early]):
    """A sink's compaction in the tail: the committed batches not handed to it yet, and the
    compaction itself once EARLY_FROM_BATCHES batches are final (`tail`), stepped in the
    coordinator's idle moments (`work`), taken over by the sink's `finish` (`take`). A step that
    fails gives it up until the job is complete (its compaction then warns or fails as before)."""

    def __init__(self, enabled: bool, committed: list[int], covered: list[int], begin: Callable[[], Early]):
        """`committed`: the job's batches so far; `covered`: those its last compaction holds."""
        self.enabled = enabled
        self.early: Early | None = None
        self._failed = False
        compacted = set(covered)
        self._not_early = [batch_id for batch_id in committed if batch_id not in compacted]
        self._begin = begin

    def committed(self, batch_id: int) -> None:
        self._not_early.append(batch_id)

    def tail(self, final_below: int) -> None:
        """Begin once EARLY_FROM_BATCHES batches are final; then hand it each batch that becomes
        final (every batch below `final_below` is committed), in batch order."""
        if not self.enabled or self._failed:
            return
        final = [batch_id for batch_id in self._not_early if batch_id < final_below]
        if not final or (self.early is None and len(final) < EARLY_FROM_BATCHES):
            return
        if self.early is None:
            self.early = self._begin()
        self._not_early = [batch_id for batch_id in self._not_early if batch_id >= final_below]
        self.early.add(sorted(final))

    def work(self) -> bool:
        if self.early is None:
            return False
        try:
            return self.early.step()
        except (OSError, JobError):
            self.early.abandon()
            self.early, self._failed = None, True
            return False

    def take(self) -> Early | None:
        early, self.early = self.early, None
        return early

    def abandon(self) -> None:
        """The job did not complete: what was written goes."""
        if self.early is not None:
            self.take().abandon()


def ledger_entry(task: BatchTask, outcome: BatchOutcome, staging: str, paths: list, run_started_at: float,
                 **fields) -> LedgerEntry:
    """The ledger's record of a batch, from what its worker returned (`fields`: a sink's own)."""
    return LedgerEntry(
        batch_id=task.batch_id, staging=staging, paths=paths,
        sizes=[m[0] for m in outcome.files_meta], mtimes=[m[1] for m in outcome.files_meta],
        statuses=outcome.statuses, rows=outcome.rows, bytes=outcome.bytes,
        parse_s=round(outcome.parse_s, 4), language_counts=outcome.language_counts,
        committed_at=time.time(), run_started_at=run_started_at, parts=outcome.parts,
        parsed=outcome.parsed, reused=outcome.reused, cached=outcome.cached, source=task.source_label, **fields,
    )


def worktree_stats(job, outcome: BatchOutcome) -> list:
    """[ctime_ns, inode, mode] of each file as the worker opened it (engine/worker.py), for a later
    --refresh: a change after that shows there, and one in the same tick is racy-clean there. A git
    source and an object-store one have no working-tree stat data to compare."""
    return outcome.stats if job.commit is None and not is_object_url(job.source) else []


def source_has(config: RunConfig) -> Callable[[str, str], bool]:
    """Whether the file of a table `path` of the source labelled so is there now (a folder, or
    object storage)."""
    folders = {spec.label: spec.path for spec in config.job.sources}

    def has(label: str, path: str) -> bool:
        source = folders.get(label, config.job.source)
        if is_object_url(source):
            return has_object(source, config.source_store_options, os.fsdecode(source_path(path)))
        return os.path.isfile(os.path.join(os.fsencode(source), source_path(path)))

    return has


def batch_record(task: BatchTask, outcome: BatchOutcome) -> dict:
    """A committed batch as stats.json lists it."""
    return {"batch_id": task.batch_id, "files": len(task.files), "bytes": outcome.bytes,
            "parse_s": round(outcome.parse_s, 4), "rows": outcome.rows, "attempt": task.attempt,
            "worker_pid": outcome.pid, "worker_rss_bytes": outcome.rss_bytes}


class OutputSink:
    """Commits batches to OUT through the ledger; holds OUT's lock from open to close."""

    def __init__(self, config: RunConfig):
        self.config = config
        self.lock = open_job(config)
        self.started_at = time.time()  # after the lock: `status` tells this run's entries by it
        try:
            self.ledger = Ledger(config.output)
            self.ledger.create()
            clear_complete(config.output)
            entries, report = self.ledger.recover()
            settle(config.output)  # what a refresh cut off after its commit point left
            # --resume re-checks files that could not be read: their rows go, and those that
            # are there now are parsed again (a fresh or new job has none).
            entries, self.io_errors_rechecked = self.ledger.forget_io_errors(
                entries, report.manifest, source_has(config))
        except BaseException:
            self.lock.release()
            raise
        self.recovery = report.describe() or None
        self.first_batch_id = max((entry.batch_id + 1 for entry in entries), default=1)
        self.batch_ids = [entry.batch_id for entry in entries]
        self.manifest = report.manifest
        self._take_committed(entries)
        self.batch_stats: list[dict] = []
        self.early = TailCompaction(config.compact, self.batch_ids, self.manifest.covers if self.manifest else [],
                                    lambda: EarlyCompaction(Compactor(self.config.output), self.manifest))

    def _take_committed(self, entries: list[LedgerEntry]) -> None:
        """Index what earlier runs committed (this run skips it) and count it: right even when
        an earlier run was killed. (A refresh plans from the entries instead.)"""
        self.committed = CommittedIndex(by_blob=self.config.job.history, only_source=self.config.job.sources[0].label)
        self.before = Tally()
        for entry in entries:
            self.committed.add(entry.source, entry.paths, entry.sizes, entry.mtimes)
            self.before.add(entry)

    def staging_for(self, batch_id: int, attempt: int) -> str:
        return self.ledger.staging_for(batch_id, attempt)

    def commit(self, task: BatchTask, outcome: BatchOutcome) -> Iterator[tuple[str, pa.RecordBatch]]:
        return self.commit_group([(task, outcome)])

    def commit_group(self, done: list[tuple[BatchTask, BatchOutcome]]) -> Iterator[tuple[str, pa.RecordBatch]]:
        """One ledger write and fsync for all of `done` (store/ledger.py `commit_group`)."""
        history = self.config.job.history
        entries = [(ledger_entry(task, outcome, os.path.relpath(outcome.staging, self.ledger.state),
                                 [ledger_key(f, history) for f in task.files], self.started_at,
                                 stats=worktree_stats(self.config.job, outcome)), outcome.staging)
                   for task, outcome in done]
        self.lock.check()
        self.ledger.commit_group(entries)
        for (entry, _), (task, outcome) in zip(entries, done):
            self.batch_ids.append(entry.batch_id)
            self.early.committed(entry.batch_id)
            self.batch_stats.append(batch_record(task, outcome))
        yield from ()  # the output folder hands the caller nothing

    def resume_command(self) -> str:
        return object_resume_command(self.config.job, self.config.output, self.config.storage_options,
                                     self.config.source_options)

    def amend(self, summary):
        """The run's summary as this sink completes it (a refresh tells the new snapshot's counts)."""
        return summary

    def tail(self, final_below: int) -> None:
        """Begin compacting in the tail (unless `--no-compact`): `TailCompaction`."""
        self.early.tail(final_below)

    def work(self) -> bool:
        return self.early.work()

    def finish(self, should_stop: Callable[[], bool]) -> dict | None:
        """Compact the complete job's tables (unless `--no-compact`); what was done, or None.
        JobError when the job's lock is no longer this run's."""
        if not self.config.compact:
            return None
        self.lock.check()
        try:
            done = Compactor(self.config.output).compact(self.manifest, self.batch_ids, should_stop, self.early.take())
        except OSError as err:
            # The job is complete without it: its batch parts stay (or a resume finishes the swap).
            print(f"snakebatch: warning: cannot compact the tables in {self.config.output}: {err}", file=sys.stderr)
            return None
        if done is None:
            return None
        self.manifest, report = done
        return msgspec.structs.asdict(report)

    def close(self, summary, job: Tally) -> None:
        """Save the run's stats (and the completion marker) and release the lock.

        The stats are a record, not job state: when OUT cannot be written any more (the reason a
        run may have stopped), they are given up with a warning and the job stays resumable."""
        out = self.config.output
        try:
            self.early.abandon()  # the job did not complete: its twins go
            self.ledger.close()
            previous = read_json(out, "stats.json")
            runs = previous.get("runs", []) if isinstance(previous, dict) else []
            runs.append({"started_at": self.started_at, "elapsed_s": summary.elapsed_s, "state": summary.state,
                         "files_this_run": summary.files_this_run, "stop_reason": summary.stop_reason})
            write_json(out, "stats.json", {"summary": summary, "job": job.job_totals(), "runs": runs[-1000:],
                                           "batches": self.batch_stats[-10000:]})
            if summary.state == "complete":
                write_json(out, "complete.json",
                           {"completed_at": time.time(), "files": summary.files, "status_counts": summary.status_counts})
        except OSError as err:
            print(f"snakebatch: warning: cannot save the run's stats in {out}: {err}", file=sys.stderr)
        finally:
            self.lock.release()


class PreparedJob(msgspec.Struct):
    """An OUT in object storage checked for the run's mode, before the run opens it: the job's
    segments (read for a resume or a refresh), the options its rows were made with, and the
    intent of a refresh that was cut off before its commit point."""

    job: ObjectJob
    segments: list | None = None
    record: JobRecord | None = None
    rows_job: JobConfig | None = None  # the last refresh's options, or the job record's
    pending: Intent | None = None


def prepare_object_job(config: RunConfig) -> PreparedJob:
    """As open_job for a local OUT: new, fresh, resume or refresh, checked against the job's
    options (the last refresh's, or those of a refresh cut off, which a resume redoes)."""
    out, mode = config.output, config.mode
    try:
        job = ObjectJob(config.output, config.storage_options)
        job.check_reachable()
        data = job.read_job()
        if mode == "fresh" and data is not None:
            job.remove_all()
            data = None
        if mode in ("resume", "refresh"):
            if data is None:
                raise ConfigError(f"--{mode}: {out} holds no snakebatch job to {mode}; run without --{mode} to start one")
            record = msgspec.json.decode(data, type=JobRecord)
            if not record.job.sources:
                raise ConfigError(f"--{mode}: {out} holds a job written by an earlier snakebatch, whose tables "
                                  "have no `source` column; start over with --fresh")
            segments = job.segments()
            refresh = last_refresh(segments)[1]
            rows_job = refresh.job if refresh is not None and refresh.job is not None else record.job
            pending = pending_refresh(job, segments)
            if mode == "refresh":
                if os.path.realpath(record.job.source) != os.path.realpath(config.job.source):
                    raise ConfigError(f"--refresh: {out} holds the job of {record.job.source}, not of "
                                      f"{config.job.source}; refresh it with its own SOURCE, or start over with --fresh")
            else:
                diffs = job_differences(pending.job if pending is not None and pending.job else rows_job, config.job)
                if diffs:
                    raise ConfigError("--resume: these options differ from the job's, and would change its rows: "
                                      + "; ".join(diffs) + ". Resume with the job's values, or start over with --fresh")
            return PreparedJob(job, segments, record, rows_job, pending)
        if data is not None:
            raise ConfigError(f"{out} already holds a snakebatch job: add --resume to continue it, --refresh to "
                              "bring it up to date, or --fresh to delete it and start over")
        if job.has_anything():
            raise ConfigError(f"-o/--output: {out} is not empty and holds no snakebatch job; choose an empty prefix")
        record = JobRecord(job=config.job, snakebatch_version=__version__, created_at=time.time())
        job.create_job(msgspec.json.encode(record))
        return PreparedJob(job, record=record, rows_job=config.job)
    except (ConfigError, JobError):
        raise
    except Exception as err:  # obstore.exceptions.*: the store failed after its retries
        raise JobError(f"-o/--output: cannot open the job in {config.output}: {store_error(err)}") from None


class ObjectStoreSink:
    """Commits batches to an OUT in object storage (store/objectstore.py): ledger segments put
    create-only, parts copied into place; once complete, a compacted generation
    (store/objectcompaction.py). No lock to release (the next segment's create-only put is the lock)."""

    def __init__(self, config: RunConfig, prepared: PreparedJob | None = None):
        self.config = config
        self.started_at = time.time()
        self.io_errors_rechecked = {"gone": 0, "back": 0}
        self.prepared = prepared or prepare_object_job(config)
        self.job = self.prepared.job
        try:
            opened = self.opened = self.job.open(self.prepared.segments)
            self.compactor = ObjectCompactor(self.job)
            self.current_generation = self.compactor.settle(opened)
        except (ConfigError, JobError):
            raise
        except Exception as err:  # obstore.exceptions.*: the store failed after its retries
            raise JobError(f"-o/--output: cannot open the job in {config.output}: {store_error(err)}") from None
        done = [f"rolled {opened.rolled} part(s) forward"] if opened.rolled else []
        done += [f"deleted {opened.removed} staging object(s)"] if opened.removed else []
        if opened.redone:
            done.append(f"{len({d.part for d in opened.redone})} batch(es) to redo, their parts missing or changed: "
                        + ", ".join(f"{d.table}/{d.part} ({d.problem})" for d in opened.redone[:5]))
        if self.compactor.withdrawn:
            done.append(f"withdrew compacted generation {self.compactor.withdrawn.generation} (it held a "
                        "redone batch or lost a part): readers read the batch parts until it is rebuilt")
        self.recovery = "; ".join(done) or None
        self.committed = CommittedIndex(only_source=config.job.sources[0].label)
        self.before = Tally()
        self.first_batch_id = opened.next_batch_id
        self.batch_ids = [entry.batch_id for entry in opened.entries]
        for entry in opened.entries:
            self.committed.add(entry.source, entry.paths, entry.sizes, entry.mtimes)
            self.before.add(entry)
        self.batch_stats: list[dict] = []
        self.early = TailCompaction(config.compact, self.batch_ids,
                                    self.current_generation.covers if self.current_generation else [],
                                    lambda: EarlyGeneration(self.compactor, self.current_generation))

    def staging_for(self, batch_id: int, attempt: int) -> str:
        return self.job.staging_url(batch_id, attempt)

    def commit(self, task: BatchTask, outcome: BatchOutcome) -> Iterator[tuple[str, pa.RecordBatch]]:
        entry = ledger_entry(task, outcome, self.job.staging_of(outcome.staging),
                             [ledger_key(f, self.config.job.history) for f in task.files], self.started_at,
                             stats=worktree_stats(self.config.job, outcome))
        self.job.commit(entry)
        self.batch_ids.append(entry.batch_id)
        self.early.committed(entry.batch_id)
        self.batch_stats.append(batch_record(task, outcome))
        yield from ()

    commit_group = commit_each  # a segment put per batch (store/objectstore.py)

    def resume_command(self) -> str:
        return object_resume_command(self.config.job, self.config.output, self.config.storage_options,
                                     self.config.source_options)

    def amend(self, summary):
        return summary

    def tail(self, final_below: int) -> None:
        """Begin the next generation in the tail (unless `--no-compact`): `TailCompaction`."""
        self.early.tail(final_below)

    def work(self) -> bool:
        return self.early.work()

    def finish(self, should_stop: Callable[[], bool]) -> dict | None:
        """Compact the complete job into a new generation (unless `--no-compact`); what was
        done, or None. JobError when another run took the ledger."""
        if not self.config.compact:
            return None
        try:
            done = self.compactor.compact(self.current_generation, self.batch_ids, should_stop, self.early.take())
        except OSError as err:
            # The job is complete without it: readers read the batch parts (or the last generation).
            print(f"snakebatch: warning: cannot compact the tables in {self.config.output}: {err}", file=sys.stderr)
            return None
        if done is None:
            return None
        self.current_generation, report = done
        return msgspec.structs.asdict(report)

    def close(self, summary, job: Tally) -> None:
        """Save the run's stats (and the completion marker), then put the run's `close` segment;
        a failure to is a warning (a run that lost the ledger to another writes no close)."""
        self.early.abandon()  # the job did not complete: the generation begun in the tail goes
        try:
            previous = self.job.read_state("stats.json")
            previous = msgspec.json.decode(previous) if previous else {}
            runs = previous.get("runs", []) if isinstance(previous, dict) else []
            runs.append({"started_at": self.started_at, "elapsed_s": summary.elapsed_s, "state": summary.state,
                         "files_this_run": summary.files_this_run, "stop_reason": summary.stop_reason,
                         "run": self.job.run_token})
            self.job.write_json("stats.json", msgspec.json.format(msgspec.json.encode(
                {"summary": summary, "job": job.job_totals(), "runs": runs[-1000:],
                 "batches": self.batch_stats[-10000:]})))
            if summary.state == "complete":
                self.job.write_json("complete.json", msgspec.json.encode(
                    {"completed_at": time.time(), "files": summary.files, "status_counts": summary.status_counts}))
            self.job.close_run()
        except JobError:
            pass  # another run put the next segment: it is the job's open run now
        except Exception as err:  # obstore.exceptions.*: the record is given up, the job stays resumable
            print(f"snakebatch: warning: cannot save the run's stats in {self.config.output}: {store_error(err)}",
                  file=sys.stderr)


class StreamSink:
    """Reads each batch's parts back as Arrow record batches and deletes them; writes nothing
    that outlives the run."""

    recovery = None

    def __init__(self, config: RunConfig):
        self.config = config
        self.tmp = tempfile.mkdtemp(prefix="snakebatch-stream-")
        self.io_errors_rechecked = {"gone": 0, "back": 0}
        self.committed = None
        self.before = Tally()
        self.first_batch_id = 1

    def staging_for(self, batch_id: int, attempt: int) -> str:
        return os.path.join(self.tmp, f"b{batch_id:08d}.{attempt}")

    def commit(self, task: BatchTask, outcome: BatchOutcome) -> Iterator[tuple[str, pa.RecordBatch]]:
        try:
            for table in TABLES:
                parquet = pq.read_table(os.path.join(outcome.staging, table + ".parquet"))
                for batch in parquet.to_batches():
                    yield table, batch
        finally:
            shutil.rmtree(outcome.staging, ignore_errors=True)

    commit_group = commit_each

    def resume_command(self) -> None:
        return None

    def amend(self, summary):
        return summary

    def tail(self, final_below: int) -> None:
        pass

    def work(self) -> bool:
        return False

    def finish(self, should_stop: Callable[[], bool]) -> None:
        return None

    def close(self, summary, job: Tally) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
