"""The hard per-file time limit of the local pool: heartbeats written by workers, read by a watchdog.

Owns: the heartbeat format, the worker's side (`Heartbeat`: which file of which batch this
process is parsing, since when) and the coordinator's side (`Watchdog`: finds a worker stuck on
one file past `--file-timeout` plus a grace, and names it). Must not touch: the pool (the
coordinator kills through the executor) or what happens to the batch afterwards.

Why: the worker's own limit (SIGALRM) only fires when the interpreter gets control back; a
parser spinning in C (a long `sum`, a native extension) never gives it back. Heartbeats are
one small memory-mapped file per worker PID in a folder the coordinator owns (on /dev/shm
where there is one): a worker publishes a file start with one memory write, no system call.
"""

from __future__ import annotations

import mmap
import os
import shutil
import struct
import tempfile
import time

import msgspec

_FORMAT = struct.Struct("<qqqd")  # batch_id, attempt, file index (-1: between files), started
_SIZE = _FORMAT.size
_IDLE = -1


class Heartbeat:
    """A worker's heartbeat file, opened once per process and folder."""

    _open: dict = {}

    @classmethod
    def for_folder(cls, folder: str) -> Heartbeat | None:
        key = (os.getpid(), folder)
        heartbeat = cls._open.get(key)
        if heartbeat is None:
            try:
                heartbeat = cls(folder)
            except OSError:
                return None  # the coordinator went away or cleaned up; parse without one
            cls._open[key] = heartbeat
        return heartbeat

    def __init__(self, folder: str):
        path = os.path.join(folder, f"{os.getpid()}.hb")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            os.ftruncate(fd, _SIZE)
            self._map = mmap.mmap(fd, _SIZE)
        finally:
            os.close(fd)

    def parsing(self, batch_id: int, attempt: int, index: int) -> None:
        """This process starts (one attempt at) parsing file `index` of the batch now."""
        self._map[:_SIZE] = _FORMAT.pack(batch_id, attempt, index, time.monotonic())

    def between_files(self, batch_id: int, attempt: int) -> None:
        self._map[:_SIZE] = _FORMAT.pack(batch_id, attempt, _IDLE, time.monotonic())


class Stuck(msgspec.Struct, frozen=True):
    """A worker the watchdog found stuck on one file."""

    pid: int
    batch_id: int
    attempt: int
    index: int
    seconds: float


class Watchdog:
    """Reads the workers' heartbeats; `overdue(pids)` names workers stuck on one file too long."""

    def __init__(self, file_timeout: float):
        self.file_timeout = file_timeout
        # The grace lets the worker's own SIGALRM limit answer first when it can; the watchdog
        # is for parsers that never return to the interpreter.
        self.limit_s = file_timeout + max(1.0, 0.25 * file_timeout)
        shm = "/dev/shm"
        base = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None
        self.folder = tempfile.mkdtemp(prefix="snakebatch-heartbeats-", dir=base)
        self._seen: dict[int, tuple] = {}
        self.killed: dict[tuple[int, int], Stuck] = {}  # (batch_id, attempt) -> what was killed

    def _read(self, pid: int) -> tuple | None:
        try:
            with open(os.path.join(self.folder, f"{pid}.hb"), "rb") as fh:
                raw = fh.read(_SIZE)
        except OSError:
            return None
        if len(raw) != _SIZE:
            return None
        return _FORMAT.unpack(raw)

    def overdue(self, pids) -> list[Stuck]:
        """Workers parsing the same file for longer than the limit; each is reported once.

        A worker must show the same heartbeat on two checks in a row, so a record read half
        written never condemns it.
        """
        now = time.monotonic()
        stuck = []
        for pid in pids:
            beat = self._read(pid)
            previous, self._seen[pid] = self._seen.get(pid), beat
            if beat is None or beat != previous:
                continue
            batch_id, attempt, index, started = beat
            if index == _IDLE or now - started <= self.limit_s:
                continue
            if (batch_id, attempt) in self.killed:
                continue
            found = Stuck(pid=pid, batch_id=batch_id, attempt=attempt, index=index, seconds=round(now - started, 2))
            self.killed[(batch_id, attempt)] = found
            stuck.append(found)
        return stuck

    def take(self, batch_id: int, attempt: int) -> Stuck | None:
        """The kill that ended this batch attempt, if the watchdog made one (reported once)."""
        return self.killed.pop((batch_id, attempt), None)

    def reset(self) -> None:
        """The pool was replaced: forget every worker and every kill not yet accounted for."""
        self._seen.clear()
        self.killed.clear()
        for name in os.listdir(self.folder):
            try:
                os.unlink(os.path.join(self.folder, name))
            except OSError:
                pass

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
