"""Parsers for tests/test_dask.py, importable on Dask workers (their PYTHONPATH names tests/)."""

from __future__ import annotations

import os

from snakebatch.parsers import Parser, ParseResult


class KillerParser(Parser):
    """Kills its whole worker process on `boom_*.py`, as a segfaulting C extension would."""

    name = "killer"
    patterns = ("boom_*.py",)

    def parse(self, path: str, data: bytes) -> ParseResult:
        os._exit(1)


killer = KillerParser()


class WorkerProbeParser(Parser):
    """Reports, as the file's docstring, the memory settings of the Dask worker it runs on."""

    name = "worker-probe"
    patterns = ("probe_*.txt",)

    def parse(self, path: str, data: bytes) -> ParseResult:
        import json

        try:
            from distributed import get_worker

            worker = get_worker()
        except (ImportError, ValueError):
            return ParseResult(docstring="not on a dask worker")
        manager = worker.memory_manager
        settings = {
            "memory_limit": manager.memory_limit,
            "target": manager.memory_target_fraction,
            "spill": manager.memory_spill_fraction,
            "pause": manager.memory_pause_fraction,
        }
        return ParseResult(docstring=json.dumps(settings))


probe = WorkerProbeParser()


class SleeperParser(Parser):
    """Takes seconds on `slow_*.py`; the file's content names a folder where it leaves a
    `sleeping` marker when it starts and, the first time it finishes, a `slept` marker."""

    name = "sleeper"
    patterns = ("slow_*.py",)

    def parse(self, path: str, data: bytes) -> ParseResult:
        import time

        markers = data.decode().strip()
        open(os.path.join(markers, "sleeping"), "a").close()
        time.sleep(4)
        try:
            fd = os.open(os.path.join(markers, "slept"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.close(fd)
        except FileExistsError:
            pass
        return ParseResult()


sleeper = SleeperParser()
