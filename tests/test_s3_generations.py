"""Compaction of an OUT in object storage (store/objectcompaction.py), against the real moto
server of conftest.py: a generation prefix committed by a ledger segment and published by a
pointer object, read by `snakebatch.open_dataset` (pyarrow) and DuckDB; the batch parts that a
plain listing reader sees stay as committed; SIGKILLs during the compaction and a resume; a
resume that redoes a batch whose part is missing or resized.
"""

from __future__ import annotations

import json
import shutil
import signal
import tempfile
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import snakebatch
from helpers import S3_BUCKET as BUCKET
from helpers import cli_in_process, download_tables, run_cli, s3_env, s3_keys
from resume_helpers import (
    LOGGING_PARSER,
    ROW_TABLES,
    Run,
    _rows,
    assert_same_output,
    copy_stdlib,
    env,
    run_args,
    snapshot,
)
from snakebatch.schema import TABLES

OPTIONS = ("--parser", LOGGING_PARSER, "--batch-bytes", "64KB", "-j", "2")


def _options(endpoint: str) -> dict:
    return {"endpoint": endpoint, "access_key_id": "test", "secret_access_key": "test", "region": "us-east-1"}


def dataset_snapshot(url: str, endpoint: str) -> dict:
    """What `open_dataset` gives, as resume_helpers.snapshot gives a folder; asserts no file's
    row is there twice."""
    tables = {table: snakebatch.open_dataset(url, table, storage_options=_options(endpoint)).to_table()
              for table in TABLES}
    paths = tables["files"].column("path").to_pylist()
    assert len(paths) == len(set(paths)), [p for p, n in Counter(paths).items() if n > 1][:5]
    result = {"files": {row["path"]: row for row in _rows([tables["files"]])}}
    for table in ROW_TABLES:
        result[table] = Counter(tuple(sorted(r.items())) for r in _rows([tables[table]]))
    return result


def generations(client, prefix: str) -> dict[str, list[str]]:
    """generation prefix -> its keys."""
    found: dict[str, list[str]] = {}
    for key in s3_keys(client, f"{prefix}/_snakebatch/generations"):
        found.setdefault(key.split("/")[3], []).append(key)
    return found


