"""Generate a tree of many small files, for discovery and memory at scale.

    python benchmarks/gen_tree.py DEST --files 100000     # the default size of the benchmark
    python benchmarks/gen_tree.py DEST --files 1000000    # 1M: ~4 GB of disk blocks, minutes

Layout: DEST/pNNN/mNN/ folders of 100 files each; 90% small Python modules (a docstring, two
imports, a class with a method, a function; ~400 bytes, varied by index so no two are the same),
10% small text files (.txt, .md, .cfg). Deterministic: the same arguments give the same tree.
A marker DEST.complete (beside DEST, not in it) is written last, so that a half-written tree
is never mistaken for a whole one.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

FILES_PER_FOLDER = 100
FOLDERS_PER_PARENT = 100

PY_TEMPLATE = '''"""Module {i}: generated for the snakebatch benchmark."""
import os
from collections import {imp}

CONSTANT_{i} = {i}


class Thing{i}:
    """A class with one method."""

    def method(self, value, *, scale={s}):
        return value * scale + CONSTANT_{i}


def helper_{i}(path, count=0):
    # a comment line
    if count > {s}:
        return os.path.join(path, "x")
    return {imp}
'''
TEXT_SUFFIXES = (".txt", ".md", ".cfg")
IMPORTS = ("OrderedDict", "defaultdict", "deque", "Counter", "ChainMap")


def generate(dest: str, files: int) -> None:
    marker = dest.rstrip("/") + ".complete"
    if os.path.exists(marker):
        os.unlink(marker)
    os.makedirs(dest, exist_ok=True)
    for i in range(files):
        folder_index, slot = divmod(i, FILES_PER_FOLDER)
        parent, child = divmod(folder_index, FOLDERS_PER_PARENT)
        folder = os.path.join(dest, f"p{parent:03d}", f"m{child:02d}")
        if slot == 0:
            os.makedirs(folder, exist_ok=True)
        if i % 10 == 9:
            name = f"notes_{slot:02d}{TEXT_SUFFIXES[i % 3]}"
            data = (f"Notes for item {i}\n\n" + "line of text\n" * (1 + i % 7)).encode()
        else:
            name = f"mod_{slot:02d}.py"
            data = PY_TEMPLATE.format(i=i, s=i % 13, imp=IMPORTS[i % len(IMPORTS)]).encode()
        with open(os.path.join(folder, name), "wb") as fh:
            fh.write(data)
    with open(marker, "w") as fh:
        fh.write(f"{files}\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dest")
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--force", action="store_true", help="delete DEST first")
    args = ap.parse_args(argv)
    if args.force:
        shutil.rmtree(args.dest, ignore_errors=True)
    generate(args.dest, args.files)
    return 0


if __name__ == "__main__":
    sys.exit(main())
