"""The Python API: `run`, `stream`, `watch`, and the `RunResult` they describe a job with.

Owns: the embedding surface of docs/reference.md. Must not touch: anything a Coordinator or a sink
owns; this module only builds the config, wires them together and hands back results. The CLI
is a thin layer over these functions.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator

import msgspec
import pyarrow as pa

from .config import build_config, is_object_output, object_output
from .engine.coordinator import Coordinator, Progress, RunSummary
from .engine.discovery import DiscoveryStats
from .engine.gitsource import history_files
from .engine.governor import low_budget
from .engine.refresh import ObjectRefreshSink, RefreshSink
from .engine.sinks import ObjectStoreSink, OutputSink, StreamSink, prepare_object_job
from .engine.watch import Events, WarmExecutor, load_watchfiles
from .errors import ConfigError, JobError
from .executors import make_executor
from .store.jobfolder import holds_job
from .store.objectsource import check_source
from .store.objectstore import is_object_url
from .store.snapshot import pending_refresh


class RunResult:
    """The outcome of `snakebatch.run`: counts, timings, and the committed output."""

    def __init__(self, summary: RunSummary, storage_options: dict | None = None):
        self.summary = summary
        self.storage_options = storage_options  # of an OUT in object storage, for `dataset`

    @property
    def state(self) -> str:
        return self.summary.state

    @property
    def exit_code(self) -> int:
        return self.summary.exit_code

    @property
    def status_counts(self) -> dict:
        return self.summary.status_counts

    @property
    def language_counts(self) -> dict:
        return self.summary.language_counts

    @property
    def files(self) -> int:
        return self.summary.files

    @property
    def bytes(self) -> int:
        return self.summary.bytes

    @property
    def elapsed_s(self) -> float:
        return self.summary.elapsed_s

    @property
    def peak_rss_bytes(self) -> int:
        return self.summary.peak_rss_bytes

    @property
    def output(self) -> str:
        return self.summary.output

    @property
    def resume_command(self) -> str | None:
        return self.summary.resume_command

    def dataset(self, table: str = "files"):
        """A `pyarrow.dataset.Dataset` over the committed parts of `table`."""
        return open_dataset(self.output, table, storage_options=self.storage_options)

    def __repr__(self) -> str:
        return f"RunResult(state={self.state!r}, files={self.files}, status_counts={self.status_counts})"


def open_dataset(output: str | os.PathLike, table: str = "files", *, storage_options: dict | None = None):
    """A `pyarrow.dataset.Dataset` over the committed parts of `table` in the job `output`: a
    folder, or object storage (`s3://...`; `storage_options` as for `run`), where it reads the
    current compacted generation and the batch parts committed since (store/objectcompaction.py).

    A job that committed nothing yet still gives the table's columns (and no rows).
    """
    import pyarrow.dataset as ds

    from .schema import TABLES, table_schema
    from .store.jobfolder import holds_job, read_record
    from .store.layout import JobLayout

    if table not in TABLES:
        raise ConfigError(f"table: {table!r} is not one of {', '.join(TABLES)}")
    out = os.fspath(output)
    if is_object_url(out):
        return _object_dataset(out, table, storage_options or {})
    if storage_options:
        raise ConfigError("storage_options: only for an OUT in object storage (s3://, gs://, az://)")
    if not holds_job(out):
        raise ConfigError(f"{out} holds no snakebatch job")
    folder = JobLayout(out).table_dir(table)
    parts = sorted(
        os.path.join(folder, name) for name in os.listdir(folder) if name.endswith(".parquet")
    ) if os.path.isdir(folder) else []
    if parts:
        return ds.dataset(parts, format="parquet")
    return ds.dataset([], format="parquet", schema=table_schema(table, read_record(out).job.content))


def _object_dataset(out: str, table: str, storage_options: dict):
    import pyarrow.dataset as ds

    from .schema import table_schema
    from .store.jobfolder import JobRecord
    from .store.objectcompaction import dataset_keys
    from .store.objectstore import ObjectJob, arrow_filesystem, store_error

    url, options = object_output(out, storage_options)
    job = ObjectJob(url, options)
    job.check_reachable()
    try:
        record = job.read_job()
        if record is None:
            raise ConfigError(f"{url} holds no snakebatch job")
        keys = dataset_keys(job, table)
    except (ConfigError, JobError):
        raise
    except Exception as err:  # obstore.exceptions.*: the store failed after its retries
        raise JobError(f"{url}: cannot read the job: {store_error(err)}") from None
    if not keys:
        schema = table_schema(table, msgspec.json.decode(record, type=JobRecord).job.content)
        return ds.dataset([], format="parquet", schema=schema)
    filesystem, root = arrow_filesystem(url, options)
    return ds.dataset([f"{root}/{key}" for key in keys], format="parquet", filesystem=filesystem)


def _execute(coordinator: Coordinator, handle_signals: bool) -> Iterator:
    restore = coordinator.install_signal_handlers() if handle_signals else (lambda: None)
    try:
        yield from coordinator.run()
        coordinator.compact()
    finally:
        restore()
        coordinator.close()  # the consumer may have stopped early, or an error escaped: resumable


def _refuse_inside_a_starting_worker(function: str) -> None:
    # Worker processes import the caller's main module again (multiprocessing's spawn/forkserver);
    # a script that calls snakebatch at its top level would start a job inside every worker.
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise RuntimeError(
            f"snakebatch.{function}() was called while a worker process was importing your main module: "
            "put the call under `if __name__ == \"__main__\":`"
        )


def run(source: str | os.PathLike | list, output: str | os.PathLike | None = None, *, resume: bool = False,
        fresh: bool = False, refresh: bool = False, redo: str | list | None = None, verify_content: bool = False,
        on_progress: Callable[[Progress], None] | None = None, **options) -> RunResult:
    """Run a job to its end (or its stop) and return what happened. Options as on the CLI.

    `source`: a folder, or a list of sources (folders, `REPO@REV`) for one job of them all.
    `refresh=True` brings the job in `output` up to date with `source` as it is now (only what
    changed is parsed); `redo` and `verify_content` go with it."""
    _refuse_inside_a_starting_worker("run")
    config = build_config(source, output, resume=resume, fresh=fresh, refresh=refresh, redo=redo, budget_floor=low_budget,
                          verify_content=verify_content, **options)
    if is_object_output(config.job.source):  # a missing bucket or an empty prefix: exit 2 before any work
        check_source(config.job.source, config.source_store_options)
    # A resume of a refresh that was cut off before its commit point is that refresh again.
    remote = is_object_output(config.output)
    prepared = prepare_object_job(config) if remote else None
    if remote:
        refreshing = config.mode == "refresh" or prepared.pending is not None
    else:
        refreshing = config.mode == "refresh" or (config.mode == "resume" and pending_refresh(config.output) is not None)
    try:
        if remote:
            sink = ObjectRefreshSink(config, prepared) if refreshing else ObjectStoreSink(config, prepared)
        else:
            sink = RefreshSink(config) if refreshing else OutputSink(config)
    except OSError as err:  # a read-only filesystem, a file where a folder must be, no permission
        where = f" ({err.filename})" if err.filename else ""
        raise JobError(f"-o/--output: cannot prepare {config.output} for the job: "
                       f"{err.strerror or err}{where}; give a folder this user can write") from None
    files = sink.to_parse if refreshing else None
    if config.job.history:
        try:  # the history's commits and tree_entries tables first, then its unique blobs to parse
            files = history_files(config.job, config.output, DiscoveryStats())
        except BaseException:
            sink.lock.release()
            raise
    coordinator = Coordinator(config, sink, on_progress=on_progress, files=files,
                              executor_factory=sink.executor_factory(make_executor) if refreshing else make_executor)
    for _ in _execute(coordinator, handle_signals=True):
        pass
    return RunResult(coordinator.final_summary, config.storage_options or None)


def stream(source: str | os.PathLike | list, *, on_progress: Callable[[Progress], None] | None = None,
           **options) -> Iterator[tuple[str, pa.RecordBatch]]:
    """Yield `(table_name, pyarrow.RecordBatch)` as batches finish, writing nothing.

    A slow consumer holds the pool back: the next batches are submitted only as it takes these.
    """
    _refuse_inside_a_starting_worker("stream")
    for name in ("output", "resume", "fresh", "refresh", "redo", "verify_content"):
        if name in options:
            raise ConfigError(f"stream: {name!r} is not an option of stream, which writes nothing; "
                              "use snakebatch.run to write (and resume) a job")
    config = build_config(source, None, require_output=False, budget_floor=low_budget, **options)  # raises here, not later
    if is_object_output(config.job.source):
        check_source(config.job.source, config.source_store_options)
    if config.job.history:
        raise ConfigError("stream: --history/--revs write commits and tree_entries tables; use snakebatch.run")
    return _stream(config, on_progress)


def _stream(config, on_progress) -> Iterator[tuple[str, pa.RecordBatch]]:
    # Started at the first iteration: a stream never iterated leaves no staging folder behind.
    sink = StreamSink(config)
    coordinator = Coordinator(config, sink, on_progress=on_progress)
    # Ctrl-C stays the caller's KeyboardInterrupt: the stream is inside their loop.
    yield from _execute(coordinator, handle_signals=False)


class WatchRound(RunResult):
    """One round of `snakebatch.watch`: a refresh (the first round of a new job: its run)."""

    def __init__(self, summary: RunSummary, number: int, wall_s: float):
        super().__init__(summary)
        self.number = number
        self.wall_s = wall_s  # the whole round: planning, parsing and the commit (elapsed_s: from the parsing on)

    @property
    def changes(self) -> dict:
        """Files per change kind (added, modified, deleted, reparsed, touched)."""
        if self.summary.refresh is None:  # the job's first run: everything was added
            return {"added": self.summary.files_this_run, "modified": 0, "deleted": 0, "reparsed": 0, "touched": 0}
        return dict(self.summary.refresh["changes"])

    @property
    def walk(self) -> str:
        """"full" when the round stat'ed the whole tree, "paths" when only the paths events named."""
        return self.summary.refresh["walk"] if self.summary.refresh is not None else "full"

    def line(self) -> str:
        """The round in one line, as `snakebatch watch` prints it: `+3 ~1 -0 in 0.21 s`."""
        c = self.changes
        text = f"+{c['added']} ~{c['modified']} -{c['deleted']} in {self.wall_s:.2f} s"
        if c["reparsed"]:
            text += f" ({c['reparsed']} reparsed)"
        if self.state != "complete":
            text += f" ({self.state}: {self.summary.stop_reason})"
        return text

    def __repr__(self) -> str:
        return f"WatchRound(number={self.number}, state={self.state!r}, changes={self.changes})"


