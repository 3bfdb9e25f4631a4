"""Resume latency: how long `--resume` takes to submit its first new batch, on a large job.

Generates N tiny Python files (100,000 by default), runs the job to completion with the CLI,
adds a few new files, and resumes it in-process, timing each phase:

    ledger read      reading and checking every ledger line (Ledger.read)
    recover          the whole recovery (one listing per table folder, no stat per batch)
    open             taking the lock, checking job.json, recovery, the committed-files index
    first submit     from the start of the resume to its first batch handed to the pool
    walk alone       discovery over the same tree with no ledger at all (for comparison)

The first new batch waits for the walk (finding the new files means looking at every file),
for the ledger, and for nothing else: skipping a committed file is a dict lookup, and no
committed file is opened. Also runs `--resume` on the completed job through the CLI for the
end-to-end wall time.

    python benchmarks/resume_latency.py [--files 100000] [--batch-bytes 16KB] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import snakebatch.engine.coordinator as coordinator_module  # noqa: E402
import snakebatch.engine.sinks as sinks_module  # noqa: E402
from snakebatch.api import run  # noqa: E402
from snakebatch.config import build_config  # noqa: E402
from snakebatch.engine.discovery import discover  # noqa: E402
from snakebatch.store.ledger import Ledger  # noqa: E402

TEMPLATE = "import os\n\n\ndef f{i}(x, y=1):\n    \"\"\"File {i}.\"\"\"\n    return os.path.join(str(x), str(y + {i}))\n"


def generate(source: str, files: int, per_folder: int = 1000) -> None:
    for i in range(files):
        folder = os.path.join(source, f"pkg{i // per_folder:04d}")
        if i % per_folder == 0:
            os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"mod{i:06d}.py"), "w") as fh:
            fh.write(TEMPLATE.format(i=i))


def cli(*args) -> tuple[float, subprocess.CompletedProcess]:
    env = dict(os.environ, PYTHONPATH=ROOT)
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "snakebatch", *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"snakebatch {' '.join(args)} failed:\n{proc.stderr}")
    return time.perf_counter() - started, proc


def timed_resume(source: str, out: str, options: dict) -> dict:
    """Resume in-process, with the phases timed by wrapping (not changing) the engine's calls."""
    marks: dict[str, float] = {}
    real_recover = Ledger.recover
    real_make_executor = coordinator_module.make_executor
    real_open_sink = sinks_module.OutputSink.__init__

    def recover(self):
        started = time.perf_counter()
        result = real_recover(self)
        marks["recover"] = time.perf_counter() - started
        return result

    def open_sink(self, config):
        started = time.perf_counter()
        real_open_sink(self, config)
        marks["open"] = time.perf_counter() - started

    def make_executor(config):
        executor = real_make_executor(config)
        submit = executor.submit

        def first_submit(fn, task):
            marks.setdefault("first_submit", time.perf_counter() - marks["start"])
            return submit(fn, task)

        executor.submit = first_submit
        return executor

    Ledger.recover = recover
    sinks_module.OutputSink.__init__ = open_sink
    coordinator_module.make_executor = make_executor
    try:
        marks["start"] = time.perf_counter()
        result = run(source, out, resume=True, **options)
        marks["total"] = time.perf_counter() - marks["start"]
    finally:
        Ledger.recover = real_recover
        sinks_module.OutputSink.__init__ = real_open_sink
        coordinator_module.make_executor = real_make_executor
    marks["files_this_run"] = result.summary.files_this_run
    marks["stale"] = result.summary.stale_files
    return marks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--new", type=int, default=5, help="files added before the resume")
    parser.add_argument("--batch-bytes", default=None, help="fixed batch size (many batches: a longer ledger)")
    parser.add_argument("--keep", default=None, help="work in this folder and keep it")
    args = parser.parse_args()

    work = args.keep or tempfile.mkdtemp(prefix="snakebatch-resume-bench-")
    source, out = os.path.join(work, "src"), os.path.join(work, "out")
    try:
        if not os.path.isdir(source):
            started = time.perf_counter()
            generate(source, args.files)
            print(f"generated {args.files} files in {time.perf_counter() - started:.1f}s")
        new_folder = os.path.join(source, "zz_new")
        shutil.rmtree(new_folder, ignore_errors=True)  # from an earlier run with --keep
        shutil.rmtree(out, ignore_errors=True)
        extra = ["--batch-bytes", args.batch_bytes] if args.batch_bytes else []
        full, _ = cli("run", source, "-o", out, "--no-progress", *extra)
        ledger_bytes = os.path.getsize(os.path.join(out, "_snakebatch", "ledger.jsonl"))

        started = time.perf_counter()
        entries, _ = Ledger(out).read()
        ledger_read = time.perf_counter() - started
        committed = sum(len(e.paths) for e in entries)

        started = time.perf_counter()
        walked = sum(1 for _ in discover(build_config(source, out).job, skip=out))
        walk = time.perf_counter() - started

        resume_cli, _ = cli("run", source, "-o", out, "--resume", "--no-progress", *extra)

        os.makedirs(new_folder)
        for i in range(args.new):
            with open(os.path.join(new_folder, f"new{i}.py"), "w") as fh:
                fh.write(TEMPLATE.format(i=10_000_000 + i))
        marks = timed_resume(source, out, {"batch_bytes": args.batch_bytes} if args.batch_bytes else {})
        if marks["files_this_run"] != args.new:
            raise SystemExit(f"the resume processed {marks['files_this_run']} files, expected {args.new}")

        print(f"job: {committed} files committed in {len(entries)} batches, ledger {ledger_bytes / 1e6:.1f} MB; "
              f"full run {full:.1f}s ({committed / full:.0f} files/s)")
        print(f"ledger read:          {ledger_read * 1000:8.1f} ms  ({ledger_read / committed * 1e6:.2f} us per committed file)")
        print(f"recover:              {marks['recover'] * 1000:8.1f} ms")
        print(f"open (lock+recover+index): {marks['open'] * 1000:5.1f} ms")
        print(f"walk alone ({walked} files): {walk * 1000:6.1f} ms")
        print(f"first new batch submitted: {marks['first_submit'] * 1000:5.1f} ms after the resume started "
              f"= open + walk + {max(0.0, marks['first_submit'] - marks['open'] - walk) * 1000:.1f} ms")
        print(f"resume with {args.new} new files, in-process total: {marks['total'] * 1000:.1f} ms")
        print(f"`--resume` of the completed job via the CLI (wall, with interpreter start): {resume_cli * 1000:.0f} ms")
        print(f"ratio first-submit / full run: {marks['first_submit'] / full:.4f}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
