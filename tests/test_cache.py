"""`--cache DIR` (issue 15, item 4): parse results by content, shared by jobs, bounded with LRU
eviction. A job with the cache gives the rows a job without it gives (every column but `batch_id`
and `parse_ms`), and parses only the blobs the cache has not seen: in another OUT, in a copy of the
repository elsewhere with a few files changed, in a `--rev` job. A damaged entry is a miss; the
bound evicts the least recently used entries; two jobs share a cache at once; another parser
version misses.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

import snakebatch
from helpers import cli_command, cli_env, cli_in_process, read_table, run_cli
from resume_helpers import assert_same_output, copy_stdlib, snapshot
from snakebatch.errors import ConfigError
from snakebatch.parsers import ParseResult
from snakebatch.store import blobcache

OLD = time.time() - 3600
GIT_ENV = {"GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_NAME": "A", "GIT_AUTHOR_EMAIL": "a@x",
           "GIT_COMMITTER_NAME": "C", "GIT_COMMITTER_EMAIL": "c@x", "GIT_AUTHOR_DATE": "1700000000 +0000",
           "GIT_COMMITTER_DATE": "1700000000 +0000"}


def _write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    os.utime(path, (OLD, OLD))


def _tree(root: Path) -> Path:
    """Python files (some with equal content, one renamed to another extension), a syntax error, a
    decode error, text, JSON and a binary file: every status the cache keeps, and one it does not."""
    for index in range(10):
        _write(root / f"pkg{index % 3}" / f"m{index:02d}.py",
               f'"""Module {index}."""\nimport os\nfrom . import sib{index}\n\n'
               f"def f{index}(a, b):\n    return a + {index}\n\nclass C{index}:\n    def m(self):\n        pass\n")
    _write(root / "copy" / "m00.py", (root / "pkg0" / "m00.py").read_bytes())  # the same blob, another path
    _write(root / "as_text" / "m01.txt", (root / "pkg1" / "m01.py").read_bytes())  # and another parser
    _write(root / "broken.py", "def f(:\n    pass\n")
    _write(root / "latin1.py", b"x = '\xe9'\n")
    _write(root / "notes.txt", "some notes\n")
    _write(root / "data.json", '{"a": 1}\n')
    _write(root / "blob.bin", b"\x00\x01\x02binary")
    return root


def _run(source: Path, out: Path, **options) -> snakebatch.RunResult:
    result = snakebatch.run(source, output=out, workers=1, progress=False, **options)
    assert result.state == "complete", result.summary
    return result


def _parses(result: snakebatch.RunResult) -> dict:
    return result.summary.parses


def _entries(cache: Path) -> list[Path]:
    return sorted(p for p in cache.glob("??/*") if not p.name.startswith("."))


def test_the_cache_changes_no_row_and_parses_only_blobs_it_has_not_seen(tmp_path):
    source = _tree(tmp_path / "repo")
    cache = tmp_path / "cache"
    plain = snapshot(_run(source, tmp_path / "plain").output)
    parsed_files = 16  # every file but the binary one has a parser run

    first = _run(source, tmp_path / "one", cache=cache)
    # pkg0/m00.py is copy/m00.py's blob with the same parser and extension: it takes the entry
    # the first one stored, within the same job
    assert _parses(first) == {"parsed": parsed_files - 1, "reused": 0, "cached": 1}
    assert_same_output(snapshot(tmp_path / "one"), plain)
    assert len(_entries(cache)) == parsed_files - 1
    assert first.summary.cache["stored_bytes"] > 0

    second = _run(source, tmp_path / "two", cache=cache)
    assert _parses(second) == {"parsed": 0, "reused": 0, "cached": parsed_files}
    assert_same_output(snapshot(tmp_path / "two"), plain)
    assert second.summary.cache["stored_bytes"] == 0
    rows = read_table(tmp_path / "two", "files").to_pylist()
    assert all(r["parse_ms"] is None for r in rows)  # nothing was parsed for a cached row
    assert {r["parser"] for r in rows if r["path"] == "as_text/m01.txt"} == {"text"}
    status = json.loads(run_cli("status", tmp_path / "two", "--json", check_codes=(0,)).stdout)
    assert status["parses"] == {"parsed": 0, "reused": 0, "cached": parsed_files}

    # Another clone elsewhere, with one file changed, one added, one renamed within its extension
    # and one renamed to another: only the new content, and the blob under a new parser, is parsed.
    clone = tmp_path / "elsewhere" / "clone"
    shutil.copytree(source, clone)
    _write(clone / "pkg0" / "m03.py", "def changed():\n    return 3\n")
    _write(clone / "added.py", "import sys\n")
    (clone / "pkg2" / "m02.py").rename(clone / "pkg2" / "renamed.py")
    (clone / "notes.txt").rename(clone / "notes.md")
    third = _run(clone, tmp_path / "three", cache=cache)
    assert _parses(third) == {"parsed": 3, "reused": 0, "cached": parsed_files + 1 - 3}
    assert_same_output(snapshot(tmp_path / "three"), snapshot(_run(clone, tmp_path / "clone-plain").output))


def test_a_damaged_entry_is_a_miss_and_is_replaced(tmp_path):
    source = _tree(tmp_path / "repo")
    cache = tmp_path / "cache"
    plain = snapshot(_run(source, tmp_path / "plain").output)
    _run(source, tmp_path / "one", cache=cache)
    entries = _entries(cache)
    truncated, flipped, emptied, garbage = entries[:4]
    truncated.write_bytes(truncated.read_bytes()[:-7])
    data = bytearray(flipped.read_bytes())
    data[-1] ^= 0xFF
    flipped.write_bytes(bytes(data))
    emptied.write_bytes(b"")
    garbage.write_bytes(os.urandom(300))

    again = _run(source, tmp_path / "two", cache=cache)
    assert again.summary.parses["parsed"] == 4  # the four damaged entries' files, parsed again
    assert_same_output(snapshot(tmp_path / "two"), plain)
    assert _run(source, tmp_path / "three", cache=cache).summary.parses["parsed"] == 0  # rewritten whole


def test_entries_are_read_whole_or_not_at_all(tmp_path):
    cache = blobcache.BlobCache(str(tmp_path / "cache"))
    result = ParseResult(language="Python", lines=3, definitions=[("function", "f", "f", None, 1, 2, 0, [], 0, None)])
    key = blobcache.entry_key("b" * 40, "python", "3.12", "builtin", ".py", "Python")
    assert cache.get(key) is None
    written = cache.put(key, result)
    assert written == 4096  # disk use, as du counts it
    got = cache.get(key)
    assert got.lines == 3 and got.definitions == [["function", "f", "f", None, 1, 2, 0, [], 0, None]]
    assert cache.put(key, ParseResult(status="timeout")) == 0  # a run's outcome, never stored
    assert cache.put(blobcache.entry_key("c" * 40, "python", "3.12", "builtin", ".py", "Python"),
                     ParseResult(status="parser_error")) == 0
    # every part of the key decides it
    assert len({blobcache.entry_key(*args) for args in [
        ("b" * 40, "python", "3.12", "builtin", ".py", "Python"),
        ("b" * 40, "python", "3.13", "builtin", ".py", "Python"),
        ("b" * 40, "python", "3.12", "mod:parser", ".py", "Python"),
        ("b" * 40, "python", "3.12", "builtin", ".pyi", "Python"),
        ("b" * 40, "text", "3.12", "builtin", ".py", "Python"),
        ("c" * 40, "python", "3.12", "builtin", ".py", "Python"),
    ]}) == 6
    path = tmp_path / "cache" / key[:2] / key[2:]
    path.write_bytes(path.read_bytes()[:30])
    assert cache.get(key) is None and not path.exists()  # a torn entry is a miss, and is deleted


def test_the_bound_evicts_the_least_recently_used_entries(tmp_path):
    folder = tmp_path / "cache"
    cache = blobcache.BlobCache(str(folder))
    keys = [blobcache.entry_key(f"{i:040x}", "python", "1", "builtin", ".py", "Python") for i in range(20)]
    for age, key in enumerate(keys):
        cache.put(key, ParseResult(lines=age))
        when = time.time() - 10_000 + age * 100  # keys[0] the oldest
        os.utime(folder / key[:2] / key[2:], (when, when))
    cache.get(keys[0])  # a hit makes the oldest entry the newest
    (folder / "00").mkdir(exist_ok=True)
    stale_tmp = folder / "00" / ".tmp-1-dead"
    stale_tmp.write_bytes(b"x" * 100)
    os.utime(stale_tmp, (OLD, OLD))
    unrelated = folder / "00" / "notes.txt"  # not a name the cache writes: never deleted
    unrelated.write_text("mine")

    report = blobcache.settle(str(folder), 10 * 4096, 0)
    assert report.walked and report.evicted == 11  # 20 entries of 4 KiB, down to 90% of 40 KiB
    assert report.size_bytes <= 9 * 4096
    left = {p.name for p in _entries(folder)} - {"notes.txt"}
    assert left == {k[2:] for k in [keys[0], *keys[12:]]}
    assert not stale_tmp.exists() and unrelated.exists()
    assert (folder / ".size").read_text() == str(report.size_bytes)
    # Under the bound, a report only adds to the estimate: no walk.
    assert blobcache.settle(str(folder), 10 * 4096, 4096) == blobcache.Eviction(size_bytes=report.size_bytes + 4096)


def test_a_job_keeps_the_cache_under_its_bound(tmp_path):
    source = tmp_path / "repo"
    count = copy_stdlib(source, 60)
    cache = tmp_path / "cache"
    plain = snapshot(_run(source, tmp_path / "plain").output)
    result = _run(source, tmp_path / "one", cache=cache, cache_size="100KiB")
    assert result.summary.cache["evicted"] > 0
    used = sum(p.stat().st_blocks * 512 for p in _entries(cache))
    assert used <= 100 * 1024
    again = _run(source, tmp_path / "two", cache=cache, cache_size="100KiB")
    assert 0 < again.summary.parses["cached"] < count  # what the bound kept
    assert_same_output(snapshot(tmp_path / "two"), plain)


def test_two_jobs_share_a_cache_at_once(tmp_path):
    source = tmp_path / "repo"
    copy_stdlib(source, 200)
    cache = tmp_path / "cache"
    plain = snapshot(_run(source, tmp_path / "plain").output)
    # A bound small enough that both jobs evict while the other reads and writes.
    procs = [subprocess.Popen(cli_command("run", source, "-o", tmp_path / f"out{i}", "-j", "1", "--no-progress",
                                          "--batch-bytes", "64KB", "--cache", cache, "--cache-size", "200KiB", "--json"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
             for i in range(2)]
    evicted = 0
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        evicted += json.loads(stdout)["cache"]["evicted"]
    assert evicted > 0
    for i in range(2):
        assert_same_output(snapshot(tmp_path / f"out{i}"), plain)


def test_another_parser_version_is_a_miss(tmp_path, monkeypatch):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    # The version is read from a file at each use: the runs below, in this process, change it.
    (plugins / "versioned_parser.py").write_text(
        "from pathlib import Path\n"
        "from snakebatch.parsers import Parser, get\n\n"
        "class VersionedPython(Parser):\n"
        "    name = 'versioned-python'\n"
        "    patterns = ('*.py',)\n\n"
        "    @property\n"
        "    def version(self):\n"
        "        return Path(__file__).with_name('VERSION').read_text()\n\n"
        "    def parse(self, path, data):\n"
        "        return get('python').parse(path, data)\n\n"
        "parser = VersionedPython()\n")
    monkeypatch.syspath_prepend(plugins)  # a pool started here gives its workers this sys.path
    source = _tree(tmp_path / "repo")
    cache = tmp_path / "cache"

    def run(out: str, version: str) -> dict:
        (plugins / "VERSION").write_text(version)
        proc = cli_in_process("run", source, "-o", tmp_path / out, "-j", "1", "--no-progress", "--json",
                              "--parser", "versioned_parser:parser", "--cache", cache, check_codes=(0,))
        return json.loads(proc.stdout)["parses"]

    python_blobs = 12  # 13 files, two of one blob (the second takes the first's entry)
    assert run("v1", "1") == {"parsed": 15, "reused": 0, "cached": 1}
    assert run("v1-again", "1") == {"parsed": 0, "reused": 0, "cached": 16}
    # the plugin's files miss; the others (text, JSON) keep their entries
    assert run("v2", "2") == {"parsed": python_blobs, "reused": 0, "cached": 16 - python_blobs}
    versions = {r["parser_version"] for r in read_table(tmp_path / "v2", "files").to_pylist()
                if r["parser"] == "versioned-python"}
    assert versions == {"2"}


def _without_source(rows: Counter) -> Counter:
    """A table's rows (as `snapshot` gives them) without the `source` label."""
    return Counter({tuple(kv for kv in key if kv[0] != "source"): n for key, n in rows.items()})


