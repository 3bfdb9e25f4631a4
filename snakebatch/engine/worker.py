"""The worker: a pure function of its batch, the same in a local process pool or on Dask.

Owns: reading, hashing and classifying each file of a batch, running its parser under a time
limit, and writing the batch's three part files (fsynced) into the batch's own staging folder.
Must not touch: the ledger, the table folders, or any state shared between batches (it returns
small stats; the coordinator decides what is committed).

A failure on one file becomes that file's status; nothing a file does takes the batch down,
short of killing the process (which the coordinator handles).
"""

from __future__ import annotations

import hashlib
import os
import resource
import signal
import stat
import threading
import time
from functools import lru_cache

import msgspec
import pyarrow as pa
import xxhash

from ..languages import language_of
from ..parsers import ParseResult, ParserRouter
from ..schema import DEFINITION_FIELDS, DEFINITIONS_SCHEMA, IMPORT_FIELDS, IMPORTS_SCHEMA, TABLES, files_schema
from ..store.durable import fsync_dir, write_part
from . import memprobe
from ..paths import display_path
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
    max_rss_bytes: int
    pid: int
    # (parser name, source bytes, peak extra RSS bytes) of each file >= MEASURE_MIN_BYTES parsed
    memory_samples: list = []
    parts: dict = {}  # table -> [size, xxh3-64 hex] of its staged part, for the ledger


class FileTimeout(Exception):
    pass


@lru_cache(maxsize=8)
def _router(specs: tuple) -> ParserRouter:
    return ParserRouter(specs)


def _alarm(signum, frame):
    raise FileTimeout()


