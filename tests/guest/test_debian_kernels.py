"""Debian trixie's 6.12 and sid's 7.2 in a guest: each provisioned (a debootstrap'd
root per suite, as root), zstest built in that root, booted, the default workload checked.
"""

from __future__ import annotations

import json

import pytest

from pyharness.commands import config, run
from pyharness.progress import Progress


@pytest.mark.qemu
@pytest.mark.parametrize("series", ["6.12", "7.2"])
def test_default_workload_passes_on_the_builtin_allocator(
    default_config: config.Config, series: str
) -> None:
    cfg = default_config.with_overrides(kernel=series, allocator="builtin")
    result = run.run(cfg, Progress())
    assert result.passed, result.first_failure
    doc = json.loads((result.directory / "results.json").read_text())
    assert doc["verdict"] == "pass"
    assert doc["kernel_release"].startswith(f"{series}.")
    assert doc["classes_checked"] is False  # no debugfs classes file: said, not silently skipped
    assert doc["commands"] > 0
    assert (result.directory / "sources" / "zstest.c").exists()
    assert not (result.directory / "sources" / "zsmalloc.c").exists()
    assert b'failures="0"' in (result.directory / "junit.xml").read_bytes()
