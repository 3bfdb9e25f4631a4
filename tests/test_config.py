"""Every bad option: a ConfigError from the API that names the option and what it accepts, and
exit 2 with a one-line message from the CLI. Good options: sizes, snakebatch.toml defaults."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import snakebatch
from helpers import cli_command, cli_env, cli_in_process
from snakebatch.config import build_config, parse_size


@pytest.fixture
def source(tmp_path):
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "a.py").write_text("def f(x):\n    return x\n")
    (repo / "README.md").write_text("# repo\n")
    return repo


# (API options, CLI arguments, words the message must hold: the option and what it accepts)
BAD_OPTIONS = {
    "zero workers": ({"workers": 0}, ["-j", "0"], ["--workers", "at least 1"]),
    "budget lots": ({"memory_budget": "lots"}, ["--memory-budget", "lots"], ["--memory-budget", "'lots'", "2GiB"]),
    "negative size": ({"max_file_size": "-5MB"}, ["--max-file-size", "-5MB"], ["--max-file-size", "larger than zero"]),
    "negative batch": ({"batch_bytes": "-1k"}, ["--batch-bytes=-1k"], ["--batch-bytes", "larger than zero"]),
    "unknown parser": ({"parsers": ["nosuchparser"]}, ["--parser", "nosuchparser"],
                       ["--parser nosuchparser", "available: ", "python", "module:attribute"]),
    "unimportable parser": ({"parsers": ["no_such_module_x:parser"]}, ["--parser", "no_such_module_x:parser"],
                            ["--parser no_such_module_x:parser", "cannot import"]),
    "negative retries": ({"retries": -1}, ["--retries", "-1"], ["--retries", "at least 0"]),
    "zero timeout": ({"file_timeout": 0}, ["--file-timeout", "0"], ["--file-timeout", "more than 0"]),
}


@pytest.mark.parametrize("case", BAD_OPTIONS, ids=list(BAD_OPTIONS))
def test_bad_option_is_a_config_error_from_the_api(source, tmp_path, case):
    options, _, words = BAD_OPTIONS[case]
    out = tmp_path / "out"
    with pytest.raises(snakebatch.ConfigError) as info:
        snakebatch.run(source, output=out, **options)
    for word in words:
        assert word in str(info.value)
    assert not out.exists(), "a bad option must be refused before anything is written"
    with pytest.raises(snakebatch.ConfigError):
        snakebatch.stream(source, **options)  # at the call, not at the first iteration
    with pytest.raises(snakebatch.ConfigError):
        snakebatch.plan(source, **options)


def _assert_usage_error(proc, words):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("snakebatch: error: ")
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in lines[0]


@pytest.mark.parametrize("case", BAD_OPTIONS, ids=list(BAD_OPTIONS))
def test_bad_option_exits_2_with_one_line_from_the_cli(source, tmp_path, case):
    _, args, words = BAD_OPTIONS[case]
    out = tmp_path / "out"
    _assert_usage_error(cli_in_process("run", source, "-o", out, *args), words)
    assert not out.exists()


def test_bad_option_of_plan_exits_2(source):
    _assert_usage_error(cli_in_process("plan", source, "--memory-budget", "lots"), ["--memory-budget", "'lots'"])
    _assert_usage_error(cli_in_process("plan", source, "-j", "0"), ["--workers"])


def test_missing_source_and_source_that_is_a_file(tmp_path, source):
    missing = tmp_path / "nowhere"
    a_file = source / "pkg" / "a.py"
    for path, words in ((missing, ["SOURCE", "does not exist"]), (a_file, ["SOURCE", "is not a folder"])):
        with pytest.raises(snakebatch.ConfigError) as info:
            snakebatch.run(path, output=tmp_path / "out")
        for word in words:
            assert word in str(info.value)
        with pytest.raises(snakebatch.ConfigError):
            snakebatch.stream(path)
        with pytest.raises(snakebatch.ConfigError):
            snakebatch.plan(path)
        _assert_usage_error(cli_in_process("run", path, "-o", tmp_path / "out"), words)
        _assert_usage_error(cli_in_process("plan", path), words)
    assert not (tmp_path / "out").exists()


def test_unknown_option_in_the_api_suggests_the_known_one(source, tmp_path):
    with pytest.raises(snakebatch.ConfigError) as info:
        snakebatch.run(source, output=tmp_path / "out", worker=2)
    message = str(info.value)
    assert "unknown option(s) 'worker'" in message and "did you mean 'workers'?" in message
    assert "memory_budget" in message  # the list of what is accepted
    with pytest.raises(snakebatch.ConfigError, match="writes nothing"):
        snakebatch.stream(source, output=tmp_path / "out")
    with pytest.raises(snakebatch.ConfigError, match="writes nothing"):
        snakebatch.stream(source, resume=True)


def test_wrong_types_in_the_api(source):
    cases = {
        "gitignore": ("no", "true or false"),
        "content": (1, "true or false"),
        "include": (5, "list of strings"),
        "workers": ("two", "whole number"),
        "executor": ("ray", "local, dask"),
    }
    for name, (value, accepted) in cases.items():
        with pytest.raises(snakebatch.ConfigError) as info:
            build_config(source, **{name: value})
        assert accepted in str(info.value), name


@pytest.mark.parametrize("text, words", [
    ('bogus = 1\n', ["snakebatch.toml", "unknown option(s) 'bogus'"]),
    ('memory-budgett = "1GB"\n', ["snakebatch.toml", "did you mean 'memory_budget'?"]),
    ('workers = "many"\n', ["workers in ", "snakebatch.toml", "whole number"]),
    ('gitignore = "no"\n', ["gitignore in ", "snakebatch.toml", "true or false"]),
    ('exclude = [1, 2]\n', ["exclude in ", "snakebatch.toml", "list of strings"]),
    ('memory-budget = "lots"\n', ["memory_budget in ", "snakebatch.toml", "2GiB"]),
    ('workers = [\n', ["snakebatch.toml", "cannot read it as TOML"]),
])
def test_bad_snakebatch_toml(source, tmp_path, text, words):
    (source / "snakebatch.toml").write_text(text)
    with pytest.raises(snakebatch.ConfigError) as info:
        snakebatch.run(source, output=tmp_path / "out")
    for word in words:
        assert word in str(info.value)
    _assert_usage_error(cli_in_process("run", source, "-o", tmp_path / "out"), words)
    assert not (tmp_path / "out").exists()


def test_bad_tool_snakebatch_in_pyproject(source):
    (source / "pyproject.toml").write_text('[project]\nname = "x"\n[tool.snakebatch]\nworkers = 0\n')
    with pytest.raises(snakebatch.ConfigError) as info:
        build_config(source)
    assert "workers in " in str(info.value) and "[tool.snakebatch]" in str(info.value)
    assert "at least 1" in str(info.value)


def test_snakebatch_toml_gives_defaults_that_options_override(source):
    (source / "snakebatch.toml").write_text('workers = 3\nmemory-budget = "2GiB"\nexclude = ["*.md"]\n')
    config = build_config(source)
    assert (config.workers, config.memory_budget, config.job.exclude) == (3, 2 * 1024**3, ("*.md",))
    config = build_config(source, workers=1, exclude=["pkg/"])
    assert (config.workers, config.job.exclude) == (1, ("pkg/",))
    assert build_config(source, use_config_file=False).job.exclude == ()


def test_toml_defaults_reach_a_run(source, tmp_path):
    (source / "snakebatch.toml").write_text('exclude = ["*.md", "snakebatch.toml"]\nworkers = 1\n')
    result = snakebatch.run(source, output=tmp_path / "out")
    paths = sorted(result.dataset("files").to_table(columns=["path"]).column("path").to_pylist())
    assert paths == ["pkg/a.py"]


@pytest.mark.parametrize("text, expected", [
    ("512MB", 512 * 1000**2), ("2GiB", 2 * 1024**3), ("100k", 100 * 1024), ("1.5 GB", 1_500_000_000),
    ("4096", 4096), (2048, 2048),
])
def test_sizes(text, expected):
    assert parse_size(text, "--memory-budget") == expected


def test_resume_and_fresh_together(source, tmp_path):
    with pytest.raises(snakebatch.ConfigError, match="--resume and --fresh"):
        snakebatch.run(source, output=tmp_path / "out", resume=True, fresh=True)
    _assert_usage_error(cli_in_process("run", source, "-o", tmp_path / "out", "--resume", "--fresh"),
                        ["--resume", "--fresh"])


def test_errors_never_leak_a_traceback_for_a_parser_whose_import_fails(source, tmp_path, monkeypatch):
    (tmp_path / "brokenparser.py").write_text("raise RuntimeError('line one\\nline two')\n")
    monkeypatch.syspath_prepend(tmp_path)  # refused in the coordinator, before any worker starts
    proc = cli_in_process("run", source, "-o", tmp_path / "out", "--parser", "brokenparser:parser")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_a_temporary_folder_too_long_for_the_pools_socket_is_a_message_not_a_traceback(source, tmp_path):
    """The local pool's forkserver listens on a Unix socket under TMPDIR (at most 107 bytes of
    path): the CLI and the API say so in one line, before OUT is made. (Subprocesses: this
    process's forkserver runs already.)"""
    long_tmp = tmp_path / ("t" * 110)
    long_tmp.mkdir()
    environ = cli_env(TMPDIR=str(long_tmp))
    proc = subprocess.run(cli_command("run", source, "-o", tmp_path / "out"), capture_output=True, text=True,
                          env=environ, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "forkserver" in proc.stderr and "path too long" in proc.stderr and "TMPDIR" in proc.stderr
    assert not (tmp_path / "out").exists()
    api = subprocess.run([sys.executable, "-c", "import sys, snakebatch\n"
                          "try:\n    snakebatch.run(sys.argv[1], sys.argv[2], progress=False)\n"
                          "except snakebatch.JobError as err:\n    print(err)\n",
                          str(source), str(tmp_path / "api-out")], capture_output=True, text=True, env=environ,
                         timeout=120)
    assert api.returncode == 0 and "Traceback" not in api.stderr, api.stderr
    assert "forkserver" in api.stdout and "path too long" in api.stdout


@pytest.mark.parametrize("budget", ["200MB", "50MB", "1KB"])
def test_budget_below_what_the_pool_needs_at_rest_is_refused(source, tmp_path, budget):
    """A budget the workers at rest already exceed crashed the governor (division by zero) after
    committing a job of `too_large` rows; now it is a usage error naming the minimum, before OUT
    is touched."""
    out = tmp_path / "out"
    proc = cli_in_process("run", source, "-o", out, "-j", "2", "--memory-budget", budget)
    _assert_usage_error(proc, ["--memory-budget", "is below the", "needs", "give at least"])
    assert not out.exists()
    with pytest.raises(snakebatch.ConfigError, match="give at least") as info:
        snakebatch.run(source, output=out, workers=2, memory_budget=budget)
    assert "--memory-budget" in str(info.value)
    assert not out.exists()
    with pytest.raises(snakebatch.ConfigError, match="give at least"):
        snakebatch.stream(source, workers=2, memory_budget=budget)


def test_budget_check_names_the_minimum_it_measured(source, tmp_path):
    from snakebatch.engine.governor import minimum_budget

    minimum, coordinator = minimum_budget(1)
    assert coordinator > 0 and minimum > coordinator
    # Just above the minimum: accepted, and the job completes.
    result = snakebatch.run(source, output=tmp_path / "out", workers=1, memory_budget=minimum + 32 * 2**20)
    assert result.state == "complete" and result.files == 2


def test_unsupported_urls_are_refused_not_made_local_folders(source, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where `ftp://bucket/out` would become the folders `ftp:/bucket/out`
    words = ["object storage", "not supported", "ftp://bucket/out"]
    with pytest.raises(snakebatch.ConfigError) as info:
        snakebatch.run(source, output="ftp://bucket/out")
    assert all(word in str(info.value) for word in words)
    _assert_usage_error(cli_in_process("run", source, "-o", "ftp://bucket/out"), words)
    _assert_usage_error(cli_in_process("run", "ftp://bucket/src", "-o", "out"),
                        ["SOURCE", "object storage", "ftp://bucket/src"])  # s3:// is tests/test_s3_source.py's
    _assert_usage_error(cli_in_process("plan", source, "-o", "ftp://bucket/out"), words)
    _assert_usage_error(cli_in_process("status", "ftp://bucket/out"), words)  # s3:// is tests/test_s3.py's
    assert sorted(os.listdir(tmp_path)) == ["repo"]


def test_output_that_cannot_be_a_folder_exits_2_with_a_message(source, tmp_path):
    (tmp_path / "a_file").write_text("not a folder\n")
    (tmp_path / "dangling").symlink_to(tmp_path / "gone" / "out")
    cases = {
        tmp_path / "a_file" / "out": ["-o/--output", "cannot prepare", "Not a directory"],
        tmp_path / "dangling": ["-o/--output", "symbolic link", "does not exist"],
        # procfs refuses new entries, as a read-only filesystem does (the tests run as root,
        # for whom a folder's mode bits do not keep anything out)
        "/proc/snakebatch-out": ["-o/--output", "cannot prepare", "/proc/snakebatch-out"],
    }
    for out, words in cases.items():
        proc = cli_in_process("run", source, "-o", out)
        _assert_usage_error(proc, words)
        with pytest.raises(snakebatch.SnakebatchError) as info:
            snakebatch.run(source, output=out)
        assert all(word in str(info.value) for word in words)
    assert not (tmp_path / "gone").exists()


def test_ctrl_c_during_start_up_exits_130(source, tmp_path):
    """Start-up (here: importing a --parser module, which takes its time) is interrupted like a run."""
    import signal
    import subprocess
    import sys
    import time

    from helpers import cli_env

    started = tmp_path / "importing"
    (tmp_path / "slowparser.py").write_text(
        f"import pathlib, time\npathlib.Path({str(started)!r}).touch()\ntime.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-m", "snakebatch", "run", str(source), "-o", str(tmp_path / "out"),
                             "--parser", "slowparser:parser"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=cli_env([tmp_path]),
                            # as from a terminal, also when pytest itself runs with SIGINT ignored (a
                            # background job of a script): Python then sets no handler of its own
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "Aborted!" not in stderr and "Traceback" not in stderr
    assert stderr.strip() == "snakebatch: interrupted"