def _read(abspath: str, max_size: int) -> tuple[bytes | None, int, int, str | None, str | None]:
    """(data, size, mtime_ns, status, message); data is None when the file is not read."""
    # O_NONBLOCK: if a FIFO took the file's place since discovery, opening it must not block.
    fd = os.open(abspath, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
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


class _Columns:
    """Column lists of one table, appended to row by row and turned into Arrow at the end."""

    def __init__(self, schema: pa.Schema):
        self.schema = schema
        self.columns = {name: [] for name in schema.names}

    def table(self) -> pa.Table:
        return pa.Table.from_arrays(
            [pa.array(self.columns[f.name], type=f.type) for f in self.schema], schema=self.schema
        )


def process_batch(task: BatchTask) -> BatchOutcome:
    """Read, parse and write one batch; returns its stats. Part files land in `task.staging`."""
    router = _router(tuple(task.parsers))
    use_alarm = threading.current_thread() is threading.main_thread() and task.forced_status is None
    if use_alarm:
        previous_handler = signal.signal(signal.SIGALRM, _alarm)
    files = _Columns(files_schema(task.content))
    fc = files.columns
    def_paths: list = []
    def_langs: list = []
    def_rows: list = []
    imp_paths: list = []
    imp_langs: list = []
    imp_rows: list = []
    files_meta, statuses, errors = [], [], []
    language_counts: dict = {}
    memory_samples: list = []
    total_bytes = 0
    parse_s = 0.0
    source = task.source
    heartbeat = None
    if task.heartbeat_dir is not None and task.forced_status is None:
        heartbeat = Heartbeat.for_folder(task.heartbeat_dir)
        if heartbeat is not None:
            heartbeat.between_files(task.batch_id, task.attempt)
    try:
        for index, (path, disc_size, disc_mtime) in enumerate(task.files):
            out_path = display_path(path)
            data = None
            size, mtime_ns = disc_size, disc_mtime
            result: ParseResult | None = None
            parser_name = parser_version = None
            content_hash = blob_id = None
            elapsed_ms = None
            if task.forced_status is not None:
                result = ParseResult(status=task.forced_status, error_type=task.forced_status,
                                     error_message=task.forced_message, language=language_of(path))
            else:
                try:
                    data, size, mtime_ns, status, message = _read(os.path.join(source, path), task.max_file_size)
                except OSError as err:
                    status, message = "io_error", f"{type(err).__name__}: {err.strerror or err}"
                if status is not None:
                    result = ParseResult(status=status, error_type=status if status == "too_large" else "OSError",
                                         error_message=message, language=language_of(path))
            if data is not None:
                total_bytes += len(data)
                content_hash = xxhash.xxh3_128_hexdigest(data)
                blob_id = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
                if _is_binary(data):
                    result = ParseResult(status="binary", language=language_of(path))
                else:
                    parser = router.route(path, data[:256])
                    parser_name, parser_version = parser.name, parser.version
                    on_attempt = None
                    if heartbeat is not None:
                        def on_attempt(index=index):
                            heartbeat.parsing(task.batch_id, task.attempt, index)
                    measured = len(data) >= MEASURE_MIN_BYTES
                    if measured:
                        rss_before = memprobe.rss()
                        peak_reset = memprobe.reset_peak()
                    started = time.perf_counter()
                    try:
                        result = _parse_with_limit(parser, out_path, data, task.file_timeout, task.retries, use_alarm,
                                                   on_attempt)
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
                    parse_s += elapsed
                    elapsed_ms = elapsed * 1000.0
                    if heartbeat is not None:
                        heartbeat.between_files(task.batch_id, task.attempt)
                    if measured:
                        # Without a peak reset, the RSS after the parse (freed memory is still
                        # mapped until trimmed) is a lower bound of the peak.
                        peak = memprobe.peak_rss() if peak_reset else memprobe.rss()
                        extra = max(0, peak - rss_before)
                        if result.status == "ok":
                            memory_samples.append((parser_name, len(data), extra))
                        if extra >= TRIM_AFTER_BYTES:
                            memprobe.trim()
            status = result.status
            language = result.language or language_of(path)
            n_defs = len(result.definitions)
            n_imps = len(result.imports)
            if n_defs:
                def_paths.extend([out_path] * n_defs)
                def_langs.extend([language] * n_defs)
                def_rows.extend(result.definitions)
            if n_imps:
                imp_paths.extend([out_path] * n_imps)
                imp_langs.extend([language] * n_imps)
                imp_rows.extend(result.imports)
            fc["path"].append(out_path)
            fc["size"].append(size)
            fc["mtime_ns"].append(mtime_ns)
            fc["content_hash"].append(content_hash)
            fc["language"].append(language)
            fc["parser"].append(parser_name)
            fc["status"].append(status)
            fc["error_type"].append(result.error_type)
            message = result.error_message
            fc["error_message"].append(message[:MAX_ERROR_MESSAGE] if message else message)
            fc["error_line"].append(result.error_line)
            fc["error_col"].append(result.error_col)
            fc["lines"].append(result.lines)
            fc["code_lines"].append(result.code_lines)
            fc["comment_lines"].append(result.comment_lines)
            fc["blank_lines"].append(result.blank_lines)
            fc["n_definitions"].append(n_defs)
            fc["n_imports"].append(n_imps)
            fc["docstring"].append(result.docstring)
            fc["parse_ms"].append(elapsed_ms)
            fc["batch_id"].append(task.batch_id)
            fc["parser_version"].append(parser_version)
            fc["blob_id"].append(blob_id)
            if task.content:
                text = None
                if data is not None and status != "binary":
                    from ..parsers.text import decode_text

                    text = decode_text(data)
                fc["content"].append(text)
            files_meta.append((size, mtime_ns))
            statuses.append(status)
            if language:
                language_counts[language] = language_counts.get(language, 0) + 1
            if status != "ok" and len(errors) < 5 and status not in ("binary", "too_large"):
                errors.append((out_path, status, (message or "")[:300]))
    finally:
        if use_alarm:
            signal.signal(signal.SIGALRM, previous_handler)

    tables = {
        "files": files.table(),
        "definitions": _rows_table(DEFINITIONS_SCHEMA, def_paths, def_rows, def_langs, DEFINITION_FIELDS),
        "imports": _rows_table(IMPORTS_SCHEMA, imp_paths, imp_rows, imp_langs, IMPORT_FIELDS),
    }
    os.makedirs(task.staging, exist_ok=True)
    parts = {name: list(write_part(tables[name], os.path.join(task.staging, name + ".parquet"))) for name in TABLES}
    fsync_dir(task.staging)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return BatchOutcome(
        batch_id=task.batch_id,
        attempt=task.attempt,
        staging=task.staging,
        rows={name: tables[name].num_rows for name in TABLES},
        files_meta=files_meta,
        statuses=statuses,
        bytes=total_bytes,
        parse_s=parse_s,
        language_counts=language_counts,
        errors=errors,
        rss_bytes=_current_rss(),
        max_rss_bytes=usage.ru_maxrss * 1024,
        pid=os.getpid(),
        memory_samples=memory_samples,
        parts=parts,
    )


def _rows_table(schema: pa.Schema, paths: list, rows: list, langs: list, fields: tuple) -> pa.Table:
    """A table from parser rows (tuples in `fields` order), built column by column."""
    columns = list(zip(*rows)) if rows else [()] * len(fields)
    arrays = [pa.array(paths, type=pa.string())]
    arrays += [pa.array(list(col), type=schema.field(name).type) for name, col in zip(fields, columns)]
    arrays.append(pa.array(langs, type=pa.string()))
    return pa.Table.from_arrays(arrays, schema=schema)


def _current_rss() -> int:
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
