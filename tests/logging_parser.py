"""A test parser plugin: the built-in python parser, logging every parse and optionally slowed.

Used by the crash tests as `--parser logging_parser:parser` (tests/ on PYTHONPATH). Each parse
appends "path<TAB>pid" to the file named by SNAKEBATCH_TEST_PARSE_LOG with one O_APPEND write, so
lines from concurrent workers never interleave; SNAKEBATCH_TEST_PARSE_SLEEP (seconds) stretches
each parse so that a run is long enough to be killed at many moments.
"""

from __future__ import annotations

import os
import time

from snakebatch.parsers import Parser, get


class LoggingPythonParser(Parser):
    name = "logging-python"
    patterns = ("*.py",)
    version = "1"

    def parse(self, path, data):
        log = os.environ.get("SNAKEBATCH_TEST_PARSE_LOG")
        if log:
            fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, f"{path}\t{os.getpid()}\n".encode())
            finally:
                os.close(fd)
        pause = float(os.environ.get("SNAKEBATCH_TEST_PARSE_SLEEP") or 0)
        if pause:
            time.sleep(pause)
        return get("python").parse(path, data)


parser = LoggingPythonParser()
