"""The README's "## Embedding" examples run as written: every ```python block of that section is
saved as a script and run against a sample repository, and what it loads is checked against the
files on disk."""

from __future__ import annotations

import re
import subprocess
import sys

import duckdb
import pytest

from _corpus import copy_stdlib_corpus, files_on_disk
from helpers import ROOT, cli_env


def embedding_blocks() -> list[tuple[str, int, str]]:
    doc = ROOT / "README.md"
    section = re.search(r"^## Embedding\n(.*?)(?=^## |\Z)", doc.read_text(), re.S | re.M)
    if section is None:
        return []
    blocks = re.findall(r"^```python\n(.*?)^```", section.group(1), re.S | re.M)
    return [(doc.name, number, block) for number, block in enumerate(blocks)]


BLOCKS = embedding_blocks()


def test_the_embedding_section_has_examples():
    assert BLOCKS, "README.md must hold an '## Embedding' section with examples"
    assert any("duckdb" in block for _, _, block in BLOCKS)
    assert any("polars" in block for _, _, block in BLOCKS)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    work = tmp_path_factory.mktemp("embedding")
    copy_stdlib_corpus(work / "repo")
    return work


@pytest.mark.parametrize("doc, number, code", BLOCKS, ids=[f"{d}-{n}" for d, n, _ in BLOCKS])
def test_example_runs_as_written(workdir, tmp_path, doc, number, code):
    script = tmp_path / f"example_{number}.py"
    script.write_text(code)
    proc = subprocess.run([sys.executable, str(script)], cwd=workdir, capture_output=True, text=True,
                          env=cli_env(), timeout=300)
    assert proc.returncode == 0, f"{doc} example {number}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    on_disk = files_on_disk(workdir / "repo")
    if "duckdb" in code:
        warehouse = workdir / "warehouse.duckdb"
        con = duckdb.connect(str(warehouse), read_only=True)
        assert con.execute("SELECT count(*) FROM files").fetchall() == [(len(on_disk),)]
        con.close()
        assert f"loaded {len(on_disk)} files" in proc.stdout
    if "polars" in code:
        assert f"{sum(p.endswith('.py') for p in on_disk)} Python files" in proc.stdout
