"""Many cores simulated on a few: what the coordinator costs at high parallelism (issue 17).

    python benchmarks/many_cores.py --files 200000 -j 32,64 --rounds 3
    python benchmarks/many_cores.py --files 50000 -j 32 --engine before=/path/to/checkout --engine after=.

Every file is "parsed" by `sleep_parser.py` (2 ms of sleep, no CPU), so N workers on this machine
behave like N cores needing 2 ms a file: the ideal wall time is files x 2 ms / N, and what a run
takes beyond it is start-up, the coordinator's per-file and per-batch work, the tail and
compaction. The tree is gen_tree.py's (small Python and text files) under $SNAKEBATCH_BENCH_DIR.

Each round runs every engine at every -j in turn (alternating, so a change in the machine's load
hits them alike). Measured per run: the CLI's wall time from spawn to exit; the coordinator's own
CPU seconds (the main process's os.times() at its exit: every thread, no sampling), per 1,000
files; and, from engines that report it, the summary's `serial` object. Prints a Markdown table of
medians and one JSON line per run (--json FILE keeps them).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CACHE = os.environ.get("SNAKEBATCH_BENCH_DIR", "/tmp/snakebatch-bench")
SLEEP_S = 0.002

# The CLI, with the main process's CPU seconds written at its exit.
WRAPPER = """
import atexit, json, os, runpy, sys
def _times():
    t = os.times()
    with open(os.environ["SNAKEBATCH_BENCH_TIMES"], "w") as f:
        json.dump([t.user, t.system], f)
atexit.register(_times)
sys.argv = ["snakebatch", *sys.argv[1:]]
runpy.run_module("snakebatch", run_name="__main__", alter_sys=True)
"""


def tree(files: int) -> str:
    name = f"tree{files // 1000}k" if files % 1000 == 0 else f"tree{files}"
    dest = os.path.join(CACHE, name)
    if not os.path.exists(dest + ".complete"):
        subprocess.run([sys.executable, os.path.join(HERE, "gen_tree.py"), dest, "--files", str(files), "--force"],
                       check=True)
    return dest


def run_once(engine: str, source: str, workers: int, scratch: str, extra: list[str], sleep_s: float) -> dict:
    out = os.path.join(scratch, "out")
    times = os.path.join(scratch, "times.json")
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ, SNAKEBATCH_BENCH_TIMES=times, SNAKEBATCH_BENCH_SLEEP_S=str(sleep_s))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (engine, HERE, env.get("PYTHONPATH")) if p)
    command = [sys.executable, "-c", WRAPPER, "run", source, "-o", out, "--no-progress", "--json",
               "-j", str(workers), "--parser", "sleep_parser:parser", *extra]
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, env=env, cwd=scratch)
    wall = time.perf_counter() - started
    shutil.rmtree(out, ignore_errors=True)
    if proc.returncode != 0:
        raise RuntimeError(f"-j {workers} exited {proc.returncode}:\n{proc.stderr.decode()[-3000:]}")
    summary = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    with open(times) as f:
        user, system = json.load(f)
    return {"wall_s": wall, "coordinator_cpu_s": user + system, "files": summary["files"],
            "batches": summary["batches_this_run"], "serial": summary.get("serial"),
            "compaction_s": (summary.get("compaction") or {}).get("seconds")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=200_000)
    ap.add_argument("-j", "--workers", default="32,64", help="comma-separated worker counts")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--engine", action="append", metavar="LABEL=PATH",
                    help="a checkout to run (repeatable); default this one")
    ap.add_argument("--sleep-ms", type=float, default=SLEEP_S * 1000,
                    help="the parser's sleep per file [2]; 0 measures the coordinator's CPU per file on few workers")
    ap.add_argument("--json", metavar="FILE", help="append every run as a JSON line")
    ap.add_argument("extra", nargs="*", help="more `snakebatch run` options, after --")
    args = ap.parse_args(argv)
    engines = dict(e.split("=", 1) for e in args.engine) if args.engine else {"this": ROOT}
    source = tree(args.files)
    counts = [int(j) for j in args.workers.split(",")]
    runs: dict = {}
    print(f"{args.files:,} files, {args.sleep_ms:g} ms a file; load at start {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="many-cores-") as scratch:
        for round_ in range(args.rounds):
            for workers in counts:
                for label, path in engines.items():
                    result = run_once(os.path.abspath(path), source, workers, scratch, args.extra, args.sleep_ms / 1000)
                    result.update(engine=label, workers=workers, round=round_, load=os.getloadavg()[0])
                    runs.setdefault((label, workers), []).append(result)
                    print(json.dumps(result), flush=True)
                    if args.json:
                        with open(args.json, "a") as f:
                            f.write(json.dumps(result) + "\n")
    print(f"\nload at end {os.getloadavg()}\n")
    print("| engine | -j | ideal s | wall s (median, range) | wall / ideal | coordinator CPU s | per 1,000 files | "
          "serial s (median) | batches |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for (label, workers), results in runs.items():
        ideal = args.files * args.sleep_ms / 1000 / workers
        walls = [r["wall_s"] for r in results]
        wall = statistics.median(walls)
        cpu = statistics.median(r["coordinator_cpu_s"] for r in results)
        serial = [r["serial"]["total_s"] for r in results if r["serial"]]
        serial_text = f"{statistics.median(serial):.2f}" if serial else "-"
        print(f"| {label} | {workers} | {ideal:.2f} | {wall:.2f} ({min(walls):.2f}-{max(walls):.2f}) | "
              f"{wall / ideal if ideal else float('nan'):.2f}x | {cpu:.2f} | {cpu / args.files * 1000:.3f} | {serial_text} | "
              f"{statistics.median(r['batches'] for r in results):.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
