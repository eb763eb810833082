"""The rendered kernel C passes the target kernel's checkpatch.pl --strict."""

from __future__ import annotations

import pytest

from pyharness import run
from pyharness.checkpatch import checkpatch


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
