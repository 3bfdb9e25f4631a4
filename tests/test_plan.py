"""`snakebatch plan`: the same files as a run, languages by extension, a batch count close to the
run's, a calibrated estimate, and nothing written anywhere."""

from __future__ import annotations

import json
import os
from collections import Counter

import pytest

import snakebatch
from _corpus import copy_stdlib_corpus, files_on_disk
from helpers import cli_env, cli_in_process, run_cli
from snakebatch.languages import language_of


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return copy_stdlib_corpus(tmp_path_factory.mktemp("corpus"))


def _snapshot(root):
    return sorted((p.relative_to(root).as_posix(), p.stat().st_mtime_ns) for p in root.rglob("*"))


def test_plan_json_counts_what_a_run_takes_and_writes_nothing(corpus, tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    before = _snapshot(corpus)
    # A process of its own: the estimate counts the planning process's RSS (a pytest worker's is
    # larger), and TMPDIR and the cwd are its own.
    proc = run_cli("plan", corpus, "-j", "2", "--json", cwd=cwd, env=cli_env(TMPDIR=str(tmp)))
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert _snapshot(corpus) == before
    assert list(cwd.iterdir()) == [] and list(tmp.iterdir()) == []  # the sample's parts are gone too

    on_disk = files_on_disk(corpus)
    assert plan["files"] == len(on_disk)
    assert plan["bytes"] == sum((corpus / p).stat().st_size for p in on_disk)
    expected_languages = Counter(language_of(p) for p in on_disk if language_of(p))
    assert plan["languages"] == dict(expected_languages)
    assert plan["languages"]["Python"] > 300

    result = snakebatch.run(corpus, output=tmp_path / "out", workers=2)
    assert result.files == plan["files"]
    ran = result.summary.batches_this_run
    assert abs(plan["batches"] - ran) <= max(2, ran // 10), (plan["batches"], ran)
    # A calibrated estimate: positive, and within a wide factor of the run (the machine is shared,
    # so this is a sanity bound, not a benchmark; benchmarks/plan_accuracy.py measures it).
    assert 0 < plan["estimated_wall_s"] and plan["estimated_peak_rss_bytes"] > 0
    assert result.peak_rss_bytes / 4 < plan["estimated_peak_rss_bytes"] < result.peak_rss_bytes * 4
    assert set(plan["parsers"]) >= {"python", "text"}
    assert plan["parsers"]["python"]["sample_files"] > 0
    assert plan["parsers"]["python"]["cpu_s_per_mb"] > plan["parsers"]["text"]["cpu_s_per_mb"]


def test_plan_follows_the_filters(corpus):
    on_disk = files_on_disk(corpus)
    only_python = snakebatch.plan(corpus, include=["*.py"], workers=1)
    assert only_python.files == sum(p.endswith(".py") for p in on_disk)
    assert set(only_python.languages) == {"Python"}
    without_idle = snakebatch.plan(corpus, exclude=["idlelib/"], workers=1)
    assert without_idle.files == sum(not p.startswith("idlelib/") for p in on_disk)
    small = snakebatch.plan(corpus, max_file_size="20k", workers=1)
    assert small.too_large == sum((corpus / p).stat().st_size > 20 * 1024 for p in on_disk)


def test_plan_estimates_more_memory_for_more_workers_and_fixed_batches(corpus):
    one = snakebatch.plan(corpus, workers=1, batch_bytes="256k")
    four = snakebatch.plan(corpus, workers=4, batch_bytes="256k")
    assert four.estimated_peak_rss_bytes > one.estimated_peak_rss_bytes
    assert one.batch_bytes == four.batch_bytes == 256 * 1024
    assert one.batches >= sum((corpus / p).stat().st_size for p in files_on_disk(corpus)) // (256 * 1024)


def test_plan_skips_the_output_folder_inside_source(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "snakebatch-out" / "files").mkdir(parents=True)
    (repo / "snakebatch-out" / "files" / "part.parquet").write_bytes(b"PAR1")
    (repo / "a.py").write_text("x = 1\n")
    monkeypatch.chdir(repo)
    proc = cli_in_process("plan", ".", "--json", check_codes=[0])
    assert json.loads(proc.stdout)["files"] == 1


def test_plan_prints_a_summary(corpus):
    proc = run_cli("plan", corpus, "-j", "2", "--memory-budget", "1GiB", check_codes=[0])
    first = proc.stdout.splitlines()[0]
    assert f"{len(files_on_disk(corpus))} files" in first
    assert "estimate:" in proc.stdout and "Python" in proc.stdout and "budget 1.1 GB" in proc.stdout


def test_plan_of_an_empty_folder(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    plan = snakebatch.plan(empty)
    assert (plan.files, plan.bytes, plan.batches, plan.estimated_wall_s) == (0, 0, 0, 0.0)
    assert os.listdir(empty) == []


def test_plan_warns_when_the_budget_is_too_low(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    # 10,000 definitions: a worker's estimated peak (its rows) puts the estimated peak well above
    # the least budget a run accepts (a one-line file left them 2 MB apart once the package's
    # imports became lazy: the plan's process holds less before it samples, its estimate with it).
    (repo / "a.py").write_text("".join(f"def f{i}(x):\n    return x\n" for i in range(10_000)))
    proc = run_cli("plan", repo, "-j", "2", "--memory-budget", "1KB", "--json", check_codes=[0])
    plan = json.loads(proc.stdout)
    assert len(plan["warnings"]) == 1 and "would refuse it" in plan["warnings"][0]
    assert "snakebatch: warning: --memory-budget: 1.0 KB is below the" in proc.stderr
    # Above what a run accepts, below the estimated peak: a warning naming both.
    budget = plan["estimated_peak_rss_bytes"] - 32 * 2**20  # the estimate varies by a few MB between runs
    proc = run_cli("plan", repo, "-j", "2", "--memory-budget", budget, check_codes=[0])
    assert "snakebatch: warning: the estimated peak RSS" in proc.stderr
    assert "is over --memory-budget" in proc.stderr
