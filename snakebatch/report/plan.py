"""The preview of a job (`snakebatch plan`): what a run would take on, and what it would cost.

Owns: walking SOURCE with the job's filters (the same `discover`, or the same listing of a SOURCE
in object storage), counting files, bytes,
languages and batches (the same `BatchPlanner`, fed the batch size the governor would choose),
and the estimate of wall time and peak memory, calibrated by running the real worker in this
process on a small sample spread across the tree. Must not touch: the output folder (a plan
writes nothing; the sample's part files go to a temporary folder removed at once) or the engine's
state; it only reads metadata plus the sample.

The estimate is a model, not a promise:

    wall = startup + max(walk, cpu / parallelism + batches * batch_s / workers)
    cpu  = sum over parsers of bytes * (CPU seconds per byte of the sample, the worker's whole path)
    peak = 2 * this process's RSS (coordinator, forkserver) + resource tracker
           + workers * (worker RSS after a batch + rows of the densest batch * bytes per row)

`parallelism` is the workers' fair share of the cores beside the coordinator and the other load
on the machine, which the share of a core the sampling got reveals. The batch count comes from
the real BatchPlanner with the real MemoryGovernor fed the estimated parse times, so it follows
the batch size the run will settle on.
"""

from __future__ import annotations

import heapq
import os
import random
import shutil
import tempfile
import time

import msgspec
import psutil

from ..config import RunConfig, build_config, is_object_output, usable_cores
from ..engine.batching import BatchPlanner
from ..engine.discovery import DiscoveryStats, SourceFile
from ..engine.gitsource import source_files
from ..engine.governor import MemoryGovernor, human, low_budget
from ..engine.worker import BatchOutcome, BatchTask, process_batch
from ..languages import language_of
from ..parsers import ParserRouter
from ..store.objectsource import check_source

SAMPLE_FILES = 50
SAMPLE_BYTES = 4 * 1024 * 1024
SAMPLE_MIN_PER_PARSER = 3
SAMPLE_MAX_FILE_BYTES = 1024 * 1024  # a larger file would dominate the sample's time
STARTUP_S = 0.5  # forkserver, worker imports, first batches in flight; measured on CPython 3.11
# The coordinator shares the cores with the workers: it reads each outcome and commits its batch.
COORDINATOR_SHARE = 0.2
# What a worker holds per row until its batch is written (Python tuples, docstrings, then Arrow):
# measured as the RSS difference of 2 MB and 16 MB batches of the standard library.
ROW_RSS_BYTES = 1200
RESOURCE_TRACKER_RSS = 12 * 1024 * 1024


class ParserCost(msgspec.Struct):
    """What the sample measured for one parser."""

    files: int  # files of the job routed to it (by path)
    bytes: int
    sample_files: int
    sample_bytes: int
    cpu_s_per_mb: float
    rows_per_mb: float


class Plan(msgspec.Struct):
    """What `snakebatch plan` prints (as JSON with `--json`)."""

    source: str
    files: int
    bytes: int
    too_large: int  # files over --max-file-size: they get a row, but are not read
    batches: int
    languages: dict  # name -> files (by extension; files with no known language are left out)
    parsers: dict  # name -> ParserCost
    workers: int
    memory_budget_bytes: int
    batch_bytes: int  # the batch size the governor would settle on
    walk_s: float
    sample_s: float
    cpu_share: float  # the share of a core the sampling got: below 1 on a busy machine
    estimated_cpu_s: float
    estimated_wall_s: float
    estimated_peak_rss_bytes: int
    unreadable_folders: list
    notes: list
    warnings: list  # the run would go badly or be refused as planned (the CLI prints them on stderr)
    sources: dict = {}  # label -> {"files": n, "bytes": n}, for each of the job's sources


