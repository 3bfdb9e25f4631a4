"""Two or more snakebatch checkouts side by side with the hand-written pool, alternating in one run.

    python benchmarks/engines_ab.py --corpus stdlib --rounds 5 --engine before=/path/to/old --engine after=.

Each round runs, in turn, every engine's CLI (`compare.run_once`: wall time from spawn to exit, CPU
of the main process and its children, peak RSS), the pool peer (benchmarks/peers/pool_script.py)
and, with --limits, the one-core `limits.py` (bare gc-off `ast.parse` rate, for the 2-worker limit).
Prints a Markdown table of medians, each engine's wall time over the pool's paired by round, the
share of the limit, the summary's `serial` seconds per cause where the engine reports them, and
the load average during the run (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from compare import ROOT, run_once  # noqa: E402
from corpora import corpus as corpus_path  # noqa: E402

CAUSES = ("interpreter_imports", "pool_start", "discovery", "between_batches", "tail", "compaction", "exit")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default="stdlib")
    ap.add_argument("-j", "--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--engine", action="append", metavar="LABEL=PATH", help="repeatable; default this checkout")
    ap.add_argument("--limits", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--json", metavar="FILE", help="append every run as a JSON line")
    args = ap.parse_args(argv)
    engines = dict(e.split("=", 1) for e in args.engine) if args.engine else {"this": ROOT}
    source = corpus_path(args.corpus)
    runs: dict[str, list] = {}
    loads = [os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="engines-ab-") as scratch:
        for round_ in range(args.rounds):
            plan = [(label, "snakebatch", os.path.abspath(path)) for label, path in engines.items()]
            plan.append(("pool", "pool", ROOT))
            if args.limits:
                plan.append(("limits", "limits", ROOT))
            for label, tool, engine in plan:
                result = run_once(tool, source, args.workers, scratch, engine=engine)
                result.update(label=label, round=round_, load=os.getloadavg()[0])
                runs.setdefault(label, []).append(result)
                loads.append(os.getloadavg())
                print(json.dumps({k: v for k, v in result.items() if k != "report"}
                                 | {"serial": result["report"].get("serial")}), flush=True)
                if args.json:
                    with open(args.json, "a") as f:
                        f.write(json.dumps(result) + "\n")
    limit_s = None
    if args.limits:
        files = runs["limits"][0]["report"]["files"]
        rate = statistics.median(r["report"]["parse_gc_off"]["files_per_s"] for r in runs["limits"])
        limit_s = files / rate / args.workers
    print(f"\n{args.corpus}: {source}, -j {args.workers}, {args.rounds} alternating rounds; load average "
          f"(1 min) from {min(x[0] for x in loads):.1f} to {max(x[0] for x in loads):.1f}"
          + (f"; 2-core limit (bare gc-off parse / workers) {limit_s:.2f} s" if limit_s else ""))
    print("\n| engine | wall s (median, range) | / pool (paired by round) | % of limit | CPU s main + children | "
          "serial s | " + " | ".join(CAUSES) + " |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | " + " | ".join("---:" for _ in CAUSES) + " |")
    pool = runs["pool"]
    for label in [*engines, "pool"]:
        group = runs[label]
        walls = [r["wall_s"] for r in group]
        wall = statistics.median(walls)
        paired = statistics.median(r["wall_s"] / p["wall_s"] for r, p in zip(group, pool))
        cpu = (f"{statistics.median(r['cpu_s']['main'] for r in group):.2f} + "
               f"{statistics.median(r['cpu_s']['children'] for r in group):.2f}")
        serials = [r["report"].get("serial") for r in group if r["report"].get("serial")]
        cells = ["-"] * (len(CAUSES) + 1)
        if serials:
            cells = [f"{statistics.median(s['total_s'] for s in serials):.2f}"]
            cells += [f"{statistics.median(s[c + '_s'] for s in serials):.2f}" for c in CAUSES]
        share = f"{limit_s / wall * 100:.0f}%" if limit_s else "-"
        print(f"| {label} | {wall:.2f} ({min(walls):.2f}-{max(walls):.2f}) | {paired:.2f}x | {share} | {cpu} | "
              + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
