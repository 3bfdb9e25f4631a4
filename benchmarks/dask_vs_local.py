"""Dask scheduler + workers (started with the `dask` CLIs on 127.0.0.1) against the local pool.

    python benchmarks/dask_vs_local.py [SOURCE] [--workers 2]

Without SOURCE it copies the standard library (no site-packages, no __pycache__) and this
interpreter's site-packages into a temporary folder: about 6,000 real files. Runs
`snakebatch run -j N` and `snakebatch run --executor dask --scheduler ...` against N workers,
checks that every table holds row for row the same rows (all columns but `batch_id` and
`parse_ms`, which depend on batching and timing), and prints both wall times.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parent.parent
TIMING_COLUMNS = {"files": "EXCLUDE (batch_id, parse_ms)", "definitions": "", "imports": ""}


def build_corpus(target: Path) -> Path:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    purelib = Path(sysconfig.get_paths()["purelib"])
    shutil.copytree(stdlib, target / "stdlib", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__", "site-packages", "dist-packages"))
    shutil.copytree(purelib, target / "site-packages", symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def env() -> dict:
    environ = dict(os.environ)
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), environ.get("PYTHONPATH")]))
    environ["DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES"] = "0"
    return environ


def timed_run(*args) -> float:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "snakebatch", "run", *map(str, args), "--no-progress"],
                          capture_output=True, text=True, env=env())
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"snakebatch {' '.join(map(str, args))} exited {proc.returncode}\n{proc.stderr}")
    print(proc.stdout.splitlines()[0])
    return elapsed


def wait_for_workers(address: str, n: int, timeout: float = 120) -> None:
    from distributed import Client

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with Client(address, timeout=2, set_as_default=False) as client:
                if len(client.scheduler_info()["workers"]) >= n:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    sys.exit(f"{n} workers did not connect to {address} in {timeout}s")


def differences(a: Path, b: Path) -> dict:
    con = duckdb.connect()
    result = {}
    for table, exclude in TIMING_COLUMNS.items():
        left = f"SELECT * {exclude} FROM read_parquet('{a}/{table}/*.parquet')"
        right = f"SELECT * {exclude} FROM read_parquet('{b}/{table}/*.parquet')"
        only_a = con.execute(f"SELECT count(*) FROM ({left} EXCEPT ALL {right})").fetchall()[0][0]
        only_b = con.execute(f"SELECT count(*) FROM ({right} EXCEPT ALL {left})").fetchall()[0][0]
        rows = con.execute(f"SELECT count(*) FROM ({left})").fetchall()[0][0]
        result[table] = (rows, only_a, only_b)
    return result


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group this script started, then SIGKILL if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(20)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?")
    parser.add_argument("--workers", type=int, default=2)
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="snakebatch-dask-bench-"))
    procs: list[subprocess.Popen] = []
    try:
        source = Path(options.source).resolve() if options.source else build_corpus(work / "src")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        address = f"tcp://127.0.0.1:{port}"
        log = open(work / "dask.log", "wb")
        dask = [sys.executable, "-m", "dask"]
        procs.append(subprocess.Popen([*dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                                      stdout=log, stderr=subprocess.STDOUT, env=env(), start_new_session=True))
        procs.append(subprocess.Popen([*dask, "worker", address, "--nthreads", "1", "--nworkers", str(options.workers),
                                       "--memory-limit", "2GiB", "--no-dashboard", "--local-directory", str(work / "w")],
                                      stdout=log, stderr=subprocess.STDOUT, env=env(), start_new_session=True))
        wait_for_workers(address, options.workers)
        local_s = timed_run(source, "-o", work / "local", "-j", options.workers)
        dask_s = timed_run(source, "-o", work / "dask", "--executor", "dask", "--scheduler", address)
        diff = differences(work / "local", work / "dask")
        print(f"wall time: local pool -j {options.workers} {local_s:.1f}s, "
              f"dask scheduler + {options.workers} workers {dask_s:.1f}s (ratio {dask_s / local_s:.2f})")
        for table, (rows, only_local, only_dask) in diff.items():
            print(f"{table}: {rows} rows; only in local {only_local}, only in dask {only_dask}")
        if any(a or b for _, a, b in diff.values()):
            sys.exit("the outputs differ")
        print("row for row the same")
    finally:
        for proc in reversed(procs):
            stop(proc)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
