"""Helpers of the crash and resume tests: corpora, killable CLI runs, and reading OUT as a reader.

Every check reads the real Parquet parts back (pyarrow, DuckDB); nothing here mocks the engine.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import psutil
import pyarrow.parquet as pq

from helpers import ROOT, cli_command, cli_env, stdlib_dir
from snakebatch.schema import TABLES

ROW_TABLES = tuple(t for t in TABLES if t != "files")  # compared as multisets of rows
# Columns that differ between two correct runs of the same job: timings and batch numbering.
VOLATILE = {"parse_ms", "batch_id"}
LOGGING_PARSER = "logging_parser:parser"


def copy_stdlib(dst: Path, limit: int, max_size: int = 8000, copies: int = 1) -> int:
    """Copy up to `limit` stdlib .py files smaller than `max_size` into dst (in `copies` subfolders
    when one copy of the stdlib is not enough). Returns the number of files."""
    std = stdlib_dir()
    sources = []
    for root, dirs, files in os.walk(std):
        dirs[:] = sorted(d for d in dirs if d not in ("site-packages", "__pycache__"))
        for name in sorted(files):
            path = os.path.join(root, name)
            if name.endswith(".py") and os.path.getsize(path) < max_size:
                sources.append(os.path.relpath(path, std))
    count = 0
    for copy in range(copies):
        for rel in sources:
            if count >= limit:
                return count
            target = dst / (f"copy{copy}" if copies > 1 else "") / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(os.path.join(std, rel), target)
            count += 1
    return count


def env(log: Path | None = None, sleep: float | None = None, **extra) -> dict:
    """The CLI's environment (`cli_env`), with the logging parser's log file and per-file sleep."""
    result = cli_env(**extra)
    if log is not None:
        result["SNAKEBATCH_TEST_PARSE_LOG"] = str(log)
    if sleep is not None:
        result["SNAKEBATCH_TEST_PARSE_SLEEP"] = str(sleep)
    return result


class Run:
    """A CLI run in its own session (process group), so a signal can reach it and its workers."""

    def __init__(self, args, environ: dict, logdir: Path):
        logdir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = logdir / f"stdout-{time.monotonic_ns()}"
        self.stderr_path = self.stdout_path.with_name(self.stdout_path.name.replace("stdout", "stderr"))
        self.started = time.monotonic()
        with open(self.stdout_path, "w") as out, open(self.stderr_path, "w") as err:
            self.proc = subprocess.Popen(
                cli_command(*args), stdout=out, stderr=err, env=environ, cwd=ROOT, start_new_session=True,
            )

    def signal_group(self, signum: int) -> None:
        try:
            os.killpg(self.proc.pid, signum)
        except ProcessLookupError:
            pass

    def kill_group(self) -> int:
        """SIGKILL the coordinator and every worker at once; returns the coordinator's exit code."""
        self.signal_group(signal.SIGKILL)
        code = self.proc.wait(timeout=60)
        # Workers are the forkserver's children: wait until no process of the group runs. A zombie
        # writes nothing more; waiting for its reaper cost ~1 s a kill here (PID 1 reaps slowly).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _group_runs(self.proc.pid):
            time.sleep(0.01)
        return code

    def wait(self, timeout: float = 300) -> int:
        return self.proc.wait(timeout=timeout)

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text()

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()


def _group_runs(pgid: int) -> bool:
    """A process of the group `pgid` that is not a zombie."""
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except ProcessLookupError:
            continue
    return False


def file_size_limit(limit: int):
    """A preexec_fn that caps the size of any file the run (and its workers) writes."""
    def apply():  # in the child, before exec: every process of the run inherits it
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past it fails with EFBIG instead
    return apply


def run_args(source: Path, out: Path, *options, resume: bool = False) -> list:
    return ["run", source, "-o", out, "--no-progress", *(["--resume"] if resume else []), *options]


def read_parts(out: Path) -> dict:
    """Every committed part of every table, read one by one as a reader would: raises on a torn
    part, and asserts that no file's rows appear in two parts. Returns table -> [pyarrow.Table]."""
    result = {}
    for table in TABLES:
        folder = Path(out) / table
        parts = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
        owner: dict[str, str] = {}
        tables = []
        for part in parts:
            data = pq.read_table(part)  # a torn or half-written part would fail here
            for path in set(data.column("path").to_pylist()):
                assert path not in owner, f"{table}: {path} is in both {owner[path]} and {part.name}"
                owner[path] = part.name
            tables.append(data)
        if table == "files":
            paths = [p for t in tables for p in t.column("path").to_pylist()]
            assert len(paths) == len(set(paths)), "a file has two rows in the files table"
        result[table] = tables
    return result


def _rows(tables: list) -> list[dict]:
    rows = []
    for table in tables:
        keep = [name for name in table.column_names if name not in VOLATILE]
        for row in table.select(keep).to_pylist():
            rows.append({k: tuple(v) if isinstance(v, list) else v for k, v in row.items()})
    return rows


def snapshot(out: Path) -> dict:
    """The committed output as comparable values: files by path, every other table as a multiset
    of rows (every column but timings and batch numbers)."""
    parts = read_parts(out)
    result = {"files": {row["path"]: row for row in _rows(parts["files"])}}
    for table in ROW_TABLES:
        result[table] = Counter(tuple(sorted(r.items())) for r in _rows(parts[table]))
    return result


def committed_paths(out: Path) -> set[str]:
    return {p for t in read_parts(out)["files"] for p in t.column("path").to_pylist()}


def assert_same_output(got: dict, want: dict) -> None:
    assert set(got["files"]) == set(want["files"]), (
        f"missing {sorted(set(want['files']) - set(got['files']))[:5]}, "
        f"extra {sorted(set(got['files']) - set(want['files']))[:5]}"
    )
    for path, row in want["files"].items():
        assert got["files"][path] == row, f"files row of {path} differs"
    for table in ROW_TABLES:
        assert got[table] == want[table], f"{table} rows differ: {sum((got[table] - want[table]).values())} extra, " \
                                          f"{sum((want[table] - got[table]).values())} missing"


def parse_log(log: Path) -> list[str]:
    """Paths in the order the logging parser saw them (one line per parse)."""
    if not log.exists():
        return []
    return [line.split("\t", 1)[0] for line in log.read_text().splitlines() if line]


def holds_job(out: Path) -> bool:
    return (Path(out) / "_snakebatch" / "job.json").is_file()