class _Reservoir:
    """A sample of a stream of files, each kept with odds in proportion to its size (Efraimidis and
    Spirakis' A-Res): the sample spans the whole tree, and its cost per byte is that of the bytes
    the run will parse rather than that of the many small files."""

    def __init__(self, size: int, rng: random.Random):
        self.size, self.rng = size, rng
        self.heap: list[tuple[float, SourceFile]] = []

    def offer(self, item: SourceFile) -> None:
        key = self.rng.random() ** (1.0 / max(item.size, 1))
        if len(self.heap) < self.size:
            heapq.heappush(self.heap, (key, item))
        elif key > self.heap[0][0]:
            heapq.heapreplace(self.heap, (key, item))

    @property
    def items(self) -> list[SourceFile]:
        return [item for _, item in sorted(self.heap, reverse=True)]


class _Tally:
    """Counts what discovery yields, as the planner takes it."""

    def __init__(self, config: RunConfig, router: ParserRouter):
        self.max_file_size = config.job.max_file_size
        self.router = router
        self.rng = random.Random(0)  # the same tree gives the same sample
        self.languages: dict[str, int] = {}
        self.by_parser: dict[str, list[int]] = {}  # name -> [files, bytes]
        self.samples: dict[str, _Reservoir] = {}
        self.too_large = 0
        self.files = 0
        self.bytes = 0
        self.only_source = config.job.sources[0].label
        self.sources = {spec.label: {"files": 0, "bytes": 0} for spec in config.job.sources}

    def __call__(self, source_file: SourceFile) -> None:
        self.files += 1
        self.bytes += source_file.size
        per_source = self.sources[source_file.source or self.only_source]
        per_source["files"] += 1
        per_source["bytes"] += source_file.size
        language = language_of(source_file.path)
        if language:
            self.languages[language] = self.languages.get(language, 0) + 1
        if source_file.size > self.max_file_size:
            self.too_large += 1
            return
        name = self.router.route(source_file.path).name
        counts = self.by_parser.setdefault(name, [0, 0])
        counts[0] += 1
        counts[1] += source_file.size
        if source_file.size <= SAMPLE_MAX_FILE_BYTES:
            self.samples.setdefault(name, _Reservoir(SAMPLE_FILES, self.rng)).offer(source_file)


