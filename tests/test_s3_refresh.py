"""`--refresh` of an OUT in object storage (engine/refresh.py ObjectRefreshSink,
store/objectcompaction.py `refresh`), against the real moto server of conftest.py: after edits of
every kind, `open_dataset` gives exactly what a fresh local run gives, only the changed files are
parsed, the change feed is in the bucket; a refresh with nothing to change writes nothing new;
SIGKILLs during a refresh leave the old snapshot or the new one, and a following run finishes it.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import time

import pyarrow.parquet as pq
import pytest
from test_s3_generations import _options, copy_prefix, dataset_snapshot, pointers

import snakebatch
from helpers import S3_BUCKET as BUCKET
from helpers import cli_in_process, download_tables, run_cli, s3_env, s3_keys
from resume_helpers import LOGGING_PARSER, Run, assert_same_output, copy_stdlib, env, run_args, snapshot

OPTIONS = ("--parser", LOGGING_PARSER, "-j", "2")


def _edit(source) -> dict:
    """Edits of every kind; returns path -> the change a refresh must report."""
    files = sorted(p for p in source.rglob("*.py"))
    for path in files[:12]:
        path.write_text(path.read_text() + "\n\ndef refreshed():\n    return 1\n")
    files[12].unlink()
    files[13].unlink()
    (source / "brand_new.py").write_text("import json\n\nclass Added:\n    pass\n")
    stamp = os.stat(files[14]).st_mtime_ns + 5_000_000_000
    os.utime(files[14], ns=(stamp, stamp))
    return {"modified": 12, "deleted": 2, "added": 1, "touched": 1}


@pytest.fixture(scope="module")
def job(s3, tmp_path_factory):
    """A complete (compacted) job of `source` in the bucket's prefix `base`, then `source`
    edited: (source, the old snapshot, the fresh local run of the edited source, the edits)."""
    endpoint, client = s3
    source = tmp_path_factory.mktemp("src")
    assert copy_stdlib(source, 60) >= 50
    past = time.time() - 3600  # older than the racy-clean margin of the job's stat data: trusted
    for path in source.rglob("*.py"):
        os.utime(path, (past, past))
    url = f"s3://{BUCKET}/base"
    cli_in_process(*run_args(source, url, *OPTIONS, "--batch-bytes", "32KB"), check_codes=(0,), env=s3_env(endpoint))
    old = dataset_snapshot(url, endpoint)
    edits = _edit(source)
    fresh = tmp_path_factory.mktemp("fresh") / "out"
    cli_in_process(*run_args(source, fresh, *OPTIONS), check_codes=(0,))
    return source, old, snapshot(fresh), edits


def _refresh(source, prefix: str, endpoint: str, *extra) -> dict:
    done = cli_in_process(*run_args(source, f"s3://{BUCKET}/{prefix}", "--refresh", "--json", *OPTIONS, *extra),
                   check_codes=(0,), env=s3_env(endpoint))
    return json.loads(done.stdout)


def test_edits_then_refresh_equals_a_fresh_run_and_writes_the_change_feed(s3, job, tmp_path):
    endpoint, client = s3
    source, old, want, edits = job
    copy_prefix(client, "base", "edits")
    url = f"s3://{BUCKET}/edits"
    summary = _refresh(source, "edits", endpoint, "--batch-bytes", "2KB")
    assert {k: v for k, v in summary["refresh"]["changes"].items() if v} == edits
    assert summary["refresh"]["parsed"] == summary["files_this_run"] == edits["modified"] + edits["added"]
    assert summary["files"] == len(want["files"])
    assert_same_output(dataset_snapshot(url, endpoint), want)
    # Documented: a plain listing reader of OUT/<table>/ keeps the job's snapshot before the refresh.
    assert_same_output(snapshot(download_tables(client, "edits", tmp_path / "listing")), old)

    feed = pq.read_table(io.BytesIO(client.get_object(
        Bucket=BUCKET, Key="edits/_snakebatch/changes/000002.parquet")["Body"].read())).to_pylist()
    changes = {}
    for row in feed:
        changes[row["change"]] = changes.get(row["change"], 0) + 1
        assert row["generation"] == 2
        assert (row["old_blob_id"] is None) == (row["change"] == "added")
        assert (row["new_blob_id"] is None) == (row["change"] == "deleted")
    assert changes == edits

    pointer = pointers(client, "edits")[-1]
    assert pointer["generation"] == 2 and pointer["ledger"] and pointer["through"] >= max(pointer["covers"])
    status = json.loads(run_cli("status", url, "--json", "--verify", check_codes=(0,), env=s3_env(endpoint)).stdout)
    assert status["state"] == "complete" and status["damage"] == []
    assert status["snapshot_generation"] == 2 and status["last_refresh"]["changes"]["modified"] == edits["modified"]
    assert status["files_done"] == len(want["files"])
    text = run_cli("status", url, check_codes=(0,), env=s3_env(endpoint)).stdout
    assert "refreshed:" in text

    # A resume of the refreshed job parses nothing and changes nothing.
    resumed = cli_in_process(*run_args(source, url, "--json", *OPTIONS, resume=True), check_codes=(0,), env=s3_env(endpoint))
    assert json.loads(resumed.stdout)["files_this_run"] == 0
    assert_same_output(dataset_snapshot(url, endpoint), want)


def test_a_refresh_with_nothing_changed_writes_nothing_new(s3, job):
    endpoint, client = s3
    source, _, want, _ = job
    copy_prefix(client, "base", "noop")
    _refresh(source, "noop", endpoint)
    kept = {k for k in s3_keys(client, "noop") if "/ledger/" not in k and not k.endswith(("stats.json", "complete.json"))}
    summary = _refresh(source, "noop", endpoint)
    assert summary["files_this_run"] == 0 and summary["refresh"]["parsed"] == 0
    assert not any(summary["refresh"]["changes"].values())
    after = {k for k in s3_keys(client, "noop") if "/ledger/" not in k and not k.endswith(("stats.json", "complete.json"))}
    assert after == kept
    segments = [json.loads(client.get_object(Bucket=BUCKET, Key=k)["Body"].read())["kind"]
                for k in sorted(s3_keys(client, "noop/_snakebatch/ledger"))]
    assert segments[-2:] == ["open", "close"] and segments.count("refresh") == 1
    assert_same_output(dataset_snapshot(f"s3://{BUCKET}/noop", endpoint), want)


def _reached(client, prefix: str, event: str) -> bool:
    if event == "ledger-refresh":
        keys = sorted(s3_keys(client, f"{prefix}/_snakebatch/ledger"))
        return bool(keys) and b'"refresh"' in client.get_object(Bucket=BUCKET, Key=keys[-1])["Body"].read()
    return bool(s3_keys(client, f"{prefix}/_snakebatch/{event}"))


@pytest.mark.parametrize("event, delay, then", [
    ("staging", 0.0, "--refresh"),  # while the changed files are parsed
    pytest.param("generations/0000000002", 0.0, "--resume", marks=pytest.mark.slow),  # the new generation
    pytest.param("staging", 0.3, "--refresh", marks=pytest.mark.slow),
    pytest.param("ledger-refresh", 0.0, "--refresh", marks=pytest.mark.slow),  # committed, no pointer yet
    pytest.param("current/0000000002.json", 0.0, "--resume", marks=pytest.mark.slow),
    pytest.param("changes", 0.0, "--refresh", marks=pytest.mark.slow),
])
def test_sigkill_during_a_refresh_then_a_run_gives_the_new_tables(s3, job, event, delay, then, tmp_path):
    """SIGKILL the refresh's process group at a moment taken from the bucket: readers through
    `open_dataset` see the old snapshot or the new one; `--refresh` or `--resume` gives the new
    one, and the job's status is complete."""
    endpoint, client = s3
    source, old, want, _ = job
    prefix = f"kill-{event.replace('/', '-')}-{int(delay * 1000)}"
    copy_prefix(client, "base", prefix)
    url = f"s3://{BUCKET}/{prefix}"
    run = Run(run_args(source, url, "--refresh", *OPTIONS, "--batch-bytes", "2KB"),
              env(sleep=0.03, **s3_env(endpoint)), tmp_path / "logs")
    while not _reached(client, prefix, event) and run.proc.poll() is None:
        time.sleep(0.002)
    time.sleep(delay)
    code = run.kill_group()
    assert code in (0, -signal.SIGKILL), run.stderr
    seen = dataset_snapshot(url, endpoint)
    if seen != want:
        assert_same_output(seen, old)
    args = run_args(source, url, "--json", *OPTIONS, resume=then == "--resume") + ([then] if then == "--refresh" else [])
    final = cli_in_process(*args, check_codes=(0,), env=s3_env(endpoint))
    assert json.loads(final.stdout)["state"] == "complete"
    assert_same_output(dataset_snapshot(url, endpoint), want)
    assert s3_keys(client, f"{prefix}/_snakebatch/changes")
    assert not s3_keys(client, f"{prefix}/_snakebatch/staging")
    status = json.loads(run_cli("status", url, "--json", "--verify", check_codes=(0,), env=s3_env(endpoint)).stdout)
    assert status["state"] == "complete" and status["damage"] == [] and status["last_refresh"]