def test_a_rev_job_and_a_checkout_share_the_cache(tmp_path):
    root = tmp_path / "git"

    def git(*args) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True,
                              env={**os.environ, **GIT_ENV}).stdout.strip()

    shared = "import os\n\nclass Shared:\n    def go(self):\n        pass\n"
    for name in ("a/shared.py", "b/shared.py"):
        _write(root / name, shared)
    _write(root / "b" / "own.py", "def own():\n    pass\n")
    _write(root / "c" / "bad.py", "def broken(:\n")
    git("init", "-q", "-b", "main")
    git("add", "-A")
    git("commit", "-q", "-m", "one")
    commit = git("rev-parse", "HEAD")
    cache = tmp_path / "cache"

    rev = _run(root, tmp_path / "rev", rev=commit, cache=cache)
    assert _parses(rev) == {"parsed": 3, "reused": 1, "cached": 0}
    rev_again = _run(root, tmp_path / "rev-again", rev=commit, cache=cache)
    assert _parses(rev_again) == {"parsed": 0, "reused": 1, "cached": 3}
    # a checkout of the revision: the same blobs, read from files
    tree = tmp_path / "checkout"
    git("worktree", "add", "-q", "--detach", str(tree), commit)
    checkout = _run(tree, tmp_path / "tree", cache=cache)
    assert _parses(checkout) == {"parsed": 0, "reused": 0, "cached": 4}
    plain = snapshot(_run(tree, tmp_path / "tree-plain").output)
    assert_same_output(snapshot(tmp_path / "tree"), plain)
    for out in ("rev", "rev-again"):
        got = snapshot(tmp_path / out)
        for row in got["files"].values():
            row.pop("mtime_ns")
            row.pop("commit")
            row.pop("source")  # the label: the repository's folder name, the checkout's
        want = {path: {k: v for k, v in row.items() if k not in ("mtime_ns", "commit", "source")}
                for path, row in plain["files"].items()}
        assert got["files"] == want
        for table in ("definitions", "imports"):
            assert _without_source(got[table]) == _without_source(plain[table]), (out, table)


