"""Executors: where batches run, behind the `Executor` protocol of `base`.

`local` is a process pool on this machine; `dask` a Dask cluster (the optional `dask` extra,
imported only when asked for). Nothing here imports the engine: a batch arrives as a function
and its task.
"""

from __future__ import annotations

from ..config import DASK_EXTRA_MISSING, RunConfig
from ..errors import ConfigError
from .base import Executor
from .local import LocalExecutor


def make_executor(config: RunConfig) -> Executor:
    if config.executor == "dask":
        try:
            from .dask import DaskExecutor  # imported lazily: an optional extra
        except ImportError:
            raise ConfigError(DASK_EXTRA_MISSING) from None

        return DaskExecutor(config)
    return LocalExecutor(config.workers)
