"""Issue 16's target, side by side in one run: a job to a loopback S3 server against the same job
to local disk (not a timed test).

    python benchmarks/s3_vs_local.py                    # 1,500 stdlib files under 30 KB, -j 2, 3 rounds
    python benchmarks/s3_vs_local.py --files 3000 --rounds 5 --json out.json

A moto server (`moto[server]`, as the tests start it) runs on 127.0.0.1; each round runs the CLI
once into a fresh local folder and once into a fresh prefix of the bucket, alternately, both
compacted at the end (the default). Wall time is measured from outside the process; the ratio of
the medians is reported with the number of batches (8 requests each, see docs/reference.md).
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
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, os.path.join(HERE, ".."))  # the test helpers import snakebatch from this checkout

from helpers import S3_BUCKET, cli_command, s3_env, start_moto  # noqa: E402
from resume_helpers import copy_stdlib  # noqa: E402


def timed(args: list, env: dict) -> tuple[float, dict]:
    started = time.perf_counter()
    proc = subprocess.run(cli_command(*args), capture_output=True, env=env)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"snakebatch {' '.join(map(str, args))} exited {proc.returncode}: {proc.stderr.decode()[-2000:]}")
    return wall, json.loads(proc.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=1500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()
    scratch = tempfile.mkdtemp(prefix="snakebatch-s3bench-")
    server, endpoint, _client = start_moto()
    env = s3_env(endpoint)
    try:
        corpus = os.path.join(scratch, "corpus")
        os.makedirs(corpus)
        files = copy_stdlib(Path(corpus), args.files, max_size=30_000)
        walls: dict[str, list[float]] = {"local": [], "s3": []}
        batches = {}
        for round_ in range(args.rounds):
            for name, out in (("local", os.path.join(scratch, f"out-{round_}")),
                              ("s3", f"s3://{S3_BUCKET}/round-{round_}")):
                wall, summary = timed(["run", corpus, "-o", out, "-j", str(args.workers), "--no-progress", "--json"],
                                      env)
                walls[name].append(wall)
                batches[name] = summary["batches_this_run"]
                print(f"round {round_} {name}: {wall:.2f} s", file=sys.stderr)
        report = {"files": files, "workers": args.workers, "rounds": args.rounds, "batches": batches,
                  "local_median_s": round(statistics.median(walls["local"]), 3),
                  "s3_median_s": round(statistics.median(walls["s3"]), 3),
                  "walls": {k: [round(w, 3) for w in v] for k, v in walls.items()},
                  "load_average": os.getloadavg()}
        report["ratio"] = round(report["s3_median_s"] / report["local_median_s"], 3)
        text = json.dumps(report, indent=2)
        print(text)
        if args.json:
            with open(args.json, "w") as fh:
                fh.write(text)
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
