"""Writing files that survive a crash whole or not at all.

Owns: directory fsyncs, the write-to-temporary-then-rename routine every state file goes
through, and the Parquet options and writer of every part file (workers' batch parts and
compaction's parts are written the same way). Must not touch: which files exist or what they
mean (the ledger, the job folder and compaction decide that).
"""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq

# Dictionary encoding only pays on columns of a few distinct values; on paths, hashes, names and
# docstrings (nearly all distinct within a batch) it costs write time and makes files larger:
# measured on real batches, 16% less write time and 6% fewer bytes than dictionaries on all.
# Names that a table lacks are ignored by pyarrow.
LOW_CARDINALITY_COLUMNS = ["language", "parser", "status", "error_type", "parser_version", "kind"]
PARQUET_OPTIONS = {"compression": "zstd", "compression_level": 1, "use_dictionary": LOW_CARDINALITY_COLUMNS}


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


def write_part(table: pa.Table, path: str, row_group_size: int | None = None) -> None:
    """Write `table` to `path` as one durable Parquet file."""
    with open(path, "wb") as fh:
        pq.write_table(table, fh, row_group_size=row_group_size, **PARQUET_OPTIONS)
        fh.flush()
        os.fsync(fh.fileno())
