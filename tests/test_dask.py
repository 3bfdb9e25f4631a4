"""`--executor dask`: the same rows as the local pool, on a LocalCluster and on a scheduler and
workers started with the `dask` command-line tools; dead workers, dead clients, blind workers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from helpers import cli_command, cli_env, cli_in_process, read_table, run_cli, stdlib_dir
from snakebatch.engine.worker import BatchTask, process_batch
from snakebatch.store.ledger import Ledger

distributed = pytest.importorskip("distributed")

STDLIB_PACKAGES = ("json", "email", "asyncio", "importlib", "concurrent", "http", "xml", "urllib",
                   "unittest", "multiprocessing", "wsgiref", "tomllib", "logging", "sqlite3")
FILE_COLUMNS = ("path", "content_hash", "status", "n_definitions", "n_imports", "lines", "blob_id")
DEFINITION_COLUMNS = ("path", "kind", "qualname", "parent", "start_line", "end_line", "n_params")
IMPORT_COLUMNS = ("path", "module", "name", "alias", "level", "line")
TABLE_COLUMNS = {"files": FILE_COLUMNS, "definitions": DEFINITION_COLUMNS, "imports": IMPORT_COLUMNS}
# --retries 0: each extra attempt at the culprit costs a worker restart, and proves nothing new.
PLUGINS = ("--parser", "dask_plugins:killer", "--parser", "dask_plugins:probe", "--retries", "0")


def check(proc: subprocess.CompletedProcess, code: int = 0) -> dict | None:
    assert proc.returncode == code, f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    return json.loads(proc.stdout) if proc.stdout.startswith("{") else None


def rows(out: Path, table: str) -> list[tuple]:
    columns = TABLE_COLUMNS[table]
    data = read_table(out, table).select(list(columns)).to_pylist()
    return sorted((tuple(row[c] for c in columns) for row in data), key=repr)


def assert_same_rows(out: Path, expected: Path) -> None:
    for table in TABLE_COLUMNS:
        got, want = rows(out, table), rows(expected, table)
        assert len(got) == len(want), f"{table}: {len(got)} rows, the local pool wrote {len(want)}"
        assert got == want, f"{table}: rows differ from the local pool's"
    # Exactly one row per file, as any reader sees the folder.
    counts = duckdb.connect().execute(
        f"SELECT count(*), count(DISTINCT path) FROM read_parquet('{out}/files/*.parquet')").fetchall()
    assert counts[0][0] == counts[0][1] == len(rows(expected, "files"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group the test started (a `dask worker` and its nannies), then SIGKILL."""
    if proc.poll() is not None:
        return
    for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue


def wait_for_workers(address: str, n: int, procs: list, timeout: float = 60) -> None:
    from distributed import Client

    deadline = time.monotonic() + timeout
    while True:
        for proc in procs:
            assert proc.poll() is None, f"{proc.args} exited {proc.returncode}"
        try:
            with Client(address, timeout=2, set_as_default=False) as client:
                if len(client.scheduler_info()["workers"]) >= n:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{n} workers did not connect to {address} in {timeout}s"
        time.sleep(0.3)


