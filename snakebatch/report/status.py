"""`snakebatch status OUT`: what state a job is in, finished, stopped or running.

Owns: reading a job's record, ledger, lock and stats into a `JobStatus`, and its text form; for
an OUT in object storage, its record, ledger segments and stats through store/objectstore.py.
Must not touch: anything in OUT. It writes nothing, takes no lock and never recovers the ledger
(a running job may be appending to it); counts come from the ledger, and Parquet is read only
for the messages of a few sample errors. Parts are checked against the ledger and the
compaction's manifest: existence and size always, the checksum with `--verify`. In object
storage it only reads (gets, heads, lists): no put, no delete.
"""

from __future__ import annotations

import os
import time

import msgspec

from ..config import object_output, refuse_url
from ..engine.tally import Tally
from ..errors import ConfigError, JobError
from ..schema import ERROR_STATUSES, TABLES
from ..store.durable import Damage, check_part
from ..store.jobfolder import JobRecord, holds_job, lock_holder, read_json, read_record, resume_command, state_dir
from ..store.layout import STATE_DIR_NAME, JobLayout, part_name
from ..store.ledger import Ledger
from ..store.objectcompaction import ObjectCompactor, current_generation
from ..store.objectstore import (
    ObjectJob,
    batch_entries,
    committed_entries,
    is_object_url,
    last_refresh,
    object_resume_command,
    store_error,
)
from ..store.snapshot import read_snapshot

ERROR_SAMPLES = 5


class JobStatus(msgspec.Struct):
    """What `status --json` prints."""

    state: str  # complete | incomplete | running
    output: str
    source: str
    running_pid: str | None
    files_done: int
    bytes_done: int
    status_counts: dict
    language_counts: dict
    batches: int
    runs: int
    elapsed_s: float  # summed over the runs, not the time between them
    files_per_s: float
    stale_files: int  # of the last finished run: committed files changed on disk since
    stale_sample: list
    error_samples: list  # [(path, status, message)]
    corrupt_ledger_lines: int  # found now, redone on resume (not counted while running)
    last_stop_reason: str | None
    created_at: float
    completed_at: float | None
    resume_command: str | None
    parts: dict  # table -> part files in its folder now
    compaction_generation: int | None  # of the compaction the tables are in, if compacted
    # [table, part, problem]: parts not as committed (missing, size, checksum with --verify,
    # unlisted), and the job state's own files (ledger, compaction.json); `run --resume` repairs
    damage: list = []
    verified: bool = False  # whether every part's checksum was checked (--verify)
    snapshot_generation: int | None = None  # the manifest generation readers see (compaction or refresh)
    last_refresh: dict | None = None  # the last --refresh: generation, refreshed_at, changes, ...
    # An OUT in object storage: the open run's token (no PID: its coordinator may be elsewhere),
    # and the Unix time of the newest ledger segment (a killed run looks running; this tells its age)
    running_run: str | None = None
    last_segment_at: float | None = None
    # The job's files whose parser ran, those of a git revision that took the parse of the same
    # blob at another path, and those whose parse came from --cache (0 for batches committed
    # before these were counted).
    parses: dict = msgspec.field(default_factory=lambda: {"parsed": 0, "reused": 0, "cached": 0})
    # Each source's label -> its files done, in the job's order (`source` is "" in a job of several).
    sources: dict = {}


def _ledger_fields(record, state: str, entries: list, tally, last: dict, completed: dict, elapsed: float,
                   run_count: int) -> dict:
    """The JobStatus fields that come from the job's record, its ledger entries and the last
    run's stats, alike for a folder and a bucket."""
    return dict(
        source=record.job.source,
        files_done=tally.files,
        bytes_done=tally.bytes,
        status_counts=_sorted_counts(tally.status_counts),
        language_counts=_sorted_counts(tally.language_counts),
        batches=len(entries),
        runs=run_count,
        elapsed_s=round(elapsed, 3),
        files_per_s=round(tally.files / elapsed, 1) if elapsed > 0 else 0.0,
        stale_files=int(last.get("stale_files") or 0),
        stale_sample=list(last.get("stale_sample") or []),
        last_stop_reason=last.get("stop_reason") if state != "complete" else None,
        created_at=record.created_at,
        completed_at=completed.get("completed_at") if state == "complete" else None,
        parses=dict(tally.parses),
        sources=_source_counts(record.job, entries),
    )


