"""The refresh targets of issue 14, side by side in one run (not timed tests).

    python benchmarks/refresh_bench.py                      # tree100k and the 6,000-file stdlib corpus
    python benchmarks/refresh_bench.py --corpus tree10k --workers 2 --json out.json

Per corpus, on a private copy (files keep their mtimes, so nothing is racily clean at the start):
a full run; `snakebatch plan` of the same tree (its walk, plus the small sample it parses); a
refresh of the unchanged tree; then 1 file, 0.1%, 1%, 10% and 100% of the files changed (a line
appended to each, other files each step), a refresh after each. Every command is the CLI in a
subprocess of its own (`--json`), timed from outside; `hashed` and `parsed` come from the
refresh's summary (a file is read only when hashed or parsed); peak RSS is the coordinator's own
(wait4's ru_maxrss) and the process tree's as the governor sampled it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, ".."))  # snakebatch from this checkout, for the watch rounds

from corpora import corpus  # noqa: E402

from helpers import cli_command, cli_env  # noqa: E402

STEPS = (("unchanged", 0.0), ("1 file", None), ("0.1%", 0.001), ("1%", 0.01), ("10%", 0.1), ("100%", 1.0))


def timed(*args) -> tuple[float, dict, int]:
    """Wall seconds, the --json summary, and the process's own peak RSS in bytes."""
    started = time.perf_counter()
    proc = subprocess.Popen(cli_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env())
    stdout, stderr = b"", b""
    out_chunks = []
    while True:  # read before waiting, so that a large summary cannot block the child
        chunk = proc.stdout.read(65536)
        if not chunk:
            break
        out_chunks.append(chunk)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    stdout = b"".join(out_chunks)
    stderr = proc.stderr.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"snakebatch {' '.join(map(str, args))} exited {proc.returncode}: {stderr.decode()[-2000:]}")
    return wall, json.loads(stdout), usage.ru_maxrss * 1024


def bench(name: str, workers: int, scratch: str) -> dict:
    original = corpus(name)
    source = os.path.join(scratch, name)
    shutil.copytree(original, source, symlinks=True)  # copy2: mtimes kept
    out = os.path.join(scratch, name + "-out")
    files = sorted(os.path.join(folder, f) for folder, _, names in os.walk(source) for f in names)
    rng = random.Random(14)
    order = files[:]
    rng.shuffle(order)
    j = ("-j", str(workers))

    full_wall, full, full_rss = timed("run", source, "-o", out, *j, "--json", "--no-progress")
    plan_wall, plan, _ = timed("plan", source, "-o", out, *j, "--json")
    result = {"corpus": name, "files": len(files), "bytes": full["bytes"], "workers": workers,
              "full": {"wall_s": full_wall, "peak_rss": full["peak_rss_bytes"], "coordinator_rss": full_rss},
              "plan": {"wall_s": plan_wall, "sample_s": plan["sample_s"]}, "steps": []}
    used = 0
    for label, fraction in STEPS:
        count = 1 if fraction is None else round(len(files) * fraction)
        for path in order[used:used + count] if count < len(files) else files:
            with open(path, "a") as fh:
                fh.write(f"\n# changed by refresh_bench ({label})\n")
        used += count
        wall, summary, rss = timed("run", source, "-o", out, "--refresh", *j, "--json", "--no-progress")
        refresh = summary["refresh"]
        result["steps"].append({
            "step": label, "changed": count, "wall_s": wall, "plan_s": refresh["plan_s"],
            "hashed": refresh["hashed"], "parsed": refresh["parsed"], "changes": refresh["changes"],
            "peak_rss": summary["peak_rss_bytes"], "coordinator_rss": rss,
        })
        print(f"  {name} {label}: {wall:.2f} s, parsed {refresh['parsed']}, hashed {refresh['hashed']}",
              file=sys.stderr, flush=True)
    result["watch"] = watch_rounds(source, out, order, workers)
    shutil.rmtree(source)
    shutil.rmtree(out)
    return result


