"""The one typed configuration of a job, validated once at the edge.

Owns: `JobConfig` (the options that change the rows: the job's identity on resume) and
`RunConfig` (how this run executes them), parsing of sizes, `snakebatch.toml` /
`[tool.snakebatch]` defaults, and every ConfigError for a bad option. The CLI and the Python API
both call `build_config`; nothing past it re-validates or reads options from anywhere else.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
import tomllib
from collections.abc import Callable
from typing import Literal

import msgspec

from .errors import ConfigError

DASK_EXTRA_MISSING = "--executor dask needs the extra: pip install 'snakebatch[dask]'"

_SIZE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*([kmgt]?)(i?)(b?)\s*$", re.I)
_SCHEDULER = re.compile(r"^(?:[a-z]+://)?(?:\[[0-9a-f:.]+\]|[^\s:/\[\]]+):\d{1,5}/?$", re.I)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


# SOURCE and OUT schemes opened through obstore (store/objectsource.py, store/objectstore.py);
# `file://` is a local folder.
OBJECT_SCHEMES = ("s3", "s3a", "gs", "az", "azure", "abfs", "abfss")


def refuse_url(path: str | os.PathLike, option: str, supported: tuple[str, ...] = ()) -> None:
    """ConfigError for `s3://...` and any other `scheme://` not in `supported`: taken as a local
    path, it would quietly become a folder named `s3:` in the current one."""
    text = os.fspath(path)
    if isinstance(text, str) and _URL.match(text):
        scheme = text.split("://", 1)[0]
        if scheme.lower() in supported:
            return
        where = (f"supported: {', '.join(s + '://' for s in supported)} and file://" if supported
                 else "give a local folder")
        raise ConfigError(f"{option}: {text!r}: object storage ({scheme}://) is not supported here; {where}")


def _output_location(output: str | os.PathLike) -> str:
    """OUT as RunConfig keeps it: an object-store URL as given (no trailing slash), `file://PATH`
    and a plain path as an absolute local path."""
    text = os.fspath(output)
    if _URL.match(text) and text.split("://", 1)[0].lower() in OBJECT_SCHEMES \
            and importlib.util.find_spec("obstore") is None:
        raise ConfigError(f"-o/--output: {text}: object storage needs the extra: pip install 'snakebatch[s3]'")
    if isinstance(text, str) and text.lower().startswith("file://"):
        return os.path.abspath(text[len("file://"):] or "/")
    refuse_url(text, "-o/--output", OBJECT_SCHEMES)
    if _URL.match(text):
        scheme, rest = text.split("://", 1)
        if not rest.strip("/"):
            raise ConfigError(f"-o/--output: {text!r} names no bucket; give {scheme}://BUCKET/PREFIX")
        return f"{scheme.lower()}://{rest.rstrip('/')}"
    return os.path.abspath(text)


def _source_location(source: str | os.PathLike) -> str:
    """SOURCE as JobConfig keeps it: an object-store URL as given (no trailing slash), `file://PATH`
    and a plain path as an absolute local path (ConfigError when that is not a folder)."""
    text = os.fspath(source)
    if isinstance(text, str) and _URL.match(text) and text.split("://", 1)[0].lower() in OBJECT_SCHEMES:
        if importlib.util.find_spec("obstore") is None:
            raise ConfigError(f"SOURCE: {text}: object storage needs the extra: pip install 'snakebatch[s3]'")
        scheme, rest = text.split("://", 1)
        if not rest.strip("/"):
            raise ConfigError(f"SOURCE: {text!r} names no bucket; give {scheme}://BUCKET/PREFIX")
        return f"{scheme.lower()}://{rest.strip('/')}"
    if isinstance(text, str) and text.lower().startswith("file://"):
        text = text[len("file://"):] or "/"
    refuse_url(text, "SOURCE", OBJECT_SCHEMES)
    path = os.path.abspath(text)
    if not os.path.exists(path):
        raise ConfigError(f"SOURCE: {os.fspath(source)!r} does not exist")
    if not os.path.isdir(path):
        raise ConfigError(f"SOURCE: {os.fspath(source)!r} is not a folder")
    return path


def object_output(output: str, storage_options: object) -> tuple[str, dict]:
    """(URL, storage options) of an OUT in object storage, as RunConfig keeps them; ConfigError
    as for `run`. For the commands that read a job (`status`)."""
    return _output_location(output), _storage_options(storage_options, "--storage-option")


def is_object_output(output: str) -> bool:
    return _URL.match(output) is not None


def _storage_options(value: object, option: str) -> dict:
    """{key: value} from `KEY=VALUE` strings (--storage-option, repeatable) or a mapping."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    items = [value] if isinstance(value, str) else list(value)
    options = {}
    for item in items:
        key, sep, val = str(item).partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{option}: {item!r} is not KEY=VALUE (e.g. endpoint=http://127.0.0.1:9000)")
        options[key.strip()] = val
    return options


def parse_size(value: object, option: str) -> int:
    """Bytes from `512MB`, `2GiB`, `100k` or a plain number; ConfigError naming `option` otherwise."""
    if isinstance(value, bool):
        value = str(value)
    if isinstance(value, (int, float)):
        number, unit, binary, bytes_suffix = float(value), "", "", ""
    else:
        match = _SIZE.match(str(value))
        if not match:
            raise ConfigError(
                f"{option}: {value!r} is not a size; use a number of bytes or e.g. 512MB, 2GiB, 100k"
            )
        number, unit, binary, bytes_suffix = (
            float(match.group(1)), match.group(2).lower(), match.group(3), match.group(4))
    if number <= 0:
        raise ConfigError(f"{option}: {value!r} must be larger than zero (e.g. 512MB, 2GiB)")
    # KB, MB are decimal as disk vendors write them; KiB, MiB and a bare k, M are binary.
    base = 1024 if binary or not bytes_suffix else 1000
    size = int(number * base ** _POWERS[unit])
    if size < 1:
        raise ConfigError(f"{option}: {value!r} is less than one byte (e.g. 512MB, 2GiB)")
    return size


class SourceSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One source of a job: what its rows' `source` column holds, its folder, and for a git
    revision the resolved commit and the REV as written (`REPO@REV`, for the resume command)."""

    label: str
    path: str
    commit: str | None = None
    rev: str | None = None


class JobConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a job is: every option that changes its rows. `--resume` must find the same values."""

    source: str  # the one SOURCE; "" in a job of several (`sources` holds them all)
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    gitignore: bool = True
    follow_symlinks: bool = False
    max_file_size: int = 16 * 1024 * 1024
    parsers: tuple[str, ...] = ()
    content: bool = False
    # A git source (gitrepo.py, engine/gitsource.py): the resolved SHA of --rev (or the tip of
    # --history / --revs), whether every commit reachable from it is taken, and the resolved
    # A of --revs A..B (its history is left out).
    commit: str | None = None
    history: bool = False
    since: str | None = None
    # Every source of the job, in the order given (one for a single SOURCE); empty in a job
    # written before jobs had several (no `source` column: store/jobfolder.py refuses to resume it).
    sources: tuple[SourceSpec, ...] = ()

    def of_source(self, spec: SourceSpec) -> JobConfig:
        """This job as a job of `spec` alone: what discovery and a git source walk."""
        return msgspec.structs.replace(self, source=spec.path, commit=spec.commit, sources=(spec,))


# The JobConfig fields as the command line names them, for messages about a changed option.
JOB_OPTION_NAMES = {
    "source": "SOURCE",
    "include": "--include",
    "exclude": "--exclude",
    "gitignore": "--no-gitignore",
    "follow_symlinks": "--follow-symlinks",
    "max_file_size": "--max-file-size",
    "parsers": "--parser",
    "content": "--content",
    "commit": "--rev",
    "history": "--history",
    "since": "--revs",
    "sources": "SOURCE",
}


class RunConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How one run executes a job; these may change freely between a run and its resume."""

    job: JobConfig
    output: str
    mode: Literal["new", "resume", "fresh", "refresh"] = "new"
    workers: int = 1
    memory_budget: int = 1 << 30
    batch_bytes: int | None = None
    file_timeout: float = 60.0
    retries: int = 1
    fail_fast: bool = False
    max_errors: int | None = None
    executor: Literal["local", "dask"] = "local"
    scheduler: str | None = None
    progress: bool | None = None
    compact: bool = True  # once complete, merge each table's parts into a few large ones
    # --refresh only (engine/refresh.py): statuses whose files are parsed again even if unchanged,
    # and whether every file is hashed instead of trusting its stat data.
    redo: tuple[str, ...] = ()
    verify_content: bool = False
    # OUT in object storage only: options of its store (endpoint, region, credentials), added to
    # what the standard environment gives (store/objectstore.py).
    storage_options: dict = {}
    # --cache DIR (store/blobcache.py): parse results by content, shared by every job naming DIR,
    # kept under --cache-size. It changes no row, so it is a run option.
    cache: str | None = None
    cache_size: int = 2 << 30
    # SOURCE in object storage (store/objectsource.py): its store takes storage_options, then
    # these (--source-option) over them.
    source_options: dict = {}

    @property
    def source_store_options(self) -> dict:
        """The options of SOURCE's store ({} for a local SOURCE)."""
        return {**self.storage_options, **self.source_options} if is_object_output(self.job.source) else {}


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_memory_budget() -> int:
    import psutil  # here: 15 ms of every worker's start (it imports config by store/objectstore.py)

    return psutil.virtual_memory().available // 2


def file_defaults(source: str) -> tuple[dict, str | None]:
    """Options from `SOURCE/snakebatch.toml`, or else `[tool.snakebatch]` in `SOURCE/pyproject.toml`,
    and the name they are reported under in messages (None when there are none)."""
    for name, section in (("snakebatch.toml", None), ("pyproject.toml", ("tool", "snakebatch"))):
        path = os.path.join(source, name)
        if not os.path.isfile(path):
            continue
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise ConfigError(f"{path}: cannot read it as TOML ({err})") from None
        where = path
        for key in section or ():
            data = data.get(key, {})
            where = f"{path} [tool.snakebatch]"
        if data:
            if not isinstance(data, dict):
                raise ConfigError(f"{where}: must be a table of options")
            return {k.replace("-", "_"): v for k, v in data.items()}, where
    return {}, None


def chosen_executor(source: str | list, executor: str | None) -> str | None:
    """The executor `build_config` will choose for a run of `source`, read cheaply before it (the
    CLI starts the local pool's forkserver by it): `executor` when given, else the one a single
    local SOURCE's snakebatch.toml names, else local. None when SOURCE or its file is a mistake
    that `build_config` will report."""
    if executor is not None:
        return executor
    if isinstance(source, (list, tuple)):
        return "local"  # several sources read no snakebatch.toml
    try:
        text = os.fspath(source)
        source_path = _source_location(text if _URL.match(text) else split_entry(text)[0])
        from_file = {} if is_object_output(source_path) else file_defaults(source_path)[0]
    except (ConfigError, TypeError):
        return None
    return from_file.get("executor", "local")


_JOB_KEYS = set(JobConfig.__struct_fields__) - {"source", "commit", "history", "since", "sources"}
# redo and verify_content belong to one refresh, not to a configuration file.
_RUN_KEYS = set(RunConfig.__struct_fields__) - {"job", "output", "mode", "redo", "verify_content"}
OPTION_NAMES = sorted(_JOB_KEYS | _RUN_KEYS)


def _unknown(names: set, where: str | None) -> ConfigError:
    hints = []
    for name in sorted(names):
        close = difflib.get_close_matches(name, OPTION_NAMES, n=1)
        hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    prefix = f"{where}: " if where else ""
    return ConfigError(f"{prefix}unknown option(s) {', '.join(hints)}; known: {', '.join(OPTION_NAMES)}")


class _Options:
    """The merged options, each with where it came from, so a message names what the user wrote:
    `--workers` for the command line and the API, `workers in SOURCE/snakebatch.toml` for the file."""

    def __init__(self, given: dict, from_file: dict, where: str | None):
        self.values = {**from_file, **given}
        self.from_file = {k for k in from_file if k not in given}
        self.where = where

    def label(self, name: str) -> str:
        flag = "--" + name.replace("_", "-")
        flag = {"--parsers": "--parser", "--gitignore": "gitignore (--no-gitignore)",
                "--storage-options": "--storage-option", "--source-options": "--source-option"}.get(flag, flag)
        return f"{name} in {self.where}" if name in self.from_file else flag

    def get(self, name: str, default=None):
        return self.values.get(name, default)

    def __contains__(self, name: str) -> bool:
        return name in self.values


def _as_tuple(value: object, option: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"{option}: expected a string or a list of strings, got {value!r}")


def _flag(value: object, option: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{option}: expected true or false, got {value!r}")
    return value


def _positive_int(value: object, option: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConfigError(f"{option}: expected a whole number >= {minimum}, got {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{option}: expected a whole number >= {minimum}, got {value!r}") from None
    if number < minimum:
        raise ConfigError(f"{option}: must be at least {minimum}, got {number}")
    return number


def _redo_statuses(value: object) -> tuple[str, ...]:
    """`--redo ok,timeout` (or a list) as a tuple of known statuses."""
    from .schema import STATUSES

    if value is None or value == "" or value == ():
        return ()
    words = value.split(",") if isinstance(value, str) else value
    if not isinstance(words, (list, tuple)) or not all(isinstance(w, str) for w in words):
        raise ConfigError(f"--redo: expected statuses separated by commas, got {value!r}")
    statuses = tuple(dict.fromkeys(w.strip() for w in words if w.strip()))
    unknown = [s for s in statuses if s not in STATUSES]
    if unknown:
        raise ConfigError(f"--redo: {', '.join(map(repr, unknown))} is not a status; use some of {', '.join(STATUSES)}")
    return statuses


def _git_source(source: str, rev: str | None, revs: str | None, history: bool) -> dict:
    """The JobConfig fields of a git source (`commit`, `history`, `since`), resolved now; {} for
    a folder. ConfigError for a folder that is not a repository, an unknown revision, or a
    shallow clone that lacks history the job needs."""
    if rev is None and revs is None and not history:
        return {}
    from . import gitrepo

    if revs is not None:
        if rev is not None:
            raise ConfigError("--revs A..B and --rev exclude each other: --revs names its own tip (B)")
        if not isinstance(revs, str) or "..." in revs or revs.count("..") != 1:
            raise ConfigError(f"--revs: expected A..B (the commits reachable from B and not from A), got {revs!r}")
        since_rev, tip_rev = revs.split("..")
        since = gitrepo.resolve_commit(source, since_rev or "HEAD", "--revs")
        commit = gitrepo.resolve_commit(source, tip_rev or "HEAD", "--revs")
        history = True
    else:
        since = None
        commit = gitrepo.resolve_commit(source, rev if rev is not None else "HEAD")
    if history and gitrepo.is_shallow(source):
        spec = [commit] + ([f"^{since}"] if since else [])
        taken = set(gitrepo.rev_list(source, spec))
        cut = [sha for sha in gitrepo.shallow_boundary(source) if sha in taken]
        if cut:
            raise ConfigError(
                f"--history: {source} is a shallow clone: the parents of {len(cut)} commit(s) in the history "
                f"asked for are missing (e.g. of {cut[0]}); fetch them with `git fetch --unshallow`, or name a "
                f"range that starts after them with --revs {cut[0]}..{commit[:12]}")
    return {"commit": commit, "history": history, "since": since}


def _cache_folder(value: object, size: object, label: Callable[[str], str], sources: list[str], output: str,
                  ) -> tuple[str | None, int]:
    """(folder, bound) of --cache / --cache-size; the folder is created if missing. ConfigError for a
    URL, a folder inside SOURCE (the walk would ingest it) or inside a local OUT, or one that cannot
    be created or written."""
    bound = parse_size(size if size is not None else "2GiB", label("cache_size"))
    if value is None:
        if size is not None:
            raise ConfigError(f"{label('cache_size')} needs --cache DIR")
        return None, bound
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise ConfigError(f"{label('cache')}: expected a path to a folder, got {value!r}")
    refuse_url(value, label("cache"))
    folder = os.path.abspath(os.fspath(value))
    for what, where in (*(("SOURCE", source) for source in sources), ("OUT", "" if is_object_output(output) else output)):
        if where and os.path.commonpath([folder, where]) == where:
            raise ConfigError(f"{label('cache')}: {folder} is inside {what} ({where}); give a folder outside it")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"{label('cache')}: cannot create {folder}: {err.strerror or err}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"{label('cache')}: {folder} is not a folder this user can write")
    return folder, bound


# -- several sources in one job ----------------------------------------------------------------


def read_sources_file(path: str | os.PathLike) -> list[str]:
    """The entries of a `--sources` list: one a line (a folder, or REPO@REV), blank lines and `#`
    comments skipped, a relative entry taken from the list file's folder; `-` reads stdin."""
    import sys

    text = os.fspath(path)
    try:
        if text == "-":
            lines, base = sys.stdin.read().splitlines(), os.getcwd()
        else:
            with open(text, encoding="utf-8") as fh:
                lines, base = fh.read().splitlines(), os.path.dirname(os.path.abspath(text))
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"--sources: cannot read {text!r}: {getattr(err, 'strerror', None) or err}") from None
    entries = [line.strip() for line in lines]
    entries = [os.path.join(base, os.path.expanduser(e)) for e in entries if e and not e.startswith("#")]
    if not entries:
        raise ConfigError(f"--sources: {text!r} names no source (one folder or REPO@REV a line)")
    return entries


def split_entry(entry: str | os.PathLike) -> tuple[str, str | None]:
    """(folder, REV or None) of a SOURCE entry: a path that exists is a folder as it is; else
    `REPO@REV`, split at the last `@` whose left side is a folder (a REV may hold `@`: `main@{1}`)."""
    if not isinstance(entry, (str, os.PathLike)):
        raise ConfigError(f"SOURCE: expected a path to a folder, got {entry!r}")
    text = os.fspath(entry)
    refuse_url(text, "SOURCE")
    if not isinstance(text, str) or os.path.exists(text):
        return text, None
    at = len(text)
    while (at := text.rfind("@", 0, at)) > 0:
        if os.path.isdir(text[:at]):
            if at == len(text) - 1:
                raise ConfigError(f"SOURCE: {text!r} names no revision after the '@' (give REPO@REV)")
            return text[:at], text[at + 1:]
    raise ConfigError(f"SOURCE: {text!r} does not exist" + (" (nor is it REPO@REV of an existing folder)"
                                                           if "@" in text else ""))


def _name_parts(path: str) -> list[str]:
    """The components that name a source folder: a `.git` folder is named by its working tree."""
    parts = [p for p in path.split(os.sep) if p]
    return parts[:-1] if len(parts) > 1 and parts[-1] == ".git" else parts or [os.sep]


def source_labels(folders: list[str], revs: list[str | None]) -> list[str]:
    """Each source's `source` label: its folder's name, `@REV` (as written) added for a git
    revision; names that two sources share take parent folders until they differ (`a/src`)."""
    parts = [_name_parts(folder) for folder in folders]
    depth = [1] * len(folders)

    def label(i: int) -> str:
        return "/".join(parts[i][-depth[i]:]) + (f"@{revs[i]}" if revs[i] is not None else "")

    while True:
        labels = [label(i) for i in range(len(folders))]
        seen: dict[str, list[int]] = {}
        for i, text in enumerate(labels):
            seen.setdefault(text, []).append(i)
        grow = [i for group in seen.values() if len(group) > 1 for i in group if depth[i] < len(parts[i])]
        if not grow:
            return labels
        for i in grow:
            depth[i] += 1


def _several_sources(entries: list, rev: str | None, revs: str | None, history: bool, refresh: bool
                     ) -> tuple[SourceSpec, ...]:
    """The SourceSpecs of a job of several sources, checked: each a folder or REPO@REV, none twice."""
    for given, option in ((rev is not None, "--rev"), (revs is not None, "--revs"), (history, "--history"),
                          (refresh, "--refresh")):
        if given:
            if option == "--rev":
                raise ConfigError(f"--rev applies to one SOURCE, and {len(entries)} were given: "
                                  "give each git source as REPO@REV instead")
            raise ConfigError(f"{option}: not supported in a job of several sources ({len(entries)} were given); "
                              "run each source into its own OUT")
    from . import gitrepo

    folders, written, commits, seen = [], [], [], {}
    for entry in entries:
        folder, entry_rev = split_entry(entry)
        path = os.path.abspath(folder)
        if not os.path.isdir(path):
            raise ConfigError(f"SOURCE: {os.fspath(entry)!r} is not a folder")
        commit = None if entry_rev is None else gitrepo.resolve_commit(path, entry_rev, f"SOURCE {os.fspath(entry)}")
        key = (os.path.realpath(path), commit)
        if key in seen:
            raise ConfigError(f"SOURCE: {os.fspath(entry)!r} is the same source as {seen[key]!r}"
                              + (f" (commit {commit[:12]})" if commit else "") + "; give each source once")
        seen[key] = os.fspath(entry)
        folders.append(path)
        written.append(entry_rev)
        commits.append(commit)
    labels = source_labels(folders, written)
    return tuple(SourceSpec(label, path, commit, rev) for label, path, commit, rev in zip(labels, folders, commits, written))


def build_config(source: str | os.PathLike | list, output: str | os.PathLike | None = None, *,
                 resume: bool = False, fresh: bool = False, refresh: bool = False,
                 rev: str | None = None, revs: str | None = None, history: bool = False,
                 redo: object = None, verify_content: bool = False, use_config_file: bool = True,
                 require_output: bool = True, budget_floor: Callable[[int, int], str | None] | None = None,
                 **options) -> RunConfig:
    """The validated RunConfig for `source` and `options` (CLI/API names, `_` for `-`).

    `None` means "not given": the file's value or the default applies. `budget_floor`: why a
    memory budget is too low for the local pool at rest, or None (the governor's model, given by
    the caller: a run refuses such a budget here, a plan only warns about it).
    """
    modes = [name for name, given in (("--resume", resume), ("--fresh", fresh), ("--refresh", refresh)) if given]
    if len(modes) > 1:
        raise ConfigError(f"{' and '.join(modes)} exclude each other: choose one")
    redo_statuses = _redo_statuses(redo)
    if (redo_statuses or verify_content) and not refresh:
        raise ConfigError(f"{'--redo' if redo_statuses else '--verify-content'} needs --refresh")
    entries = list(source) if isinstance(source, (list, tuple)) else [source]
    if not entries:
        raise ConfigError("SOURCE: give at least one source folder")
    several = _several_sources(entries, rev, revs, history, refresh) if len(entries) > 1 else ()
    remote_source = False
    if several:
        source_path = ""
    else:
        if not isinstance(entries[0], (str, os.PathLike)):
            raise ConfigError(f"SOURCE: expected a path to a folder, got {entries[0]!r}")
        text = os.fspath(entries[0])
        if isinstance(text, str) and _URL.match(text):  # s3://... or file://...
            source_path, entry_rev = _source_location(text), None
        else:
            folder, entry_rev = split_entry(text)
            source_path = _source_location(folder)
        if entry_rev is not None and (rev is not None or revs is not None):
            raise ConfigError(f"SOURCE {text!r} names its revision; give it there or with --rev, not both")
        rev = entry_rev if entry_rev is not None else rev
        # SOURCE in object storage: no snakebatch.toml is read from it (an object there is a file
        # of the job like any other); options come from the command line or the API.
        remote_source = is_object_output(source_path)
        if remote_source and (rev is not None or revs is not None or history):
            raise ConfigError("--rev/--revs/--history: a SOURCE in object storage is not a git repository")
        if remote_source and refresh:
            raise ConfigError("--refresh: not supported for a SOURCE in object storage yet (its objects have no "
                              "stat data to compare); use --resume to add new objects, or --fresh")
    unknown = set(options) - _JOB_KEYS - _RUN_KEYS
    if unknown:
        raise _unknown(unknown, None)
    # A job of several sources reads no source's snakebatch.toml: whose would win is arbitrary.
    from_file, where = (file_defaults(source_path) if use_config_file and not several and not remote_source
                        else ({}, None))
    unknown_in_file = set(from_file) - _JOB_KEYS - _RUN_KEYS
    if unknown_in_file:
        raise _unknown(unknown_in_file, where)
    merged = _Options({k: v for k, v in options.items() if v is not None}, from_file, where)
    label = merged.label

    job = JobConfig(
        source=source_path,
        include=_as_tuple(merged.get("include"), label("include")),
        exclude=_as_tuple(merged.get("exclude"), label("exclude")),
        gitignore=_flag(merged.get("gitignore", True), label("gitignore")),
        follow_symlinks=_flag(merged.get("follow_symlinks", False), label("follow_symlinks")),
        max_file_size=parse_size(merged.get("max_file_size", "16MiB"), label("max_file_size")),
        parsers=_as_tuple(merged.get("parsers"), label("parsers")),
        content=_flag(merged.get("content", False), label("content")),
        **(_git_source(source_path, rev, revs, history) if not several else {}),
    )
    job = msgspec.structs.replace(job, sources=several or (
        SourceSpec(source_labels([source_path], [None])[0], source_path, job.commit),))
    if job.history and refresh:
        raise ConfigError("--refresh of a --history/--revs job is not supported: run the new range into a new OUT")
    from .parsers import resolve

    for spec in job.parsers:
        resolve(spec)  # raises ConfigError for an unknown name or a bad module:attribute

    executor = merged.get("executor", "local")
    if executor not in ("local", "dask"):
        raise ConfigError(f"{label('executor')}: {executor!r} is not one of local, dask")
    scheduler = merged.get("scheduler")
    if scheduler is not None and not isinstance(scheduler, str):
        raise ConfigError(f"{label('scheduler')}: expected an address like tcp://HOST:PORT, got {scheduler!r}")
    if scheduler is not None and executor != "dask":
        raise ConfigError("--scheduler needs --executor dask")
    if scheduler is not None and not _SCHEDULER.match(str(scheduler)):
        raise ConfigError(f"{label('scheduler')}: {scheduler!r} is not a Dask scheduler address like tcp://HOST:PORT")
    if executor == "dask" and importlib.util.find_spec("distributed") is None:
        raise ConfigError(DASK_EXTRA_MISSING)
    max_errors = merged.get("max_errors")
    file_timeout = merged.get("file_timeout", 60.0)
    if isinstance(file_timeout, bool) or not isinstance(file_timeout, (int, float, str)):
        raise ConfigError(f"{label('file_timeout')}: expected seconds, got {file_timeout!r}")
    try:
        file_timeout = float(file_timeout)
    except ValueError:
        raise ConfigError(f"{label('file_timeout')}: expected seconds, got {file_timeout!r}") from None
    if not file_timeout > 0:
        raise ConfigError(f"{label('file_timeout')}: must be more than 0 seconds, got {file_timeout}")
    compact = _flag(merged.get("compact", True), label("compact"))
    progress = merged.get("progress")
    if progress is not None:
        _flag(progress, label("progress"))
    if output is not None and not isinstance(output, (str, os.PathLike)):
        raise ConfigError(f"-o/--output: expected a path to a folder, got {output!r}")
    if output is None and require_output:
        output = "snakebatch-out"
    output = _output_location(output) if output else ""
    storage_options = _storage_options(merged.get("storage_options"), label("storage_options"))
    if storage_options and not is_object_output(output) and not remote_source:
        raise ConfigError(f"{label('storage_options')}: only for a SOURCE or an OUT in object storage (s3://, gs://, az://)")
    source_options = _storage_options(merged.get("source_options"), label("source_options"))
    if source_options and not remote_source:
        raise ConfigError(f"{label('source_options')}: only for a SOURCE in object storage (s3://, gs://, az://)")
    if remote_source and job.follow_symlinks:
        raise ConfigError(f"{label('follow_symlinks')}: a SOURCE in object storage has no symbolic links")
    cache, cache_size = _cache_folder(merged.get("cache"), merged.get("cache_size"), label,
                                     [spec.path for spec in job.sources], output)
    workers = _positive_int(merged.get("workers", usable_cores()), label("workers"))
    if "memory_budget" in merged:
        memory_budget = parse_size(merged.get("memory_budget"), label("memory_budget"))
    else:
        memory_budget = default_memory_budget()
    # A remote Dask cluster's own memory limits replace the budget (governor.attach).
    if budget_floor is not None and not (executor == "dask" and scheduler is not None):
        budget_problem = budget_floor(memory_budget, workers)
        if budget_problem:
            given = label("memory_budget") if "memory_budget" in merged else (
                "--memory-budget (default: half the available RAM)")
            raise ConfigError(f"{given}: {budget_problem}")
    return RunConfig(
        job=job,
        output=output,
        mode="resume" if resume else "fresh" if fresh else "refresh" if refresh else "new",
        workers=workers,
        memory_budget=memory_budget,
        batch_bytes=parse_size(merged.get("batch_bytes"), label("batch_bytes")) if "batch_bytes" in merged else None,
        file_timeout=file_timeout,
        retries=_positive_int(merged.get("retries", 1), label("retries"), minimum=0),
        fail_fast=_flag(merged.get("fail_fast", False), label("fail_fast")),
        max_errors=None if max_errors is None else _positive_int(max_errors, label("max_errors")),
        executor=executor,
        scheduler=scheduler,
        progress=progress,
        compact=compact,
        redo=redo_statuses,
        verify_content=_flag(verify_content, "--verify-content"),
        storage_options=storage_options,
        cache=cache,
        cache_size=cache_size,
        source_options=source_options,
    )
