"""Shared fixtures: a provisioned and built 6.1 target and one booted guest per module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pyharness import config, run
from pyharness.progress import Progress
from pyharness.qemu import Guest


@pytest.fixture(scope="session")
def default_config() -> config.Config:
    return config.load(dotconfig=Path("/nonexistent"))


@pytest.fixture(scope="session")
def prepared(default_config: config.Config) -> run.Prepared:
    """Provisioned kernel and built modules (cached across runs)."""
    return run.prepare(default_config, Progress())


@pytest.fixture(scope="module")
def guest(
    default_config: config.Config, prepared: run.Prepared, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Guest]:
    """A booted guest with zsmalloc and zstest loaded, shared by a test module."""
    tmp = tmp_path_factory.mktemp("guest")
    with (tmp / "session.log").open("w") as transcript:
        g = run.boot(default_config, Progress(), prepared, tmp / "console.log", transcript)
        with g:
            yield g
