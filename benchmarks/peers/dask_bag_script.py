"""The Dask peer: a Dask bag over the files on a LocalCluster of N single-threaded processes.

    python benchmarks/peers/dask_bag_script.py SOURCE OUT -j N

The per-file work is pool_script.process_file (read, xxh3-128, line counts, ast.parse, ast.walk);
rows are computed by the bag, gathered in the client and written to Parquet at the end. The
cluster's start-up is part of the wall time (a user pays it on every run) and is also printed
on its own. Prints one JSON line of stats on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
# The workers unpickle process_many by reference: they must be able to import pool_script.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (HERE, os.environ.get("PYTHONPATH")) if p)

from pool_script import list_files, process_many, write_tables  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source")
    ap.add_argument("out")
    ap.add_argument("-j", "--workers", type=int, default=os.cpu_count())
    args = ap.parse_args(argv)
    started = time.perf_counter()
    import dask.bag as db
    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                      dashboard_address=None, silence_logs=40) as cluster, Client(cluster):
        startup_s = time.perf_counter() - started
        rels = list_files(args.source)
        chunk = 64
        chunks = [rels[i:i + chunk] for i in range(0, len(rels), chunk)]
        bag = db.from_sequence(chunks, npartitions=max(1, len(chunks) // 4))
        results = bag.map(lambda rels: process_many(args.source, rels)).compute()
    files, definitions, imports = [], [], []
    for f, d, i in results:
        files.extend(f)
        definitions.extend(d)
        imports.extend(i)
    write_tables(args.out, files, definitions, imports)
    print(json.dumps({"files": len(files), "definitions": len(definitions), "imports": len(imports),
                      "bytes": sum(r["size"] for r in files), "startup_s": startup_s,
                      "elapsed_s": time.perf_counter() - started}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
