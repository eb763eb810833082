"""A real matrix restricted to Debian's 6.1: entries run side by side, results merged."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pyharness.commands import config, matrix
from pyharness.progress import Progress
from tests.unit.test_matrix import parse_ktap

# Every test here runs isolated (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("isolated")


@pytest.mark.qemu
def test_matrix_restricted_to_61(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZSKIT_CACHE")  # the real (warm) kernel cache
    preset = tmp_path / "only-6.1.config"
    preset.write_text('CONFIG_MATRIX_KERNELS="6.1"\n# CONFIG_MATRIX_ALLOCATOR_OWN is not set\n')
    cfg = config.load(dotconfig=preset)
    result = matrix.run_matrix(cfg, Progress(), root=tmp_path / "results", config_file=preset)
    assert result.passed, matrix.summary(result)
    assert [o.entry.name for o in result.outcomes] == ["6.1-upstream-distro"]
    merged = result.directory
    suites = ET.parse(merged / "junit.xml").getroot().findall("testsuite")
    assert [(s.get("name"), s.get("failures")) for s in suites] == [("6.1-upstream-distro", "0")]
    tests = parse_ktap((merged / "results.ktap").read_text())
    assert [(ok, name) for ok, name, _, _ in tests] == [(True, "6.1-upstream-distro")]
    assert all(ok for ok, _ in tests[0][2]) and len(tests[0][2]) > 6  # stages and batches
    nodes = json.loads((merged / "kernelci.json").read_text())
    job = nodes[0]
    assert (job["kind"], job["result"]) == ("job", "pass")
    assert job["data"]["kernel_version"].startswith("6.1.")
    assert "reboot: Power down" in (merged / job["artifacts"]["console_log"]).read_text()
    assert (merged / "6.1-upstream-distro" / "zskit.log").read_text().count("PASS") == 1
