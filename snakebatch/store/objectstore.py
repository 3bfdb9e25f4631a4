"""A job in object storage (`-o s3://bucket/prefix`, `gs://`, `az://`): the commit protocol
without rename, through `obstore`.

Owns: the objects under OUT's prefix (job record, ledger segments, staging parts, table parts,
stats), the ledger's vocabulary (`Segment`, and the `Generation` a `compact` segment commits),
opening the store from OUT's URL and the storage options, the check that the bucket is
reachable before any work, and the telling of a store's errors (one line each; refused
credentials, a missing bucket and a failing store told apart). Must not touch: parsing,
scheduling, local folders (ledger.py and jobfolder.py own a local OUT), or the generations'
parts and pointers (objectcompaction.py).

    OUT/
      files/ definitions/ imports/     part-<batch>.parquet, copied in after their segment
      _snakebatch/
        job.json                       the job, put create-only (a new job)
        ledger/<seq>.json              immutable segments, put create-only, read in order
        staging/b<batch>.<attempt>.<run>/<table>.parquet   a batch's parts, put by its worker
        generations/ current/          compaction (objectcompaction.py)
        stats.json complete.json       the run's record

Commit protocol (one batch), no rename and no append:

    worker:       staging/.../<table>.parquet        three whole-object puts
    coordinator:  ledger/<seq>.json                   put with If-None-Match: * (create-only)
                  staging/... -> <table>/part-<batch>.parquet   server-side copies
                  delete staging/...

A batch is committed exactly when its segment exists. Segments are numbered densely; a
coordinator writes segment N only after it has read or written every segment below N. A run
first puts an `open` segment, create-only: of two coordinators on one prefix, the one whose put
comes second gets `AlreadyExistsError` (at its open or at its next commit) and stops; this
replaces the local folder's flock. (A put whose answer was lost is retried by the client and
gets `AlreadyExistsError` too: finding its own bytes there, it made it: `put_new`.) Recovery
(after the open segment is won) reads the segments in order, copies any part still missing from
its staging (roll forward: the copy is idempotent, the part is named by its batch), and deletes
all staging and any part no segment names.

A run that ends (complete or stopped) puts a `close` segment; `snakebatch status` calls the job
running while the last `open` segment has no `close` after it (a run killed without closing
looks running too, until the next run opens: the report gives the age of the last segment).

Recovery also redoes a committed batch whose part is missing (and not in staging) or not of
its recorded size (the listing tells both; a same-size change needs `status --verify`): it puts
a `drop` segment naming the batch, then deletes the batch's other parts; its files are parsed
again under a new batch id.

A reader listing `OUT/<table>/*.parquet` sees only parts whose segment exists: whole objects
(a copy is atomic), each batch under one name (a row never twice). Compaction and refresh never
change these parts: they write generations (objectcompaction.py). The job's ledger is the last
`refresh` segment's ledger object, then the `batch` segments after it (less dropped ones).
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import tempfile
from collections.abc import Callable
from datetime import timedelta
from urllib.parse import urlsplit

import msgspec

from ..config import OBJECT_SCHEMES, JobConfig
from ..errors import ConfigError, JobError
from ..schema import TABLES
from .durable import Damage
from .jobfolder import resume_command
from .layout import STATE_DIR_NAME, part_name
from .ledger import LedgerEntry

_SCHEME = re.compile(r"^([a-z][a-z0-9+.-]*)://", re.IGNORECASE)

# obstore (Rust object_store) retries 5xx answers (503 SlowDown included) and connection errors,
# timeouts of GET/HEAD, never a 4xx. Backoff with decorrelated jitter: the first wait is
# init_backoff, each next one uniform between init_backoff and base x the previous, capped at
# max_backoff; no retry after retry_timeout from the first try. These are its defaults made
# explicit (`--storage-option max_retries=N` and `retry_timeout=SECONDS` change them).
RETRY = {"max_retries": 10, "backoff": {"init_backoff": timedelta(milliseconds=100),
                                        "max_backoff": timedelta(seconds=15), "base": 2},
         "retry_timeout": timedelta(minutes=3)}
# Storage options that belong to the HTTP client, not the store.
_CLIENT_KEYS = {"allow_http", "allow_invalid_certificates", "connect_timeout", "timeout", "proxy_url",
                "http1_only", "http2_only", "user_agent"}


# Storage options that are credentials: the printed resume command names them without their
# value (it lands in terminals, logs and CI output).
_SECRET_WORDS = ("secret", "token", "password", "key", "credential", "sas", "signature")
_NOT_SECRET = {"region", "skip_signature", "aws_skip_signature", "sas_key_is_public"}


def is_secret_option(name: str) -> bool:
    lowered = name.lower()
    return lowered not in _NOT_SECRET and any(word in lowered for word in _SECRET_WORDS)


def object_resume_command(job: JobConfig, url: str, storage_options: dict, source_options: dict | None = None) -> str:
    """The command that resumes the job at `url` (in object storage, or a local OUT of a SOURCE
    there): the job's options, then the storage and source options, secret ones as
    `--storage-option=NAME=...` to fill in (or to give through the environment)."""
    words = [resume_command(job, url)]
    secret = []
    for flag, options in (("--storage-option", storage_options), ("--source-option", source_options or {})):
        for key, value in options.items():
            if is_secret_option(key):
                secret.append(key)
                words.append(f"{flag}={key}=...")
            else:
                words.append(shlex.quote(f"{flag}={key}={value}"))
    if secret:  # a shell comment: the command still pastes as it is, after filling in
        words.append(f"# fill in {', '.join(secret)} (not repeated here), or give them through the environment")
    return " ".join(words)


def is_object_url(path: str) -> bool:
    match = _SCHEME.match(path)
    return match is not None and match.group(1).lower() in OBJECT_SCHEMES


class GenerationPart(msgspec.Struct):
    """One part of a compacted generation."""

    key: str  # relative to OUT: _snakebatch/generations/<generation>-<run>/<table>/part-c....parquet
    batches: list[int]  # the batch ids whose rows it holds
    rows: int
    size: int
    xxh3: str  # xxh3-64 hex of the object as put


class Generation(msgspec.Struct):
    """A snapshot of the job's tables as a list of parts: a compaction's (a `compact` segment)
    or a refresh's (a `refresh` segment), published by the pointer
    `_snakebatch/current/<generation>.json` (objectcompaction.py). Empty `tables`: no compacted
    copy (a damaged one was withdrawn); readers read the batch parts."""

    generation: int
    prefix: str  # _snakebatch/generations/<generation>-<run>, or "" (empty)
    covers: list[int]  # batch ids whose rows the parts hold
    tables: dict[str, list[GenerationPart]]
    compacted_at: float
    # Every batch id up to `through` is accounted for (set by a refresh, kept by the compactions
    # after it): a batch part in OUT/<table>/ is read beside the generation only if it is above
    # `through` and not covered (a refresh leaves the batch parts of the job's earlier snapshot).
    through: int = 0
    ledger: str = ""  # the key of the last refresh's whole ledger (a list of entries), if any
    changes: str = ""  # a refresh's change feed, as written before its commit
    refresh: dict | None = None  # a refresh's record: counts, times, the parsers' routing
    job: JobConfig | None = None  # a refresh's job options (the rows are made with these now)


class Segment(msgspec.Struct):
    """One ledger segment: a run's open or close, one committed batch (`entry`), committed
    batches to redo (`dropped`), a compaction or a refresh (`generation`)."""

    kind: str  # "open", "batch", "close", "drop", "compact" or "refresh"
    run: str
    entry: LedgerEntry | None = None
    dropped: list[int] = []
    generation: Generation | None = None


class Opened(msgspec.Struct):
    """What opening the job found: the committed entries (dropped ones left out), what recovery
    did, and the committed generations in order."""

    entries: list[LedgerEntry]  # the live ledger: the last refresh's, then the batches since
    rolled: int  # parts copied in from staging
    removed: int  # staging objects deleted
    redone: list[Damage]  # the parts whose batches were dropped, to be redone
    generations: list[Generation]
    next_batch_id: int  # above every batch ever committed, dropped ones too (an id is never reused)
    batch_entries: list[LedgerEntry] = []  # the entries of the batch parts in OUT/<table>/
    job: JobConfig | None = None  # the last refresh's options, None when the job was never refreshed


def batch_entries(segments: list[Segment]) -> list[LedgerEntry]:
    """The entries of the batch parts in OUT/<table>/: every committed batch, those a later
    `drop` names left out."""
    dropped = {batch for s in segments if s.kind == "drop" for batch in s.dropped}
    return [s.entry for s in segments if s.kind == "batch" and s.entry.batch_id not in dropped]


def last_refresh(segments: list[Segment]) -> tuple[int, Generation | None]:
    """(index, generation) of the last `refresh` segment, or (-1, None)."""
    for index in range(len(segments) - 1, -1, -1):
        if segments[index].kind == "refresh":
            return index, segments[index].generation
    return -1, None


def committed_entries(segments: list[Segment], load_ledger: Callable[[str], list[LedgerEntry]]) -> list[LedgerEntry]:
    """The live ledger: the last refresh's whole ledger (read by `load_ledger(key)`), then the
    batches committed since, those a later `drop` names left out."""
    index, refresh = last_refresh(segments)
    base = load_ledger(refresh.ledger) if refresh is not None else []
    return base + batch_entries(segments[index + 1:])


def _bool(value) -> bool:
    return str(value).lower() in ("1", "true", "yes")


def store_options(url: str, storage_options: dict) -> tuple[str, dict, dict, dict]:
    """(scheme, store config, client options, retry config) of OUT's store. Credentials and
    endpoint come from the standard environment (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, AWS_REGION,
    GOOGLE_*, AZURE_*, ...); `storage_options` (from --storage-option) add to and override them."""
    options = {k.lower(): v for k, v in storage_options.items()}
    retry = dict(RETRY)
    try:
        if "max_retries" in options:
            retry["max_retries"] = int(options.pop("max_retries"))
        if "retry_timeout" in options:
            retry["retry_timeout"] = timedelta(seconds=float(options.pop("retry_timeout")))
    except ValueError as err:
        raise ConfigError(f"--storage-option: max_retries is a count, retry_timeout seconds: {err}") from None
    client = {k: _bool(v) if k.startswith(("allow_", "http")) else v for k, v in options.items() if k in _CLIENT_KEYS}
    config = {k: v for k, v in options.items() if k not in _CLIENT_KEYS}
    scheme = _SCHEME.match(url).group(1).lower()
    if scheme in ("s3", "s3a"):
        endpoint = config.get("endpoint") or config.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL") \
            or os.environ.get("AWS_ENDPOINT")
        if endpoint and endpoint.startswith("http://"):
            client.setdefault("allow_http", True)  # a plain-HTTP endpoint (a local server) was asked for
        if "region" not in config and not (os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")):
            config["region"] = "us-east-1"
    return scheme, config, client, retry


def open_store(url: str, storage_options: dict, option: str = "-o/--output"):
    """The obstore store rooted at `url`, OUT's or SOURCE's (`option` names it in messages),
    with the options as `store_options`."""
    from obstore.store import from_url

    _, config, client, retry = store_options(url, storage_options)
    try:
        return from_url(url.rstrip("/"), config=config, client_options=client, retry_config=retry)
    except Exception as err:  # obstore's configuration errors (unknown key, bad URL)
        raise ConfigError(f"{option}: cannot open {url}: {err}") from None


# Where each scheme's credentials come from (the environment, the store's option keys), named in
# the message on refused ones.
_CREDENTIALS = {
    "s3": ("AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN", "access_key_id, secret_access_key, token"),
    "gs": ("GOOGLE_SERVICE_ACCOUNT, GOOGLE_APPLICATION_CREDENTIALS", "service_account, service_account_key"),
    "az": ("AZURE_STORAGE_ACCOUNT_NAME, AZURE_STORAGE_ACCOUNT_KEY", "account_name, account_key"),
}
# obstore's text of a failed request: "Error performing PUT <uri> in 213ms, after 2 retries, ...
# - Server returned non-2xx status code: 503 Service Unavailable: <xml body>" (or "- HTTP error: ...").
_REQUEST = re.compile(r"Error performing (?P<method>[A-Z]+) (?P<uri>\S+) in \S+?"
                      r"(?:, after (?P<retries>\d+) retries[^-]*)?\s+- (?P<rest>.*)", re.DOTALL)
_STATUS = re.compile(r"status code: (?P<status>\d{3})[^:]*:(?P<body>.*)", re.DOTALL)
_XML_CODE = re.compile(r"<Code>([^<]*)</Code>")
_XML_MESSAGE = re.compile(r"<Message>([^<]*)</Message>")


def _http_status(text: str) -> int | None:
    request = _REQUEST.search(text)
    status = _STATUS.search(request["rest"]) if request else None
    return int(status["status"]) if status else None


def store_error(err: BaseException) -> str:
    """One line for a failed obstore request: method and path, the server's answer (HTTP status,
    the store's error code and message) or the transport's error, and the retries spent. (obstore's
    own text runs over many lines: the XML body, then a debug dump.)"""
    text = str(err).split("\nDebug source:", 1)[0].strip()
    request = _REQUEST.search(text)
    if request is None:
        return text.splitlines()[0] if text else type(err).__name__
    status = _STATUS.search(request["rest"])
    if status:
        code, message = _XML_CODE.search(status["body"]), _XML_MESSAGE.search(status["body"])
        answer = f"HTTP {status['status']}" + (f" {code[1]}" if code else "") + (f": {message[1]}" if message else "")
    else:
        answer = request["rest"].strip().splitlines()[0]
    retries = f" (after {request['retries']} retries)" if request["retries"] else ""
    return f"{request['method']} {urlsplit(request['uri']).path}: {answer}{retries}"


def store_refused(option: str, url: str, err: Exception, options: str = "--storage-option") -> ConfigError:
    """The exit-2 error for a store that refused or failed its first request (before any work):
    refused credentials (HTTP 401/403: never retried), a missing bucket (404), an endpoint that
    does not answer, or a store that kept failing (5xx) through its retries."""
    what = store_error(err)
    scheme = _SCHEME.match(url).group(1).lower()
    env, keys = _CREDENTIALS["s3" if scheme in ("s3", "s3a") else "gs" if scheme == "gs" else "az"]
    status = _http_status(str(err))
    if status in (401, 403):
        return ConfigError(f"{option}: {url}: the store refused the credentials ({what}); check {env} (or {options} "
                           f"{keys}) and what they may access there")
    if status == 404:
        return ConfigError(f"{option}: {url}: no such bucket ({what}); check the bucket name and the endpoint")
    if status is not None and status >= 500:
        return ConfigError(f"{option}: {url}: the store kept failing ({what}); nothing was done: try again later "
                           f"({options} max_retries=N and retry_timeout=SECONDS allow more retries)")
    return ConfigError(f"{option}: cannot use {url}: {what}; check the endpoint (AWS_ENDPOINT_URL or {options} "
                       f"endpoint=...) and the bucket name")


def arrow_filesystem(url: str, storage_options: dict):
    """(pyarrow filesystem, path of OUT in it) for reading OUT's parts with pyarrow: obstore's
    fsspec store under pyarrow's fsspec handler, configured as `open_store` (needs fsspec)."""
    from obstore.fsspec import FsspecStore
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    scheme, config, client, retry = store_options(url, storage_options)
    store = FsspecStore("s3" if scheme == "s3a" else scheme, config=config, client_options=client,
                        retry_config=retry)
    return PyFileSystem(FSSpecHandler(store)), url.rstrip("/").split("://", 1)[1]


