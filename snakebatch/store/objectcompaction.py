"""Compaction of a job in object storage: generations under prefixes of their own, published
through pointer objects, and how a reader finds the current one.

Owns: `OUT/_snakebatch/generations/<g>-<run>/<table>/part-c<g>-<k>.parquet` (a generation's
parts; a refresh's also `ledger.json` and `changes.parquet`), `OUT/_snakebatch/current/<g>.json`
(its pointer), `OUT/_snakebatch/changes/<g>.parquet` and `OUT/_snakebatch/refresh/intent.json`
(a refresh's feed and intent), their recovery, and the list of parts a reader of the job reads
(`dataset_keys`). Which files a refresh parses is engine/refresh.py's. Must not touch: the batch parts in `OUT/<table>/` (the
ledger in objectstore.py commits them; compaction only reads them and never deletes them),
parsing, scheduling.

There is no rename in object storage, so a table's parts cannot be swapped in one step: a
listing of `OUT/files/` during a swap would show old and new parts together (rows twice) or
neither (rows missing). So the batch parts stay as committed (a listing of `OUT/<table>/` is
always every committed batch, once), and a compaction is a copy written under a new prefix,
immutable once published. Protocol (generation g, all tables):

    1. the live parts (generation g-1's, then each batch part it does not cover, in batch
       order)  ->  generations/<g>-<run>/<table>/part-c<g>-<k>.parquet, whole puts
    2. ledger segment `compact` holding the Generation, put create-only: the commit point (a
       run that lost the ledger to another run cannot commit a generation)
    3. current/<g>.json := the Generation, put create-only; readers take the highest g
    4. delete every object under generations/ that neither g nor g-1 references (a reader
       that resolved g-1 a moment ago keeps its parts until the next compaction)

A refresh (`refresh`) is a generation too, committed by a `refresh` segment: its parts are the
live parts without an affected path, referenced where they are (under an earlier generation's
prefix, or a batch part in OUT/<table>/: so deletion counts references, not prefixes), the parts
with affected paths rewritten without those rows, and the new batches' rows (from staging); it
names the new snapshot's whole ledger (`ledger.json`) and sets `through`, above which batch
parts are read beside it (the batch parts below are the snapshot before the first refresh, which
a plain listing reader keeps seeing). A refresh's generation that lost a part cannot be withdrawn
(the batch parts are older): recovery refuses the job then.

Recovery, once a run has won the open segment: put the last committed generation's pointer if
it is missing (cut off between 2 and 3); withdraw a generation that covers a dropped batch or
lost a part (missing, or not of its recorded size): a `compact` segment and pointer of an empty
generation g+1, so readers fall back to the batch parts until the run compacts again; delete
the generation prefixes other than the last two committed (cut off in 1 or 4).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from ..config import JobConfig
from ..errors import JobError
from ..schema import TABLES, table_schema
from .compaction import TARGET_PART_BYTES, CompactionReport, PartWriter
from .durable import Damage
from .layout import part_name
from .ledger import LedgerEntry
from .objectstore import (
    CURRENT,
    GENERATIONS,
    STATE,
    Generation,
    GenerationPart,
    ObjectJob,
    Opened,
    Segment,
    store_error,
)
from .snapshot import CHANGES, Intent, change_feed, conform, rewrite_rows
from .snapshot import Generation as Snapshot

INTENT = f"{STATE}/refresh/intent.json"


def pointer_key(generation: int) -> str:
    return f"{CURRENT}/{generation:010d}.json"


def changes_key(generation: int) -> str:
    """A refresh's change feed, as for a folder (store/snapshot.py)."""
    return f"{STATE}/{CHANGES}/{generation:06d}.parquet"


def current_generation(job: ObjectJob) -> Generation | None:
    """The generation readers read: the highest pointer's, or None (never compacted)."""
    keys = sorted(m["path"] for m in job.list_prefix(CURRENT) if m["path"].endswith(".json"))
    for key in reversed(keys):
        data = job.get_object(key)
        if data is not None:
            return msgspec.json.decode(data, type=Generation)
    return None


def dataset_keys(job: ObjectJob, table: str) -> list[str]:
    """The keys (relative to OUT) holding `table`'s rows, each row once: the current
    generation's parts, then the batch parts it does not cover (committed since)."""
    generation = current_generation(job)
    covered = set(generation.covers) if generation else set()
    through = generation.through if generation else 0
    keys = [part.key for part in generation.tables.get(table, [])] if generation else []
    for name in sorted(job.table_parts(table)):
        batch = int(name[5:13]) if name.startswith("part-") and name[5:13].isdigit() else None
        if batch not in covered and (batch is None or batch > through):
            keys.append(f"{table}/{name}")
    return keys


