"""The own allocator rendered into a kernel tree builds with the tree's own Kbuild."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from pyharness.commands import cli
from pyharness.kernel.identity import KernelId
from pyharness.kernel.provision import provision
from pyharness.progress import Progress


def test_renders_into_a_kernel_tree_that_builds_it(tmp_path: Path) -> None:
    """`zskit render --kernel-tree` on a hard-linked copy of linux-source-6.1: the tree's own
    Kbuild compiles our mm/zsmalloc.c (the minimal kernel's config, ZSMALLOC=m) without a
    warning, and the unpacked sources in the cache keep upstream's file."""
    kernel = provision(KernelId("6.1", "minimal"), Progress())
    pristine = kernel.source
    tree, out = tmp_path / "linux", tmp_path / "out"
    subprocess.run(["cp", "-al", str(pristine), str(tree)], check=True)
    assert cli.main(["render", "--kernel-tree", str(tree)]) == 0
    assert "zskit's own" in (tree / "mm" / "zsmalloc.c").read_text()
    assert "zskit's own" not in (pristine / "mm" / "zsmalloc.c").read_text()
    out.mkdir()
    shutil.copy(kernel.kdir / ".config", out / ".config")
    make = ["make", "-C", str(tree), f"O={out}", f"-j{os.cpu_count() or 1}"]
    subprocess.run([*make, "olddefconfig"], check=True, capture_output=True)
    built = subprocess.run([*make, "mm/zsmalloc.o"], capture_output=True, text=True)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    assert "warning:" not in built.stderr, built.stderr
    assert (out / "mm" / "zsmalloc.o").stat().st_size > 0