def _source_counts(job, entries) -> dict:
    """Files done per source label, from the ledger's entries (each batch is of one source)."""
    counts = {spec.label: 0 for spec in job.sources}
    for entry in entries:
        counts[entry.source] = counts.get(entry.source, 0) + len(entry.statuses)
    return counts


def _sorted_counts(counts: dict) -> dict:
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _error_samples(out: str, errors: list[tuple[int, str, str]], manifest) -> list:
    """(path, status, message) of a few error files, the message read from the part that holds
    their batch's rows (`manifest`: the compaction's, or None)."""
    if not errors:
        return []
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from ..store.compaction import files_part_of

    samples = []
    for batch_id, path, status in errors:
        message = None
        try:
            table = pq.read_table(os.path.join(out, "files", files_part_of(manifest, batch_id)),
                                  columns=["path", "error_message"], filters=[("path", "==", path)])
            rows = table.filter(pc.equal(table["path"], path))
            if rows.num_rows:
                message = rows["error_message"][0].as_py()
        except (OSError, ValueError):
            pass  # committed a moment ago by a running job, or gone: the sample keeps no message
        samples.append((path, status, (message or "")[:300]))
    return samples


def _elapsed(entries, runs: list, current_start: float | None) -> tuple[float, int]:
    """Seconds spent running, summed over runs, and the number of runs. A run that ended
    normally recorded its time; a killed one is counted from its start to its last commit."""
    recorded = {run.get("started_at") for run in runs}
    elapsed = sum(float(run.get("elapsed_s") or 0.0) for run in runs)
    killed: dict[float, float] = {}
    for entry in entries:
        start = entry.run_started_at
        if not start or start in recorded or (current_start is not None and start >= current_start):
            continue
        killed[start] = max(killed.get(start, start), entry.committed_at)
    elapsed += sum(last - start for start, last in killed.items())
    count = len(runs) + len(killed)
    if current_start is not None:
        elapsed += max(0.0, time.time() - current_start)
        count += 1
    return elapsed, count


def _damage(out: str, entries, manifest, manifest_unreadable: bool, deep: bool) -> list:
    """The parts that are not as the ledger and compaction.json recorded them (see JobStatus)."""
    from ..store.compaction import MANIFEST

    if manifest_unreadable:
        return [Damage(STATE_DIR_NAME, MANIFEST, "unreadable")]  # which parts are live is unknown
    layout = JobLayout(out)
    state = layout.state
    cut_off = {table for table in TABLES if os.path.isdir(layout.twin_dir(table))}
    covered = set(manifest.covers) if manifest else set()
    damage, named = [], {table: set() for table in TABLES}
    for entry in entries:
        if entry.batch_id in covered:
            continue
        name = part_name(entry.batch_id)
        for table in TABLES:
            named[table].add(name)
            if table in cut_off:
                continue  # recovery settles a compaction cut off first
            problem = check_part(os.path.join(layout.table_dir(table), name), entry.parts.get(table), deep)
            if problem == "missing" and os.path.exists(os.path.join(state, entry.staging, table + ".parquet")):
                problem = None  # a commit cut off between its ledger line and its renames
            if problem:
                damage.append(Damage(table, name, problem))
    for table in TABLES:
        for part in manifest.parts(table) if manifest else ():
            named[table].add(part.name)
            problem = None if table in cut_off else check_part(
                os.path.join(layout.table_dir(table), part.name), [part.size, part.xxh3], deep)
            if problem:
                damage.append(Damage(table, part.name, problem))
        if table not in cut_off:
            for name in sorted(_listdir(layout.table_dir(table))):
                if name.endswith(".parquet") and not name.startswith(".") and name not in named[table]:
                    damage.append(Damage(table, name, "unlisted"))
    return damage