def pointers(client, prefix: str) -> list[dict]:
    return [json.loads(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
            for key in sorted(s3_keys(client, f"{prefix}/_snakebatch/current"))]


def copy_prefix(client, src: str, dst: str) -> None:
    for key in s3_keys(client, src):
        client.copy_object(Bucket=BUCKET, Key=dst + key[len(src):], CopySource={"Bucket": BUCKET, "Key": key})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    assert copy_stdlib(root, 120) >= 100
    return root


@pytest.fixture(scope="module")
def baseline(corpus, tmp_path_factory):
    """The same job to a local folder, uncompacted."""
    out = tmp_path_factory.mktemp("baseline") / "out"
    cli_in_process(*run_args(corpus, out, *OPTIONS, "--no-compact"), check_codes=(0,))
    return snapshot(out)


@pytest.fixture(scope="module")
def uncompacted(s3, corpus):
    """A complete job in the bucket, not compacted (--no-compact): the prefix `uncompacted`."""
    endpoint, _ = s3
    cli_in_process(*run_args(corpus, f"s3://{BUCKET}/uncompacted", *OPTIONS, "--no-compact"), check_codes=(0,),
            env=s3_env(endpoint))
    return "uncompacted"


def test_a_complete_job_gets_one_generation_that_open_dataset_and_duckdb_read(s3, corpus, baseline, tmp_path):
    endpoint, client = s3
    url = f"s3://{BUCKET}/gen"
    result = snakebatch.run(corpus, url, storage_options=_options(endpoint), progress=False, parsers=[LOGGING_PARSER],
                            batch_bytes="64KB", workers=2)
    assert result.state == "complete" and result.summary.compaction["parts_after"] == 3
    batches = result.summary.compaction["parts_before"] // 3
    assert batches > 3
    # One generation, one part per table, and its pointer; the batch parts stay as committed.
    found = generations(client, "gen")
    assert len(found) == 1 and sorted(k.split("/")[4] for k in next(iter(found.values()))) == sorted(TABLES)
    [pointer] = pointers(client, "gen")
    assert pointer["generation"] == 1 and len(pointer["covers"]) == batches
    assert_same_output(dataset_snapshot(url, endpoint), baseline)
    # A plain listing reader of gen/<table>/ reads the batch parts: the same rows.
    assert_same_output(snapshot(download_tables(client, "gen", tmp_path / "dl")), baseline)
    assert len(list((tmp_path / "dl" / "files").glob("*.parquet"))) == batches
    assert [f.rsplit("/", 1)[-1] for f in result.dataset("imports").files] == ["part-c0001-00000.parquet"]
    # DuckDB: on the dataset open_dataset gives, and on the generation's parts downloaded.
    import duckdb

    connection = duckdb.connect()
    connection.register("files_dataset", result.dataset("files"))
    assert connection.sql("select count(*), count(distinct path) from files_dataset").fetchall() == \
        [(len(baseline["files"]), len(baseline["files"]))]
    for key in next(iter(found.values())):
        target = tmp_path / "gen" / key.split("/", 4)[4]
        target.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(BUCKET, key, str(target))
    assert duckdb.sql(f"select count(distinct path) from read_parquet('{tmp_path}/gen/files/*.parquet')").fetchall() \
        == [(len(baseline["files"]),)]
    status = json.loads(run_cli("status", url, "--json", "--verify", check_codes=(0,), env=s3_env(endpoint)).stdout)
    assert status["state"] == "complete" and status["compaction_generation"] == 1 and status["damage"] == []
    assert "(compacted, generation 1)" in run_cli("status", url, check_codes=(0,), env=s3_env(endpoint)).stdout


def test_resumes_that_add_files_publish_new_generations_and_keep_the_previous_one(s3, tmp_path):
    endpoint, client = s3
    source = tmp_path / "src"
    source.mkdir()
    url = f"s3://{BUCKET}/grow"
    options = dict(storage_options=_options(endpoint), progress=False, batch_bytes="2KB", workers=1)
    paths = set()
    for round_number in range(3):
        for i in range(4):
            name = f"r{round_number}_{i}.py"
            (source / name).write_text(f"import os\n\ndef f{i}():\n    return {i}\n" * 20)
            paths.add(name)
        result = snakebatch.run(source, url, resume=round_number > 0, **options)
        assert result.state == "complete" and result.summary.files_this_run == 4
        assert result.summary.compaction is not None
        files = result.dataset("files").to_table().column("path").to_pylist()
        assert sorted(files) == sorted(paths)  # each file once
        # The newest generation and the one before it (a reader may have resolved it a moment ago).
        assert sorted(g.split("-")[0] for g in generations(client, "grow")) == \
            [f"{g:010d}" for g in range(max(1, round_number), round_number + 2)]
    assert [p["generation"] for p in pointers(client, "grow")] == [1, 2, 3]
    # A run with nothing new compacts nothing.
    again = snakebatch.run(source, url, resume=True, **options)
    assert again.summary.files_this_run == 0 and again.summary.compaction is None
    assert len(pointers(client, "grow")) == 3


def test_recovery_puts_a_missing_pointer_and_deletes_an_orphan_generation(s3, corpus, baseline, uncompacted):
    """The two states a compaction cut off leaves, built: a committed generation without its
    pointer (killed between steps 2 and 3), and a generation prefix no segment committed (killed
    while writing it). A resume finishes and cleans; the job is not compacted again."""
    endpoint, client = s3
    copy_prefix(client, uncompacted, "cut")
    url = f"s3://{BUCKET}/cut"
    cli_in_process(*run_args(corpus, url, *OPTIONS, resume=True), check_codes=(0,), env=s3_env(endpoint))
    [pointer] = s3_keys(client, "cut/_snakebatch/current")
    client.delete_object(Bucket=BUCKET, Key=pointer)
    orphan = "cut/_snakebatch/generations/0000000002-deadbeef/files/part-c0002-00000.parquet"
    client.put_object(Bucket=BUCKET, Key=orphan, Body=b"half")
    # Without its pointer, readers read the batch parts: complete, each row once.
    assert_same_output(dataset_snapshot(url, endpoint), baseline)
    resumed = cli_in_process(*run_args(corpus, url, *OPTIONS, "--json", resume=True), check_codes=(0,),
                      env=s3_env(endpoint))
    summary = json.loads(resumed.stdout)
    assert summary["files_this_run"] == 0 and summary["compaction"] is None
    assert s3_keys(client, "cut/_snakebatch/current") == [pointer]
    assert orphan not in s3_keys(client, "cut") and len(generations(client, "cut")) == 1
    assert_same_output(dataset_snapshot(url, endpoint), baseline)


# (wait for, then sleep): the first object of the generation (writing its parts), later in it,
# and its pointer (committed, before the previous generation is deleted).
MOMENTS = [("generations", 0.0), pytest.param("current", 0.0, marks=pytest.mark.slow),
           pytest.param("generations", 0.05, marks=pytest.mark.slow),
           pytest.param("generations", 0.15, marks=pytest.mark.slow),
           pytest.param("ledger-compact", 0.0, marks=pytest.mark.slow),
           pytest.param("current", 0.01, marks=pytest.mark.slow)]


def _compact_segment(client, prefix: str) -> bool:
    keys = sorted(s3_keys(client, f"{prefix}/_snakebatch/ledger"))
    return bool(keys) and b'"compact"' in client.get_object(Bucket=BUCKET, Key=keys[-1])["Body"].read()


@pytest.mark.parametrize("event, delay", MOMENTS)
def test_sigkill_during_compaction_then_resume(s3, corpus, baseline, uncompacted, event, delay, tmp_path):
    """SIGKILL the run's process group at a moment of the compaction taken from the bucket; in
    between, open_dataset gives every file once; the resume completes without parsing and
    leaves one generation (or two: the previous one is kept), each file once."""
    endpoint, client = s3
    prefix = f"killc-{event}-{int(delay * 1000)}"
    copy_prefix(client, uncompacted, prefix)
    url = f"s3://{BUCKET}/{prefix}"
    run = Run(run_args(corpus, url, *OPTIONS, resume=True), s3_env(endpoint), tmp_path / "logs")

    def reached() -> bool:
        if event == "ledger-compact":
            return _compact_segment(client, prefix)
        return bool(s3_keys(client, f"{prefix}/_snakebatch/{event}"))

    while not reached() and run.proc.poll() is None:
        time.sleep(0.002)
    time.sleep(delay)
    code = run.kill_group()
    # Once the first part of the generation is there, the rest of the compaction is still ahead.
    assert code == -signal.SIGKILL if (event, delay) == ("generations", 0.0) else code in (0, -signal.SIGKILL), \
        run.stderr
    assert_same_output(dataset_snapshot(url, endpoint), baseline)
    resumed = cli_in_process(*run_args(corpus, url, *OPTIONS, "--json", resume=True), check_codes=(0,),
                      env=s3_env(endpoint))
    assert json.loads(resumed.stdout)["files_this_run"] == 0
    assert_same_output(dataset_snapshot(url, endpoint), baseline)
    found = generations(client, prefix)
    assert 1 <= len(found) <= 2 and not s3_keys(client, f"{prefix}/_snakebatch/staging")
    assert pointers(client, prefix)[-1]["prefix"].split("/")[-1] in found
    status = json.loads(run_cli("status", url, "--json", "--verify", check_codes=(0,), env=s3_env(endpoint)).stdout)
    assert status["state"] == "complete" and status["compaction_generation"] >= 1


def test_a_resume_redoes_the_batches_of_a_missing_and_a_resized_part(s3, corpus, baseline, uncompacted, tmp_path):
    """A compacted job whose bucket lost one batch part and had another rewritten to another
    size: status names both, a resume redoes exactly those two batches (a drop segment), the
    generation that held them is withdrawn and rebuilt, and every file is there once."""
    endpoint, client = s3
    copy_prefix(client, uncompacted, "redo")
    url = f"s3://{BUCKET}/redo"
    environ = s3_env(endpoint)
    cli_in_process(*run_args(corpus, url, *OPTIONS, resume=True), check_codes=(0,), env=environ)  # compacts
    parts = sorted(k for k in s3_keys(client, "redo") if k.startswith("redo/files/"))
    lost, resized = parts[1], parts[2].replace("/files/", "/imports/")
    client.delete_object(Bucket=BUCKET, Key=lost)
    client.put_object(Bucket=BUCKET, Key=resized, Body=b"not the part")
    status = json.loads(run_cli("status", url, "--json", check_codes=(1,), env=environ).stdout)
    assert sorted(map(tuple, status["damage"])) == [("files", lost.rsplit("/")[-1], "missing"),
                                                    ("imports", resized.rsplit("/")[-1], "size")]
    text = run_cli("status", url, check_codes=(1,), env=environ).stdout
    assert "a resume redoes the batches of missing or resized parts" in text
    redone = {int(k.rsplit("-")[-1][:8]) for k in (lost, resized)}
    resumed = cli_in_process(*run_args(corpus, url, *OPTIONS, "--json", resume=True), check_codes=(0,), env=environ)
    summary = json.loads(resumed.stdout)
    files_in = {b["batch_id"]: b["files"] for b in json.loads(client.get_object(
        Bucket=BUCKET, Key="uncompacted/_snakebatch/stats.json")["Body"].read())["batches"]}
    assert summary["files_this_run"] == sum(files_in[b] for b in redone) > 0
    assert "2 batch(es) to redo" in summary["recovery"] and "withdrew compacted generation 1" in summary["recovery"]
    assert_same_output(dataset_snapshot(url, endpoint), baseline)
    assert_same_output(snapshot(download_tables(client, "redo", tmp_path / "dl")), baseline)
    assert [p["generation"] for p in pointers(client, "redo")] == [1, 2, 3]  # 2: withdrawn (empty)
    done = json.loads(run_cli("status", url, "--json", "--verify", check_codes=(0,), env=environ).stdout)
    assert done["state"] == "complete" and done["damage"] == [] and done["compaction_generation"] == 3


# -- the next generation begun in the tail (store/objectcompaction.py EarlyGeneration) ----------

# 32 KB batches (~28) and this sleep per file: ~1.3 s of batches left when the generation begins
# (at the 8th final one), enough for a loaded machine's coordinator to step into it.
TAIL_OPTIONS = ("--parser", LOGGING_PARSER, "--batch-bytes", "32KB", "-j", "2")
TAIL_SLEEP = 0.03


def test_a_generation_begins_while_the_last_batches_run_and_keeps_rows_in_batch_order(s3, corpus, baseline):
    endpoint, client = s3
    url = f"s3://{BUCKET}/early"
    proc = cli_in_process(*run_args(corpus, url, *TAIL_OPTIONS, "--json"), check_codes=(0,), env=env(sleep=TAIL_SLEEP))
    summary = json.loads(proc.stdout)
    compaction, batches = summary["compaction"], summary["batches_this_run"]
    # Part of it was written before the last batch committed, and is not serial time.
    assert 1 <= compaction["early_batches"] < batches, compaction
    assert compaction["early_s"] > 0 and summary["serial"]["compaction_overlapped_s"] == compaction["early_s"]
    assert compaction["parts_before"] == 3 * batches and compaction["parts_after"] == 3
    assert_same_output(dataset_snapshot(url, endpoint), baseline)
    (keys,) = generations(client, "early").values()
    (files,) = [key for key in keys if "/files/" in key]
    batch_ids = pq.read_table(pa.BufferReader(client.get_object(Bucket=BUCKET, Key=files)["Body"].read()),
                              columns=["batch_id"])["batch_id"].to_pylist()
    assert len(set(batch_ids)) > compaction["early_batches"] and batch_ids == sorted(batch_ids)


@pytest.fixture
def short_tmp():
    """A temporary folder of its own for a run (TMPDIR), with a path short enough for the pool's
    Unix socket (a test's tmp_path under xdist is not)."""
    folder = Path(tempfile.mkdtemp(prefix="sb-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_sigint_while_a_generation_is_begun_in_the_tail_leaves_nothing_of_it(s3, corpus, baseline, short_tmp,
                                                                              tmp_path):
    """The generation's parts are written to a scratch folder (and put once they are large): a
    stopped run deletes the folder, and nothing of the generation is in the bucket."""
    endpoint, client = s3
    url, scratch = f"s3://{BUCKET}/early-int", short_tmp
    run = Run(run_args(corpus, url, *TAIL_OPTIONS), env(sleep=TAIL_SLEEP, TMPDIR=str(scratch)), tmp_path / "logs")
    while not list(scratch.glob("snakebatch-compact-*")) and run.proc.poll() is None:
        time.sleep(0.0005)
    run.signal_group(signal.SIGINT)
    assert run.wait() == 130, run.stderr
    assert not list(scratch.glob("snakebatch-compact-*"))
    assert not generations(client, "early-int") and not pointers(client, "early-int")
    status = json.loads(run_cli("status", url, "--json", check_codes=(0, 1), env=s3_env(endpoint)).stdout)
    assert status["state"] == "incomplete" and status["compaction_generation"] in (0, None)
    assert status["files_done"] < len(baseline["files"])  # begun while batches were left to run
    cli_in_process(*run_args(corpus, url, *TAIL_OPTIONS, resume=True), check_codes=(0,), env=s3_env(endpoint))
    assert_same_output(dataset_snapshot(url, endpoint), baseline)
    assert len(generations(client, "early-int")) == 1
