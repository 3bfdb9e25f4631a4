"""The benchmark corpora, built on first use under one cache folder and reused afterwards.

    python benchmarks/corpora.py NAME...        # build (or find) and print their paths

Names: `stdlib` (6,000 .py files of the standard library and site-packages, copied into one
folder; /tmp/corpus6k is reused when it holds 6,000 files), `django` and `sympy` (their source
distributions from PyPI: `pip download --no-binary :all: --no-deps`, unpacked), `tree10k`,
`tree100k`, `tree1m` (generated small files, see gen_tree.py), or any existing folder.
The cache folder is $SNAKEBATCH_BENCH_DIR, by default /tmp/snakebatch-bench.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.environ.get("SNAKEBATCH_BENCH_DIR", "/tmp/snakebatch-bench")
STDLIB_FILES = 6000
REUSABLE_STDLIB = "/tmp/corpus6k"
TREES = {"tree10k": 10_000, "tree100k": 100_000, "tree1m": 1_000_000}
SDISTS = ("django", "sympy")


def _count_files(root: str) -> int:
    return sum(len(names) for _, _, names in os.walk(root))


def stdlib_corpus() -> str:
    if os.path.isdir(REUSABLE_STDLIB) and _count_files(REUSABLE_STDLIB) == STDLIB_FILES:
        return REUSABLE_STDLIB
    dest = os.path.join(CACHE, "stdlib6k")
    if os.path.isdir(dest) and _count_files(dest) == STDLIB_FILES:
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    roots = [sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"]]
    copied = 0
    for root in roots:
        for folder, dirs, names in os.walk(root):
            dirs.sort()
            for name in sorted(names):
                if not name.endswith(".py") or copied == STDLIB_FILES:
                    continue
                target = os.path.join(dest, f"d{copied // 100:02d}", f"{copied % 100:02d}_{name}")
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copyfile(os.path.join(folder, name), target)
                copied += 1
    return dest


def sdist_corpus(name: str) -> str:
    dest = os.path.join(CACHE, f"{name}-src")
    if os.path.isdir(dest) and os.listdir(dest):
        return dest
    downloads = os.path.join(CACHE, "sdists")
    os.makedirs(downloads, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:", "--no-deps",
                    "-d", downloads, name], check=True)
    archives = sorted(f for f in os.listdir(downloads) if f.lower().startswith(name.lower() + "-")
                      and f.endswith((".tar.gz", ".tgz")))
    if not archives:
        raise SystemExit(f"pip download {name} left no .tar.gz in {downloads}")
    tmp = dest + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    with tarfile.open(os.path.join(downloads, archives[-1])) as tar:
        tar.extractall(tmp, filter="data")
    os.replace(tmp, dest)
    return dest


def tree_corpus(name: str) -> str:
    dest = os.path.join(CACHE, name)
    if os.path.isdir(dest) and os.path.exists(dest + ".complete"):
        return dest
    subprocess.run([sys.executable, os.path.join(HERE, "gen_tree.py"), dest, "--files", str(TREES[name])],
                   check=True)
    return dest


def corpus(name: str) -> str:
    """The folder of a named corpus (built if needed), or `name` itself when it is a folder."""
    if name == "stdlib":
        return stdlib_corpus()
    if name in SDISTS:
        return sdist_corpus(name)
    if name in TREES:
        return tree_corpus(name)
    if os.path.isdir(name):
        return os.path.abspath(name)
    raise SystemExit(f"unknown corpus {name!r}: use stdlib, {', '.join(SDISTS)}, {', '.join(TREES)} or a folder")


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(arg, corpus(arg))