def test_a_reader_through_open_dataset_sees_the_old_or_the_new_snapshot_never_a_mix(s3, job, tmp_path):
    """Each table read through `open_dataset` while a refresh runs is its old snapshot or its
    new one (one pointer read per call: two calls may straddle the commit)."""
    endpoint, client = s3
    source, old, want, _ = job
    copy_prefix(client, "base", "reader")
    url = f"s3://{BUCKET}/reader"
    run = Run(run_args(source, url, "--refresh", *OPTIONS, "--batch-bytes", "2KB"),
              env(sleep=0.02, **s3_env(endpoint)), tmp_path / "logs")
    reads = {"old": 0, "new": 0}
    while run.proc.poll() is None:
        seen = dataset_snapshot(url, endpoint)  # each table through its own open_dataset
        for table, rows in seen.items():
            assert rows == want[table] or rows == old[table], f"{table}: neither the old nor the new snapshot"
            reads["new" if rows == want[table] else "old"] += 1
    assert run.wait() == 0, run.stderr
    assert_same_output(dataset_snapshot(url, endpoint), want)
    assert reads["old"] >= 1, reads


@pytest.mark.slow  # three refreshes; a refresh's parts are checked in the default run
def test_unchanged_parts_are_referenced_where_they_are_and_old_generations_kept_while_referenced(s3, tmp_path):
    """An uncompacted job, one file edited: the refresh's generation lists the batch parts
    without a change as they are, and rewrites only the batch that held the file; a compaction
    and another refresh after it keep every part the current and the previous pointer name."""
    endpoint, client = s3
    source = tmp_path / "src"
    source.mkdir()
    assert copy_stdlib(source, 30) >= 20
    url = f"s3://{BUCKET}/refs"
    options = (*OPTIONS, "--batch-bytes", "8KB")
    cli_in_process(*run_args(source, url, *options, "--no-compact"), check_codes=(0,), env=s3_env(endpoint))
    batch_parts = [k for k in s3_keys(client, "refs/files")]
    time.sleep(2.1)
    edited = sorted(source.rglob("*.py"))[0]
    edited.write_text("def only_this():\n    pass\n")
    cli_in_process(*run_args(source, url, "--refresh", *options), check_codes=(0,), env=s3_env(endpoint))
    keys = [part["key"] for part in pointers(client, "refs")[-1]["tables"]["files"]]
    new = [k for k in keys if k.startswith("_snakebatch/generations/")]
    assert len(new) == 1 and len(keys) == len(batch_parts)  # one batch rewritten, with the new rows
    assert {f"refs/{k}" for k in keys if not k.startswith("_snakebatch/")} < set(batch_parts)
    for round_ in range(2):
        (source / f"more{round_}.py").write_text(f"X = {round_}\n")
        cli_in_process(*run_args(source, url, "--refresh", *options), check_codes=(0,), env=s3_env(endpoint))
        live = set(s3_keys(client, "refs"))
        for pointer in pointers(client, "refs")[-2:]:
            assert all(f"refs/{part['key']}" in live for parts in pointer["tables"].values() for part in parts)
    fresh = tmp_path / "fresh"
    cli_in_process(*run_args(source, fresh, *OPTIONS), check_codes=(0,))
    assert_same_output(dataset_snapshot(url, endpoint), snapshot(fresh))


