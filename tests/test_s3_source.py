"""SOURCE in object storage: a tree uploaded to a real S3-compatible server (moto's, on loopback:
conftest.py's `s3` fixture), run into a local OUT and read back with pyarrow.

Its rows are a run's on the same tree as a local folder, every column but `mtime_ns` (the
object's last-modified, whole seconds), `batch_id` and `parse_ms`; the filters and `.gitignore`
objects take the same files; a missing bucket, an empty prefix and --refresh are exit 2 before any
work; an object gone between listing and reading is an io_error row; SIGKILL and --resume give
the same rows, no committed file parsed again.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from pathlib import Path

import pyarrow.dataset as ds
import pytest

import snakebatch
from helpers import S3_BUCKET, SAMPLES, cli_in_process, run_cli
from resume_helpers import LOGGING_PARSER, Run, copy_stdlib, env, parse_log, read_parts, run_args, snapshot
from snakebatch.engine.worker import BatchTask, process_batch
from snakebatch.schema import TABLES

# Differ between a folder's run and the bucket's: mtime_ns (the file's mtime there, the object's
# last-modified here), the `source` label (the folder's name there, the prefix's last part here),
# and timings and batch numbers between any two runs.
DIFFERENT = {"mtime_ns", "source", "batch_id", "parse_ms"}
MAX_FILE_SIZE = 2000


def _options(endpoint: str) -> dict:
    return {"endpoint": endpoint, "access_key_id": "test", "secret_access_key": "test", "region": "us-east-1"}


def _cli_env(endpoint: str, **extra) -> dict:
    return env(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test",
               AWS_REGION="us-east-1", **extra)


def upload(client, root: Path, prefix: str) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            client.put_object(Bucket=S3_BUCKET, Key=f"{prefix}/{path.relative_to(root).as_posix()}", Body=path.read_bytes())


def rows(out: Path) -> dict:
    """table -> sorted rows without the columns that differ between the two sources."""
    result = {}
    for table in TABLES:
        data = ds.dataset(str(out / table), format="parquet").to_table()
        keep = [name for name in data.column_names if name not in DIFFERENT]
        result[table] = sorted(data.select(keep).to_pylist(), key=repr)
    return result


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """sample_repos/tinylib plus what the listing order and the filters must get right: keys that
    sort before `.gitignore` (`-early.py`, `-dir/`), a nested `.gitignore` whose pattern matches
    such a key, an ignored folder, a VCS folder, a file over --max-file-size, an empty file."""
    root = tmp_path_factory.mktemp("tree") / "tinylib"
    shutil.copytree(SAMPLES / "tinylib", root)
    (root / "-early.py").write_text("def early():\n    return 1\n")
    (root / "-dir").mkdir()
    (root / "-dir" / "kept.py").write_text("import os\n")
    (root / "-dir" / "skipped.tmp").write_text("ignored by the root .gitignore's *.tmp\n")
    (root / "tinylib" / "sub" / ".gitignore").write_text("-secret.py\nbuild/\n")
    (root / "tinylib" / "sub" / "-secret.py").write_text("password = 1\n")
    (root / "tinylib" / "sub" / "build").mkdir()
    (root / "tinylib" / "sub" / "build" / "out.py").write_text("x = 1\n")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]\n")
    (root / "big.py").write_text("x = 1\n" * 1000)
    (root / "empty.py").write_text("")
    return root


@pytest.fixture(scope="module")
def bucket_tree(s3, tree) -> str:
    _, client = s3
    upload(client, tree, "tree")
    return f"s3://{S3_BUCKET}/tree"


def _run(source, out: Path, endpoint: str | None = None, **options):
    if endpoint is not None:
        options["storage_options"] = _options(endpoint)
    return snakebatch.run(source, out, workers=1, max_file_size=MAX_FILE_SIZE, progress=False, **options)


def test_rows_equal_a_local_run_of_the_same_tree(s3, tree, bucket_tree, tmp_path):
    endpoint, client = s3
    local = _run(tree, tmp_path / "local")
    remote = _run(bucket_tree, tmp_path / "remote", endpoint)
    assert remote.state == "complete" and remote.status_counts == local.status_counts
    assert rows(tmp_path / "remote") == rows(tmp_path / "local")
    files = {r["path"]: r for r in ds.dataset(str(tmp_path / "remote" / "files")).to_table().to_pylist()}
    assert "-early.py" in files and "-dir/kept.py" in files  # listed before the root .gitignore
    assert "-dir/skipped.tmp" not in files and "tinylib/sub/-secret.py" not in files
    assert "tinylib/sub/build/out.py" not in files and "generated/out.py" not in files
    assert not [p for p in files if p.startswith(".git/")]
    assert files["big.py"]["status"] == "too_large" and files["big.py"]["content_hash"] is None
    assert files["empty.py"]["status"] == "ok" and files["empty.py"]["size"] == 0
    assert files["assets/dot.png"]["status"] == "binary"
    assert {r["source"] for r in files.values()} == {"tree"}  # the prefix's last part
    # mtime_ns is the object's last-modified, in whole seconds.
    listed = client.list_objects_v2(Bucket=S3_BUCKET, Prefix="tree/")["Contents"]
    modified = {o["Key"][len("tree/"):]: int(o["LastModified"].timestamp()) * 10**9 for o in listed}
    assert {p: r["mtime_ns"] for p, r in files.items()} == {p: modified[p] for p in files}


@pytest.mark.parametrize("options", [
    {"include": ("*.py",)},
    {"exclude": ("tinylib/", "*.md")},
    {"gitignore": False},
    {"include": ("tinylib/**",), "exclude": ("*/sub/",)},
], ids=["include", "exclude", "no-gitignore", "both"])
def test_filters_take_what_they_take_in_a_folder(s3, tree, bucket_tree, tmp_path, options):
    endpoint, _ = s3
    local = _run(tree, tmp_path / "local", **options)
    remote = _run(bucket_tree, tmp_path / "remote", endpoint, **options)
    assert remote.files == local.files > 0
    assert rows(tmp_path / "remote") == rows(tmp_path / "local")


def test_plan_lists_and_counts_the_objects(s3, tree, bucket_tree):
    endpoint, _ = s3
    from snakebatch.report.plan import plan

    local = plan(tree, workers=1, max_file_size=MAX_FILE_SIZE)
    remote = plan(bucket_tree, workers=1, max_file_size=MAX_FILE_SIZE, storage_options=_options(endpoint))
    assert (remote.files, remote.bytes, remote.too_large, remote.languages) == (
        local.files, local.bytes, local.too_large, local.languages)
    assert remote.source == bucket_tree


def test_missing_bucket_empty_prefix_and_refresh_exit_2_before_any_work(s3, bucket_tree, tmp_path):
    endpoint, _ = s3
    environ = _cli_env(endpoint)
    out = tmp_path / "out"
    for source, expected in [
        ("s3://no-such-bucket/src", "no-such-bucket"),
        (f"s3://{S3_BUCKET}/nothing-here", "holds no object"),
        ("s3://", "names no bucket"),
    ]:
        proc = cli_in_process("run", source, "-o", out, "--no-progress", env=environ)
        assert proc.returncode == 2 and expected in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert not out.exists(), "OUT was created before SOURCE was checked"
    refresh = cli_in_process("run", bucket_tree, "-o", out, "--refresh", env=environ)
    assert refresh.returncode == 2 and "not supported for a SOURCE in object storage" in refresh.stderr
    plan = cli_in_process("plan", "s3://no-such-bucket/src", env=environ)
    assert plan.returncode == 2 and "no-such-bucket" in plan.stderr
    local_source = cli_in_process("run", tmp_path, "-o", out, "--source-option", "region=x", env=environ)
    assert local_source.returncode == 2 and "only for a SOURCE in object storage" in local_source.stderr


def test_source_option_overrides_storage_option(s3, bucket_tree, tmp_path):
    """--storage-option gives a wrong endpoint, --source-option the right one: SOURCE's store
    takes the latter; the resume command repeats both, the secret ones without their value."""
    endpoint, _ = s3
    environ = _cli_env(endpoint)
    del environ["AWS_ENDPOINT_URL"]
    proc = run_cli("run", bucket_tree, "-o", tmp_path / "out", "--no-progress", "--json",
                   "--storage-option", "endpoint=http://127.0.0.1:9", "--storage-option", "max_retries=0",
                   "--source-option", f"endpoint={endpoint}", "--source-option", "secret_access_key=test",
                   env=environ, check_codes=(0,))
    assert '"state":"complete"' in proc.stdout
    wrong = cli_in_process("run", bucket_tree, "-o", tmp_path / "out2", "--no-progress",
                           "--storage-option", "endpoint=http://127.0.0.1:9", "--storage-option", "max_retries=0",
                           env=environ)
    assert wrong.returncode == 2 and "SOURCE: cannot use" in wrong.stderr


def test_an_object_deleted_after_the_listing_is_an_io_error_row(s3, tmp_path):
    """The worker is handed a listed key that is gone by the time it reads it."""
    endpoint, client = s3
    client.put_object(Bucket=S3_BUCKET, Key="gone/there.py", Body=b"x = 1\n")
    task = BatchTask(batch_id=1, attempt=0, source=f"s3://{S3_BUCKET}/gone", staging=str(tmp_path / "staging"),
                     files=[("there.py", 6, 0), ("deleted.py", 10, 0)], source_options=_options(endpoint))
    outcome = process_batch(task)
    assert outcome.statuses == ["ok", "io_error"]
    table = ds.dataset(str(tmp_path / "staging" / "files.parquet")).to_table().to_pylist()
    gone = table[1]
    assert gone["path"] == "deleted.py" and gone["error_type"] == "OSError"
    assert "no such object" in gone["error_message"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    assert copy_stdlib(root, 150) >= 100
    return root


@pytest.mark.slow  # kill and resume on a bucket OUT are in the default run
def test_sigkill_then_resume_gives_the_same_rows(s3, corpus, tmp_path):
    """SIGKILL the run (coordinator and workers) once some batches are committed; --resume
    finishes it: the rows of an uninterrupted run of the folder (but mtime_ns), each file once,
    and no file committed before the kill parsed again."""
    endpoint, client = s3
    upload(client, corpus, "killme")
    url = f"s3://{S3_BUCKET}/killme"
    options = ("--parser", LOGGING_PARSER, "--batch-bytes", "16KB", "-j", "2", "--no-compact")
    baseline = tmp_path / "baseline"
    run_cli(*run_args(corpus, baseline, *options), check_codes=(0,), env=env())
    out = tmp_path / "out"
    log = tmp_path / "parse.log"
    first = Run(run_args(url, out, *options), _cli_env(endpoint, SNAKEBATCH_TEST_PARSE_LOG=str(log),
                                                        SNAKEBATCH_TEST_PARSE_SLEEP="0.01"), tmp_path / "logs")
    ledger = out / "_snakebatch" / "ledger.jsonl"
    deadline = time.monotonic() + 120
    while (not ledger.exists() or len(ledger.read_bytes().splitlines()) < 4) and first.proc.poll() is None:
        assert time.monotonic() < deadline, "no batch committed in time"
        time.sleep(0.005)
    assert first.kill_group() != 0, "the run ended before it was killed"
    committed = {p for t in read_parts(out)["files"] for p in t.column("path").to_pylist()}
    assert committed
    log.write_text("")
    second = run_cli(*run_args(url, out, *options, resume=True), env=_cli_env(endpoint, SNAKEBATCH_TEST_PARSE_LOG=str(log)),
                     check_codes=(0,))
    assert "Traceback" not in second.stderr
    assert not committed & set(parse_log(log)), "a file committed before the kill was parsed again"
    got, want = snapshot(out), snapshot(baseline)
    for snap in (got, want):
        for row in snap["files"].values():
            row.pop("mtime_ns")
            row.pop("source")
        for table in TABLES[1:]:
            snap[table] = Counter({tuple(kv for kv in key if kv[0] != "source"): n for key, n in snap[table].items()})
    assert got == want


def test_stream_of_a_bucket(s3, bucket_tree, tree):
    endpoint, _ = s3
    paths = set()
    for table, batch in snakebatch.stream(bucket_tree, workers=1, storage_options=_options(endpoint)):
        if table == "files":
            paths.update(batch.column("path").to_pylist())
    local = {p for table, batch in snakebatch.stream(tree, workers=1) if table == "files"
             for p in batch.column("path").to_pylist()}
    assert paths == local and "-early.py" in paths


def test_file_url_source_is_the_local_folder(tree, tmp_path):
    by_url = _run(f"file://{tree}", tmp_path / "url")
    assert by_url.state == "complete" and by_url.files > 0
    _run(tree, tmp_path / "plain")
    assert rows(tmp_path / "url") == rows(tmp_path / "plain")
