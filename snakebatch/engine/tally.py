"""The counts of committed batches: one struct for a run, for what earlier runs left, and for `status`.

Owns: adding up what committed batches hold (batches, files, bytes, parse time, rows per table,
statuses, languages, files with an error or a failure status, files parsed, reused and taken from
--cache). Must not
touch: anything it is not handed; a `BatchOutcome` (a batch just committed) and a `LedgerEntry`
(one committed before) both feed it.
"""

from __future__ import annotations

from typing import Protocol

from ..schema import ERROR_STATUSES, FAILURE_STATUSES, TABLES


class Committed(Protocol):
    """What a committed batch tells the counts (a `BatchOutcome` or a `LedgerEntry`)."""

    statuses: list
    rows: dict
    bytes: int
    parse_s: float
    language_counts: dict
    parsed: int
    reused: int
    cached: int


class Tally:
    def __init__(self) -> None:
        self.batches = 0
        self.files = 0
        self.bytes = 0
        self.parse_s = 0.0
        self.rows: dict[str, int] = dict.fromkeys(TABLES, 0)
        self.status_counts: dict[str, int] = {}
        self.language_counts: dict[str, int] = {}
        self.errors = 0  # files with an error status (ERROR_STATUSES)
        self.failures = 0  # files with a failure status (FAILURE_STATUSES: what --max-errors counts)
        # files whose parser ran / that took another path's parse / whose parse came from --cache
        self.parses = {"parsed": 0, "reused": 0, "cached": 0}

    def add(self, batch: Committed) -> None:
        """Count one committed batch."""
        self.batches += 1
        self.files += len(batch.statuses)
        self.bytes += batch.bytes
        # The ledger keeps parse times to 4 places: a run's own count agrees with a later one.
        self.parse_s += round(batch.parse_s, 4)
        for table, count in batch.rows.items():
            self.rows[table] = self.rows.get(table, 0) + count
        for status in batch.statuses:
            self.status_counts[status] = self.status_counts.get(status, 0) + 1
            if status in ERROR_STATUSES:
                self.errors += 1
                self.failures += status in FAILURE_STATUSES
        for language, count in batch.language_counts.items():
            self.language_counts[language] = self.language_counts.get(language, 0) + count
        self.parses["parsed"] += batch.parsed
        self.parses["reused"] += batch.reused
        self.parses["cached"] += batch.cached

    def __add__(self, other: Tally) -> Tally:
        total = Tally()
        for part in (self, other):
            total.batches += part.batches
            total.files += part.files
            total.bytes += part.bytes
            total.parse_s += part.parse_s
            for into, counts in ((total.rows, part.rows), (total.status_counts, part.status_counts),
                                 (total.language_counts, part.language_counts), (total.parses, part.parses)):
                for key, count in counts.items():
                    into[key] = into.get(key, 0) + count
            total.errors += part.errors
            total.failures += part.failures
        return total

    def job_totals(self) -> dict:
        """The `job` object of stats.json."""
        return {"batches": self.batches, "files": self.files, "bytes": self.bytes,
                "parse_s": round(self.parse_s, 3), "rows": dict(self.rows)}
