"""Which object-storage library snakebatch uses: upload throughput of many small parts and
conditional writes (`If-None-Match: *`), against a local moto server (`moto[server]`).

Candidates: pyarrow's `pyarrow.fs.S3FileSystem`, `obstore`, `fsspec`/`s3fs`. Run with a Python
that has the ones to compare (missing ones are reported as such):

    python benchmarks/object_store_libs.py [--parts 400] [--size 20000] [--threads 8]

Prints one JSON line per library: parts/s sequential and with a thread pool, and whether a
second create-only put of the same key is refused.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1)
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("moto server did not start")


def make_bucket(endpoint: str, bucket: str) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/{bucket}", method="PUT"), timeout=10)


def timed(put, parts: int, threads: int) -> float:
    start = time.perf_counter()
    if threads == 1:
        for i in range(parts):
            put(i)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(put, range(parts)))
    return parts / (time.perf_counter() - start)


def bench_obstore(endpoint, bucket, data, parts, threads):
    import obstore
    from obstore.exceptions import AlreadyExistsError
    from obstore.store import S3Store

    store = S3Store(bucket, endpoint=endpoint, region="us-east-1", access_key_id="x", secret_access_key="x",
                    client_options={"allow_http": True})
    seq = timed(lambda i: obstore.put(store, f"ob/seq/{i}", data), parts, 1)
    par = timed(lambda i: obstore.put(store, f"ob/par/{i}", data), parts, threads)
    obstore.put(store, "ob/cond", b"1", mode="create")
    try:
        obstore.put(store, "ob/cond", b"2", mode="create")
        refused = False
    except AlreadyExistsError:
        refused = True
    return seq, par, refused


def bench_pyarrow(endpoint, bucket, data, parts, threads):
    from pyarrow import fs

    s3 = fs.S3FileSystem(endpoint_override=endpoint, scheme="http", access_key="x", secret_key="x",
                         region="us-east-1")

    def put(prefix):
        def one(i):
            with s3.open_output_stream(f"{bucket}/pa/{prefix}/{i}") as fh:
                fh.write(data)
        return one

    # pyarrow.fs has no create-only write: a second writer silently replaces the object.
    return timed(put("seq"), parts, 1), timed(put("par"), parts, threads), False


def bench_s3fs(endpoint, bucket, data, parts, threads):
    import s3fs

    fs = s3fs.S3FileSystem(key="x", secret="x", client_kwargs={"endpoint_url": endpoint, "region_name": "us-east-1"})
    seq = timed(lambda i: fs.pipe_file(f"{bucket}/fs/seq/{i}", data), parts, 1)
    par = timed(lambda i: fs.pipe_file(f"{bucket}/fs/par/{i}", data), parts, threads)
    fs.pipe_file(f"{bucket}/fs/cond", b"1", mode="create")
    try:
        fs.pipe_file(f"{bucket}/fs/cond", b"2", mode="create")
        refused = False
    except (FileExistsError, OSError):
        refused = True
    return seq, par, refused


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", type=int, default=400)
    ap.add_argument("--size", type=int, default=20000)
    ap.add_argument("--threads", type=int, default=8)
    args = ap.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "x")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "x")
    port = free_port()
    proc = start_moto(port)
    endpoint = f"http://127.0.0.1:{port}"
    data = os.urandom(args.size)
    try:
        make_bucket(endpoint, "bench")
        for name, bench in (("obstore", bench_obstore), ("pyarrow.fs", bench_pyarrow), ("s3fs", bench_s3fs)):
            try:
                seq, par, refused = bench(endpoint, "bench", data, args.parts, args.threads)
            except ImportError as err:
                print(json.dumps({"library": name, "error": f"not installed: {err}"}))
                continue
            print(json.dumps({"library": name, "parts": args.parts, "part_bytes": args.size,
                              "parts_per_s_sequential": round(seq, 1),
                              f"parts_per_s_{args.threads}_threads": round(par, 1),
                              "create_only_put_refused": refused}), flush=True)
    finally:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    main()
