"""`--refresh`: bring a job's tables up to date with SOURCE as it is now, parsing only what changed.

Owns: deciding which files changed (stat data as git's index keeps it, the racy-clean rule,
content hashes), which rows the options and parsers change, and the sink that parses those files
beside the live tables, for a folder (`RefreshSink`) and for object storage
(`ObjectRefreshSink`), both planning through `RefreshPlan`. Must not touch: the live tables or the
ledger while parsing; the new generation is committed by store/snapshot.py for a folder and by
store/objectcompaction.py in object storage (their protocols are described there).

A discovered file is, against the live snapshot's ledger and `files` rows:

    added     its path has no row
    reparsed  its status is one of --redo; or --content changed; or --max-file-size changed and
              it is too_large or now over the limit; or its parser's version changed, or the
              parsers' routing changed (--parser, an installed or removed plugin)
    unchanged size, mtime_ns, ctime_ns, inode and mode as recorded, and not racily clean: its
              mtime is older than the recording by more than RACY_MARGIN_NS (not read at all)
    touched   otherwise, when the content hash is the recorded one: the `files` row gets the new
              mtime_ns, nothing is parsed
    modified  otherwise (a size change needs no hash)

and every path with a row that discovery no longer yields is deleted. Given candidate paths (a
watch's events), only those are stat'ed and compared (`walk: "paths"`), unless they cannot tell
every change (a folder, a `.gitignore`): then the whole tree is walked (`walk: "full"`). Run-only options (-j,
--memory-budget, --batch-bytes, --file-timeout, --retries, progress, compaction) change nothing.

The walk is compared with the ledger in bulk (Arrow columns of both, `pyarrow.compute`): what is
plainly unchanged is counted there, and only the rest is compared file by file; the `files` rows
stay columns, turned into dicts only for the paths a commit rewrites. A few small files to parse
are parsed in this process (`executors/inprocess.py`, `in_process`), without starting a pool.
"""

from __future__ import annotations

import bisect
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from .._version import __version__
from ..config import RunConfig
from ..errors import ConfigError, JobError
from ..executors.base import Executor
from ..executors.inprocess import InProcessExecutor
from ..parsers import ParserRouter
from ..paths import display_path
from ..schema import TABLES, table_schema
from ..store.compaction import Compactor, exchange_supported
from ..store.durable import atomic_write
from ..store.jobfolder import JobRecord, read_record, state_dir
from ..store.layout import STATE_DIR_NAME
from ..store.ledger import LedgerEntry
from ..store.objectcompaction import INTENT as OBJECT_INTENT
from ..store.objectcompaction import begin as begin_object
from ..store.objectcompaction import live_keys
from ..store.objectstore import last_refresh
from ..store.snapshot import (
    CHANGE_KINDS,
    Generation,
    Intent,
    begin,
    commit,
    drop_pending,
    read_intent,
    read_snapshot,
    side_part,
    write_intent,
    write_snapshot,
)
from .discovery import DiscoveryStats, SourceFile, discover, discover_paths
from .gitsource import changed_files, discover_revision
from .sinks import ObjectStoreSink, OutputSink, PreparedJob, batch_record, commit_each, ledger_entry
from .tally import Tally
from .worker import BatchOutcome, BatchTask

# Timestamps come from a coarse clock and some filesystems keep seconds (FAT: two); a file whose
# mtime is this close to when its stat data was recorded may have changed since within the same
# tick, so it is hashed.
RACY_MARGIN_NS = 2_000_000_000
HASH_CHUNK = 1 << 20
# At most this much to parse is parsed in the coordinator's process, without a pool: starting 2
# workers took 0.6-2 s on the shared 2-core machine, while one process parsed 1,000 of tree100k's
# files (370 KB) in 0.25 s, 3,000 in 0.75 s, and Python source at ~4 MB/s.
IN_PROCESS_FILES = 2000
IN_PROCESS_BYTES = 2 << 20
# The `files` columns a refresh reads: of every row to plan (plus blob_id for a revision), and all
# of them only from the parts that hold the rows it looks at closer (the hashes' columns of 100k
# rows took ~40 MB to decode).
_PLAN_COLUMNS = ["path", "parser", "parser_version"]
WALK_CHUNK = 16384
_WALKED_TYPES = {"paths": pa.string(), "sizes": pa.int64(), "mtimes": pa.int64(), "blobs": pa.string(),
                 "ctimes": pa.int64(), "inodes": pa.uint64(), "modes": pa.int64()}
_FILES_COLUMNS = ["path", "content_hash", "blob_id", "parser", "parser_version", "language",
                  "n_definitions", "n_imports", "size"]