def _key(*parts: str) -> str:
    return "/".join(parts)


STATE = STATE_DIR_NAME
LEDGER = _key(STATE, "ledger")
STAGING = _key(STATE, "staging")
GENERATIONS = _key(STATE, "generations")
CURRENT = _key(STATE, "current")


def staging_key(batch_id: int, attempt: int, run_token: str) -> str:
    return _key(STAGING, f"b{batch_id:08d}.{attempt}.{run_token}")


def upload_parts(url: str, storage_options: dict, local_folder: str) -> None:
    """A worker's upload of its staged part files (`local_folder/<table>.parquet`) to the
    staging prefix `url`; OSError when the store refuses after its retries (the coordinator
    then stops the job, resumable)."""
    import obstore

    out, _, key = url.partition("/" + STATE + "/")
    store = open_store(out, storage_options)
    try:
        for table in TABLES:
            with open(os.path.join(local_folder, table + ".parquet"), "rb") as fh:
                obstore.put(store, _key(STATE, key, table + ".parquet"), fh.read())
    except OSError:
        raise
    except Exception as err:  # obstore.exceptions.BaseError and the like: the store said no
        raise OSError(store_error(err)) from None
    finally:
        shutil.rmtree(local_folder, ignore_errors=True)


def local_scratch() -> str:
    return tempfile.mkdtemp(prefix="snakebatch-part-")