def _choose_sample(tally: _Tally) -> dict[str, list[SourceFile]]:
    """Up to SAMPLE_FILES files and about SAMPLE_BYTES, shared equally by the parsers in use: the
    cost per byte differs by parser far more than by file, and a cheap parser's many bytes must
    not crowd out the sample of the expensive one."""
    if not tally.samples:
        return {}
    max_files = max(SAMPLE_MIN_PER_PARSER, SAMPLE_FILES // len(tally.samples))
    max_bytes = SAMPLE_BYTES // len(tally.samples)
    chosen = {}
    for name, reservoir in tally.samples.items():
        files, size = [], 0
        for item in reservoir.items:
            if len(files) >= max_files or (len(files) >= SAMPLE_MIN_PER_PARSER and size + item.size > max_bytes):
                break
            files.append(item)
            size += item.size
        chosen[name] = files
    return chosen


class _Calibration(msgspec.Struct):
    cpu_s_per_byte: dict  # parser -> CPU seconds per source byte, the whole worker path included
    rows_per_byte: dict  # parser -> table rows per source byte
    batch_s: float  # wall seconds of a batch of one small file: part files written and fsynced
    worker_rss: int  # RSS of a worker that has run a batch
    batch_rss: int  # RSS a batch adds beyond its rows (parser and Arrow buffers)
    cpu_share: float  # the share of a core this process got while sampling: the machine's load
    seconds: float


def _timed_batch(files: list, config: RunConfig, staging_root: str, batch_id: int
                 ) -> tuple[float, float, BatchOutcome]:
    # A batch is of one source, as in a run: the first file's (in a job of several).
    spec = next((s for s in config.job.sources if s.label == files[0].source), config.job.sources[0])
    task = BatchTask(
        batch_id=batch_id, attempt=0, source=spec.path, staging=os.path.join(staging_root, str(batch_id)),
        files=[tuple(f[:4]) if f.blob_id is not None else tuple(f[:3]) for f in files if f.source == files[0].source],
        parsers=config.job.parsers, max_file_size=config.job.max_file_size,
        content=config.job.content, file_timeout=config.file_timeout, retries=0, commit=spec.commit,
        source_label=spec.label,
        source_options=config.source_store_options,
    )
    wall, cpu = time.perf_counter(), time.process_time()
    outcome = process_batch(task)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    shutil.rmtree(task.staging, ignore_errors=True)
    return wall, cpu, outcome


def _calibrate(config: RunConfig, sample: dict[str, list[SourceFile]]) -> _Calibration:
    """Run the real worker on the sample, in this process: a one-file batch first pays the
    one-time imports, a second tells the fixed cost of a batch; then one batch per parser."""
    started_wall, started_cpu = time.perf_counter(), time.process_time()
    me = psutil.Process()
    cpu_s_per_byte: dict[str, float] = {}
    rows_per_byte: dict[str, float] = {}
    batch_s, batch_rss = 0.0, 0
    smallest = min((f for files in sample.values() for f in files), key=lambda f: f.size, default=None)
    with tempfile.TemporaryDirectory(prefix="snakebatch-plan-") as staging_root:
        if smallest is not None:
            _timed_batch([smallest], config, staging_root, 0)
            batch_s, _, _ = _timed_batch([smallest], config, staging_root, 0)
        worker_rss = me.memory_info().rss
        for batch_id, (name, files) in enumerate(sample.items(), start=1):
            if not files:
                continue
            _, cpu, outcome = _timed_batch(files, config, staging_root, batch_id)
            sampled = outcome.bytes or sum(f.size for f in files) or 1
            cpu_s_per_byte[name] = cpu / sampled
            rows_per_byte[name] = sum(outcome.rows.values()) / sampled
            beyond_rows = outcome.rss_bytes - worker_rss - sampled * rows_per_byte[name] * ROW_RSS_BYTES
            batch_rss = max(batch_rss, int(beyond_rows))
    wall, cpu = time.perf_counter() - started_wall, time.process_time() - started_cpu
    return _Calibration(
        cpu_s_per_byte=cpu_s_per_byte, rows_per_byte=rows_per_byte, batch_s=batch_s, worker_rss=worker_rss,
        batch_rss=batch_rss, cpu_share=min(1.0, cpu / wall) if wall > 0 else 1.0, seconds=wall,
    )


def _count_batches(planner: BatchPlanner, governor: MemoryGovernor, seconds_per_byte: float,
                   in_flight: int) -> tuple[int, int]:
    """Batches the run would cut, and the batch size it settles on: the governor sees each batch's
    estimated parse time once `in_flight` batches are ahead of it, as in the coordinator's loop."""
    pending: list[int] = []
    batches = 0
    while True:
        batch = planner.next_batch(governor.target_batch_bytes())
        if batch is None:
            break
        batches += 1
        pending.append(batch.bytes)
        if len(pending) >= in_flight:
            size = pending.pop(0)
            governor.observe(BatchOutcome(
                batch_id=batches, attempt=0, staging="", rows={}, files_meta=[], statuses=[], bytes=size,
                parse_s=size * seconds_per_byte, language_counts={}, errors=[], rss_bytes=0, pid=0,
            ))
    return batches, governor.target_batch_bytes()


def plan(source: str | os.PathLike, output: str | os.PathLike | None = None, **options) -> Plan:
    """Preview a run of `source` with `options` (as for `run`): counts and a calibrated estimate.

    `output` is only skipped by the walk when it lies inside SOURCE, as a run would skip it.
    """
    # A budget the run would refuse is a warning here: the plan still shows what it would take.
    config = build_config(source, output, **options)
    if is_object_output(config.job.source):  # a missing bucket or an empty prefix, as for a run
        check_source(config.job.source, config.source_store_options)
    budget_problem = low_budget(config.memory_budget, config.workers)
    process_rss_before = psutil.Process().memory_info().rss
    started = time.perf_counter()
    stats = DiscoveryStats()
    router = ParserRouter(config.job.parsers)
    tally = _Tally(config, router)
    # First pass: the walk alone, to time it and to draw the sample.
    for source_file in source_files(config.job, config.output or None, stats, config.source_store_options):
        tally(source_file)
    walk_s = time.perf_counter() - started

    sample = _choose_sample(tally)
    calibration = _calibrate(config, sample)
    read_bytes = sum(b for _, b in tally.by_parser.values())
    cpu_s = sum(tally.by_parser[name][1] * spb for name, spb in calibration.cpu_s_per_byte.items())
    mean_spb = cpu_s / read_bytes if read_bytes else 0.0

    # Second pass: batches, through the real planner and governor (the OS has the walk cached).
    governor = MemoryGovernor(config.memory_budget, config.workers, config.batch_bytes)
    planner = BatchPlanner(source_files(config.job, config.output or None, DiscoveryStats(),
                                        config.source_store_options), workers=config.workers)
    batches, batch_bytes = _count_batches(planner, governor, mean_spb, 2 * config.workers)

    # Other processes' demand for the cores, from the share of a core the sampling got; then the
    # workers' fair share of the cores beside them and the coordinator.
    cores = usable_cores()
    others = cores / calibration.cpu_share - 1 if calibration.cpu_share < 0.9 else 0.0
    workers = config.workers
    parallelism = min(workers, cores * workers / (workers + COORDINATOR_SHARE + others))
    wall_s = STARTUP_S + max(walk_s, cpu_s / parallelism + batches * calibration.batch_s / workers)
    wall_s = wall_s if tally.files else 0.0

    # The densest batch of the parser with the most rows per byte sets a worker's peak; the
    # coordinator and the forkserver each hold about what this process held before sampling.
    rows = max((min(batch_bytes, tally.by_parser[name][1]) * rpb
                for name, rpb in calibration.rows_per_byte.items()), default=0.0)
    worker_peak = calibration.worker_rss + calibration.batch_rss + int(rows * ROW_RSS_BYTES)
    peak = 2 * process_rss_before + RESOURCE_TRACKER_RSS + workers * worker_peak
    notes = []
    warnings = []
    if budget_problem:
        warnings.append(f"--memory-budget: {budget_problem}; `snakebatch run` would refuse it")
    elif peak > config.memory_budget:
        warnings.append(f"the estimated peak RSS ({human(peak)}) is over --memory-budget ({human(config.memory_budget)}): "
                        "the governor will shrink batches, hold submissions back, and give files it cannot fit "
                        "`too_large`, so the run will be slower than estimated")
    if config.workers > cores:
        notes.append(f"{config.workers} workers share {cores} cores")
    took_nothing = stats.filters_took_nothing(tally.files)
    if took_nothing:
        notes.append(took_nothing)
    if stats.job_folders:
        notes.append(f"{len(stats.job_folders)} output folder(s) of other snakebatch jobs are skipped, "
                     f"e.g. {stats.job_folders[0]}")
    return Plan(
        source=config.job.source,
        files=tally.files,
        bytes=tally.bytes,
        too_large=tally.too_large,
        batches=batches,
        languages=dict(sorted(tally.languages.items(), key=lambda kv: (-kv[1], kv[0]))),
        parsers={
            name: ParserCost(
                files=counts[0], bytes=counts[1], sample_files=len(sample.get(name, [])),
                sample_bytes=sum(f.size for f in sample.get(name, [])),
                cpu_s_per_mb=round(calibration.cpu_s_per_byte.get(name, 0.0) * 1e6, 4),
                rows_per_mb=round(calibration.rows_per_byte.get(name, 0.0) * 1e6, 1),
            )
            for name, counts in sorted(tally.by_parser.items(), key=lambda kv: -kv[1][1])
        },
        workers=config.workers,
        memory_budget_bytes=config.memory_budget,
        batch_bytes=batch_bytes,
        walk_s=round(walk_s, 3),
        sample_s=round(calibration.seconds, 3),
        cpu_share=round(calibration.cpu_share, 2),
        estimated_cpu_s=round(cpu_s, 2),
        estimated_wall_s=round(wall_s, 2),
        estimated_peak_rss_bytes=peak,
        unreadable_folders=stats.unreadable_folders[:20],
        notes=notes,
        warnings=warnings,
        sources=tally.sources,
    )
