"""Writing files that survive a crash whole or not at all.

Owns: directory fsyncs, the write-to-temporary-then-rename routine every state file goes
through, the Parquet options and writer of every part file (workers' batch parts and
compaction's parts are written the same way), and each part's size and xxh3 checksum, by
which a part is later checked (`check_part`). Must not touch: which files exist or what they
mean (the ledger, the job folder and compaction decide that).
"""

from __future__ import annotations

import os

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

# Dictionary encoding only pays on columns of a few distinct values; on paths, hashes, names and
# docstrings (nearly all distinct within a batch) it costs write time and makes files larger:
# measured on real batches, 16% less write time and 6% fewer bytes than dictionaries on all.
# Names that a table lacks are ignored by pyarrow.
LOW_CARDINALITY_COLUMNS = ["language", "parser", "status", "error_type", "parser_version", "kind"]
PARQUET_OPTIONS = {"compression": "zstd", "compression_level": 1, "use_dictionary": LOW_CARDINALITY_COLUMNS}
# Arrow's default allocator (mimalloc in the pyarrow wheels) keeps what reading and writing parts
# freed: on the 6,000-file stdlib corpus the coordinator peaked at 224-228 MB with it and 103-105 MB
# with the C library's malloc, the workers and forkserver at 268-282 MB against 224-227 MB, with no
# loss of speed (busy worker seconds 60-64 against 53-61, load 8); on 100k small files the
# coordinator's compaction added 100 MB against 20 MB.
ALLOCATOR_VARIABLE = "ARROW_DEFAULT_MEMORY_POOL"


def use_system_allocator() -> None:
    """Allocate this process's Arrow memory with malloc from now on, unless the user chose an
    allocator (ARROW_DEFAULT_MEMORY_POOL). For snakebatch's own processes: the CLI's and the
    local pool's (an embedding program keeps its choice)."""
    if ALLOCATOR_VARIABLE not in os.environ:
        pa.set_memory_pool(pa.system_memory_pool())


def fsync_dir(path: str) -> None:
    """Make the entries of folder `path` (creations, renames, deletions) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str, data: bytes) -> None:
    """Replace `path` by `data` in one step: a reader sees the old or the new file, never a torn one."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path) or ".")


def write_part(table: pa.Table, path: str, row_group_size: int | None = None) -> tuple[int, str]:
    """Write `table` to `path` as one durable Parquet file; returns its size and checksum, for
    the ledger (read back from the page cache: see file_checksum)."""
    with open(path, "wb") as fh:
        pq.write_table(table, fh, row_group_size=row_group_size, **PARQUET_OPTIONS)
        fh.flush()
        os.fsync(fh.fileno())
    return file_checksum(path)


class Damage(msgspec.Struct, array_like=True):
    """A part file that is not as committed: `problem` is missing, size, checksum or unlisted
    (a part no ledger entry or compaction names)."""

    table: str
    part: str
    problem: str


def file_checksum(path: str) -> tuple[int, str]:
    """(size, xxh3-64 hex) of a file: what the ledger records of each part it commits."""
    digest = xxhash.xxh3_64()
    size = 0
    with open(path, "rb", buffering=0) as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def check_part(path: str, recorded, deep: bool) -> str | None:
    """What is wrong with the part at `path` against its `recorded` [size, xxh3] (empty: not
    recorded, only its existence is checked): None, or missing, size or checksum. Without
    `deep` the checksum is not computed."""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return "missing"
    if not recorded or recorded[0] < 0:
        return None
    if size != recorded[0]:
        return "size"
    if deep and file_checksum(path)[1] != recorded[1]:
        return "checksum"
    return None
