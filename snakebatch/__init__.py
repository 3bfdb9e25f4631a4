"""snakebatch: turn whole source repositories into Parquet tables, on every core.

    import snakebatch
    result = snakebatch.run("repo", output="out", resume=True, workers=4, memory_budget="2GiB")
    result.status_counts
    result.dataset("files")
    for table, batch in snakebatch.stream("repo"):
        ...
"""

from ._version import __version__
from .api import RunResult, Watch, WatchRound, open_dataset, run, stream, watch  # noqa: E402
from .engine.coordinator import Progress  # noqa: E402
from .errors import ConfigError, JobError, SnakebatchError  # noqa: E402
from .report.plan import Plan, plan  # noqa: E402

__all__ = ["__version__", "ConfigError", "JobError", "Plan", "Progress", "RunResult", "SnakebatchError", "open_dataset", "plan", "run",
           "stream", "Watch", "WatchRound", "watch"]
