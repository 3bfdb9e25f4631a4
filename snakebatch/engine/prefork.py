"""What the local pool's forkserver loads once, before it forks any worker.

Owns: warming the worker's start. Importing this module imports `engine.worker` and builds the
default parser router (entry points scanned, the built-in parsers and their tree-sitter
grammars loaded), which every forked worker then inherits instead of building it again: 60 ms
of each worker's start. It also chooses the workers' Arrow allocator (store/durable.py). Must not touch: anything a run writes, or the coordinator (the
forkserver imports this before the first worker starts; executors/local.py names it).
"""

from __future__ import annotations

from ..store.durable import use_system_allocator
from .worker import warm_router

use_system_allocator()
warm_router()
