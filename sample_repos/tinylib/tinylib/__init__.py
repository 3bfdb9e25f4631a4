"""tinylib: a small package that snakebatch's samples and tests parse."""

from .core import Engine, run
from .sub import helpers as h

__all__ = ["Engine", "run", "h"]
