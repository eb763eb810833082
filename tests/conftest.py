"""Shared by every test: the default configuration (Kconfig's defaults, no .config)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyharness.commands import config


@pytest.fixture(scope="session")
def default_config() -> config.Config:
    return config.load(dotconfig=Path("/nonexistent"))
