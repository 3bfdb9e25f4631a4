"""What compaction gives readers: DuckDB queries on a compacted job and on the same job with
one part per batch (`--no-compact`), alternating, medians side by side.

    python benchmarks/reader_queries.py [CORPUS] [-j 2] [--repeat 7]

CORPUS is a name from corpora.py (default tree100k) or a folder. Both jobs are run first (the
compaction's own time is printed from the run's summary); then every query runs on each output
in turn, `--repeat` times, and the median of each is printed with the ratio.
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
sys.path.insert(0, HERE)

from corpora import corpus as corpus_path  # noqa: E402


def run_job(source: str, out: str, workers: int, compact: bool) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    command = [sys.executable, "-m", "snakebatch", "run", source, "-o", out, "--no-progress", "--json",
               "-j", str(workers)] + ([] if compact else ["--no-compact"])
    proc = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def queries(out: str, sample_path: str) -> dict[str, str]:
    folder = sample_path.split("/", 1)[0]
    return {
        "files by language": f"select language, count(*) from read_parquet('{out}/files/*.parquet') group by 1",
        "one file's row": f"select size, lines from read_parquet('{out}/files/*.parquet') where path = '{sample_path}'",
        "definitions of one top folder": (f"select count(*) from read_parquet('{out}/definitions/*.parquet') "
                                          f"where path like '{folder}/%'"),
        "join files and imports": (f"select f.language, count(*) from read_parquet('{out}/imports/*.parquet') i "
                                   f"join read_parquet('{out}/files/*.parquet') f using (path) group by 1"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus", nargs="?", default="tree100k")
    parser.add_argument("-j", "--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    import duckdb

    source = args.corpus if os.path.isdir(args.corpus) else corpus_path(args.corpus)
    scratch = tempfile.mkdtemp(prefix="snakebatch-readers-")
    try:
        outs = {"compacted": os.path.join(scratch, "compacted"), "per batch": os.path.join(scratch, "per-batch")}
        for label, out in outs.items():
            summary = run_job(source, out, args.workers, compact=label == "compacted")
            parts = len(os.listdir(os.path.join(out, "files")))
            extra = (f", compaction {summary['compaction']['seconds']:.2f} s of {summary['elapsed_s']:.2f} s"
                     if summary.get("compaction") else f", {summary['elapsed_s']:.2f} s")
            print(f"{label}: {summary['files']:,} files, {parts} part(s) per table{extra}")
        con = duckdb.connect()
        sample = con.execute(f"select path from read_parquet('{outs['compacted']}/files/*.parquet') "
                             "order by path limit 1 offset 1000").fetchall()[0][0]
        times: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.repeat):
            for label, out in outs.items():
                for name, sql in queries(out, sample).items():
                    started = time.perf_counter()
                    con.execute(sql).fetchall()
                    times.setdefault((name, label), []).append(time.perf_counter() - started)
        for name in queries("", sample):
            results = [con.execute(queries(out, sample)[name]).fetchall() for out in outs.values()]
            assert sorted(results[0]) == sorted(results[1]), f"{name}: the two outputs disagree"
        print("\n| query | per batch ms | compacted ms | per batch / compacted |")
        print("| --- | ---: | ---: | ---: |")
        for name in queries("", sample):
            slow = statistics.median(times[(name, "per batch")]) * 1000
            fast = statistics.median(times[(name, "compacted")]) * 1000
            print(f"| {name} | {slow:.1f} | {fast:.1f} | {slow / fast:.1f}x |")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
