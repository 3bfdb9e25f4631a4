"""Shared fixtures: run the real CLI in a subprocess, read output back with pyarrow and DuckDB."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as ds
import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_repos"


def cli_env(pythonpath=(), **extra) -> dict:
    """The environment of a CLI subprocess: this checkout (and `pythonpath`) importable."""
    env = dict(os.environ)
    paths = [str(ROOT), *map(str, pythonpath), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env.update(extra)
    return env


def run_cli(*args, check_codes=None, timeout=600, pythonpath=(), env_extra=None, **kwargs) -> subprocess.CompletedProcess:
    """`snakebatch ARGS` in a subprocess, from this checkout; returns the finished process."""
    proc = subprocess.run(
        [sys.executable, "-m", "snakebatch", *map(str, args)],
        capture_output=True, text=True, env=cli_env(pythonpath, **(env_extra or {})), timeout=timeout, **kwargs,
    )
    if check_codes is not None and proc.returncode not in check_codes:
        raise AssertionError(
            f"snakebatch {' '.join(map(str, args))} exited {proc.returncode}\n"
            f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        )
    return proc


def read_table(out: Path, table: str):
    """The committed rows of a table, read with pyarrow.dataset as any reader would."""
    return ds.dataset(str(Path(out) / table), format="parquet").to_table()


@pytest.fixture
def cli():
    return run_cli


def stdlib_dir() -> Path:
    import sysconfig

    return Path(sysconfig.get_paths()["stdlib"])
