"""Compaction: once a job is complete (begun in its tail), each table's many batch parts become a few large ones.

Owns: the manifest `OUT/_snakebatch/compaction.json`, the folders
`OUT/_snakebatch/compacting/<table>/`, and the swap of a table folder with its compacted twin.
Must not touch: ledger lines (the ledger reads the manifest, never the other way round),
parsing, scheduling.

A reader lists a table folder and then opens what it listed; replacing N parts by one with
renames inside the folder would show the rows twice (new part first) or not at all (old parts
first). So the compacted parts are built in a twin folder, and the twin and the table folder
are exchanged in one step (Linux `renameat2(RENAME_EXCHANGE)`): a reader lists either all old
parts or all new ones. Where the exchange is not available, parts stay as they are.

Protocol (generation g, all tables):

    1. every live part of T, in batch order  ->  compacting/T/part-c<g>-<k>.parquet, fsynced
    2. compaction.json := {generation, covered batch ids, the new parts}   (tmp + rename:
       the commit point)
    3. per table: exchange compacting/T <-> T; then the old parts in compacting/T are deleted,
       and anything else the table folder held (not snakebatch's) is moved back into it

Step 1 may begin before the job is complete (`EarlyCompaction`): once discovery has ended, the
coordinator writes the parts of batches committed for good into the twins, in batch order, in
moments it has nothing else to do while the last batches run; `compact` then adds only the parts
not written yet. A run that ends incomplete deletes those twins, and never writes step 2.

A crash before 2 leaves twins that recovery deletes (the old parts stay live); a crash after it
leaves twins recovery exchanges (roll forward). From then on, a covered batch's rows live in the
compacted parts, not in `part-<batch>.parquet`. If a covered batch's ledger line is later found
corrupt, or one of its compacted parts is lost, its rows are cut out of the compacted parts (by
`batch_id` in `files`, by path in the others) so that its files are redone once, as for an
uncompacted batch.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import JobError
from ..schema import TABLES
from .durable import PARQUET_OPTIONS, Damage, atomic_write, check_part, file_checksum, fsync_dir, write_part
from .layout import JobLayout, is_own_part, part_name

MANIFEST = "compaction.json"
# Input bytes (Parquet on disk) per compacted part: large enough that a big job has few parts,
# small enough that a reader can spread parts over its threads.
TARGET_PART_BYTES = 256 * 1024 * 1024
# Rows per row group: DuckDB and pyarrow skip a row group by its min/max statistics, and rows
# arrive in discovery order (sorted paths), so path filters skip most of a large table. Memory
# grows with it (three tables at once): compacting 1M small files' tables peaked at +157 MB with
# 64k rows, +91 MB with 16k, which keeps the end of a job under the peak of its run.
ROW_GROUP_ROWS = 16 * 1024
# Rows per compacted part (it is closed at whichever bound comes first): a refresh rewrites each
# part that holds a changed file, so a one-file change costs a part's rows, not the table's. On
# tree100k (550k rows in three tables, one part each) that rewrite was 1.1-1.6 s of a 1-file
# refresh; parts of two row groups bound it to ~100k rows.
PART_ROWS = 2 * ROW_GROUP_ROWS
# Batches committed for good, once discovery has ended, from which compaction begins while the
# last batches run (EarlyCompaction); a smaller job compacts after its last batch, as its
# compaction is short.
EARLY_FROM_BATCHES = 8


class CompactedPart(msgspec.Struct):
    name: str
    batches: list[int]  # batch ids whose rows it holds
    rows: int
    size: int = -1  # bytes and xxh3-64 hex of the file as written (-1, "": not recorded)
    xxh3: str = ""


class Manifest(msgspec.Struct):
    generation: int
    covers: list[int]  # batch ids whose rows live in compacted parts
    tables: dict[str, list[CompactedPart]]
    compacted_at: float = 0.0
    # Written by a refresh (store/snapshot.py): its generation's ledger file, until renamed over
    # ledger.jsonl, and what the refresh did (for `status`; carried over by later compactions).
    ledger: str | None = None
    refresh: dict | None = None

    def names(self, table: str) -> set[str]:
        return {part.name for part in self.parts(table)}

    def written(self, table: str) -> set[str]:
        """The parts this generation wrote (the others it linked from earlier ones)."""
        prefix = f"part-c{self.generation:04d}-"
        return {name for name in self.names(table) if name.startswith(prefix)}

    def parts(self, table: str) -> list[CompactedPart]:
        return self.tables.get(table, [])


class CompactionReport(msgspec.Struct):
    parts_before: int
    parts_after: int
    rows: int
    seconds: float  # after the job completed
    early_batches: int = 0  # batches whose parts were written while the last batches ran
    early_s: float = 0.0  # the time that took (not in `seconds`)


def read_manifest(state: str) -> Manifest | None:
    path = os.path.join(state, MANIFEST)
    try:
        with open(path, "rb") as fh:
            return msgspec.json.decode(fh.read(), type=Manifest)
    except FileNotFoundError:
        return None
    except (OSError, msgspec.DecodeError) as err:
        raise JobError(f"{path} is unreadable ({err}); start over with --fresh") from None


def files_part_of(manifest: Manifest | None, batch_id: int) -> str:
    """The name of the `files` part that holds `batch_id`'s rows: compacted, or its own."""
    for part in manifest.parts("files") if manifest else ():
        if batch_id in part.batches:
            return part.name
    return part_name(batch_id)


