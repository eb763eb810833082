"""The rendered kernel C passes the target kernel's checkpatch.pl --strict, but for what a
`/* checkpatch: TYPE TOKEN: why */` comment in it explains."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from pyharness.commands import config, run
from pyharness.kmod import build
from pyharness.kmod.checkpatch import checkpatch
from pyharness.progress import Progress


def test_zstest_passes_checkpatch_strict(prepared: run.Prepared) -> None:
    path = prepared.sources.directory / "zstest.c"
    report = checkpatch(prepared.kernel, path).without_justified(path)
    assert report.clean, "\n".join(report.findings)


def test_checkpatch_finds_a_style_error(prepared: run.Prepared, tmp_path: Path) -> None:
    bad = tmp_path / "bad.c"
    bad.write_text("// SPDX-License-Identifier: GPL-2.0\nint f(int x){\n  return x;\n}\n")
    report = checkpatch(prepared.kernel, bad)
    assert report.errors >= 1
    assert any("ERROR" in f for f in report.findings)


def fresh_build_warnings(target: run.Prepared, tmp: Path) -> tuple[str, ...]:
    """Build the rendered sources in an empty directory: a warm Kbuild recompiles
    nothing and so prints no warning, whatever the sources hold."""
    for path in target.sources.files:
        shutil.copy2(path, tmp / path.name)
    sources = dataclasses.replace(
        target.sources, directory=tmp, files=tuple(tmp / p.name for p in target.sources.files)
    )
    return build.build(target.kernel, sources, Progress()).warnings


def test_build_has_no_compiler_warnings(prepared: run.Prepared, tmp_path: Path) -> None:
    assert fresh_build_warnings(prepared, tmp_path) == ()


@pytest.mark.qemu  # provisions the 6.12 and 7.2 toolchain roots
@pytest.mark.parametrize(("kernel", "allocator"), [("6.12", "builtin"), ("7.2", "builtin")])
def test_zstest_is_clean_on_newer_kernels(
    kernel: str, allocator: str, default_config: config.Config, tmp_path: Path
) -> None:
    cfg = default_config.with_overrides(kernel=kernel, allocator=allocator)
    target = run.prepare(cfg, Progress())
    assert fresh_build_warnings(target, tmp_path) == ()
    path = target.sources.directory / "zstest.c"
    report = checkpatch(target.kernel, path).without_justified(path)
    assert report.clean, "\n".join(report.findings)


@pytest.mark.qemu  # provisions the 6.12 and 7.2 toolchain roots
@pytest.mark.parametrize("kernel", ["6.1", "6.12", "7.2"])
def test_own_allocator_is_clean(kernel: str, default_config: config.Config, tmp_path: Path) -> None:
    """checkpatch --strict finds nothing in the rendered allocator and its header but what
    the template justifies, and the kernel's own flags give no compiler warning, on every
    supported kernel."""
    cfg = default_config.with_overrides(kernel=kernel, allocator="own")
    target = run.prepare(cfg, Progress())
    assert fresh_build_warnings(target, tmp_path) == ()
    module = target.sources.modules[0]
    files = [target.sources.directory / f"{module}.c"]
    files += [f for f in target.sources.files if f.suffix == ".h"]
    assert (len(files) == 1) == (kernel == "6.1")  # a prefixed header where zsmalloc is built in
    for path in files:
        # A finding the template justifies in a comment (the kernel's own CamelCase names).
        report = checkpatch(target.kernel, path).without_justified(path)
        assert report.clean, "\n".join(report.findings)
