"""A real corpus for the API, config and plan tests: a few hundred standard-library files
(Python, text, icons, lib2to3's deliberately broken test data) copied once per session."""

from __future__ import annotations

import shutil
import sysconfig
from pathlib import Path

STDLIB_PACKAGES = ("asyncio", "email", "json", "xml", "importlib", "idlelib", "wsgiref", "lib2to3")


def copy_stdlib_corpus(dest: Path) -> Path:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for name in STDLIB_PACKAGES:
        shutil.copytree(stdlib / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def files_on_disk(root: Path) -> list[str]:
    """Every regular file under root, as snakebatch names them (no .gitignore in this corpus)."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and not p.is_symlink())
