"""The job's own folder `OUT/_snakebatch/`: identity, lock, stats and completion marker.

Owns: deciding whether OUT holds a job, `--fresh` / `--resume` / `--refresh` / refusal, the OS
lock that keeps two runs off one OUT (on the folder `_snakebatch` itself, with the holder's PID in
its `lock`), `job.json` (the options that change rows), `stats.json` and `complete.json`.
Must not touch: the ledger's entries or the table parts (store/ledger.py owns those).
"""

from __future__ import annotations

import fcntl
import os
import shlex
import shutil
import time

import msgspec

from .._version import __version__
from ..config import JOB_OPTION_NAMES, JobConfig, RunConfig, is_object_output
from ..errors import ConfigError, JobError
from ..schema import TABLES
from .durable import atomic_write
from .layout import STATE_DIR_NAME as STATE
from .ledger import remove_tables


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
    if job.since is not None:
        words += ["--revs", f"{job.since}..{job.commit}"]
    elif job.commit is not None:
        words += ["--rev", job.commit] + (["--history"] if job.history else [])
    return words


def source_arguments(job: JobConfig) -> list[str]:
    """The SOURCE arguments of `job`: its one folder, or each of its several sources as given
    (absolute; a git revision as REPO@REV, the REV as written, which its label holds)."""
    if len(job.sources) <= 1:
        return [job.source]
    return [spec.path if spec.rev is None else f"{spec.path}@{spec.rev}" for spec in job.sources]


def resume_command(job: JobConfig, output: str) -> str:
    """The exact command that resumes this job: `--resume` refuses different row-changing
    options, so they are all spelled out."""
    words = ["snakebatch", "run", *source_arguments(job), "-o", output, "--resume", *job_arguments(job)]
    return shlex.join(words)


class JobLock:
    """An exclusive `flock` on the state folder OUT/_snakebatch itself, with the holder's PID in
    OUT/_snakebatch/lock; the OS releases it when the process dies.

    Why the folder and not the `lock` file: a file's lock dies with its name, so deleting the
    file lets the next run lock a new one and write the same OUT. The folder cannot be deleted
    while it holds the job; if it is moved away or removed whole, the next run finds no job
    there and is refused anyway. The holder checks before each commit that the folder and its
    PID file at OUT are still the ones it locked and wrote (`check`), and stops, resumable,
    when they are not."""

    def __init__(self, out: str):
        self.out = out
        self.folder = state_dir(out)
        self.path = os.path.join(self.folder, "lock")
        self.folder_fd: int | None = None
        self.fd: int | None = None

    def acquire(self) -> None:
        folder_fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(folder_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder_pid(self.folder, folder_fd)
            os.close(folder_fd)
            raise JobError(_held_message(holder, self.out)) from None
        self.folder_fd = folder_fd
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, str(os.getpid()).encode(), 0)
            self.check()  # the folder may have been replaced between its open and its lock
        except BaseException:
            self.release()
            raise

    def check(self) -> None:
        """JobError unless the state folder and the PID file at OUT are still this lock's."""
        for fd, path in ((self.folder_fd, self.folder), (self.fd, self.path)):
            held = os.fstat(fd)
            try:
                now = os.stat(path)
            except OSError:
                now = None
            if now is None or (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino):
                raise JobError(
                    f"the job's lock in {self.folder} was {'removed' if now is None else 'replaced'} while this "
                    "run held it: stopped so as not to write where another run may be writing now"
                )

    def release(self) -> None:
        for fd in (self.fd, self.folder_fd):
            if fd is not None:
                os.close(fd)
        self.fd = self.folder_fd = None


def _holder_pid(folder: str, folder_fd: int) -> str:
    """The PID holding the exclusive flock on the state folder `folder` (open as `folder_fd`),
    "" when unknown.

    The kernel's table of locks (Linux's /proc/locks) names the holder exactly; the PID a holder
    writes into its `lock` file may not be there yet (a run between its flock and its write, when
    two start at once), be an earlier, dead run's, or be deleted, so it is only the fallback."""
    st = os.fstat(folder_fd)
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
    try:
        with open(os.path.join(folder, "lock"), "rb") as fh:
            return fh.read(32).decode().strip()
    except (OSError, UnicodeDecodeError):
        return ""


def _held_message(holder: str, out: str) -> str:
    who = f"PID {holder}" if holder else "its PID not recorded yet"
    return f"another snakebatch run ({who}) is writing {out}; wait for it to finish or stop it first"


