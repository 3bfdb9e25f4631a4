"""The git-source targets of issue 15, side by side in one run (not timed tests).

    python benchmarks/git_sources.py /work/.mirror/pallets+flask/repo
    python benchmarks/git_sources.py REPO --rounds 3 --workers 2 --json out.json

On a real repository with its history (bring one with the search tool's `fetch`, e.g.
`github:pallets/flask`: 5,500 commits on main):

- history: `run REPO --history` against a run on a folder that holds just the history's unique
  blobs as files (each under `<blob id>/<name of its first path>`, so that it routes to the same
  parser); the ratio is what reading git objects and writing the two extra tables cost. The
  number of parses is counted from the summary (`parses.parsed`) and compared with the number
  of unique blobs that route to a parser.
- revision: `run REPO --rev HEAD` against a run on a checkout of HEAD (`git worktree add`).
- twenty copies: one job of 20 sources, a repository at HEAD, HEAD~1, ..., HEAD~19 (`REPO@REV`:
  20 copies with the small divergences of 19 commits) against a job of HEAD alone. With
  `--copies-from SDIST.tar.gz` (e.g. `pip download --no-binary :all: --no-deps django==5.1.4`)
  the repository is built from that source distribution: one commit of the whole tree, then 19
  commits that each append a line to 5 `.py` files; otherwise REPO's last 20 commits are used.

Each pair runs alternately, `--fresh` each time, the CLI in a subprocess of its own timed from
outside; the median of the rounds is reported with the ratio and each run's peak RSS (the
governor's sample of the process tree, from the summary).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from helpers import cli_command, cli_env  # noqa: E402


def timed(*args) -> tuple[float, dict]:
    started = time.perf_counter()
    proc = subprocess.run(cli_command(*args), capture_output=True, env=cli_env())
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"snakebatch {' '.join(map(str, args))} exited {proc.returncode}: {proc.stderr.decode()[-2000:]}")
    return wall, json.loads(proc.stdout)


def git(repo: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", repo, *args], capture_output=True, check=True, **kwargs)


def unique_blob_folder(repo: str, target: str) -> int:
    """Write each unique blob of HEAD's history (regular files, first path oldest commit first)
    to `target/<blob id>/<basename>`; returns how many."""
    commits = git(repo, "rev-list", "--topo-order", "--reverse", "HEAD").stdout.decode().split()
    first_name: dict[str, str] = {}
    for commit in commits:
        listing = git(repo, "ls-tree", "-r", "-z", "--full-tree", commit).stdout.split(b"\0")
        for record in listing:
            if not record:
                continue
            meta, _, path = record.partition(b"\t")
            mode, kind, blob = meta.decode().split()
            if kind == "blob" and mode in ("100644", "100755") and blob not in first_name:
                first_name[blob] = os.fsdecode(path).rsplit("/", 1)[-1]
    batch = subprocess.Popen(["git", "-C", repo, "cat-file", "--batch"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    for blob, name in first_name.items():
        batch.stdin.write(blob.encode() + b"\n")
        batch.stdin.flush()
        size = int(batch.stdout.readline().split()[2])
        data = batch.stdout.read(size + 1)[:size]
        os.makedirs(os.path.join(target, blob))
        with open(os.path.join(target, blob, name), "wb") as fh:
            fh.write(data)
    batch.stdin.close()
    batch.wait()
    return len(first_name)


def divergent_repo(sdist: str, target: str) -> str:
    """A git repository of the source distribution's tree and 19 more commits, each appending a
    line to 5 of its `.py` files (the 20 copies' small divergences)."""
    import tarfile

    os.makedirs(target)
    with tarfile.open(sdist) as archive:
        archive.extractall(target, filter="data")
    env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@example.com", "GIT_COMMITTER_NAME": "b",
           "GIT_COMMITTER_EMAIL": "b@example.com", "GIT_CONFIG_GLOBAL": os.devnull}
    git(target, "init", "-q", env=env)
    git(target, "add", "-A", env=env)
    git(target, "commit", "-q", "-m", "tree", env=env)
    python_files = sorted(git(target, "ls-files", "*.py").stdout.decode().split())
    for k in range(19):
        for name in python_files[k * 5:(k + 1) * 5]:
            with open(os.path.join(target, name), "a") as fh:
                fh.write(f"\nDIVERGENCE_{k} = {k}\n")
        git(target, "commit", "-q", "-am", f"divergence {k}", env=env)
    return target


