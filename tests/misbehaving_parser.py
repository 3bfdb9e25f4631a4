"""A parser plugin that misbehaves on purpose, for the poison-isolation tests.

Used as `--parser tests.misbehaving_parser:parser` on files named `*.bad`: the content says
what to do. `crash` kills the process, `hang` sleeps (SIGALRM can interrupt it), `spin` loops in
C and never returns to the interpreter (only the watchdog can stop it), `raise` raises, `oom` raises
a bare MemoryError (as an allocation that fails does); `vanish` takes from the source, as its later
lines say, `rm PATH` (a file), `hide PATH AWAY` (a file moved away) or `dir2file PATH` (a folder
replaced by a file); anything else parses fine. `hoarding_parser` keeps 160 MB alive in its worker
after a `hoard` file.
"""

from __future__ import annotations

import itertools
import os
import shutil
import time

from snakebatch.parsers import Parser, ParseResult

_hoard: list = []


class MisbehavingParser(Parser):
    name = "misbehaving"
    patterns = ("*.bad",)
    version = "1"

    def parse(self, path: str, data: bytes) -> ParseResult:
        action = data.strip()
        if action == b"crash":
            os._exit(3)
        if action == b"hang":
            time.sleep(10**6)
        if action == b"spin":
            # sum() of small ints runs in one C loop that never checks for signals. Bounded
            # (about a minute) so that a broken watchdog cannot leave a worker spinning for hours.
            sum(itertools.repeat(1, 10**10))
        if action == b"raise":
            raise ValueError(f"this parser refuses {path}")
        if action.startswith(b"vanish"):
            for line in action.decode().splitlines()[1:]:
                verb, *args = line.split("\t")
                if verb == "rm":
                    os.unlink(args[0])
                elif verb == "hide":
                    os.rename(args[0], args[1])
                elif verb == "dir2file":
                    shutil.rmtree(args[0])
                    with open(args[0], "w") as fh:
                        fh.write("now a file\n")
        if action == b"oom":
            raise MemoryError()
        return ParseResult(language="Bad", lines=data.count(b"\n"))


class HoardingParser(MisbehavingParser):
    name = "hoarding"

    def parse(self, path: str, data: bytes) -> ParseResult:
        if data.strip() == b"hoard":
            block = bytearray(160 * 1024 * 1024)
            block[::4096] = b"x" * len(block[::4096])  # touch every page so it is resident
            _hoard.append(block)
        return super().parse(path, data)


parser = MisbehavingParser()
hoarding_parser = HoardingParser()
