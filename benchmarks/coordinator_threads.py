"""The coordinator process's CPU by thread and stage: the main thread (the loop that plans,
submits and commits: what queues up with many workers) against its other threads (the
governor's sampling thread, the pool's management thread), and compaction.

    python benchmarks/coordinator_threads.py /tmp/snakebatch-bench/tree200k -j 64 [--engine CHECKOUT]

Runs one job in this process with many_cores.py's sleeping parser (2 ms a file, no CPU). The
governor thread's own CPU is measured by wrapping its loop (`MemoryGovernor._run`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def cpu() -> float:
    t = os.times()
    return t.user + t.system


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source")
    ap.add_argument("-j", "--workers", type=int, default=32)
    ap.add_argument("--engine", default=os.path.dirname(HERE), help="the checkout to run [this one]")
    args = ap.parse_args(argv)
    sys.path[:0] = [args.engine, HERE]
    from snakebatch.config import build_config
    from snakebatch.engine import governor
    from snakebatch.engine.coordinator import Coordinator
    from snakebatch.engine.sinks import OutputSink

    sampling: dict = {}
    loop = governor.MemoryGovernor._run

    def timed_loop(self) -> None:
        started = time.thread_time()
        loop(self)
        sampling["cpu"] = time.thread_time() - started

    governor.MemoryGovernor._run = timed_loop
    out = tempfile.mkdtemp(prefix="coordinator-threads-")
    shutil.rmtree(out)
    try:
        config = build_config(args.source, out, workers=args.workers, parsers=["sleep_parser:parser"])
        coordinator = Coordinator(config, OutputSink(config))
        c0, t0 = cpu(), time.thread_time()
        for _ in coordinator.run():
            pass
        c1, t1 = cpu(), time.thread_time()
        coordinator.compact()
        c2 = cpu()
        summary = coordinator.close()
    finally:
        shutil.rmtree(out, ignore_errors=True)
    print(f"-j {args.workers}: {summary.files:,} files, {summary.batches_this_run} batches, load {os.getloadavg()[0]:.1f}; "
          f"run loop CPU {c1 - c0:.2f} s (main thread {t1 - t0:.2f}, other threads {c1 - c0 - (t1 - t0):.2f}, "
          f"of which the governor's sampling {sampling.get('cpu', float('nan')):.2f}); compaction {c2 - c1:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
