"""The coordinator's decisions, without processes: a scripted executor in this process.

`ScriptedExecutor` implements `snakebatch.executors.base.Executor`. A batch the script lets
through runs the real `process_batch` here, on tiny real files, into a real OutputSink; a batch
it condemns ends as a pool's would: `WorkerDied` (its worker "died"), an exception of the batch,
or a hang that only the watchdog ends (it kills the "worker", and every batch in flight fails).
Each test runs in well under a second (the watchdog's in about one and a half: its grace).
"""

from __future__ import annotations

import os
from concurrent.futures import Future

import msgspec
import psutil
import pyarrow.compute as pc
import pytest

import snakebatch
from snakebatch.config import build_config
from snakebatch.engine.coordinator import Coordinator
from snakebatch.engine.governor import DEFAULT_BATCH_BYTES
from snakebatch.engine.sinks import OutputSink
from snakebatch.engine.watchdog import Heartbeat
from snakebatch.engine.worker import BatchTask
from snakebatch.errors import JobError
from snakebatch.executors.base import WorkerDied
from snakebatch.store.layout import part_name
from snakebatch.store.ledger import Ledger

pytestmark = pytest.mark.timeout(60)  # a coordinator that loses a batch would wait for it forever

# A worker's RSS as the fake reports it: this process's own would make the governor's model
# depend on what pytest has loaded.
WORKER_RSS = 50 * 1024 * 1024


class ScriptedExecutor:  # an `Executor`
    """Runs each batch at once in this process, or ends it as `script(task)` says:
    "ok", "die" (WorkerDied; the pool breaks), "hang" (until the watchdog kills the worker),
    "bloat" (ok, with a worker RSS far above its usual one), or an exception to raise."""

    memory_limit = None

    def __init__(self, script, runs_heartbeats: bool = False):
        self.script = script
        self.runs_heartbeats = runs_heartbeats
        self.workers = 0
        self.coordinator: Coordinator | None = None
        self.submitted: list[tuple[list[str], int]] = []  # (the batch's paths, batches in flight then)
        self.hanging: dict[Future, BatchTask] = {}
        self.killed: list[int] = []
        self.rebuilds = 0
        self.recycled_with: list[int] = []  # batches in flight at each recycle
        self.rebuild_error: JobError | None = None

    def start(self, config) -> ScriptedExecutor:
        """The coordinator's `executor_factory`."""
        self.workers = config.workers
        return self

    def submit(self, fn, task) -> Future:
        in_flight = len(self.coordinator.inflight) if self.coordinator is not None else 0
        self.submitted.append(([path for path, _size, _mtime in task.files], in_flight))
        future: Future = Future()
        future.set_running_or_notify_cancel()
        action = self.script(task)
        if action in ("ok", "bloat"):
            # Without heartbeats: every "worker" here is this process, with one heartbeat file.
            outcome = fn(msgspec.structs.replace(task, heartbeat_dir=None))
            rss = WORKER_RSS + (2 << 30 if action == "bloat" else 0)
            future.set_result(msgspec.structs.replace(outcome, rss_bytes=rss))
        elif action == "die":
            self._break()
            future.set_exception(WorkerDied("scripted: the worker died"))
        elif action == "hang":
            # What a worker stuck in a parse shows the watchdog: the same file, for too long.
            index = next(i for i, (path, *_) in enumerate(task.files) if self.script(_alone(task, path)) == "hang")
            Heartbeat(task.heartbeat_dir).parsing(task.batch_id, task.attempt, index)
            self.hanging[future] = task
        else:
            future.set_exception(action)
        return future

    def _break(self) -> None:
        """A worker died: every batch still running fails with the pool."""
        for future in self.hanging:
            future.set_exception(WorkerDied("scripted: the pool broke"))
        self.hanging.clear()

    def worker_pids(self) -> list[int]:
        return [os.getpid()]  # the heartbeat file the fake writes is named by this process

    def memory_rss(self) -> None:
        return None

    def kill_worker(self, pid: int) -> None:
        self.killed.append(pid)
        self._break()

    def recycle(self) -> bool:
        self.recycled_with.append(len(self.coordinator.inflight))
        return True

    def rebuild(self) -> None:
        self.rebuilds += 1
        if self.rebuild_error is not None:
            raise self.rebuild_error

    def shutdown(self, kill: bool = False) -> None:
        self._break()


def _alone(task: BatchTask, path: str) -> BatchTask:
    return msgspec.structs.replace(task, files=[f for f in task.files if f[0] == path])


