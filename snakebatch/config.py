"""The one typed configuration of a job, validated once at the edge.

Owns: `JobConfig` (the options that change the rows: the job's identity on resume) and
`RunConfig` (how this run executes them), parsing of sizes, `snakebatch.toml` /
`[tool.snakebatch]` defaults, and every ConfigError for a bad option. The CLI and the Python API
both call `build_config`; nothing past it re-validates or reads options from anywhere else.
"""

from __future__ import annotations

import importlib.util
import os
import re
import tomllib
from typing import Literal

import msgspec
import psutil

from .errors import ConfigError

DASK_EXTRA_MISSING = "--executor dask needs the extra: pip install 'snakebatch[dask]'"

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)(b?)\s*$", re.I)
_SCHEDULER = re.compile(r"^(?:[a-z]+://)?(?:\[[0-9a-f:.]+\]|[^\s:/\[\]]+):\d{1,5}/?$", re.I)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


def parse_size(value: object, option: str) -> int:
    """Bytes from `512MB`, `2GiB`, `100k` or a plain number; ConfigError naming `option` otherwise."""
    if isinstance(value, bool):
        value = str(value)
    if isinstance(value, (int, float)):
        number, unit, binary, bytes_suffix = float(value), "", "", ""
    else:
        match = _SIZE.match(str(value))
        if not match:
            raise ConfigError(
                f"{option}: {value!r} is not a size; use a number of bytes or e.g. 512MB, 2GiB, 100k"
            )
        number, unit, binary, bytes_suffix = (
            float(match.group(1)), match.group(2).lower(), match.group(3), match.group(4))
    if number <= 0:
        raise ConfigError(f"{option}: {value!r} must be larger than zero (e.g. 512MB, 2GiB)")
    # KB, MB are decimal as disk vendors write them; KiB, MiB and a bare k, M are binary.
    base = 1024 if binary or not bytes_suffix else 1000
    return int(number * base ** _POWERS[unit])


class JobConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a job is: every option that changes its rows. `--resume` must find the same values."""

    source: str
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    gitignore: bool = True
    follow_symlinks: bool = False
    max_file_size: int = 16 * 1024 * 1024
    parsers: tuple[str, ...] = ()
    content: bool = False


# The JobConfig fields as the command line names them, for messages about a changed option.
JOB_OPTION_NAMES = {
    "source": "SOURCE",
    "include": "--include",
    "exclude": "--exclude",
    "gitignore": "--no-gitignore",
    "follow_symlinks": "--follow-symlinks",
    "max_file_size": "--max-file-size",
    "parsers": "--parser",
    "content": "--content",
}


class RunConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How one run executes a job; these may change freely between a run and its resume."""

    job: JobConfig
    output: str
    mode: Literal["new", "resume", "fresh"] = "new"
    workers: int = 1
    memory_budget: int = 1 << 30
    batch_bytes: int | None = None
    file_timeout: float = 60.0
    retries: int = 1
    fail_fast: bool = False
    max_errors: int | None = None
    executor: Literal["local", "dask"] = "local"
    scheduler: str | None = None
    progress: bool | None = None


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_memory_budget() -> int:
    return psutil.virtual_memory().available // 2


def file_defaults(source: str) -> dict:
    """Options from `SOURCE/snakebatch.toml`, or else `[tool.snakebatch]` in `SOURCE/pyproject.toml`."""
    for name, section in (("snakebatch.toml", None), ("pyproject.toml", ("tool", "snakebatch"))):
        path = os.path.join(source, name)
        if not os.path.isfile(path):
            continue
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise ConfigError(f"{path}: cannot read it as TOML ({err})") from None
        for key in section or ():
            data = data.get(key, {})
        if data:
            if not isinstance(data, dict):
                raise ConfigError(f"{path}: [tool.snakebatch] must be a table")
            return {k.replace("-", "_"): v for k, v in data.items()}
    return {}


_JOB_KEYS = set(JobConfig.__struct_fields__) - {"source"}
_RUN_KEYS = set(RunConfig.__struct_fields__) - {"job", "output", "mode"}


def _as_tuple(value: object, option: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"{option}: expected a pattern or a list of patterns, got {value!r}")


