"""Git plumbing: a repository's revisions, trees, commits and blobs, read with the `git` command.

Owns: every `git` subprocess snakebatch starts (`rev-parse`, `ls-tree`, `rev-list`, `log` (commit
data, and each commit's changes in a history), `diff-tree`, `cat-file --batch-check` and a
long-lived `cat-file --batch` reader), and turning git's failures into ConfigError (a repository
or revision the user named wrongly) or GitObjectError (one object that cannot be read). Must not
touch: filters, parsing or output (engine/gitsource.py decides what the entries become).

Why `git cat-file --batch` and not pygit2 (libgit2): git is on every machine that has a
repository, so it adds no dependency, and one long-lived process streams blobs at disk speed
(3.4 GB of blobs in 2.8 s on the development machine); a blob costs one write and one read of a
pipe. Paths are git's bytes, decoded with `surrogateescape` as `os.scandir` decodes a name on
disk, so a name that is not UTF-8 gets the same `path` as in a checkout (paths.display_path).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from typing import NamedTuple

from .errors import ConfigError

MODE_FILE = "100644"
MODE_EXECUTABLE = "100755"
MODE_SYMLINK = "120000"
MODE_GITLINK = "160000"  # a submodule: a commit of another repository


class GitObjectError(OSError):
    """One object cannot be read (missing from the object database, or git failed on it)."""


class TreeEntry(NamedTuple):
    """A non-tree entry of a recursive tree listing; `size` is None for a gitlink."""

    mode: str
    kind: str  # blob | commit
    object_id: str
    size: int | None
    path: str  # git's bytes decoded with surrogateescape


class CommitInfo(NamedTuple):
    commit: str
    parents: list[str]
    author_time: int  # seconds since the epoch
    committer_time: int
    summary: str


def _env() -> dict:
    env = dict(os.environ)
    env.setdefault("GIT_TERMINAL_PROMPT", "0")
    env["LC_ALL"] = "C"  # messages parsed or quoted here stay in English
    return env


def _git(repo: str, *args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", "-C", repo, *args], capture_output=True, env=_env(), check=False)
    except FileNotFoundError:
        raise ConfigError("--rev/--history need the `git` command, which is not on PATH") from None


def _stderr(proc: subprocess.CompletedProcess) -> str:
    return " ".join(proc.stderr.decode("utf-8", "replace").split())


def check_repository(repo: str) -> None:
    """ConfigError unless `repo` is a working tree, a `.git` folder or a bare repository."""
    proc = _git(repo, "rev-parse", "--git-dir")
    if proc.returncode != 0:
        raise ConfigError(f"SOURCE: {repo!r} is not a git repository (a working tree, a .git folder or a "
                          f"bare repository), which --rev/--revs/--history need: {_stderr(proc)}")


def resolve_commit(repo: str, rev: str, option: str = "--rev") -> str:
    """The full SHA of the commit `rev` names; ConfigError for an unknown revision."""
    check_repository(repo)
    proc = _git(repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}")
    if proc.returncode != 0 or not proc.stdout.strip():
        raise ConfigError(f"{option}: {rev!r} is not a commit of the repository {repo}: unknown revision "
                          "(give a branch, tag, SHA or anything `git rev-parse` accepts)")
    return proc.stdout.decode().strip()


def is_shallow(repo: str) -> bool:
    proc = _git(repo, "rev-parse", "--is-shallow-repository")
    return proc.stdout.strip() == b"true"


def shallow_boundary(repo: str) -> list[str]:
    """The commits of a shallow clone whose parents are missing (the `shallow` file of its git folder)."""
    git_dir = _git(repo, "rev-parse", "--absolute-git-dir").stdout.decode().strip()
    try:
        with open(os.path.join(git_dir, "shallow")) as fh:
            return [line.strip() for line in fh if line.strip()]
    except OSError:
        return []


def rev_list(repo: str, spec: list[str]) -> list[str]:
    """The commits `git rev-list SPEC` gives, oldest first (parents before children)."""
    proc = _git(repo, "rev-list", "--topo-order", "--reverse", *spec, "--")
    if proc.returncode != 0:
        raise ConfigError(f"--revs/--history: git rev-list {' '.join(spec)} failed: {_stderr(proc)}")
    return proc.stdout.decode().split()


def commit_info(repo: str, commits: list[str]) -> Iterator[CommitInfo]:
    """Parents, times and summary line of each commit, in the order given."""
    if not commits:
        return
    fmt = "%H%x00%P%x00%at%x00%ct%x00%s%x00"
    proc = subprocess.run(["git", "-C", repo, "log", "--no-walk=unsorted", f"--format={fmt}", "--stdin"],
                          input="\n".join(commits).encode() + b"\n", capture_output=True, env=_env(), check=False)
    if proc.returncode != 0:
        raise ConfigError(f"--history: git log failed: {_stderr(proc)}")
    fields = proc.stdout.split(b"\x00")
    for i in range(0, len(fields) - 4, 5):
        sha, parents, at, ct, summary = fields[i:i + 5]
        yield CommitInfo(sha.decode().strip(), parents.decode().split(), int(at), int(ct),
                         summary.decode("utf-8", "replace"))


def _records(repo: str, args: list[str], failure: str) -> Iterator[bytes]:
    """The NUL-terminated records `git -C repo ARGS` prints, streamed; ConfigError(`failure`:
    git's message) when it fails."""
    proc = subprocess.Popen(["git", "-C", repo, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    try:
        pending = b""
        while True:
            chunk = proc.stdout.read(1 << 16)
            if not chunk:
                break
            pending += chunk
            *records, pending = pending.split(b"\0")
            yield from records
    finally:
        proc.stdout.close()
        error = proc.stderr.read()
        proc.stderr.close()
        code = proc.wait()
    if code != 0:
        raise ConfigError(f"{failure}: {' '.join(error.decode('utf-8', 'replace').split())}")


def ls_tree(repo: str, commit: str) -> Iterator[TreeEntry]:
    """Every blob and gitlink of the tree at `commit` (recursively), in git's order, streamed."""
    for record in _records(repo, ["ls-tree", "-r", "-z", "-l", "--full-tree", commit],
                           f"cannot list the tree of {commit} in {repo}"):
        meta, _, name = record.partition(b"\t")
        mode, kind, object_id, size = meta.split()
        # `-`: a gitlink; `BAD`: a blob missing from the object database (0 here, its reading
        # gives the io_error row).
        yield TreeEntry(mode.decode(), kind.decode(), object_id.decode(),
                        None if size == b"-" else int(size) if size.isdigit() else 0, os.fsdecode(name))


def rev_parents(repo: str, spec: list[str]) -> dict[str, list[str]]:
    """Each commit `git rev-list SPEC` gives, with its parents (all of them, in or out of SPEC)."""
    proc = _git(repo, "rev-list", "--parents", *spec, "--")
    if proc.returncode != 0:
        raise ConfigError(f"--revs/--history: git rev-list {' '.join(spec)} failed: {_stderr(proc)}")
    return {line.split()[0]: line.split()[1:] for line in proc.stdout.decode().splitlines() if line.strip()}


def _log_changes(repo: str, spec: list[str]) -> Iterator[tuple[str, list[tuple[str, str, str]]]]:
    """(commit, [(path, new mode, new object id)]) for each commit of SPEC, parents first: its
    changes against its first parent (against nothing for a root), from one streamed `git log`."""
    args = ["log", "-z", "--raw", "-r", "--no-renames", "--no-abbrev", "--root", "--diff-merges=first-parent",
            "--topo-order", "--reverse", "--format=%x01%H", *spec, "--"]
    commit, changes, meta = None, [], None
    for token in _records(repo, args, f"--history: git log failed in {repo}"):
        if meta is not None:  # the path after a change's modes and ids, whatever its bytes
            fields = meta.split()
            changes.append((os.fsdecode(token), fields[1].decode(), fields[3].decode()))
            meta = None
            continue
        token = token.lstrip(b"\n")
        if token.startswith(b"\x01"):
            if commit is not None:
                yield commit, changes
            commit, changes = token[1:].decode().strip(), []
        elif token.startswith(b":"):
            meta = token[1:]
    if commit is not None:
        yield commit, changes


def history_trees(repo: str, spec: list[str], keep: Callable[[str, str], bool]
                  ) -> Iterator[tuple[str, dict[str, tuple[str, str]], set[str] | None]]:
    """Each commit of `git rev-list SPEC`, oldest first (parents before children), with its
    whole tree {path: (mode, object id)} and the paths that differ from its first parent's tree
    (None when every path is to be taken as new: a root, or a first parent outside SPEC).

    One `git log --raw` gives every commit's changes against its first parent (a merge's too),
    and each tree is its first parent's with those changes applied: the cost follows the
    changes, where an `ls-tree` per commit costs a process and the whole tree each (on
    pallets/flask's 5,500 commits: ~0.5 s against ~36 s). A parent's tree is kept until its
    last child in SPEC has taken it (the last one takes it without a copy). A tree holds only
    the entries `keep(path, mode)` takes. The dict yielded is only valid until the next one."""
    parents = rev_parents(repo, spec)
    children: dict[str, int] = {}
    for commit_parents in parents.values():
        for parent in commit_parents:
            if parent in parents:
                children[parent] = children.get(parent, 0) + 1
    trees: dict[str, dict[str, tuple[str, str]]] = {}
    for commit, changes in _log_changes(repo, spec):
        first = parents[commit][0] if parents[commit] else None
        changed: set[str] | None = {path for path, _, _ in changes}
        if first is None:
            tree: dict[str, tuple[str, str]] = {}
            changed = None
        elif first not in parents:  # outside SPEC (`--revs A..B`): its tree, listed once
            tree = {e.path: (e.mode, e.object_id) for e in ls_tree(repo, first) if keep(e.path, e.mode)}
            changed = None
        else:
            children[first] -= 1
            tree = trees.pop(first) if children[first] == 0 else dict(trees[first])
        for other in parents[commit][1:]:
            if other in parents:
                children[other] -= 1
                if children[other] == 0:
                    trees.pop(other, None)
        for path, mode, object_id in changes:
            if mode != "000000" and keep(path, mode):
                tree[path] = (mode, object_id)
            else:
                tree.pop(path, None)
        yield commit, tree, changed
        if children.get(commit, 0) > 0:
            trees[commit] = tree


class TreeChange(NamedTuple):
    """A path whose entry differs between two trees (`git diff-tree -r`); the side where the
    path is absent has mode `000000`."""

    old_mode: str
    new_mode: str
    old_id: str
    new_id: str
    path: str  # git's bytes decoded with surrogateescape


def diff_tree(repo: str, old: str, new: str) -> list[TreeChange]:
    """The paths whose blob, mode or kind differ between the trees of commits `old` and `new`
    (renames as a deletion and an addition). Git compares the two trees by their object ids, so
    its cost follows the change, not the size of the trees."""
    proc = _git(repo, "diff-tree", "-r", "-z", "--no-renames", "--full-index", "--no-commit-id", old, new)
    if proc.returncode != 0:
        raise ConfigError(f"cannot compare {old} with {new} in {repo}: {_stderr(proc)}")
    fields = proc.stdout.split(b"\0")
    changes = []
    for i in range(0, len(fields) - 1, 2):
        old_mode, new_mode, old_id, new_id, _status = fields[i].lstrip(b":").decode().split()
        changes.append(TreeChange(old_mode, new_mode, old_id, new_id, os.fsdecode(fields[i + 1])))
    return changes


def blob_sizes(repo: str, object_ids: list[str]) -> dict[str, int]:
    """The size of each blob (`git cat-file --batch-check`); 0 for one missing from the object
    database (its reading gives the io_error row, as `ls_tree`'s `BAD`)."""
    if not object_ids:
        return {}
    proc = subprocess.run(["git", "-C", repo, "cat-file", "--batch-check"], input="\n".join(object_ids).encode() + b"\n",
                          capture_output=True, env=_env(), check=False)
    if proc.returncode != 0:
        raise ConfigError(f"git cat-file --batch-check failed in {repo}: {_stderr(proc)}")
    sizes = {}
    for line in proc.stdout.decode().splitlines():
        parts = line.split()
        sizes[parts[0]] = int(parts[2]) if len(parts) == 3 and parts[2].isdigit() else 0
    return sizes


class CatFile:
    """A long-lived `git cat-file --batch` of one repository: blob id in, content out."""

    def __init__(self, repo: str):
        self.repo = repo
        self.proc: subprocess.Popen | None = None

    def _start(self) -> subprocess.Popen:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen(["git", "-C", self.repo, "cat-file", "--batch"], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=_env())
        return self.proc

    def read(self, object_id: str) -> bytes:
        """The object's content; GitObjectError when it is missing or git fails."""
        for attempt in (0, 1):  # a cat-file that died (killed, OOM) is started again once
            proc = self._start()
            try:
                proc.stdin.write(object_id.encode() + b"\n")
                proc.stdin.flush()
                header = proc.stdout.readline()
                if not header:
                    raise BrokenPipeError("git cat-file ended")
                parts = header.split()
                if len(parts) != 3:
                    raise GitObjectError(f"git object {object_id} cannot be read: {header.decode('utf-8', 'replace').strip()}")
                size = int(parts[2])
                data = proc.stdout.read(size + 1)[:size]  # the content and its newline
                if len(data) != size:
                    raise BrokenPipeError("git cat-file ended mid-object")
                return data
            except (BrokenPipeError, ValueError, OSError) as err:
                self.close()
                if attempt:
                    raise GitObjectError(f"git cat-file failed on {object_id}: {err}") from None
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.proc is not None:
            for stream in (self.proc.stdin, self.proc.stdout):
                try:
                    stream.close()
                except OSError:
                    pass
            self.proc.kill()
            self.proc.wait()
            self.proc = None
