"""Shared by the memory tests and benchmarks: run snakebatch in a subprocess and sample the RSS
of its whole process tree from outside (the command and environment are helpers.py's)."""

from __future__ import annotations

import subprocess
import threading
import time

import psutil

from helpers import cli_command, cli_env


def generated_module(size: int, seed: int = 0) -> bytes:
    """Dense Python (many small functions): its `ast` needs about 265 bytes per source byte."""
    parts, total, i = [], 0, 0
    while total < size:
        chunk = (f"def f_{seed}_{i}(a, b=1):\n    x = a + b * {i} - (a // 3) + [a, b, {i}][0]\n"
                 f"    return {{'k': x, 'v': (a, b)}}\n\n")
        parts.append(chunk)
        total += len(chunk)
        i += 1
    return "".join(parts).encode()


def run_sampled(args: list, interval: float = 0.05, timeout: float = 900) -> tuple[subprocess.CompletedProcess, int]:
    """Run `snakebatch ARGS`; returns the finished process and the peak RSS sum of its tree."""
    proc = subprocess.Popen(cli_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cli_env())
    peak = 0
    done = threading.Event()

    def sample():
        nonlocal peak
        root = psutil.Process(proc.pid)
        while not done.is_set():
            total = 0
            try:
                for p in [root, *root.children(recursive=True)]:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
            except psutil.Error:
                pass
            peak = max(peak, total)
            time.sleep(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        done.set()
        thread.join()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), peak
