"""How close `snakebatch plan`'s estimate comes to the real run: prints estimate, actual and ratio.

    python benchmarks/plan_accuracy.py [SOURCE] [-j N] [--repeat K]

SOURCE defaults to the standard library (with `--exclude site-packages/`). Each round runs
`plan --json` and then `run --json` into a temporary folder, both as subprocesses of the CLI.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path


def snakebatch(*args: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "snakebatch", *args], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("source", nargs="?", default=sysconfig.get_paths()["stdlib"])
    parser.add_argument("-j", "--workers", default="2")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    filters = ["--exclude", "site-packages/"] if args.source == sysconfig.get_paths()["stdlib"] else []
    print(f"source {args.source}, -j {args.workers}")
    print("round  files(plan/run)  batches(plan/run)  wall s(est/real ratio)  peak RSS MB(est/real ratio)  cpu_share")
    for round_ in range(1, args.repeat + 1):
        plan = snakebatch("plan", args.source, *filters, "-j", args.workers, "--json")
        with tempfile.TemporaryDirectory() as tmp:
            run = snakebatch("run", args.source, *filters, "-j", args.workers, "-o", str(Path(tmp) / "out"),
                             "--no-progress", "--json")
        print(f"{round_:>5}  {plan['files']}/{run['files']}  {plan['batches']}/{run['batches_this_run']}  "
              f"{plan['estimated_wall_s']:.1f}/{run['elapsed_s']:.1f} {plan['estimated_wall_s'] / run['elapsed_s']:.2f}  "
              f"{plan['estimated_peak_rss_bytes'] / 1e6:.0f}/{run['peak_rss_bytes'] / 1e6:.0f} "
              f"{plan['estimated_peak_rss_bytes'] / run['peak_rss_bytes']:.2f}  {plan['cpu_share']}")


if __name__ == "__main__":
    main()