@pytest.mark.slow  # a damage case; damage on the bucket is in the default run
def test_a_lost_part_of_a_refreshed_snapshot_is_refused_with_advice(s3, job):
    """A refreshed snapshot cannot be rebuilt from the batch parts: a run refuses it (exit 2)
    and names --fresh, rather than read the stale batch parts."""
    endpoint, client = s3
    source, _, _, _ = job
    copy_prefix(client, "base", "lost")
    _refresh(source, "lost", endpoint)
    key = pointers(client, "lost")[-1]["tables"]["files"][0]["key"]
    client.delete_object(Bucket=BUCKET, Key=f"lost/{key}")
    done = cli_in_process(*run_args(source, f"s3://{BUCKET}/lost", *OPTIONS, resume=True), check_codes=(2,),
                   env=s3_env(endpoint))
    assert "--fresh" in done.stderr and "lost parts" in done.stderr


def test_watch_refuses_an_out_in_object_storage(tmp_path):
    shutil.rmtree(tmp_path / "src", ignore_errors=True)
    (tmp_path / "src").mkdir()
    with pytest.raises(snakebatch.ConfigError, match="object storage"):
        snakebatch.watch(tmp_path / "src", "s3://bucket/prefix", storage_options=_options("http://127.0.0.1:9"))


