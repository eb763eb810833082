"""Fixtures that provision kernels: a built 6.1 target and one booted guest per module.

`prepared` is the upstream allocator (tests that plant bugs in upstream's code use it).
The driver suite (`guest`, `zstest`, `driver`) runs once per allocator of `SUITE`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from pyharness.check.driver import DriverModel
from pyharness.commands import config, run
from pyharness.guest.qemu import Guest
from pyharness.guest.zstest import ZsTest
from pyharness.model import Policy
from pyharness.progress import Progress


@pytest.fixture(scope="session")
def prepared(default_config: config.Config) -> run.Prepared:
    """Provisioned kernel and built modules of the upstream allocator (cached across runs)."""
    return run.prepare(default_config.with_overrides(allocator="upstream"), Progress())


SUITE = ("upstream", "own")


@pytest.fixture(scope="session", params=SUITE)
def suite_config(request: pytest.FixtureRequest, default_config: config.Config) -> config.Config:
    """The default configuration with one allocator of the suite."""
    return default_config.with_overrides(allocator=request.param)


@pytest.fixture(scope="session")
def suite_prepared(suite_config: config.Config) -> run.Prepared:
    return run.prepare(suite_config, Progress())


@pytest.fixture(scope="module")
def guest(
    suite_config: config.Config,
    suite_prepared: run.Prepared,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Guest]:
    """A booted guest with the allocator and zstest loaded, shared by a test module."""
    tmp = tmp_path_factory.mktemp("guest")
    with (tmp / "session.log").open("w") as transcript:
        g = run.boot(suite_config, Progress(), suite_prepared, tmp / "console.log", transcript)
        with g:
            yield g


@pytest.fixture(scope="module")
def zstest(guest: Guest) -> ZsTest:
    """The zstest driver in the module's guest."""
    return ZsTest(guest)


@pytest.fixture(scope="module")
def new_driver(suite_prepared: run.Prepared) -> Callable[[], DriverModel]:
    """Fresh host models of the driver for the allocator in the module's guest."""
    api = suite_prepared.api
    return lambda: DriverModel(api, suite_prepared.sources.policy)


@pytest.fixture(scope="module")
def suite_policy(suite_prepared: run.Prepared) -> Policy:
    """The model policy of the allocator in the module's guest."""
    return suite_prepared.sources.policy or suite_prepared.api.upstream_policy()


@pytest.fixture(scope="module")
def driver(new_driver: Callable[[], DriverModel]) -> DriverModel:
    """The host's model of the driver, fed the same batches as the module's guest."""
    return new_driver()