def test_a_refresh_takes_reverted_content_from_the_cache(tmp_path):
    source = _tree(tmp_path / "repo")
    cache = tmp_path / "cache"
    out = tmp_path / "out"
    _run(source, out, cache=cache)
    original = (source / "pkg0" / "m00.py").read_bytes()
    _write(source / "pkg0" / "m00.py", "def edited():\n    pass\n")
    assert _run(source, out, refresh=True, cache=cache).summary.parses == {"parsed": 1, "reused": 0, "cached": 0}
    _write(source / "pkg0" / "m00.py", original)  # reverted: its old blob is in the cache
    assert _run(source, out, refresh=True, cache=cache).summary.parses == {"parsed": 0, "reused": 0, "cached": 1}
    assert_same_output(snapshot(out), snapshot(_run(source, tmp_path / "plain").output))


def test_cache_options_are_checked(tmp_path):
    source = _tree(tmp_path / "repo")
    with pytest.raises(ConfigError, match="--cache-size needs --cache"):
        snakebatch.run(source, output=tmp_path / "o", cache_size="1GiB")
    with pytest.raises(ConfigError, match="inside SOURCE"):
        snakebatch.run(source, output=tmp_path / "o", cache=source / ".cache")
    with pytest.raises(ConfigError, match="inside OUT"):
        snakebatch.run(source, output=tmp_path / "o", cache=tmp_path / "o" / "cache")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match="cannot create"):
        snakebatch.run(source, output=tmp_path / "o", cache=tmp_path / "afile")
    with pytest.raises(ConfigError, match="not a size"):
        snakebatch.run(source, output=tmp_path / "o", cache=tmp_path / "c", cache_size="lots")
    proc = cli_in_process("run", source, "-o", tmp_path / "o", "--cache", "s3://bucket/cache")
    assert proc.returncode == 2 and "--cache" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


def test_dask_workers_share_the_cache_with_the_local_pool(tmp_path):
    pytest.importorskip("distributed")
    source = _tree(tmp_path / "repo")
    cache = tmp_path / "cache"
    _run(source, tmp_path / "local", cache=cache)
    dask = _run(source, tmp_path / "dask", cache=cache, executor="dask")
    assert _parses(dask) == {"parsed": 0, "reused": 0, "cached": 16}
    assert_same_output(snapshot(tmp_path / "dask"), snapshot(tmp_path / "local"))
