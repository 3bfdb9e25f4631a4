"""The checkpoint ledger: which batches are committed, and moving their parts into the tables.

Owns: `OUT/_snakebatch/ledger.jsonl`, the part files in `OUT/{files,definitions,imports}/`, and
the commit protocol between them. Must not touch: parsing, scheduling, or the job's options.

Commit protocol (one batch):

    worker:       staging/<batch>/{files,definitions,imports}.parquet   written, fsynced
    coordinator:  ledger.jsonl += one checksummed line naming the batch  appended, fsynced
                  staging/<batch>/T.parquet -> T/part-<batch>.parquet    atomic renames
                  rmdir staging/<batch>

A staging folder is named by batch id, attempt and a token of the run: no two runs share one.
Batches that finished together are committed as a group: their lines in one write and one fsync,
then each batch's renames (at -j 32-64 on small files an fsync per batch queued the coordinator's
commits: issue 17). Nothing changes for recovery: each line still decides its own batch.
A batch is committed exactly when its ledger line is whole. A crash before the line leaves only
staging files, which recovery deletes (roll back); a crash after it leaves parts still in
staging, which recovery renames (roll forward). A table folder only ever receives whole parts by
rename, so a reader never sees a torn file; a part is renamed once and named by its batch, so a
reader never sees a row twice. Recovery also deletes any part no valid ledger line names (for
example one whose line was later found corrupt), so the tables always equal the ledger.

Once a job is complete, store/compaction.py replaces the batch parts by a few large ones; its manifest
says which batches' rows live there, and recovery settles a cut-off compaction first.

A refresh (store/snapshot.py) replaces the whole ledger with its generation's: it writes
`ledger.g<gen>.jsonl` before committing the manifest that names it, and renames it over
`ledger.jsonl` after. Until that rename, readers and recovery take the named file when it exists.
"""

from __future__ import annotations

import os
import secrets
import shutil
import zlib
from collections.abc import Callable, Iterator

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import JobError
from ..languages import language_of
from ..schema import TABLES
from .compaction import ROW_GROUP_ROWS, Compactor, files_part_of, read_manifest, write_manifest
from .durable import Damage, atomic_write, check_part, fsync_dir, write_part
from .layout import JobLayout, is_own_part, part_name


class LedgerEntry(msgspec.Struct, array_like=False):
    """One committed batch: its files (as in the `files` table) and its row counts."""

    batch_id: int
    staging: str  # relative to OUT/_snakebatch, for roll-forward
    paths: list  # display paths, as in the files table
    sizes: list
    mtimes: list
    statuses: list
    rows: dict
    bytes: int
    parse_s: float
    language_counts: dict
    committed_at: float
    run_started_at: float = 0.0  # which run committed it (for `status`: elapsed over all runs)
    # table -> [size, xxh3-64 hex] of its part as written (empty in ledgers before checksums)
    parts: dict = msgspec.field(default_factory=dict)
    # Stat data per path for --refresh, as git's index keeps it: [ctime_ns, inode, mode] (sizes and
    # mtimes above), recorded at `stat_at_ns`; empty in ledgers written before refresh existed.
    stats: list = []
    stat_at_ns: int = 0
    # Files whose parser ran, and files of a git revision that took the parse of the same blob at
    # another path (engine/worker.py `_Reuse`); 0 in ledgers written before these were counted.
    parsed: int = 0
    reused: int = 0
    cached: int = 0  # files whose parse result came from --cache (store/blobcache.py)
    source: str = ""  # the label of the batch's one source (its rows' `source`); "" before jobs had several


