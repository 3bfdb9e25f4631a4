"""The three output tables: their Arrow schemas and the field order of their rows.

Owns: column names and types of `files`, `definitions` and `imports` (docs/reference.md), and the
file statuses. Must not touch: how rows are produced (parsers, worker) or stored (ledger).
"""

from __future__ import annotations

import pyarrow as pa

STATUSES = (
    "ok",
    "syntax_error",
    "decode_error",
    "binary",
    "too_large",
    "io_error",
    "timeout",
    "crashed",
    "parser_error",
)
# Statuses of a file that could not be parsed as meant (the progress line's error count).
ERROR_STATUSES = frozenset(
    {"syntax_error", "decode_error", "io_error", "timeout", "crashed", "parser_error"}
)
# Statuses that count towards --fail-fast / --max-errors: the tool failed on the file (its parser
# died, hung or raised), not the repository's data (a syntax error in a test fixture must not
# stop a real-world run).
FAILURE_STATUSES = frozenset({"timeout", "crashed", "parser_error"})

FILES_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("size", pa.int64()),
        ("mtime_ns", pa.int64()),
        ("content_hash", pa.string()),
        ("language", pa.string()),
        ("parser", pa.string()),
        ("status", pa.string()),
        ("error_type", pa.string()),
        ("error_message", pa.string()),
        ("error_line", pa.int32()),
        ("error_col", pa.int32()),
        ("lines", pa.int64()),
        ("code_lines", pa.int64()),
        ("comment_lines", pa.int64()),
        ("blank_lines", pa.int64()),
        ("n_definitions", pa.int32()),
        ("n_imports", pa.int32()),
        ("docstring", pa.string()),
        ("parse_ms", pa.float64()),
        ("batch_id", pa.int64()),
        ("parser_version", pa.string()),
        ("blob_id", pa.string()),
        ("commit", pa.string()),  # a git source's commit (engine/gitsource.py); null for a folder
        ("source", pa.string()),  # the label of the file's source (config.SourceSpec): (source, path) is unique
    ]
)
FILES_SCHEMA_WITH_CONTENT = FILES_SCHEMA.append(pa.field("content", pa.large_string()))

# A parser's definition rows carry these fields in this order; the worker adds path and language.
DEFINITION_FIELDS = (
    "kind",
    "name",
    "qualname",
    "parent",
    "start_line",
    "end_line",
    "start_col",
    "decorators",
    "n_params",
    "docstring",
)
DEFINITIONS_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("kind", pa.string()),
        ("name", pa.string()),
        ("qualname", pa.string()),
        ("parent", pa.string()),
        ("start_line", pa.int32()),
        ("end_line", pa.int32()),
        ("start_col", pa.int32()),
        ("decorators", pa.list_(pa.string())),
        ("n_params", pa.int32()),
        ("docstring", pa.string()),
        ("language", pa.string()),
        ("blob_id", pa.string()),  # the file's, as in `files` (the join of a --history job)
        ("source", pa.string()),  # the file's, as in `files`
    ]
)

IMPORT_FIELDS = ("module", "name", "alias", "level", "line")
IMPORTS_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("module", pa.string()),
        ("name", pa.string()),
        ("alias", pa.string()),
        ("level", pa.int32()),
        ("line", pa.int32()),
        ("language", pa.string()),
        ("blob_id", pa.string()),  # the file's, as in `files`
        ("source", pa.string()),  # the file's, as in `files`
    ]
)

TABLES = ("files", "definitions", "imports")


def files_schema(content: bool) -> pa.Schema:
    return FILES_SCHEMA_WITH_CONTENT if content else FILES_SCHEMA


def table_schema(table: str, content: bool = False) -> pa.Schema:
    if table == "files":
        return files_schema(content)
    return DEFINITIONS_SCHEMA if table == "definitions" else IMPORTS_SCHEMA
