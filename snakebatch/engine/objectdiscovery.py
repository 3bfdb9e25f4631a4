"""Discovery of a SOURCE in object storage: the listed keys that the job's filters take.

Owns: turning the streaming listing of SOURCE's prefix (store/objectsource.py) into discovery's
SourceFile entries with the folder rules of engine/discovery.py: `.gitignore` objects at every
depth, `--include`/`--exclude`, VCS folders, OUT and other snakebatch jobs under SOURCE skipped.
Must not touch: object contents other than `.gitignore` objects (and a HEAD of a job record), or
anything downstream.

A listing is flat and sorted by key, not walked folder by folder: nothing is pruned (the keys
of an ignored folder are listed and dropped) and memory stays constant. A folder's `.gitignore`
must be known before its other keys are judged, but keys whose name sorts before `.gitignore`
(`-x`, `#y#`, `+z`: a byte below `.`) come first in the listing; those few wait in a heap until
the listing has passed the `.gitignore` of every folder above them.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator

import pathspec

from ..config import JobConfig
from ..errors import JobError
from ..store.layout import STATE_DIR_NAME as STATE
from ..store.objectsource import ListedObject, has_object, list_objects, read_text
from .discovery import VCS_FOLDERS, DiscoveryStats, SourceFile, _Ignores, _spec

GITIGNORE = ".gitignore"
MEMO_FOLDERS = 65536  # folder verdicts kept; the listing visits a folder's keys together


def _without_folder_markers(listing: Iterable[ListedObject]) -> Iterator[ListedObject]:
    """The listing less folder markers: the store gives `dir/` back as `dir`, which then sorts
    right before the first key under it; a zero-byte `dir` followed by `dir/...` is dropped."""
    held: ListedObject | None = None
    for item in listing:
        if held is not None and not (held.size == 0 and item.path.startswith(held.path + "/")):
            yield held
        held = item
    if held is not None:
        yield held


def _threshold(path: str) -> str | None:
    """The last `.gitignore` key, among those of `path`'s folders, that the listing has not
    passed when it gives `path` (None: all are known by then)."""
    cut = path.find("/")
    latest = None
    folder_end = 0
    while True:
        candidate = path[:folder_end] + GITIGNORE
        if path < candidate:
            latest = candidate  # deeper folders' keys sort later: the last one is the largest
        if cut < 0:
            return latest
        folder_end = cut + 1
        cut = path.find("/", folder_end)


def _gitignores_first(listing: Iterable[ListedObject], on_gitignore) -> Iterator[ListedObject]:
    """The listing, with each key held back until the `.gitignore` of every folder above it has
    been listed (or passed); `on_gitignore(item)` is called as each one is listed."""
    waiting: list[tuple[str, int, ListedObject]] = []
    order = 0
    for item in listing:
        if item.path.rpartition("/")[2] == GITIGNORE:
            on_gitignore(item)
        while waiting and waiting[0][0] <= item.path:
            yield heapq.heappop(waiting)[2]
        threshold = _threshold(item.path)
        if threshold is None:
            yield item
        else:
            heapq.heappush(waiting, (threshold, order, item))
            order += 1
    while waiting:
        yield heapq.heappop(waiting)[2]


class _Rules:
    """The filters over `/`-separated keys: each folder judged once (memoised), then the file."""

    def __init__(self, job: JobConfig, options: dict, skip: str | None, stats: DiscoveryStats):
        self.job, self.options, self.stats = job, options, stats
        self.include, self.exclude = _spec(job.include), _spec(job.exclude)
        self.skip = skip
        self.gitignores: dict[str, pathspec.GitIgnoreSpec] = {}  # folder ("" or ending in `/`) -> rules
        self.folders: dict[str, bool] = {}  # folder ending in `/` -> taken
        self.job_folders: set[str] = set()  # folders ending in `/` that hold a snakebatch job

    def add_gitignore(self, item: ListedObject) -> None:
        data = read_text(self.job.source, self.options, item.path)
        lines = data.decode("utf-8", "replace").splitlines() if data else []
        if lines:
            self.gitignores[item.path[:-len(GITIGNORE)]] = pathspec.GitIgnoreSpec.from_lines(lines)

    def _ignores(self, folder: str) -> _Ignores:
        """The .gitignore rules in force in `folder`: its own and those of the folders above."""
        rules = []
        end = 0
        while True:
            prefix = folder[:end]
            if prefix in self.gitignores:
                rules.append((prefix, self.gitignores[prefix]))
            cut = folder.find("/", end)
            if cut < 0:
                return _Ignores(tuple(rules))
            end = cut + 1

    def _holds_job(self, folder: str) -> bool:
        """A folder under SOURCE holding a job record (`folder/_snakebatch/job.json`): its keys
        are an earlier run's output, not source. One HEAD per such folder."""
        if folder in self.job_folders:
            return True
        if has_object(self.job.source, self.options, folder + STATE + "/job.json"):
            self.job_folders.add(folder)
            self.stats.job_folders.append(folder[:-1])
            return True
        return False

    def _folder_taken(self, folder: str) -> bool:
        taken = self.folders.get(folder)
        if taken is None:
            parent = folder[:folder.rstrip("/").rfind("/") + 1]
            name = folder[len(parent):-1]
            taken = (not parent or self._folder_taken(parent)) and name not in VCS_FOLDERS and folder != self.skip
            if taken and (self.job.gitignore and self._ignores(parent).ignored(folder)
                          or self.exclude is not None and self.exclude.match_file(folder)):
                self.stats.filtered += 1
                taken = False
            if len(self.folders) >= MEMO_FOLDERS:
                self.folders.clear()
            self.folders[folder] = taken
        return taken

    def takes(self, path: str) -> bool:
        folder, _, name = path.rpartition("/")
        folder = folder + "/" if folder else ""
        if name in VCS_FOLDERS or folder and not self._folder_taken(folder):
            return False
        if any(path.startswith(job_folder) for job_folder in self.job_folders):
            return False
        cut = path.find("/" + STATE + "/")
        if cut > 0 and self._holds_job(path[:cut + 1]):
            return False
        if (self.job.gitignore and self._ignores(folder).ignored(path)
                or self.exclude is not None and self.exclude.match_file(path)
                or self.include is not None and not self.include.match_file(path)):
            self.stats.filtered += 1
            return False
        return True


def discover_objects(job: JobConfig, options: dict, skip: str | None = None,
                     stats: DiscoveryStats | None = None) -> Iterator[SourceFile]:
    """Yield every object under `job.source` (a URL) that the filters take, in the listing's
    order (a key that waited for a `.gitignore` comes once it is known). `skip` is OUT's URL;
    its keys are skipped when it lies under SOURCE. JobError (the run stops, resumable) when the
    store fails mid-listing."""
    stats = stats if stats is not None else DiscoveryStats()
    source = job.source.rstrip("/")
    skip_folder = skip[len(source) + 1:].rstrip("/") + "/" if skip and skip.startswith(source + "/") else None
    rules = _Rules(job, options, skip_folder, stats)
    listing = _without_folder_markers(list_objects(job.source, options))
    if job.gitignore:
        listing = _gitignores_first(listing, rules.add_gitignore)
    try:
        for item in listing:
            if rules.takes(item.path):
                yield SourceFile(item.path, item.size, item.mtime_ns)
    except OSError as err:
        raise JobError(f"SOURCE: {err}") from None
