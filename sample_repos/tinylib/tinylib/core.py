"""Core of tinylib."""

import asyncio
import os.path
from collections import OrderedDict as OD
from typing import Any

from . import sub
from .sub.helpers import clamp, scale as rescale


class Engine:
    """Runs things."""

    default = 3

    def __init__(self, name: str, *args, **kwargs):
        self.name = name

    @property
    def label(self) -> str:
        return self.name.upper()

    @staticmethod
    def make(kind, /, size=1, *, strict=False):
        """Make an engine."""
        return Engine(kind)

    async def start(self):
        await asyncio.sleep(0)

    class Config:
        debug = False

        def load(self, path):
            def _inner():
                return os.path.exists(path)

            return _inner()


def run(engine: Engine) -> Any:
    if engine is None:
        import json

        return json.dumps({})
    return OD()


async def main():
    """Entry point."""
    await Engine("x").start()


try:
    import tomllib
except ImportError:  # pragma: no cover
    tomllib = None
