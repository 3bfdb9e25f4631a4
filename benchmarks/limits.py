"""Where the limit is: `ast.parse` and AST visiting on preloaded bytes, one core, no I/O.

    python benchmarks/limits.py CORPUS [--json]

Every .py file of CORPUS is read into memory first; then, each over the whole corpus:
  parse_gc_on    bare ast.parse, the collector on (the default)
  parse_gc_off   bare ast.parse with gc disabled during the parse
  parse_walk     ast.parse + ast.walk over every node, picking definitions and imported names
                 (what a user writes), gc on
  parse_bodies   ast.parse + snakebatch's statement-body visit (parsers.python.extract), gc off
  parser         snakebatch's whole python parser (line counts, parse, extract, docstrings)
  read_hash      read each file from disk + xxh3-128 + git blob SHA-1 (the worker's I/O side)
compare.py runs this in a subprocess between the engines, so that its figures see the same load.
"""

from __future__ import annotations

import argparse
import ast
import gc
import hashlib
import json
import os
import sys
import time
import warnings

import xxhash

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from snakebatch.parsers.python import extract  # noqa: E402
from snakebatch.parsers.python import parser as python_parser

DEFINITION_TYPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
IMPORT_TYPES = (ast.Import, ast.ImportFrom)


def load(root: str) -> list[tuple[str, bytes]]:
    files = []
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path, "rb") as fh:
                    files.append((path, fh.read()))
    return files


def _parse(data: bytes):
    try:
        return ast.parse(data)
    except (SyntaxError, ValueError):
        return None


def parse_gc_on(files):
    for _, data in files:
        _parse(data)
    return 0


def parse_gc_off(files):
    for _, data in files:
        gc.disable()
        try:
            tree = _parse(data)
            del tree
        finally:
            gc.enable()
    return 0


def parse_walk(files):
    found = 0
    for _, data in files:
        tree = _parse(data)
        if tree is None:
            continue
        for node in ast.walk(tree):
            if isinstance(node, DEFINITION_TYPES):
                found += 1
            elif isinstance(node, IMPORT_TYPES):
                found += len(node.names)
    return found


def parse_bodies(files):
    found = 0
    for _, data in files:
        gc.disable()
        try:
            tree = _parse(data)
            if tree is None:
                continue
            definitions, imports = extract(tree)
            found += len(definitions) + len(imports)
            del tree
        finally:
            gc.enable()
    return found


def parser(files):
    found = 0
    for path, data in files:
        result = python_parser.parse(path, data)
        found += len(result.definitions)
    return found


def read_hash(files):
    total = 0
    for path, _ in files:
        with open(path, "rb") as fh:
            data = fh.read()
        xxhash.xxh3_128_hexdigest(data)
        hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        total += len(data)
    return total


MEASURES = (parse_gc_on, parse_gc_off, parse_walk, parse_bodies, parser, read_hash)


def measure(root: str) -> dict:
    files = load(root)
    nbytes = sum(len(d) for _, d in files)
    out = {"files": len(files), "bytes": nbytes}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for fn in MEASURES:
            started = time.perf_counter()
            found = fn(files)
            elapsed = time.perf_counter() - started
            out[fn.__name__] = {"s": elapsed, "files_per_s": len(files) / elapsed, "found": found}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    result = measure(args.corpus)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['files']} files, {result['bytes'] / 1e6:.1f} MB")
        for fn in MEASURES:
            m = result[fn.__name__]
            print(f"{fn.__name__:14s} {m['s']:7.2f} s {m['files_per_s']:8.0f} files/s  found {m['found']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