def job_status(out: str | os.PathLike, verify: bool = False, storage_options=None) -> JobStatus:
    """The status of the job in `out`; ConfigError when `out` holds no job. Every part is
    checked for existence and size; with `verify`, also against its checksum (reads them all).
    `out` may be in object storage (`storage_options` as for `run`)."""
    if is_object_url(os.fspath(out)):
        return _object_status(*object_output(os.fspath(out), storage_options), verify)
    if storage_options:
        raise ConfigError("--storage-option: only for an OUT in object storage (s3://, gs://, az://)")
    refuse_url(out, "OUT")
    out = os.path.abspath(os.fspath(out))
    if not holds_job(out):
        raise ConfigError(f"{out} holds no snakebatch job (no {os.path.basename(state_dir(out))}/job.json)")
    record = read_record(out)
    holder = lock_holder(out)
    current_start = None
    if holder is not None:
        try:
            current_start = os.stat(os.path.join(state_dir(out), "lock")).st_mtime
        except OSError:
            current_start = time.time()
    ledger = Ledger(out)
    entries, corrupt = ledger.read()
    tally = Tally()
    errors: list[tuple[int, str, str]] = []
    for entry in entries:
        tally.add(entry)
        if len(errors) < ERROR_SAMPLES:
            errors += [(entry.batch_id, path, status) for path, status in zip(entry.paths, entry.statuses)
                       if status in ERROR_STATUSES][:ERROR_SAMPLES - len(errors)]
    stats = read_json(out, "stats.json")
    stats = stats if isinstance(stats, dict) else {}
    last = stats.get("summary") or {}
    runs = stats.get("runs") or []
    completed = read_json(out, "complete.json")
    from ..store.compaction import read_manifest  # pyarrow, as the error samples need it anyway

    try:
        manifest, manifest_unreadable = read_manifest(state_dir(out)), False
    except JobError:
        manifest, manifest_unreadable = None, True  # `run --resume` rebuilds it; status only reads
    damage = []
    if holder is None:  # a running job's parts are on their way between staging and the tables
        damage = _damage(out, entries, manifest, manifest_unreadable, verify)
        if isinstance(completed, dict) and completed.get("files") != tally.files:
            damage.append(Damage(STATE_DIR_NAME, "ledger.jsonl", f"{tally.files} files, not the {completed.get('files')} "
                                                                "of the complete job"))
    if holder is not None:
        state = "running"
    elif isinstance(completed, dict) and not corrupt and not damage:
        state = "complete"
    else:
        state = "incomplete"
    elapsed, run_count = _elapsed(entries, runs, current_start)
    parts = {table: sum(1 for name in _listdir(JobLayout(out).table_dir(table)) if name.endswith(".parquet"))
             for table in TABLES}
    return JobStatus(
        state=state,
        output=out,
        running_pid=holder,
        error_samples=_error_samples(out, errors, manifest),
        corrupt_ledger_lines=0 if holder is not None else len(corrupt),
        **_ledger_fields(record, state, entries, tally, last, completed, elapsed, run_count),
        resume_command=resume_command(record.job, out) if state == "incomplete" else None,
        parts=parts,
        compaction_generation=manifest.generation if manifest else None,
        damage=damage,
        verified=verify and holder is None,
        snapshot_generation=manifest.generation if manifest else None,
        last_refresh=_last_refresh(out),
    )