def _names(task: BatchTask) -> set[str]:
    return {path for path, _size, _mtime in task.files}


def _source(tmp_path, files: dict):
    src = tmp_path / "src"
    src.mkdir()
    for name, text in files.items():
        (src / name).write_text(text)
    return src


def _clean(n: int) -> dict:
    return {f"m{i:02d}.py": f"def f{i}():\n    return {i}\n" for i in range(n)}


def _run(tmp_path, source, script, runs_heartbeats=False, **options):
    """Run the job as `snakebatch.run` does, with the scripted executor; (summary, executor, statuses)."""
    options = {"workers": 2, "retries": 1, "compact": False, **options}
    config = build_config(source, tmp_path / "out", use_config_file=False, **options)
    sink = OutputSink(config)
    executor = ScriptedExecutor(script, runs_heartbeats)
    coordinator = Coordinator(config, sink, executor_factory=executor.start)
    executor.coordinator = coordinator
    try:
        for _ in coordinator.run():
            pass
        coordinator.compact()
    finally:
        summary = coordinator.close()
    files = snakebatch.open_dataset(tmp_path / "out", "files").to_table(columns=["path", "status", "error_message"])
    statuses = dict(zip(files["path"].to_pylist(), files["status"].to_pylist(), strict=True))
    messages = dict(zip(files["path"].to_pylist(), files["error_message"].to_pylist(), strict=True))
    return summary, executor, statuses, messages


def test_batches_run_and_commit_real_rows(tmp_path):
    src = _source(tmp_path, _clean(6))
    summary, executor, statuses, _ = _run(tmp_path, src, lambda task: "ok")
    assert summary.state == "complete" and summary.exit_code == 0
    assert statuses == dict.fromkeys(_clean(6), "ok")
    assert summary.files_this_run == 6 and summary.status_counts == {"ok": 6}
    assert sum(len(paths) for paths, _ in executor.submitted) == 6
    assert executor.rebuilds == 0 and summary.retries == 0
    defs = snakebatch.open_dataset(tmp_path / "out", "definitions").to_table()
    assert sorted(pc.unique(defs["name"]).to_pylist()) == [f"f{i}" for i in range(6)]