class DaskCLICluster:
    """`dask scheduler` and `dask worker` subprocesses on 127.0.0.1, each in its own process group."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen] = []
        self.address = f"tcp://127.0.0.1:{free_port()}"

    def _start(self, name: str, args: list, prefix: tuple = (), cwd: str | None = None, **env) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "wb")
        proc = subprocess.Popen([*prefix, sys.executable, "-m", "dask", *args], stdout=log, stderr=subprocess.STDOUT,
                                env=cli_env(**env), start_new_session=True, cwd=cwd or self.log_dir)
        log.close()
        self.procs.append(proc)
        return proc

    def start_scheduler(self) -> None:
        port = self.address.rsplit(":", 1)[1]
        # A dead worker fails its task at once; snakebatch retries and bisects by itself.
        self._start("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", port, "--no-dashboard"],
                    DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES="0")

    def start_workers(self, n: int, name: str = "workers", prefix: tuple = (), local_directory: str | None = None):
        self._start(name, ["worker", self.address, "--nthreads", "1", "--nworkers", str(n), "--memory-limit", "1GiB",
                           "--no-dashboard", "--local-directory", local_directory or str(self.log_dir / name)],
                    prefix, local_directory, DASK_DISTRIBUTED__WORKER__MEMORY__TARGET="False",
                    DASK_DISTRIBUTED__WORKER__MEMORY__SPILL="False")

    def stop(self) -> None:
        for proc in reversed(self.procs):
            stop_process(proc)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A few hundred real Python files (part of the stdlib), a file that kills its worker, and a
    file that reports the worker's memory settings."""
    root = tmp_path_factory.mktemp("corpus") / "src"
    for package in STDLIB_PACKAGES:
        shutil.copytree(stdlib_dir() / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    return root


@pytest.fixture(scope="module")
def local_out(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "out"
    check(cli_in_process("run", corpus, "-o", out, "-j", "2", "--no-progress"))
    return out


@pytest.fixture(scope="module")
def local_cluster():
    """A LocalCluster in this process: 1 worker process of one thread, on 127.0.0.1 (each worker is a
    spawned interpreter importing distributed, ~5 CPU-s; two workers are tested on the CLI cluster)."""
    import dask
    from distributed import LocalCluster

    with pytest.MonkeyPatch.context() as patch, dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        patch.setenv("PYTHONPATH", cli_env()["PYTHONPATH"])  # the spawned workers import snakebatch
        cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=":0")
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def cli_cluster(tmp_path_factory):
    cluster = DaskCLICluster(tmp_path_factory.mktemp("dask-cli"))
    try:
        cluster.start_scheduler()
        cluster.start_workers(2)
        wait_for_workers(cluster.address, 2, cluster.procs)
        yield cluster
    finally:
        cluster.stop()


def test_local_cluster_gives_the_rows_of_the_local_pool(corpus, local_out, local_cluster, tmp_path):
    out = tmp_path / "out"
    summary = check(cli_in_process("run", corpus, "-o", out, "--executor", "dask", "--scheduler",
                                   local_cluster.scheduler_address, "--no-progress", "--json"))
    assert summary["state"] == "complete"
    assert summary["files"] > 200
    assert_same_rows(out, local_out)


def test_dask_cli_scheduler_and_workers_give_the_rows_of_the_local_pool(corpus, local_out, cli_cluster, tmp_path):
    out = tmp_path / "out"
    summary = check(cli_in_process("run", corpus, "-o", out, "--executor", "dask", "--scheduler",
                                   cli_cluster.address, "--no-progress", "--json"))
    assert summary["state"] == "complete"
    assert_same_rows(out, local_out)
    # The governor saw the remote workers' memory and took their limits (2 x 1GiB) as its budget.
    assert summary["governor"]["peak_remote_rss_bytes"] > 20 * 1024 * 1024
    assert summary["governor"]["budget_bytes"] == 2 * 1024**3
    # Every batch of files ran in a worker process, none in the CLI's own (the job's empty first
    # parts, which hold no file, are written by the coordinator itself).
    stats = json.loads((out / "_snakebatch" / "stats.json").read_text())
    pids = {batch["worker_pid"] for batch in stats["batches"] if batch["files"]}
    assert pids and len(pids) <= 2 and os.getpid() not in pids


@pytest.mark.slow  # ~10 s; a killed client and its resume on Dask, and a crashing parser on the local pool
# (test_poison.py), are in the default run
def test_a_killed_worker_costs_one_file_on_the_builtin_local_cluster(corpus, tmp_path):
    """`--executor dask` alone: the culprit is `crashed`, every other file gets its real row, the
    same as on the local pool; the workers got the memory budget and no spilling."""
    source = tmp_path / "src"
    for package in ("json", "email", "concurrent"):
        shutil.copytree(corpus / package, source / package)
    (source / "email" / "boom_here.py").write_text("x = 1\n")
    (source / "probe_memory.txt").write_text("which worker am I on?\n")
    local = tmp_path / "local"
    check(run_cli("run", source, "-o", local, "-j", "2", "--no-progress", *PLUGINS))
    out = tmp_path / "out"
    summary = check(run_cli("run", source, "-o", out, "--executor", "dask", "-j", "2", "--memory-budget", "1GiB",
                               "--batch-bytes", "64KB", "--no-progress", "--json", *PLUGINS))
    assert summary["state"] == "complete"
    assert summary["crashed_isolations"] >= 1
    files = {row["path"]: row for row in read_table(out, "files").to_pylist()}
    assert files["email/boom_here.py"]["status"] == "crashed"
    assert [p for p, row in files.items() if row["status"] == "crashed"] == ["email/boom_here.py"]
    assert_same_rows(out, local)
    settings = json.loads(files["probe_memory.txt"]["docstring"])
    assert settings["memory_limit"] == 512 * 1024**2
    assert settings["target"] is False and settings["spill"] is False
    assert 0 < settings["pause"] < 1


def test_resume_after_the_client_is_killed(corpus, local_out, cli_cluster, tmp_path):
    """SIGKILL of the CLI mid-job, then `--resume` against the same scheduler: no file twice, none lost."""
    out = tmp_path / "out"
    args = cli_command("run", corpus, "-o", out, "--executor", "dask", "--scheduler", cli_cluster.address,
                       "--batch-bytes", "16KB", "--no-progress")
    proc = subprocess.Popen(args, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ledger = out / "_snakebatch" / "ledger.jsonl"
    try:
        deadline = time.monotonic() + 120
        while not (ledger.exists() and ledger.read_bytes().count(b"\n") >= 3):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no batch was committed in 120s"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert not (out / "_snakebatch" / "complete.json").exists(), "the job ended before it was killed"
    summary = check(cli_in_process("run", corpus, "-o", out, "--resume", "--executor", "dask", "--scheduler",
                                   cli_cluster.address, "--no-progress", "--json"))
    assert summary["state"] == "complete"
    assert 0 < summary["files_this_run"] < summary["files"]
    assert_same_rows(out, local_out)


@pytest.mark.slow
def test_ctrl_c_stops_the_builtin_local_cluster_cleanly(corpus, local_out, tmp_path):
    """SIGINT to the whole process group, as a terminal sends it: the workers ignore it, the
    coordinator commits what is in flight and exits 130; `--resume` completes the same rows."""
    out = tmp_path / "out"
    args = cli_command("run", corpus, "-o", out, "--executor", "dask", "-j", "2", "--batch-bytes", "16KB",
                       "--no-progress")
    proc = subprocess.Popen(args, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        ledger = out / "_snakebatch" / "ledger.jsonl"
        deadline = time.monotonic() + 120
        while not (ledger.exists() and ledger.read_bytes().count(b"\n") >= 2):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no batch was committed in 120s"
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        stop_process(proc)
    assert proc.returncode == 130, stderr
    assert "resume with:" in stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    summary = check(run_cli("run", corpus, "-o", out, "--resume", "--executor", "dask", "-j", "2",
                               "--no-progress", "--json"))
    assert 0 < summary["files_this_run"] < summary["files"]
    assert_same_rows(out, local_out)


@pytest.mark.slow
def test_resume_waits_for_batches_the_killed_client_left_running(corpus, cli_cluster, tmp_path):
    """A batch still executing on a worker after its client died would write into the staging
    folder the resumed run reuses: the resume commits nothing before that batch has finished."""
    source = tmp_path / "src"
    shutil.copytree(corpus / "json", source)
    markers = tmp_path / "markers"
    markers.mkdir()
    (source / "slow_one.py").write_text(f"{markers}\n")
    out = tmp_path / "out"
    args = cli_command("run", source, "-o", out, "--executor", "dask", "--scheduler", cli_cluster.address,
                       "--parser", "dask_plugins:sleeper", "--no-progress")
    proc = subprocess.Popen(args, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (markers / "sleeping").exists():
            assert proc.poll() is None, f"the run ended ({proc.returncode}) before the slow file started"
            assert time.monotonic() < deadline, "the slow file did not start in 120s"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not (markers / "slept").exists(), "the slow batch ended before the client was killed"
    committed_before = len(list(Ledger(str(out)).entries()))
    summary = check(run_cli("run", source, "-o", out, "--resume", "--executor", "dask", "--scheduler",
                               cli_cluster.address, "--parser", "dask_plugins:sleeper", "--no-progress", "--json"))
    assert summary["state"] == "complete"
    slept = (markers / "slept").stat().st_mtime
    resumed = list(Ledger(str(out)).entries())[committed_before:]
    assert resumed and all(entry.committed_at >= slept for entry in resumed)
    files = read_table(out, "files").to_pylist()
    assert sorted(row["path"] for row in files) == sorted(
        str(p.relative_to(source)) for p in source.rglob("*") if p.is_file())
    assert {row["status"] for row in files} == {"ok"}


def test_a_builtin_local_cluster_without_workers_is_replaced(corpus, tmp_path, monkeypatch):
    """When no worker comes back after a death (its nanny gave up), `rebuild` replaces the local
    cluster as the local pool replaces a broken pool, and batches run again."""
    from snakebatch.config import build_config
    from snakebatch.executors import dask as dask_executor
    monkeypatch.setenv("PYTHONPATH", cli_env()["PYTHONPATH"])
    monkeypatch.setattr(dask_executor, "LOCAL_WORKERS_BACK_TIMEOUT_S", 1)
    out = tmp_path / "out"
    staging = Path(Ledger(str(out)).staging_root)
    staging.mkdir(parents=True)
    config = build_config(corpus, out, executor="dask", workers=1, memory_budget="512MiB")
    executor = dask_executor.DaskExecutor(config)
    try:
        first_cluster = executor.cluster
        executor.client.retire_workers(close_workers=True, remove=True)
        assert not executor.client.scheduler_info()["workers"]
        executor.rebuild()
        assert executor.cluster is not first_cluster
        task = BatchTask(batch_id=1, attempt=0, source=str(corpus), staging=str(staging / "b1"),
                         files=[("json/decoder.py", 0, 0)])
        outcome = executor.submit(process_batch, task).result(timeout=120)
        assert outcome.statuses == ["ok"] and outcome.pid in executor.worker_pids()
    finally:
        executor.shutdown()


@pytest.mark.slow
def test_losing_the_scheduler_stops_the_job_resumably(corpus, local_out, tmp_path):
    """The scheduler dies mid-job: exit 1 with the resume command, no file gets an error row for
    it, and `--resume` (here on the local pool) completes the same rows."""
    cluster = DaskCLICluster(tmp_path)
    out = tmp_path / "out"
    try:
        cluster.start_scheduler()
        cluster.start_workers(2)
        wait_for_workers(cluster.address, 2, cluster.procs)
        args = cli_command("run", corpus, "-o", out, "--executor", "dask", "--scheduler", cluster.address,
                           "--batch-bytes", "16KB", "--no-progress")
        proc = subprocess.Popen(args, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            ledger = out / "_snakebatch" / "ledger.jsonl"
            deadline = time.monotonic() + 120
            while not (ledger.exists() and ledger.read_bytes().count(b"\n") >= 2):
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "no batch was committed in 120s"
                time.sleep(0.01)
            os.killpg(cluster.procs[0].pid, signal.SIGKILL)
            stdout, stderr = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    finally:
        cluster.stop()
    assert proc.returncode == 1, stderr
    assert "resume with:" in stderr
    statuses = {row["status"] for row in read_table(out, "files").to_pylist()}
    assert not statuses & {"crashed", "parser_error"}
    summary = check(run_cli("run", corpus, "-o", out, "--resume", "--no-progress", "--json"))
    assert 0 < summary["files_this_run"] < summary["files"]
    assert_same_rows(out, local_out)


def test_missing_extra_is_a_clear_usage_error(corpus, tmp_path):
    blocker = tmp_path / "site"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['distributed'] = None\n")
    env = cli_env()
    env["PYTHONPATH"] = os.pathsep.join([str(blocker), env["PYTHONPATH"]])
    out = tmp_path / "out"
    proc = run_cli("run", corpus, "-o", out, "--executor", "dask", env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "--executor dask needs the extra: pip install 'snakebatch[dask]'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def _can_unshare_mounts() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True)
    return probe.returncode == 0


# A worker in its own mount namespace, where SOURCE's folder is an empty tmpfs, OUT is read-only,
# or OUT is a local folder of the same name: a machine that did not mount the shared filesystem,
# mounted it read-only, or has a folder of its own at that path.
BLIND_WORKERS = {
    "source": ('mount -t tmpfs none "$1" && exec "${@:2}"', "SOURCE {source} is not a folder there"),
    "out": ('mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && exec "${@:2}"',
            "cannot write to OUT staging folder {out}/_snakebatch/staging there"),
    "unshared": ('mount -t tmpfs none "$1" && mkdir -p "$1/_snakebatch/staging" && exec "${@:2}"',
                 "OUT staging folder {out}/_snakebatch/staging there is not the coordinator's"),
}


@pytest.mark.slow
@pytest.mark.skipif(not _can_unshare_mounts(), reason="needs root and unshare to hide a folder from a worker")
@pytest.mark.parametrize("hidden", sorted(BLIND_WORKERS))
def test_a_worker_without_the_shared_source_or_out_is_a_clear_error(corpus, tmp_path, hidden):
    """The job is refused (exit 2) with a message naming the path and the worker, before any batch runs."""
    source = tmp_path / "private" / "src"
    shutil.copytree(corpus / "json", source)
    out = tmp_path / "out"
    out.mkdir()
    script, expected = BLIND_WORKERS[hidden]
    hidden_folder = source.parent if hidden == "source" else out
    prefix = ("unshare", "--mount", "--propagation", "private", "bash", "-c", script, "bash", str(hidden_folder))
    cluster = DaskCLICluster(tmp_path)
    try:
        cluster.start_scheduler()
        cluster.start_workers(1, prefix=prefix)
        wait_for_workers(cluster.address, 1, cluster.procs)
        proc = run_cli("run", source, "-o", out, "--executor", "dask", "--scheduler", cluster.address,
                          "--no-progress")
    finally:
        cluster.stop()
    assert proc.returncode == 2, proc.stderr
    assert expected.format(source=source, out=out) in proc.stderr
    assert "Dask worker tcp://127.0.0.1:" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list((out / "files").glob("*.parquet"))
