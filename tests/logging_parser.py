"""A test parser plugin: the built-in python parser, logging every parse and optionally slowed.

Used by the crash tests as `--parser logging_parser:parser` (tests/ on PYTHONPATH). Each parse
appends "path<TAB>pid" to the file named by SNAKEBATCH_TEST_PARSE_LOG with one O_APPEND write, so
lines from concurrent workers never interleave; SNAKEBATCH_TEST_PARSE_SLEEP (seconds) stretches
each parse so that a run is long enough to be killed at many moments.

A CLI subprocess's workers read both from the environment. The workers of a run inside the test
process (helpers.cli_in_process) cannot: their forkserver keeps the environment it started with.
There the test process names a JSON file of both in SNAKEBATCH_TEST_PARSE_SETTINGS (conftest.py, set
before any forkserver starts), written for the call; when it is set, it alone is read.
"""

from __future__ import annotations

import json
import os
import time

from snakebatch.parsers import Parser, get

LOG, SLEEP, SETTINGS = "SNAKEBATCH_TEST_PARSE_LOG", "SNAKEBATCH_TEST_PARSE_SLEEP", "SNAKEBATCH_TEST_PARSE_SETTINGS"


def _settings() -> dict:
    path = os.environ.get(SETTINGS)
    if not path:
        return os.environ
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


class LoggingPythonParser(Parser):
    name = "logging-python"
    patterns = ("*.py",)
    version = "1"

    def parse(self, path, data):
        settings = _settings()
        log = settings.get(LOG)
        if log:
            fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, f"{path}\t{os.getpid()}\n".encode())
            finally:
                os.close(fd)
        pause = float(settings.get(SLEEP) or 0)
        if pause:
            time.sleep(pause)
        return get("python").parse(path, data)


parser = LoggingPythonParser()