class RecoveryReport(msgspec.Struct):
    entries: int = 0
    rolled_forward: int = 0
    rolled_back: int = 0
    corrupt_lines: list = msgspec.field(default_factory=list)  # line numbers
    removed_staging: int = 0
    removed_orphan_parts: int = 0
    cut_out_batches: int = 0  # covered by a compaction, but their ledger lines were corrupt
    damaged_parts: list = msgspec.field(default_factory=list)  # [Damage] found and removed (then redone)
    manifest_rebuilt: bool = False  # compaction.json was unreadable and was rebuilt from the parts
    manifest: object = None  # the compaction's (compaction.Manifest), if the job was compacted

    def describe(self) -> str:
        parts = []
        if self.corrupt_lines:
            parts.append(
                f"{len(self.corrupt_lines)} corrupt ledger entr{'y' if len(self.corrupt_lines) == 1 else 'ies'} "
                f"(line {', '.join(map(str, self.corrupt_lines[:5]))}) ignored; their files will be redone"
            )
        if self.manifest_rebuilt:
            parts.append("unreadable compaction.json rebuilt from the compacted parts")
        if self.damaged_parts:
            shown = ", ".join(f"{d.table}/{d.part} ({d.problem})" for d in self.damaged_parts[:5])
            parts.append(f"{len(self.damaged_parts)} damaged part file(s) removed, their batches redone: {shown}")
        if self.rolled_forward:
            parts.append(f"{self.rolled_forward} interrupted commit(s) finished")
        if self.rolled_back:
            parts.append(f"{self.rolled_back} incomplete commit(s) undone")
        if self.removed_staging:
            parts.append(f"{self.removed_staging} uncommitted batch(es) discarded")
        if self.cut_out_batches:
            parts.append(f"rows of {self.cut_out_batches} batch(es) without a valid ledger entry removed from compacted parts")
        if self.removed_orphan_parts:
            parts.append(f"{self.removed_orphan_parts} part file(s) without a valid ledger entry removed")
        return "; ".join(parts)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(LedgerEntry)


def _encode_line(entry: LedgerEntry) -> bytes:
    payload = _encoder.encode(entry)
    return payload + b"\t%08x\n" % zlib.crc32(payload)


def _decode_line(line: bytes) -> LedgerEntry | None:
    """The entry of one ledger line, or None when it is torn or corrupt."""
    if not line.endswith(b"\n"):
        return None
    payload, tab, crc = line[:-1].rpartition(b"\t")
    if not tab or len(crc) != 8:
        return None
    try:
        if int(crc, 16) != zlib.crc32(payload):
            return None
        return _decoder.decode(payload)
    except (ValueError, msgspec.DecodeError):
        return None


def remove_tables(out: str) -> None:
    """Delete the part files of the job in `out` (`--fresh`), and each table folder once it is
    empty; anything else in a table folder stays where it is."""
    for table in TABLES:
        folder = JobLayout(out).table_dir(table)
        if not os.path.isdir(folder) or os.path.islink(folder):
            continue
        for name in os.listdir(folder):
            path = os.path.join(folder, name)
            if is_own_part(name) and not os.path.isdir(path):
                os.unlink(path)
        _remove_if_empty(folder)


def _remove_if_empty(folder: str) -> bool:
    """Remove `folder` if it is empty (or already gone); False when it holds something."""
    try:
        os.rmdir(folder)
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return True


