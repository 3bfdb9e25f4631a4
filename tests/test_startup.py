"""Start-up cost: what `import snakebatch` and the local pool's forkserver load, and which commands
start the forkserver early (before the API's imports). Each check runs a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import SAMPLES, cli_env
from snakebatch.config import chosen_executor
from snakebatch.errors import ConfigError
from snakebatch.executors.local import PRELOAD

# What a worker does not need: the API, the coordinator, the governor's psutil, pyarrow.compute.
HEAVY = ["snakebatch.api", "snakebatch.engine.coordinator", "snakebatch.report.plan", "pyarrow.compute", "psutil"]


def _python(code: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=cli_env(),
                          timeout=120, check=True)


def test_import_snakebatch_loads_its_public_names_on_first_use():
    code = (
        "import json, sys\n"
        f"heavy = {HEAVY!r}\n"
        "import snakebatch\n"
        "before = [m for m in heavy if m in sys.modules]\n"
        "from snakebatch import run, open_dataset, plan, Progress, ConfigError\n"
        "names = {n: type(getattr(snakebatch, n)).__name__ for n in snakebatch.__all__}\n"
        "print(json.dumps({'before': before, 'names': names, 'run': run is snakebatch.run,\n"
        "                  'dir': sorted(set(snakebatch.__all__) - set(dir(snakebatch))),\n"
        "                  'after': 'snakebatch.api' in sys.modules, 'version': snakebatch.__version__}))\n"
    )
    found = json.loads(_python(code).stdout)
    assert found["before"] == []
    assert found["after"] and found["run"] and found["dir"] == []
    assert found["names"]["run"] == "function" and found["names"]["Progress"] == "StructMeta"
    assert found["version"].count(".") == 2
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        import snakebatch

        _ = snakebatch.nothing


def test_the_forkservers_preload_is_the_worker_without_the_coordinator():
    code = (
        "import importlib, json, sys\n"
        "for name in sys.argv[1:]:\n"
        "    importlib.import_module(name)\n"
        "from snakebatch.engine import worker\n"
        "import pyarrow as pa\n"
        f"print(json.dumps({{'heavy': [m for m in {HEAVY!r} if m in sys.modules],\n"
        "                  'routers': worker._router.cache_info().currsize,\n"
        "                  'allocator': pa.default_memory_pool().backend_name}))\n"
    )
    found = json.loads(_python(code, *PRELOAD).stdout)
    # the default router is built once, for every worker, and they allocate with malloc
    assert found == {"heavy": [], "routers": 1, "allocator": "system"}


def test_the_cli_allocates_arrow_memory_with_malloc_unless_the_user_chose_an_allocator(tmp_path):
    code = (
        "import sys\n"
        "import pyarrow as pa\n"
        "from snakebatch.cli import main\n"
        "try:\n"
        "    main(sys.argv[1:])\n"
        "except SystemExit as end:\n"
        "    print(end.code, pa.default_memory_pool().backend_name)\n"
    )
    args = ["run", str(SAMPLES / "tinylib"), "-o", str(tmp_path / "out"), "-j", "1", "--fresh", "--json"]
    found = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=cli_env(),
                           timeout=120, check=True).stdout.splitlines()[-1]
    assert found == "0 system"
    chosen = dict(cli_env(), ARROW_DEFAULT_MEMORY_POOL="mimalloc")
    found = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=chosen,
                           timeout=120, check=True).stdout.splitlines()[-1]
    assert found == "0 mimalloc"


# The CLI in this process, reporting this process's children that are a multiprocessing
# forkserver as the API starts to be imported (or at the end, when it never is).
_CLI_WITH_CHILDREN = """
import atexit, json, runpy, sys
import psutil

reported = []

def report():
    if not reported:
        found = [" ".join(p.cmdline()) for p in psutil.Process().children()]
        print(json.dumps([c for c in found if "multiprocessing.forkserver" in c]), file=sys.stderr)
        reported.append(True)

def at_import(event, args):
    if event == "import" and args[0] == "snakebatch.api":
        report()

sys.addaudithook(at_import)
atexit.register(report)
sys.argv = ["snakebatch", *sys.argv[1:]]
runpy.run_module("snakebatch", run_name="__main__", alter_sys=True)
"""


def _forkservers(*args) -> tuple[int, list]:
    proc = subprocess.run([sys.executable, "-c", _CLI_WITH_CHILDREN, *map(str, args)], capture_output=True,
                          text=True, env=cli_env(), timeout=300)
    return proc.returncode, json.loads(next(line for line in proc.stderr.splitlines() if line.startswith("[")))


def test_run_starts_the_forkserver_before_the_api_and_plan_status_help_and_usage_errors_start_none(tmp_path):
    out = tmp_path / "out"
    code, servers = _forkservers("run", SAMPLES / "tinylib", "-o", out, "-j", "1", "--json")
    assert code == 0 and len(servers) == 1 and all("snakebatch.engine.prefork" in s for s in servers)
    for args in (["plan", SAMPLES / "tinylib", "-j", "1"], ["status", out], ["--help"], ["run", "--help"],
                 ["run", SAMPLES / "tinylib", "--no-such-option"], ["run", tmp_path / "missing", "-o", out]):
        code, servers = _forkservers(*args)
        assert (args[0], servers) == (args[0], []), code


def test_chosen_executor_reads_the_sources_file_as_build_config_does(tmp_path):
    (tmp_path / "snakebatch.toml").write_text('executor = "dask"\n')
    other = tmp_path / "other"
    other.mkdir()
    assert chosen_executor(str(tmp_path), None) == "dask"
    assert chosen_executor(str(tmp_path), "local") == "local"
    assert chosen_executor(str(other), None) == "local"
    assert chosen_executor([str(tmp_path), str(other)], None) == "local"  # several sources read no file
    assert chosen_executor(str(tmp_path / "missing"), None) is None
    (other / "snakebatch.toml").write_text("executor = [")
    assert chosen_executor(str(other), None) is None
    with pytest.raises(ConfigError):  # and build_config tells the user
        from snakebatch.config import build_config

        build_config(str(other), str(tmp_path / "out"))
