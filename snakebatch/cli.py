"""The command line (click): a thin layer over the Python API.

Owns: argument parsing, the progress bar, the printed summary and the exit codes of
docs/reference.md. Must not touch: job logic; every option goes into `build_config` unchanged.
"""

from __future__ import annotations

import json
import sys

import click
import msgspec

from ._version import __version__
from .engine.governor import human
from .errors import ConfigError, JobError

EXIT_OK, EXIT_STOPPED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _fail(message: str, code: int = EXIT_USAGE):
    one_line = " ".join(message.split())  # an imported parser's error may span lines
    click.echo(f"snakebatch: error: {one_line}", err=True)
    sys.exit(code)


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


class _ProgressBar:
    """tqdm on stderr, fed by the API's throttled progress callbacks."""

    def __init__(self):
        from tqdm import tqdm

        self.bar = tqdm(total=None, unit="file", file=sys.stderr, dynamic_ncols=True, mininterval=0.5,
                        smoothing=0.1, leave=True)

    def __call__(self, progress) -> None:
        bar = self.bar
        if progress.files_total is not None and bar.total != progress.files_total:
            bar.total = progress.files_total
        bar.n = progress.files_done
        rate = progress.bytes_done / 1e6 / progress.elapsed_s if progress.elapsed_s > 0 else 0.0
        postfix = f"{rate:.1f} MB/s, {progress.errors} errors, rss {human(progress.rss_bytes)}"
        if progress.memory:
            postfix += f", {progress.memory}"
        bar.set_postfix_str(postfix, refresh=False)
        bar.refresh()

    def close(self) -> None:
        self.bar.close()


def _print_summary(summary) -> None:
    lines = []
    state = {"complete": "complete", "stopped": "STOPPED", "interrupted": "INTERRUPTED"}[summary.state]
    lines.append(
        f"snakebatch: {state}: {_plural(summary.files, 'file')} ({summary.files_this_run} this run), "
        f"{human(summary.bytes_this_run)} in {summary.elapsed_s:.1f}s: "
        f"{summary.files_per_s:.0f} files/s, {summary.mb_per_s:.1f} MB/s, "
        f"peak RSS {human(summary.peak_rss_bytes)}"
    )
    lines.append("  status:    " + ", ".join(f"{k} {v}" for k, v in summary.status_counts.items()))
    languages = list(summary.language_counts.items())
    shown = ", ".join(f"{k} {v}" for k, v in languages[:8])
    if len(languages) > 8:
        shown += f", {len(languages) - 8} more"
    lines.append("  languages: " + (shown or "-"))
    if summary.recovery:
        lines.append(f"  recovered: {summary.recovery}")
    rechecked = summary.io_errors_rechecked
    if rechecked["gone"] or rechecked["back"]:
        lines.append(f"  rechecked: {_plural(rechecked['gone'] + rechecked['back'], 'io_error file')} of earlier runs: "
                     f"{rechecked['gone']} gone (rows removed), {rechecked['back']} there again (parsed again)")
    if summary.status_counts.get("io_error"):
        lines.append(f"  io_error:  {_plural(summary.status_counts['io_error'], 'file')} could not be read (deleted or "
                     "replaced during the run?); --resume re-checks them")
    if summary.stale_files:
        lines.append(f"  stale:     {summary.stale_files} committed files changed on disk since (kept as committed)")
    if summary.unreadable_folders:
        lines.append(f"  skipped:   {len(summary.unreadable_folders)} unreadable folder(s), e.g. {summary.unreadable_folders[0]}")
    if summary.job_folders:
        lines.append(f"  skipped:   {len(summary.job_folders)} output folder(s) of other snakebatch jobs, "
                     f"e.g. {summary.job_folders[0]}")
    for path, status, message in summary.error_samples[:3]:
        lines.append(f"  e.g. {status}: {path}: {message}")
    if summary.refresh:
        r = summary.refresh
        c = r["changes"]
        lines.append(f"  refreshed: generation {r['generation']}: +{c['added']} ~{c['modified']} -{c['deleted']}, "
                     f"{c['reparsed']} reparsed, {c['touched']} touched; {r['unchanged']} unchanged, "
                     f"{r['hashed']} hashed")
    if summary.compaction:
        c = summary.compaction
        lines.append(f"  compacted: {c['parts_before']} parts into {c['parts_after']} in {c['seconds']:.1f}s")
    if summary.cache is not None:
        p, c = summary.parses, summary.cache
        evicted = f", evicted {c['evicted']} ({human(c['evicted_bytes'])})" if c["evicted"] else ""
        lines.append(f"  cache:     {p['cached']} cached, {p['parsed']} parsed; stored {human(c['stored_bytes'])}"
                     f"{evicted}; {c['folder']}")
    lines.append(f"  output:    {summary.output}")
    click.echo("\n".join(lines))


