"""Where a worker's time goes: snakebatch's process_batch in-process, under cProfile.

    python benchmarks/profile_worker.py [CORPUS] [--top 25] [--markdown]

The corpus (default: the stdlib corpus of corpora.py) is discovered and cut into batches as the
coordinator does (BatchPlanner, 4 MB batches); every batch then goes through
worker.process_batch in this one process, once without the profiler (the true time of the
work, to compare with bare `ast.parse` on the same files, preloaded, gc off) and once under
cProfile. The profile is summed into stages (parse, extraction, line counts, reading, hashing,
Arrow, Parquet, fsync, routing, warnings filter) and its top entries are printed. It also times
the fixed cost of a run, `snakebatch run` on an empty folder (interpreter, imports, forkserver
and pool start-up, job folder, ledger), which no per-file measure shows.
"""

from __future__ import annotations

import argparse
import ast
import cProfile
import gc
import io
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

from snakebatch.config import JobConfig  # noqa: E402
from snakebatch.engine.batching import BatchPlanner  # noqa: E402
from snakebatch.engine.discovery import discover  # noqa: E402
from snakebatch.engine.worker import BatchTask, process_batch  # noqa: E402

BATCH_BYTES = 4 * 1024 * 1024

# Stage -> (how to match profile entries, which time to take). "tt" is a function's own time,
# "ct" its cumulative time; entries are matched on (file suffix or "~" for C, function name).
STAGES = (
    ("ast.parse (compile)", [("~", "<built-in method builtins.compile>")], "tt"),
    ("extraction (extract: visit, decorators, docstrings)", [("parsers/python.py", "extract")], "ct"),
    # parse()'s own time is mostly freeing the AST (`del tree`: millions of nodes), charged there.
    ("AST freeing (PythonParser.parse's own time)", [("parsers/python.py", "parse")], "tt"),
    ("module docstring", [("parsers/python.py", "parse", "get_docstring")], "special"),
    ("line counts", [("parsers/base.py", "count_lines")], "ct"),
    ("warnings filter around parse", [("warnings.py", "__enter__"), ("warnings.py", "__exit__"),
                                      ("warnings.py", "simplefilter"), ("warnings.py", "__init__")], "ct"),
    ("reading (open, fstat, read)", [("worker.py", "_read")], "ct"),
    ("xxh3-128", [("~", "<built-in method xxhash._xxhash.xxh3_128_hexdigest>")], "tt"),
    ("git blob SHA-1", [("~", "<built-in method _hashlib.openssl_sha1>"),
                        ("~", "<method 'hexdigest' of '_hashlib.HASH' objects>")], "tt"),
    ("binary sniff", [("worker.py", "_is_binary")], "ct"),
    ("routing", [("parsers/__init__.py", "route")], "ct"),
    ("Arrow tables from columns", [("worker.py", "table"), ("worker.py", "_rows_table")], "ct"),
    ("Parquet write (incl. its fsync)", [("worker.py", "write_part")], "ct"),
    ("fsync of staging folder", [("durable.py", "fsync_dir")], "ct"),
)


def batches(source: str) -> list[BatchTask]:
    planner = BatchPlanner(discover(JobConfig(source=source)), workers=2)
    tasks = []
    while (batch := planner.next_batch(BATCH_BYTES)) is not None:
        tasks.append(batch.files)
    return tasks


def run_all(source: str, file_batches: list, staging_root: str) -> float:
    shutil.rmtree(staging_root, ignore_errors=True)
    started = time.perf_counter()
    for i, files in enumerate(file_batches):
        task = BatchTask(batch_id=i + 1, attempt=0, source=source,
                         staging=os.path.join(staging_root, f"b{i + 1:08d}"), files=[tuple(f) for f in files])
        process_batch(task)
    return time.perf_counter() - started


def bare_parse_s(source: str, file_batches: list) -> tuple[float, int]:
    datas = []
    for files in file_batches:
        for f in files:
            if f.path.endswith(".py"):
                with open(os.path.join(source, f.path), "rb") as fh:
                    datas.append(fh.read())
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for data in datas:
            gc.disable()
            try:
                ast.parse(data)
            except (SyntaxError, ValueError):
                pass
            finally:
                gc.enable()
    return time.perf_counter() - started, len(datas)