def live_keys(current: Generation | None, entries: list[LedgerEntry], table: str,
              batches: set | None = None) -> list[str]:
    """`dataset_keys` from what a run opened (the live ledger and the current generation); only
    the parts holding rows of `batches` when given."""
    covered = set(current.covers) if current is not None and current.tables else set()
    parts = current.tables.get(table, []) if current is not None else []
    keys = [part.key for part in parts if batches is None or not batches.isdisjoint(part.batches)]
    return keys + [f"{table}/{part_name(e.batch_id)}" for e in entries
                   if e.batch_id not in covered and (batches is None or e.batch_id in batches)]


class _Stopped(Exception):
    pass


class TableWriter:
    """One table of a generation being written under `prefix`: the live parts `add`ed (in
    order) streamed into parts of about TARGET_PART_BYTES, each written to a file in `scratch`
    (a folder of the table's own), then put under `prefix/<table>/`."""

    def __init__(self, job: ObjectJob, table: str, prefix: str, number: int, scratch: str):
        self.job = job
        self.table = table
        self.prefix = prefix
        self.number = number
        self.scratch = os.path.join(scratch, table)
        os.makedirs(self.scratch, exist_ok=True)
        self.writer = PartWriter(self.scratch)
        self.written: list[GenerationPart] = []

    def add(self, key: str, batches: list[int], transform: Callable | None) -> None:
        """The rows of the part at `key` (through `transform`, when given)."""
        data = self.job.get_object(key)
        if data is None:
            raise JobError(f"{self.job.url}: {key} vanished during compaction (deleted outside snakebatch?); "
                           "resume to redo its batch")
        if self.writer.bytes_in >= TARGET_PART_BYTES:
            self._put()
        rows = pq.ParquetFile(pa.BufferReader(data)).read(use_threads=False)
        self.writer.add_table(transform(rows) if transform else rows, batches, len(data))

    def _put(self) -> None:
        import obstore

        name = f"part-c{self.number:04d}-{len(self.written):05d}.parquet"
        part = self.writer.close(name)
        key = f"{self.prefix}/{self.table}/{name}"
        path = os.path.join(self.scratch, name)
        with open(path, "rb") as fh:
            obstore.put(self.job.store, key, fh)
        os.unlink(path)
        self.written.append(GenerationPart(key=key, batches=part.batches, rows=part.rows, size=part.size,
                                           xxh3=part.xxh3))

    def finish(self) -> list[GenerationPart]:
        """Put what is left: the table's parts."""
        if self.writer.bytes_in:
            self._put()
        else:
            self.writer.abandon()
        return self.written

    def abandon(self) -> None:
        self.writer.abandon()


class EarlyGeneration:
    """Generation g+1 begun while a complete job's last batches still run, as a folder's twins
    are (store/compaction.py `EarlyCompaction`): generation g's parts, then the parts of each
    batch committed for good (`add`, in batch order), are read and written into the tables one
    part at a time (`step`), by the coordinator in moments it has nothing else to do. Once the
    last batch commits, `ObjectCompactor.compact` takes it over, writes the parts it has not,
    commits and publishes (steps 2-4 of the protocol above). Nothing here goes past step 1: a
    crash leaves a prefix no segment names, which the next run's recovery deletes; a job that
    does not complete `abandon`s it. Not a thread, for the reason EarlyCompaction gives."""

    def __init__(self, compactor: ObjectCompactor, current: Generation | None):
        self.job = compactor.job
        self.number = (current.generation if current else 0) + 1
        self.prefix = f"{GENERATIONS}/{self.number:010d}-{self.job.run_token}"
        self.tables: dict[str, TableWriter] = {}
        self.scratch: str | None = None
        self.written_keys: set[str] = set()  # the live parts in the tables
        self.batches = 0  # batches whose parts are in the tables
        self.seconds = 0.0  # the steps' time
        self._covered = set(current.covers) if current else set()
        self._todo: deque[tuple[str, str, list[int]]] = deque(
            (table, part.key, part.batches) for table in TABLES for part in (current.tables.get(table, []) if current else []))

    @property
    def begun(self) -> bool:
        return self.scratch is not None

    def begin(self) -> None:
        self.scratch = tempfile.mkdtemp(prefix="snakebatch-compact-")
        self.tables = {table: TableWriter(self.job, table, self.prefix, self.number, self.scratch) for table in TABLES}

    def add(self, batch_ids: list[int]) -> None:
        """Batches whose parts are final, after those added before."""
        self._todo.extend((table, f"{table}/{part_name(b)}", [b])
                          for b in batch_ids if b not in self._covered for table in TABLES)

    def step(self) -> bool:
        """Write one part into its table (the first step begins the generation); False when none
        is left. JobError when a part vanished; OSError when the store fails."""
        if not self._todo:
            return False
        started = time.monotonic()
        if not self.begun:
            self.begin()
        table, key, batches = self._todo.popleft()
        try:
            self.tables[table].add(key, batches, None)
        except (JobError, OSError):
            raise
        except Exception as err:  # obstore.exceptions.*: the store failed after its retries
            raise OSError(store_error(err)) from None
        self.written_keys.add(key)
        self.batches += table == TABLES[-1] and not key.startswith(GENERATIONS)
        self.seconds += time.monotonic() - started
        return True

    def remove_scratch(self) -> None:
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def abandon(self) -> None:
        """Delete what was written (the job did not complete, or the compaction was stopped)."""
        self._todo.clear()
        for table in self.tables.values():
            table.abandon()
        self.remove_scratch()
        if self.begun:
            with contextlib.suppress(Exception):  # the store failed: the next run's recovery deletes the prefix
                self.job.delete_keys([m["path"] for m in self.job.list_prefix(self.prefix)])
        self.tables = {}