def test_a_batch_that_kills_its_worker_is_redone_alone_then_halved_to_its_file(tmp_path):
    files = _clean(9)
    files["m04_poison.py"] = "x = 1\n"
    src = _source(tmp_path, files)
    summary, executor, statuses, messages = _run(
        tmp_path, src, lambda task: "die" if "m04_poison.py" in _names(task) else "ok", workers=1)
    assert summary.state == "complete"
    assert statuses.pop("m04_poison.py") == "crashed"
    assert "the worker process died while parsing this file (2 attempts)" in messages["m04_poison.py"]
    assert set(statuses.values()) == {"ok"} and len(statuses) == 9  # every other file has its real row
    poisoned = [(paths, in_flight) for paths, in_flight in executor.submitted if "m04_poison.py" in paths]
    first = poisoned[0][0]
    assert len(first) > 2
    # Redone alone with the same files, then halves of halves, then the file alone and its retry.
    assert poisoned[1] == (first, 0)
    sizes = [len(paths) for paths, _ in poisoned[1:]]
    assert all(b <= (a + 1) // 2 for a, b in zip(sizes, sizes[1:-1], strict=False)) and sizes[-2:] == [1, 1]
    assert all(in_flight == 0 for _, in_flight in poisoned[1:])
    assert executor.rebuilds == len(poisoned)
    assert summary.crashed_isolations == len(poisoned) - 1
    assert summary.retries == len(poisoned)


def test_workers_that_never_finish_a_batch_stop_the_job(tmp_path):
    src = _source(tmp_path, _clean(4))
    summary, executor, statuses, _ = _run(tmp_path, src, lambda task: "die")
    assert summary.state == "stopped" and summary.exit_code == 1
    assert "worker processes died 4 times in a row without finishing any batch" in summary.stop_reason
    assert statuses == {} and summary.resume_command is not None


def test_a_batch_that_raises_is_split_until_its_file_gets_parser_error(tmp_path):
    files = _clean(5)
    files["m02_bad.py"] = "y = 2\n"
    src = _source(tmp_path, files)
    summary, _, statuses, messages = _run(
        tmp_path, src, lambda task: RuntimeError("boom") if "m02_bad.py" in _names(task) else "ok")
    assert summary.state == "complete"
    assert statuses.pop("m02_bad.py") == "parser_error"
    assert messages["m02_bad.py"] == "RuntimeError: boom (2 attempts)"
    assert set(statuses.values()) == {"ok"} and len(statuses) == 5


def test_a_batch_that_cannot_write_its_staging_folder_stops_the_job(tmp_path):
    src = _source(tmp_path, _clean(3))
    summary, _, _, _ = _run(tmp_path, src, lambda task: OSError(28, "No space left on device"))
    assert summary.state == "stopped" and summary.exit_code == 1
    assert summary.stop_reason.startswith("cannot write batch ")
    assert "No space left on device" in summary.stop_reason


def _with_failures(n_failures: int) -> tuple[dict, object]:
    """Clean files and `n_failures` files whose batches raise (each ends as a parser_error row)."""
    files = _clean(6)
    files.update({f"m{i:02d}_broken.py": "v = 5\n" for i in range(n_failures)})
    return files, lambda task: RuntimeError("boom") if any("broken" in name for name in _names(task)) else "ok"


def test_fail_fast_stops_at_the_first_failure_status(tmp_path):
    files, script = _with_failures(1)
    summary, _, statuses, _ = _run(tmp_path, _source(tmp_path, files), script, fail_fast=True)
    assert summary.state == "stopped" and summary.exit_code == 1
    assert summary.stop_reason == "--fail-fast: m00_broken.py has status parser_error"
    assert statuses["m00_broken.py"] == "parser_error"
    assert summary.resume_command is not None


@pytest.mark.parametrize("limit, state", [(2, "stopped"), (4, "complete")])
def test_max_errors_stops_once_that_many_files_have_a_failure_status(tmp_path, limit, state):
    files, script = _with_failures(3)
    summary, _, statuses, _ = _run(tmp_path, _source(tmp_path, files), script, workers=1, max_errors=limit)
    assert summary.state == state
    if state == "stopped":
        assert summary.stop_reason.startswith(f"--max-errors {limit}: {limit} files have status ")
        assert list(statuses.values()).count("parser_error") == limit
    else:
        assert summary.status_counts == {"ok": 6, "parser_error": 3}


def test_an_executor_that_cannot_rebuild_stops_the_job_resumably(tmp_path):
    files = _clean(4)
    files["m01_poison.py"] = "z = 3\n"
    src = _source(tmp_path, files)
    config = build_config(src, tmp_path / "out", use_config_file=False, workers=1, compact=False)
    executor = ScriptedExecutor(lambda task: "die" if "m01_poison.py" in _names(task) else "ok")
    executor.rebuild_error = JobError("no Dask worker is connected to the scheduler (scripted)")
    coordinator = Coordinator(config, OutputSink(config), executor_factory=executor.start)
    for _ in coordinator.run():
        pass
    coordinator.compact()
    summary = coordinator.close()
    assert summary.state == "stopped" and summary.exit_code == 1
    assert summary.stop_reason == "no Dask worker is connected to the scheduler (scripted)"
    assert executor.rebuilds == 1 and summary.resume_command is not None


def test_a_worker_stuck_on_a_file_is_killed_by_the_watchdog_and_the_file_gets_timeout(tmp_path):
    files = _clean(3)
    files["m01_slow.py"] = "w = 4\n"
    src = _source(tmp_path, files)
    summary, executor, statuses, messages = _run(
        tmp_path, src, lambda task: "hang" if "m01_slow.py" in _names(task) else "ok",
        runs_heartbeats=True, workers=1, retries=0, file_timeout=0.05)
    assert summary.state == "complete"
    assert statuses.pop("m01_slow.py") == "timeout"
    assert "longer than --file-timeout 0.05s" in messages["m01_slow.py"]
    assert set(statuses.values()) == {"ok"} and len(statuses) == 3  # the rest of its batch, redone
    assert executor.killed == [os.getpid()] and summary.watchdog_kills == 1
    assert executor.rebuilds == 1


def _budget_with_room(room: int) -> int:
    """A budget `room` bytes above what this process holds now (the governor samples it)."""
    return psutil.Process().memory_info().rss + room


def test_the_governor_runs_a_big_batch_alone_and_gives_a_file_too_large_for_the_budget_its_row(tmp_path):
    files = _clean(12)
    src = _source(tmp_path, files)
    # Sparse files: sizes the governor prices (python: 250 bytes per source byte) without any
    # bytes to read. With 2 GB of room and 2 workers at 50 MB: a share of about 950 MB each.
    with open(src / "m05_big.py", "wb") as fh:
        fh.truncate(5_500_000)  # ~1.4 GB: more than a share, less than the budget: alone
    with open(src / "m08_huge.py", "wb") as fh:
        fh.truncate(9_000_000)  # ~2.3 GB: more than the whole budget
    summary, executor, statuses, messages = _run(
        tmp_path, src, lambda task: "ok", memory_budget=_budget_with_room(2 << 30))
    assert summary.state == "complete"
    assert statuses["m08_huge.py"] == "too_large" and "--memory-budget" in messages["m08_huge.py"]
    assert all("m08_huge.py" not in paths for paths, _ in executor.submitted)  # never read
    assert statuses["m05_big.py"] == "binary"  # it was read (its zeros are not text)
    big = [(paths, in_flight) for paths, in_flight in executor.submitted if "m05_big.py" in paths]
    assert big == [(["m05_big.py"], 0)]
    governor = summary.governor
    assert governor["held_for_big_batch"] == 1 and governor["too_large_files"] == 1
    assert max(in_flight for _, in_flight in executor.submitted) >= 1  # others did run together


def test_the_governor_grows_quick_batches_and_recycles_a_worker_that_keeps_memory(tmp_path):
    src = _source(tmp_path, _clean(8))
    bloated = []

    def script(task):
        if not bloated:
            bloated.append(task.batch_id)
            return "bloat"
        return "ok"

    summary, executor, statuses, _ = _run(tmp_path, src, script, memory_budget=_budget_with_room(4 << 30))
    assert summary.state == "complete" and set(statuses.values()) == {"ok"}
    decisions = [d["decision"] for d in summary.governor["decisions"]]
    assert "recycle_wanted" in decisions and "recycled_pool" in decisions
    assert executor.recycled_with == [0] and summary.governor["recycles"] == 1  # once nothing ran
    assert "grow_batch" in decisions and summary.governor["batch_bytes"] > DEFAULT_BATCH_BYTES


def test_rows_the_coordinator_writes_itself_teach_the_governor_nothing(tmp_path):
    """`too_large` rows (and timeout, crashed) are written here, in the coordinator: their outcome
    carries the coordinator's RSS. Learned as a worker's rest (117 MB beside 70 MB workers in a
    run), it raised the baseline until the next small files were `too_large` too, each adding
    another such outcome: 90 of 121 files in tests/test_governor.py."""
    src = _source(tmp_path, _clean(3))
    for i in range(5):
        with open(src / f"a_huge_{i}.py", "wb") as fh:
            fh.truncate(9_000_000)  # sparse: ~2.3 GB at the python prior, more than the budget
    summary, executor, statuses, _ = _run(tmp_path, src, lambda task: "ok", memory_budget=_budget_with_room(2 << 30))
    assert summary.state == "complete"
    assert [statuses[f"a_huge_{i}.py"] for i in range(5)] == ["too_large"] * 5
    assert [statuses[name] for name in _clean(3)] == ["ok"] * 3
    assert psutil.Process().memory_info().rss != WORKER_RSS
    assert summary.governor["worker_rest_rss_bytes"] == WORKER_RSS  # the workers', as they reported it
    assert summary.governor["too_large_files"] == 5


def test_batches_that_finished_together_are_committed_by_one_ledger_write(tmp_path):
    """The scripted executor ends each batch as it is submitted, so every wait finds all the
    batches in flight finished (up to two per worker): each such group is one ledger write and
    fsync, and its batches are all committed, each with its own line and parts."""
    src = _source(tmp_path, _clean(40))
    summary, executor, _, _ = _run(tmp_path, src, lambda task: "ok", workers=4, batch_bytes=64)
    sink = executor.coordinator.sink
    assert summary.state == "complete" and summary.files == 40
    batches = summary.batches_this_run  # the job's empty first part is one of them, committed alone
    assert batches >= 12
    # 8 in flight at a time: a write for the first part, then about one per 8 batches.
    assert sink.ledger.appends <= 1 + -(-(batches - 1) // 8) + 1, (sink.ledger.appends, batches)
    entries, corrupt = Ledger(str(tmp_path / "out")).read()
    assert not corrupt and len(entries) == batches
    assert sorted(p for e in entries for p in e.paths) == sorted(_clean(40))
    assert sorted(os.listdir(tmp_path / "out" / "files")) == sorted(part_name(e.batch_id) for e in entries)
    assert not os.listdir(tmp_path / "out" / "_snakebatch" / "staging")