class ObjectJob:
    """OUT in object storage, for one run: opened (won) at construction, then commits."""

    def __init__(self, url: str, storage_options: dict):
        self.url = url.rstrip("/")
        self.storage_options = storage_options
        self.store = open_store(self.url, storage_options)
        self.run_token = secrets.token_hex(4)
        self.next_seq = 1

    # ---- small helpers

    def get_object(self, key: str) -> bytes | None:
        import obstore
        from obstore.exceptions import NotFoundError

        try:
            return bytes(obstore.get(self.store, key).bytes())
        except (NotFoundError, FileNotFoundError):
            return None

    def list_prefix(self, prefix: str) -> list[dict]:
        import obstore

        return [meta for chunk in obstore.list(self.store, prefix + "/") for meta in chunk]

    def delete_keys(self, keys: list[str]) -> None:
        import obstore

        for start in range(0, len(keys), 1000):
            obstore.delete(self.store, keys[start:start + 1000])

    def check_reachable(self) -> None:
        """ConfigError (exit 2) when the bucket is missing or the credentials are refused:
        before any work."""
        import obstore

        try:
            obstore.list_with_delimiter(self.store, STATE)
        except Exception as err:  # obstore.exceptions.*: not found, permission, authentication
            raise store_refused("-o/--output", self.url, err) from None

    # ---- the job record

    def read_job(self) -> bytes | None:
        return self.get_object(_key(STATE, "job.json"))

    def put_new(self, key: str, data: bytes) -> bool:
        """Put `data` at `key` create-only (If-None-Match: *): True when this put made it, False
        when another writer's object is there. The client retries a put whose answer was lost
        (the server may have stored it) and the retry gets 412: finding its own bytes there, the
        put made it (every record put so is unique: a run token or a time is in it)."""
        import obstore
        from obstore.exceptions import AlreadyExistsError

        try:
            obstore.put(self.store, key, data, mode="create")
        except AlreadyExistsError:
            return self.get_object(key) == data
        return True

    def create_job(self, record: bytes) -> None:
        """Put the job record, create-only: JobError when another run created it first."""
        if not self.put_new(_key(STATE, "job.json"), record):
            raise JobError(f"{self.url}: another run created a job here while this one was starting")

    def remove_all(self) -> None:
        """--fresh: delete every object snakebatch owns under the prefix."""
        keys = [m["path"] for prefix in (*TABLES, STATE) for m in self.list_prefix(prefix)]
        self.delete_keys(keys)

    def has_anything(self) -> bool:
        import obstore

        top = obstore.list_with_delimiter(self.store)
        return bool(top["objects"] or top["common_prefixes"])

    def write_json(self, name: str, data: bytes) -> None:
        import obstore

        obstore.put(self.store, _key(STATE, name), data)

    # ---- the ledger

    def _segment_key(self, seq: int) -> str:
        return _key(LEDGER, f"{seq:010d}.json")

    def put_segment(self, segment: Segment) -> None:
        if not self.put_new(self._segment_key(self.next_seq), msgspec.json.encode(segment)):
            raise JobError(f"{self.url}: another snakebatch run is writing this job (it wrote ledger segment "
                           f"{self.next_seq} first); this run stops. Resume once that run has ended")
        self.next_seq += 1

    def segments(self) -> list[Segment]:
        """Every segment, in order (each is a whole object: a put is atomic)."""
        keys = sorted(m["path"] for m in self.list_prefix(LEDGER))
        found = []
        for expected, key in enumerate(keys, 1):
            if not key.endswith(f"{expected:010d}.json"):
                raise JobError(f"{self.url}: ledger segment {expected} is missing ({key} follows); "
                               "the job's ledger was changed outside snakebatch")
            data = self.get_object(key)
            if data is None:
                raise JobError(f"{self.url}: ledger segment {key} vanished while being read (another run?)")
            found.append(msgspec.json.decode(data, type=Segment))
        return found

    def close_run(self) -> None:
        """Put this run's `close` segment (the run ended; `status` no longer calls it running).
        JobError when another run wrote the next segment first: that run is the open one."""
        self.put_segment(Segment(kind="close", run=self.run_token))

    def last_segment_at(self) -> float | None:
        """Unix time of the newest ledger segment, or None."""
        times = [m["last_modified"].timestamp() for m in self.list_prefix(LEDGER)]
        return max(times) if times else None

    def read_state(self, name: str) -> bytes | None:
        return self.get_object(_key(STATE, name))

    def read_part(self, table: str, batch_id: int) -> bytes | None:
        return self.get_object(_key(table, part_name(batch_id)))

    def table_parts(self, table: str) -> dict[str, int]:
        """part name -> size, of the parts a listing reader sees in `table`."""
        return {m["path"].rsplit("/", 1)[-1]: m["size"] for m in self.list_prefix(table)
                if m["path"].endswith(".parquet")}

    def part_damage(self, entries: list[LedgerEntry], deep: bool) -> list[Damage]:
        """The parts not as the segments recorded them (store/durable.py's Damage): missing (and
        not in staging either: a commit cut off before its copies is rolled forward), size,
        checksum (with `deep`: reads every part), unlisted (no segment names it)."""
        import xxhash

        staged = {m["path"][len(STATE) + 1:] for m in self.list_prefix(STAGING)}
        damage = []
        for table in TABLES:
            present = self.table_parts(table)
            named = set()
            for entry in entries:
                name = part_name(entry.batch_id)
                named.add(name)
                recorded = entry.parts.get(table)
                if name not in present:
                    if _key(entry.staging, table + ".parquet") not in staged:
                        damage.append(Damage(table, name, "missing"))
                elif recorded and recorded[0] >= 0 and present[name] != recorded[0]:
                    damage.append(Damage(table, name, "size"))
                elif deep and recorded and recorded[0] >= 0:
                    data = self.read_part(table, entry.batch_id)
                    if data is None:
                        damage.append(Damage(table, name, "missing"))
                    elif xxhash.xxh3_64_hexdigest(data) != recorded[1]:
                        damage.append(Damage(table, name, "checksum"))
            damage += [Damage(table, name, "unlisted") for name in sorted(present) if name not in named]
        return damage

    def load_ledger(self, key: str) -> list[LedgerEntry]:
        """A refresh's whole ledger (the object its `refresh` segment names)."""
        data = self.get_object(key)
        if data is None:
            raise JobError(f"{self.url}: {key}, the ledger of the job's last refresh, is missing (deleted outside "
                           "snakebatch?); the job cannot be read: start over with --fresh")
        return msgspec.json.decode(data, type=list[LedgerEntry])

    def open(self, segments: list[Segment] | None = None) -> Opened:
        """Win the job for this run (the open segment), then recover: roll committed parts
        forward from staging, drop (to redo) the batches committed since the last refresh whose
        part is missing or not of its recorded size, delete staging and the parts no entry names.
        `segments`: as read a moment ago (a run that wrote one since wins the open segment)."""
        segments = self.segments() if segments is None else list(segments)
        self.next_seq = len(segments) + 1
        self.put_segment(Segment(kind="open", run=self.run_token))
        since, refresh = last_refresh(segments)
        batches = batch_entries(segments)
        redoable = {entry.batch_id for entry in batch_entries(segments[since + 1:])}
        present = {table: self.table_parts(table) for table in TABLES}
        rolled, redone = 0, []
        for entry in batches:
            for table in TABLES:
                name, recorded = part_name(entry.batch_id), entry.parts.get(table)
                if name not in present[table]:
                    if self._copy_in(entry, table):
                        rolled += 1
                    elif entry.batch_id in redoable:
                        redone.append(Damage(table, name, "missing"))
                elif (recorded and recorded[0] >= 0 and present[table][name] != recorded[0]
                      and entry.batch_id in redoable):
                    redone.append(Damage(table, name, "size"))
        # A batch before the last refresh is not redone: the refresh's generation holds (or
        # dropped) its rows; a part of it that the generation reads is checked there.
        dropped = sorted({int(d.part[5:13]) for d in redone})
        if dropped:  # the commit point of the redo; the parts left go with the orphans below
            self.put_segment(Segment(kind="drop", run=self.run_token, dropped=dropped))
            segments.append(Segment(kind="drop", run=self.run_token, dropped=dropped))
            batches = [entry for entry in batches if entry.batch_id not in dropped]
        named = {part_name(e.batch_id) for e in batches}
        orphans = [_key(t, name) for t in TABLES for name in present[t] if name not in named]
        staging = [m["path"] for m in self.list_prefix(STAGING)]
        self.delete_keys(orphans + staging)
        generations = [s.generation for s in segments if s.kind in ("compact", "refresh")]
        next_batch_id = 1 + max([s.entry.batch_id for s in segments if s.kind == "batch"]
                                + [g.through for g in generations] + [0])
        return Opened(committed_entries(segments, self.load_ledger), rolled, len(staging), redone, generations,
                      next_batch_id, batches, refresh.job if refresh is not None else None)

    def _copy_in(self, entry: LedgerEntry, table: str) -> bool:
        """Copy a committed batch's part from its staging into the table: idempotent (a run that
        finds the staging gone checks the part is in place: another run rolled it forward).
        False when the part is neither in staging nor in place."""
        import obstore
        from obstore.exceptions import NotFoundError

        target = _key(table, part_name(entry.batch_id))
        try:
            obstore.copy(self.store, _key(STATE, entry.staging, table + ".parquet"), target)
        except (NotFoundError, FileNotFoundError):
            try:
                obstore.head(self.store, target)
            except (NotFoundError, FileNotFoundError):
                return False
        return True

    def staging_url(self, batch_id: int, attempt: int) -> str:
        return _key(self.url, staging_key(batch_id, attempt, self.run_token))

    def staging_of(self, url: str) -> str:
        """A staging URL relative to the state prefix, as the ledger entry records it."""
        return url.partition("/" + STATE + "/")[2]

    def commit(self, entry: LedgerEntry) -> None:
        """Commit one batch whose parts are in its staging: segment, copies, delete staging.
        JobError when another run wrote the next segment; OSError when the store fails."""
        try:
            self.put_segment(Segment(kind="batch", run=self.run_token, entry=entry))
            for table in TABLES:
                if not self._copy_in(entry, table):
                    raise JobError(f"{self.url}: batch {entry.batch_id}'s {table} part vanished from staging "
                                   "while it was committed (deleted outside snakebatch?); resume to redo it")
            self.delete_keys([_key(STATE, entry.staging, table + ".parquet") for table in TABLES])
        except (JobError, OSError):
            raise
        except Exception as err:  # obstore.exceptions.*: the store failed after its retries
            raise OSError(store_error(err)) from None
