"""The rendered kernel C passes the target kernel's checkpatch.pl --strict."""

from __future__ import annotations

import pytest

from pyharness import config, run
from pyharness.checkpatch import checkpatch
from pyharness.progress import Progress


def test_zstest_passes_checkpatch_strict(prepared: run.Prepared) -> None:
    report = checkpatch(prepared.kernel, prepared.sources.directory / "zstest.c")
    assert report.clean, "\n".join(report.findings)


def test_checkpatch_finds_a_style_error(
    prepared: run.Prepared, tmp_path: pytest.TempPathFactory
) -> None:
    bad = tmp_path / "bad.c"
    bad.write_text("// SPDX-License-Identifier: GPL-2.0\nint f(int x){\n  return x;\n}\n")
    report = checkpatch(prepared.kernel, bad)
    assert report.errors >= 1
    assert any("ERROR" in f for f in report.findings)


def test_build_has_no_compiler_warnings(prepared: run.Prepared) -> None:
    assert prepared.built.warnings == ()


@pytest.mark.qemu  # provisions the 6.12 and 7.2 toolchain roots
@pytest.mark.parametrize(("kernel", "allocator"), [("6.12", "builtin"), ("7.2", "builtin")])
def test_zstest_is_clean_on_newer_kernels(
    kernel: str, allocator: str, default_config: config.Config
) -> None:
    cfg = default_config.with_overrides(kernel=kernel, allocator=allocator)
    target = run.prepare(cfg, Progress())
    assert target.built.warnings == ()
    report = checkpatch(target.kernel, target.sources.directory / "zstest.c")
    assert report.clean, "\n".join(report.findings)