def content_hash(path: str) -> str:
    """The `files` table's content_hash of the file at `path` (xxh3-128 of its bytes)."""
    digest = xxhash.xxh3_128()
    with open(path, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def router_signature(router: ParserRouter) -> list:
    """What decides which parser takes a file (not the versions, compared per file)."""
    return [[p.name, list(p.patterns), list(p.interpreters)] for p in router.parsers]


class _LiveFiles:
    """The live ledger's files as columns (Arrow arrays, one element per file, in ledger order):
    path, size, mtime, status, the recorded [ctime_ns, inode, mode] (null where an entry has no
    stat data), whether racily clean, and the entry index and slot that hold it."""

    def __init__(self, entries: list[LedgerEntry]):
        paths, sizes, mtimes, statuses, entry_of, slot, racy = [], [], [], [], [], [], []
        ctimes, inodes, modes = [], [], []
        for i, entry in enumerate(entries):
            n = len(entry.paths)
            paths += entry.paths
            sizes += entry.sizes
            mtimes += entry.mtimes
            statuses += entry.statuses
            entry_of += [i] * n
            slot += range(n)
            if entry.stats:
                ctimes += [s[0] for s in entry.stats]
                inodes += [s[1] for s in entry.stats]
                modes += [s[2] for s in entry.stats]
            else:
                ctimes += [None] * n
                inodes += [None] * n
                modes += [None] * n
            since = (entry.stat_at_ns or int(entry.run_started_at * 1e9)) - RACY_MARGIN_NS
            racy += [m is not None and m >= since for m in entry.mtimes]  # a revision has no mtimes
        self.path = pa.array(paths, pa.string())
        self.size = pa.array(sizes, pa.int64())
        self.mtime = pa.array(mtimes, pa.int64())
        self.status = pa.array(statuses, pa.string())
        self.ctime = pa.array(ctimes, pa.int64())
        self.inode = pa.array(inodes, pa.uint64())
        self.mode = pa.array(modes, pa.int64())
        self.racy = pa.array(racy, pa.bool_())
        self.entry, self.slot = entry_of, slot

    def locate(self, paths: list[str]) -> dict[str, tuple[int, int]]:
        """(entry index, slot) of each of `paths` that the ledger holds."""
        at = pc.index_in(pa.array(paths, pa.string()), value_set=self.path).to_pylist()
        return {path: (self.entry[i], self.slot[i]) for path, i in zip(paths, at) if i is not None}


class _Walked:
    """The files discovery yielded, as columns for the bulk comparison: Python objects only for
    the last WALK_CHUNK files (a SourceFile and a stat_result per file held ~60 MB for 100k)."""

    def __init__(self) -> None:
        self._chunks: dict[str, list[pa.Array]] = {name: [] for name in _WALKED_TYPES}
        self._raw: dict[int, str] = {}  # index -> the path discovery gave, where not its display path
        self._reset()
        self.count = 0

    def _reset(self) -> None:
        self._pending: list[tuple] = []  # one tuple per file, in _WALKED_TYPES order

    def add(self, source_file: SourceFile, st) -> None:
        path = source_file.path
        display = display_path(path)
        if display is not path and display != path:
            self._raw[self.count] = path
        if st is None:  # a git tree's file: no stat data
            self._pending.append((display, source_file.size, source_file.mtime_ns, source_file.blob_id, None, None, None))
        else:
            self._pending.append((display, source_file.size, source_file.mtime_ns, source_file.blob_id,
                                  st.st_ctime_ns, st.st_ino, st.st_mode))
        self.count += 1
        if len(self._pending) == WALK_CHUNK:
            self._flush()

    def _flush(self) -> None:
        columns = list(zip(*self._pending)) if self._pending else [()] * len(_WALKED_TYPES)
        for (name, kind), values in zip(_WALKED_TYPES.items(), columns):
            self._chunks[name].append(pa.array(values, kind))
        self._reset()

    def columns(self) -> None:
        """Make the columns (`paths`, `sizes`, ...), once every file has been added."""
        self._flush()
        for name, chunks in self._chunks.items():
            setattr(self, name, pa.chunked_array(chunks, _WALKED_TYPES[name]).combine_chunks())
        self._chunks = {}

    def files(self, indices: pa.Array) -> list[tuple[SourceFile, str, list]]:
        """The files at `indices` as discovery gave them, each with its display path and its
        [ctime_ns, inode, mode] (empty for a git tree's file)."""
        columns = [pc.take(getattr(self, name), indices).to_pylist() for name in _WALKED_TYPES]
        return [(SourceFile(self._raw.get(k, path), size, mtime, blob), path,
                 [ctime, inode, mode] if ctime is not None else [])
                for k, path, size, mtime, blob, ctime, inode, mode in zip(indices.to_pylist(), *columns)]


class RefreshPlan:
    """What a refresh decides, for a folder (`RefreshSink`) and for object storage
    (`ObjectRefreshSink`): which files changed, the new ledger, the change feed, the counts.
    A sink using it reads the live `files` rows (`_files_tables`) and the new batches' blob ids
    (`_new_blob_ids`) from where it keeps them."""

    config: RunConfig
    live_entries: list[LedgerEntry]
    candidates: set | None
    discovery_stats: DiscoveryStats
    started_ns: int
    generation: int

    def _files_tables(self, columns: list[str], batches: set | None = None) -> Iterator[pa.Table]:
        """The live `files` rows' `columns`, part by part; only from the parts that hold rows of
        `batches` when given."""
        raise NotImplementedError

    def _new_blob_ids(self) -> dict:
        """display path -> blob id of the files this refresh parsed."""
        raise NotImplementedError

    def _compare(self, previous, redo: tuple, verify: bool, record: dict, pending: Intent | None,
                 started: float) -> None:
        """Compare SOURCE with `self.live_entries` and the live `files` rows (see the module's
        docstring): what to parse, what to drop, what to patch, and whether to parse it in this
        process. `record`: the last refresh's; `pending`: the intent of a refresh cut off."""
        job = self.config.job
        out = self.config.output
        live = self.live = _LiveFiles(self.live_entries)
        router = ParserRouter(job.parsers)
        versions = {p.name: p.version for p in (*router.parsers, router.fallback)}
        signature = router_signature(router)
        reroute = previous.parsers != job.parsers or record.get("router", signature) != signature
        size_changed = previous.max_file_size != job.max_file_size
        content_changed = previous.content != job.content
        revision = job.commit is not None
        # A refresh between revisions compares the two trees (`git diff-tree`) when nothing else
        # can change a row: then only the changed paths are looked at, whatever the tree's size.
        by_diff = revision and not (
            redo or reroute or size_changed or content_changed or job.follow_symlinks or previous.follow_symlinks
            or previous.include != job.include or previous.exclude != job.exclude
            or not self._versions_unchanged(versions))
        diff_files, changed_paths = changed_files(job, previous.commit, self.discovery_stats) if by_diff else ([], [])
        if by_diff:
            narrow = True
        else:
            narrow = not revision and self.candidates is not None and self._narrow(live)
        self.walk = "diff" if by_diff else "paths" if narrow else "full"
        named = {display_path(path) for path in (changed_paths if by_diff else self.candidates or ())}
        needed = None
        if narrow:  # the named paths' rows, and those of their batches (their counts are redone)
            hit = set(live.locate(sorted(named)).values())
            needed = {path for i, _ in hit for path in self.live_entries[i].paths}
        self.live_rows = self._files_rows(_PLAN_COLUMNS + ["blob_id"] * revision, needed)
        self.previous = previous

        self.to_parse: list[SourceFile] = []
        self.kinds: dict[str, str] = {}  # display path -> added | modified | reparsed | touched
        self.updates: dict[str, tuple] = {}  # display path -> (size, mtime_ns, [ctime_ns, ino, mode])
        self.stat_of: dict[str, list] = {}  # display path -> [ctime_ns, ino, mode], of the files to parse
        self.unchanged = self.hashed = 0
        last: list = [None]  # the stat of the file discovery yielded last (none for a git tree)

        if by_diff:
            files = diff_files
        elif revision:
            files = discover_revision(job, self.discovery_stats)
        elif narrow:
            files = discover_paths(job, self.candidates, skip=out, on_stat=lambda st: last.__setitem__(0, st))
        else:
            files = discover(job, skip=out, stats=self.discovery_stats, on_stat=lambda st: last.__setitem__(0, st))
        walked = _Walked()
        for source_file in files:
            walked.add(source_file, last[0])
        walked.columns()
        # Compared in bulk first: what is plainly unchanged (the stat data as recorded, not racy;
        # or the same blob) is counted; the rest, file by file, as the module docstring says.
        rows = self.live_rows
        at_live = pc.index_in(walked.paths, value_set=live.path)
        at_row = pc.index_in(walked.paths, value_set=rows["path"])
        seen = pc.and_(at_live.is_valid(), at_row.is_valid())
        plain = self._plainly_unchanged(walked, live, at_live, at_row, seen, redo, verify, versions, reroute,
                                        size_changed, content_changed, revision)
        self.unchanged += pc.sum(plain).as_py() or 0
        suspects = pc.indices_nonzero(pc.invert(plain))
        found = pc.take(at_live, suspects).to_pylist()
        row_at = pc.take(at_row, suspects).to_pylist()
        looked_at = walked.files(suspects)
        suspect_rows = {row["path"]: row for row in self._rows_for(
            {display for (_, display, _), r in zip(looked_at, row_at) if r is not None}).to_pylist()}
        for (source_file, display, stat_data), i, r in zip(looked_at, found, row_at):
            self._compare_file(source_file, display, stat_data, None if i is None else (live.entry[i], live.slot[i]),
                          None if r is None else suspect_rows[display],
                          redo, verify, versions, reroute, size_changed, content_changed, revision)
        if narrow:
            located = live.locate(sorted(named))
            seen_paths = set(pc.filter(walked.paths, seen).to_pylist())
            self.deleted = sorted(path for path in located if path not in seen_paths)
            self.unchanged += len(live.path) - len(located)  # not named: not looked at
        else:
            self.deleted = pc.filter(live.path, pc.invert(pc.is_in(live.path, value_set=pc.filter(walked.paths, seen)))
                                     ).to_pylist()
        self.signature = signature
        self.in_process = self._parse_in_process(pending)
        self.plan_s = time.monotonic() - started
        self.new_entries: list[LedgerEntry] = []

    def executor_factory(self, default: Callable[[RunConfig], Executor]) -> Callable[[RunConfig], Executor]:
        """What runs this refresh's batches: this process when `in_process`, else `default`."""
        return (lambda config: InProcessExecutor()) if self.in_process else default

    def _parse_in_process(self, pending: Intent | None) -> bool:
        """Whether the files to parse are few and small enough to parse in this process
        (executors/inprocess.py) rather than start a pool: with the local executor, in the main
        thread (where --file-timeout's SIGALRM works), unless the refresh before this one parsed
        in process and never committed (it may have crashed on one of these files)."""
        return (0 < len(self.to_parse) <= IN_PROCESS_FILES
                and sum(f.size for f in self.to_parse) <= IN_PROCESS_BYTES
                and self.config.executor == "local"
                and threading.current_thread() is threading.main_thread()
                and not (pending is not None and pending.in_process))

    def _plainly_unchanged(self, walked: _Walked, live: _LiveFiles, at_live: pa.Array, at_row: pa.Array,
                           seen: pa.Array, redo: tuple, verify: bool, versions: dict, reroute: bool,
                           size_changed: bool, content_changed: bool, revision: bool) -> pa.Array:
        """Which walked files `_compare` would count unchanged without reading them, computed on
        columns (a false here only sends the file to `_compare`)."""
        if content_changed or (verify and not revision):
            return pa.array([False] * walked.count, pa.bool_())
        rows = self.live_rows
        status = pc.take(live.status, at_live)
        ok = seen
        if redo:
            ok = pc.and_(ok, pc.invert(pc.is_in(status, value_set=pa.array(list(redo), pa.string()))))
        if size_changed:
            limit = self.config.job.max_file_size
            ok = pc.and_(ok, pc.invert(pc.or_(pc.equal(status, "too_large"), pc.greater(walked.sizes, limit))))
        parser, version = pc.take(rows["parser"], at_row), pc.take(rows["parser_version"], at_row)
        current = pc.is_null(parser)
        if not reroute:
            for name, expected in versions.items():
                if expected is not None:  # (else file by file)
                    current = pc.or_(current, pc.and_(pc.equal(parser, name), pc.equal(version, expected)))
        ok = pc.and_(ok, pc.fill_null(current, False))
        if revision:  # a blob id names the content: equal ids, equal rows
            ok = pc.and_(ok, pc.equal(walked.blobs, pc.take(rows["blob_id"], at_row)))
        else:
            for mine, recorded in ((walked.sizes, live.size), (walked.mtimes, live.mtime), (walked.ctimes, live.ctime),
                                   (walked.inodes, live.inode), (walked.modes, live.mode)):
                ok = pc.and_(ok, pc.equal(mine, pc.take(recorded, at_live)))
            ok = pc.and_(ok, pc.invert(pc.take(live.racy, at_live)))
        return pc.fill_null(ok, False)

    def _compare_file(self, source_file: SourceFile, path: str, stat: list, found: tuple | None, row: dict | None,
                 redo: tuple, verify: bool, versions: dict, reroute: bool, size_changed: bool,
                 content_changed: bool, revision: bool) -> None:
        """One walked file against its ledger slot (`found`: entry index, position) and row."""
        job = self.config.job
        if found is None or row is None:
            self._take(source_file, path, stat, "added" if found is None else "reparsed")
            return
        entry, j = self.live_entries[found[0]], found[1]
        status = entry.statuses[j]
        if (status in redo or content_changed
                or size_changed and (status == "too_large" or source_file.size > job.max_file_size)
                or row["parser"] is not None and (reroute or versions.get(row["parser"]) != row["parser_version"])):
            self._take(source_file, path, stat, "reparsed")
            return
        if revision:  # a blob id names the content: equal ids, equal rows
            if row["blob_id"] == source_file.blob_id:
                self.unchanged += 1
            else:
                self._take(source_file, path, stat, "modified")
            return
        recorded = entry.stats[j] if entry.stats else None
        same = (source_file.size == entry.sizes[j] and source_file.mtime_ns == entry.mtimes[j]
                and recorded is not None and list(recorded) == stat)
        racy = entry.mtimes[j] >= (entry.stat_at_ns or int(entry.run_started_at * 1e9)) - RACY_MARGIN_NS
        if same and not racy and not verify:
            self.unchanged += 1
            return
        if source_file.size != entry.sizes[j] or row["content_hash"] is None:
            self._take(source_file, path, stat, "modified")
            return
        self.hashed += 1
        try:
            digest = content_hash(os.path.join(job.source, source_file.path))
        except OSError:
            digest = None
        if digest != row["content_hash"]:
            self._take(source_file, path, stat, "modified")
            return
        self.unchanged += 1
        if not same or racy:
            self.updates[path] = (source_file.size, source_file.mtime_ns, stat)
            if source_file.mtime_ns != entry.mtimes[j]:
                self.kinds[path] = "touched"

    def _check_kind(self, previous) -> None:
        """A folder's job refreshes from a folder, a revision's from a revision (`--rev NEW`)."""
        job = self.config.job
        if job.history or previous.history:
            raise ConfigError("--refresh of a --history/--revs job is not supported: run the new range into a new OUT")
        if previous.commit is not None and job.commit is None:
            raise ConfigError(f"--refresh: {self.config.output} holds revision {previous.commit[:12]} of {job.source}: "
                              "give the revision to refresh to with --rev (e.g. --rev HEAD)")
        if previous.commit is None and job.commit is not None:
            raise ConfigError(f"--refresh --rev: {self.config.output} holds a run on the folder {previous.source}, "
                              "not on a revision; run --rev into a new OUT, or --fresh")

    def _versions_unchanged(self, versions: dict) -> bool:
        """Whether every live `files` row's parser has the version it has now (a columnar read
        of two dictionary-like columns, not of the rows)."""
        for table in self._files_tables(["parser", "parser_version"]):
            pairs = table.group_by(["parser", "parser_version"]).aggregate([]).to_pylist()
            if any(p["parser"] is not None and versions.get(p["parser"]) != p["parser_version"] for p in pairs):
                return False
        return True

    def _narrow(self, live: _LiveFiles) -> bool:
        """Whether looking at the candidates alone finds every change: not when one is (or was) a
        folder, whose files an event may not name (a folder moved in or out names only itself),
        or a `.gitignore`, or when links are followed (their targets send no events)."""
        if self.config.job.follow_symlinks:
            return False
        paths = None
        for path in self.candidates:
            if path.rsplit("/", 1)[-1] == ".gitignore":
                return False
            try:
                if stat.S_ISDIR(os.lstat(os.path.join(self.config.job.source, path)).st_mode):
                    return False
            except OSError:
                pass
            if paths is None:
                paths = sorted(live.path.to_pylist())
            prefix = display_path(path) + "/"
            index = bisect.bisect_left(paths, prefix)
            if index < len(paths) and paths[index].startswith(prefix):
                return False  # a folder that held rows is gone (or is a file now)
        return True

    def _take(self, source_file: SourceFile, path: str, stat: list, kind: str) -> None:
        self.to_parse.append(source_file)
        self.kinds[path] = kind
        self.stat_of[path] = stat

    def _files_rows(self, columns: list[str], needed: set | None = None, batches: set | None = None) -> pa.Table:
        """`columns` of the live `files` rows (a columnar read); only those of the `needed` paths
        when given, read from the parts that hold `batches` when given."""
        wanted = None if needed is None else pa.array(sorted(needed), type=pa.string())
        tables = []
        for table in self._files_tables(columns, batches):
            if wanted is not None:
                table = table.filter(pc.is_in(table["path"], value_set=wanted))
            tables.append(table.select(columns))
        if not tables:
            return table_schema("files", False).empty_table().select(columns)
        return pa.concat_tables(tables, promote_options="permissive").combine_chunks()

    def _rows_for(self, paths: set) -> pa.Table:
        """Every column a refresh uses of the live `files` rows of `paths` (from their parts only)."""
        if not paths:
            return table_schema("files", False).empty_table().select(_FILES_COLUMNS)
        located = self.live.locate(sorted(paths))
        batches = {self.live_entries[i].batch_id for i, _ in located.values()}
        return self._files_rows(_FILES_COLUMNS, paths, batches)

    def _old_blobs(self, paths: set) -> dict[str, str | None]:
        """The live `files` rows' blob_id of `paths`, by path (paths without a row left out)."""
        picked = self._rows_for(set(paths))
        return dict(zip(picked["path"].to_pylist(), picked["blob_id"].to_pylist()))

    def _row_counts(self, owner: list[int], paths: list[str]) -> tuple[dict, dict]:
        """Per owner (an index), what the live `files` rows of its `paths` add up to, as a ledger
        entry counts them: ({owner: (definitions, imports, bytes read)}, {owner: {language: files}});
        grouped on columns, not row by row (100k dicts took ~1 s at 100% changed)."""
        rows = self._rows_for(set(paths))
        picked = rows.take(pc.index_in(pa.array(paths, pa.string()), value_set=rows["path"]))
        read = pc.if_else(pc.is_valid(picked["content_hash"]), picked["size"], 0)
        table = pa.table({"owner": pa.array(owner, pa.int64()), "language": picked["language"],
                          "defs": picked["n_definitions"], "imports": picked["n_imports"], "read": read})
        sums = table.group_by("owner").aggregate([("defs", "sum"), ("imports", "sum"), ("read", "sum")]).to_pydict()
        counts = {k: (d or 0, i or 0, r or 0)
                  for k, d, i, r in zip(sums["owner"], sums["defs_sum"], sums["imports_sum"], sums["read_sum"])}
        named = table.filter(pc.fill_null(pc.not_equal(table["language"], ""), False))
        by_language = named.group_by(["owner", "language"], use_threads=False).aggregate([([], "count_all")])
        languages: dict[int, dict] = {}
        for k, language, n in zip(*by_language.select(["owner", "language", "count_all"]).to_pydict().values()):
            languages.setdefault(k, {})[language] = n
        return counts, languages


    def _trimmed(self, drop: set) -> list[LedgerEntry]:
        """The live entries without the dropped paths and with fresh stat data."""
        kept: list = []
        changed = {}  # position in `kept` -> the kept slots of an entry that changed
        for entry in self.live_entries:
            index = [j for j, path in enumerate(entry.paths) if path not in drop]
            updated = any(entry.paths[j] in self.updates for j in index)
            if len(index) == len(entry.paths) and not updated:
                kept.append(entry)
            elif index:
                changed[len(kept)] = index
                kept.append(entry)
        owner = [k for k, index in changed.items() for _ in index]
        counts, languages = self._row_counts(owner, [kept[k].paths[j] for k, index in changed.items() for j in index])
        for k, index in changed.items():
            entry = kept[k]
            paths = [entry.paths[j] for j in index]
            sizes = [entry.sizes[j] for j in index]
            mtimes = [entry.mtimes[j] for j in index]
            stats = [entry.stats[j] if entry.stats else None for j in index]
            updated = False
            for n, path in enumerate(paths):
                if path in self.updates:
                    sizes[n], mtimes[n], stats[n] = self.updates[path]
                    updated = True
            if any(s is None for s in stats):
                stats = []  # an old entry without stat data stays without: its files are hashed
            definitions, imports, read = counts.get(k, (0, 0, 0))
            kept[k] = msgspec.structs.replace(
                entry, paths=paths, sizes=sizes, mtimes=mtimes, stats=stats,
                statuses=[entry.statuses[j] for j in index],
                rows={"files": len(paths), "definitions": definitions, "imports": imports}, bytes=read,
                parse_s=round(entry.parse_s * len(index) / len(entry.paths), 4),
                language_counts=languages.get(k, {}),
                stat_at_ns=self.started_ns if updated else entry.stat_at_ns,
            )
        return kept

    def _spec(self, live_generation: int) -> Generation | None:
        """The new generation as store/snapshot.py (or store/objectcompaction.py) commits it;
        None when no row changes (then `self.final_entries` is the live ledger with fresh stat
        data, to keep when `self.updates` has any)."""
        drop = {path for path, kind in self.kinds.items() if kind != "touched" and kind != "added"}
        drop |= set(self.deleted)
        patch = {path: self.updates[path][1] for path, kind in self.kinds.items() if kind == "touched"}
        entries = self._trimmed(drop) + self.new_entries
        self.final_entries = entries
        self.snapshot_tally: Tally | None = None
        counts = dict.fromkeys(CHANGE_KINDS, 0)
        for kind in self.kinds.values():
            counts[kind] += 1
        counts["deleted"] = len(self.deleted)
        self.report = {
            "generation": live_generation,
            "refreshed_at": time.time(), "changes": counts, "unchanged": self.unchanged - counts["touched"],
            "hashed": self.hashed, "parsed": len(self.to_parse), "plan_s": round(self.plan_s, 3), "walk": self.walk,
            "router": self.signature,
        }
        # A new revision's `commit` column: every `files` row carried over gets it too.
        recommit = self.config.job.commit if self.config.job.commit != self.previous.commit else None
        if not drop and not patch and not self.new_entries and recommit is None:
            return None
        new_blob = self._new_blob_ids()
        changes = []
        old_blobs = self._old_blobs(self.kinds.keys() | set(self.deleted))
        for path, kind in self.kinds.items():
            old = old_blobs.get(path) if kind != "added" else None
            changes.append((path, kind, old, new_blob.get(path, old if kind == "touched" else None)))
        changes += [(path, "deleted", old_blobs.get(path), None) for path in self.deleted]
        changes.sort()
        self.report["generation"] = self.generation
        return Generation(generation=self.generation, entries=entries,
                          new_batches=[entry.batch_id for entry in self.new_entries], drop=drop, patch=patch,
                          changes=changes, refresh=self.report, content=self.config.job.content,
                          commit=recommit)

    def _snapshot(self) -> Tally:
        """The counts of the new snapshot: every entry of its ledger (counted once)."""
        if self.snapshot_tally is None:
            self.snapshot_tally = Tally()
            for entry in self.final_entries:
                self.snapshot_tally.add(entry)
        return self.snapshot_tally

    def amend(self, summary):
        if self.report is None or summary.state != "complete":
            return summary
        snapshot = self._snapshot()
        refresh = {k: v for k, v in self.report.items() if k != "router"}
        return msgspec.structs.replace(
            summary, files=snapshot.files, bytes=snapshot.bytes, removed_files=len(self.deleted), refresh=refresh,
            status_counts=dict(sorted(snapshot.status_counts.items(), key=lambda kv: -kv[1])),
            language_counts=dict(sorted(snapshot.language_counts.items(), key=lambda kv: -kv[1])),
        )


class RefreshSink(RefreshPlan, OutputSink):
    """Plans the refresh (under OUT's lock, after recovery), collects the batches parsed into the
    side folder, and commits the new generation once the coordinator has parsed them all."""

    def __init__(self, config: RunConfig, candidates: Iterable[str] | None = None):
        """`candidates`: the only paths (relative to SOURCE, as discovery spells them) that may
        have changed, as a watch's events name them; None, or a set a stat walk of those paths
        cannot judge (see `_narrow`), walks the whole tree."""
        super().__init__(config)  # lock, recovery, the live ledger (`_take_committed`)
        self.discovery_stats = DiscoveryStats()
        self.report: dict | None = None
        self.candidates = None if candidates is None else set(candidates)
        try:
            self._plan()
        except BaseException:
            self.lock.release()
            raise

    # -- planning ------------------------------------------------------------------------------

    def _take_committed(self, entries: list[LedgerEntry]) -> None:
        # Recovery's entries are the live ledger the plan compares (read once). Nothing is
        # skipped by path, and the coordinator counts only this refresh's batches: `amend` tells
        # the snapshot's totals.
        self.live_entries = entries
        self.committed = None
        self.before = Tally()

    def _plan(self) -> None:
        config, out = self.config, self.config.output
        started = time.monotonic()
        self.started_ns = time.time_ns()
        record = read_record(out)
        pending = read_intent(out)
        if pending is not None and self.manifest is not None and self.manifest.generation >= pending.generation:
            pending = None
        if config.mode == "resume" and pending is not None:
            redo, verify = tuple(pending.redo), pending.verify_content
        else:
            redo, verify = config.redo, config.verify_content
        previous = pending.previous_job if pending is not None else record.job
        self._check_kind(previous)
        twins = self.ledger.layout.twins
        os.makedirs(twins, exist_ok=True)
        supported = exchange_supported(twins)
        os.rmdir(twins)  # recovery emptied it; the commit makes it again
        if not supported:
            raise ConfigError("--refresh swaps table folders atomically (Linux renameat2 with RENAME_EXCHANGE), "
                              f"which {out} does not support; use --fresh there")
        self.generation = (self.manifest.generation if self.manifest is not None else 0) + 1
        intent = Intent(generation=self.generation, previous_job=previous, redo=redo, verify_content=verify,
                        started_at=time.time())
        begin(out, intent)
        atomic_write(os.path.join(state_dir(out), "job.json"), msgspec.json.encode(
            JobRecord(job=config.job, snakebatch_version=__version__, created_at=record.created_at,
                      command=record.command)))
        self._compare(previous, redo, verify, read_snapshot(out) or {}, pending, started)
        if self.in_process:
            write_intent(out, msgspec.structs.replace(intent, in_process=True))

    # -- parsing into the side folder ----------------------------------------------------------

    def commit(self, task: BatchTask, outcome: BatchOutcome):
        paths = [display_path(f[0]) for f in task.files]
        stats = [self.stat_of[path] for path in paths] if self.config.job.commit is None else []
        entry = ledger_entry(task, outcome, os.path.relpath(outcome.staging, self.ledger.state), paths,
                             self.started_at, stats=stats,
                             stat_at_ns=self.started_ns)
        for table in TABLES:
            os.rename(os.path.join(outcome.staging, table + ".parquet"), side_part(self.config.output, table, task.batch_id))
        os.rmdir(outcome.staging)
        self.new_entries.append(entry)
        self.batch_stats.append(batch_record(task, outcome))
        yield from ()  # the output folder hands the caller nothing

    commit_group = commit_each  # no ledger line: the generation's ledger is written at `finish`

    # -- the new generation --------------------------------------------------------------------

    def tail(self, final_below: int) -> None:
        """Nothing: a refresh's batches are not in the tables until `finish` commits them."""

    def finish(self, should_stop) -> None:
        out = self.config.output
        gen = self._spec(self.manifest.generation if self.manifest is not None else 0)
        if gen is None:
            if self.updates:
                self.ledger.replace_entries(self.final_entries)  # only stat data changed: no new generation
            drop_pending(out)
            write_snapshot(out, self.report)
            return
        self.manifest = commit(out, self.manifest, self.live_entries, gen)

    def _new_blob_ids(self) -> dict:
        new_blob = {}
        for entry in self.new_entries:
            part = pq.read_table(side_part(self.config.output, "files", entry.batch_id),
                                 columns=["path", "blob_id"]).to_pydict()
            new_blob.update(zip(part["path"], part["blob_id"]))
        return new_blob

    def _files_tables(self, columns: list[str], batches: set | None = None) -> Iterator[pa.Table]:
        batch_ids = [entry.batch_id for entry in self.live_entries]
        folder = os.path.join(self.config.output, "files")
        for part in Compactor(self.config.output).live_parts(self.manifest, batch_ids, "files"):
            if batches is None or not batches.isdisjoint(part.batches):
                yield pq.read_table(os.path.join(folder, part.name), columns=columns)

    def close(self, summary, job: Tally) -> None:
        super().close(summary, self._snapshot() if self.report is not None else job)


class ObjectRefreshSink(RefreshPlan, ObjectStoreSink):
    """--refresh of an OUT in object storage: planned as a folder's, against the live ledger of
    the segments and the rows `open_dataset` reads. The batches it parses stay in staging,
    with no batch segment (readers do not see them), until `finish` commits the new generation
    (store/objectcompaction.py); a cut-off refresh leaves its intent, and the next `--refresh`
    or `--resume` plans it again (recovery deletes the staging)."""

    def __init__(self, config: RunConfig, prepared: PreparedJob):
        super().__init__(config, prepared)  # the open segment, recovery, the live ledger's counts
        self.discovery_stats = DiscoveryStats()
        self.report: dict | None = None
        self.candidates = None
        self.staged: dict[int, str] = {}  # batch id -> its staging, relative to the state prefix
        started = time.monotonic()
        self.started_ns = time.time_ns()
        pending = prepared.pending
        if config.mode == "resume" and pending is not None:
            redo, verify = tuple(pending.redo), pending.verify_content
        else:
            redo, verify = config.redo, config.verify_content
        previous = prepared.rows_job
        self._check_kind(previous)
        self.live_entries = self.opened.entries
        self.generation = (self.current_generation.generation if self.current_generation is not None else 0) + 1
        last = last_refresh(prepared.segments)[1]
        try:
            intent = Intent(generation=self.generation, previous_job=previous, redo=redo, verify_content=verify,
                            started_at=time.time(), job=config.job)
            begin_object(self.job, intent)
            self._compare(previous, redo, verify, (last.refresh if last is not None else None) or {}, pending,
                          started)
            if self.in_process:
                begin_object(self.job, msgspec.structs.replace(intent, in_process=True))
        except (ConfigError, JobError, OSError):
            raise
        except Exception as err:  # obstore.exceptions.*: the store failed after its retries
            raise JobError(f"{config.output}: cannot read the job's rows: {type(err).__name__}: {err}") from None
        # The coordinator counts only this refresh's batches; `amend` tells the snapshot's totals.
        self.committed = None
        self.before = Tally()

    def _files_tables(self, columns: list[str], batches: set | None = None) -> Iterator[pa.Table]:
        for key in live_keys(self.current_generation, self.live_entries, "files", batches):
            data = self.job.get_object(key)
            if data is None:
                raise JobError(f"{self.config.output}: {key} is missing (deleted outside snakebatch?); "
                               "resume to repair the job, then refresh")
            yield pq.read_table(pa.BufferReader(data), columns=columns)

    def _new_blob_ids(self) -> dict:
        new_blob = {}
        for entry in self.new_entries:
            data = self.job.get_object(f"{STATE_DIR_NAME}/{self.staged[entry.batch_id]}/files.parquet")
            part = pq.read_table(pa.BufferReader(data), columns=["path", "blob_id"]).to_pydict()
            new_blob.update(zip(part["path"], part["blob_id"]))
        return new_blob

    def commit(self, task: BatchTask, outcome: BatchOutcome):
        paths = [display_path(f[0]) for f in task.files]
        stats = [self.stat_of[path] for path in paths] if self.config.job.commit is None else []
        entry = ledger_entry(task, outcome, self.job.staging_of(outcome.staging), paths, self.started_at,
                             stats=stats, stat_at_ns=self.started_ns)
        self.staged[task.batch_id] = entry.staging
        self.new_entries.append(entry)
        self.batch_stats.append(batch_record(task, outcome))
        yield from ()  # the output hands the caller nothing

    commit_group = commit_each  # nothing put: the generation is committed at `finish`

    def tail(self, final_below: int) -> None:
        """Nothing: a refresh's batches are not in the tables until `finish` commits them."""

    def finish(self, should_stop) -> None:
        """Commit the new generation; a refresh that changes no row writes nothing (fresh stat
        data of hashed files is not kept: the next refresh hashes them again)."""
        current = self.current_generation
        try:
            gen = self._spec(current.generation if current is not None else 0)
            if gen is None:
                self.job.delete_keys([OBJECT_INTENT])
                return None
            self.current_generation = self.compactor.refresh(current, self.live_entries, gen, self.staged,
                                                             self.config.job, self.opened.next_batch_id - 1)
        except JobError:
            raise
        except Exception as err:  # OSError, obstore.exceptions.*: the store failed after its retries
            raise JobError(f"{self.config.output}: the refresh could not be committed ({type(err).__name__}: "
                           f"{err}); the tables are as before it: --refresh or --resume redoes it") from None
        return None

    def close(self, summary, job: Tally) -> None:
        super().close(summary, self._snapshot() if self.report is not None else job)
