"""MB/s of each language parser on ~256 KB inputs built from sample_repos/polyglot.

    pytest benchmarks/bench_parsers.py            # pytest-benchmark table, MB/s in extra_info
    python benchmarks/bench_parsers.py            # one line per parser: MB/s, and ratio to `python`

Each input is a sample file followed by its body (without `package`, imports, `<?php`) repeated,
or a numbered template (Java, C#, Python), so that it stays one valid file; the benchmark checks
that it parses `ok` before timing it. Parsers whose grammar is not installed are not listed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from snakebatch.parsers import available  # noqa: E402

SAMPLES = ROOT / "sample_repos" / "polyglot"
TARGET_BYTES = 256 * 1024
# The sample of each parser and the line its body starts on (after `package`, imports, `<?php`):
# the body is repeated after the whole file, so the input stays one valid file.
SAMPLE_OF = {
    "javascript": ("app.js", 7), "typescript": ("service.ts", 6), "go": ("main.go", 11), "rust": ("lib.rs", 6),
    "c": ("util.c", 6), "cpp": ("geometry.cpp", 6), "ruby": ("inventory.rb", 5), "php": ("index.php", 9),
    "bash": ("deploy.sh", 6), "text": ("README.md", 1),
}
_PYTHON_SAMPLE = '''import os


class Counter:
    """Counts words."""

    def __init__(self):
        self.counts = {}

    def add(self, word: str) -> None:
        self.counts[word] = self.counts.get(word, 0) + 1


def main(argv):
    counter = Counter()
    for word in argv:
        counter.add(word)
    return counter
'''
_JAVA_SAMPLE = "class Shapes%d {\n    int area(int r) {\n        return 3 * r * r;\n    }\n}\n"
_CSHARP_SAMPLE = "namespace Demo%d {\n    class Greeter {\n        string Greet(string n) { return n; }\n    }\n}\n"


def _numbered(template: str) -> bytes:
    parts, size, i = [], 0, 0
    while size < TARGET_BYTES:
        part = template % i
        parts.append(part)
        size += len(part)
        i += 1
    return "".join(parts).encode()


def build_input(parser_name: str) -> bytes:
    if parser_name == "python":
        body = _PYTHON_SAMPLE.split("\n", 1)[1]
        return (_PYTHON_SAMPLE + body * (TARGET_BYTES // len(body))).encode()
    if parser_name == "java":
        return _numbered(_JAVA_SAMPLE)
    if parser_name == "csharp":
        return _numbered(_CSHARP_SAMPLE)
    name, body_line = SAMPLE_OF[parser_name]
    text = (SAMPLES / name).read_text()
    body = "".join(text.splitlines(keepends=True)[body_line - 1:])
    return (text + body * (TARGET_BYTES // len(body))).encode()


def parsers():
    wanted = {"python", "java", "csharp", *SAMPLE_OF}
    return [p for p in available() if p.name in wanted]


def _path_for(parser) -> str:
    return "bench." + (parser.patterns[0].lstrip("*.") if parser.name != "text" else "md")


@pytest.mark.parametrize("parser", parsers(), ids=lambda p: p.name)
def test_parser_throughput(benchmark, parser):
    data = build_input(parser.name)
    path = _path_for(parser)
    assert parser.parse(path, data).status == "ok"
    benchmark.extra_info["bytes"] = len(data)
    benchmark(parser.parse, path, data)
    benchmark.extra_info["MB/s"] = round(len(data) / 1e6 / benchmark.stats.stats.mean, 2)


def main() -> None:
    rates = {}
    for parser in parsers():
        data = build_input(parser.name)
        path = _path_for(parser)
        status = parser.parse(path, data).status
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            parser.parse(path, data)
            best = min(best, time.perf_counter() - started)
        rates[parser.name] = len(data) / 1e6 / best
        print(f"{parser.name:<11} {rates[parser.name]:8.1f} MB/s  ({len(data) // 1024} KB, {status})")
    if "python" in rates:
        print("ratio to python (ast):", ", ".join(f"{k} {v / rates['python']:.2f}" for k, v in rates.items()))


if __name__ == "__main__":
    main()