class Watch:
    """What `snakebatch.watch` returns: iterate it for the rounds; `stop()` (any thread) ends it
    after the round in progress. A first SIGINT/SIGTERM does the same (in the main thread; then
    `interrupted` is True); a second one stops the round in progress at once, uncommitted."""

    def __init__(self, config, debounce_s: float):
        self.config = config
        self.debounce_s = debounce_s
        self._stop = threading.Event()
        self.events = Events(config.job.source, config.output, debounce_s, self._stop)
        self.interrupted = False
        self._in_round = False

    def stop(self) -> None:
        self._stop.set()

    def _on_signal(self, signum, frame) -> None:
        if self._in_round and self._stop.is_set():
            raise KeyboardInterrupt  # the coordinator stops at once; the round commits nothing
        self.interrupted = True
        self._stop.set()

    def __iter__(self) -> Iterator[WatchRound]:
        previous = {}
        if threading.current_thread() is threading.main_thread():
            previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        pool = WarmExecutor(self.config)
        try:
            for number, candidates in enumerate(self.events.rounds(), start=1):
                self._in_round = True
                started = time.monotonic()
                try:
                    summary = self._round(pool, candidates)
                finally:
                    self._in_round = False
                result = WatchRound(summary, number, round(time.monotonic() - started, 3))
                yield result
                if result.state != "complete" or self._stop.is_set():
                    return
        finally:
            pool.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _round(self, pool: WarmExecutor, candidates: set | None) -> RunSummary:
        config = self.config
        if not holds_job(config.output):  # the first round of a new job is its whole run
            config = msgspec.structs.replace(config, mode="new")
        refreshing = config.mode == "refresh"
        sink = RefreshSink(config, candidates) if refreshing else OutputSink(config)
        coordinator = Coordinator(config, sink,
                                  executor_factory=sink.executor_factory(pool.factory()) if refreshing else pool.factory(),
                                  files=sink.to_parse if refreshing else None)
        for _ in _execute(coordinator, handle_signals=False):
            pass
        return coordinator.final_summary


