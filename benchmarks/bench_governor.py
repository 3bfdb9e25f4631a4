"""What the memory governor costs, and what it buys. A script, not a test.

    python benchmarks/bench_governor.py              # throughput on small files, governor on vs off
    python benchmarks/bench_governor.py --peak       # peak RSS of big modules among stdlib files

Throughput: the same standard-library files run with the default governor and with it as idle
as it can be (a budget of 1 TB: no holds, no shrinking); prints files/s of each and their ratio.

Peak (the issue's done-when check): six generated 2 MB modules (about 530 MB of `ast` each)
among 1,500 standard-library files, `-j 2`, with `--memory-budget 1GB` and without a budget;
prints the peak RSS of the whole process tree, sampled from outside every 50 ms.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from treepeak import generated_module, run_sampled  # noqa: E402 - shared with the memory tests


def stdlib_files(dest: Path, count: int) -> int:
    """Copy `count` standard-library modules that parse (the test suite has deliberate errors)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    copied = 0
    for dirpath, dirs, files in os.walk(stdlib):
        dirs[:] = sorted(d for d in dirs if d not in ("site-packages", "__pycache__"))
        for name in sorted(files):
            if copied >= count:
                return copied
            if not name.endswith(".py"):
                continue
            source = Path(dirpath, name)
            data = source.read_bytes()
            try:
                ast.parse(data)
            except (SyntaxError, ValueError):
                continue
            target = dest / source.relative_to(stdlib)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            copied += 1
    return copied


def run_json(args: list) -> tuple[dict, int, float]:
    started = time.perf_counter()
    proc, peak = run_sampled(args)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"snakebatch {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout), peak, elapsed


def throughput(workdir: Path, rounds: int) -> None:
    source = workdir / "src"
    n = stdlib_files(source, 3000)
    print(f"{n} standard-library files, -j 2, best of {rounds}")
    configurations = (("governor (default budget)", None), ("governor idle (1TB budget)", "1TB"))
    best: dict = {}
    for _ in range(rounds):  # alternated, so a busy machine's drift hits both alike
        for label, budget in configurations:
            args = ["run", source, "-o", workdir / "out", "--fresh", "-j", "2", "--json"]
            if budget:
                args += ["--memory-budget", budget]
            summary, _, _ = run_json(args)
            best[label] = max(best.get(label, 0.0), summary["files_per_s"])
    for label, rate in best.items():
        print(f"  {label:<28} {rate:8.0f} files/s")
    on, off = best.values()
    print(f"  ratio governor/idle: {on / off:.3f}")
    sampling_cost()


def sampling_cost() -> None:
    """The sampling thread runs in both: its CPU time over a few seconds, on a tree like a run's."""
    import multiprocessing

    from snakebatch.engine.governor import MemoryGovernor

    context = multiprocessing.get_context("spawn")
    children = [context.Process(target=time.sleep, args=(30,)) for _ in range(3)]
    for child in children:
        child.start()
    try:
        governor = MemoryGovernor(1 << 30, workers=2)
        cpu, wall = time.process_time(), time.perf_counter()
        governor.start()
        time.sleep(5)
        governor.stop()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    finally:
        for child in children:
            child.kill()
    print(f"  sampling a 4-process tree 10 times a second costs {cpu / wall:.2%} of one core")


def peak(workdir: Path) -> None:
    source = workdir / "src"
    n = stdlib_files(source / "std", 1500)
    for i in range(6):
        (source / f"generated_{i}.py").write_bytes(generated_module(2_000_000, seed=i))
    print(f"{n} standard-library files + 6 generated 2 MB modules, -j 2")
    for label, budget in (("--memory-budget 1GB", "1GB"), ("no budget (default)", None)):
        args = ["run", source, "-o", workdir / "out", "--fresh", "-j", "2", "--json"]
        if budget:
            args += ["--memory-budget", budget]
        summary, tree_peak, elapsed = run_json(args)
        governor = summary["governor"]
        print(f"  {label:<22} peak RSS {tree_peak / 1e9:.3f} GB (sampled outside), "
              f"{summary['peak_rss_bytes'] / 1e9:.3f} GB (governor), {elapsed:.1f}s, "
              f"status {summary['status_counts']}, held alone {governor['held_for_big_batch']}x, "
              f"recycles {governor['recycles']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peak", action="store_true", help="run the peak-RSS check instead of throughput")
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="snakebatch-bench-governor-"))
    try:
        peak(workdir) if options.peak else throughput(workdir, options.rounds)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