def lock_holder(out: str) -> str | None:
    """The PID holding OUT's lock, or None when no run holds it."""
    try:
        fd = os.open(state_dir(out), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder_pid(state_dir(out), fd) or "?"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def job_differences(old: JobConfig, new: JobConfig) -> list[str]:
    return [
        f"{JOB_OPTION_NAMES[name]} (job: {getattr(old, name)!r}, now: {getattr(new, name)!r})"
        for name in JobConfig.__struct_fields__
        if getattr(old, name) != getattr(new, name)
    ]


def _foreign_state(out: str) -> bool:
    """Whether OUT holds a `_snakebatch` that no run created (no lock file in it)."""
    state = state_dir(out)
    if not os.path.lexists(state):
        return False
    if os.path.islink(state) or not os.path.isdir(state):
        return True
    return bool(os.listdir(state)) and not os.path.isfile(os.path.join(state, "lock"))


def _clear_state(out: str) -> None:
    """Remove what an earlier job (or a run killed before it recorded its job) left in the
    state folder, except the lock this run holds."""
    for name in os.listdir(state_dir(out)):
        if name != "lock":
            path = os.path.join(state_dir(out), name)
            shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)


def _inside(path: str, folder: str) -> bool:
    """Whether `path` lies strictly inside `folder` (both real paths)."""
    return path != folder and os.path.commonpath([path, folder]) == folder


def _job_around(out_real: str) -> str | None:
    """The job folder one of whose table or state folders holds `out_real` (or is it), if any."""
    child, parent = out_real, os.path.dirname(out_real)
    while parent != child:
        if os.path.basename(child) in (*TABLES, STATE) and holds_job(parent):
            return parent
        child, parent = parent, os.path.dirname(parent)
    return None


def open_job(config: RunConfig) -> JobLock:
    """Prepare OUT for this run as its mode says, and take its lock. Returns the held lock.

    new: OUT must not hold a job; fresh: delete a job in OUT first; resume: OUT must hold the
    same job (same options that change rows); refresh: OUT must hold a job of the same SOURCE.
    """
    out = config.output
    out_real = os.path.realpath(out)
    for spec in config.job.sources:
        if is_object_output(spec.path):
            continue  # a SOURCE in object storage (a URL) is never a local folder
        if out_real == os.path.realpath(spec.path):
            raise ConfigError("-o/--output: OUT must not be SOURCE itself; use a folder beside or inside it")
        if _inside(os.path.realpath(spec.path), out_real):
            # --fresh, recovery and compaction clean OUT's folders: SOURCE must not be among them.
            raise ConfigError(f"SOURCE {spec.path} is inside OUT {out}: choose an OUT outside SOURCE "
                              "(beside or inside it), or move SOURCE out of OUT")
    job_folder = _job_around(out_real)
    if job_folder is not None:
        raise ConfigError(f"-o/--output: {out} is inside the job folder {job_folder}'s own folders "
                          f"({', '.join(TABLES)}, {STATE}), which snakebatch cleans; choose another folder")
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"-o/--output: {out} exists and is not a folder")
    if os.path.islink(out) and not os.path.exists(out):
        raise ConfigError(f"-o/--output: {out} is a symbolic link to {os.readlink(out)!r}, which does not exist; "
                          "create that folder or give another OUT")
    holder = lock_holder(out)
    if holder is not None:
        raise JobError(_held_message("" if holder == "?" else holder, out))
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
    elif not exists and os.path.isdir(out) and (set(os.listdir(out)) - {STATE} or _foreign_state(out)):
        # A bare `_snakebatch/` with a lock is a run killed before it recorded its job: nothing
        # to keep. Without the lock (the first file a run creates) it is not snakebatch's.
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
            remove_tables(out)
            exists = False
        if exists and not read_record(out).job.sources:
            raise ConfigError(f"--{config.mode}: {out} holds a job written by an earlier snakebatch, whose tables "
                              "have no `source` column; start over with --fresh")
        if exists and config.mode == "refresh":
            # A refresh may change any option; engine/refresh.py records the new ones.
            record = read_record(out)
            if os.path.realpath(record.job.source) != os.path.realpath(config.job.source):
                raise ConfigError(f"--refresh: {out} holds the job of {record.job.source}, not of {config.job.source}; "
                                  "refresh it with its own SOURCE, or start over with --fresh")
        elif exists:
            record = read_record(out)
            diffs = job_differences(record.job, config.job)
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