def write_manifest(state: str, manifest: Manifest) -> None:
    atomic_write(os.path.join(state, MANIFEST), msgspec.json.encode(manifest))


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_libc = None


def exchange(a: str, b: str) -> None:
    """Swap two folders atomically; OSError(ENOSYS or EINVAL) where the system cannot."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(_libc, "renameat2", None)
    if renameat2 is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available here", a)
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), a, None, b)


def exchange_supported(folder: str) -> bool:
    """Whether folders in `folder` can be exchanged (kernel, C library and filesystem)."""
    probe_a, probe_b = os.path.join(folder, ".exchange-a"), os.path.join(folder, ".exchange-b")
    try:
        for probe in (probe_a, probe_b):
            os.makedirs(probe, exist_ok=True)
        exchange(probe_a, probe_b)
        return True
    except OSError:
        return False
    finally:
        for probe in (probe_a, probe_b):
            shutil.rmtree(probe, ignore_errors=True)


class Compactor:
    """Compaction and its recovery for the job folder `out` (the caller holds the job's lock)."""

    def __init__(self, out: str):
        self.out = out
        self.layout = JobLayout(out)
        self.state = self.layout.state
        self.twins = self.layout.twins
        self.damaged: list[Damage] = []  # compacted parts `recover` found damaged and removed
        self.rebuilt = False  # whether `recover` rebuilt an unreadable manifest from the parts

    # -- recovery ------------------------------------------------------------------------------

    def recover(self, entries: dict) -> tuple[Manifest | None, int]:
        """Finish or drop a cut-off compaction, and cut out of the compacted parts the rows of
        covered batches that lost their ledger entry (`entries`: the valid ones by batch id) or
        one of their compacted parts; those batches are no longer covered, so the ledger redoes
        them. A compacted part that is not as written (size, checksum) counts as lost, and an
        unreadable manifest is rebuilt from the parts. Returns the manifest and how many batches
        lost their entry."""
        try:
            manifest = read_manifest(self.state)
        except JobError:
            manifest = self._rebuild_manifest()
            self.rebuilt = True
        for table in TABLES:
            folder = self.layout.table_dir(table)
            for name in os.listdir(folder) if os.path.isdir(folder) else ():
                if name.startswith(".part-c") and name.endswith(".tmp"):  # a cut-out cut off
                    os.unlink(os.path.join(folder, name))
            twin = self.layout.twin_dir(table)
            if not os.path.isdir(twin):
                continue
            # This generation's new parts in the twin: committed but not yet swapped in. (After
            # the swap the twin holds the old parts, which may share the names of linked ones.)
            written = manifest.written(table) if manifest else set()
            if written and written <= set(os.listdir(twin)):
                exchange(twin, self.layout.table_dir(table))
                fsync_dir(self.out)
            self._empty_twin(table)
        self._remove_twins()  # what a compaction stopped before its manifest left
        if manifest is None:
            return None, 0
        for table in TABLES:
            for part in manifest.parts(table):
                path = os.path.join(self.layout.table_dir(table), part.name)
                problem = check_part(path, [part.size, part.xxh3], deep=True)
                if problem and problem != "missing":
                    os.unlink(path)  # then lost like a deleted part: its batches are cut out and redone
                    self.damaged.append(Damage(table, part.name, problem))
        unlogged = set(manifest.covers) - set(entries)
        gone = {batch for table in TABLES for part in manifest.parts(table)
                if not os.path.exists(os.path.join(self.layout.table_dir(table), part.name)) for batch in part.batches}
        if unlogged or gone:
            known = {path for batch in gone if batch in entries for path in entries[batch].paths}
            self._cut_out(manifest, unlogged | gone, known)
        return manifest, len(unlogged)

    def _rebuild_manifest(self) -> Manifest | None:
        """A manifest for an unreadable compaction.json, from the compacted parts in the table
        folders: a `files` part's batches are its `batch_id`s, another table's are those of its
        paths' `files` rows. A part that cannot be read is removed (its batches are then redone).
        With a compaction cut off (twins left), which parts are live is unknown: every
        compacted part is then removed, and the batches they held are redone."""
        cut_off = os.path.isdir(self.twins)
        shutil.rmtree(self.twins, ignore_errors=True)
        found: dict[str, list[str]] = {}
        for table in TABLES:
            folder = self.layout.table_dir(table)
            found[table] = sorted(name for name in (os.listdir(folder) if os.path.isdir(folder) else ())
                                  if name.startswith("part-c") and name.endswith(".parquet"))
            if cut_off:
                for name in found[table]:
                    os.unlink(os.path.join(folder, name))
                found[table] = []
        if not any(found.values()):
            return None
        batch_of: dict[str, int] = {}
        tables: dict[str, list[CompactedPart]] = {table: [] for table in TABLES}
        for table in TABLES:  # files first: the other tables' batches come from its rows
            for name in found[table]:
                path = os.path.join(self.layout.table_dir(table), name)
                try:
                    data = pq.read_table(path, columns=["path", "batch_id"] if table == "files" else ["path"])
                except (OSError, ValueError):
                    os.unlink(path)
                    continue
                paths = data["path"].to_pylist()
                if table == "files":
                    batch_of.update(zip(paths, data["batch_id"].to_pylist()))
                    batches = set(data["batch_id"].to_pylist())
                else:
                    batches = {batch_of[p] for p in paths if p in batch_of}
                size, digest = file_checksum(path)
                tables[table].append(CompactedPart(name, sorted(batches), data.num_rows, size, digest))
        generation = max(int(name[6:10]) for names in found.values() for name in names)
        manifest = Manifest(generation=generation, covers=sorted(set(batch_of.values())), tables=tables,
                            compacted_at=time.time())
        write_manifest(self.state, manifest)
        return manifest

    def _cut_out(self, manifest: Manifest, lost: set[int], lost_paths: set[str]) -> None:
        """Remove the rows of `lost` batches from the compacted parts (each part replaced whole;
        a part that is gone leaves the manifest). Rows are found by `batch_id` in `files`, and
        in the other tables by path: `lost_paths` plus the paths of those `files` rows."""
        import pyarrow.compute as pc  # 40 ms of import, for a repair that is rarely needed

        lost_ids = pa.array(sorted(lost), type=pa.int64())
        present = {table: set(os.listdir(self.layout.table_dir(table))) for table in TABLES}
        for part in manifest.parts("files"):
            if lost & set(part.batches) and part.name in present["files"]:
                files = pq.read_table(os.path.join(self.layout.table_dir("files"), part.name), columns=["path", "batch_id"])
                hit = pc.is_in(files["batch_id"], lost_ids.cast(files.schema.field("batch_id").type))
                lost_paths |= set(files.filter(hit)["path"].to_pylist())
        for table in TABLES:
            manifest.tables[table] = [part for part in manifest.parts(table) if part.name in present[table]]
            for part in manifest.parts(table):
                if not lost & set(part.batches):
                    continue
                path = os.path.join(self.layout.table_dir(table), part.name)
                data = pq.read_table(path)
                if table == "files":
                    drop = pc.is_in(data["batch_id"], lost_ids.cast(data.schema.field("batch_id").type))
                else:
                    drop = pc.is_in(data["path"], pa.array(sorted(lost_paths), type=pa.string()))
                kept = data.filter(pc.invert(drop))
                tmp = os.path.join(self.layout.table_dir(table), "." + part.name + ".tmp")
                part.size, part.xxh3 = write_part(kept, tmp, row_group_size=ROW_GROUP_ROWS)
                os.replace(tmp, path)  # a reader sees the old part or the new one, whole
                part.batches = [b for b in part.batches if b not in lost]
                part.rows = kept.num_rows
            fsync_dir(self.layout.table_dir(table))
        manifest.covers = [b for b in manifest.covers if b not in lost]
        write_manifest(self.state, manifest)

    def _empty_twin(self, table: str) -> None:
        """Delete the parts in `table`'s twin and the twin itself. After an exchange the twin is
        the old table folder: whatever else it holds (a user's file) goes back into the table
        folder, never deleted; should its name be taken there, it stays in the twin."""
        twin, folder = self.layout.twin_dir(table), self.layout.table_dir(table)
        for name in os.listdir(twin):
            path = os.path.join(twin, name)
            if (is_own_part(name) or name.startswith(".writing-")) and not os.path.isdir(path):
                os.unlink(path)
            elif not os.path.lexists(os.path.join(folder, name)):
                os.rename(path, os.path.join(folder, name))
        _rmdir_if_empty(twin)

    def _remove_twins(self) -> None:
        """Remove the twins' folder: what a compaction left in it is snakebatch's (parts being
        written, the exchange probes), except what `_empty_twin` kept."""
        if not os.path.isdir(self.twins):
            return
        for name in os.listdir(self.twins):
            path = os.path.join(self.twins, name)
            if name in TABLES:
                self._empty_twin(name)
            else:
                shutil.rmtree(path, ignore_errors=True)
        _rmdir_if_empty(self.twins)

    # -- compaction ----------------------------------------------------------------------------

    def live_parts(self, manifest: Manifest | None, batch_ids: list[int], table: str) -> list[CompactedPart]:
        """The parts of `table`: compacted ones first, then one per batch not yet compacted
        (`rows` -1: not counted)."""
        covered = set(manifest.covers) if manifest else set()
        parts = list(manifest.parts(table)) if manifest else []
        parts += [CompactedPart(part_name(b), [b], -1) for b in sorted(batch_ids) if b not in covered]
        return parts

    def begin(self, manifest: Manifest | None) -> Twins | None:
        """Step 1's start: empty twins for the next generation, or None where the system cannot
        exchange folders."""
        os.makedirs(self.twins, exist_ok=True)
        if not exchange_supported(self.twins):
            return None
        generation = (manifest.generation if manifest else 0) + 1
        tables = {}
        for table in TABLES:
            twin = self.layout.twin_dir(table)
            if os.path.isdir(twin):
                self._empty_twin(table)
            os.makedirs(twin)
            tables[table] = TwinTable(self.layout, table, generation, manifest.parts(table) if manifest else [])
        return Twins(generation, tables)

    def compact(self, manifest: Manifest | None, batch_ids: list[int], should_stop: Callable[[], bool],
                early: EarlyCompaction | None = None) -> tuple[Manifest, CompactionReport] | None:
        """Compact the tables if batches were committed since the last compaction and a table
        has more than one part (see the protocol above). `early`: the twins begun while the last
        batches ran (from `manifest`); only the parts they do not hold yet are added.

        Returns the new manifest and a report, or None when there was nothing to do, the
        system cannot exchange folders, or `should_stop()` turned true (nothing changed then)."""
        started = time.monotonic()
        live = {table: self.live_parts(manifest, batch_ids, table) for table in TABLES}
        if set(batch_ids) <= set(manifest.covers if manifest else ()) or all(len(p) <= 1 for p in live.values()):
            if early is not None:
                early.abandon()
            return None  # nothing new since the last compaction, or one part already
        try:
            twins = early.take_over() if early is not None else None
            twins = twins or self.begin(manifest)
            if twins is None:
                return None
            new = Manifest(generation=twins.generation,
                           covers=sorted(set(batch_ids) | set(manifest.covers if manifest else ())),
                           tables={}, compacted_at=time.time(), refresh=manifest.refresh if manifest else None)

            def build(table: str) -> list[CompactedPart]:
                twin = twins.tables[table]
                twin.add_parts([part for part in live[table] if part.name not in twin.taken], should_stop)
                return twin.close()

            # A thread per table: pyarrow decodes and encodes without holding the GIL.
            with ThreadPoolExecutor(len(TABLES), thread_name_prefix="snakebatch-compact") as pool:
                new.tables = dict(zip(TABLES, pool.map(build, TABLES)))
        except BaseException as err:
            shutil.rmtree(self.twins, ignore_errors=True)  # before the commit point: nothing changed
            if isinstance(err, _Stopped):
                return None
            raise
        rows = sum(part.rows for parts in new.tables.values() for part in parts)
        write_manifest(self.state, new)
        for table in TABLES:
            exchange(self.layout.twin_dir(table), self.layout.table_dir(table))
        fsync_dir(self.out)  # the exchanges are durable before the old parts are deleted
        self._remove_twins()
        report = CompactionReport(
            parts_before=sum(len(parts) for parts in live.values()),
            parts_after=sum(len(parts) for parts in new.tables.values()),
            rows=rows, seconds=round(time.monotonic() - started, 3),
            early_batches=early.batches if early is not None else 0,
            early_s=round(early.seconds, 3) if early is not None else 0.0,
        )
        return new, report


class Twins(NamedTuple):
    """The twins of one generation under construction (protocol step 1)."""

    generation: int
    tables: dict[str, TwinTable]


class TwinTable:
    """One table's twin being written: its parts, in the order given, streamed into compacted
    parts. Compacted parts of the earlier generation that were closed full (all but its last)
    are linked into the twin as they are: a resume that adds a few files rewrites at most one
    part's worth, not the whole job."""

    def __init__(self, layout: JobLayout, table: str, generation: int, compacted: list[CompactedPart]):
        self.layout, self.table, self.generation = layout, table, generation
        self.full = {part.name for part in compacted[:-1]}
        self.taken: set[str] = set()  # the names of the parts added
        self.written: list[CompactedPart] = []
        self.writer = PartWriter(layout.twin_dir(table))

    def add_parts(self, parts: list[CompactedPart], should_stop: Callable[[], bool]) -> None:
        for part in parts:
            if should_stop():
                self.writer.abandon()
                raise _Stopped
            path = os.path.join(self.layout.table_dir(self.table), part.name)
            if part.name in self.full:
                os.link(path, os.path.join(self.layout.twin_dir(self.table), part.name))
                self.written.append(part)
            else:
                if self.writer.full():
                    self.written.append(self.writer.close(self._name()))
                self.writer.add(path, part.batches)
            self.taken.add(part.name)

    def close(self) -> list[CompactedPart]:
        if self.writer.bytes_in:
            self.written.append(self.writer.close(self._name()))
        else:
            self.writer.abandon()
        fsync_dir(self.layout.twin_dir(self.table))
        return self.written

    def _name(self) -> str:
        return f"part-c{self.generation:04d}-{len(self.written):05d}.parquet"


class EarlyCompaction:
    """Step 1 begun while a complete job's last batches still run: the parts of batches committed
    for good (`add`, in batch order) are written into the twins one at a time (`step`), by the
    coordinator in moments it has nothing else to do, so that once the last batch commits only
    the parts of the batches after them are left. `Compactor.compact` takes the twins over; a
    job that does not complete `abandon`s them. Nothing here goes past step 1: a crash leaves
    twins without a manifest, which recovery deletes.

    Not a thread: one beside the coordinator's loop competes with it for the GIL, which at -j 32
    is the bottleneck (benchmarks/many_cores.py, 200k files, one round on a loaded machine: the
    workers' idle tail grew from 0.7 s to 7.5 s, and the thread's ~1,000 parts took 26 s).

    Memory: the twins' writers hold their pending rows (under a row group a table) while the
    workers run; the tree's peak RSS on 6,000 stdlib files rose ~50 MB (356 -> ~405 MB), and the
    coordinator's own peak at the end fell (217 -> 146 MB: less is left to do at once)."""

    def __init__(self, compactor: Compactor, manifest: Manifest | None):
        self.compactor = compactor
        self.manifest = manifest
        self.twins: Twins | None = None
        self.batches = 0  # batches whose parts are in the twins
        self.seconds = 0.0  # the steps' time
        self._covered = set(manifest.covers) if manifest else set()
        self._todo: deque[tuple[str, CompactedPart]] = deque()
        self._begun = False

    def add(self, batch_ids: list[int]) -> None:
        """Batches whose parts are final, after those added before."""
        if self._begun and self.twins is None:
            return  # the system cannot exchange folders: no compaction
        self._todo.extend((table, CompactedPart(part_name(batch_id), [batch_id], -1))
                          for batch_id in batch_ids if batch_id not in self._covered for table in TABLES)

    def step(self) -> bool:
        """Write one part into the twins (the first step makes them); False when none is left."""
        never = lambda: False  # noqa: E731 - a step is short; `compact` checks between parts
        started = time.monotonic()
        if not self._begun:
            self._begun = True
            self.twins = self.compactor.begin(self.manifest)
            if self.twins is None:
                self._todo.clear()
                return False
            for table, twin in self.twins.tables.items():
                twin.add_parts(list(self.manifest.parts(table)) if self.manifest else [], never)
        elif self._todo:
            table, part = self._todo.popleft()
            self.twins.tables[table].add_parts([part], never)
            self.batches += table == TABLES[-1]
        else:
            return False
        self.seconds += time.monotonic() - started
        return True

    def take_over(self) -> Twins | None:
        """The twins (None when never begun, or where the system cannot exchange folders)."""
        return self.twins

    def abandon(self) -> None:
        """Delete the twins (the job did not complete: nothing changed)."""
        for twin in self.twins.tables.values() if self.twins is not None else ():
            with contextlib.suppress(OSError):
                twin.writer.abandon()
        if self._begun:
            shutil.rmtree(self.compactor.twins, ignore_errors=True)
        self.twins, self._begun = None, True
        self._todo.clear()


def _rmdir_if_empty(folder: str) -> None:
    try:
        os.rmdir(folder)
    except OSError as err:
        if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise


class _Stopped(Exception):
    pass


class PartWriter:
    """One compacted part being written: row groups of ROW_GROUP_ROWS rows, however small the
    input parts are."""

    def __init__(self, folder: str):
        self.folder = folder
        self._reset()

    def _reset(self) -> None:
        self.writer = None
        self.fh = None
        self.pending: list[pa.RecordBatch] = []
        self.pending_rows = 0
        self.rows = 0
        self.bytes_in = 0
        self.batches: list[int] = []
        self.tmp = os.path.join(self.folder, f".writing-{time.monotonic_ns()}")

    @property
    def rows_in(self) -> int:
        """Rows added so far (written or pending)."""
        return self.rows + self.pending_rows

    def full(self) -> bool:
        """Whether the part has reached a bound (TARGET_PART_BYTES of input, PART_ROWS rows)."""
        return self.bytes_in >= TARGET_PART_BYTES or self.rows_in >= PART_ROWS

    def add(self, path: str, batches: list) -> None:
        # A whole part at once, on this thread: a batch's part is small, and this is 2x faster
        # than read_table, iter_batches or pyarrow's threads.
        self.add_table(pq.ParquetFile(path).read(use_threads=False), batches, os.path.getsize(path))

    def add_table(self, source: pa.Table, batches: list, bytes_in: int) -> None:
        """Like `add`, for rows already in memory (a refresh's part without its changed rows)."""
        if self.writer is None:
            self.fh = open(self.tmp, "wb")
            self.writer = pq.ParquetWriter(self.fh, source.schema, **PARQUET_OPTIONS)
        for batch in source.to_batches(max_chunksize=ROW_GROUP_ROWS):
            self.pending.append(batch)
            self.pending_rows += batch.num_rows
            if self.pending_rows >= ROW_GROUP_ROWS:
                self._flush(whole_groups_only=True)
        self.bytes_in += bytes_in
        self.batches.extend(batches)

    def _flush(self, whole_groups_only: bool = False) -> None:
        """Write the pending rows; with `whole_groups_only`, keep a remainder smaller than a row
        group pending (each write ends a row group)."""
        table = pa.Table.from_batches(self.pending, schema=self.writer.schema)
        take = table.num_rows - table.num_rows % ROW_GROUP_ROWS if whole_groups_only else table.num_rows
        if take or not self.rows:  # an empty table still gets its (empty) row group
            self.writer.write_table(table.slice(0, take), row_group_size=ROW_GROUP_ROWS)
            self.rows += take
        rest = table.slice(take)
        self.pending, self.pending_rows = rest.to_batches(), rest.num_rows

    def close(self, name: str) -> CompactedPart:
        self._flush()
        self.writer.close()
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        path = os.path.join(self.folder, name)
        os.rename(self.tmp, path)
        size, digest = file_checksum(path)  # from the page cache: ~0.1 s per GB
        part = CompactedPart(name=name, batches=self.batches, rows=self.rows, size=size, xxh3=digest)
        self._reset()
        return part

    def abandon(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.fh.close()
