"""Discovery: stream the regular files under SOURCE, honouring the job's filters.

Owns: walking the tree (iteratively, with `os.scandir`, never listing it all first), `.gitignore`
files at every depth, `--include`/`--exclude`, VCS folders, symbolic links, and skipping OUT and
the output folders of other snakebatch jobs.
Must not touch: file contents (only metadata is read here) or anything downstream.

Ignored folders are pruned before they are entered: matching every path below an ignored
folder would double the cost of a large walk.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

import pathspec

from ..config import JobConfig
from ..store.jobfolder import holds_job
from ..store.layout import STATE_DIR_NAME as STATE

VCS_FOLDERS = frozenset({".git", ".hg", ".svn", ".bzr", "_darcs", "CVS", ".jj", ".pijul"})


class SourceFile(NamedTuple):
    """A discovered file: its path relative to SOURCE (`/`-separated; names that are not valid
    UTF-8 keep their bytes as surrogate escapes), size and mtime when discovered. A file of a git
    revision (engine/gitsource.py) has no mtime (None) and carries its blob id, which the worker
    reads from the object database. In a job of several sources, `path` is relative to the
    file's own source, which `source` names."""

    path: str
    size: int
    mtime_ns: int | None
    blob_id: str | None = None
    source: str | None = None  # its source's label in a job of several (None: the job's only one)


class DiscoveryStats:
    """What discovery skipped and why; read by the summary, written only here."""

    def __init__(self) -> None:
        self.unreadable_folders: list[str] = []
        self.job_folders: list[str] = []  # output folders of snakebatch jobs found under SOURCE
        self.filtered = 0  # files and folders skipped by --include, --exclude and .gitignore files

    def filters_took_nothing(self, files: int) -> str | None:
        """A warning when the filters skipped everything there was (`files` were taken)."""
        if files or not self.filtered:
            return None
        return (f"no file was taken: --include, --exclude and .gitignore files skipped all {self.filtered} "
                "files and folders under SOURCE; check the patterns")


def _identity(path: str | None) -> tuple[int, int] | None:
    """(device, inode) of `path` (OUT, which discovery skips), or None when there is none."""
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class _Ignores(NamedTuple):
    """The .gitignore rules in force in one folder: (folder relative path prefix, spec) pairs,
    shallowest first."""

    rules: tuple[tuple[str, pathspec.GitIgnoreSpec], ...]

    def ignored(self, rel: str) -> bool:
        # The deepest .gitignore with a matching pattern decides, as git does.
        for prefix, spec in reversed(self.rules):
            if rel.startswith(prefix):
                verdict = spec.check_file(rel[len(prefix):]).include
                if verdict is not None:
                    return verdict
        return False


def _spec(patterns: tuple[str, ...]) -> pathspec.GitIgnoreSpec | None:
    return pathspec.GitIgnoreSpec.from_lines(patterns) if patterns else None


def _read_gitignore(path: str) -> pathspec.GitIgnoreSpec | None:
    try:
        with open(path, "rb") as fh:
            lines = fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    return pathspec.GitIgnoreSpec.from_lines(lines) if lines else None


