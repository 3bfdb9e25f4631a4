"""Shared fixtures. The helpers the tests import (running the CLI, reading tables) are in helpers.py."""

from __future__ import annotations

import pytest

from helpers import run_cli


@pytest.fixture
def cli():
    return run_cli
