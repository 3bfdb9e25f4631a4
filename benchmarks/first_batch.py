"""How soon a run gets going: time to the first batch submitted, and to the first part committed.

    python benchmarks/first_batch.py CORPUS [-j N]

Runs `snakebatch.run` in this process, with the executor wrapped (here, not in the engine) to
record when the first batch is submitted; every time is counted from this process's start, as
a user waiting at the prompt counts it. Also prints the time the imports took and when the
first part file appeared (polled every 10 ms), to show where the wait goes: interpreter and
imports, job folder, read-ahead of discovery before the first batch, pool start-up, the first
batch's parse and commit. The issue's target: the first batch submitted within a second.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time

import psutil

STARTED = psutil.Process().create_time()


def since_start() -> float:
    return time.time() - STARTED


HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import snakebatch  # noqa: E402
from snakebatch.engine import coordinator  # noqa: E402

IMPORTED = since_start()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus")
    ap.add_argument("-j", "--workers", type=int, default=2)
    args = ap.parse_args(argv)
    from corpora import corpus

    source = corpus(args.corpus)
    marks: dict[str, float] = {"imports done": IMPORTED}
    real_make_executor = coordinator.make_executor

    def make_executor(config):
        marks.setdefault("executor made (pool starting)", since_start())
        executor = real_make_executor(config)
        real_submit = executor.submit

        def submit(fn, task):
            marks.setdefault("first batch submitted", since_start())
            marks.setdefault("first batch files", len(task.files))
            return real_submit(fn, task)

        executor.submit = submit
        return executor

    coordinator.make_executor = make_executor
    out = tempfile.mkdtemp(prefix="snakebatch-first-")
    shutil.rmtree(out)
    done = threading.Event()

    def poll_parts():
        files_dir = os.path.join(out, "files")
        while not done.is_set():
            try:
                if any(name.endswith(".parquet") for name in os.listdir(files_dir)):
                    marks["first part committed"] = since_start()
                    return
            except OSError:
                pass
            time.sleep(0.01)

    poller = threading.Thread(target=poll_parts, daemon=True)
    poller.start()
    try:
        marks["run called"] = since_start()
        result = snakebatch.run(source, output=out, workers=args.workers)
        marks["run returned"] = since_start()
    finally:
        done.set()
        shutil.rmtree(out, ignore_errors=True)
    print(f"{args.corpus}: {result.files:,} files, {args.workers} workers, load {os.getloadavg()[0]:.2f}")
    first_files = marks.pop("first batch files", None)
    for name, value in sorted(marks.items(), key=lambda kv: kv[1]):
        print(f"  {name:32s} {value:8.2f} s")
    print(f"  (the first batch held {first_files} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
