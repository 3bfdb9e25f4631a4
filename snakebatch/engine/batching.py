"""Batching: turn the stream of discovered files into size-balanced batches.

Owns: grouping files by source bytes (a target from the governor, a cap on files per batch,
a file larger than the target alone, the paths of one git blob together), batch ids, and
skipping files a resumed job already committed. Must not touch: execution, memory sampling, or
the ledger's files.

Discovery is read ahead only a bounded number of files, so memory does not grow with the tree.
Once discovery has ended, the remaining files are cut into smaller batches so that every worker
stays busy to the end instead of one worker finishing a large last batch alone.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from itertools import repeat

import msgspec

from ..paths import display_path
from .discovery import SourceFile

MAX_FILES_PER_BATCH = 1000
LOOKAHEAD_FILES = 20_000
# The tail is cut ever smaller (guided self-scheduling: a share of what is left per batch), but
# never below 64 KB, nor below 1 / (TAIL_MIN_SHARE x workers) of the files left when discovery
# ended: a batch costs ~3.5 ms of worker CPU and 3 fsyncs whatever its size, and the coordinator a
# commit. Without the file floor, the 20,000 small files left at the end of a -j 32 run became
# ~400 batches of 1-2 files (issue 17: many_cores.py); with it, ~5 batches a worker. A floor
# under TAIL_FLOOR_FROM files is not applied: it would save little, and on small jobs it changed
# which files the memory governor's admission saw together (tests/test_governor.py's too_large
# test then gave 90 small files `too_large`; not analysed further, issue 17 notes).
TAIL_MIN_SHARE = 8
TAIL_FLOOR_FROM = 16
TAIL_MIN_BYTES = 64 * 1024


class Batch(msgspec.Struct, frozen=True):
    batch_id: int
    files: list  # [SourceFile]

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)


def ledger_key(source_file, by_blob: bool) -> str:
    """What the ledger names a committed file by: its `path`, or for a --history job (one file per
    unique blob, and one path may hold many blobs) its blob id."""
    return source_file[3] if by_blob else display_path(source_file[0])


class CommittedIndex:
    """Files a resumed job committed before: (source label, `path` (discovery.display_path: unique
    per name), or the blob id of a --history job (`by_blob`)) -> (size, mtime_ns). `only_source`:
    the label of a job's only source, which its files do not carry (SourceFile.source None)."""

    def __init__(self, by_blob: bool = False, only_source: str | None = None) -> None:
        self.by_blob = by_blob
        self.only_source = only_source
        self.files: dict[tuple[str, str], tuple[int, int]] = {}
        self.seen = 0
        self.stale: list[str] = []
        self.stale_count = 0

    def add(self, source: str, paths, sizes, mtimes) -> None:
        # In C: resume reads 100k paths fast.
        self.files.update(zip(zip(repeat(source), paths), zip(sizes, mtimes)))

    def claim(self, source_file: SourceFile) -> bool:
        """True when the file was committed already (it is then skipped, never read again)."""
        # The key is the file's `path` as the tables hold it: one per name (the raw name could
        # equal another file's display form, e.g. the literal `bad\xff` and the byte 0xff).
        key = ledger_key(source_file, self.by_blob)
        committed = self.files.get((source_file.source or self.only_source, key))
        if committed is None:
            return False
        self.seen += 1
        if committed != (source_file.size, source_file.mtime_ns):
            self.stale_count += 1
            if len(self.stale) < 20:
                self.stale.append(key if source_file.source is None else f"{source_file.source}: {key}")
        return True


class BatchPlanner:
    """Batches from a stream of files; `next_batch(target_bytes)` is called when there is room."""

    def __init__(self, files: Iterable[SourceFile], workers: int, first_batch_id: int = 1,
                 committed: CommittedIndex | None = None):
        self._files: Iterator[SourceFile] = iter(files)
        self._buffer: deque[SourceFile] = deque()
        self._buffer_bytes = 0
        self._exhausted = False
        self.workers = workers
        self.next_id = first_batch_id
        self.committed = committed
        self.discovered = 0  # files discovered and not committed before (to be processed)
        self._tail_files = 0  # files buffered when discovery ended

    @property
    def discovery_done(self) -> bool:
        return self._exhausted

    def _fill(self, want_bytes: int) -> None:
        while not self._exhausted and (len(self._buffer) < LOOKAHEAD_FILES and self._buffer_bytes < want_bytes):
            try:
                source_file = next(self._files)
            except StopIteration:
                self._exhausted = True
                return
            if self.committed is not None and self.committed.claim(source_file):
                continue
            self.discovered += 1
            self._buffer.append(source_file)
            self._buffer_bytes += source_file.size

    def new_id(self) -> int:
        batch_id = self.next_id
        self.next_id += 1
        return batch_id

    def next_batch(self, target_bytes: int, max_files: int = MAX_FILES_PER_BATCH) -> Batch | None:
        # Read ahead enough to know whether this is the tail of the stream.
        self._fill(max(target_bytes * (self.workers + 1), 1))
        if not self._buffer:
            return None
        if self._exhausted:
            # The tail: spread what is left over every worker, twice, so none idles at the end.
            if not self._tail_files:
                self._tail_files = len(self._buffer)
            share = self._buffer_bytes // (2 * self.workers) + 1
            target_bytes = min(target_bytes, max(share, TAIL_MIN_BYTES))
            least = self._tail_files // (TAIL_MIN_SHARE * self.workers)
            if least < TAIL_FLOOR_FROM:
                least = 1
            max_files = min(max_files, max(len(self._buffer) // (2 * self.workers) + 1, least, 1))
        files, size = [], 0
        while self._buffer and len(files) < max_files:
            head = self._buffer[0]
            if files and (size + head.size > target_bytes or head.source != files[0].source):
                break  # a batch is of one source
            files.append(self._buffer.popleft())
            size += head.size
            self._buffer_bytes -= head.size
            if size >= target_bytes:
                break
        # The other paths of a git blob (discovery yields them one after the other) go with it:
        # its worker reads and parses it once for all of them. Up to the cap on files (the empty
        # blob can be at 100,000 paths): past it the rest is the next batch's, parsed once more.
        blob_id = files[-1].blob_id
        while blob_id is not None and len(files) < MAX_FILES_PER_BATCH and (self._buffer or not self._exhausted):
            if not self._buffer:
                self._fill(self._buffer_bytes + 1)
            if not self._buffer or self._buffer[0].blob_id != blob_id or self._buffer[0].source != files[0].source:
                break
            head = self._buffer.popleft()
            files.append(head)
            self._buffer_bytes -= head.size
        return Batch(self.new_id(), files)
