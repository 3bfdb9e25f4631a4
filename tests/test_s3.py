"""OUT in object storage: real runs against a real S3-compatible server (moto's standalone
server on loopback, started here), read back with pyarrow and DuckDB.

A run to s3:// gives the rows of a run to a local folder; SIGKILL of the run at several points
and --resume give them too, never a row twice; a second coordinator on the same prefix loses
the create-only segment put and stops; a missing bucket or an unsupported scheme is exit 2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import S3_BUCKET as BUCKET
from helpers import cli_in_process, download_tables, run_cli, s3_env, start_moto
from helpers import s3_keys as keys
from resume_helpers import LOGGING_PARSER, Run, assert_same_output, copy_stdlib, run_args, snapshot
from snakebatch.schema import TABLES

pytest.importorskip("moto")
pytest.importorskip("boto3")

SLEEP_PER_FILE = 0.004
OPTIONS = ("--parser", LOGGING_PARSER, "--batch-bytes", "32KB", "-j", "2")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    assert copy_stdlib(root, 200) >= 150
    return root


@pytest.fixture(scope="module")
def baseline(corpus, tmp_path_factory):
    """The same job to a local folder."""
    out = tmp_path_factory.mktemp("baseline") / "out"
    cli_in_process(*run_args(corpus, out, *OPTIONS, "--no-compact"), check_codes=(0,))
    return snapshot(out)


def test_run_to_s3_gives_the_rows_of_a_local_run(s3, corpus, baseline, tmp_path):
    endpoint, client = s3
    cli_in_process(*run_args(corpus, f"s3://{BUCKET}/same", *OPTIONS), check_codes=(0,), env=s3_env(endpoint))
    assert_same_output(snapshot(download_tables(client, "same", tmp_path / "dl")), baseline)
    names = keys(client, "same")
    assert not [k for k in names if "/staging/" in k], "staging objects left after a complete run"
    assert "same/_snakebatch/complete.json" in names
    # A listing reader straight on the bucket (pyarrow's S3 filesystem) and DuckDB on the parts.
    import duckdb
    import pyarrow.dataset as ds
    from pyarrow import fs

    s3fs = fs.S3FileSystem(endpoint_override=endpoint, access_key="test", secret_key="test", region="us-east-1")
    files = ds.dataset(f"{BUCKET}/same/files", filesystem=s3fs, format="parquet").to_table()
    assert sorted(files.column("path").to_pylist()) == sorted(baseline["files"])
    count = duckdb.sql(f"select count(*), count(distinct path) from read_parquet('{tmp_path}/dl/files/*.parquet')")
    assert count.fetchall() == [(len(baseline["files"]), len(baseline["files"]))]


def test_storage_option_gives_the_endpoint(s3, tmp_path):
    endpoint, client = s3
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.py").write_text("def f():\n    return 1\n")
    environ = s3_env(endpoint)
    del environ["AWS_ENDPOINT_URL"]
    run_cli("run", source, "-o", f"s3://{BUCKET}/opt/", "--storage-option", f"endpoint={endpoint}",
            "--no-progress", "-j", "1", check_codes=(0,), env=environ)
    table = snapshot(download_tables(client, "opt", tmp_path / "dl"))
    assert set(table["files"]) == {"a.py"}
    again = cli_in_process("run", source, "-o", f"s3://{BUCKET}/opt", "--storage-option", f"endpoint={endpoint}",
                           "--no-progress", env=environ)
    assert again.returncode == 2 and "already holds a snakebatch job" in again.stderr


def test_missing_bucket_and_unsupported_scheme_exit_2_before_any_work(s3, tmp_path):
    endpoint, _ = s3
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.py").write_text("x = 1\n")
    missing = cli_in_process("run", source, "-o", "s3://no-such-bucket/out", "--no-progress", env=s3_env(endpoint))
    assert missing.returncode == 2, missing.stderr
    assert "no-such-bucket" in missing.stderr and "Traceback" not in missing.stderr
    ftp = cli_in_process("run", source, "-o", "ftp://host/out", "--no-progress", env=s3_env(endpoint))
    assert ftp.returncode == 2 and "(ftp://) is not supported" in ftp.stderr
    assert not (Path.cwd() / "ftp:").exists()
    bad = cli_in_process("run", source, "-o", tmp_path / "local", "--storage-option", "endpoint=x",
                         env=s3_env(endpoint))
    assert bad.returncode == 2 and "only for a SOURCE or an OUT in object storage" in bad.stderr


def test_file_url_is_a_local_folder(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.py").write_text("x = 1\n")
    cli_in_process("run", source, "-o", f"file://{tmp_path}/out", "--no-progress", check_codes=(0,))
    assert set(snapshot(tmp_path / "out")["files"]) == {"a.py"}


def _segments(client, prefix: str) -> int:
    return len([k for k in keys(client, prefix) if "/_snakebatch/ledger/" in k])


@pytest.mark.parametrize("segments", [2, pytest.param(5, marks=pytest.mark.slow), pytest.param(9, marks=pytest.mark.slow)])
def test_sigkill_then_resume_gives_the_same_rows(segments, s3, corpus, baseline, tmp_path):
    """Kill the whole run once `segments` ledger segments exist (in the middle of a commit's
    copies, or between commits), then resume: the rows of the local run, none twice."""
    endpoint, client = s3
    prefix = f"kill{segments}"
    url = f"s3://{BUCKET}/{prefix}"
    environ = s3_env(endpoint, SNAKEBATCH_TEST_PARSE_SLEEP=str(SLEEP_PER_FILE))
    run = Run(run_args(corpus, url, *OPTIONS), environ, tmp_path / "logs")
    while _segments(client, prefix) < segments and run.proc.poll() is None:
        time.sleep(0.005)
    code = run.kill_group()
    # What a listing reader sees between the kill and the resume: whole parts, no row twice.
    snapshot(download_tables(client, prefix, tmp_path / "between"))
    if code != 0:
        resumed = cli_in_process(*run_args(corpus, url, *OPTIONS, resume=True), env=s3_env(endpoint))
        assert resumed.returncode == 0, resumed.stderr
    assert_same_output(snapshot(download_tables(client, prefix, tmp_path / "after")), baseline)
    assert not [k for k in keys(client, prefix) if "/staging/" in k]


@pytest.mark.slow  # ~9 s of polling; a reader of the bucket while a refresh commits is in the default run
def test_a_reader_polling_the_bucket_during_a_run_never_sees_a_torn_part_or_a_row_twice(s3, corpus, baseline,
                                                                                       tmp_path):
    """A listing reader of PREFIX/files and PREFIX/definitions (pyarrow's S3 filesystem, as any
    reader) while the run commits: every listing reads whole parts, each file's row once, only
    files of the job; the rows grow to the local run's."""
    import pyarrow.dataset as ds
    from pyarrow import fs

    endpoint, client = s3
    prefix = "poll"
    store = fs.S3FileSystem(endpoint_override=endpoint, access_key="test", secret_key="test", region="us-east-1")
    environ = s3_env(endpoint, SNAKEBATCH_TEST_PARSE_SLEEP=str(SLEEP_PER_FILE))
    run = Run(run_args(corpus, f"s3://{BUCKET}/{prefix}", *OPTIONS), environ, tmp_path / "logs")
    seen = []
    while run.proc.poll() is None:
        try:
            files = ds.dataset(f"{BUCKET}/{prefix}/files", filesystem=store, format="parquet").to_table()
            definitions = ds.dataset(f"{BUCKET}/{prefix}/definitions", filesystem=store, format="parquet").to_table()
        except FileNotFoundError:  # before the first commit the table's prefix does not exist
            continue
        paths = files.column("path").to_pylist()
        assert len(paths) == len(set(paths)), "a row twice"
        assert set(paths) <= set(baseline["files"])
        assert set(definitions.column("path").to_pylist()) <= set(baseline["files"])
        seen.append(len(paths))
    assert run.proc.wait() == 0
    assert len(seen) >= 3 and seen[0] < len(baseline["files"]), seen  # it read the job while it grew
    assert_same_output(snapshot(download_tables(client, prefix, tmp_path / "dl")), baseline)