def _positive_int(value: object, option: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConfigError(f"{option}: expected a whole number >= {minimum}, got {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{option}: expected a whole number >= {minimum}, got {value!r}") from None
    if number < minimum:
        raise ConfigError(f"{option}: must be at least {minimum}, got {number}")
    return number


def build_config(source: str | os.PathLike, output: str | os.PathLike | None = None, *,
                 resume: bool = False, fresh: bool = False, use_config_file: bool = True,
                 require_output: bool = True, **options) -> RunConfig:
    """The validated RunConfig for `source` and `options` (CLI/API names, `_` for `-`)."""
    if resume and fresh:
        raise ConfigError("--resume and --fresh exclude each other: choose one")
    source_path = os.path.abspath(os.fspath(source))
    if not os.path.exists(source_path):
        raise ConfigError(f"SOURCE: {os.fspath(source)!r} does not exist")
    if not os.path.isdir(source_path):
        raise ConfigError(f"SOURCE: {os.fspath(source)!r} is not a folder")
    unknown = set(options) - _JOB_KEYS - _RUN_KEYS - {"on_progress"}
    if unknown:
        raise ConfigError(f"unknown option(s): {', '.join(sorted(unknown))}")
    merged = file_defaults(source_path) if use_config_file else {}
    unknown_in_file = set(merged) - _JOB_KEYS - _RUN_KEYS
    if unknown_in_file:
        raise ConfigError(f"snakebatch.toml / [tool.snakebatch]: unknown option(s): {', '.join(sorted(unknown_in_file))}")
    merged.update({k: v for k, v in options.items() if v is not None and k != "on_progress"})

    job = JobConfig(
        source=source_path,
        include=_as_tuple(merged.get("include"), "--include"),
        exclude=_as_tuple(merged.get("exclude"), "--exclude"),
        gitignore=bool(merged.get("gitignore", True)),
        follow_symlinks=bool(merged.get("follow_symlinks", False)),
        max_file_size=parse_size(merged.get("max_file_size", "16MiB"), "--max-file-size"),
        parsers=_as_tuple(merged.get("parsers"), "--parser"),
        content=bool(merged.get("content", False)),
    )
    from .parsers import resolve

    for spec in job.parsers:
        resolve(spec)  # raises ConfigError for an unknown name or a bad module:attribute

    executor = merged.get("executor", "local")
    if executor not in ("local", "dask"):
        raise ConfigError(f"--executor: {executor!r} is not one of local, dask")
    scheduler = merged.get("scheduler")
    if scheduler is not None and executor != "dask":
        raise ConfigError("--scheduler needs --executor dask")
    if scheduler is not None and not _SCHEDULER.match(str(scheduler)):
        raise ConfigError(f"--scheduler: {scheduler!r} is not a Dask scheduler address like tcp://HOST:PORT")
    if executor == "dask" and importlib.util.find_spec("distributed") is None:
        raise ConfigError(DASK_EXTRA_MISSING)
    max_errors = merged.get("max_errors")
    file_timeout = merged.get("file_timeout", 60.0)
    try:
        file_timeout = float(file_timeout)
    except (TypeError, ValueError):
        raise ConfigError(f"--file-timeout: expected seconds, got {file_timeout!r}") from None
    if not file_timeout > 0:
        raise ConfigError(f"--file-timeout: must be more than 0 seconds, got {file_timeout}")
    out = output if output is not None else merged.get("output")
    if out is None:
        if require_output:
            out = "snakebatch-out"
        else:
            out = ""
    return RunConfig(
        job=job,
        output=os.path.abspath(os.fspath(out)) if out else "",
        mode="resume" if resume else "fresh" if fresh else "new",
        workers=_positive_int(merged.get("workers", usable_cores()), "--workers"),
        memory_budget=parse_size(merged["memory_budget"], "--memory-budget")
        if "memory_budget" in merged else default_memory_budget(),
        batch_bytes=parse_size(merged["batch_bytes"], "--batch-bytes") if "batch_bytes" in merged else None,
        file_timeout=file_timeout,
        retries=_positive_int(merged.get("retries", 1), "--retries", minimum=0),
        fail_fast=bool(merged.get("fail_fast", False)),
        max_errors=None if max_errors is None else _positive_int(max_errors, "--max-errors"),
        executor=executor,
        scheduler=scheduler,
        progress=merged.get("progress"),
    )