def _json(obj) -> str:
    return msgspec.json.encode(obj).decode()


def _job_options(command):
    """The options `run` and `plan` share: which files, which parsers, how many workers."""
    for option in reversed([
        click.option("-j", "--workers", type=int, default=None, help="Worker processes [all usable cores]."),
        click.option("--memory-budget", default=None,
                     help="Ceiling for the process tree's RSS, e.g. 512MB, 2GiB [50% of available RAM]."),
        click.option("--batch-bytes", default=None, help="Target source bytes per batch [adaptive]."),
        click.option("--include", multiple=True, help="Only files matching this gitignore-style pattern (repeatable)."),
        click.option("--exclude", multiple=True, help="Skip files matching this gitignore-style pattern (repeatable)."),
        click.option("--no-gitignore", is_flag=True, help="Also take what .gitignore files exclude."),
        click.option("--follow-symlinks", is_flag=True, help="Follow symbolic links that stay inside SOURCE."),
        click.option("--max-file-size", default=None, help="Larger files get status too_large [16MiB]."),
        click.option("--parser", "parsers", multiple=True,
                     help="A parser name or module:attribute, tried before the built-ins (repeatable)."),
    ]):
        command = option(command)
    return command


def _job_option_values(workers, memory_budget, batch_bytes, include, exclude, no_gitignore,
                       follow_symlinks, max_file_size, parsers) -> dict:
    """`_job_options` as API keyword arguments; None where not given, so defaults apply."""
    return dict(
        workers=workers, memory_budget=memory_budget, batch_bytes=batch_bytes,
        include=include or None, exclude=exclude or None, gitignore=False if no_gitignore else None,
        follow_symlinks=True if follow_symlinks else None, max_file_size=max_file_size,
        parsers=parsers or None,
    )


def _object_options(command):
    """The options of the stores of a SOURCE or an OUT in object storage."""
    command = click.option("--source-option", "source_options", multiple=True, metavar="KEY=VALUE",
                           help="For a SOURCE in object storage only: a store option over --storage-option's "
                                "(repeatable).")(command)
    return click.option("--storage-option", "storage_options", multiple=True, metavar="KEY=VALUE",
                        help="For a SOURCE or an OUT in object storage (s3://, gs://, az://): a store option "
                             "such as endpoint=URL, region=R, skip_signature=true (repeatable).")(command)


class _Group(click.Group):
    """Ctrl-C before a run has installed its own handlers (importing parsers, recovering OUT)
    exits 130 like any interruption, not 1 with click's "Aborted!"."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("snakebatch: interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="snakebatch")
def main():
    """Turn source repositories into Parquet tables: one row per file, definition and import."""


def _sources_option(command):
    """SOURCE... and `--sources FILE`: one job of several sources (`run`, `plan`)."""
    command = click.option("--sources", "sources_file", default=None, metavar="FILE",
                           help="Read more sources from FILE, one a line (a folder or REPO@REV; "
                                "# comments; - for stdin).")(command)
    return click.argument("source", nargs=-1, type=click.Path(path_type=str))(command)


def _source_entries(source: tuple, sources_file: str | None) -> list | str:
    """The API's `source`: one folder as given, or the list of several; ConfigError for none."""
    from .config import read_sources_file

    entries = list(source) + (read_sources_file(sources_file) if sources_file is not None else [])
    if not entries:
        raise ConfigError("give a SOURCE folder (or several, or --sources FILE)")
    return entries[0] if len(entries) == 1 else entries


