"""Faults of object storage, through a fault-injecting proxy (tests/faultproxy.py) in front of a
real moto server on loopback: real runs, real requests, read back with pyarrow and DuckDB.

Throttling (503 SlowDown) and dropped or reset connections are retried and the run gives a
clean run's rows, for OUT and for SOURCE in the bucket; a create-only put whose answer was lost
is the run's own, not another run's; a store that refuses every PUT after some batches committed stops the job
resumable (exit 1, the resume command printed, no traceback), the bucket holding only parts of
committed batches, and a resume through a healthy endpoint completes it; refused credentials are
exit 2 naming the credentials, before any work, for OUT and for SOURCE, and a store failing
through its retries at the start is exit 2 saying so. A committed batch costs
8 requests (counted at the proxy). (A missing bucket and an unsupported scheme: tests/test_s3.py,
tests/test_s3_source.py and tests/test_config.py.)
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from faultproxy import FaultProxy

import snakebatch
from helpers import ROOT, cli_in_process, download_tables, s3_env
from helpers import S3_BUCKET as BUCKET
from helpers import s3_keys as keys
from resume_helpers import LOGGING_PARSER, Run, assert_same_output, copy_stdlib, run_args, snapshot
from snakebatch.schema import TABLES

pytest.importorskip("moto")
pytest.importorskip("boto3")

OPTIONS = ("--parser", LOGGING_PARSER, "--batch-bytes", "32KB", "-j", "2", "--no-compact")
FAST_RETRIES = ("--storage-option", "max_retries=2", "--storage-option", "retry_timeout=5")
STAGED_PART = r"/_snakebatch/staging/.*\.parquet$"


@pytest.fixture
def proxy(s3):
    endpoint, _ = s3
    proxy = FaultProxy(endpoint)
    yield proxy
    proxy.close()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    assert copy_stdlib(root, 60) >= 50
    return root


@pytest.fixture(scope="module")
def baseline(corpus, tmp_path_factory):
    """The same job into a local folder."""
    out = tmp_path_factory.mktemp("baseline") / "out"
    _run(corpus, out)
    return snapshot(out)


def _storage(endpoint: str) -> dict:
    return {"endpoint": endpoint, "access_key_id": "test", "secret_access_key": "test", "region": "us-east-1"}


def _run(source, out, endpoint: str | None = None, **options):
    if endpoint is not None:
        options["storage_options"] = _storage(endpoint)
    return snakebatch.run(source, str(out), workers=2, batch_bytes="32KB", parsers=[LOGGING_PARSER], compact=False,
                          progress=False, **options)


def _segments(client, prefix: str) -> list[dict]:
    found = sorted(k for k in keys(client, prefix) if "/_snakebatch/ledger/" in k)
    return [json.loads(client.get_object(Bucket=BUCKET, Key=k)["Body"].read()) for k in found]


def _assert_only_committed_parts(client, prefix: str, between: Path) -> tuple[int, int]:
    """Every part a listing reader of PREFIX/<table>/ sees belongs to a batch a ledger segment
    committed (none dropped), and the parts read back whole, no row twice. Returns how many
    batches and files are committed."""
    segments = _segments(client, prefix)
    dropped = {b for s in segments if s["kind"] == "drop" for b in s["dropped"]}
    committed = {s["entry"]["batch_id"] for s in segments if s["kind"] == "batch"} - dropped
    for table in TABLES:
        parts = [k.rsplit("/", 1)[1] for k in keys(client, f"{prefix}/{table}")]
        assert {int(p[len("part-"):-len(".parquet")]) for p in parts} <= committed, (table, parts, committed)
    snapshot(download_tables(client, prefix, between))
    files = sum(len(s["entry"]["paths"]) for s in segments if s["kind"] == "batch" and s["entry"]["batch_id"] in committed)
    return len(committed), files


def test_throttling_and_dropped_connections_are_retried(s3, proxy, corpus, baseline, tmp_path):
    """503 SlowDown on a burst of requests of every kind, then on staged part puts, dropped and
    reset connections: the run completes with a clean run's rows, and each faulted request was
    answered by the server on a retry."""
    _, client = s3
    faults = [proxy.inject("slowdown", 3), proxy.inject("slowdown", 4, "PUT", STAGED_PART),
              proxy.inject("drop", 2, "PUT", STAGED_PART), proxy.inject("reset", 2, "PUT"),
              proxy.inject("reset", 1, "GET"), proxy.inject("slowdown", 2, "POST")]
    result = _run(corpus, f"s3://{BUCKET}/flaky", proxy.endpoint)
    assert result.state == "complete" and result.exit_code == 0
    assert [f.hits for f in faults] == [f.count for f in faults]
    for request in proxy.requests(faulted=True):
        later = proxy.log[proxy.log.index(request) + 1:]
        assert any(r.method == request.method and r.path == request.path and r.status and r.status < 300
                   for r in later), f"{request.method} {request.path} was not retried to success"
    assert_same_output(snapshot(download_tables(client, "flaky", tmp_path / "dl")), baseline)
    import duckdb

    paths = duckdb.sql(f"select count(*), count(distinct path) from read_parquet('{tmp_path}/dl/files/*.parquet')")
    assert paths.fetchall() == [(len(baseline["files"]), len(baseline["files"]))]


def test_throttled_reads_of_a_source_in_the_bucket_are_retried(s3, proxy, corpus, tmp_path):
    """SOURCE in the bucket: 503s and reset connections on its listing and object reads are
    retried; the rows are those of a run straight to the server, no io_error among them."""
    endpoint, client = s3
    for path in sorted(corpus.rglob("*.py")):
        client.put_object(Bucket=BUCKET, Key=f"faultsrc/{path.relative_to(corpus).as_posix()}", Body=path.read_bytes())
    source = f"s3://{BUCKET}/faultsrc"
    clean = _run(source, tmp_path / "clean", endpoint)
    faults = [proxy.inject("slowdown", 2, "GET", r"list-type=2"), proxy.inject("slowdown", 4, "GET", r"\.py$"),
              proxy.inject("reset", 2, "GET", r"\.py$"), proxy.inject("drop", 1, "GET", r"\.py$")]
    flaky = _run(source, tmp_path / "flaky", proxy.endpoint)
    assert flaky.state == "complete" and [f.hits for f in faults] == [f.count for f in faults]
    assert flaky.status_counts == clean.status_counts and "io_error" not in flaky.status_counts
    assert_same_output(snapshot(tmp_path / "flaky"), snapshot(tmp_path / "clean"))


def test_a_committed_batch_costs_eight_requests(s3, proxy, corpus, baseline, tmp_path):
    """Counted at the proxy on a clean run: per committed batch 3 part puts, 1 segment put, 3
    server-side copies, 1 bulk delete; the rest is the run's own (job record, open and close
    segments, listings, stats)."""
    _, client = s3
    result = _run(corpus, f"s3://{BUCKET}/count", proxy.endpoint)
    assert result.state == "complete"
    batches = sum(1 for s in _segments(client, "count") if s["kind"] == "batch")
    per_kind = Counter()
    for r in proxy.log:
        if r.method == "PUT" and "x-amz-copy-source" in {k.lower() for k in r.headers}:
            per_kind["copy"] += 1
        elif r.method == "PUT" and "/_snakebatch/staging/" in r.path:
            per_kind["part put"] += 1
        elif r.method == "PUT" and "/_snakebatch/ledger/" in r.path:
            per_kind["segment put"] += 1
        elif r.method == "POST" and "delete" in r.path:
            per_kind["bulk delete"] += 1
        else:
            per_kind[f"other {r.method}"] += 1
    assert per_kind["part put"] == 3 * batches and per_kind["copy"] == 3 * batches
    assert per_kind["segment put"] == batches + 2  # and the run's open and close segments
    assert per_kind["bulk delete"] == batches
    print(f"{batches} batches, {len(proxy.log)} requests: {dict(per_kind)}")


@pytest.mark.slow  # ~9 s; a store that stops answering mid-job stops it resumable in test_s3.py's default run
@pytest.mark.parametrize("kind", ["slowdown", "denied"])
def test_a_store_that_refuses_every_put_stops_the_job_resumable(kind, s3, proxy, corpus, baseline, tmp_path):
    """After some batches committed every PUT gets 503 SlowDown (retried, max_retries=2) or 403
    (not retried): exit 1 with the resume command, no traceback; the bucket holds parts of
    committed batches only; the printed resume command, run through the healed endpoint, gives
    a clean run's rows."""
    endpoint, client = s3
    prefix = f"refused-{kind}"
    environ = s3_env(endpoint, SNAKEBATCH_TEST_PARSE_SLEEP="0.05")
    del environ["AWS_ENDPOINT_URL"]
    run = Run(run_args(corpus, f"s3://{BUCKET}/{prefix}", *OPTIONS, *FAST_RETRIES,
                       "--storage-option", f"endpoint={proxy.endpoint}"), environ, tmp_path / "logs")
    while len(_segments(client, prefix)) < 4 and run.proc.poll() is None:  # open and 3 batches
        time.sleep(0.01)
    proxy.inject(kind, method="PUT")
    code = run.wait(timeout=120)
    assert code == 1, run.stderr
    assert "Traceback" not in run.stderr and "Debug source" not in run.stderr  # obstore's multi-line dump
    stopped = run.stderr.split("snakebatch: stopped: ", 1)[1].splitlines()[0]
    answer = {"slowdown": "HTTP 503 SlowDown: Please reduce your request rate. (after 2 retries)",
              "denied": "HTTP 403 InvalidAccessKeyId"}[kind]
    assert f"/{BUCKET}/{prefix}/" in stopped and answer in stopped, stopped
    batches, files = _assert_only_committed_parts(client, prefix, tmp_path / "between")
    assert batches >= 3 and files < len(baseline["files"]) and proxy.requests("PUT", faulted=True)
    command = run.stderr.split("snakebatch: resume with: ", 1)[1].splitlines()[0]
    assert "--resume" in command and f"endpoint={proxy.endpoint}" in command and "max_retries=2" in command
    proxy.heal()
    del environ["SNAKEBATCH_TEST_PARSE_SLEEP"]
    resumed = subprocess.run(["bash", "-c", command.replace("snakebatch ", f"{sys.executable} -m snakebatch ", 1)
                              + " --no-compact"],
                             env=environ, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_output(snapshot(download_tables(client, prefix, tmp_path / "after")), baseline)
    assert not [k for k in keys(client, prefix) if "/staging/" in k]


@pytest.mark.parametrize("kind", ["denied", pytest.param("signature", marks=pytest.mark.slow)])
def test_refused_credentials_are_exit_2_before_any_work(kind, s3, proxy, tmp_path, monkeypatch):
    """Every request answered 403 (InvalidAccessKeyId, SignatureDoesNotMatch): exit 2 naming the
    credentials and the store's code, before any work: nothing put, no OUT (and no local folder
    `s3:`), for an OUT and for a SOURCE in object storage."""
    _, client = s3
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.py").write_text("import os\n")
    client.put_object(Bucket=BUCKET, Key=f"creds-src-{kind}/a.py", Body=b"import os\n")
    proxy.inject(kind)
    code = {"denied": "InvalidAccessKeyId", "signature": "SignatureDoesNotMatch"}[kind]
    environ = s3_env("http://127.0.0.1:9")  # nothing listens there: only the option's endpoint is used
    option = ("--storage-option", f"endpoint={proxy.endpoint}")
    monkeypatch.chdir(tmp_path)  # where a local folder `s3:` would go
    for args, what in [(("run", source, "-o", f"s3://{BUCKET}/creds-{kind}"), "-o/--output"),
                       (("run", f"s3://{BUCKET}/creds-src-{kind}", "-o", tmp_path / "out"), "SOURCE"),
                       (("plan", f"s3://{BUCKET}/creds-src-{kind}"), "SOURCE"),
                       (("status", f"s3://{BUCKET}/creds-{kind}"), "-o/--output")]:
        proc = cli_in_process(*args, *option, env=environ)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr and proc.stderr.startswith(f"snakebatch: error: {what}: "), proc.stderr
        assert "credentials" in proc.stderr and code in proc.stderr and "AWS_ACCESS_KEY_ID" in proc.stderr
    assert keys(client, f"creds-{kind}") == [] and not proxy.requests("PUT")
    assert not (tmp_path / "out").exists() and not (tmp_path / "s3:").exists()


def test_a_store_that_keeps_failing_at_the_start_is_exit_2_nothing_done(s3, proxy, tmp_path):
    """Every request 503 through the (shortened) retries before any work: exit 2 saying the store
    kept failing and nothing was done, not blaming the credentials; each request was retried."""
    _, client = s3
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.py").write_text("import os\n")
    proxy.inject("slowdown")
    proc = cli_in_process("run", source, "-o", f"s3://{BUCKET}/failing", "--storage-option",
                          f"endpoint={proxy.endpoint}", "--storage-option", "max_retries=1",
                          env=s3_env("http://127.0.0.1:9"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "the store kept failing" in proc.stderr and "HTTP 503 SlowDown" in proc.stderr, proc.stderr
    assert "nothing was done" in proc.stderr and "credentials" not in proc.stderr
    assert len(proxy.requests()) == 2 and keys(client, "failing") == []  # the request and its one retry


def test_a_lost_answer_to_a_create_only_put_is_not_another_run(s3, proxy, corpus, baseline, tmp_path):
    """The server stores the job record and a ledger segment but the answer is lost (connection
    closed): the client's retry of the create-only put finds the object there (412). That object
    is this run's own put, not another run's: the run goes on and completes."""
    _, client = s3
    faults = [proxy.inject("lost", 1, "PUT", r"/_snakebatch/job\.json$"),
              proxy.inject("lost", 1, "PUT", r"/_snakebatch/ledger/0000000003\.json$")]
    result = _run(corpus, f"s3://{BUCKET}/lost", proxy.endpoint)
    assert result.state == "complete", result.summary.stop_reason
    assert [f.hits for f in faults] == [1, 1]
    for fault in (r"job\.json", r"0000000003\.json"):
        assert [r.status for r in proxy.requests("PUT", fault)] == [200, 412]  # stored, then the retry's answer
    assert_same_output(snapshot(download_tables(client, "lost", tmp_path / "dl")), baseline)
