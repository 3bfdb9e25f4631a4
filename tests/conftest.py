"""Shared pytest hooks and fixtures. The helpers the tests import (running the CLI, reading tables,
talking to the moto server) are in helpers.py.

Tests run in parallel (pytest-xdist, `--dist loadscope`: a module's tests, and so its module-scoped
fixtures, stay on one worker). A test marked `serial` measures memory or time: under xdist it runs
alone, holding an exclusive lock that every other test takes shared, so no other test's processes
run beside it. Without xdist every test runs alone anyway and no lock is taken.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis.configuration import set_hypothesis_home_dir

from helpers import PARSE_SETTINGS, S3_CREDENTIALS, endpoint_of, moto_listener, start_moto

# Tests write nothing into the checkout: no bytecode caches (the CLI's subprocesses get
# PYTHONDONTWRITEBYTECODE from helpers.cli_env), no hypothesis example database or cache (a
# temporary home, removed at exit).
sys.dont_write_bytecode = True
_hypothesis_home = tempfile.mkdtemp(prefix="snakebatch-hypothesis-")
atexit.register(shutil.rmtree, _hypothesis_home, True)
set_hypothesis_home_dir(_hypothesis_home)
# The logging parser's settings for runs inside this process (helpers.cli_in_process), named in
# the environment before any forkserver starts, so that every pool's workers find them.
_scratch = tempfile.mkdtemp(prefix="snakebatch-tests-")
atexit.register(shutil.rmtree, _scratch, True)
os.environ[PARSE_SETTINGS] = os.path.join(_scratch, "parse-settings.json")
# The session's moto server (the `s3` fixture) will serve on this socket; its endpoint and the test
# credentials are in the environment before any forkserver starts, so that a run to its bucket
# inside this process has workers that reach it as a CLI subprocess's do (bound now, the port
# cannot be taken before the server starts).
_moto = moto_listener()
os.environ.update(AWS_ENDPOINT_URL=endpoint_of(_moto), **S3_CREDENTIALS)
settings.register_profile("snakebatch", database=None)
settings.load_profile("snakebatch")


def _lock(path: Path, mode: int) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextmanager
def _alone_or_beside(folder: Path, serial: bool):
    """Exclusive for a serial test, shared for any other. Writer preference: a serial test queues
    at the turnstile, so the other workers cannot keep taking the shared lock test after test."""
    turnstile = _lock(folder / "serial.turnstile", fcntl.LOCK_EX)
    try:
        main = _lock(folder / "serial.lock", fcntl.LOCK_EX if serial else fcntl.LOCK_SH)
    finally:
        if not serial:
            os.close(turnstile)
    try:
        yield
    finally:
        os.close(main)  # closing the descriptor releases its lock
        if serial:
            os.close(turnstile)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Setup, call and teardown of each test (module fixtures included) inside the lock."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return (yield)
    # xdist gives each worker the basetemp <session basetemp>/popen-gwN: the parent is shared.
    folder = Path(item.config.option.basetemp).parent
    with _alone_or_beside(folder, item.get_closest_marker("serial") is not None):
        return (yield)


# Under xdist a module runs whole on one worker, and modules are handed out in the order collected
# (`--no-loadscope-reorder` in pyproject.toml; xdist's own reorder sorts by the number of tests,
# which says little of their time): the longest modules first, so that the run does not end with
# one worker on a long module while the other has nothing left. The longest, by measured time in a
# default run; a module not listed keeps its place after them.
LONGEST_MODULES = (
    "test_s3_generations.py", "test_s3_faults.py", "test_s3_refresh.py", "test_s3.py",
    "test_compaction.py", "test_kill.py", "test_poison.py", "test_dask.py", "test_resume.py",
    "test_api.py", "test_sources.py", "test_refresh.py", "test_cache.py", "test_governor.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: place for place, name in enumerate(LONGEST_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: tests keep their order


@pytest.fixture(scope="session")
def s3():
    """A moto S3 server on 127.0.0.1 with the bucket `helpers.S3_BUCKET`: (endpoint, boto3 client).
    One per session (per xdist worker); tests keep to prefixes of their own. Its endpoint is this
    process's AWS_ENDPOINT_URL."""
    pytest.importorskip("moto")
    pytest.importorskip("boto3")
    try:
        proc, endpoint, client = start_moto(listener=_moto)
    except RuntimeError as err:
        pytest.fail(str(err))
    yield endpoint, client
    proc.kill()
    proc.wait()