def _prepare_run(source: list | str, executor: str | None) -> None:
    """Before the API's imports: start the local pool's forkserver, for a run that will use it (its
    own imports, 0.3 s, then overlap those instead of following them at the first batch), and
    give this process the Arrow allocator of snakebatch's processes (store/durable.py)."""
    from .config import chosen_executor
    from .executors.local import start_forkserver

    if chosen_executor(source, executor) == "local":
        start_forkserver()
    from .store.durable import use_system_allocator

    use_system_allocator()


@main.command()
@_sources_option
@click.option("-o", "--output", default="snakebatch-out", show_default=True, help="Output folder.")
@click.option("--resume", is_flag=True, help="Continue the job in OUT; committed files are not parsed again.")
@click.option("--fresh", is_flag=True, help="Delete the job in OUT and start over.")
@click.option("--refresh", is_flag=True,
              help="Bring the job in OUT up to date with SOURCE now: parse only added and changed files.")
@click.option("--redo", default=None, metavar="STATUS[,STATUS]",
              help="With --refresh: parse files with these statuses again even if unchanged.")
@click.option("--verify-content", is_flag=True,
              help="With --refresh: hash every file instead of trusting unchanged stat data.")
@_job_options
@click.option("--content", is_flag=True, help="Also store each text file's content.")
@click.option("--file-timeout", type=float, default=None, help="Seconds before a file's parse is given up as timeout [60].")
@click.option("--retries", type=int, default=None, help="Retries of a crashed or timed-out file [1].")
@click.option("--fail-fast", is_flag=True, help="Stop at the first file the parsing failed on (crashed, timeout, parser_error).")
@click.option("--max-errors", type=int, default=None, help="Stop once N files have status crashed, timeout or parser_error.")
@click.option("--executor", type=click.Choice(["local", "dask"]), default=None, help="Where batches run [local].")
@click.option("--scheduler", default=None, help="Dask scheduler address tcp://HOST:PORT (with --executor dask).")
@click.option("--progress/--no-progress", default=None, help="Live progress on stderr [on for a terminal].")
@click.option("--compact/--no-compact", default=None,
              help="Once the job is complete, merge each table's parts into a few large ones [on].")
@click.option("--rev", default=None, metavar="REV",
              help="SOURCE is a git repository: ingest the tree of this revision from its object database.")
@click.option("--history", is_flag=True,
              help="Ingest every commit reachable from --rev [HEAD], each unique blob once.")
@click.option("--revs", default=None, metavar="A..B", help="Like --history, for the commits reachable from B and not A.")
@_object_options
@click.option("--json", "as_json", is_flag=True, help="Print the final summary as one JSON object on stdout.")
@click.option("--cache", default=None, metavar="DIR",
              help="Parse results by content, shared by the jobs that name DIR: a blob seen before is not parsed again.")
