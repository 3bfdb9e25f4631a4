"""Micro-benchmarks of snakebatch's stages (pytest-benchmark).

    python -m pytest benchmarks/bench_micro.py --benchmark-only -p no:cacheprovider

(pytest collects a file named on the command line whatever its name, so bench_*.py files run
when named and stay out of the test suite, whose testpaths is tests/.)

Each benchmark stores its throughput in `extra_info` (MB/s, files/s, entries/s, commits/s),
shown with `--benchmark-columns=...` or in `--benchmark-json`; they are also printed (-s).
Environment: SNAKEBATCH_BENCH_CORPUS, a folder of .py files for the parser benchmarks (default:
the stdlib corpus of corpora.py), SNAKEBATCH_BENCH_PARSER_FILES (how many of its files, 1500).
"""

from __future__ import annotations

import os
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from snakebatch.config import JobConfig  # noqa: E402
from snakebatch.engine.batching import BatchPlanner  # noqa: E402
from snakebatch.engine.discovery import SourceFile, discover  # noqa: E402
from snakebatch.parsers import get  # noqa: E402
from snakebatch.schema import TABLES, table_schema  # noqa: E402
from snakebatch.store.ledger import Ledger, LedgerEntry  # noqa: E402

PARSER_FILES = int(os.environ.get("SNAKEBATCH_BENCH_PARSER_FILES", "1500"))
PLANNER_FILES = 100_000
DISCOVERY_FILES = 20_000


def _report(benchmark, unit: str, amount: float) -> None:
    rate = amount / benchmark.stats.stats.median
    benchmark.extra_info[unit] = round(rate, 1)
    print(f"\n{benchmark.name}: {rate:,.1f} {unit} (median)")


@pytest.fixture(scope="module")
def corpus_bytes() -> list[tuple[str, bytes]]:
    """A real corpus of .py files, preloaded: parsers are measured without I/O."""
    root = os.environ.get("SNAKEBATCH_BENCH_CORPUS")
    if not root:
        from corpora import corpus

        root = corpus("stdlib")
    files = []
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            if name.endswith(".py") and len(files) < PARSER_FILES:
                with open(os.path.join(folder, name), "rb") as fh:
                    files.append((os.path.relpath(os.path.join(folder, name), root), fh.read()))
    assert files, f"no .py files under {root}"
    return files


@pytest.mark.parametrize("parser_name", ["python", "text"])
def test_parser_throughput(benchmark, corpus_bytes, parser_name):
    parser = get(parser_name)

    def parse_all():
        for path, data in corpus_bytes:
            parser.parse(path, data)

    benchmark.pedantic(parse_all, rounds=3, iterations=1, warmup_rounds=0)
    _report(benchmark, "MB/s", sum(len(d) for _, d in corpus_bytes) / 1e6)
    benchmark.extra_info["files"] = len(corpus_bytes)


def test_batch_planner(benchmark):
    files = [SourceFile(f"pkg{i // 1000:03d}/mod_{i:06d}.py", 200 + (i * 7919) % 20_000, i)
             for i in range(PLANNER_FILES)]

    def plan_all():
        planner = BatchPlanner(files, workers=2)
        batches = 0
        while planner.next_batch(4 * 1024 * 1024) is not None:
            batches += 1
        return batches

    batches = benchmark.pedantic(plan_all, rounds=5, iterations=1)
    assert batches > 0
    _report(benchmark, "files/s", PLANNER_FILES)


def _small_parts(staging: str) -> None:
    os.makedirs(staging)
    for table in TABLES:
        schema = table_schema(table)
        pq.write_table(schema.empty_table(), os.path.join(staging, table + ".parquet"))


def test_ledger_commit(benchmark, tmp_path):
    """Ledger.commit of small batches: one fsynced ledger line and three renames each."""
    ledger = Ledger(str(tmp_path / "out"))
    ledger.create()
    counter = iter(range(1, 10**9))

    def setup():
        batch_id = next(counter)
        staging = ledger.staging_for(batch_id, 0)
        _small_parts(staging)
        entry = LedgerEntry(batch_id=batch_id, staging=os.path.relpath(staging, ledger.state),
                            paths=[f"f{batch_id}_{i}.py" for i in range(20)], sizes=[100] * 20,
                            mtimes=[0] * 20, statuses=["ok"] * 20,
                            rows={"files": 20, "definitions": 0, "imports": 0}, bytes=2000, parse_s=0.01,
                            language_counts={"Python": 20}, committed_at=0.0)
        return (entry, staging), {}

    benchmark.pedantic(ledger.commit, setup=setup, rounds=200, iterations=1)
    ledger.close()
    assert len(list(ledger.entries())) == 200
    _report(benchmark, "commits/s", 1)


