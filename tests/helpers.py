"""The one way the tests (and the benchmarks) run the snakebatch CLI, and read its tables back.

Owns: the command line and environment of a CLI subprocess from this checkout (`cli_command`,
`cli_env`), running it to its end (`run_cli`, or `cli_in_process` in this process, with the
logging parser's settings in a file), reading a committed table (`read_table`), and a moto S3
server on loopback with what talks to it (`start_moto`, `s3_env`, `s3_keys`, `download_tables`;
the `s3` fixture in conftest.py starts one per session).
Must not touch: pytest (fixtures live in conftest.py; the benchmarks import this module without it).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import pyarrow.dataset as ds

from snakebatch.schema import TABLES

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
SAMPLES = ROOT / "sample_repos"
# The logging parser's settings (tests/logging_parser.py): in the environment of a subprocess, in
# the file named by PARSE_SETTINGS for a run inside this process.
PARSE_KEYS = ("SNAKEBATCH_TEST_PARSE_LOG", "SNAKEBATCH_TEST_PARSE_SLEEP")
PARSE_SETTINGS = "SNAKEBATCH_TEST_PARSE_SETTINGS"


def cli_command(*args) -> list[str]:
    """The command line of `snakebatch ARGS` (for a test that needs a Popen of its own)."""
    return [sys.executable, "-m", "snakebatch", *map(str, args)]


def cli_env(pythonpath=(), **extra) -> dict:
    """The environment of a CLI subprocess or a Dask worker: this checkout and tests/ (the test
    parsers) importable, then `pythonpath`; `extra` variables set on top."""
    env = dict(os.environ)
    paths = [str(ROOT), str(TESTS), *map(str, pythonpath), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # nothing written into the checkout
    env.pop(PARSE_SETTINGS, None)  # a subprocess's logging parser reads the environment
    env.update(extra)
    return env


def run_cli(*args, check_codes=None, env: dict | None = None, timeout: float = 600, cwd=ROOT,
            **kwargs) -> subprocess.CompletedProcess:
    """`snakebatch ARGS` to its end in a subprocess, in `env` (default `cli_env()`); returns the
    finished process. With `check_codes`, an exit code outside them fails with the output.
    `snakebatch status`, and `plan` and `parsers` in this checkout's environment, run in this
    process instead (`cli_in_process`: none starts a pool), unless the call needs a process of its
    own (`cwd`, `preexec_fn`, ...); `plan` and `parsers` import what PYTHONPATH names."""
    if args and cwd == ROOT and not kwargs and (args[0] == "status" or args[0] in ("plan", "parsers") and env is None):
        return cli_in_process(*args, check_codes=check_codes, env=env)
    proc = subprocess.run(
        cli_command(*args), capture_output=True, text=True, env=cli_env() if env is None else env,
        timeout=timeout, cwd=cwd, **kwargs,
    )
    return _checked(args, proc, check_codes)


def cli_in_process(*args, check_codes=None, env: dict | None = None, input: str | None = None,
                   ) -> subprocess.CompletedProcess:
    """`snakebatch ARGS` in this process (click's CliRunner), `env` set for the call and `input` on
    its stdin: its exit code, stdout and stderr as `run_cli` returns them; a traceback fails the test.
    A CLI subprocess takes ~0.5 s to start, most of a `status` or of a refused run. Not for a
    test of the process itself (signals, exit of its workers), nor for a run whose workers must
    see other variables of `env`: a pool started here has this process's environment. The logging
    parser's settings in `env` reach its workers through the file named by PARSE_SETTINGS; the
    `s3` fixture's endpoint and credentials are in this process's environment (conftest.py)."""
    from click.testing import CliRunner

    from snakebatch.cli import main

    parse = {k: env[k] for k in PARSE_KEYS if env and k in env}
    settings = Path(os.environ[PARSE_SETTINGS]) if parse else None  # KeyError: conftest.py sets it
    if settings:
        env = {k: v for k, v in env.items() if k not in PARSE_KEYS}
        settings.with_suffix(".tmp").write_text(json.dumps(parse))
        settings.with_suffix(".tmp").replace(settings)
    try:
        result = CliRunner(env=env).invoke(main, [str(a) for a in args], input=input, catch_exceptions=False)
    finally:
        if settings:
            settings.unlink()
    proc = subprocess.CompletedProcess(["snakebatch", *map(str, args)], result.exit_code, result.stdout,
                                       result.stderr)
    return _checked(args, proc, check_codes)


def _checked(args, proc: subprocess.CompletedProcess, check_codes) -> subprocess.CompletedProcess:
    if check_codes is not None and proc.returncode not in check_codes:
        raise AssertionError(
            f"snakebatch {' '.join(map(str, args))} exited {proc.returncode}\n"
            f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        )
    return proc


def read_table(out: Path, table: str):
    """The committed rows of a table, read with pyarrow.dataset as any reader would."""
    return ds.dataset(str(Path(out) / table), format="parquet").to_table()


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


S3_BUCKET = "snakebatch-test"


# The moto server's test credentials, as the CLI takes them from the environment.
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1"}


def moto_listener() -> socket.socket:
    """A listening socket on a free port of 127.0.0.1, for `start_moto`: its endpoint is known
    (and can be handed to processes) before the server starts."""
    return socket.create_server(("127.0.0.1", 0))


def endpoint_of(listener: socket.socket) -> str:
    return f"http://127.0.0.1:{listener.getsockname()[1]}"


def start_moto(bucket: str = S3_BUCKET, listener: socket.socket | None = None):
    """A moto S3 server on 127.0.0.1 with `bucket`, serving on `listener` (default a new one;
    closed here, the server keeps it): (process, endpoint, boto3 client).
    RuntimeError when it does not answer within 30 s (the process is killed)."""
    import boto3

    listener = listener or moto_listener()
    endpoint = endpoint_of(listener)
    with listener:
        proc = subprocess.Popen([sys.executable, "-B", str(TESTS / "moto_s3_server.py"), str(listener.fileno())],
                                pass_fds=[listener.fileno()], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                proc.wait()
                raise RuntimeError("the moto server did not start") from None
            time.sleep(0.1)
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                          region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    return proc, endpoint, client


def s3_env(endpoint: str, **extra) -> dict:
    """The CLI's environment (`cli_env`) pointed at the moto server, with its test credentials."""
    return cli_env(AWS_ENDPOINT_URL=endpoint, **S3_CREDENTIALS, **extra)


def s3_keys(client, prefix: str, bucket: str = S3_BUCKET) -> list[str]:
    """Every key under `prefix/`."""
    found = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        found += [obj["Key"] for obj in page.get("Contents", [])]
    return found


def download_tables(client, prefix: str, dst: Path, bucket: str = S3_BUCKET) -> Path:
    """The table parts under `prefix`, as a listing reader of `prefix/<table>/` gets them, into a
    local folder."""
    for key in s3_keys(client, prefix, bucket):
        rel = key[len(prefix) + 1:]
        if rel.split("/")[0] in TABLES:
            target = dst / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            # One GET (boto3's download_file adds a HEAD and a thread pool: twice the CPU, measured).
            target.write_bytes(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    return dst