@click.option("--cache-size", default=None, metavar="SIZE", help="Bound of --cache DIR; least recently used go first [2GiB].")
def run(source, sources_file, output, resume, fresh, refresh, redo, verify_content, workers, memory_budget, batch_bytes,
        include, exclude, no_gitignore,
        follow_symlinks, max_file_size, parsers, content, file_timeout, retries, fail_fast, max_errors,
        executor, scheduler, progress, compact, rev, history, revs, storage_options, source_options, as_json, cache, cache_size):
    """Parse every file under SOURCE into Parquet tables in OUT.

    Several SOURCEs (or --sources FILE) make one job of them all: each row's `source` column names
    its source. A SOURCE may be a git repository at a revision: REPO@REV."""
    show_progress = sys.stderr.isatty() if progress is None else progress
    bar = _ProgressBar() if show_progress else None
    options = dict(
        _job_option_values(workers, memory_budget, batch_bytes, include, exclude, no_gitignore,
                           follow_symlinks, max_file_size, parsers),
        content=True if content else None, file_timeout=file_timeout,
        retries=retries, fail_fast=True if fail_fast else None, max_errors=max_errors,
        executor=executor, scheduler=scheduler, compact=compact,
        storage_options=list(storage_options) or None, source_options=list(source_options) or None,
        rev=rev, revs=revs, history=history,
        cache=cache, cache_size=cache_size,
    )
    try:
        source = _source_entries(source, sources_file)
        # (a scheduler without --executor dask is a mistake build_config tells)
        _prepare_run(source, executor if scheduler is None else "dask")
        from .api import run as api_run

        result = api_run(source, output, resume=resume, fresh=fresh, refresh=refresh, redo=redo,
                         verify_content=verify_content, on_progress=bar, **options)
    except ConfigError as err:
        if bar:
            bar.close()
        _fail(str(err), EXIT_USAGE)
    except JobError as err:
        if bar:
            bar.close()
        _fail(str(err), EXIT_USAGE)
    if bar:
        bar.close()
    summary = result.summary
    if as_json:
        click.echo(_json(summary))
    else:
        _print_summary(summary)
    from .parsers import polyglot_hint

    hint = polyglot_hint(summary.language_counts)
    if hint:
        click.echo(hint, err=True)
    for warning in summary.warnings:
        click.echo(f"snakebatch: warning: {warning}", err=True)
    if summary.state != "complete":
        click.echo(f"snakebatch: stopped: {summary.stop_reason}", err=True)
        click.echo(f"snakebatch: resume with: {summary.resume_command}", err=True)
    sys.exit(summary.exit_code)


@main.command(name="watch")
@click.argument("source", type=click.Path(file_okay=True, dir_okay=True, path_type=str))
@click.option("-o", "--output", default="snakebatch-out", show_default=True, help="Output folder.")
@click.option("--debounce", type=float, default=1.0, show_default=True,
              help="Seconds without a new event before a round refreshes what changed.")