def test_second_coordinator_loses_the_conditional_put_and_stops(s3, corpus, baseline, tmp_path):
    endpoint, client = s3
    prefix = "two"
    url = f"s3://{BUCKET}/{prefix}"
    environ = s3_env(endpoint, SNAKEBATCH_TEST_PARSE_SLEEP=str(SLEEP_PER_FILE))
    first = Run(run_args(corpus, url, *OPTIONS), environ, tmp_path / "logs1")
    while _segments(client, prefix) < 3 and first.proc.poll() is None:
        time.sleep(0.005)
    assert first.proc.poll() is None, "the first run ended before the second started"
    second = Run(run_args(corpus, url, *OPTIONS, resume=True), environ, tmp_path / "logs2")
    codes = (first.wait(), second.wait())
    # Exactly one run goes on. Usually the second's open segment is put while the first is
    # between commits: the first's next segment put is refused and it stops (exit 1, resumable).
    # If the first commits between the second's reading of the ledger and its open, the second
    # loses its open put and stops at start (exit 2).
    assert sorted(codes) in ([0, 1], [0, 2]), (codes, first.stderr, second.stderr)
    loser = first if codes[0] else second
    assert "another snakebatch run is writing this job" in loser.stderr
    if codes[0] == 1:
        assert "--resume" in first.stderr
    assert_same_output(snapshot(download_tables(client, prefix, tmp_path / "dl")), baseline)


