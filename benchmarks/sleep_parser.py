"""A parser plugin for `many_cores.py`: takes every file, sleeps 2 ms, uses no CPU.

    snakebatch run TREE -o OUT --parser sleep_parser:parser     # benchmarks/ on PYTHONPATH

With it, N workers on a 2-core machine behave like N cores that each need 2 ms per file: the
only CPU a run spends is the coordinator's and the workers' own bookkeeping, so the wall time
against the ideal (files x 2 ms / N) shows what the coordinator costs at high parallelism.
SNAKEBATCH_BENCH_SLEEP_S overrides the 2 ms.
"""

from __future__ import annotations

import os
import time

from snakebatch.parsers import Parser, ParseResult

SLEEP_S = float(os.environ.get("SNAKEBATCH_BENCH_SLEEP_S") or 0.002)


class SleepParser(Parser):
    name = "sleep"
    patterns = ("*",)
    version = "1"

    def parse(self, path, data):
        time.sleep(SLEEP_S)
        return ParseResult(status="ok", language="Text", lines=data.count(b"\n"))


parser = SleepParser()