@_job_options
@click.option("--content", is_flag=True, help="Also store each text file's content.")
@click.option("--file-timeout", type=float, default=None, help="Seconds before a file's parse is given up as timeout [60].")
@click.option("--retries", type=int, default=None, help="Retries of a crashed or timed-out file [1].")
def watch_command(source, output, debounce, workers, memory_budget, batch_bytes, include, exclude, no_gitignore,
                  follow_symlinks, max_file_size, parsers, content, file_timeout, retries):
    """Keep OUT refreshed while SOURCE changes: a refresh per round of file events, one line each.

    Needs the extra: pip install 'snakebatch[watch]'. Ctrl-C exits 130 with OUT a complete snapshot."""
    _prepare_run(source, None)
    from .api import watch

    options = dict(
        _job_option_values(workers, memory_budget, batch_bytes, include, exclude, no_gitignore,
                           follow_symlinks, max_file_size, parsers),
        content=True if content else None, file_timeout=file_timeout, retries=retries,
    )
    try:
        watcher = watch(source, output, debounce=debounce, **options)
        click.echo(f"snakebatch: watching {source} into {output} (Ctrl-C to stop)", err=True)
        last = None
        for last in watcher:
            click.echo(last.line())
    except (ConfigError, JobError) as err:
        _fail(str(err), EXIT_USAGE)
    if last is not None and last.state != "complete":
        click.echo(f"snakebatch: stopped: {last.summary.stop_reason}", err=True)
        sys.exit(last.exit_code)
    if watcher.interrupted:
        click.echo("snakebatch: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)


@main.command()
@click.argument("out", type=click.Path(path_type=str))
@click.option("--verify", is_flag=True, help="Also check every part's checksum (reads every part).")
@click.option("--storage-option", "storage_options", multiple=True, metavar="KEY=VALUE",
              help="For an OUT in object storage: a store option, as for run (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the status as one JSON object.")
def status(out, verify, storage_options, as_json):
    """The state of the job in OUT: complete, incomplete or running, with its counts.

    Exits 1 when a part is damaged (missing, another size, or with --verify another checksum)."""
    from .report.status import format_status, job_status

    try:
        job = job_status(out, verify=verify, storage_options=list(storage_options) or None)
    except (ConfigError, JobError) as err:
        _fail(str(err), EXIT_USAGE)
    click.echo(_json(job) if as_json else format_status(job))
    sys.exit(EXIT_STOPPED if job.damage else EXIT_OK)


@main.command(name="plan")
@_sources_option
@click.option("-o", "--output", default="snakebatch-out", show_default=True,
              help="The run's output folder (skipped by the walk when inside SOURCE); nothing is written.")
@_job_options
@_object_options
@click.option("--json", "as_json", is_flag=True, help="Print the plan as one JSON object on stdout.")
def plan_command(source, sources_file, output, workers, memory_budget, batch_bytes, include, exclude, no_gitignore,
                 follow_symlinks, max_file_size, parsers, storage_options, source_options, as_json):
    """Preview a run of SOURCE: files, bytes, languages, batches, estimated time and memory.

    Reads only metadata and a small sample (parsed here to calibrate the estimate); writes nothing.
    """
    from .report.plan import plan

    options = _job_option_values(workers, memory_budget, batch_bytes, include, exclude, no_gitignore,
                                 follow_symlinks, max_file_size, parsers)
    try:
        result = plan(_source_entries(source, sources_file), output, storage_options=list(storage_options) or None,
                      source_options=list(source_options) or None, **options)
    except ConfigError as err:
        _fail(str(err), EXIT_USAGE)
    for warning in result.warnings:
        click.echo(f"snakebatch: warning: {warning}", err=True)
    if as_json:
        click.echo(_json(result))
        return
    languages = list(result.languages.items())
    shown = ", ".join(f"{k} {v}" for k, v in languages[:8])
    if len(languages) > 8:
        shown += f", {len(languages) - 8} more"
    where = result.source or f"{len(result.sources)} sources"
    lines = [
        f"snakebatch plan: {result.files} files, {human(result.bytes)} in {where}",
        *(["  sources:   " + ", ".join(f"{label} {c['files']} files ({human(c['bytes'])})"
                                        for label, c in result.sources.items())] if len(result.sources) > 1 else []),
        f"  languages: {shown or '-'}",
        f"  batches:   {result.batches} (up to {human(result.batch_bytes)} of source each), {result.workers} workers",
        f"  estimate:  {result.estimated_wall_s:.1f}s wall ({result.estimated_cpu_s:.1f}s of CPU), "
        f"peak RSS {human(result.estimated_peak_rss_bytes)} "
        f"(budget {human(result.memory_budget_bytes)})",
        "  parsers:   " + ", ".join(
            f"{name} {cost.files} files at {cost.cpu_s_per_mb:.3f} CPU s/MB" for name, cost in result.parsers.items()),
    ]
    if result.too_large:
        lines.append(f"  too large: {result.too_large} files over --max-file-size (a row each, not read)")
    if result.unreadable_folders:
        lines.append(f"  skipped:   {len(result.unreadable_folders)} unreadable folder(s), e.g. {result.unreadable_folders[0]}")
    lines += [f"  note:      {note}" for note in result.notes]
    lines.append(f"  (calibrated on a sample parsed in {result.sample_s:.1f}s; nothing was written)")
    click.echo("\n".join(lines))


@main.command(name="parsers")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def parsers_command(as_json):
    """List the parsers available, in the order they are tried, and what they match."""
    from .parsers import available

    rows = [
        {"name": p.name, "patterns": list(p.patterns), "interpreters": list(p.interpreters),
         "version": p.version, "origin": p.origin}
        for p in available()
    ]
    if as_json:
        click.echo(json.dumps(rows))
        return
    widths = {key: max(len(r[key]) for r in rows) for key in ("name", "version", "origin")}
    for r in rows:
        matches = " ".join(r["patterns"] + [f"#!{name}" for name in r["interpreters"]])
        click.echo(f"{r['name']:<{widths['name']}}  {r['version']:<{widths['version']}}  "
                   f"{r['origin']:<{widths['origin']}}  {matches}")


if __name__ == "__main__":
    main()