@pytest.mark.slow
def test_dask_workers_put_their_parts_in_the_bucket(s3, corpus, baseline, tmp_path):
    """--executor dask to s3://: no staging folder on a shared disk is asked for (the workers
    put their parts into the bucket), and the rows are the local run's."""
    pytest.importorskip("distributed")
    endpoint, client = s3
    run_cli(*run_args(corpus, f"s3://{BUCKET}/dask", *OPTIONS, "--executor", "dask"), check_codes=(0,),
            env=s3_env(endpoint))
    assert_same_output(snapshot(download_tables(client, "dask", tmp_path / "dl")), baseline)


def test_a_store_that_stops_answering_stops_the_job_resumable(corpus, tmp_path):
    """The server dies mid-run: after its (shortened) retries the run stops with exit 1 and the
    resume command, no traceback."""
    server, endpoint, client = start_moto()
    try:
        environ = s3_env(endpoint, SNAKEBATCH_TEST_PARSE_SLEEP=str(SLEEP_PER_FILE))
        run = Run(run_args(corpus, f"s3://{BUCKET}/gone", *OPTIONS, "--storage-option", "max_retries=2",
                           "--storage-option", "retry_timeout=2"), environ, tmp_path / "logs")
        while _segments(client, "gone") < 4 and run.proc.poll() is None:
            time.sleep(0.005)
    finally:
        server.kill()
        server.wait()
    assert run.wait(timeout=120) == 1, run.stderr
    assert "snakebatch: resume with:" in run.stderr and "--resume" in run.stderr
    assert "max_retries=2" in run.stderr  # the resume command repeats the storage options
    assert "Traceback" not in run.stderr


def _status(url: str, *args, environ: dict, codes=(0,)) -> dict:
    proc = run_cli("status", url, "--json", *args, check_codes=codes, env=environ)
    return json.loads(proc.stdout)