class Ledger:
    """The committed batches of the job in `out`."""

    def __init__(self, out: str):
        self.out = out
        self.layout = JobLayout(out)
        self.state = self.layout.state
        self.path = self.layout.ledger
        self.staging_root = self.layout.staging_root
        # In every staging folder's name: a worker of a killed run that is still finishing a
        # batch never writes into a folder this run uses (recovery deletes its folders anyway).
        self.run_token = secrets.token_hex(4)
        self._fh = None
        self.appends = 0  # group commits this object wrote (one write and fsync each)

    def create(self) -> None:
        for table in TABLES:
            os.makedirs(self.layout.table_dir(table), exist_ok=True)
        os.makedirs(self.staging_root, exist_ok=True)
        if not os.path.exists(self.path):
            with open(self.path, "wb") as fh:
                os.fsync(fh.fileno())
        fsync_dir(self.state)

    def entries(self) -> Iterator[LedgerEntry]:
        """The valid entries, in commit order (read-only: for `status` and readers)."""
        yield from self.read()[0]

    def _live_path(self) -> str:
        """The ledger of the snapshot readers see: a committed refresh's generation ledger until
        it is renamed over `ledger.jsonl`, else `ledger.jsonl`."""
        try:
            manifest = read_manifest(self.state)
        except JobError:
            return self.path  # recovery reports the damage
        if manifest is not None and manifest.ledger:
            pending = os.path.join(self.state, manifest.ledger)
            if os.path.exists(pending):
                return pending
        return self.path

    def write_generation(self, generation: int, entries: list[LedgerEntry]) -> str:
        """Write (fsynced) the ledger of a refresh's generation beside the live one; its name."""
        name = f"ledger.g{generation:06d}.jsonl"
        with open(os.path.join(self.state, name), "wb") as fh:
            fh.write(b"".join(map(_encode_line, entries)))
            fh.flush()
            os.fsync(fh.fileno())
        fsync_dir(self.state)
        return name

    def adopt_generation(self) -> None:
        """Finish a committed refresh's ledger (rename it over `ledger.jsonl`) and delete the
        generation ledgers of refreshes that never committed."""
        live = self._live_path()
        if live != self.path:
            os.replace(live, self.path)
            fsync_dir(self.state)
        for name in os.listdir(self.state):
            if name.startswith("ledger.g") and name.endswith(".jsonl"):
                os.unlink(os.path.join(self.state, name))

    def replace_entries(self, entries: list[LedgerEntry]) -> None:
        """Replace the ledger by `entries` in one step (a refresh that only updated stat data)."""
        self._rewrite(entries)

    def read(self) -> tuple[list[LedgerEntry], list[int]]:
        """The valid entries in commit order, and the numbers of the corrupt lines (read-only).
        While a run appends, its last line may be torn: only `recover` may act on that."""
        entries, corrupt = [], []
        try:
            fh = open(self._live_path(), "rb")
        except FileNotFoundError:
            return entries, corrupt
        seen = set()
        with fh:
            for number, line in enumerate(fh, 1):
                entry = _decode_line(line)
                if entry is None or entry.batch_id in seen:
                    corrupt.append(number)
                    continue
                seen.add(entry.batch_id)
                entries.append(entry)
        return entries, corrupt

    def recover(self) -> tuple[list[LedgerEntry], RecoveryReport]:
        """Bring the folder to exactly the valid ledger: finish or undo cut-off commits, drop
        corrupt entries, uncommitted staging folders and orphan parts. Returns the entries.

        Each table folder is listed once: the cost is one read of the ledger and one listing
        per folder, not a stat per committed batch."""

        self.adopt_generation()
        entries, corrupt = self.read()
        report = RecoveryReport(corrupt_lines=corrupt)
        compactor = Compactor(self.out)
        report.manifest, report.cut_out_batches = compactor.recover({entry.batch_id: entry for entry in entries})
        manifest = report.manifest
        covered = set(manifest.covers) if manifest else set()
        report.manifest_rebuilt = compactor.rebuilt
        report.damaged_parts = list(compactor.damaged)
        present = {}
        for table in TABLES:
            folder = self.layout.table_dir(table)
            os.makedirs(folder, exist_ok=True)
            present[table] = set(os.listdir(folder))
        for entry in entries:
            # A damaged part is removed: its batch is then undone below and its files redone.
            name = part_name(entry.batch_id)
            if entry.batch_id in covered:
                continue
            for table in TABLES:
                if name not in present[table]:
                    continue
                problem = check_part(os.path.join(self.layout.table_dir(table), name), entry.parts.get(table), deep=True)
                if problem:
                    os.unlink(os.path.join(self.layout.table_dir(table), name))
                    present[table].discard(name)
                    report.damaged_parts.append(Damage(table, name, problem))
        kept = []
        for entry in entries:
            name = part_name(entry.batch_id)
            missing = [table for table in TABLES if name not in present[table]]
            if missing and entry.batch_id not in covered:
                staged = os.path.join(self.state, entry.staging)
                sources = [os.path.join(staged, table + ".parquet") for table in missing]
                if not all(os.path.exists(source) for source in sources):
                    # A part is gone from both places: undo the whole batch (its files are redone).
                    for table in TABLES:
                        if name in present[table]:
                            os.unlink(os.path.join(self.layout.table_dir(table), name))
                            present[table].discard(name)
                    report.rolled_back += 1
                    continue
                for table, source in zip(missing, sources):
                    os.rename(source, os.path.join(self.layout.table_dir(table), name))
                    present[table].add(name)
                _remove_if_empty(staged)
                report.rolled_forward += 1
            kept.append(entry)
        own_parts = {part_name(entry.batch_id) for entry in kept if entry.batch_id not in covered}
        for table in TABLES:
            live = own_parts | (manifest.names(table) if manifest else set())
            for name in present[table] - live:
                path = os.path.join(self.layout.table_dir(table), name)
                if not is_own_part(name) or os.path.isdir(path):
                    continue  # a rewrite's temporary (`.part-...tmp`) is an orphan too
                os.unlink(path)
                report.removed_orphan_parts += 1
        if os.path.isdir(self.staging_root):
            for name in os.listdir(self.staging_root):
                if not _remove_if_empty(os.path.join(self.staging_root, name)):
                    shutil.rmtree(os.path.join(self.staging_root, name), ignore_errors=True)
                    report.removed_staging += 1
        os.makedirs(self.staging_root, exist_ok=True)
        if corrupt or report.rolled_back:
            self._rewrite(kept)
        if report.rolled_forward or report.rolled_back or report.removed_orphan_parts:
            for table in TABLES:
                fsync_dir(self.layout.table_dir(table))
        report.entries = len(kept)
        return kept, report

    def forget_io_errors(self, entries: list[LedgerEntry], manifest, is_there: Callable[[str, str], bool]
                         ) -> tuple[list[LedgerEntry], dict]:
        """Remove every committed `io_error` row (`--resume`): a file that is back is then
        parsed again, one that is gone has no row, as in a fresh run. Returns the entries
        without those files, and {"gone": n, "back": n} (`is_there(source label, path)`: whether
        the file of a table `path` is in its source now).

        Each `files` part holding such rows is replaced whole (a temporary renamed over it, as
        compaction cuts rows out: a reader sees the old part or the new one), then the manifest's
        row counts, then the ledger. A crash in between leaves the ledger naming files whose rows
        are gone; the next resume finds them again, removes nothing more, and rewrites the
        ledger. io_error rows have no definitions or imports, so only `files` parts change."""
        doomed = {entry.batch_id: {i for i, status in enumerate(entry.statuses) if status == "io_error"}
                  for entry in entries if "io_error" in entry.statuses}
        counts = {"gone": 0, "back": 0}
        if not doomed:
            return entries, counts
        by_id = {entry.batch_id: entry for entry in entries}
        by_part: dict[str, list[int]] = {}
        for batch_id in doomed:
            by_part.setdefault(files_part_of(manifest, batch_id), []).append(batch_id)
        folder = self.layout.table_dir("files")
        rows_now = {}
        import pyarrow.compute as pc  # here: 35 ms of every worker's start (it imports this module by store/objectstore.py)

        rewritten: dict[str, list] = {}  # part name -> [size, xxh3] as rewritten
        for name, batch_ids in sorted(by_part.items()):
            path = os.path.join(folder, name)
            if not os.path.exists(path):
                continue  # recovery has set its batches to be redone
            data = pq.read_table(path)
            drop = None
            for batch_id in batch_ids:
                paths = [by_id[batch_id].paths[i] for i in doomed[batch_id]]
                hit = pc.and_(pc.equal(data["batch_id"], batch_id), pc.is_in(data["path"], pa.array(paths, pa.string())))
                drop = hit if drop is None else pc.or_(drop, hit)
            kept = data.filter(pc.invert(drop))
            rows_now[name] = kept.num_rows
            if kept.num_rows == data.num_rows:
                continue  # done by a run that stopped before its ledger rewrite
            tmp = os.path.join(folder, "." + name + ".tmp")
            rewritten[name] = list(write_part(kept, tmp, row_group_size=ROW_GROUP_ROWS if name.startswith("part-c") else None))
            os.replace(tmp, path)
        fsync_dir(folder)
        if manifest is not None:
            for part in manifest.parts("files"):
                part.rows = rows_now.get(part.name, part.rows)
                if part.name in rewritten:
                    part.size, part.xxh3 = rewritten[part.name]
            write_manifest(self.state, manifest)
        kept_entries = []
        for entry in entries:
            gone_rows = doomed.get(entry.batch_id)
            if not gone_rows:
                kept_entries.append(entry)
                continue
            languages = dict(entry.language_counts)
            for i in gone_rows:
                language = language_of(entry.paths[i])
                if languages.get(language):
                    languages[language] -= 1
                    if not languages[language]:
                        del languages[language]
                counts["back" if is_there(entry.source, entry.paths[i]) else "gone"] += 1
            keep = [i for i in range(len(entry.paths)) if i not in gone_rows]
            kept_entries.append(msgspec.structs.replace(
                entry,
                paths=[entry.paths[i] for i in keep], sizes=[entry.sizes[i] for i in keep],
                mtimes=[entry.mtimes[i] for i in keep], statuses=[entry.statuses[i] for i in keep],
                rows=dict(entry.rows, files=len(keep)), language_counts=languages,
                parts=dict(entry.parts, files=rewritten.get(part_name(entry.batch_id), entry.parts.get("files", []))),
            ))
        self._rewrite(kept_entries)
        return kept_entries, counts

    def _rewrite(self, entries: list[LedgerEntry]) -> None:
        atomic_write(self.path, b"".join(map(_encode_line, entries)))

    def staging_for(self, batch_id: int, attempt: int) -> str:
        return self.layout.staging_for(batch_id, attempt, self.run_token)

    def commit(self, entry: LedgerEntry, staging: str) -> None:
        """Commit one batch whose parts are whole in `staging` (see the protocol above)."""
        self.commit_group([(entry, staging)])

    def commit_group(self, batches: list[tuple[LedgerEntry, str]]) -> None:
        """Commit batches, each (entry, its staging folder with whole parts): all their lines in
        one write and one fsync, then each one's renames (see the protocol above).

        Raises OSError when the ledger cannot be written (disk full, file size limit, ...); no
        batch of the group is then committed and the ledger is cut back to its last whole line."""
        if self._fh is None:
            self._fh = open(self.path, "ab", buffering=0)
        line = memoryview(b"".join(_encode_line(entry) for entry, _ in batches))
        start = os.lseek(self._fh.fileno(), 0, os.SEEK_END)
        try:
            while line:
                # A short write (e.g. at a file size limit) returns a count, not an error; the
                # next write then raises.
                line = line[os.write(self._fh.fileno(), line):]
            os.fsync(self._fh.fileno())
        except OSError:
            try:
                os.ftruncate(self._fh.fileno(), start)
            except OSError:
                pass  # recovery drops the torn line on resume
            raise
        self.appends += 1
        for entry, staging in batches:
            for table in TABLES:
                os.rename(
                    os.path.join(staging, table + ".parquet"),
                    os.path.join(self.layout.table_dir(table), part_name(entry.batch_id)),
                )
            os.rmdir(staging)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        for table in TABLES:
            if os.path.isdir(self.layout.table_dir(table)):
                fsync_dir(self.layout.table_dir(table))
