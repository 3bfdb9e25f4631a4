"""Loads the built-in parsers once in the process that forks the workers (the local pool's
forkserver preloads this module), so that every worker starts with them loaded.

Owns: nothing but that import-time warm-up. Must not touch: plugins (entry points and `--parser`
modules are the user's code: each worker imports them itself, as before).

Measured (issue 17): building a worker's parser router took ~60 ms, 40 ms of it loading the
tree-sitter grammars; at -j 32 that was ~1.3 CPU s of pool start-up, paid again by every worker
a recycle or rebuild starts.
"""

from __future__ import annotations

from . import builtin_parsers

builtin_parsers()
