"""Every path under OUT, in one place.

Owns: the names of the job's state folder, the table folders, part files, staging folders,
the ledger, the lock and the compaction manifest. Must not touch: the files themselves (the
modules that own each file read and write it; this one only names them).

    OUT/
      files/ definitions/ imports/      the tables: part-<batch>.parquet, part-c<gen>-<n>.parquet
      _snakebatch/
        job.json  ledger.jsonl  lock  stats.json  complete.json  compaction.json
        staging/b<batch>.<attempt>.<run>/  a batch's parts, written by run <run>'s workers
        compacting/<table>/             a table's compacted (or refreshed) twin, before the swap
        ledger.g<gen>.jsonl  snapshot.json  a refresh's new ledger, and its record (store/snapshot.py)
        refresh/                        a refresh under way: intent.json, <table>/part-<batch>.parquet
        changes/<gen>.parquet           the change feed of each refresh
"""

from __future__ import annotations

import os
import re

STATE_DIR_NAME = "_snakebatch"


# Every name snakebatch gives a file in a table folder: a batch's part, a compacted part, and the
# temporary (`.NAME.tmp`) of a part being rewritten. Cleanup deletes nothing else: a table
# folder may hold what a user put there.
_OWN_NAME = re.compile(r"\.?part-(?:\d{8,}|c\d{4,}-\d{5,})\.parquet(?:\.tmp)?")


def part_name(batch_id: int) -> str:
    return f"part-{batch_id:08d}.parquet"


def is_own_part(name: str) -> bool:
    return _OWN_NAME.fullmatch(name) is not None


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
        # a job of several sources: its own blob cache until it is complete (engine/coordinator.py)
        self.blob_cache = os.path.join(self.state, "blobs")

    def table_dir(self, table: str) -> str:
        return os.path.join(self.out, table)

    def twin_dir(self, table: str) -> str:
        return os.path.join(self.twins, table)

    def staging_for(self, batch_id: int, attempt: int, run_token: str) -> str:
        return os.path.join(self.staging_root, f"b{batch_id:08d}.{attempt}.{run_token}")

    def state_file(self, name: str) -> str:
        return os.path.join(self.state, name)
