"""The blob cache of `--cache DIR`: parse results by content, shared by every job that names DIR.

Owns: the entries under DIR (their keys, their format, writing and reading them whole), the
bound on DIR's size and the LRU eviction that keeps it, and DIR's shared size estimate.
Must not touch: OUT, or which rows a file gets (the worker decides what to look up and what a
hit's row is; engine/worker.py).

An entry is the `ParseResult` of one parse, keyed by what decides it: the blob (git's blob id of
the content), the parser (name, version, origin), the path's extension and language by name
(all a parser may see of the path: `Parser.reuse_by_content`), snakebatch's version and this
format's. No job option is part of the key, because none changes a parse result: `--content`
and every column outside the result (`path`, `size`, hashes, `mtime_ns`, `commit`,
`batch_id`) are computed by the worker from the file it has read; `--max-file-size` only
decides `too_large`, which is never cached; the filters choose files, not rows; `--parser`
decides which parser routes the file, and that parser is in the key.

Only deterministic outcomes are stored (`CACHED_STATUSES`): `timeout`, `crashed`, `too_large`,
`parser_error` (a MemoryError is one) and `io_error` depend on the run, `binary` costs no parse.

Layout: `DIR/<2 hex>/<38 hex>` (the key's blake2b-160, sharded by its first byte). An entry is
written to a temporary file in its shard and renamed into place, so a reader sees a whole entry or
none; there is no fsync (after a power cut an entry may be empty or garbage), so every entry
carries its payload's length and xxh3-64, and a reader takes an entry that does not check for a
miss and deletes it. Entries vanish under readers (eviction by another job): that is a miss too.

The bound: a hit refreshes the entry's mtime (at most once a minute: LRU order to the minute
costs one metadata write per entry per minute, not one per hit), and eviction deletes the entries
with the oldest mtimes until DIR is under 90% of `--cache-size`. Sizes are disk use as `du`
counts it (blocks, so a 300-byte entry counts 4 KiB). Walking DIR costs a stat per entry, so it
is not done per file: each run adds what its workers wrote to the estimate in `DIR/.size` (every
tenth of the bound, and at its end), under an flock on `DIR/.evict.lock`, and walks DIR (and
evicts) only when the estimate passes the bound or is missing. The estimate only over-counts (an
entry written twice, one another job evicted), so the bound holds to within what the running
jobs wrote since their last report; a walk sets it to the truth.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import struct
import time

import msgspec
import xxhash

from .._version import __version__
from ..parsers import ParseResult

FORMAT = "1"  # change it when ParseResult or the encoding changes: old entries become misses
CACHED_STATUSES = frozenset(("ok", "syntax_error", "decode_error"))
DEFAULT_SIZE = 2 << 30  # 2 GiB
LOW_WATER = 0.9  # eviction leaves DIR at this share of the bound, so the next is not at once
REPORT_SHARE = 0.1  # a run reports what it wrote every tenth of the bound
TOUCH_AFTER_S = 60.0
STALE_TMP_S = 3600.0  # a temporary file this old was left by a writer that died
BLOCK = 4096

_MAGIC = b"SBC1"
_HEADER = struct.Struct("<4sQQ")  # magic, payload length, xxh3-64 of the payload
_ENCODER = msgspec.msgpack.Encoder()
# msgpack over Arrow IPC: for one file's result (34 definitions, 31 imports) encode+decode took
# 62 us and 5.1 KB, against 660 us and 6.5 KB for its definitions alone as an IPC stream.
_DECODER = msgspec.msgpack.Decoder(ParseResult)
_HEX = frozenset("0123456789abcdef")


def entry_key(blob_id: str, parser_name: str, parser_version: str, parser_origin: str, extension: str,
              language: str | None) -> str:
    """The key (40 hex digits) of a parse result: everything that decides it."""
    parts = (FORMAT, __version__, blob_id, parser_name, parser_version, parser_origin, extension, language or "")
    return hashlib.blake2b("\0".join(parts).encode("utf-8", "surrogateescape"), digest_size=20).hexdigest()


def _disk_bytes(nbytes: int) -> int:
    return -(-nbytes // BLOCK) * BLOCK


def _is_entry_name(name: str, length: int) -> bool:
    return len(name) == length and set(name) <= _HEX


class BlobCache:
    """The entries of one cache folder, as a worker reads and writes them (no state of its own)."""

    def __init__(self, folder: str):
        self.folder = folder

    def _path(self, key: str) -> str:
        return os.path.join(self.folder, key[:2], key[2:])

    def get(self, key: str) -> ParseResult | None:
        """The result stored under `key`, or None: absent, vanished, torn or corrupt (then deleted)."""
        path = self._path(key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            chunks = []
            while chunk := os.read(fd, max(st.st_size, 1 << 16)):
                chunks.append(chunk)
            data = b"".join(chunks)
            result = self._decoded(data)
            if result is None:
                _unlink(path)
                return None
            if time.time() - st.st_mtime > TOUCH_AFTER_S:
                try:
                    os.utime(fd)
                except OSError:  # read-only for this user: the entry ages, and is evicted sooner
                    pass
            return result
        except OSError:
            return None
        finally:
            os.close(fd)

    @staticmethod
    def _decoded(data: bytes) -> ParseResult | None:
        if len(data) < _HEADER.size:
            return None
        magic, length, checksum = _HEADER.unpack_from(data)
        payload = memoryview(data)[_HEADER.size:]
        if magic != _MAGIC or length != len(payload) or xxhash.xxh3_64_intdigest(payload) != checksum:
            return None
        try:
            return _DECODER.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None

    def put(self, key: str, result: ParseResult) -> int:
        """Store `result` under `key` if its status is deterministic; the disk bytes written (0 when
        not stored: another status, or the folder cannot be written; a cache never fails a job)."""
        if result.status not in CACHED_STATUSES:
            return 0
        payload = _ENCODER.encode(result)
        data = _HEADER.pack(_MAGIC, len(payload), xxhash.xxh3_64_intdigest(payload)) + payload
        path = self._path(key)
        shard = os.path.dirname(path)
        tmp = os.path.join(shard, f".tmp-{os.getpid()}-{os.urandom(6).hex()}")
        try:
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            except FileNotFoundError:
                os.makedirs(shard, exist_ok=True)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            os.replace(tmp, path)  # an equal entry another job wrote meanwhile is replaced by its twin
        except OSError:
            _unlink(tmp)
            return 0
        return _disk_bytes(len(data))


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


class Eviction(msgspec.Struct):
    """What settling a cache's size did: its estimated size after, and what was evicted."""

    size_bytes: int = 0
    walked: bool = False  # the folder was walked (the estimate was missing or over the bound)
    evicted: int = 0
    evicted_bytes: int = 0


