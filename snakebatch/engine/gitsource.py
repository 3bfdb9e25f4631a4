"""A git source: the files of a revision (or of a whole history) straight from the object database.

Owns: which entries of a git tree become files of the job (the working-tree rules of
engine/discovery.py, translated: see below), the unique blobs of a history with its `commits`
and `tree_entries` tables, and a worker's reading of a blob (one long-lived `git cat-file
--batch` per worker process, started at its first blob). Must not touch: parsing, batching or
the job's three tables (the worker writes them as for a folder).

The tree entries, against a checkout of the same revision:
- a regular or executable file (100644, 100755): a file, as on disk;
- a symbolic link (120000): skipped, as discovery skips links; with --follow-symlinks a link to a
  file of the same tree is taken under the link's path with that file's blob (a link to a folder,
  or out of the tree, is skipped: a checkout run would walk a linked folder);
- a submodule (160000, a gitlink): skipped, no row, as the empty folder of an uninitialised
  submodule in a checkout (its commit is in another repository);
- `--include`/`--exclude` apply as to a folder (an excluded folder excludes all below it);
  `.gitignore` files do not: every tracked file is part of the revision (a checkout run would
  skip a tracked file that a `.gitignore` matches, i.e. one added with `git add -f`);
- VCS folders (`.hg`, `.svn`, ...) are skipped as on disk.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from ..config import JobConfig
from ..gitrepo import (
    MODE_EXECUTABLE,
    MODE_FILE,
    MODE_SYMLINK,
    CatFile,
    GitObjectError,
    blob_sizes,
    commit_info,
    diff_tree,
    history_trees,
    ls_tree,
    rev_list,
)
from ..paths import display_path
from ..store.durable import PARQUET_OPTIONS, fsync_dir
from ..store.objectstore import is_object_url
from .discovery import VCS_FOLDERS, DiscoveryStats, SourceFile, _spec, discover
from .objectdiscovery import discover_objects

MAX_LINK_HOPS = 40  # as the kernel's limit on nested links
COMMITS_SCHEMA = pa.schema([
    ("commit", pa.string()), ("parents", pa.list_(pa.string())), ("author_time", pa.int64()),
    ("committer_time", pa.int64()), ("summary", pa.string()),
])
TREE_ENTRIES_SCHEMA = pa.schema([
    ("commit", pa.string()), ("path", pa.string()), ("blob_id", pa.string()), ("mode", pa.string()),
])
HISTORY_TABLES = ("commits", "tree_entries")


class _Filter:
    """--include/--exclude and VCS folders over the `/`-separated paths of a tree listing."""

    def __init__(self, job: JobConfig, stats: DiscoveryStats):
        self.include, self.exclude = _spec(job.include), _spec(job.exclude)
        self.stats = stats
        self._folders: dict[str, bool] = {}  # folder path with its `/` -> taken

    def _folder_taken(self, folder: str) -> bool:
        taken = self._folders.get(folder)
        if taken is None:
            parent, _, name = folder[:-1].rpartition("/")
            taken = (not parent or self._folder_taken(parent + "/")) and name not in VCS_FOLDERS
            if taken and self.exclude is not None and self.exclude.match_file(folder):
                self.stats.filtered += 1
                taken = False
            self._folders[folder] = taken
        return taken

    def takes(self, path: str) -> bool:
        folder, _, name = path.rpartition("/")
        if folder and not self._folder_taken(folder + "/") or name in VCS_FOLDERS:
            return False
        if self.exclude is not None and self.exclude.match_file(path) or (
                self.include is not None and not self.include.match_file(path)):
            self.stats.filtered += 1
            return False
        return True


def _follow(link: str, entries: dict, reader: CatFile) -> tuple | None:
    """The regular file entry a symbolic link leads to within the tree, or None."""
    for _ in range(MAX_LINK_HOPS):
        mode, object_id, _size = entries[link]
        if mode != MODE_SYMLINK:
            return entries[link]
        try:
            target = os.fsdecode(reader.read(object_id))
        except GitObjectError:
            return None
        if target.startswith("/"):
            return None
        link = posixpath.normpath(posixpath.join(posixpath.dirname(link), target))
        if link.startswith("../") or link == ".." or link not in entries:
            return None  # out of the tree, a folder, or dangling
    return None


def source_files(job: JobConfig, skip: str | None, stats: DiscoveryStats,
                 source_options: dict | None = None) -> Iterator[SourceFile]:
    """The job's files: a git revision's (`job.commit`), the objects under a SOURCE in object
    storage (its store's `source_options`), or discovery's walk of the folder; in a job of
    several sources, each source's in turn, with its label."""
    if len(job.sources) > 1:
        return _each_source(job, skip, stats)
    if job.commit is not None:
        return discover_revision(job, stats)
    if is_object_url(job.source):
        return discover_objects(job, source_options or {}, skip=skip, stats=stats)
    return discover(job, skip=skip, stats=stats)


def _each_source(job: JobConfig, skip: str | None, stats: DiscoveryStats) -> Iterator[SourceFile]:
    for spec in job.sources:
        label = spec.label
        for f in source_files(job.of_source(spec), skip, stats):
            yield SourceFile(f.path, f.size, f.mtime_ns, f.blob_id, label)


def discover_revision(job: JobConfig, stats: DiscoveryStats) -> Iterator[SourceFile]:
    """The files of the job's revision (or, for --history, each unique blob once), as discovery's
    SourceFile entries with their blob id and no mtime. The paths of one blob come one after the
    other (at the place of its first path): the planner keeps them in one batch, whose worker
    reads and parses the blob once for all of them (engine/worker.py `_Reuse`)."""
    if job.history:
        yield from _unique_blobs(job, stats, None)
        return
    groups: dict[str, list[SourceFile]] = {}
    for source_file in _revision_files(job, stats):
        groups.setdefault(source_file.blob_id, []).append(source_file)
    for group in groups.values():
        yield from group


def _revision_files(job: JobConfig, stats: DiscoveryStats) -> Iterator[SourceFile]:
    """The taken files of the job's revision, in git's order."""
    taken = _Filter(job, stats)
    if not job.follow_symlinks:
        for entry in ls_tree(job.source, job.commit):
            if entry.mode in (MODE_FILE, MODE_EXECUTABLE) and taken.takes(entry.path):
                yield SourceFile(entry.path, entry.size, None, entry.object_id)
        return
    entries = {e.path: (e.mode, e.object_id, e.size) for e in ls_tree(job.source, job.commit)}
    reader = CatFile(job.source)
    try:
        for path, (mode, object_id, size) in entries.items():
            if mode == MODE_SYMLINK:
                target = _follow(path, entries, reader)
                if target is None:
                    continue
                mode, object_id, size = target
            if mode in (MODE_FILE, MODE_EXECUTABLE) and taken.takes(path):
                yield SourceFile(path, size, None, object_id)
    finally:
        reader.close()


def changed_files(job: JobConfig, since: str, stats: DiscoveryStats) -> tuple[list[SourceFile], list[str]]:
    """For a refresh from the revision `since` to the job's (`--refresh --rev NEW`): the files of
    the job's revision at the paths whose entry changed (`git diff-tree`), grouped by blob as
    `discover_revision` yields them, and every changed path (a path changed and not yielded is
    gone from the job: deleted, now a link or a submodule, or a file the filters leave out).
    Without --follow-symlinks only: a changed link would change the files that point through it."""
    taken = _Filter(job, stats)
    changes = diff_tree(job.source, since, job.commit)
    kept = [c for c in changes if c.new_mode in (MODE_FILE, MODE_EXECUTABLE) and taken.takes(c.path)]
    sizes = blob_sizes(job.source, sorted({c.new_id for c in kept}))
    groups: dict[str, list[SourceFile]] = {}
    for change in kept:
        groups.setdefault(change.new_id, []).append(SourceFile(change.path, sizes.get(change.new_id, 0), None,
                                                                change.new_id))
    return [f for group in groups.values() for f in group], [c.path for c in changes]


def history_commits(job: JobConfig) -> list[str]:
    """The commits of a --history / --revs job, oldest first (parents before children)."""
    return rev_list(job.source, [job.commit] + ([f"^{job.since}"] if job.since else []))


_FILE_MODES = (MODE_FILE, MODE_EXECUTABLE)


def _unique_blobs(job: JobConfig, stats: DiscoveryStats, on_tree) -> list[SourceFile]:
    """Each blob of the history's trees that the filters take, once, under the first path it has
    (commits oldest first, each tree in path order). `on_tree(commit, tree)`, if given,
    receives each commit's taken entries {path: (mode, blob id)}. A blob new to the
    history can only be at a path that changed against the commit's first parent, so only those
    paths are looked up; the filters' verdict is kept per path (paths recur in every commit)."""
    filters = _Filter(job, stats)
    verdicts: dict[str, bool] = {}

    def keep(path: str, mode: str) -> bool:
        if mode not in _FILE_MODES:
            return False
        verdict = verdicts.get(path)
        if verdict is None:
            verdict = verdicts[path] = filters.takes(path)
        return verdict

    seen: set[str] = set()
    first: list[tuple[str, str]] = []  # (path, blob id) of each unique blob, in order
    spec = [job.commit] + ([f"^{job.since}"] if job.since else [])
    for commit, tree, changed in history_trees(job.source, spec, keep):
        for path in sorted(tree if changed is None else changed):
            entry = tree.get(path)
            if entry is not None and entry[1] not in seen:
                seen.add(entry[1])
                first.append((path, entry[1]))
        if on_tree is not None:
            on_tree(commit, tree)
    sizes = blob_sizes(job.source, [object_id for _, object_id in first])
    return [SourceFile(path, sizes.get(object_id, 0), None, object_id) for path, object_id in first]


class _TableWriter:
    """One table written in row groups to a temporary file, renamed into place when complete."""

    ROWS = 1 << 18

    def __init__(self, out: str, name: str, schema: pa.Schema):
        self.folder = os.path.join(out, name)
        os.makedirs(self.folder, exist_ok=True)
        self.path = os.path.join(self.folder, f"{name}.parquet")
        self.tmp = self.path + ".tmp"
        self.schema = schema
        self.columns: list[list] = [[] for _ in schema]
        self.writer = pq.ParquetWriter(self.tmp, schema, **PARQUET_OPTIONS)

    def add(self, *row) -> None:
        self.extend(*([value] for value in row))

    def extend(self, *columns: list) -> None:
        """Rows given as one list per column."""
        for kept, more in zip(self.columns, columns):
            kept.extend(more)
        if len(self.columns[0]) >= self.ROWS:
            self._flush()

    def _flush(self) -> None:
        if self.columns[0]:
            self.writer.write_table(pa.Table.from_arrays(
                [pa.array(c, type=f.type) for c, f in zip(self.columns, self.schema)], schema=self.schema))
            self.columns = [[] for _ in self.schema]

    def close(self) -> None:
        self._flush()
        self.writer.close()
        with open(self.tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(self.tmp, self.path)
        fsync_dir(self.folder)


def history_files(job: JobConfig, out: str, stats: DiscoveryStats) -> list[SourceFile]:
    """Write OUT/commits and OUT/tree_entries for a --history job (again on each run: they are
    a function of the repository and the job) and return its unique blobs to parse. Each
    commit's entries are written in path order, as a column chunk (1.15M entries of pallets/flask's
    history: per-row calls cost ~5 s, columns ~1 s)."""
    commits = _TableWriter(out, "commits", COMMITS_SCHEMA)
    entries = _TableWriter(out, "tree_entries", TREE_ENTRIES_SCHEMA)
    shown: dict[str, str] = {}  # path -> its display path (paths recur in every commit)

    def add_tree(commit: str, tree: dict[str, tuple[str, str]]) -> None:
        paths = sorted(tree)
        entries.extend([commit] * len(paths), [shown.get(p) or shown.setdefault(p, display_path(p)) for p in paths],
                       [tree[p][1] for p in paths], [tree[p][0] for p in paths])

    files = _unique_blobs(job, stats, add_tree)
    for info in commit_info(job.source, history_commits(job)):
        commits.add(*info)
    commits.close()
    entries.close()
    return files


_READERS: dict[str, CatFile] = {}  # this worker process's cat-file of each repository


def read_blob(repo: str, blob_id: str, size: int, max_size: int) -> tuple:
    """(data, size, mtime_ns, status, message) of a blob, as worker._read of a file: a blob over
    `max_size` is not read (`too_large`, from the tree's size); OSError when it cannot be read."""
    if size > max_size:
        return None, size, None, "too_large", f"{size} bytes > --max-file-size {max_size}"
    reader = _READERS.get(repo)
    if reader is None:
        reader = _READERS[repo] = CatFile(repo)
    data = reader.read(blob_id)
    return data, len(data), None, None, None
