"""The Python API: `run`, `stream`, and the `RunResult` they describe a job with.

Owns: the embedding surface of docs/reference.md. Must not touch: anything a Coordinator or a sink
owns; this module only builds the config, wires them together and hands back results. The CLI
is a thin layer over these functions.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator

import pyarrow as pa

from .config import build_config, is_object_output
from .engine.coordinator import Coordinator, Progress, RunSummary
from .engine.discovery import DiscoveryStats
from .engine.gitsource import history_files
from .engine.governor import low_budget
from .engine.refresh import RefreshSink
from .engine.sinks import ObjectStoreSink, OutputSink, StreamSink
from .errors import ConfigError, JobError
from .store.snapshot import pending_refresh


class RunResult:
    """The outcome of `snakebatch.run`: counts, timings, and the committed output."""

    def __init__(self, summary: RunSummary):
        self.summary = summary

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
        return open_dataset(self.output, table)

    def __repr__(self) -> str:
        return f"RunResult(state={self.state!r}, files={self.files}, status_counts={self.status_counts})"


def open_dataset(output: str | os.PathLike, table: str = "files"):
    """A `pyarrow.dataset.Dataset` over the committed parts of `table` in the job folder `output`.

    A job that committed nothing yet still gives the table's columns (and no rows).
    """
    import pyarrow.dataset as ds

    from .schema import TABLES, table_schema
    from .store.jobfolder import holds_job, read_record
    from .store.layout import JobLayout

    if table not in TABLES:
        raise ConfigError(f"table: {table!r} is not one of {', '.join(TABLES)}")
    out = os.fspath(output)
    if not holds_job(out):
        raise ConfigError(f"{out} holds no snakebatch job")
    folder = JobLayout(out).table_dir(table)
    parts = sorted(
        os.path.join(folder, name) for name in os.listdir(folder) if name.endswith(".parquet")
    ) if os.path.isdir(folder) else []
    if parts:
        return ds.dataset(parts, format="parquet")
    return ds.dataset([], format="parquet", schema=table_schema(table, read_record(out).job.content))


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


def run(source: str | os.PathLike, output: str | os.PathLike | None = None, *, resume: bool = False,
        fresh: bool = False, refresh: bool = False, redo: str | list | None = None, verify_content: bool = False,
        on_progress: Callable[[Progress], None] | None = None, **options) -> RunResult:
    """Run a job to its end (or its stop) and return what happened. Options as on the CLI.

    `refresh=True` brings the job in `output` up to date with `source` as it is now (only what
    changed is parsed); `redo` and `verify_content` go with it."""
    _refuse_inside_a_starting_worker("run")
    config = build_config(source, output, resume=resume, fresh=fresh, refresh=refresh, redo=redo, budget_floor=low_budget,
                          verify_content=verify_content, **options)
    # A resume of a refresh that was cut off before its commit point is that refresh again.
    remote = is_object_output(config.output)
    refreshing = not remote and (config.mode == "refresh" or
                                 (config.mode == "resume" and pending_refresh(config.output) is not None))
    try:
        sink = ObjectStoreSink(config) if remote else RefreshSink(config) if refreshing else OutputSink(config)
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
    coordinator = Coordinator(config, sink, on_progress=on_progress, files=files)
    for _ in _execute(coordinator, handle_signals=True):
        pass
    return RunResult(coordinator.final_summary)


def stream(source: str | os.PathLike, *, on_progress: Callable[[Progress], None] | None = None,
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
    if config.job.history:
        raise ConfigError("stream: --history/--revs write commits and tree_entries tables; use snakebatch.run")
    return _stream(config, on_progress)


def _stream(config, on_progress) -> Iterator[tuple[str, pa.RecordBatch]]:
    # Started at the first iteration: a stream never iterated leaves no staging folder behind.
    sink = StreamSink(config)
    coordinator = Coordinator(config, sink, on_progress=on_progress)
    # Ctrl-C stays the caller's KeyboardInterrupt: the stream is inside their loop.
    yield from _execute(coordinator, handle_signals=False)