@pytest.fixture(scope="module")
def generated_tree(tmp_path_factory) -> str:
    from gen_tree import generate

    root = str(tmp_path_factory.mktemp("tree") / "src")
    generate(root, DISCOVERY_FILES)
    return root


def test_discovery(benchmark, generated_tree):
    job = JobConfig(source=generated_tree)

    def walk():
        return sum(1 for _ in discover(job))

    found = benchmark.pedantic(walk, rounds=3, iterations=1, warmup_rounds=1)
    assert found == DISCOVERY_FILES
    _report(benchmark, "entries/s", DISCOVERY_FILES)


def test_arrow_parquet_part(benchmark, tmp_path):
    """Building one batch's files table from column lists and writing it as the worker does."""
    from snakebatch.schema import FILES_SCHEMA
    from snakebatch.store.durable import PARQUET_OPTIONS

    n = 1000
    columns = {f.name: [None] * n for f in FILES_SCHEMA}
    columns["path"] = [f"pkg/mod_{i}.py" for i in range(n)]
    for name in ("size", "mtime_ns", "lines", "code_lines", "comment_lines", "blank_lines", "batch_id"):
        columns[name] = list(range(n))
    columns["status"] = ["ok"] * n

    def build_and_write():
        table = pa.Table.from_arrays([pa.array(columns[f.name], type=f.type) for f in FILES_SCHEMA],
                                     schema=FILES_SCHEMA)
        pq.write_table(table, str(tmp_path / "files.parquet"), **PARQUET_OPTIONS)

    benchmark.pedantic(build_and_write, rounds=20, iterations=1)
    _report(benchmark, "rows/s", n)


@pytest.fixture(scope="module")
def real_batch_tables(corpus_bytes, tmp_path_factory) -> dict:
    """The three tables of one real batch (the corpus's first files through process_batch)."""
    from snakebatch.engine.worker import BatchTask, process_batch

    source = tmp_path_factory.mktemp("batch-src")
    files = []
    for i, (_path, data) in enumerate(corpus_bytes[:500]):
        name = f"m{i:04d}.py"
        (source / name).write_bytes(data)
        files.append((name, len(data), 0))
    staging = tmp_path_factory.mktemp("batch-out") / "staging"
    process_batch(BatchTask(batch_id=1, attempt=0, source=str(source), staging=str(staging), files=files))
    return {table: pq.read_table(str(staging / f"{table}.parquet")) for table in TABLES}


PARQUET_CHOICES = {
    "zstd-1": {"compression": "zstd", "compression_level": 1},
    "zstd-3": {"compression": "zstd", "compression_level": 3},
    "snappy": {"compression": "snappy"},
    "lz4": {"compression": "lz4"},
    "none": {"compression": "none"},
    "zstd-1-no-dict": {"compression": "zstd", "compression_level": 1, "use_dictionary": False},
}


@pytest.mark.parametrize("choice", list(PARQUET_CHOICES))
def test_parquet_options(benchmark, real_batch_tables, tmp_path, choice):
    """Writing one real batch's three tables with each compression choice: speed and size."""
    options = PARQUET_CHOICES[choice]

    def write_all():
        for table, data in real_batch_tables.items():
            pq.write_table(data, str(tmp_path / f"{table}.parquet"), **options)

    benchmark.pedantic(write_all, rounds=10, iterations=1, warmup_rounds=1)
    size = sum(os.path.getsize(tmp_path / f"{t}.parquet") for t in TABLES)
    in_memory = sum(t.nbytes for t in real_batch_tables.values())
    benchmark.extra_info["parquet_bytes"] = size
    benchmark.extra_info["ratio_vs_arrow"] = round(size / in_memory, 3)
    _report(benchmark, "MB/s (Arrow bytes in)", in_memory / 1e6)
    print(f"  {choice}: {size / 1e3:,.0f} kB on disk for {in_memory / 1e6:.1f} MB of Arrow data")