def _object_status(url: str, storage_options: dict, verify: bool) -> JobStatus:
    """job_status for an OUT in object storage (store/objectstore.py): reads the job record,
    the ledger segments and the run's record; puts nothing. The job is running while its last
    `open` segment has no `close` after it."""
    job = ObjectJob(url, storage_options)
    job.check_reachable()
    try:
        data = job.read_job()
        if data is None:
            raise ConfigError(f"{url} holds no snakebatch job (no {STATE_DIR_NAME}/job.json)")
        record = msgspec.json.decode(data, type=JobRecord)
        segments = job.segments()
        stats = job.read_state("stats.json")
        completed = job.read_state("complete.json")
        last_segment_at = job.last_segment_at()
        generation = current_generation(job)
    except msgspec.DecodeError as err:
        raise JobError(f"{url}: the job's record cannot be read: {err}") from None
    except (ConfigError, JobError):
        raise
    except Exception as err:  # obstore.exceptions.*: the store failed after its retries
        raise JobError(f"{url}: cannot read the job: {store_error(err)}") from None
    stats = _decoded(stats)
    completed = _decoded(completed)
    opened = [s.run for s in segments if s.kind == "open"]
    closed = {s.run for s in segments if s.kind == "close"}
    running = opened[-1] if opened and opened[-1] not in closed else None
    try:
        entries = committed_entries(segments, job.load_ledger)
    except JobError:
        raise
    except Exception as err:  # obstore.exceptions.*: the store failed after its retries
        raise JobError(f"{url}: cannot read the job: {type(err).__name__}: {err}") from None
    refreshed = last_refresh(segments)[1]
    tally = Tally()
    errors: list[tuple[int, str, str]] = []
    for entry in entries:
        tally.add(entry)
        if len(errors) < ERROR_SAMPLES:
            errors += [(entry.batch_id, path, status) for path, status in zip(entry.paths, entry.statuses)
                       if status in ERROR_STATUSES][:ERROR_SAMPLES - len(errors)]
    last = stats.get("summary") or {}
    runs = stats.get("runs") or []
    damage = [] if running else \
        job.part_damage(batch_entries(segments), verify) + ObjectCompactor(job).problems(generation, verify)
    if running:
        state = "running"
    elif completed and not damage:
        state = "complete"
    else:
        state = "incomplete"
    last_open = max((i for i, s in enumerate(segments) if s.kind == "open"), default=0)
    current_start = next((s.entry.run_started_at for s in segments[last_open:] if s.kind == "batch"), None) \
        if running else None
    elapsed, run_count = _elapsed(entries, runs, current_start)
    if running and current_start is None:
        run_count += 1  # the open run has committed nothing yet
    return JobStatus(
        state=state,
        output=url,
        running_pid=None,
        error_samples=_object_error_samples(job, errors),
        corrupt_ledger_lines=0,
        **_ledger_fields(record, state, entries, tally, last, completed, elapsed, run_count),
        # Running may be a run killed without closing: resuming is safe either way (of two
        # coordinators the one whose segment put comes second stops).
        resume_command=object_resume_command(record.job, url, storage_options) if state != "complete" else None,
        parts={table: len(job.table_parts(table)) for table in TABLES},
        compaction_generation=generation.generation if generation and generation.tables else None,
        damage=damage,
        verified=verify and not running,
        snapshot_generation=generation.generation if generation else None,
        last_refresh={k: v for k, v in refreshed.refresh.items() if k != "router"} if refreshed and refreshed.refresh
        else None,
        running_run=running,
        last_segment_at=last_segment_at,
    )


def _decoded(data: bytes | None) -> dict:
    try:
        value = msgspec.json.decode(data) if data else {}
    except msgspec.DecodeError:
        return {}  # a record, not job state
    return value if isinstance(value, dict) else {}


def _object_error_samples(job, errors: list[tuple[int, str, str]]) -> list:
    """As _error_samples, the messages read from the parts in the bucket."""
    if not errors:
        return []
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    samples = []
    for batch_id, path, status in errors:
        message = None
        try:
            data = job.read_part("files", batch_id)
            if data is not None:
                table = pq.read_table(pa.BufferReader(data), columns=["path", "error_message"],
                                      filters=[("path", "==", path)])
                rows = table.filter(pc.equal(table["path"], path))
                if rows.num_rows:
                    message = rows["error_message"][0].as_py()
        except (OSError, ValueError):
            pass  # the part is damaged: the sample keeps no message
        samples.append((path, status, (message or "")[:300]))
    return samples


