"""The datatrove peer: datatrove's LocalPipelineExecutor running the same per-file work.

    python benchmarks/peers/datatrove_script.py SOURCE OUT -j N

datatrove's model is static sharding: `tasks` shards (here 4 per worker, so that a slow shard
does not leave a worker idle at the end), each a pipeline run in a pool of N processes. One
pipeline step lists the files, keeps its shard (`files[rank::world_size]`), does
pool_script.process_file on each (read, xxh3-128, line counts, ast.parse, ast.walk) and writes
its shard's three Parquet files. datatrove adds its logging folder, per-task completion markers
(so a rerun skips finished shards) and stats. Prints one JSON line of stats on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
# The pool's processes unpickle process_many by reference: they must be able to import pool_script.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (HERE, os.environ.get("PYTHONPATH")) if p)

from pool_script import list_files, process_many, write_tables  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source")
    ap.add_argument("out")
    ap.add_argument("-j", "--workers", type=int, default=os.cpu_count())
    args = ap.parse_args(argv)
    started = time.perf_counter()
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.base import PipelineStep
    from datatrove.utils.logging import logger

    logger.remove()  # its per-task log lines on stderr are not what is measured

    class ExtractSources(PipelineStep):
        name = "extract sources"
        type = "snakebatch-peer"

        def __init__(self, source: str, out: str):
            super().__init__()
            self.source, self.out = source, out

        def run(self, data=None, rank: int = 0, world_size: int = 1):
            rels = list_files(self.source)[rank::world_size]
            files, definitions, imports = process_many(self.source, rels)
            self.stat_update("files", value=len(files))
            write_tables(self.out, files, definitions, imports, suffix=f"-{rank:05d}")
            return iter(())

    tasks = 4 * args.workers
    executor = LocalPipelineExecutor(
        pipeline=[ExtractSources(os.path.abspath(args.source), os.path.abspath(args.out))],
        tasks=tasks, workers=args.workers, logging_dir=os.path.join(args.out, "_datatrove_logs"),
    )
    stats = executor.run()
    import pyarrow.dataset as ds

    files = ds.dataset(os.path.join(args.out, "files"), format="parquet").to_table(columns=["size"])
    counts = {name: ds.dataset(os.path.join(args.out, name), format="parquet").count_rows()
              for name in ("definitions", "imports")}
    print(json.dumps({"files": files.num_rows, **counts, "bytes": sum(files.column("size").to_pylist()),
                      "tasks": tasks, "elapsed_s": time.perf_counter() - started}))
    del stats
    return 0


if __name__ == "__main__":
    sys.exit(main())