@pytest.mark.slow  # damage and repair on the bucket are in test_s3_generations
def test_status_of_a_job_in_the_bucket_reports_counts_and_damage(s3, tmp_path):
    """status s3://...: the counts of the ledger segments, the parts a listing reader sees, and
    parts not as committed: missing and size always, checksum only with --verify, unlisted."""
    endpoint, client = s3
    source = tmp_path / "src"
    source.mkdir()
    for i in range(6):
        (source / f"m{i}.py").write_text(f"import os\n\ndef f{i}():\n    return {i}\n" * 20)
    (source / "bad.py").write_bytes(b"def (:\n")
    url = f"s3://{BUCKET}/status"
    environ = s3_env(endpoint)
    cli_in_process("run", source, "-o", url, "--no-progress", "--batch-bytes", "2KB", "-j", "1", check_codes=(0,),
            env=environ)
    status = _status(url + "/", "--verify", environ=environ)
    assert status["state"] == "complete" and status["verified"] and status["damage"] == []
    assert status["output"] == url and status["source"] == str(source)
    assert status["files_done"] == 7 and status["runs"] == 1 and status["running_run"] is None
    assert status["batches"] >= 2 and status["parts"] == {t: status["batches"] for t in TABLES}
    assert sum(status["status_counts"].values()) == 7 and status["resume_command"] is None
    assert [s[0] for s in status["error_samples"]] == ["bad.py"] and status["error_samples"][0][2]
    text = run_cli("status", url, env=environ, check_codes=(0,)).stdout
    assert f"snakebatch: {url}: complete" in text and "7 done in" in text

    parts = sorted(k for k in keys(client, "status") if k.startswith("status/definitions/"))
    body = client.get_object(Bucket=BUCKET, Key=parts[0])["Body"].read()
    client.put_object(Bucket=BUCKET, Key=parts[0], Body=bytes([body[0] ^ 1]) + body[1:])  # same size
    assert _status(url, environ=environ)["damage"] == []  # sizes only, without --verify
    verified = _status(url, "--verify", environ=environ, codes=(1,))
    assert verified["state"] == "incomplete" and verified["damage"] == [["definitions", parts[0].rsplit("/")[-1],
                                                                          "checksum"]]
    client.delete_object(Bucket=BUCKET, Key=parts[0])
    client.put_object(Bucket=BUCKET, Key="status/files/part-99999999.parquet", Body=b"x")
    damaged = _status(url, environ=environ, codes=(1,))
    assert sorted(map(tuple, damaged["damage"])) == [("definitions", parts[0].rsplit("/")[-1], "missing"),
                                                     ("files", "part-99999999.parquet", "unlisted")]
    assert "--resume" in damaged["resume_command"] and url in damaged["resume_command"]
    text = run_cli("status", url, env=environ, check_codes=(1,)).stdout
    assert "DAMAGED:   2 part(s)" in text and "a resume redoes the batches of missing or resized parts" in text
    # The store was only read: no object was added by status.
    assert "status/files/part-99999999.parquet" in keys(client, "status")
    # A resume deletes the unlisted part and redoes the missing part's batch (it was --fresh).
    cli_in_process("run", source, "-o", url, "--no-progress", "--resume", "--batch-bytes", "2KB", "-j", "1",
            check_codes=(0,), env=environ)
    repaired = _status(url, "--verify", environ=environ)
    assert repaired["state"] == "complete" and repaired["damage"] == [] and repaired["files_done"] == 7
    missing = run_cli("status", f"s3://{BUCKET}/nothing-here", env=environ)
    assert missing.returncode == 2 and "holds no snakebatch job" in missing.stderr
    no_bucket = run_cli("status", "s3://no-such-bucket/out", env=environ)
    assert no_bucket.returncode == 2 and "no-such-bucket" in no_bucket.stderr and "Traceback" not in no_bucket.stderr
    local = run_cli("status", tmp_path, "--storage-option", "region=x", env=environ)
    assert local.returncode == 2 and "only for an OUT in object storage" in local.stderr


@pytest.mark.slow  # two killed runs; status of a bucket is in the default run
def test_status_calls_an_open_run_running_and_a_killed_one_resumable(s3, corpus, baseline, tmp_path):
    endpoint, client = s3
    prefix = "running"
    url = f"s3://{BUCKET}/{prefix}"
    environ = s3_env(endpoint, SNAKEBATCH_TEST_PARSE_SLEEP=str(SLEEP_PER_FILE))
    run = Run(run_args(corpus, url, *OPTIONS), environ, tmp_path / "logs")
    while _segments(client, prefix) < 3 and run.proc.poll() is None:
        time.sleep(0.005)
    assert run.proc.poll() is None, "the run ended before status was asked"
    running = _status(url, environ=s3_env(endpoint))
    assert running["state"] == "running" and running["running_run"] and running["damage"] == []
    assert running["batches"] >= 2 and running["last_segment_at"] > time.time() - 60
    run.kill_group()
    killed = _status(url, environ=s3_env(endpoint))  # no close segment: it looks running still
    assert killed["state"] == "running" and killed["running_run"] == running["running_run"]
    text = run_cli("status", url, env=s3_env(endpoint), check_codes=(0,)).stdout
    assert "a run killed without closing looks running too" in text
    assert "if that run was killed, resume with: snakebatch run" in text and "--resume" in text
    cli_in_process(*run_args(corpus, url, *OPTIONS, resume=True), check_codes=(0,), env=s3_env(endpoint))
    done = _status(url, environ=s3_env(endpoint))
    assert done["state"] == "complete" and done["runs"] == 2 and done["files_done"] == len(baseline["files"])
    assert done["running_run"] is None and done["resume_command"] is None