class ObjectCompactor:
    """Compaction and its recovery for the job `job` (whose open segment this run won)."""

    def __init__(self, job: ObjectJob):
        self.job = job
        self.withdrawn: Generation | None = None  # a damaged generation `settle` withdrew

    def _publish(self, generation: Generation, kind: str = "compact") -> None:
        """Steps 2 and 3: the compact (or refresh) segment (JobError if another run took the
        ledger), then the pointer."""
        self.job.put_segment(Segment(kind=kind, run=self.job.run_token, generation=generation))
        self._put_pointer(generation)

    def _put_pointer(self, generation: Generation) -> None:
        import obstore
        from obstore.exceptions import AlreadyExistsError

        try:
            obstore.put(self.job.store, pointer_key(generation.generation), msgspec.json.encode(generation),
                        mode="create")
        except AlreadyExistsError:
            pass  # put by the run that committed it, before it was cut off

    def _delete_generations(self, keep: list[Generation]) -> None:
        """Delete every object under the generations prefix that none of `keep` references
        (a refresh's generation references parts of earlier ones where they are)."""
        referenced = {part.key for g in keep for parts in g.tables.values() for part in parts}
        referenced |= {key for g in keep for key in (g.ledger, g.changes) if key}
        self.job.delete_keys([m["path"] for m in self.job.list_prefix(GENERATIONS) if m["path"] not in referenced])

    def problems(self, generation: Generation | None, deep: bool = False) -> list[Damage]:
        """The generation's parts not as committed: missing, size, checksum (with `deep`)."""
        import xxhash

        if generation is None or not generation.tables:
            return []
        folders = {part.key.rsplit("/", 1)[0] for parts in generation.tables.values() for part in parts}
        present = {m["path"]: m["size"] for folder in sorted(folders) for m in self.job.list_prefix(folder)}
        found = []
        for table in TABLES:
            for part in generation.tables.get(table, []):
                name = part.key.rsplit("/", 1)[-1]
                if part.key not in present:
                    found.append(Damage(table, name, "missing"))
                elif present[part.key] != part.size:
                    found.append(Damage(table, name, "size"))
                elif deep:
                    data = self.job.get_object(part.key)
                    if data is None or xxhash.xxh3_64_hexdigest(data) != part.xxh3:
                        found.append(Damage(table, name, "checksum" if data is not None else "missing"))
        return found

    # -- recovery ------------------------------------------------------------------------------

    def settle(self, opened: Opened) -> Generation | None:
        """Finish or undo what a cut-off compaction left (see the protocol above); the current
        generation, or None when the job was never compacted."""
        generations = list(opened.generations)
        if not generations:
            self._delete_generations([])
            return None
        current = generations[-1]
        self._put_pointer(current)
        batches = {entry.batch_id for entry in opened.entries}
        damaged = current.tables and (set(current.covers) - batches or self.problems(current))
        if damaged and current.ledger:
            problems = self.problems(current)
            raise JobError(f"{self.job.url}: generation {current.generation}, the refreshed snapshot readers read, "
                           "lost parts (" + ", ".join(f"{d.table}/{d.part} {d.problem}" for d in problems[:3])
                           + "); a refreshed job cannot rebuild them from its batch parts: start over with --fresh")
        if damaged:
            self.withdrawn = current
            current = Generation(generation=current.generation + 1, prefix="", covers=[], tables={},
                                 compacted_at=time.time())
            self._publish(current)
            generations.append(current)
        self._finish_feed(generations)
        self._delete_generations(generations[-2:])
        return current

    def _finish_feed(self, generations: list[Generation]) -> None:
        """Copy the last refresh's change feed to `_snakebatch/changes/<g>.parquet` if a run
        was cut off before it did (the feed is part of the refresh's generation until then)."""
        import obstore
        from obstore.exceptions import NotFoundError

        last = next((g for g in reversed(generations) if g.changes), None)
        if last is None or self.job.get_object(changes_key(last.generation)) is not None:
            return
        try:
            obstore.copy(self.job.store, last.changes, changes_key(last.generation))
        except (NotFoundError, FileNotFoundError):
            pass  # deleted with its generation: the feed was copied before (then deleted outside snakebatch)

    # -- compaction ----------------------------------------------------------------------------

    def compact(self, current: Generation | None, batch_ids: list[int], should_stop: Callable[[], bool],
                early: EarlyGeneration | None = None) -> tuple[Generation, CompactionReport] | None:
        """Write, commit and publish generation g+1 if batches were committed since generation
        g and a table has more than one part. None when there was nothing to do or
        `should_stop()` turned true (nothing committed then). `early`: the generation begun while
        the last batches ran (taken over: only the parts it has not written are left). JobError
        when another run took the ledger; OSError when the store fails (the job stays complete
        without it)."""
        started = time.monotonic()
        covered = set(current.covers) if current else set()
        live = {table: ([(part.key, part.batches) for part in current.tables.get(table, [])] if current else [])
                + [(f"{table}/{part_name(b)}", [b]) for b in sorted(batch_ids) if b not in covered]
                for table in TABLES}
        if set(batch_ids) <= covered or all(len(parts) <= 1 for parts in live.values()):
            if early is not None:
                early.abandon()
            return None
        if early is None or not early.begun:
            early = EarlyGeneration(self, current)
            early.begin()
        try:
            tables = {table: self._write([(key, batches, None) for key, batches in live[table]
                                          if key not in early.written_keys], early.tables[table], should_stop)
                      for table in TABLES}
        except _Stopped:
            early.abandon()
            return None
        except (JobError, OSError):
            raise
        except Exception as err:  # obstore.exceptions.*: the store failed after its retries
            raise OSError(store_error(err)) from None
        finally:
            early.remove_scratch()
        generation = Generation(generation=early.number, prefix=early.prefix, covers=sorted(covered | set(batch_ids)),
                                tables=tables, compacted_at=time.time(), through=current.through if current else 0,
                                ledger=current.ledger if current else "")
        try:
            self._publish(generation)
            self._delete_generations([generation] + ([current] if current else []))
        except JobError:
            raise
        except Exception as err:  # the store failed: before the segment, an orphan prefix the next open deletes
            raise OSError(store_error(err)) from None
        report = CompactionReport(parts_before=sum(len(p) for p in live.values()),
                                  parts_after=sum(len(p) for p in tables.values()),
                                  rows=sum(part.rows for parts in tables.values() for part in parts),
                                  seconds=round(time.monotonic() - started, 3), early_batches=early.batches,
                                  early_s=round(early.seconds, 3))
        return generation, report

    @staticmethod
    def _write(parts: list[tuple[str, list[int], Callable | None]], table: TableWriter,
               should_stop: Callable[[], bool]) -> list[GenerationPart]:
        """`parts` (key, batch ids, a function of its rows or None) added to `table`, which is then
        finished: its parts."""
        for key, batches, transform in parts:
            if should_stop():
                table.abandon()
                raise _Stopped
            table.add(key, batches, transform)
        return table.finish()

    # -- refresh -------------------------------------------------------------------------------

    def refresh(self, current: Generation | None, live_entries: list[LedgerEntry], spec: Snapshot,
                staged: dict[int, str], job: JobConfig, through: int) -> Generation:
        """Write, commit and publish a refresh's generation `spec.generation` (see "Refresh"
        above): `staged` names each new batch's staging (relative to the state prefix),
        `through` the highest batch id ever given. JobError when another run took the ledger;
        OSError when the store fails (nothing is committed then: the next run redoes it)."""
        import obstore

        number = spec.generation
        prefix = f"{GENERATIONS}/{number:010d}-{self.job.run_token}"
        by_batch = {entry.batch_id: entry for entry in live_entries}
        kept = {entry.batch_id for entry in spec.entries}
        drop_batches = {b for b, entry in by_batch.items() if spec.drop.intersection(entry.paths)}
        patch_batches = {b for b, entry in by_batch.items() if not spec.patch.keys().isdisjoint(entry.paths)}
        drop = pa.array(sorted(spec.drop), type=pa.string())
        patch_keys = pa.array(list(spec.patch), type=pa.string())
        patch_values = pa.array(list(spec.patch.values()), type=pa.int64())
        base = current.tables if current is not None else {}
        covered = set(current.covers) if current is not None and current.tables else set()
        scratch = tempfile.mkdtemp(prefix="snakebatch-refresh-")
        try:
            tables: dict[str, list[GenerationPart]] = {}
            for table in TABLES:
                schema = table_schema(table, spec.content)
                affected = drop_batches | (patch_batches if table == "files" else set())
                if table == "files" and spec.commit is not None:
                    affected = set(by_batch)

                def transform(rows, table=table, schema=schema):
                    return conform(rewrite_rows(rows, table, drop, patch_keys, patch_values, spec.commit), schema)

                referenced, rewritten = [], []
                for part in base.get(table, []):
                    if affected.intersection(part.batches):
                        rewritten.append((part.key, [b for b in part.batches if b in kept], transform))
                    else:
                        referenced.append(part)
                for b in sorted(set(by_batch) - covered):
                    recorded = by_batch[b].parts.get(table)
                    key = f"{table}/{part_name(b)}"
                    if b in affected or not recorded or recorded[0] < 0:
                        rewritten.append((key, [b] if b in kept else [], transform))
                    else:  # the batch part as it is, where it is
                        referenced.append(GenerationPart(key=key, batches=[b], rows=by_batch[b].rows.get(table, 0),
                                                         size=recorded[0], xxh3=recorded[1]))
                new = [(f"{STATE}/{staged[b]}/{table}.parquet", [b], None) for b in spec.new_batches]
                tables[table] = referenced + self._write(rewritten + new,
                                                         TableWriter(self.job, table, prefix, number, scratch),
                                                         lambda: False)
            ledger, changes = f"{prefix}/ledger.json", f"{prefix}/changes.parquet"
            obstore.put(self.job.store, ledger, msgspec.json.encode(spec.entries))
            feed = pa.BufferOutputStream()
            pq.write_table(change_feed(spec), feed)
            obstore.put(self.job.store, changes, feed.getvalue().to_pybytes())
        except (JobError, OSError):
            raise
        except Exception as err:  # obstore.exceptions.*: the store failed after its retries
            raise OSError(f"{self.job.url}: {store_error(err)}") from None
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        generation = Generation(generation=number, prefix=prefix, covers=sorted(kept), tables=tables,
                                compacted_at=time.time(), through=max([through, *kept]), ledger=ledger,
                                changes=changes, refresh=spec.refresh, job=job)
        self._publish(generation, kind="refresh")  # the commit point
        try:
            self._finish_feed([generation])
            self.job.delete_keys([f"{STATE}/{staged[b]}/{table}.parquet" for b in spec.new_batches for table in TABLES]
                                 + [INTENT])
            self._delete_generations([generation] + ([current] if current is not None else []))
        except Exception as err:  # committed: the next run finishes the feed and deletes the rest
            print(f"snakebatch: warning: {self.job.url}: the refresh is committed, its cleanup failed: {store_error(err)}",
                  file=sys.stderr)
        return generation


def read_intent(job: ObjectJob) -> Intent | None:
    """The intent of the refresh under way (or cut off), if any."""
    data = job.get_object(INTENT)
    return msgspec.json.decode(data, type=Intent) if data is not None else None


def begin(job: ObjectJob, intent: Intent) -> None:
    """A refresh starts: its intent, so that a `--resume` knows to redo it."""
    import obstore

    obstore.put(job.store, INTENT, msgspec.json.encode(intent))


def pending_refresh(job: ObjectJob, segments: list[Segment]) -> Intent | None:
    """The intent of a refresh cut off before its commit point (read-only)."""
    intent = read_intent(job)
    committed = max((s.generation.generation for s in segments if s.kind in ("compact", "refresh")), default=0)
    return intent if intent is not None and intent.generation > committed else None
