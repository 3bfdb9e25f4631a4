"""Compaction of a job in object storage: generations under prefixes of their own, published
through pointer objects, and how a reader finds the current one.

Owns: `OUT/_snakebatch/generations/<g>-<run>/<table>/part-c<g>-<k>.parquet` (a generation's
parts), `OUT/_snakebatch/current/<g>.json` (its pointer), their recovery, and the list of parts a
reader of the job reads (`dataset_keys`). Must not touch: the batch parts in `OUT/<table>/` (the
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
    4. delete every generation prefix but g's and g-1's (a reader that resolved g-1 a moment
       ago keeps its parts until the next compaction)

Recovery, once a run has won the open segment: put the last committed generation's pointer if
it is missing (cut off between 2 and 3); withdraw a generation that covers a dropped batch or
lost a part (missing, or not of its recorded size): a `compact` segment and pointer of an empty
generation g+1, so readers fall back to the batch parts until the run compacts again; delete
the generation prefixes other than the last two committed (cut off in 1 or 4).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable

import msgspec

from ..errors import JobError
from ..schema import TABLES
from .compaction import TARGET_PART_BYTES, CompactionReport, PartWriter
from .durable import Damage
from .layout import part_name
from .objectstore import CURRENT, GENERATIONS, Generation, GenerationPart, ObjectJob, Opened, Segment, store_error


def pointer_key(generation: int) -> str:
    return f"{CURRENT}/{generation:010d}.json"


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
    keys = [part.key for part in generation.tables.get(table, [])] if generation else []
    for name in sorted(job.table_parts(table)):
        batch = int(name[5:13]) if name.startswith("part-") and name[5:13].isdigit() else None
        if batch not in covered:
            keys.append(f"{table}/{name}")
    return keys


class _Stopped(Exception):
    pass


class ObjectCompactor:
    """Compaction and its recovery for the job `job` (whose open segment this run won)."""

    def __init__(self, job: ObjectJob):
        self.job = job
        self.withdrawn: Generation | None = None  # a damaged generation `settle` withdrew

    def _publish(self, generation: Generation) -> None:
        """Steps 2 and 3: the compact segment (JobError if another run took the ledger), then
        the pointer."""
        self.job.put_segment(Segment(kind="compact", run=self.job.run_token, generation=generation))
        self._put_pointer(generation)

    def _put_pointer(self, generation: Generation) -> None:
        import obstore
        from obstore.exceptions import AlreadyExistsError

        try:
            obstore.put(self.job.store, pointer_key(generation.generation), msgspec.json.encode(generation),
                        mode="create")
        except AlreadyExistsError:
            pass  # put by the run that committed it, before it was cut off

    def _delete_generations(self, keep: set[str]) -> None:
        self.job.delete_keys([m["path"] for m in self.job.list_prefix(GENERATIONS)
                          if "/".join(m["path"].split("/")[:3]) not in keep])

    def problems(self, generation: Generation | None, deep: bool = False) -> list[Damage]:
        """The generation's parts not as committed: missing, size, checksum (with `deep`)."""
        import xxhash

        if generation is None or not generation.tables:
            return []
        present = {m["path"]: m["size"] for m in self.job.list_prefix(generation.prefix)}
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
            self._delete_generations(set())
            return None
        current = generations[-1]
        self._put_pointer(current)
        batches = {entry.batch_id for entry in opened.entries}
        if current.tables and (set(current.covers) - batches or self.problems(current)):
            self.withdrawn = current
            current = Generation(generation=current.generation + 1, prefix="", covers=[], tables={},
                                 compacted_at=time.time())
            self._publish(current)
            generations.append(current)
        self._delete_generations({g.prefix for g in generations[-2:] if g.prefix})
        return current

    # -- compaction ----------------------------------------------------------------------------

    def compact(self, current: Generation | None, batch_ids: list[int],
                should_stop: Callable[[], bool]) -> tuple[Generation, CompactionReport] | None:
        """Write, commit and publish generation g+1 if batches were committed since generation
        g and a table has more than one part. None when there was nothing to do or
        `should_stop()` turned true (nothing committed then). JobError when another run took
        the ledger; OSError when the store fails (the job stays complete without it)."""
        started = time.monotonic()
        covered = set(current.covers) if current else set()
        if set(batch_ids) <= covered:
            return None
        live = {table: ([(part.key, part.batches) for part in current.tables.get(table, [])] if current else [])
                + [(f"{table}/{part_name(b)}", [b]) for b in sorted(batch_ids) if b not in covered]
                for table in TABLES}
        if all(len(parts) <= 1 for parts in live.values()):
            return None
        number = (current.generation if current else 0) + 1
        prefix = f"{GENERATIONS}/{number:010d}-{self.job.run_token}"
        scratch = tempfile.mkdtemp(prefix="snakebatch-compact-")
        try:
            tables = {table: self._write(table, live[table], prefix, number, scratch, should_stop) for table in TABLES}
        except _Stopped:
            self.job.delete_keys([m["path"] for m in self.job.list_prefix(prefix)])
            return None
        except (JobError, OSError):
            raise
        except Exception as err:  # obstore.exceptions.*: the store failed after its retries
            raise OSError(store_error(err)) from None
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        generation = Generation(generation=number, prefix=prefix, covers=sorted(covered | set(batch_ids)),
                                tables=tables, compacted_at=time.time())
        try:
            self._publish(generation)
            self._delete_generations({prefix} | ({current.prefix} if current and current.prefix else set()))
        except JobError:
            raise
        except Exception as err:  # the store failed: before the segment, an orphan prefix the next open deletes
            raise OSError(store_error(err)) from None
        report = CompactionReport(parts_before=sum(len(p) for p in live.values()),
                                  parts_after=sum(len(p) for p in tables.values()),
                                  rows=sum(part.rows for parts in tables.values() for part in parts),
                                  seconds=round(time.monotonic() - started, 3))
        return generation, report

    def _write(self, table: str, parts: list[tuple[str, list[int]]], prefix: str, number: int, scratch: str,
               should_stop: Callable[[], bool]) -> list[GenerationPart]:
        """Stream `parts` (key, batch ids) into parts of about TARGET_PART_BYTES, each written
        to `scratch` then put under `prefix/table/`."""
        import obstore
        import pyarrow as pa
        import pyarrow.parquet as pq

        written: list[GenerationPart] = []
        writer = PartWriter(scratch)

        def close() -> None:
            name = f"part-c{number:04d}-{len(written):05d}.parquet"
            part = writer.close(name)
            key = f"{prefix}/{table}/{name}"
            path = os.path.join(scratch, name)
            with open(path, "rb") as fh:
                obstore.put(self.job.store, key, fh)
            os.unlink(path)
            written.append(GenerationPart(key=key, batches=part.batches, rows=part.rows, size=part.size,
                                          xxh3=part.xxh3))

        for key, batches in parts:
            if should_stop():
                writer.abandon()
                raise _Stopped
            data = self.job.get_object(key)
            if data is None:
                raise JobError(f"{self.job.url}: {key} vanished during compaction (deleted outside snakebatch?); "
                               "resume to redo its batch")
            if writer.bytes_in >= TARGET_PART_BYTES:
                close()
            writer.add_table(pq.ParquetFile(pa.BufferReader(data)).read(use_threads=False), batches, len(data))
        if writer.bytes_in:
            close()
        else:
            writer.abandon()
        return written