@pytest.mark.slow  # the same crash of a refresh into a local OUT is in test_refresh.py's default run
def test_a_crash_while_parsing_in_process_leaves_the_old_snapshot_then_the_pool_parses(s3, tmp_path):
    endpoint, client = s3
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.py").write_text("def a():\n    return 1\n")
    (source / "x.bad").write_text("fine\n")
    url = f"s3://{BUCKET}/inproc"
    options = ("--parser", "tests.misbehaving_parser:parser", "-j", "1")
    run_cli(*run_args(source, url, *options), check_codes=(0,), env=s3_env(endpoint))
    before = dataset_snapshot(url, endpoint)
    (source / "x.bad").write_text("crash\n")  # the parser kills the process that parses it
    crashed = run_cli(*run_args(source, url, "--refresh", *options), check_codes=(3,), env=s3_env(endpoint))
    assert crashed.returncode == 3  # the coordinator itself: it parsed in process
    intent = json.loads(client.get_object(Bucket=BUCKET, Key="inproc/_snakebatch/refresh/intent.json")["Body"].read())
    assert intent["in_process"] is True
    assert_same_output(dataset_snapshot(url, endpoint), before)  # nothing live changed
    again = run_cli(*run_args(source, url, "--refresh", "--json", *options), check_codes=(0, 1), env=s3_env(endpoint))
    assert json.loads(again.stdout)["refresh"]["changes"]["modified"] == 1
    rows = dataset_snapshot(url, endpoint)["files"]
    assert rows["x.bad"]["status"] == "crashed"  # a worker of the pool died on it, not the refresh
    assert rows["a.py"]["status"] == before["files"]["a.py"]["status"]
    assert "inproc/_snakebatch/refresh/intent.json" not in s3_keys(client, "inproc")
