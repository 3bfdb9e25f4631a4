"""The serial fraction of a run: how long its workers were not all busy, and why.

Owns: turning a run's timeline (the moments the coordinator noted) and the workers' busy
intervals (each batch's start and end on its worker's clock) into seconds per cause, and when
this process started. Must not touch: anything it is not handed.

The serial time is the run's wall time not covered by workers, with each moment weighted by the
share of the N workers idle then: the integral of (N - busy) / N. So wall = serial + busy
worker-seconds / N, and an Amdahl fit's serial term is this figure. Causes, by when the idle
share fell:

- `interpreter_imports`: from the process's start to the run's (the interpreter, imports, opening
  OUT and recovering its ledger; in an embedding script, whatever ran before the call);
- `pool_start`: starting the executor, and then each worker slot until its first batch begins;
- `discovery`: the rest of the time before the first batch was submitted;
- `between_batches`: a started worker idle while discovery still runs (waiting for the
  coordinator to plan, submit or commit);
- `tail`: a started worker idle after discovery ended (the last batches);
- `compaction`: merging the complete job's parts after its last batch. What a compaction begun in
  the tail (store/compaction.py EarlyCompaction) did while batches still ran is not a cause: its
  seconds are `compaction_overlapped_s`, beside the causes (workers idle meanwhile count as `tail`);
- `exit`: from the last worker's end to the summary (committing the last batch, stopping the
  pool) and after compaction. The interpreter's own exit after the summary is not in it.
"""

from __future__ import annotations

import os
import time

import msgspec
import psutil

CAUSES = ("interpreter_imports", "pool_start", "discovery", "between_batches", "tail", "compaction", "exit")


def process_started() -> float:
    """When this process started, on the wall clock.

    psutil's create_time adds the start tick to the boot time, which Linux gives in whole seconds
    (up to 1 s off: 0.9 s measured for a process 30 ms old); the process's age from /proc
    (uptime less the start tick, 10 ms resolution) is subtracted from now instead."""
    try:
        with open("/proc/self/stat", "rb") as f:
            start_ticks = int(f.read().rsplit(b")", 1)[1].split()[19])
        with open("/proc/uptime", "rb") as f:
            uptime = float(f.read().split()[0])
        return time.time() - max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):  # not Linux
        return psutil.Process().create_time()


class Timeline(msgspec.Struct):
    """Wall-clock moments (time.time()) of a run; 0.0 where a moment never came."""

    process_started: float  # the process's creation (psutil)
    run_started: float  # the coordinator constructed
    pool_s: float = 0.0  # seconds spent starting the executor before the first submit
    first_submit: float = 0.0
    discovery_done: float = 0.0
    run_ended: float = 0.0  # the loop ended and the pool is stopped
    compaction_started: float = 0.0
    compaction_ended: float = 0.0
    compaction_overlapped_s: float = 0.0  # compaction done while the last batches ran (not serial)
    summary_at: float = 0.0


def serial_fraction(timeline: Timeline, intervals: list, workers: int) -> dict:
    """Seconds per cause (`<cause>_s`), `total_s` (their sum), `wall_s` and `busy_worker_s`.

    `intervals`: (started, ended, worker id) of every batch a worker ran."""
    t = timeline
    n = max(workers, 1)
    causes = dict.fromkeys(CAUSES, 0.0)
    end = t.summary_at
    causes["interpreter_imports"] = max(0.0, t.run_started - t.process_started)
    compaction = max(0.0, t.compaction_ended - t.compaction_started) if t.compaction_started else 0.0
    causes["compaction"] = compaction
    busy_total = 0.0
    if t.first_submit:
        before = max(0.0, t.first_submit - t.run_started)
        causes["pool_start"] = min(t.pool_s, before)
        causes["discovery"] = before - causes["pool_start"]
        # Worker time runs from the first submit to the last batch's end (clipped to the run).
        stop = min(max([e for _, e, _ in intervals], default=t.first_submit), t.run_ended or end)
        stop = max(stop, t.first_submit)
        events: list[tuple[float, int, int]] = []  # (time, busy change, started-slot change)
        first_start: dict = {}
        for started, ended, worker in intervals:
            started, ended = max(started, t.first_submit), min(ended, stop)
            if ended <= started:
                continue
            events.append((started, 1, 0))
            events.append((ended, -1, 0))
            if worker not in first_start or started < first_start[worker]:
                first_start[worker] = started
        events.extend((moment, 0, 1) for moment in first_start.values())
        done = t.discovery_done or stop
        if t.first_submit < done < stop:
            events.append((done, 0, 0))
        events.sort()
        busy = slots = 0
        previous = t.first_submit
        for moment, change, slot in events + [(stop, 0, 0)]:
            dt = moment - previous
            if dt > 0:
                running = min(busy, n)
                started_slots = max(min(slots, n), running)
                busy_total += running * dt
                causes["pool_start"] += (n - started_slots) / n * dt
                idle = (started_slots - running) / n * dt
                causes["tail" if previous >= done else "between_batches"] += idle
                previous = moment
            busy += change
            slots += slot
        after_workers = (t.run_ended or end) - stop
    else:
        causes["pool_start"] = t.pool_s
        after_workers = (t.run_ended or end) - t.run_started - t.pool_s
        causes["discovery"] = max(0.0, after_workers)
        after_workers = 0.0
    # From the last worker's end to the summary, less compaction.
    causes["exit"] = max(0.0, after_workers) + max(0.0, end - (t.run_ended or end) - compaction)
    out = {f"{cause}_s": round(seconds, 4) for cause, seconds in causes.items()}
    out["total_s"] = round(sum(causes.values()), 4)
    out["wall_s"] = round(end - t.process_started, 4)
    out["busy_worker_s"] = round(busy_total, 4)
    out["compaction_overlapped_s"] = round(t.compaction_overlapped_s, 4)
    out["workers"] = n
    return out