def settle(folder: str, max_bytes: int, added: int) -> Eviction:
    """Add `added` bytes (written by a run's workers since its last report) to the folder's size
    estimate; past the bound, walk it and evict the least recently used entries. Under an flock on
    `DIR/.evict.lock`: one job at a time updates the estimate and evicts."""
    fd = os.open(os.path.join(folder, ".evict.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        estimate = _read_estimate(folder)
        if estimate is not None and estimate + added <= max_bytes:
            report = Eviction(size_bytes=estimate + added)
        else:
            report = _evict(folder, max_bytes)
        _write_estimate(folder, report.size_bytes)
        return report
    finally:
        os.close(fd)  # releases the flock


def _read_estimate(folder: str) -> int | None:
    try:
        with open(os.path.join(folder, ".size"), "rb") as fh:
            return int(fh.read(32))
    except (OSError, ValueError):
        return None


def _write_estimate(folder: str, size: int) -> None:
    tmp = os.path.join(folder, f".size.tmp-{os.getpid()}")
    with open(tmp, "w") as fh:
        fh.write(str(size))
    os.replace(tmp, os.path.join(folder, ".size"))


def _evict(folder: str, max_bytes: int) -> Eviction:
    """Walk the folder's entries; delete the oldest until it is under LOW_WATER of the bound, and
    temporary files of dead writers. Only names this module writes are ever deleted."""
    entries = []  # (mtime_ns, disk bytes, path)
    total = 0
    now = time.time()
    with os.scandir(folder) as shards:
        shard_paths = [s.path for s in shards if _is_entry_name(s.name, 2) and s.is_dir(follow_symlinks=False)]
    for shard in shard_paths:
        try:
            with os.scandir(shard) as listing:
                names = [(e.name, e.path) for e in listing]
        except OSError:
            continue
        for name, path in names:
            try:
                st = os.stat(path, follow_symlinks=False)
            except OSError:  # evicted by another job, or renamed over, since the listing
                continue
            size = st.st_blocks * 512
            if _is_entry_name(name, 38):
                entries.append((st.st_mtime_ns, size, path))
                total += size
            elif name.startswith(".tmp-"):
                if now - st.st_mtime > STALE_TMP_S:
                    _unlink(path)
                else:
                    total += size
    report = Eviction(walked=True)
    if total > max_bytes:
        entries.sort()
        target = int(max_bytes * LOW_WATER)
        for _, size, path in entries:
            if total <= target:
                break
            _unlink(path)
            total -= size
            report.evicted += 1
            report.evicted_bytes += size
    report.size_bytes = total
    return report


class SizeKeeper:
    """A run's side of the bound: adds up what its workers stored and reports it to the folder's
    estimate every tenth of the bound and at the run's end (`settle`)."""

    def __init__(self, folder: str, max_bytes: int):
        self.folder, self.max_bytes = folder, max_bytes
        self.pending = 0
        self.stored_bytes = 0
        self.evicted = 0
        self.evicted_bytes = 0
        self.size_bytes: int | None = None
        self.problem: str | None = None  # why the size could not be kept, once

    def stored(self, nbytes: int) -> None:
        self.pending += nbytes
        self.stored_bytes += nbytes
        if self.pending >= self.max_bytes * REPORT_SHARE:
            self.flush()

    def flush(self) -> None:
        try:
            report = settle(self.folder, self.max_bytes, self.pending)
        except OSError as err:  # the folder is gone or read-only: the run goes on without a bound kept
            self.problem = self.problem or f"--cache {self.folder}: cannot keep its size: {err}"
            self.pending = 0
            return
        self.pending = 0
        self.size_bytes = report.size_bytes
        self.evicted += report.evicted
        self.evicted_bytes += report.evicted_bytes

    def summary(self) -> dict:
        """The summary's `cache` object (docs/reference.md)."""
        return {"folder": self.folder, "stored_bytes": self.stored_bytes, "size_bytes": self.size_bytes,
                "max_bytes": self.max_bytes, "evicted": self.evicted, "evicted_bytes": self.evicted_bytes}
