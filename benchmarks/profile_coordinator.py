"""Where the coordinator's time goes: `snakebatch.run` under cProfile in this process.

    python benchmarks/profile_coordinator.py [CORPUS] [-j N] [--top 20]
    python benchmarks/profile_coordinator.py tree50k -j 32 --parser sleep_parser:parser   # many_cores.py's

Only the main process is profiled (discovery, planning, submitting, committing, the governor's
thread is not: cProfile follows one thread); the workers run in their own processes as usual.
On many small files (default corpus: tree100k) this is the part that does not shrink with more
workers.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import resource
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", nargs="?", default="tree100k")
    ap.add_argument("-j", "--workers", type=int, default=2)
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--wall", dest="cpu", action="store_false",
                    help="profile wall time (waits, fsyncs) instead of the main thread's CPU time")
    ap.add_argument("--parser", action="append", default=[],
                    help="a --parser spec (repeatable); sleep_parser:parser is many_cores.py's 2 ms sleep")
    args = ap.parse_args(argv)
    from corpora import corpus

    import snakebatch

    source = corpus(args.corpus)
    out = tempfile.mkdtemp(prefix="snakebatch-coord-")
    shutil.rmtree(out)
    # The main thread's CPU, not wall time: on a shared machine a wall clock charges other
    # processes' time (and every wait, fsync and sleep) to whatever function was running.
    profiler = cProfile.Profile(time.thread_time) if args.cpu else cProfile.Profile()
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    try:
        profiler.enable()
        result = snakebatch.run(source, output=out, workers=args.workers,
                                **({"parsers": args.parser} if args.parser else {}))
        profiler.disable()
    finally:
        shutil.rmtree(out, ignore_errors=True)
    wall = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    print(f"{result.files:,} files, {result.summary.batches_this_run} batches in {wall:.2f} s; main process CPU {cpu:.2f} s "
          f"({cpu / max(result.files, 1) * 1e6:.1f} us per file, all threads, profiled)")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
