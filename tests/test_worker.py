"""The worker as a plain function of its batch: real files in, real part files out."""

from __future__ import annotations

import os

import pyarrow.parquet as pq

from snakebatch.engine.worker import BatchTask, process_batch


def _task(src, staging, names, **kw) -> BatchTask:
    files = []
    for name in names:
        try:
            st = os.stat(src / name)
            files.append((name, st.st_size, st.st_mtime_ns))
        except FileNotFoundError:
            files.append((name, 0, 0))
    return BatchTask(batch_id=7, attempt=0, source=str(src), staging=str(staging), files=files, **kw)


def test_vanished_and_replaced_files_become_io_error_rows(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.py").write_text("def a(): pass\n")
    (src / "gone.py").write_text("x = 1\n")
    (src / "fifo.py").write_text("x = 1\n")
    task = _task(src, tmp_path / "stage", ["a.py", "gone.py", "fifo.py"])
    os.unlink(src / "gone.py")  # vanished after discovery
    os.unlink(src / "fifo.py")
    os.mkfifo(src / "fifo.py")  # replaced by a FIFO: must not block
    outcome = process_batch(task)
    assert outcome.statuses == ["ok", "io_error", "io_error"]
    rows = pq.read_table(tmp_path / "stage" / "files.parquet").to_pylist()
    assert [r["path"] for r in rows] == ["a.py", "gone.py", "fifo.py"]
    assert rows[1]["error_message"].startswith("FileNotFoundError")
    assert all(r["batch_id"] == 7 for r in rows)
    assert pq.read_table(tmp_path / "stage" / "definitions.parquet").num_rows == 1
    assert outcome.rows == {"files": 3, "definitions": 1, "imports": 0}


def test_a_raising_parser_costs_only_its_file(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "boom.explode").write_text("anything\n")
    (src / "fine.py").write_text("import os\n")
    (src / "plugin_raise.py").write_text(
        "from snakebatch.parsers import Parser\n"
        "class Exploding(Parser):\n"
        "    name = 'exploding'\n"
        "    patterns = ('*.explode',)\n"
        "    def parse(self, path, data):\n"
        "        raise KeyError('no such key: ' + path)\n"
        "parser = Exploding()\n"
    )
    import sys

    sys.path.insert(0, str(src))
    try:
        outcome = process_batch(_task(src, tmp_path / "stage", ["boom.explode", "fine.py"],
                                      parsers=("plugin_raise:parser",)))
    finally:
        sys.path.remove(str(src))
    assert outcome.statuses == ["parser_error", "ok"]
    rows = pq.read_table(tmp_path / "stage" / "files.parquet").to_pylist()
    assert rows[0]["error_type"] == "KeyError" and "boom.explode" in rows[0]["error_message"]
    assert rows[1]["n_imports"] == 1


def test_forced_status_rows_do_not_read_files(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.py").write_text("x = 1\n")
    task = _task(src, tmp_path / "stage", ["a.py"], forced_status="crashed", forced_message="worker died")
    outcome = process_batch(task)
    row = pq.read_table(tmp_path / "stage" / "files.parquet").to_pylist()[0]
    assert outcome.statuses == ["crashed"] and outcome.bytes == 0
    assert row["status"] == "crashed" and row["error_message"] == "worker died" and row["content_hash"] is None


def test_content_column(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.py").write_text("x = 'é'\n", encoding="utf-8")
    (src / "b.bin").write_bytes(b"\0\1\2")
    process_batch(_task(src, tmp_path / "stage", ["a.py", "b.bin"], content=True))
    rows = pq.read_table(tmp_path / "stage" / "files.parquet").to_pylist()
    assert rows[0]["content"] == "x = 'é'\n"
    assert rows[1]["content"] is None


def test_no_collection_runs_during_a_batch_and_the_collector_is_left_as_found(tmp_path):
    import gc

    src = tmp_path / "src"
    src.mkdir()
    names = []
    for i in range(60):
        (src / f"m{i}.py").write_text("".join(f"@d({j})\ndef f{j}(a, b):\n    import os\n" for j in range(50)))
        names.append(f"m{i}.py")
    collections = []

    def count(phase, info):
        if phase == "start":
            collections.append(info["generation"])

    gc.callbacks.append(count)
    try:
        gc.disable()  # the first batch of a process also builds its parser router
        try:
            process_batch(_task(src, tmp_path / "first", names))
            assert not gc.isenabled()
        finally:
            gc.enable()
        task = _task(src, tmp_path / "stage", names)
        collections.clear()
        outcome = process_batch(task)
        during = list(collections)
        assert gc.isenabled()
    finally:
        gc.callbacks.remove(count)
    assert outcome.rows == {"files": 60, "definitions": 3000, "imports": 3000}
    assert during == []
