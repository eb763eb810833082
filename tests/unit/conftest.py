"""Unit tests run without kernels: provisioning one or booting a guest fails the test.

Both take minutes on a cold machine; a test that needs them belongs in tests/guest.
"""

from __future__ import annotations

from typing import NoReturn

import pytest

from pyharness.guest.qemu import Guest
from pyharness.kernel.debian import DebianDistroKernel, DebianForeignKernel, DebianSuiteKernel
from pyharness.kernel.source import SourceBuiltKernel
from pyharness.kernel.tree import TreeKernel


def _refuse(*args: object, **kwargs: object) -> NoReturn:
    raise AssertionError(
        "a unit test provisions a kernel or boots a guest: it belongs in tests/guest"
    )


@pytest.fixture(autouse=True)
def no_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    kinds = (DebianDistroKernel, DebianForeignKernel, DebianSuiteKernel, SourceBuiltKernel)
    for source in (*kinds, TreeKernel):
        monkeypatch.setattr(source, "provision", _refuse)
    monkeypatch.setattr(Guest, "boot", _refuse)
