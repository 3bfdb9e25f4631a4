"""A SOURCE in object storage (`snakebatch run s3://bucket/prefix`, `gs://`, `az://`): its keys
and its objects, through `obstore`.

Owns: opening the store from SOURCE's URL and its storage options, the check that SOURCE can be
listed and holds something (before any work), the streaming listing of its keys (paginated by
the store: constant memory), and a worker's reading of one whole object. Must not touch: which
keys become files (engine/objectdiscovery.py applies the filters), parsing, or OUT
(store/objectstore.py owns an OUT in object storage).

Keys are relative to SOURCE's prefix, `/`-separated, as the store gives them back. A key that
ends in `/` (a console's folder marker) comes back without its `/`: the listing cannot tell it
from an object of that name, so the discovery drops a zero-byte object when keys lie under it.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from functools import lru_cache
from typing import NamedTuple

from ..errors import ConfigError
from .objectstore import open_store, store_error, store_refused

LIST_CHUNK = 1000  # keys per chunk of the listing: an S3 page


class ListedObject(NamedTuple):
    """One key under SOURCE's prefix as the listing gives it."""

    path: str  # relative to the prefix
    size: int
    mtime_ns: int  # last-modified, in nanoseconds, whole seconds
    etag: str | None


def _mtime_ns(meta: dict) -> int:
    # Whole seconds: a GET's Last-Modified header has no more, and a listing's milliseconds are
    # zero on S3; the two must agree, or a resume would take every object for changed.
    return int(meta["last_modified"].timestamp()) * 1_000_000_000


@lru_cache(maxsize=4)
def _store(url: str, options: tuple, pid: int):
    """One store per process, SOURCE and options (a forked child opens its own: `pid`)."""
    return open_store(url, dict(options), "SOURCE")


def source_store(url: str, options: dict):
    return _store(url, tuple(sorted(options.items())), os.getpid())


def check_source(url: str, options: dict) -> None:
    """ConfigError (exit 2) when SOURCE cannot be listed (a missing bucket, refused credentials,
    a wrong endpoint) or holds no object (an empty or misspelt prefix): before any work."""
    import obstore

    try:
        first = next(iter(obstore.list(source_store(url, options), chunk_size=1)), [])
    except Exception as err:  # obstore.exceptions.*: not found, permission, authentication
        raise store_refused("SOURCE", url, err, "--storage-option/--source-option") from None
    if not first:
        raise ConfigError(f"SOURCE: {url} holds no object (an empty or misspelt prefix?)")


def list_objects(url: str, options: dict) -> Iterator[ListedObject]:
    """Every key under SOURCE's prefix, in the store's order (S3: by the key's UTF-8 bytes), a
    page at a time. OSError when the store fails after its retries."""
    import obstore

    try:
        for chunk in obstore.list(source_store(url, options), chunk_size=LIST_CHUNK):
            for meta in chunk:
                yield ListedObject(meta["path"], meta["size"], _mtime_ns(meta), meta.get("e_tag"))
    except OSError:
        raise
    except Exception as err:  # obstore.exceptions.*: the store said no after its retries
        raise OSError(f"cannot list {url}: {store_error(err)}") from None


def read_text(url: str, options: dict, path: str) -> bytes | None:
    """A small object's bytes (a `.gitignore`), or None when it cannot be read."""
    import obstore

    try:
        return bytes(obstore.get(source_store(url, options), path).bytes())
    except Exception:  # noqa: BLE001 - gone or refused: as an unreadable .gitignore file, no rules
        return None


def has_object(url: str, options: dict, path: str) -> bool:
    import obstore

    try:
        obstore.head(source_store(url, options), path)
    except Exception:  # noqa: BLE001 - not found (or refused): not there for the caller
        return False
    return True


def read_object(url: str, options: dict, path: str, size: int, mtime_ns: int | None, max_size: int
                ) -> tuple[bytes | None, int, int | None, str | None, str | None]:
    """(data, size, mtime_ns, status, message) of one object listed with `size` and `mtime_ns`,
    as engine/worker.py reads a file: one listed over `max_size` is not read (`too_large` from
    the listed size), nor one listed empty (a lone folder marker cannot be read under the name the
    listing gives); one that grew past `max_size` since is read and then refused. OSError
    (FileNotFoundError for an object deleted since the listing) when it cannot be read."""
    import obstore

    if size > max_size:
        return None, size, mtime_ns, "too_large", f"{size} bytes > --max-file-size {max_size}"
    if size == 0:
        return b"", 0, mtime_ns, None, None
    try:
        result = obstore.get(source_store(url, options), path)
        data = bytes(result.bytes())
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "no such object (deleted since the listing?)", path) from None
    except Exception as err:  # obstore.exceptions.*: the store said no after its retries
        raise OSError(errno.EIO, f"cannot read the object: {store_error(err)}", path) from None
    mtime_ns = _mtime_ns(result.meta)
    if len(data) > max_size:
        return None, len(data), mtime_ns, "too_large", f"grew past --max-file-size {max_size}"
    return data, len(data), mtime_ns, None, None