def pair(label: str, left: tuple, right: tuple, rounds: int, workers: int) -> dict:
    """Runs `left` and `right` (name, argument list) alternately; medians and their ratio."""
    walls: dict[str, list[float]] = {left[0]: [], right[0]: []}
    summaries: dict[str, dict] = {}
    for _ in range(rounds):
        for name, args in (left, right):
            wall, summary = timed("run", *args, "-j", str(workers), "--fresh", "--no-progress", "--json")
            walls[name].append(wall)
            summaries[name] = summary
    result = {"case": label, "rounds": rounds, "workers": workers}
    for name, _ in (left, right):
        result[name] = {"median_s": round(statistics.median(walls[name]), 3), "walls": [round(w, 3) for w in walls[name]],
                        "files": summaries[name]["files"], "parses": summaries[name].get("parses"),
                        "peak_rss_bytes": summaries[name]["peak_rss_bytes"]}
    result["ratio"] = round(result[left[0]]["median_s"] / result[right[0]]["median_s"], 3)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("repo")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json")
    ap.add_argument("--copies-from", metavar="SDIST", help="build the 20 copies' repository from this .tar.gz")
    ap.add_argument("--only", choices=("history", "rev", "copies"), action="append",
                    help="run only these cases (repeatable)")
    args = ap.parse_args()
    repo = os.path.abspath(args.repo)
    scratch = tempfile.mkdtemp(prefix="snakebatch-gitbench-")
    results = []
    try:
        cases = set(args.only or ("history", "rev", "copies"))
        blobs_dir = os.path.join(scratch, "blobs")
        started = time.perf_counter()
        unique = unique_blob_folder(repo, blobs_dir) if "history" in cases else 0
        print(f"{unique} unique blobs written in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        history = None if "history" not in cases else pair("history vs its unique blobs as files",
                       ("history", [repo, "--history", "-o", os.path.join(scratch, "out-history")]),
                       ("blob_folder", [blobs_dir, "-o", os.path.join(scratch, "out-blobs")]),
                       args.rounds, args.workers)
        if history is not None:
            history["unique_blobs"] = unique
            results.append(history)
            print(json.dumps(history), file=sys.stderr)

        checkout = os.path.join(scratch, "checkout")
        if "rev" in cases:
            git(repo, "worktree", "add", "-q", "--detach", checkout, "HEAD")
        try:
            rev = None if "rev" not in cases else pair("--rev HEAD vs a checkout of HEAD",
                       ("rev", [repo, "--rev", "HEAD", "-o", os.path.join(scratch, "out-rev")]),
                       ("checkout", [checkout, "-o", os.path.join(scratch, "out-checkout")]),
                       args.rounds, args.workers)
        finally:
            if "rev" in cases:
                git(repo, "worktree", "remove", "--force", checkout)
        if rev is not None:
            results.append(rev)
            print(json.dumps(rev), file=sys.stderr)

        if "copies" in cases:
            copies_repo = divergent_repo(args.copies_from, os.path.join(scratch, "copies")) if args.copies_from else repo
            copies = pair("20 revisions as 20 sources vs one",
                          ("twenty", [*(f"{copies_repo}@HEAD~{k}" for k in range(20)), "-o",
                                      os.path.join(scratch, "out-20")]),
                          ("one", [f"{copies_repo}@HEAD", "-o", os.path.join(scratch, "out-1")]),
                          args.rounds, args.workers)
            copies["repo"] = args.copies_from or repo
            results.append(copies)
            print(json.dumps(copies), file=sys.stderr)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report = {"repo": repo, "commits": int(git(repo, "rev-list", "--count", "HEAD").stdout), "results": results,
              "load_average": os.getloadavg()}
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
