"""Sinks: where a finished batch goes. The output folder with its ledger, or a stream of Arrow.

Owns: turning a worker's staged part files into committed output (`OutputSink`) or into
record batches handed to the caller (`StreamSink`), and what a run needs to know of earlier
runs (committed files, counts, the next batch id). Must not touch: scheduling or parsing.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from typing import Callable

import msgspec
import pyarrow.parquet as pq

from .batching import CommittedIndex
from ..config import RunConfig
from ..store.jobfolder import clear_complete, open_job, read_json, resume_command, write_json
from ..store.ledger import Ledger, LedgerEntry
from ..store.snapshot import settle
from ..schema import TABLES
from .worker import BatchOutcome, BatchTask


def stat_data(source: str, files: list) -> list:
    """[ctime_ns, inode, mode] of each file now, for a later --refresh. Taken after the worker
    read the file: a change in between is after the run started, so the racy-clean rule has the
    refresh hash it (engine/refresh.py)."""
    stats = []
    for f in files:
        try:
            st = os.stat(os.path.join(source, f[0]))
            stats.append([st.st_ctime_ns, st.st_ino, st.st_mode])
        except OSError:
            stats.append([0, 0, 0])
    return stats


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
                entries, report.manifest, config.job.source)
        except BaseException:
            self.lock.release()
            raise
        self.recovery = report.describe() or None
        self.committed = CommittedIndex()
        self.status_counts: dict[str, int] = {}
        self.language_counts: dict[str, int] = {}
        self.files_committed = 0
        self.bytes_committed = 0
        self.first_batch_id = 1
        self.batch_ids = [entry.batch_id for entry in entries]
        self.manifest = report.manifest
        # The whole job's totals, from the ledger: right even when an earlier run was killed.
        self.job_totals = {"batches": 0, "files": 0, "bytes": 0, "parse_s": 0.0, "rows": dict.fromkeys(TABLES, 0)}
        for entry in entries:
            self._count(entry)
            self.first_batch_id = max(self.first_batch_id, entry.batch_id + 1)
        self.batch_stats: list[dict] = []

    def _count(self, entry: LedgerEntry) -> None:
        self.committed.add(entry.paths, entry.sizes, entry.mtimes)
        self.files_committed += len(entry.paths)
        self.bytes_committed += entry.bytes
        for status, count in Counter(entry.statuses).items():
            self.status_counts[status] = self.status_counts.get(status, 0) + count
        for language, count in entry.language_counts.items():
            self.language_counts[language] = self.language_counts.get(language, 0) + count
        self._count_totals(entry)

    def _count_totals(self, entry: LedgerEntry) -> None:
        totals = self.job_totals
        totals["batches"] += 1
        totals["files"] += len(entry.paths)
        totals["bytes"] += entry.bytes
        totals["parse_s"] += entry.parse_s
        for table, count in entry.rows.items():
            totals["rows"][table] = totals["rows"].get(table, 0) + count

    def staging_for(self, batch_id: int, attempt: int) -> str:
        return self.ledger.staging_for(batch_id, attempt)

    def commit(self, task: BatchTask, outcome: BatchOutcome):
        from ..paths import display_path

        entry = LedgerEntry(
            batch_id=task.batch_id,
            staging=os.path.relpath(outcome.staging, self.ledger.state),
            paths=[display_path(f[0]) for f in task.files],
            sizes=[m[0] for m in outcome.files_meta],
            mtimes=[m[1] for m in outcome.files_meta],
            statuses=outcome.statuses,
            rows=outcome.rows,
            bytes=outcome.bytes,
            parse_s=round(outcome.parse_s, 4),
            language_counts=outcome.language_counts,
            committed_at=time.time(),
            run_started_at=self.started_at,
            parts=outcome.parts,
            stats=stat_data(self.config.job.source, task.files),
        )
        self.lock.check()
        self.ledger.commit(entry, outcome.staging)
        self.batch_ids.append(entry.batch_id)
        self._count_totals(entry)
        self.batch_stats.append(
            {"batch_id": task.batch_id, "files": len(task.files), "bytes": outcome.bytes,
             "parse_s": round(outcome.parse_s, 4), "rows": outcome.rows, "attempt": task.attempt,
             "worker_pid": outcome.pid, "worker_rss_bytes": outcome.rss_bytes}
        )
        return iter(())

    def resume_command(self) -> str:
        return resume_command(self.config.job, self.config.output)

    def amend(self, summary):
        """The run's summary as this sink completes it (a refresh tells the new snapshot's counts)."""
        return summary

    def finish(self, should_stop: Callable[[], bool]) -> dict | None:
        """Compact the complete job's tables (unless `--no-compact`); what was done, or None.
        JobError when the job's lock is no longer this run's."""
        if not self.config.compact:
            return None
        from ..store.compaction import Compactor

        self.lock.check()
        try:
            done = Compactor(self.config.output).compact(self.manifest, self.batch_ids, should_stop)
        except OSError as err:
            # The job is complete without it: its batch parts stay (or a resume finishes the swap).
            print(f"snakebatch: warning: cannot compact the tables in {self.config.output}: {err}", file=sys.stderr)
            return None
        if done is None:
            return None
        self.manifest, report = done
        return msgspec.structs.asdict(report)

    def close(self, summary) -> None:
        """Save the run's stats (and the completion marker) and release the lock.

        The stats are a record, not job state: when OUT cannot be written any more (the reason a
        run may have stopped), they are given up with a warning and the job stays resumable."""
        out = self.config.output
        try:
            self.ledger.close()
            previous = read_json(out, "stats.json")
            runs = previous.get("runs", []) if isinstance(previous, dict) else []
            runs.append({"started_at": self.started_at, "elapsed_s": summary.elapsed_s, "state": summary.state,
                         "files_this_run": summary.files_this_run, "stop_reason": summary.stop_reason})
            totals = dict(self.job_totals, parse_s=round(self.job_totals["parse_s"], 3))
            write_json(out, "stats.json", {"summary": summary, "job": totals, "runs": runs[-1000:],
                                           "batches": self.batch_stats[-10000:]})
            if summary.state == "complete":
                write_json(out, "complete.json",
                           {"completed_at": time.time(), "files": summary.files, "status_counts": summary.status_counts})
        except OSError as err:
            print(f"snakebatch: warning: cannot save the run's stats in {out}: {err}", file=sys.stderr)
        finally:
            self.lock.release()


class StreamSink:
    """Reads each batch's parts back as Arrow record batches and deletes them; writes nothing
    that outlives the run."""

    recovery = None

    def __init__(self, config: RunConfig):
        self.config = config
        self.tmp = tempfile.mkdtemp(prefix="snakebatch-stream-")
        self.io_errors_rechecked = {"gone": 0, "back": 0}
        self.committed = None
        self.status_counts: dict[str, int] = {}
        self.language_counts: dict[str, int] = {}
        self.files_committed = 0
        self.bytes_committed = 0
        self.first_batch_id = 1

    def staging_for(self, batch_id: int, attempt: int) -> str:
        return os.path.join(self.tmp, f"b{batch_id:08d}.{attempt}")

    def commit(self, task: BatchTask, outcome: BatchOutcome):
        try:
            for table in TABLES:
                parquet = pq.read_table(os.path.join(outcome.staging, table + ".parquet"))
                for batch in parquet.to_batches():
                    yield table, batch
        finally:
            shutil.rmtree(outcome.staging, ignore_errors=True)

    def resume_command(self) -> None:
        return None

    def amend(self, summary):
        return summary

    def finish(self, should_stop: Callable[[], bool]) -> None:
        return None

    def close(self, summary) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