def watch_rounds(source: str, out: str, files: list, workers: int) -> list[dict]:
    """`snakebatch.watch` in this process: its first round (a full walk, the pool not started
    yet), then rounds of 1 file and of 1% of the files changed (only their paths stat'ed, the
    pool warm). Files are changed once the previous round has been handed over."""
    import snakebatch

    rounds = []
    watch = snakebatch.watch(source, out, debounce=0.2, workers=workers)
    it = iter(watch)
    first = next(it)
    rounds.append({"step": "first round", "changed": 0, "wall_s": first.wall_s, "walk": first.walk,
                   "parsed": first.summary.refresh["parsed"], "peak_rss": first.peak_rss_bytes})
    unused = files[:]
    for label, count in (("1 file", 1), ("1 file again", 1), ("1%", max(1, round(len(files) * 0.01)))):
        for path in unused[:count]:
            with open(path, "a") as fh:
                fh.write(f"\n# changed by refresh_bench (watch, {label})\n")
        unused = unused[count:]
        r = next(it)
        rounds.append({"step": label, "changed": count, "wall_s": r.wall_s, "walk": r.walk,
                       "parsed": r.summary.refresh["parsed"], "peak_rss": r.peak_rss_bytes})
        print(f"  watch {label}: {r.line()}", file=sys.stderr, flush=True)
    watch.stop()
    return rounds


def mb(n: int) -> str:
    return f"{n / 1e6:.0f} MB"


def markdown(results: list[dict]) -> str:
    lines = []
    for r in results:
        full, plan = r["full"], r["plan"]
        lines += [
            f"**{r['corpus']}** ({r['files']:,} files, {r['bytes'] / 1e6:.0f} MB, {r['workers']} workers): "
            f"full run {full['wall_s']:.2f} s (peak RSS tree {mb(full['peak_rss'])}, coordinator "
            f"{mb(full['coordinator_rss'])}); `plan` {plan['wall_s']:.2f} s (of which {plan['sample_s']:.2f} s "
            "parsing its sample)",
            "",
            "| changed | files | refresh wall | planning | hashed | parsed | +/~/- | peak RSS tree | coordinator RSS |",
            "|---|---:|---:|---:|---:|---:|---|---:|---:|",
        ]
        for s in r["steps"]:
            c = s["changes"]
            lines.append(f"| {s['step']} | {s['changed']:,} | {s['wall_s']:.2f} s | {s['plan_s']:.2f} s | "
                         f"{s['hashed']:,} | {s['parsed']:,} | +{c['added']} ~{c['modified']} -{c['deleted']} | "
                         f"{mb(s['peak_rss'])} | {mb(s['coordinator_rss'])} |")
        lines += ["", "`snakebatch.watch` on the same tree afterwards (debounce 0.2 s, not counted in the wall):", "",
                  "| round | files changed | wall | walk | parsed | peak RSS tree |", "|---|---:|---:|---|---:|---:|"]
        lines += [f"| {w['step']} | {w['changed']:,} | {w['wall_s']:.2f} s | {w['walk']} | {w['parsed']:,} | "
                  f"{mb(w['peak_rss'])} |" for w in r["watch"]]
        steps = {s["step"]: s for s in r["steps"]}
        unchanged, one, pct = steps["unchanged"], steps["1 file"], steps["1%"]
        lines += [
            "",
            f"- unchanged / plan: {unchanged['wall_s'] / plan['wall_s']:.2f}x (target <= 1.5x); "
            f"files read: {unchanged['hashed'] + unchanged['parsed']} (target 0)",
            f"- 1 file changed: {one['wall_s']:.2f} s (target <= 2 s on 100k)",
            f"- 1% changed: {pct['wall_s']:.2f} s vs 10% of the full run + plan = "
            f"{0.1 * full['wall_s'] + plan['wall_s']:.2f} s",
            f"- peak RSS, largest refresh / full run: tree {max(s['peak_rss'] for s in r['steps']) / full['peak_rss']:.2f}x, "
            f"coordinator {max(s['coordinator_rss'] for s in r['steps']) / full['coordinator_rss']:.2f}x",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", action="append", help="tree100k, stdlib, ... (repeatable) [tree100k, stdlib]")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="snakebatch-refresh-bench-") as scratch:
        for name in args.corpus or ["tree100k", "stdlib"]:
            results.append(bench(name, args.workers, scratch))
    load = os.getloadavg()
    text = markdown(results) + f"\n(load average at the end {load[0]:.1f} {load[1]:.1f} {load[2]:.1f})\n"
    print(text)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
