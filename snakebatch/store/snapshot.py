"""Snapshots: a refresh replaces the job's tables and ledger by a new generation, one step each.

Owns: the refresh's side folder `OUT/_snakebatch/refresh/` (its intent and the parts of the
batches it parsed), the change feed `OUT/_snakebatch/changes/<generation>.parquet`,
`OUT/_snakebatch/snapshot.json`, and the commit of a generation. Must not touch: which files
changed or how they are parsed (engine/refresh.py decides and runs that); ledger lines are
encoded by store/ledger.py, the manifest and the folder exchange are store/compaction.py's.

Protocol (the live snapshot has manifest generation g-1, or none; the new one is g):

    0. refresh/intent.json := {generation g, the options the live rows were made with, ...};
       again with in_process once the plan chose to parse in the coordinator
    1. each parsed batch: staging -> refresh/<table>/part-<batch>.parquet (no ledger line)
    2. per table, twin compacting/<table>/: every live part without an affected path hard-linked
       as it is; parts with affected paths rewritten without those rows (and `files` rows of
       touched files with their new mtime; after a refresh to another revision, every `files`
       part, with the new `commit`), plus the new batches' rows, into part-c<g>-<k> of
       PART_ROWS rows (up to twice that with the new rows; a longer part is cut); fsynced
    3. ledger.g<g>.jsonl: the new generation's whole ledger (live entries trimmed of affected
       paths and with fresh stat data, then the new batches), fsynced;
       changes/.<g>.parquet.pending: the change feed
    4. compaction.json := {generation g, covers: every batch of 3, the parts of 2,
       ledger: "ledger.g<g>.jsonl", refresh: counts}        -- atomic rename: the commit point
    5. ledger.g<g>.jsonl -> ledger.jsonl; exchange each table that got new parts with its twin;
       delete the twins; changes pending -> <g>.parquet; snapshot.json; delete refresh/

Every batch of the new ledger is covered by the manifest, so the tables are exactly the
manifest's parts and the ledger names each path once: resume, status and compaction read the
new generation like any compacted job. A reader lists a table folder before or after its
exchange: all old parts or all new ones (tables are exchanged one after the other, as in a
compaction).

Recovery: before 4, nothing live changed: the twins (store/compaction.py), `ledger.g*.jsonl`
(store/ledger.py), the side folder and pending feed (here) are deleted, and intent.json stays, so that
the next `--refresh` or `--resume` compares SOURCE against the options of the rows that are live.
After 4, the ledger reads and adopts the manifest's ledger, compaction exchanges the twins that
still hold the new parts, and `settle` finishes the feed and removes intent.json.
"""

from __future__ import annotations

import os
import shutil
import time

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..config import JobConfig
from ..errors import JobError
from ..schema import TABLES, table_schema
from .compaction import (
    MANIFEST,
    PART_ROWS,
    CompactedPart,
    Compactor,
    Manifest,
    PartWriter,
    exchange,
    read_manifest,
)
from .durable import atomic_write, fsync_dir, write_part
from .layout import JobLayout, part_name
from .ledger import Ledger, LedgerEntry

SIDE = "refresh"
CHANGES = "changes"
INTENT = "intent.json"
SNAPSHOT = "snapshot.json"
CHANGE_KINDS = ("added", "modified", "deleted", "reparsed", "touched")
CHANGES_SCHEMA = pa.schema([
    ("path", pa.string()),
    ("change", pa.string()),
    ("old_blob_id", pa.string()),
    ("new_blob_id", pa.string()),
    ("generation", pa.int64()),
    ("refreshed_at", pa.timestamp("us", tz="UTC")),
])


class Intent(msgspec.Struct):
    """refresh/intent.json: a refresh is under way towards `generation`."""

    generation: int
    previous_job: JobConfig  # the options the live rows were made with
    redo: tuple = ()
    verify_content: bool = False
    started_at: float = 0.0
    job: JobConfig | None = None  # the refresh's own options (object storage: what a --resume compares)
    # Its batches are parsed in the coordinator's process (engine/refresh.py): should it never
    # commit (a parser crashed the process, or hung), the next refresh parses in a pool.
    in_process: bool = False


class Generation(msgspec.Struct):
    """What engine/refresh.py hands over to commit a generation."""

    generation: int
    entries: list  # LedgerEntry: the whole new ledger, live entries first, then the new batches
    new_batches: list  # ids of the batches whose parts are in the side folder, in commit order
    drop: set  # display paths whose live rows go (modified, deleted, reparsed)
    patch: dict  # display path -> new mtime_ns, for `files` rows of touched files
    changes: list  # (path, change, old_blob_id, new_blob_id)
    refresh: dict  # counts and times, for the manifest and snapshot.json
    content: bool  # whether `files` has the content column now
    commit: str | None = None  # a refresh to another revision: the `commit` of every `files` row


def side_dir(out: str) -> str:
    return os.path.join(JobLayout(out).state, SIDE)