def _last_refresh(out: str) -> dict | None:
    record = read_snapshot(out)
    return {k: v for k, v in record.items() if k != "router"} if record else None


def _listdir(folder: str) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []


def format_status(status: JobStatus) -> str:
    """The text `snakebatch status` prints."""
    head = f"snakebatch: {status.output}: {status.state}"
    if status.state == "running" and status.running_run:
        ago = f", last ledger segment {time.time() - status.last_segment_at:.0f}s ago" if status.last_segment_at else ""
        head += f" (run {status.running_run}{ago}; a run killed without closing looks running too)"
    elif status.state == "running":
        head += f" (PID {status.running_pid})"
    elif status.state == "incomplete" and status.last_stop_reason:
        head += f" (last run: {status.last_stop_reason})"
    lines = [head, f"  source:    {status.source}"] if len(status.sources) <= 1 else [
        head, "  sources:   " + ", ".join(f"{label} {files}" for label, files in status.sources.items())]
    lines.append(f"  files:     {status.files_done} done in {status.batches} batches, "
                 f"{status.bytes_done / 1e6:.1f} MB read")
    lines.append("  status:    " + (", ".join(f"{k} {v}" for k, v in status.status_counts.items()) or "-"))
    languages = list(status.language_counts.items())
    shown = ", ".join(f"{k} {v}" for k, v in languages[:8])
    if len(languages) > 8:
        shown += f", {len(languages) - 8} more"
    lines.append("  languages: " + (shown or "-"))
    lines.append(f"  elapsed:   {status.elapsed_s:.1f}s over {status.runs} run{'s' if status.runs != 1 else ''}, "
                 f"{status.files_per_s:.0f} files/s")
    compacted = f" (compacted, generation {status.compaction_generation})" if status.compaction_generation else ""
    lines.append("  parts:     " + ", ".join(f"{table} {count}" for table, count in status.parts.items()) + compacted)
    if status.parses["reused"] or status.parses["cached"]:
        lines.append(f"  parses:    {status.parses['parsed']} parsed, {status.parses['reused']} reused "
                     f"(the same blob at another path), {status.parses['cached']} cached (--cache)")
    if status.last_refresh:
        r = status.last_refresh
        c = r.get("changes", {})
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.get("refreshed_at", 0)))
        lines.append(f"  refreshed: {when}, generation {status.snapshot_generation}: +{c.get('added', 0)} "
                     f"~{c.get('modified', 0)} -{c.get('deleted', 0)}, {c.get('reparsed', 0)} reparsed, "
                     f"{c.get('touched', 0)} touched")
    if status.stale_files:
        lines.append(f"  stale:     {status.stale_files} committed files changed on disk since "
                     f"(kept as committed), e.g. {status.stale_sample[0] if status.stale_sample else '?'}")
    if status.corrupt_ledger_lines:
        lines.append(f"  ledger:    {status.corrupt_ledger_lines} corrupt entr"
                     f"{'y' if status.corrupt_ledger_lines == 1 else 'ies'}; their files are redone on resume")
    if status.damage:
        shown = ", ".join(f"{d.table}/{d.part} ({d.problem})" for d in status.damage[:8])
        more = f", {len(status.damage) - 8} more" if len(status.damage) > 8 else ""
        # In object storage a resume sees only what the listing shows (existence and size).
        repair = ("a resume redoes the batches of missing or resized parts and deletes unlisted ones; "
                  "delete a part with a checksum mismatch, then resume"
                  if is_object_url(status.output) else "a resume redoes their batches")
        lines.append(f"  DAMAGED:   {len(status.damage)} part(s) not as committed: {shown}{more}; {repair}")
    elif status.verified:
        lines.append("  verified:  every part matches its recorded size and checksum")
    for path, state, message in status.error_samples:
        lines.append(f"  e.g. {state}: {path}: {message}")
    if status.resume_command:
        killed = "if that run was killed, " if status.state == "running" else ""
        lines.append(f"  {killed}resume with: {status.resume_command}")
    return "\n".join(lines)
