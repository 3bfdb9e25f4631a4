"""The counts of committed batches: one struct for a run, for what earlier runs left, and for `status`.

Owns: adding up what committed batches hold (batches, files, bytes, parse time, rows per table,
statuses, languages, files with an error status). Must not touch: anything it is not handed; a
`BatchOutcome` (a batch just committed) and a `LedgerEntry` (one committed before) both feed it.
"""

from __future__ import annotations

from typing import Protocol

from ..schema import ERROR_STATUSES, TABLES


class Committed(Protocol):
    """What a committed batch tells the counts (a `BatchOutcome` or a `LedgerEntry`)."""

    statuses: list
    rows: dict
    bytes: int
    parse_s: float
    language_counts: dict


class Tally:
    def __init__(self) -> None:
        self.batches = 0
        self.files = 0
        self.bytes = 0
        self.parse_s = 0.0
        self.rows: dict[str, int] = dict.fromkeys(TABLES, 0)
        self.status_counts: dict[str, int] = {}
        self.language_counts: dict[str, int] = {}
        self.errors = 0  # files with an error status

    def add(self, batch: Committed) -> int:
        """Count one committed batch; returns how many of its files have an error status."""
        self.batches += 1
        self.files += len(batch.statuses)
        self.bytes += batch.bytes
        # The ledger keeps parse times to 4 places: a run's own count agrees with a later one.
        self.parse_s += round(batch.parse_s, 4)
        for table, count in batch.rows.items():
            self.rows[table] = self.rows.get(table, 0) + count
        errors = 0
        for status in batch.statuses:
            self.status_counts[status] = self.status_counts.get(status, 0) + 1
            if status in ERROR_STATUSES:
                errors += 1
        for language, count in batch.language_counts.items():
            self.language_counts[language] = self.language_counts.get(language, 0) + count
        self.errors += errors
        return errors

    def __add__(self, other: Tally) -> Tally:
        total = Tally()
        for part in (self, other):
            total.batches += part.batches
            total.files += part.files
            total.bytes += part.bytes
            total.parse_s += part.parse_s
            for into, counts in ((total.rows, part.rows), (total.status_counts, part.status_counts),
                                 (total.language_counts, part.language_counts)):
                for key, count in counts.items():
                    into[key] = into.get(key, 0) + count
            total.errors += part.errors
        return total

    def job_totals(self) -> dict:
        """The `job` object of stats.json."""
        return {"batches": self.batches, "files": self.files, "bytes": self.bytes,
                "parse_s": round(self.parse_s, 3), "rows": dict(self.rows)}
