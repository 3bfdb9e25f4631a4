"""The job's own folder `OUT/_snakebatch/`: identity, lock, stats and completion marker.

Owns: deciding whether OUT holds a job, `--fresh` / `--resume` / refusal, the OS lock that keeps
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

from . import __version__
from .config import JOB_OPTION_NAMES, JobConfig, RunConfig
from .errors import ConfigError, JobError
from .schema import TABLES

STATE = "_snakebatch"


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


def _atomic_write(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


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
            holder = _holder_pid(fd)
            os.close(fd)
            raise JobError(_held_message(holder, os.path.dirname(os.path.dirname(self.path)))) from None
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


def _holder_pid(fd: int) -> str:
    """The PID holding the exclusive flock on `fd`'s file, "" when unknown.

    The kernel's table of locks (Linux's /proc/locks) names the holder exactly; the PID a holder
    writes into the file may not be there yet (a run between its flock and its write, when two
    start at once) or be an earlier, dead run's, so it is only the fallback elsewhere."""
    st = os.fstat(fd)
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks") as fh:
            for line in fh:
                # "1: FLOCK  ADVISORY  WRITE 4242 fe:00:2154506 0 EOF"; a waiter's line has "->".
                fields = line.split()
                if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == key and fields[4] != "0":
                    return fields[4]
    except OSError:
        pass
    return _read_pid(fd)


def _held_message(holder: str, out: str) -> str:
    who = f"PID {holder}" if holder else "its PID not recorded yet"
    return f"another snakebatch run ({who}) is writing {out}; wait for it to finish or stop it first"


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
            return _holder_pid(fd) or "?"
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
    same job (same options that change rows).
    """
    out = config.output
    source_real = os.path.realpath(config.job.source)
    out_real = os.path.realpath(out)
    if out_real == source_real:
        raise ConfigError("-o/--output: OUT must not be SOURCE itself; use a folder beside or inside it")
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"-o/--output: {out} exists and is not a folder")
    if os.path.islink(out) and not os.path.exists(out):
        raise ConfigError(f"-o/--output: {out} is a symbolic link to {os.readlink(out)!r}, which does not exist; "
                          "create that folder or give another OUT")
    holder = lock_holder(out)
    if holder is not None:
        raise JobError(_held_message("" if holder == "?" else holder, out))
    exists = holds_job(out)
    if config.mode == "resume":
        if not exists:
            raise ConfigError(f"--resume: {out} holds no snakebatch job to resume; run without --resume to start one")
    elif exists and config.mode == "new":
        raise ConfigError(
            f"{out} already holds a snakebatch job: add --resume to continue it, or --fresh to delete it and start over"
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
        if exists:
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
            _atomic_write(os.path.join(state_dir(out), "job.json"), msgspec.json.encode(record))
    except BaseException:
        lock.release()
        raise
    return lock


def write_json(out: str, name: str, obj: object) -> None:
    _atomic_write(os.path.join(state_dir(out), name), msgspec.json.format(msgspec.json.encode(obj)))


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
