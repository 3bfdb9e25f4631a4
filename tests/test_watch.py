"""`snakebatch watch`: a real watcher (watchfiles, inotify) on a real tree; after edits, adds,
deletes and a folder moved away, the round's line comes and OUT's tables equal a fresh run's;
SIGINT exits 130 with OUT a complete snapshot; without the extra, exit 2 naming it.

The CLI runs as a subprocess (its stdout read line by line); the API's generator in-process.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import snakebatch
from helpers import cli_command, cli_env, cli_in_process, run_cli
from resume_helpers import assert_same_output, snapshot

pytest.importorskip("watchfiles")

LINE = re.compile(r"^\+(\d+) ~(\d+) -(\d+) in \d+\.\d\d s")


def _tree(root: Path) -> Path:
    for index in range(8):
        path = root / f"pkg{index % 2}" / f"m{index}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"import os\n\ndef f{index}(a):\n    return a + {index}\n")
    (root / "gone").mkdir()
    (root / "gone" / "x.py").write_text("class X:\n    pass\n")
    (root / "notes.txt").write_text("notes\n")
    return root


def _fresh(source: Path, tmp_path: Path) -> dict:
    out = tmp_path / f"fresh-{time.monotonic_ns()}"
    result = snakebatch.run(source, output=out, workers=1, progress=False)
    assert result.state == "complete"
    return snapshot(out)


def _edit(source: Path) -> None:
    (source / "pkg0" / "m0.py").write_text("import sys\n\ndef changed(a, b):\n    return b\n")  # modified
    (source / "pkg1" / "added.py").write_text("def added():\n    pass\n")  # added
    (source / "pkg1" / "m1.py").unlink()  # deleted


class _Lines:
    """The watch process's stdout, line by line, with a timeout."""

    def __init__(self, proc: subprocess.Popen):
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, args=(proc.stdout,), daemon=True).start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))

    def next(self, timeout: float = 30) -> str:
        return self.lines.get(timeout=timeout)


def test_watch_cli_refreshes_each_round_and_sigint_exits_130_with_a_complete_snapshot(tmp_path):
    source, out = _tree(tmp_path / "src"), tmp_path / "out"
    proc = subprocess.Popen(cli_command("watch", source, "-o", out, "-j", "1", "--debounce", "0.2"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
    try:
        lines = _Lines(proc)
        first = lines.next(60)  # the job's first run: every file added
        assert LINE.match(first).groups() == ("10", "0", "0"), first
        assert_same_output(snapshot(out), _fresh(source, tmp_path))

        _edit(source)
        match = LINE.match(lines.next())
        assert match, match
        changes = [int(n) for n in match.groups()]
        while changes != [1, 1, 1]:  # the events may straddle two rounds
            more = LINE.match(lines.next())
            changes = [a + int(b) for a, b in zip(changes, more.groups())]
        assert_same_output(snapshot(out), _fresh(source, tmp_path))

        shutil.move(source / "gone", tmp_path / "moved-away")  # one event, for the folder alone
        assert LINE.match(lines.next()).groups() == ("0", "0", "1")
        assert_same_output(snapshot(out), _fresh(source, tmp_path))

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "interrupted" in proc.stderr.read()
    assert_same_output(snapshot(out), _fresh(source, tmp_path))
    status = run_cli("status", out, check_codes=(0,))
    assert "complete" in status.stdout.splitlines()[0]


def test_watch_api_yields_rounds_that_look_only_at_the_named_paths(tmp_path):
    source, out = _tree(tmp_path / "src"), tmp_path / "out"
    snakebatch.run(source, output=out, workers=1, progress=False)
    (source / "pkg0" / "m2.py").write_text("def before_the_watch():\n    pass\n")
    watch = snakebatch.watch(source, out, debounce=0.2, workers=1)
    rounds = iter(watch)
    first = next(rounds)  # walks the whole tree: a change made while nothing watched is found
    assert (first.number, first.walk, first.changes["modified"]) == (1, "full", 1)
    assert_same_output(snapshot(out), _fresh(source, tmp_path))

    _edit(source)
    seen = {"added": 0, "modified": 0, "deleted": 0}
    while seen != {"added": 1, "modified": 1, "deleted": 1}:
        result = next(rounds)
        assert result.state == "complete" and result.walk == "paths", result
        assert result.summary.refresh["hashed"] + result.summary.refresh["parsed"] <= 3  # the named paths only
        seen = {kind: seen[kind] + result.changes[kind] for kind in seen}
    assert_same_output(snapshot(out), _fresh(source, tmp_path))

    shutil.rmtree(source / "gone")
    result = next(rounds)
    assert result.changes["deleted"] == 1, result
    assert_same_output(snapshot(out), _fresh(source, tmp_path))
    watch.stop()
    assert next(rounds, None) is None
    assert not watch.interrupted


def test_watch_without_the_extra_exits_2_naming_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "watchfiles", None)  # `import watchfiles` fails, as if not installed
    source = _tree(tmp_path / "src")
    proc = cli_in_process("watch", source, "-o", tmp_path / "out", check_codes=(2,))
    assert "pip install 'snakebatch[watch]'" in proc.stderr
    assert not os.path.exists(tmp_path / "out")


def test_discover_paths_takes_exactly_what_a_walk_takes(tmp_path):
    """Given every path under SOURCE, a round's stat of named paths yields what a full walk
    does: the same .gitignore rules at each depth, --exclude and --include, VCS folders, links,
    OUT and other jobs' folders skipped."""
    from snakebatch.config import build_config
    from snakebatch.engine.discovery import discover, discover_paths

    source = _tree(tmp_path / "src")
    (source / ".gitignore").write_text("*.log\nbuild/\n")
    (source / "pkg0" / ".gitignore").write_text("!keep.log\nsecret.py\n")
    for rel in ("a.log", "pkg0/keep.log", "pkg0/secret.py", "build/x.py", "pkg1/build/y.py", ".git/config",
                "pkg1/.git", "vendor/v.py", "deep/er/z.py"):
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        (source / rel).write_text("x = 1\n")
    os.symlink(source / "pkg0" / "m0.py", source / "link.py")
    os.symlink(source / "pkg0", source / "linked-folder")
    snakebatch.run(source / "deep", output=source / "deep" / "other-job", workers=1, progress=False)
    out = source / "out"
    out.mkdir()
    (out / "inside-out.py").write_text("y = 2\n")
    every = [os.path.relpath(os.path.join(folder, name), source).replace(os.sep, "/")
             for folder, dirs, names in os.walk(source) for name in names + dirs]
    for options in ({}, {"exclude": ["vendor/"], "include": ["*.py", "*.log"]}, {"gitignore": False}):
        job = build_config(source, out, **options).job
        walked = list(discover(job, skip=str(out)))
        assert walked and list(discover_paths(job, every, skip=str(out))) == sorted(walked), options