def watch(source: str | os.PathLike, output: str | os.PathLike | None = None, *, debounce: float = 1.0,
          **options) -> Watch:
    """Keep the job in `output` refreshed while `source` changes; iterate the result for the
    rounds (`WatchRound`, a RunResult with `changes`, `walk` and `line()`). Options as on the CLI.

    The first round walks the whole tree (and runs the whole job when `output` holds none yet);
    later ones look only at the paths the events named, once `debounce` seconds passed without a
    new one. Needs the extra: `pip install 'snakebatch[watch]'`."""
    _refuse_inside_a_starting_worker("watch")
    load_watchfiles()
    for name in ("resume", "fresh", "refresh", "redo", "verify_content"):
        if name in options:
            raise ConfigError(f"watch: {name!r} is not an option of watch, which refreshes every round")
    if isinstance(debounce, bool) or not isinstance(debounce, (int, float)) or not debounce > 0:
        raise ConfigError(f"--debounce: expected seconds more than 0, got {debounce!r}")
    if isinstance(source, (list, tuple)) and len(source) > 1:
        raise ConfigError("watch: one SOURCE only; watch each source into its own OUT")
    config = build_config(source, output, refresh=True, **options)
    if is_object_output(config.output):
        raise ConfigError("watch: an OUT in object storage is not supported; run --refresh when SOURCE changed")
    return Watch(config, float(debounce))