def side_part(out: str, table: str, batch_id: int) -> str:
    return os.path.join(side_dir(out), table, part_name(batch_id))


def changes_path(out: str, generation: int) -> str:
    return os.path.join(JobLayout(out).state, CHANGES, f"{generation:06d}.parquet")


def read_intent(out: str) -> Intent | None:
    try:
        with open(os.path.join(side_dir(out), INTENT), "rb") as fh:
            return msgspec.json.decode(fh.read(), type=Intent)
    except (OSError, msgspec.DecodeError):
        return None


def pending_refresh(out: str) -> Intent | None:
    """The intent of a refresh that was cut off before its commit point (read-only)."""
    intent = read_intent(out)
    if intent is None:
        return None
    try:
        manifest = read_manifest(JobLayout(out).state)
    except JobError:  # reported by recovery
        return intent
    if manifest is not None and manifest.generation >= intent.generation:
        return None
    return intent


def begin(out: str, intent: Intent) -> None:
    """Step 0: an empty side folder and the intent (the caller holds the lock, after recovery)."""
    folder = side_dir(out)
    shutil.rmtree(folder, ignore_errors=True)
    for table in TABLES:
        os.makedirs(os.path.join(folder, table))
    write_intent(out, intent)


def write_intent(out: str, intent: Intent) -> None:
    """Replace the intent of the refresh under way (begun by `begin`)."""
    atomic_write(os.path.join(side_dir(out), INTENT), msgspec.json.encode(intent))


def read_snapshot(out: str) -> dict | None:
    try:
        with open(os.path.join(JobLayout(out).state, SNAPSHOT), "rb") as fh:
            data = msgspec.json.decode(fh.read())
        return data if isinstance(data, dict) else None
    except (OSError, msgspec.DecodeError):
        return None


def write_snapshot(out: str, record: dict) -> None:
    atomic_write(os.path.join(JobLayout(out).state, SNAPSHOT), msgspec.json.encode(record))


def settle(out: str) -> None:
    """Finish what a committed refresh left (after the ledger's and compaction's recovery) and
    drop the leftovers of one that never committed, except its intent (see the protocol)."""
    state = JobLayout(out).state
    manifest = read_manifest(state)
    live = int(manifest.refresh.get("generation", 0)) if manifest is not None and manifest.refresh else 0
    folder = os.path.join(state, CHANGES)
    for name in os.listdir(folder) if os.path.isdir(folder) else ():
        if name.startswith(".") and name.endswith(".parquet.pending"):
            generation = int(name[1:].split(".", 1)[0])
            if generation == live:
                os.replace(os.path.join(folder, name), changes_path(out, generation))
            else:
                os.unlink(os.path.join(folder, name))
    intent = read_intent(out)
    if intent is None or (manifest is not None and manifest.generation >= intent.generation):
        shutil.rmtree(side_dir(out), ignore_errors=True)
    if live:
        record = read_snapshot(out) or {}
        if record.get("generation", 0) < live:
            write_snapshot(out, dict(manifest.refresh))


def drop_pending(out: str) -> None:
    """Forget a refresh that never committed, intent and all (`--fresh` does it by deleting OUT)."""
    shutil.rmtree(side_dir(out), ignore_errors=True)


