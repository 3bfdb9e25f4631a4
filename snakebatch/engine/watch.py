"""`snakebatch watch`: SOURCE's file events turned into rounds of candidate paths, and one pool
kept warm across the rounds.

Owns: the watchfiles watcher (the optional extra `snakebatch[watch]`), debouncing, which events
count (not OUT's own writes, not inside VCS folders), when a round walks the whole tree (the
first one, a round of events that may have overflowed, a watcher that failed), and the executor
every round's coordinator borrows. Must not touch: how a round refreshes (engine/refresh.py
plans it from the candidate paths) or anything in OUT.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator

from ..config import RunConfig
from ..errors import ConfigError
from ..executors import make_executor
from ..executors.base import Executor
from .discovery import VCS_FOLDERS

WATCH_EXTRA_MISSING = "snakebatch watch needs the extra: pip install 'snakebatch[watch]'"
TICK_MS = 100  # how often the watcher hands over what it saw (and a stop is noticed)
# inotify drops events past its queue (fs.inotify.max_queued_events, 16384 by default), and
# watchfiles 1.x does not pass the overflow notice on; a round this large may have lost some,
# so it walks the whole tree.
OVERFLOW_PATHS = 4096


def load_watchfiles():
    """The watchfiles module; ConfigError naming the extra when it is not installed."""
    try:
        import watchfiles
    except ImportError:
        raise ConfigError(WATCH_EXTRA_MISSING) from None
    return watchfiles


class Events:
    """Rounds of changed paths under SOURCE: None for "walk everything", else a set of paths
    relative to SOURCE. A round is handed over once `debounce_s` passed without a new event."""

    def __init__(self, source: str, output: str, debounce_s: float, stop: threading.Event):
        self.watchfiles = load_watchfiles()
        self.root = os.path.realpath(source)
        self.out = os.path.realpath(output) + os.sep
        self.debounce_s = debounce_s
        self.stop = stop

    def _relevant(self, changes) -> set[str]:
        paths = set()
        for _, path in changes:
            if path.startswith(self.out) or path + os.sep == self.out:
                continue  # OUT inside SOURCE: the rounds' own writes
            rel = os.path.relpath(path, self.root).replace(os.sep, "/")
            if rel == "." or rel.startswith("../") or not VCS_FOLDERS.isdisjoint(rel.split("/")):
                continue
            paths.add(rel)
        return paths

    def _watcher(self) -> Iterator[set]:
        return self.watchfiles.watch(self.root, watch_filter=None, debounce=TICK_MS, step=min(50, TICK_MS),
                                     rust_timeout=TICK_MS, yield_on_timeout=True, stop_event=self.stop,
                                     raise_interrupt=False)

    def rounds(self) -> Iterator[set[str] | None]:
        watcher = self._watcher()
        pending: set[str] = set()
        try:
            pending |= self._relevant(next(watcher, set()))  # the watcher is running from here on
        except RuntimeError:
            pass  # the full walk below sees it all
        yield None  # the first round walks: SOURCE changed while nothing watched
        full = False
        last = time.monotonic()
        while not self.stop.is_set():
            try:
                changes = next(watcher, None)
            except RuntimeError:  # the watcher failed ("error in underlying watcher"): start over
                watcher, full, last = self._watcher(), True, time.monotonic()
                continue
            if changes is None:
                return  # stopped
            now = time.monotonic()
            seen = self._relevant(changes)
            if seen:
                pending |= seen
                last = now
            if (pending or full) and now - last >= self.debounce_s and not self.stop.is_set():
                walk = full or len(pending) >= OVERFLOW_PATHS
                yield None if walk else pending
                pending, full = set(), False


class WarmExecutor:
    """One executor lent to every round's coordinator (an `Executor`): a coordinator's shutdown
    keeps its workers for the next round, except after a kill, which leaves fresh ones."""

    def __init__(self, config: RunConfig):
        self.inner = make_executor(config)
        self.workers = self.inner.workers
        self.memory_limit = self.inner.memory_limit
        self.runs_heartbeats = self.inner.runs_heartbeats

    def factory(self) -> Callable[[RunConfig], Executor]:
        return lambda config: self

    def submit(self, fn, task):
        return self.inner.submit(fn, task)

    def worker_pids(self) -> list[int]:
        return self.inner.worker_pids()

    def memory_rss(self) -> int | None:
        return self.inner.memory_rss()

    def kill_worker(self, pid: int) -> None:
        self.inner.kill_worker(pid)

    def recycle(self) -> bool:
        return self.inner.recycle()

    def rebuild(self) -> None:
        self.inner.rebuild()

    def shutdown(self, kill: bool = False) -> None:
        if kill:  # a round stopped at once: its batches go down with the workers
            self.inner.rebuild()

    def close(self) -> None:
        self.inner.shutdown()
