"""The peer a user writes instead of snakebatch: a ProcessPoolExecutor over the files.

    python benchmarks/peers/pool_script.py SOURCE OUT -j N

Same per-file work as snakebatch's default job: read, xxh3-128, line counts, `ast.parse`,
`ast.walk` for definitions and imports (what a user writes), rows collected in the parent,
three Parquet files written at the end. No resume, no memory ceiling, no crash isolation.
Prints one JSON line of stats on stdout. `process_file` and `write_tables` are shared with the
Dask bag and datatrove peers so that all three do exactly the same work.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

PY_SUFFIXES = (".py", ".pyi", ".pyw")


def list_files(root: str) -> list[str]:
    """Every regular file under root, relative, sorted (no gitignore handling: a user's script)."""
    found = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in (".git", ".hg", ".svn"))
        rel = os.path.relpath(folder, root)
        for name in sorted(names):
            found.append(name if rel == "." else os.path.join(rel, name))
    return found


def _line_counts(data: bytes) -> tuple[int, int, int, int]:
    lines = data.splitlines()
    blank = comments = 0
    for line in lines:
        stripped = line.strip()
        if not stripped:
            blank += 1
        elif stripped.startswith(b"#"):
            comments += 1
    return len(lines), len(lines) - blank - comments, comments, blank


def process_file(root: str, rel: str):
    """(file row, definition rows, import rows) of one file."""
    with open(os.path.join(root, rel), "rb") as fh:
        data = fh.read()
    lines, code, comments, blank = _line_counts(data)
    row = {"path": rel, "size": len(data), "content_hash": xxhash.xxh3_128_hexdigest(data),
           "status": "ok", "error": None, "lines": lines, "code_lines": code,
           "comment_lines": comments, "blank_lines": blank, "docstring": None}
    definitions, imports = [], []
    if not rel.endswith(PY_SUFFIXES):
        return row, definitions, imports
    started = time.perf_counter()
    try:
        tree = ast.parse(data, filename=rel)
    except (SyntaxError, ValueError) as err:
        row["status"], row["error"] = "syntax_error", str(err)
        return row, definitions, imports
    row["docstring"] = ast.get_docstring(tree)
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            is_class = isinstance(node, ast.ClassDef)
            definitions.append({
                "path": rel, "kind": "class" if is_class else "function", "name": node.name,
                "start_line": node.lineno, "end_line": node.end_lineno, "start_col": node.col_offset,
                "decorators": [ast.unparse(d) for d in node.decorator_list],
                "n_params": None if is_class else len(node.args.args) + len(node.args.kwonlyargs),
                "docstring": ast.get_docstring(node),
            })
        elif isinstance(node, ast.Import):
            for alias in node.names:
                imports.append({"path": rel, "module": alias.name, "name": None, "alias": alias.asname,
                                "level": 0, "line": node.lineno})
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                imports.append({"path": rel, "module": node.module, "name": alias.name,
                                "alias": alias.asname, "level": node.level, "line": node.lineno})
    row["parse_ms"] = (time.perf_counter() - started) * 1000
    return row, definitions, imports


def process_many(root: str, rels: list[str]):
    """process_file over a chunk, rows concatenated (what a user passes to map with a chunk)."""
    files, definitions, imports = [], [], []
    for rel in rels:
        row, defs, imps = process_file(root, rel)
        files.append(row)
        definitions.extend(defs)
        imports.extend(imps)
    return files, definitions, imports


def write_tables(out: str, files: list, definitions: list, imports: list, suffix: str = "") -> None:
    for name, rows in (("files", files), ("definitions", definitions), ("imports", imports)):
        os.makedirs(os.path.join(out, name), exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), os.path.join(out, name, f"part{suffix}.parquet"),
                       compression="zstd")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source")
    ap.add_argument("out")
    ap.add_argument("-j", "--workers", type=int, default=os.cpu_count())
    args = ap.parse_args(argv)
    started = time.perf_counter()
    rels = list_files(args.source)
    files, definitions, imports = [], [], []
    with ProcessPoolExecutor(args.workers) as pool:
        chunk = 64
        chunks = [rels[i:i + chunk] for i in range(0, len(rels), chunk)]
        for f, d, i in pool.map(process_many, [args.source] * len(chunks), chunks):
            files.extend(f)
            definitions.extend(d)
            imports.extend(i)
    write_tables(args.out, files, definitions, imports)
    print(json.dumps({"files": len(files), "definitions": len(definitions), "imports": len(imports),
                      "bytes": sum(r["size"] for r in files), "elapsed_s": time.perf_counter() - started}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
