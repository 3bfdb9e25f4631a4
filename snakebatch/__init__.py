"""snakebatch: turn whole source repositories into Parquet tables, on every core.

    import snakebatch
    result = snakebatch.run("repo", output="out", resume=True, workers=4, memory_budget="2GiB")
    result.status_counts
    result.dataset("files")
    for table, batch in snakebatch.stream("repo"):
        ...

The public names load on first use (PEP 562): a worker process imports the package on its way to
`snakebatch.engine.worker`, and importing the API, the coordinator and the store there cost it
0.3 s of start-up for nothing.
"""

from typing import TYPE_CHECKING

from ._version import __version__
from .errors import ConfigError, JobError, SnakebatchError

if TYPE_CHECKING:
    from .api import RunResult, Watch, WatchRound, open_dataset, run, stream, watch
    from .engine.coordinator import Progress
    from .report.plan import Plan, plan

__all__ = ["__version__", "ConfigError", "JobError", "Plan", "Progress", "RunResult", "SnakebatchError", "open_dataset", "plan", "run",
           "stream", "Watch", "WatchRound", "watch"]

_LAZY = {
    **dict.fromkeys(["RunResult", "Watch", "WatchRound", "open_dataset", "run", "stream", "watch"], ".api"),
    "Progress": ".engine.coordinator",
    **dict.fromkeys(["Plan", "plan"], ".report.plan"),
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
