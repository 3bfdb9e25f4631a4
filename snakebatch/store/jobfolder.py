"""The job's own folder `OUT/_snakebatch/`: identity, lock, stats and completion marker.

Owns: deciding whether OUT holds a job, `--fresh` / `--resume` / `--refresh` / refusal, the OS lock that keeps
two runs off one OUT, `job.json` (the options that change rows), `stats.json` and `complete.json`.
Must not touch: the ledger's entries or the table parts (ledger.py owns those).
"""

from __future__ import annotations

import fcntl
import os
import shlex
import shutil
import time

import msgspec

from .._version import __version__
from ..config import JOB_OPTION_NAMES, JobConfig, RunConfig
from ..errors import ConfigError, JobError
from ..schema import TABLES
from .durable import atomic_write
from .layout import STATE_DIR_NAME as STATE


class JobRecord(msgspec.Struct):
    """`job.json`: what the job is, written once when it starts."""

    job: JobConfig
    snakebatch_version: str
    created_at: float
    command: list = msgspec.field(default_factory=list)


def state_dir(out: str) -> str:
    return os.path.join(out, STATE)


def holds_job(out: str) -> bool:
    return os.path.isfile(os.path.join(state_dir(out), "job.json"))


def read_record(out: str) -> JobRecord:
    path = os.path.join(state_dir(out), "job.json")
    try:
        with open(path, "rb") as fh:
            return msgspec.json.decode(fh.read(), type=JobRecord)
    except FileNotFoundError:
        raise ConfigError(f"{out} holds no snakebatch job (no {STATE}/job.json)") from None
    except (OSError, msgspec.DecodeError) as err:
        raise JobError(f"{path} is unreadable ({err}); start over with --fresh") from None


def job_arguments(job: JobConfig) -> list[str]:
    """The command-line options that give `job`'s row-changing values (defaults left out)."""
    default = JobConfig(source=job.source)
    words: list[str] = []
    for pattern in job.include:
        words += ["--include", pattern]
    for pattern in job.exclude:
        words += ["--exclude", pattern]
    if not job.gitignore:
        words.append("--no-gitignore")
    if job.follow_symlinks:
        words.append("--follow-symlinks")
    if job.max_file_size != default.max_file_size:
        words += ["--max-file-size", str(job.max_file_size)]
    for spec in job.parsers:
        words += ["--parser", spec]
    if job.content:
        words.append("--content")
    return words


def resume_command(job: JobConfig, output: str) -> str:
    """The exact command that resumes this job: `--resume` refuses different row-changing
    options, so they are all spelled out."""
    words = ["snakebatch", "run", job.source, "-o", output, "--resume", *job_arguments(job)]
    return shlex.join(words)


class JobLock:
    """An exclusive `flock` on OUT/_snakebatch/lock, released by the OS when the process dies."""

    def __init__(self, out: str):
        self.path = os.path.join(state_dir(out), "lock")
        self.fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise JobError(
                f"another snakebatch run (PID {holder or '?'}) is writing {os.path.dirname(os.path.dirname(self.path))}; "
                "wait for it to finish or stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _read_pid(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return ""


def lock_holder(out: str) -> str | None:
    """The PID holding OUT's lock, or None when no run holds it."""
    path = os.path.join(state_dir(out), "lock")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd) or "?"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _differences(old: JobConfig, new: JobConfig) -> list[str]:
    return [
        f"{JOB_OPTION_NAMES[name]} (job: {getattr(old, name)!r}, now: {getattr(new, name)!r})"
        for name in JobConfig.__struct_fields__
        if getattr(old, name) != getattr(new, name)
    ]


def _clear_state(out: str) -> None:
    """Remove what an earlier job (or a run killed before it recorded its job) left in the
    state folder, except the lock this run holds."""
    for name in os.listdir(state_dir(out)):
        if name != "lock":
            path = os.path.join(state_dir(out), name)
            shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)


def open_job(config: RunConfig) -> JobLock:
    """Prepare OUT for this run as its mode says, and take its lock. Returns the held lock.

    new: OUT must not hold a job; fresh: delete a job in OUT first; resume: OUT must hold the
    same job (same options that change rows); refresh: OUT must hold a job of the same SOURCE.
    """
    out = config.output
    source_real = os.path.realpath(config.job.source)
    out_real = os.path.realpath(out)
    if out_real == source_real:
        raise ConfigError("-o/--output: OUT must not be SOURCE itself; use a folder beside or inside it")
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"-o/--output: {out} exists and is not a folder")
    holder = lock_holder(out)
    if holder is not None:
        raise JobError(
            f"another snakebatch run (PID {holder}) is writing {out}; wait for it to finish or stop it first"
        )
    exists = holds_job(out)
    if config.mode in ("resume", "refresh"):
        if not exists:
            raise ConfigError(f"--{config.mode}: {out} holds no snakebatch job to {config.mode}; "
                              f"run without --{config.mode} to start one")
    elif exists and config.mode == "new":
        raise ConfigError(
            f"{out} already holds a snakebatch job: add --resume to continue it, --refresh to bring it up to date "
            "with SOURCE as it is now, or --fresh to delete it and start over"
        )
    elif not exists and os.path.isdir(out) and set(os.listdir(out)) - {STATE}:
        # A bare `_snakebatch/` is a run killed before it recorded its job: nothing to keep.
        raise ConfigError(
            f"-o/--output: {out} is not empty and holds no snakebatch job; choose an empty or new folder"
        )
    os.makedirs(state_dir(out), exist_ok=True)
    lock = JobLock(out)
    lock.acquire()
    try:
        if holds_job(out) != exists:
            # Another run started or replaced the job between our look and our lock.
            raise JobError(f"{out} changed while this run was starting (another snakebatch run?); try again")
        if config.mode == "fresh" and exists:
            for name in os.listdir(out):
                if name == STATE:
                    continue
                path = os.path.join(out, name)
                if name in TABLES and os.path.isdir(path):
                    shutil.rmtree(path)
            exists = False
        if exists and config.mode == "refresh":
            # A refresh may change any option; engine/refresh.py records the new ones.
            record = read_record(out)
            if os.path.realpath(record.job.source) != source_real:
                raise ConfigError(f"--refresh: {out} holds the job of {record.job.source}, not of {config.job.source}; "
                                  "refresh it with its own SOURCE, or start over with --fresh")
        elif exists:
            record = read_record(out)
            diffs = _differences(record.job, config.job)
            if diffs:
                raise ConfigError(
                    "--resume: these options differ from the job's, and would change its rows: "
                    + "; ".join(diffs)
                    + ". Resume with the job's values, or start over with --fresh"
                )
        else:
            _clear_state(out)
            record = JobRecord(job=config.job, snakebatch_version=__version__, created_at=time.time())
            atomic_write(os.path.join(state_dir(out), "job.json"), msgspec.json.encode(record))
    except BaseException:
        lock.release()
        raise
    return lock


def write_json(out: str, name: str, obj: object) -> None:
    atomic_write(os.path.join(state_dir(out), name), msgspec.json.format(msgspec.json.encode(obj)))


def read_json(out: str, name: str):
    try:
        with open(os.path.join(state_dir(out), name), "rb") as fh:
            return msgspec.json.decode(fh.read())
    except (OSError, msgspec.DecodeError):
        return None


def clear_complete(out: str) -> None:
    try:
        os.unlink(os.path.join(state_dir(out), "complete.json"))
    except FileNotFoundError:
        pass