def discover(job: JobConfig, skip: str | None = None, stats: DiscoveryStats | None = None,
             on_stat: Callable[[os.stat_result], None] | None = None) -> Iterator[SourceFile]:
    """Yield every regular file under `job.source` that the filters take, in a stable order.

    `skip` is a folder never entered (OUT, when it lies inside SOURCE). `on_stat` receives each
    file's whole stat data just before the file is yielded (a refresh compares it, as git's index).
    """
    stats = stats if stats is not None else DiscoveryStats()
    root = job.source
    real_root = os.path.realpath(root)
    include, exclude = _spec(job.include), _spec(job.exclude)
    skip_key = _identity(skip)
    follow = job.follow_symlinks
    visited: set[tuple[int, int]] = set()
    try:
        st = os.stat(root)
        visited.add((st.st_dev, st.st_ino))
    except OSError:
        return

    # Folders are walked depth-first in name order; each stack entry is a folder still to list.
    stack: list[tuple[str, str, _Ignores]] = [(root, "", _Ignores(()))]
    while stack:
        folder, rel_folder, ignores = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            stats.unreadable_folders.append(rel_folder or ".")
            continue
        if rel_folder and any(e.name == STATE for e in entries) and holds_job(folder):
            # An earlier run's OUT inside SOURCE: its parts are output, not source.
            stats.job_folders.append(rel_folder[:-1])
            continue
        if job.gitignore and any(e.name == ".gitignore" for e in entries):
            spec = _read_gitignore(os.path.join(folder, ".gitignore"))
            if spec is not None:
                ignores = _Ignores((*ignores.rules, (rel_folder, spec)))
        subfolders = []
        for entry in entries:
            name = entry.name
            rel = rel_folder + name
            try:
                is_link = entry.is_symlink()
                if is_link:
                    if not follow:
                        continue
                    target = os.path.realpath(entry.path)
                    if os.path.commonpath([target, real_root]) != real_root:
                        continue  # never outside SOURCE
                    st = os.stat(entry.path)
                else:
                    st = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # vanished, or a broken link
            mode = st.st_mode
            if stat.S_ISDIR(mode):
                if name in VCS_FOLDERS:
                    continue
                key = (st.st_dev, st.st_ino)
                if key in visited:
                    continue  # a loop through links, or a folder reached twice
                if key == skip_key:
                    continue
                dir_rel = rel + "/"
                if ignores.rules and ignores.ignored(dir_rel) or exclude and exclude.match_file(dir_rel):
                    stats.filtered += 1
                    continue
                if follow:
                    visited.add(key)
                subfolders.append((entry.path, dir_rel, ignores))
            elif stat.S_ISREG(mode):
                if name in VCS_FOLDERS:
                    continue  # a `.git` file of a worktree or submodule
                if ignores.rules and ignores.ignored(rel) or exclude and exclude.match_file(rel):
                    stats.filtered += 1
                    continue
                if include is not None and not include.match_file(rel):
                    stats.filtered += 1
                    continue
                if on_stat is not None:
                    on_stat(st)
                yield SourceFile(rel, st.st_size, st.st_mtime_ns)
            # FIFOs, sockets and devices are never taken (opening a FIFO would block).
        stack.extend(reversed(subfolders))


def discover_paths(job: JobConfig, paths: Iterable[str], skip: str | None = None,
                   on_stat: Callable[[os.stat_result], None] | None = None) -> Iterator[SourceFile]:
    """Of `paths` (relative to `job.source`, `/`-separated), yield those `discover` would yield
    now, in name order: the same filters, checked on each path's folders instead of by walking.

    For a watch's round (engine/watch.py): the caller walks in full instead when a path is a
    folder, a `.gitignore`, or with --follow-symlinks (a link's target folder has no events).
    """
    root = job.source
    include, exclude = _spec(job.include), _spec(job.exclude)
    skip_key = _identity(skip)
    folders: dict[str, _Ignores | None] = {"": _Ignores(())}  # folder rel -> its rules; None: not walked

    def rules_in(rel_folder: str) -> _Ignores | None:
        """The rules in force in `rel_folder` ("" or ending in `/`), None when a walk never enters it."""
        if rel_folder in folders:
            return folders[rel_folder]
        parent_rel = rel_folder[:rel_folder.rstrip("/").rfind("/") + 1]
        name = rel_folder[len(parent_rel):-1]
        parent = rules_in(parent_rel)
        verdict: _Ignores | None = None
        folder = os.path.join(root, rel_folder)
        if parent is not None and name not in VCS_FOLDERS:
            try:
                st = os.lstat(folder)
            except OSError:
                st = None
            if (st is not None and stat.S_ISDIR(st.st_mode) and (st.st_dev, st.st_ino) != skip_key
                    and not (parent.rules and parent.ignored(rel_folder) or exclude and exclude.match_file(rel_folder))
                    and not holds_job(folder)):
                verdict = parent
        if verdict is not None and job.gitignore:
            spec = _read_gitignore(os.path.join(folder, ".gitignore"))
            if spec is not None:
                verdict = _Ignores((*verdict.rules, (rel_folder, spec)))
        folders[rel_folder] = verdict
        return verdict

    if job.gitignore:
        spec = _read_gitignore(os.path.join(root, ".gitignore"))
        if spec is not None:
            folders[""] = _Ignores((("", spec),))
    for rel in sorted(set(paths)):
        cut = rel.rfind("/") + 1
        name = rel[cut:]
        ignores = rules_in(rel[:cut])
        if ignores is None or name in VCS_FOLDERS:
            continue
        try:
            st = os.lstat(os.path.join(root, rel))
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        if ignores.rules and ignores.ignored(rel) or exclude and exclude.match_file(rel):
            continue
        if include is not None and not include.match_file(rel):
            continue
        if on_stat is not None:
            on_stat(st)
        yield SourceFile(rel, st.st_size, st.st_mtime_ns)