def _matches(key, file_suffix: str, name: str) -> bool:
    filename, _, funcname = key
    if file_suffix == "~":
        return filename == "~" and funcname == name
    return filename.endswith(file_suffix) and funcname == name


def stage_times(stats: pstats.Stats) -> list[tuple[str, float]]:
    raw = stats.stats  # key -> (cc, nc, tt, ct, callers)
    out = []
    for label, patterns, which in STAGES:
        total = 0.0
        for pattern in patterns:
            if which == "special":
                # get_docstring called from PythonParser.parse directly (the module docstring)
                for key, (_cc, _nc, _tt, _ct, callers) in raw.items():
                    if key[0].endswith("ast.py") and key[2] == "get_docstring":
                        for caller, values in callers.items():
                            if _matches(caller, pattern[0], pattern[1]):
                                total += values[3]
                continue
            for key, (_cc, _nc, tt, ct, _callers) in raw.items():
                if _matches(key, *pattern):
                    total += tt if which == "tt" else ct
        out.append((label, total))
    return out


def startup_cost(rounds: int = 3) -> float:
    empty = tempfile.mkdtemp(prefix="snakebatch-empty-")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    times = []
    try:
        for _ in range(rounds):
            out = os.path.join(empty + "-out")
            shutil.rmtree(out, ignore_errors=True)
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "snakebatch", "run", empty, "-o", out, "--no-progress", "--json",
                            "-j", "2"], check=True, capture_output=True, env=env)
            times.append(time.perf_counter() - started)
            shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(empty, ignore_errors=True)
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", nargs="?")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--markdown", action="store_true", help="print the stage table as Markdown")
    args = ap.parse_args(argv)
    if args.corpus:
        source = os.path.abspath(args.corpus)
    else:
        from corpora import corpus

        source = corpus("stdlib")
    file_batches = batches(source)
    n_files = sum(len(b) for b in file_batches)
    n_bytes = sum(f.size for b in file_batches for f in b)
    staging = tempfile.mkdtemp(prefix="snakebatch-profile-")
    try:
        plain_s = run_all(source, file_batches, staging)
        parse_s, n_py = bare_parse_s(source, file_batches)
        profiler = cProfile.Profile()
        profiler.enable()
        profiled_s = run_all(source, file_batches, staging)
        profiler.disable()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    fixed_s = startup_cost()

    stats = pstats.Stats(profiler)
    print(f"{n_files:,} files ({n_py:,} .py), {n_bytes / 1e6:.1f} MB, {len(file_batches)} batches of <= 4 MB")
    print(f"process_batch over all batches, one process: {plain_s:.2f} s ({n_files / plain_s:,.0f} files/s); "
          f"bare ast.parse of the same .py files, preloaded, gc off: {parse_s:.2f} s "
          f"-> everything but the parse costs {(plain_s / parse_s - 1) * 100:.0f}% on top")
    print(f"under cProfile: {profiled_s:.2f} s (the profiler inflates Python-level calls more than C calls)")
    print(f"fixed cost of a run (`snakebatch run` on an empty folder, -j 2): {fixed_s:.2f} s")
    print()
    rows = stage_times(stats)
    accounted = sum(t for _, t in rows)
    if args.markdown:
        print("| stage | s (profiled) | share of profiled time |")
        print("| --- | ---: | ---: |")
        for label, t in rows:
            print(f"| {label} | {t:.2f} | {t / profiled_s * 100:.1f}% |")
        print(f"| rest (the worker's loop, ParseResult, column appends) | {profiled_s - accounted:.2f} | "
              f"{(profiled_s - accounted) / profiled_s * 100:.1f}% |")
    else:
        for label, t in rows:
            print(f"{label:55s} {t:7.2f} s {t / profiled_s * 100:5.1f}%")
        print(f"{'rest (the loop, ParseResult, column appends)':55s} {profiled_s - accounted:7.2f} s "
              f"{(profiled_s - accounted) / profiled_s * 100:5.1f}%")
    print()
    buf = io.StringIO()
    pstats.Stats(profiler, stream=buf).sort_stats("tottime").print_stats(args.top)
    text = buf.getvalue()
    print(text[text.find("   ncalls"):] if "   ncalls" in text else text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