def change_feed(gen: Generation) -> pa.Table:
    """The change feed of a generation (`changes/<generation>.parquet`)."""
    refreshed_at = gen.refresh["refreshed_at"]
    return pa.Table.from_pylist(
        [{"path": p, "change": c, "old_blob_id": o, "new_blob_id": n, "generation": gen.generation,
          "refreshed_at": int(refreshed_at * 1e6)} for p, c, o, n in gen.changes],
        schema=CHANGES_SCHEMA,
    )


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with `schema`'s columns (a dropped `content` column, or nulls for a new one)."""
    if table.schema.equals(schema):
        return table
    columns = [table[f.name] if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
               for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def rewrite_rows(data: pa.Table, table: str, drop: pa.Array, patch_keys: pa.Array, patch_values: pa.Array,
             commit: str | None) -> pa.Table:
    keep = pc.invert(pc.is_in(data["path"], value_set=drop))
    data = data.filter(keep)
    if table == "files" and commit is not None:
        column = pa.array([commit] * data.num_rows, type=pa.string())
        data = data.set_column(data.schema.get_field_index("commit"), "commit", column)
    if table == "files" and len(patch_keys) and data.num_rows:
        index = pc.index_in(data["path"], value_set=patch_keys)
        patched = pc.if_else(pc.is_valid(index), pc.take(patch_values, index), data["mtime_ns"])
        data = data.set_column(data.schema.get_field_index("mtime_ns"), "mtime_ns", patched)
    return data


def _pieces(data: pa.Table, table: str, batches: list, gen: Generation) -> list[tuple[pa.Table, list]]:
    """A rewritten part's rows as parts of PART_ROWS rows when it holds more than twice that (a
    part compacted before parts were bounded, or grown by refreshes), each with the batches whose
    rows it holds: by `batch_id` in `files`, by path in the other tables."""
    if data.num_rows <= 2 * PART_ROWS:
        return [(data, batches)]
    batch_of = None
    if table != "files":
        batch_of = {path: entry.batch_id for entry in gen.entries for path in entry.paths}
    pieces = []
    for start in range(0, data.num_rows, PART_ROWS):
        piece = data.slice(start, PART_ROWS)
        if batch_of is None:
            held = set(pc.unique(piece["batch_id"]).to_pylist())
        else:
            held = {batch_of.get(path) for path in pc.unique(piece["path"]).to_pylist()}
        pieces.append((piece, [b for b in batches if b in held]))
    return pieces


def _build_twin(out: str, table: str, live: Manifest | None, by_batch: dict, affected: set, kept_batches: set,
                gen: Generation, schema: pa.Schema, drop: pa.Array, patch_keys: pa.Array,
                patch_values: pa.Array) -> list[CompactedPart]:
    """Step 2 for one table: its twin folder's parts (see the protocol above)."""
    layout = JobLayout(out)
    twin = layout.twin_dir(table)
    parts: list[CompactedPart] = []
    writer = PartWriter(twin)
    fed = False

    def close() -> None:
        parts.append(writer.close(f"part-c{gen.generation:04d}-{len(parts):05d}.parquet"))

    for part in Compactor(out).live_parts(live, list(by_batch), table):
        path = os.path.join(layout.table_dir(table), part.name)
        if not affected.intersection(part.batches):
            rows = part.rows if part.rows >= 0 else by_batch[part.batches[0]].rows.get(table, -1)
            os.link(path, os.path.join(twin, part.name))
            parts.append(CompactedPart(part.name, list(part.batches), rows))
            continue
        data = conform(rewrite_rows(pq.read_table(path), table, drop, patch_keys, patch_values, gen.commit), schema)
        size = os.path.getsize(path)
        for piece, batches in _pieces(data, table, [b for b in part.batches if b in kept_batches], gen):
            if fed and writer.full():
                close()
            writer.add_table(piece, batches, size * piece.num_rows // max(data.num_rows, 1))
            fed = True
    for batch_id in gen.new_batches:
        # New rows join the last rewritten part up to twice the bound: a refresh adds no part of
        # a few rows each time.
        if fed and writer.rows_in >= 2 * PART_ROWS:
            close()
        writer.add(side_part(out, table, batch_id), [batch_id])
        fed = True
    if fed:
        close()
    return parts


def commit(out: str, live: Manifest | None, live_entries: list[LedgerEntry], gen: Generation) -> Manifest:
    """Steps 2-5 of the protocol; returns the new manifest. Raises OSError before the commit
    point with nothing live changed (the twins are left for recovery)."""
    layout = JobLayout(out)
    by_batch = {entry.batch_id: entry for entry in live_entries}
    kept_batches = {entry.batch_id for entry in gen.entries}
    drop_batches = {entry.batch_id for entry in live_entries if gen.drop.intersection(entry.paths)}
    patch_batches = {entry.batch_id for entry in live_entries if not gen.patch.keys().isdisjoint(entry.paths)}
    drop = pa.array(sorted(gen.drop), type=pa.string())
    patch_keys = pa.array(list(gen.patch), type=pa.string())
    patch_values = pa.array(list(gen.patch.values()), type=pa.int64())
    tables: dict[str, list[CompactedPart]] = {}
    written: dict[str, bool] = {}
    for table in TABLES:
        schema = table_schema(table, gen.content)
        twin = layout.twin_dir(table)
        shutil.rmtree(twin, ignore_errors=True)
        os.makedirs(twin)
        affected = drop_batches | (patch_batches if table == "files" else set())
        if table == "files" and gen.commit is not None:
            affected = set(by_batch)
        parts = _build_twin(out, table, live, by_batch, affected, kept_batches, gen, schema, drop,
                            patch_keys, patch_values)
        written[table] = any(p.name.startswith(f"part-c{gen.generation:04d}-") for p in parts)
        fsync_dir(twin)
        tables[table] = parts
    ledger = Ledger(out)
    ledger_name = ledger.write_generation(gen.generation, gen.entries)
    feed = change_feed(gen)
    os.makedirs(os.path.join(layout.state, CHANGES), exist_ok=True)
    write_part(feed, os.path.join(layout.state, CHANGES, f".{gen.generation:06d}.parquet.pending"))
    manifest = Manifest(generation=gen.generation, covers=sorted(kept_batches), tables=tables,
                        compacted_at=time.time(), ledger=ledger_name, refresh=gen.refresh)
    atomic_write(os.path.join(layout.state, MANIFEST), msgspec.json.encode(manifest))  # the commit point
    ledger.adopt_generation()
    for table in TABLES:
        if written[table]:
            exchange(layout.twin_dir(table), layout.table_dir(table))
    fsync_dir(out)
    shutil.rmtree(layout.twins)
    settle(out)
    return manifest
