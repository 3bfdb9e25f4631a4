"""Every path under OUT, in one place.

Owns: the names of the job's state folder, the table folders, part files, staging folders,
the ledger, the lock and the compaction manifest. Must not touch: the files themselves (the
modules that own each file read and write it; this one only names them).

    OUT/
      files/ definitions/ imports/      the tables: part-<batch>.parquet, part-c<gen>-<n>.parquet
      _snakebatch/
        job.json  ledger.jsonl  lock  stats.json  complete.json  compaction.json
        staging/b<batch>.<attempt>/     a batch's parts, written by a worker
        compacting/<table>/             a table's compacted (or refreshed) twin, before the swap
        ledger.g<gen>.jsonl  snapshot.json  a refresh's new ledger, and its record (store/snapshot.py)
        refresh/                        a refresh under way: intent.json, <table>/part-<batch>.parquet
        changes/<gen>.parquet           the change feed of each refresh
"""

from __future__ import annotations

import os

from ..schema import TABLES

STATE_DIR_NAME = "_snakebatch"


def part_name(batch_id: int) -> str:
    return f"part-{batch_id:08d}.parquet"


class JobLayout:
    """The paths of the job in `out`."""

    def __init__(self, out: str):
        self.out = out
        self.state = os.path.join(out, STATE_DIR_NAME)
        self.ledger = os.path.join(self.state, "ledger.jsonl")
        self.lock = os.path.join(self.state, "lock")
        self.record = os.path.join(self.state, "job.json")
        self.staging_root = os.path.join(self.state, "staging")
        self.twins = os.path.join(self.state, "compacting")

    def table_dir(self, table: str) -> str:
        return os.path.join(self.out, table)

    def table_dirs(self) -> list[str]:
        return [self.table_dir(table) for table in TABLES]

    def twin_dir(self, table: str) -> str:
        return os.path.join(self.twins, table)

    def staging_for(self, batch_id: int, attempt: int) -> str:
        return os.path.join(self.staging_root, f"b{batch_id:08d}.{attempt}")

    def state_file(self, name: str) -> str:
        return os.path.join(self.state, name)