def test_resume_command_names_secret_storage_options_without_their_values(s3, tmp_path):
    """Keys, tokens and passwords given as --storage-option are printed as NAME=... with a note;
    the endpoint and region in full. Filled in, the command resumes the job."""
    endpoint, client = s3
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.py").write_text("import os\n")
    url = f"s3://{BUCKET}/secret"
    environ = s3_env(endpoint)
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        del environ[name]
    options = ["--storage-option", f"endpoint={endpoint}", "--storage-option", "access_key_id=test",
               "--storage-option", "secret_access_key=test", "--storage-option", "region=us-east-1"]
    run_cli("run", source, "-o", url, "--no-progress", "-j", "1", *options, check_codes=(0,), env=environ)
    client.put_object(Bucket=BUCKET, Key="secret/imports/part-99999999.parquet", Body=b"x")  # damage: unlisted
    status = _status(url, *options, environ=environ, codes=(1,))
    command = status["resume_command"]
    assert "--storage-option=secret_access_key=..." in command and "--storage-option=access_key_id=..." in command
    assert f"--storage-option=endpoint={endpoint}" in command and "--storage-option=region=us-east-1" in command
    assert "=test" not in command and "# fill in access_key_id, secret_access_key" in command
    assert "secret_access_key=test" not in run_cli("status", url, *options, env=environ).stdout
    filled = command.replace("=...", "=test").split(" # ")[0]
    resumed = subprocess.run(["bash", "-c", filled.replace("snakebatch ", f"{sys.executable} -m snakebatch ", 1)],
                             env=environ, capture_output=True, text=True, timeout=120, cwd=Path(__file__).parent.parent)
    assert resumed.returncode == 0, resumed.stderr
    assert _status(url, *options, environ=environ)["state"] == "complete"


@pytest.mark.parametrize("name, secret", [("secret_access_key", True), ("aws_session_token", True),
                                          ("access_key_id", True), ("password", True), ("sas_token", True),
                                          ("service_account_key", True), ("region", False),
                                          ("endpoint", False), ("skip_signature", False), ("max_retries", False)])
def test_which_storage_options_are_secret(name, secret):
    from snakebatch.store.objectstore import is_secret_option

    assert is_secret_option(name) is secret


@pytest.mark.slow
def test_dask_workers_with_separate_scratch_folders_fill_the_bucket(s3, corpus, baseline, tmp_path):
    """A local Dask cluster whose four workers each have their own scratch and working folder
    (TMPDIR, --local-directory), none shared with the coordinator or each other: the parts go
    through the bucket only, and the rows are the local pool's."""
    pytest.importorskip("distributed")
    from distributed import Client, Nanny, Scheduler, SpecCluster

    from helpers import cli_env

    endpoint, client = s3
    environ = s3_env(endpoint)
    scratch = {name: tmp_path / f"scratch-{name}" for name in ("a", "b", "c", "d")}
    workers = {}
    for name, folder in scratch.items():
        folder.mkdir()
        worker_env = {k: environ[k] for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                              "AWS_REGION")}
        worker_env.update(TMPDIR=str(folder), PYTHONPATH=cli_env()["PYTHONPATH"])
        workers[name] = {"cls": Nanny, "options": {"nthreads": 1, "local_directory": str(folder / "dask"),
                                                   "env": worker_env, "host": "127.0.0.1"}}
    scheduler = {"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard_address": None}}
    with SpecCluster(workers=workers, scheduler=scheduler) as cluster, \
            Client(cluster, set_as_default=False) as dask_client:
        import tempfile

        tmpdirs = dask_client.run(tempfile.gettempdir)
        assert sorted(tmpdirs.values()) == sorted(str(folder) for folder in scratch.values())
        run_cli(*run_args(corpus, f"s3://{BUCKET}/dask-scratch", *OPTIONS, "--executor", "dask",
                          "--scheduler", cluster.scheduler_address), check_codes=(0,), env=environ)
        pids = set(dask_client.run(os.getpid).values())
    assert_same_output(snapshot(download_tables(client, "dask-scratch", tmp_path / "dl")), baseline)
    stats = json.loads(client.get_object(Bucket=BUCKET, Key="dask-scratch/_snakebatch/stats.json")["Body"].read())
    ran = {batch["worker_pid"] for batch in stats["batches"] if batch["files"]}
    assert len(ran) > 1 and ran <= pids, (ran, pids)  # batches ran in the workers, none in the CLI
    for folder in scratch.values():  # each worker cleaned its own scratch: no part left behind
        assert not list(folder.glob("snakebatch-part-*"))
