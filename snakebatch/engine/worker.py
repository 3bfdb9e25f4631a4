"""The worker: a pure function of its batch, the same in a local process pool or on Dask.

Owns: reading (from a folder, a git object database, or an object store through
store/objectsource.py), hashing and classifying each file of a batch, running its parser under a time
limit, and writing the batch's three part files (fsynced) into the batch's own staging folder
(or putting them under its staging prefix, for an OUT in object storage).
Must not touch: the ledger, the table folders, or any state shared between batches (it returns
small stats; the coordinator decides what is committed).

Within a batch of a git source, a blob seen before is not read or parsed again (`_Reuse`): a file
whose blob id, parser, extension and language by name equal an earlier file's takes that file's
parse result under its own path (discovery and the planner keep a blob's paths together).
Parsers see the path only through those (`Parser.reuse_by_content`). A folder's files are each
read and parsed: tests and users count on a parse per file there, and its equal files are rare.

With `--cache DIR` (store/blobcache.py), a file's parse result is looked up by that same key (plus
the parser's version and origin) once the file is read, in any source: a hit is used as a reused
result is, a miss is parsed and stored. The row's other columns come from the file as read.

A failure on one file becomes that file's status; nothing a file does takes the batch down,
short of killing the process (which the coordinator handles).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import os
import signal
import stat
import threading
import time
from functools import lru_cache
from typing import NamedTuple

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from ..languages import language_of
from ..parsers import ParseResult, ParserRouter
from ..paths import display_path
from ..schema import DEFINITION_FIELDS, DEFINITIONS_SCHEMA, IMPORT_FIELDS, IMPORTS_SCHEMA, TABLES, files_schema
from ..store.blobcache import BlobCache, entry_key
from ..store.durable import fsync_dir, write_part
from ..store.layout import JobLayout, part_name
from ..store.objectsource import read_object
from ..store.objectstore import is_object_url, local_scratch, upload_parts
from . import memprobe
from .gitsource import read_blob
from .watchdog import Heartbeat

BINARY_SNIFF_BYTES = 8000  # git's heuristic: a NUL byte in the first 8000 bytes means binary
MAX_ERROR_MESSAGE = 2000
# Files at least this large have their parse's peak memory measured for the governor; below it
# the fixed costs of a parse drown the per-byte cost, and measuring would cost more than parsing.
MEASURE_MIN_BYTES = 64 * 1024
# After a parse that grew the process by this much, freed heap pages go back to the OS.
TRIM_AFTER_BYTES = 32 * 1024 * 1024


class BatchTask(msgspec.Struct, frozen=True):
    """Everything a worker needs: plain data, picklable, no handles."""

    batch_id: int
    attempt: int
    source: str
    staging: str  # this attempt's own folder; the worker creates it
    files: list  # [(path, size, mtime_ns)] as discovered
    parsers: tuple = ()
    max_file_size: int = 16 * 1024 * 1024
    content: bool = False
    file_timeout: float = 60.0
    retries: int = 1
    forced_status: str | None = None  # write this status for every file without reading it
    forced_message: str | None = None
    heartbeat_dir: str | None = None  # where the watchdog of a local pool reads heartbeats
    storage_options: dict = {}  # when `staging` is an object-store URL (store/objectstore.py)
    source_options: dict = {}  # when `source` is an object-store URL (store/objectsource.py)
    # A git source: files are blobs read from SOURCE's object database (engine/gitsource.py), and
    # each files row's `commit` is this one.
    commit: str | None = None
    cache: str | None = None  # --cache DIR: parse results by content, shared by jobs (store/blobcache.py)
    source_label: str = ""  # every row's `source` column: the label of the batch's one source
    # A job of several git sources: files whose (path, blob) an earlier batch of this run
    # committed, display path -> that batch's id; their rows are copied from its parts in `output`
    # (`_Copies`), with this batch's `source`, `commit` and `batch_id`, instead of read and parsed.
    copy_from: dict = {}
    output: str = ""


class BatchOutcome(msgspec.Struct):
    """What a worker returns: small stats, never rows."""

    batch_id: int
    attempt: int
    staging: str
    rows: dict  # table -> row count
    files_meta: list  # [(size, mtime_ns)] as read, in the order of task.files
    statuses: list  # status of each file, in the order of task.files
    bytes: int
    parse_s: float
    language_counts: dict
    errors: list  # a few (path, status, message) samples
    rss_bytes: int
    pid: int
    # (parser name, source bytes, peak extra RSS bytes) of each file >= MEASURE_MIN_BYTES parsed
    memory_samples: list = []
    parsed: int = 0  # files whose parser ran
    reused: int = 0  # files that took an earlier file's parse result (the same content, `_Reuse`)
    cached: int = 0  # files whose parse result came from --cache
    cache_bytes: int = 0  # disk bytes of the entries this batch stored in --cache
    parts: dict = {}  # table -> [size, xxh3-64 hex] of its staged part, for the ledger
    # [ctime_ns, inode, mode] of each file as the worker opened it ([0, 0, 0]: no stat), for a
    # later --refresh; taken here so that the coordinator does not stat each file again.
    stats: list = []
    started_at: float = 0.0  # wall clock (time.time()) when the worker took the batch
    ended_at: float = 0.0  # and when its parts were written: its busy interval, for `serial`


class FileTimeout(Exception):
    pass


@lru_cache(maxsize=8)
def _router(specs: tuple) -> ParserRouter:
    return ParserRouter(specs)


def warm_router() -> None:
    """Build the router of a task without `--parser` now (engine/prefork.py), once for all workers."""
    with contextlib.suppress(Exception):  # a failure here would end the forkserver: each worker
        _router(())                       # then builds it again and reports it on its batch


def _alarm(signum, frame):
    raise FileTimeout()


def _stat_data(st: os.stat_result) -> list:
    return [st.st_ctime_ns, st.st_ino, st.st_mode]


def _stat_path(abspath: str) -> list:
    """[ctime_ns, inode, mode] of a file not opened ([0, 0, 0] when it cannot be stat'ed)."""
    try:
        return _stat_data(os.stat(abspath))
    except OSError:
        return [0, 0, 0]


def _read(abspath: str, max_size: int, stat_out: list) -> tuple[bytes | None, int, int, str | None, str | None]:
    """(data, size, mtime_ns, status, message); data is None when the file is not read. The
    file's stat data is appended to `stat_out`."""
    # O_NONBLOCK: if a FIFO took the file's place since discovery, opening it must not block.
    fd = os.open(abspath, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        stat_out.append(_stat_data(st))
        if not stat.S_ISREG(st.st_mode):
            return None, st.st_size, st.st_mtime_ns, "io_error", "not a regular file any more"
        if st.st_size > max_size:
            return None, st.st_size, st.st_mtime_ns, "too_large", f"{st.st_size} bytes > --max-file-size {max_size}"
        chunks = [os.read(fd, st.st_size + 1)]
        total = len(chunks[0])
        while total > st.st_size and chunks[-1]:  # it grew since the stat
            chunks.append(os.read(fd, 1 << 20))
            total += len(chunks[-1])
            if total > max_size:
                return None, total, st.st_mtime_ns, "too_large", f"grew past --max-file-size {max_size}"
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return data, len(data), st.st_mtime_ns, None, None
    finally:
        os.close(fd)


def _is_binary(data: bytes) -> bool:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 text is full of NULs
        return False
    return b"\0" in data[:BINARY_SNIFF_BYTES]


def _parse_with_limit(parser, path: str, data: bytes, timeout: float, retries: int, use_alarm: bool,
                      on_attempt=None) -> ParseResult:
    for attempt in range(retries + 1):
        if on_attempt is not None:
            on_attempt()
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            return parser.parse(path, data)
        except FileTimeout:
            if attempt == retries:
                return ParseResult(
                    status="timeout", error_type="Timeout",
                    error_message=f"parsing took longer than --file-timeout {timeout:g}s "
                    f"({retries + 1} attempt{'s' if retries else ''})",
                )
        finally:
            if use_alarm:
                signal.setitimer(signal.ITIMER_REAL, 0)
    raise AssertionError("unreachable")


def _error_message(err: BaseException) -> str:
    """A parser exception's message; never empty (a failed allocation raises a bare MemoryError)."""
    message = str(err)
    if message:
        return message[:MAX_ERROR_MESSAGE]
    if isinstance(err, MemoryError):
        return "out of memory while parsing this file"
    return f"{type(err).__name__} raised without a message"


def _checked_rows(rows: list, width: int, what: str) -> list:
    """A third-party parser's rows, checked: each a sequence of `width` fields."""
    for row in rows:
        if not isinstance(row, (tuple, list)) or len(row) != width:
            raise TypeError(f"{what} rows must be tuples of {width} fields, got {row!r:.200}")
    return rows


class _File(NamedTuple):
    """One file of a batch, read and parsed: its row of the files table and its parser rows."""

    row: dict  # column of the files table -> value
    definitions: list  # parser rows, in DEFINITION_FIELDS order
    imports: list  # parser rows, in IMPORT_FIELDS order
    bytes_read: int
    parse_s: float
    memory_sample: tuple | None  # (parser name, source bytes, peak extra RSS bytes) when measured
    stat: list  # [ctime_ns, inode, mode] as opened ([] for a git blob: no working-tree file)
    parse: str | None = None  # "parsed", "reused", "cached", or None when no parser was run
    cache_bytes: int = 0  # what storing its result in --cache wrote


class _Reuse:
    """A git batch's parse results by content: the same blob, parser, extension and language by name
    give the same rows whatever the rest of the path (the rows, held by the batch anyway, are
    shared, not copied). Also the last blob's bytes, for a git blob's next path."""

    def __init__(self) -> None:
        self.results: dict[tuple, ParseResult] = {}
        self.last: tuple[str, bytes] | None = None  # (blob id, data) of the last file read

    @staticmethod
    def key(blob_id: str, parser, path: str) -> tuple | None:
        if not parser.reuse_by_content:
            return None
        base = path.rpartition("/")[2]
        dot = base.rfind(".")
        return blob_id, parser.name, base[dot:] if dot > 0 else "", language_of(path)


def _cache_key(reuse_key: tuple | None, parser) -> str | None:
    """The --cache key of a file whose `_Reuse` key is `reuse_key`: that and the parser's version and
    origin (a plugin of the same name, or a new grammar, is another parser)."""
    if reuse_key is None:
        return None
    blob_id, name, extension, language = reuse_key
    return entry_key(blob_id, name, parser.version, parser.origin, extension, language)


def _read_source(path: str, size: int, mtime_ns: int | None, blob_id: str | None, task: BatchTask, stat_out: list,
                 ) -> tuple[bytes | None, int | None, int | None, ParseResult | None]:
    """(data, size, mtime_ns, the file's result when it is not to be parsed); sizes None: unknown.
    A folder's file's stat data goes into `stat_out` (a git blob and an object have none)."""
    abspath = os.path.join(task.source, path)
    remote = is_object_url(task.source)
    try:
        if blob_id is not None:
            data, size, mtime_ns, status, message = read_blob(task.source, blob_id, size, task.max_file_size)
        elif remote:
            data, size, mtime_ns, status, message = read_object(task.source, task.source_options, path, size,
                                                                mtime_ns, task.max_file_size)
        else:
            data, size, mtime_ns, status, message = _read(abspath, task.max_file_size, stat_out)
    except OSError as err:
        if not stat_out and blob_id is None and not remote:  # the open failed (a file it cannot read may still be stat'ed)
            stat_out.append(_stat_path(abspath))
        data, size, mtime_ns = None, None, None
        status, message = "io_error", f"{type(err).__name__}: {err.strerror or err}"
    if status is None:
        return data, size, mtime_ns, None
    return data, size, mtime_ns, ParseResult(status=status, error_type=status if status == "too_large" else "OSError",
                                              error_message=message, language=language_of(path))


def _parse(parser, path: str, out_path: str, data: bytes, task: BatchTask, index: int, use_alarm: bool,
           heartbeat: Heartbeat | None) -> tuple[ParseResult, float, tuple | None]:
    """(the parse's result, its seconds, its memory sample): a parser's failure is the result."""
    on_attempt = None
    if heartbeat is not None:
        def on_attempt():
            heartbeat.parsing(task.batch_id, task.attempt, index)
    measured = len(data) >= MEASURE_MIN_BYTES
    if measured:
        rss_before = memprobe.rss()
        peak_reset = memprobe.reset_peak()
    started = time.perf_counter()
    try:
        result = _parse_with_limit(parser, out_path, data, task.file_timeout, task.retries, use_alarm, on_attempt)
        if not isinstance(result, ParseResult):
            raise TypeError(f"parse() returned {type(result).__name__}, not ParseResult")
        if parser.origin != "builtin":
            _checked_rows(result.definitions, len(DEFINITION_FIELDS), "definition")
            _checked_rows(result.imports, len(IMPORT_FIELDS), "import")
    except BaseException as err:  # noqa: BLE001 - a parser's failure is this file's row
        if isinstance(err, (KeyboardInterrupt, SystemExit)):
            raise
        result = ParseResult(
            status="parser_error", error_type=type(err).__name__,
            error_message=_error_message(err), language=language_of(path),
        )
    elapsed = time.perf_counter() - started
    if heartbeat is not None:
        heartbeat.between_files(task.batch_id, task.attempt)
    sample = None
    if measured:
        # Without a peak reset, the RSS after the parse (freed memory is still
        # mapped until trimmed) is a lower bound of the peak.
        peak = memprobe.peak_rss() if peak_reset else memprobe.rss()
        extra = max(0, peak - rss_before)
        if result.status == "ok":
            sample = (parser.name, len(data), extra)
        if extra >= TRIM_AFTER_BYTES:
            memprobe.trim()
    return result, elapsed, sample


def _read_and_parse(task: BatchTask, index: int, router: ParserRouter, use_alarm: bool,
                   heartbeat: Heartbeat | None, reuse: _Reuse, cache: BlobCache | None) -> _File:
    """Read, classify and parse file `index` of the batch (or give it the batch's forced status)."""
    path, size, mtime_ns, *rest = task.files[index]
    blob_id = rest[0] if rest else None
    out_path = display_path(path)
    data = None
    parser = None
    content_hash = None
    elapsed = None
    sample = None
    parse = None
    cache_bytes = 0
    stat_out: list = []
    if task.forced_status is not None:
        result = ParseResult(status=task.forced_status, error_type=task.forced_status,
                             error_message=task.forced_message, language=language_of(path))
        if blob_id is None and not is_object_url(task.source):
            stat_out.append(_stat_path(os.path.join(task.source, path)))
    elif blob_id is not None and reuse.last is not None and reuse.last[0] == blob_id:
        data, size, result = reuse.last[1], len(reuse.last[1]), None
    else:
        data, read_size, read_mtime, result = _read_source(path, size, mtime_ns, blob_id, task, stat_out)
        if read_size is not None:
            size, mtime_ns = read_size, read_mtime
    if data is not None:
        content_hash = xxhash.xxh3_128_hexdigest(data)
        if blob_id is None:  # a git source's blob id came with it
            blob_id = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        if rest:  # a git blob: its next path, if any, comes next
            reuse.last = (blob_id, data)
        if _is_binary(data):
            result = ParseResult(status="binary", language=language_of(path))
        else:
            parser = router.route(path, data[:256])
            reuse_key = _Reuse.key(blob_id, parser, path)
            key = reuse_key if rest else None
            cache_key = _cache_key(reuse_key, parser) if cache is not None else None
            result = reuse.results.get(key) if key is not None else None
            if result is not None:
                parse = "reused"
            else:
                result = cache.get(cache_key) if cache_key is not None else None
                parse = "cached"
                if result is None:
                    result, elapsed, sample = _parse(parser, path, out_path, data, task, index, use_alarm, heartbeat)
                    parse = "parsed"
                    if cache_key is not None:
                        cache_bytes = cache.put(cache_key, result)
                if key is not None:
                    reuse.results[key] = result
    message = result.error_message
    row = {
        "path": out_path,
        "size": size,
        "mtime_ns": mtime_ns,
        "content_hash": content_hash,
        "language": result.language or language_of(path),
        "parser": parser.name if parser is not None else None,
        "status": result.status,
        "error_type": result.error_type,
        "error_message": message[:MAX_ERROR_MESSAGE] if message else message,
        "error_line": result.error_line,
        "error_col": result.error_col,
        "lines": result.lines,
        "code_lines": result.code_lines,
        "comment_lines": result.comment_lines,
        "blank_lines": result.blank_lines,
        "n_definitions": len(result.definitions),
        "n_imports": len(result.imports),
        "docstring": result.docstring,
        "parse_ms": elapsed * 1000.0 if elapsed is not None else None,
        "batch_id": task.batch_id,
        "parser_version": parser.version if parser is not None else None,
        "blob_id": blob_id,
        "commit": task.commit,
        "source": task.source_label,
    }
    if task.content:
        text = None
        if data is not None and result.status != "binary":
            from ..parsers.text import decode_text

            text = decode_text(data)
        row["content"] = text
    return _File(row, result.definitions, result.imports, len(data) if data is not None else 0,
                 elapsed or 0.0, sample, stat_out[0] if stat_out else [], parse, cache_bytes)


class _Columns:
    """Column lists of one table, appended to row by row and turned into Arrow at the end."""

    def __init__(self, schema: pa.Schema):
        self.schema = schema
        self.columns = {name: [] for name in schema.names}

    def append(self, row: dict) -> None:
        for name, column in self.columns.items():
            column.append(row[name])

    def table(self) -> pa.Table:
        return pa.Table.from_arrays(
            [pa.array(self.columns[f.name], type=f.type) for f in self.schema], schema=self.schema
        )


class _ParserRows:
    """Definitions or imports of a batch: parser rows with their file's path and language."""

    def __init__(self, schema: pa.Schema, fields: tuple):
        self.schema, self.fields = schema, fields
        self.paths: list = []
        self.langs: list = []
        self.blobs: list = []
        self.rows: list = []

    def extend(self, path: str, language: str | None, blob_id: str | None, rows: list) -> None:
        if rows:
            self.paths.extend([path] * len(rows))
            self.langs.extend([language] * len(rows))
            self.blobs.extend([blob_id] * len(rows))
            self.rows.extend(rows)

    def table(self, source_label: str) -> pa.Table:
        return _rows_table(self.schema, self.paths, self.rows, self.langs, self.blobs, self.fields, source_label)


class _Batch:
    """A batch's three tables and its stats, built file by file."""

    def __init__(self, content: bool):
        self.files = _Columns(files_schema(content))
        self.definitions = _ParserRows(DEFINITIONS_SCHEMA, DEFINITION_FIELDS)
        self.imports = _ParserRows(IMPORTS_SCHEMA, IMPORT_FIELDS)
        self.files_meta: list = []
        self.stats: list = []
        self.statuses: list = []
        self.errors: list = []
        self.language_counts: dict = {}
        self.memory_samples: list = []
        self.bytes = 0
        self.parse_s = 0.0
        self.parses = {"parsed": 0, "reused": 0, "cached": 0}
        self.cache_bytes = 0
        self.copies: _Copies | None = None

    def add(self, file: _File) -> None:
        row = file.row
        path, language, status, message = row["path"], row["language"], row["status"], row["error_message"]
        self.files.append(row)
        self.definitions.extend(path, language, row["blob_id"], file.definitions)
        self.imports.extend(path, language, row["blob_id"], file.imports)
        self.files_meta.append((row["size"], row["mtime_ns"]))
        self.stats.append(file.stat)
        self.statuses.append(status)
        if language:
            self.language_counts[language] = self.language_counts.get(language, 0) + 1
        if status != "ok" and len(self.errors) < 5 and status not in ("binary", "too_large"):
            self.errors.append((path, status, (message or "")[:300]))
        if file.memory_sample is not None:
            self.memory_samples.append(file.memory_sample)
        self.bytes += file.bytes_read
        self.parse_s += file.parse_s
        if file.parse is not None:
            self.parses[file.parse] += 1
        self.cache_bytes += file.cache_bytes

    def add_copy(self, row: dict) -> None:
        """A file whose rows `_Copies` holds: its stats (its rows are added whole by `write`)."""
        status, language = row["status"], row["language"]
        self.files_meta.append((row["size"], row["mtime_ns"]))
        self.stats.append([0, 0, 0])
        self.statuses.append(status)
        if language:
            self.language_counts[language] = self.language_counts.get(language, 0) + 1
        if status != "ok" and len(self.errors) < 5 and status not in ("binary", "too_large"):
            self.errors.append((row["path"], status, (row["error_message"] or "")[:300]))
        self.parses["reused"] += 1

    def write(self, task: BatchTask, started_at: float) -> BatchOutcome:
        """Write the part files into the task's staging folder (fsynced); the batch's stats."""
        tables = {"files": self.files.table(), "definitions": self.definitions.table(task.source_label),
                  "imports": self.imports.table(task.source_label)}
        if self.copies is not None:
            tables = {name: pa.concat_tables([table, self.copies.tables[name]]) for name, table in tables.items()}
        # Object storage: the parts are written to a local scratch folder, then put whole into
        # the staging prefix (no shared disk with the coordinator is needed).
        remote = is_object_url(task.staging)
        folder = local_scratch() if remote else task.staging
        os.makedirs(folder, exist_ok=True)
        parts = {name: list(write_part(tables[name], os.path.join(folder, name + ".parquet")))
                 for name in TABLES}
        if remote:
            upload_parts(task.staging, task.storage_options, folder)
        else:
            fsync_dir(folder)
        return BatchOutcome(
            batch_id=task.batch_id,
            attempt=task.attempt,
            staging=task.staging,
            rows={name: tables[name].num_rows for name in TABLES},
            files_meta=self.files_meta,
            statuses=self.statuses,
            bytes=self.bytes,
            parse_s=self.parse_s,
            language_counts=self.language_counts,
            errors=self.errors,
            rss_bytes=memprobe.rss(),
            pid=os.getpid(),
            memory_samples=self.memory_samples,
            parsed=self.parses["parsed"],
            reused=self.parses["reused"],
            cached=self.parses["cached"],
            cache_bytes=self.cache_bytes,
            parts=parts,
            stats=self.stats,
            started_at=started_at,
            ended_at=time.time(),
        )


class _Copies:
    """The rows of `task.copy_from`'s files, read from the earlier batches' committed parts as
    Arrow (a filter by path, then this batch's `source`, `commit`, `batch_id` and a null
    `parse_ms`: rows that depend only on the path and the blob are equal otherwise): 20 copies of
    a repository cost one parse of each blob and a columnar copy, not a worker's pass per file."""

    def __init__(self, tables: dict[str, pa.Table], files: dict[str, dict]):
        self.tables = tables
        self.files = files  # display path -> its copied files row (for the batch's stats)

    @classmethod
    def read(cls, task: BatchTask) -> _Copies | None:
        """None when an earlier part cannot be read: the files are then read and parsed."""
        import pyarrow.compute as pc  # here: 35 ms of every worker's start, for copies alone

        layout = JobLayout(task.output)
        by_origin: dict[int, list[str]] = {}
        for path, origin in task.copy_from.items():
            by_origin.setdefault(origin, []).append(path)
        pieces: dict[str, list[pa.Table]] = {name: [] for name in TABLES}
        try:
            for origin, paths in by_origin.items():
                wanted = pa.array(paths, type=pa.string())
                for name in TABLES:
                    table = _committed_part(os.path.join(layout.table_dir(name), part_name(origin)))
                    pieces[name].append(table.filter(pc.is_in(table["path"], value_set=wanted)))
        except (OSError, pa.ArrowException):
            return None
        tables = {}
        for name in TABLES:
            table = pa.concat_tables(pieces[name])
            table = _replace(table, "source", task.source_label)
            if name == "files":
                table = _replace(table, "commit", task.commit)
                table = _replace(table, "batch_id", task.batch_id)
                table = _replace(table, "parse_ms", None)
            tables[name] = table
        files = {row["path"]: row for row in tables["files"].select(
            ["path", "size", "mtime_ns", "status", "language", "error_message"]).to_pylist()}
        return cls(tables, files)


@lru_cache(maxsize=24)
def _committed_part(path: str) -> pa.Table:
    """A committed batch part (immutable until the job is compacted, after its last batch): the
    copies of the next sources read the same few parts again and again."""
    return pq.read_table(path)


def _replace(table: pa.Table, column: str, value) -> pa.Table:
    index = table.schema.get_field_index(column)
    return table.set_column(index, table.schema.field(index),
                            pa.array([value] * table.num_rows, type=table.schema.field(index).type))


def process_batch(task: BatchTask) -> BatchOutcome:
    """Read, parse and write one batch; returns its stats. Part files land in `task.staging`."""
    started_at = time.time()
    router = _router(tuple(task.parsers))
    use_alarm = threading.current_thread() is threading.main_thread() and task.forced_status is None
    heartbeat = None
    if task.heartbeat_dir is not None and task.forced_status is None:
        heartbeat = Heartbeat.for_folder(task.heartbeat_dir)
        if heartbeat is not None:
            heartbeat.between_files(task.batch_id, task.attempt)
    batch = _Batch(task.content)
    reuse = _Reuse()
    cache = BlobCache(task.cache) if task.cache is not None else None
    batch.copies = _Copies.read(task) if task.copy_from and task.forced_status is None else None
    copied = batch.copies.files if batch.copies is not None else {}
    if use_alarm:
        previous_handler = signal.signal(signal.SIGALRM, _alarm)
    # The batch's rows live until its parts are written, so the collector would traverse them
    # again and again (and the whole heap at each oldest-generation pass) to find no garbage:
    # 1.6% of a batch's CPU time on the stdlib corpus (0.8% of its instructions, callgrind). What
    # a batch allocates is freed by reference counting when it ends; a cycle a third-party parser
    # leaves waits for the next collection.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for index in range(len(task.files)):
            row = copied.get(display_path(task.files[index][0])) if copied else None
            if row is not None:
                batch.add_copy(row)
            else:
                batch.add(_read_and_parse(task, index, router, use_alarm, heartbeat, reuse, cache))
        return batch.write(task, started_at)
    finally:
        if use_alarm:
            signal.signal(signal.SIGALRM, previous_handler)
        if gc_was_enabled:
            gc.enable()


def _rows_table(schema: pa.Schema, paths: list, rows: list, langs: list, blobs: list, fields: tuple,
               source_label: str) -> pa.Table:
    """A table from parser rows (tuples in `fields` order), built column by column."""
    columns = list(zip(*rows)) if rows else [()] * len(fields)
    arrays = [pa.array(paths, type=pa.string())]
    arrays += [pa.array(list(col), type=schema.field(name).type) for name, col in zip(fields, columns)]
    arrays.append(pa.array(langs, type=pa.string()))
    arrays.append(pa.array(blobs, type=pa.string()))
    arrays.append(pa.array([source_label] * len(paths), type=pa.string()))
    return pa.Table.from_arrays(arrays, schema=schema)
