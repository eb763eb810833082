"""Shared fixtures: a provisioned and built 6.1 target and one booted guest per module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pyharness import config, kapi, run
from pyharness.check import DriverModel
from pyharness.guest import ZsTest
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


@pytest.fixture(scope="module")
def zstest(guest: Guest) -> ZsTest:
    """The zstest driver in the module's guest."""
    return ZsTest(guest)


@pytest.fixture(scope="module")
def driver() -> DriverModel:
    """The host's model of the driver, fed the same batches as the module's guest."""
    return DriverModel(kapi.api_for("6.1"))
