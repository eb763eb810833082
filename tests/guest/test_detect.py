"""detect.api_of on the real kernels: it must give what the hand-written table gives.

Each kernel is provisioned as the CI runs do (from the cache when it is there).
The table in kernel/api.py plus the .config's chain size (
`api.tabled`) stays the oracle; a disagreement is a bug in one of them.
The refusals edit copies of a kernel's real files, so they test the parsers
on the text they will meet, not only on snippets.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from pyharness.kernel.api import tabled
from pyharness.kernel.detect import KernelFiles, api_from, api_of, chain_size
from pyharness.kernel.identity import KernelId
from pyharness.kernel.manifest import Kernel
from pyharness.kernel.provision import provision
from pyharness.progress import Progress, StageError

SERIES = ("6.1", "6.12", "7.2")


@pytest.fixture(scope="module", params=SERIES)
def kernel(request: pytest.FixtureRequest) -> Kernel:
    return provision(KernelId(request.param), Progress())


@pytest.fixture(scope="module")
def minimal() -> Kernel:
    """The source-built 6.1 kernel (`make test` builds it anyway; cached after)."""
    return provision(KernelId("6.1", "minimal"), Progress())


def test_detected_facts_are_the_tables(kernel: Kernel) -> None:
    assert api_of(kernel) == tabled(kernel)


def test_debian_headers_are_found_next_to_kdir(kernel: Kernel) -> None:
    """The distro kernels' source holds only zsmalloc's files; include/ is the -common one."""
    include = KernelFiles.of(kernel).include
    assert include.name == "include" and include.parent.name.endswith("-common")
    assert (include / "linux" / "migrate.h").is_file()


def test_source_built_kernel(minimal: Kernel) -> None:
    assert KernelFiles.of(minimal).include == minimal.source / "include"
    assert api_of(minimal) == tabled(minimal)


def edited(kernel: Kernel, tmp_path: Path, member: str, old: str, new: str) -> KernelFiles:
    """The kernel's files with a copy of `member` (zsmalloc_h or zsmalloc_c) edited."""
    files = KernelFiles.of(kernel)
    original: Path = getattr(files, member)
    copy = tmp_path / original.name
    shutil.copyfile(original, copy)
    text = copy.read_text()
    assert old in text, f"{old!r} not in {original}"
    copy.write_text(text.replace(old, new, 1))
    return dataclasses.replace(files, **{member: copy})


def line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def refusal(kernel: Kernel, files: KernelFiles) -> str:
    with pytest.raises(StageError) as e:
        api_from(kernel.series, files, chain_size(kernel.kdir / ".config"))
    return str(e.value)


def test_zs_malloc_with_five_parameters_is_refused(kernel: Kernel, tmp_path: Path) -> None:
    files = edited(kernel, tmp_path, "zsmalloc_h", "gfp_t flags", "gfp_t flags, int x, int y")
    line = line_of(files.zsmalloc_h, "unsigned long zs_malloc(")
    message = refusal(kernel, files)
    assert message.startswith(f"{files.zsmalloc_h}:{line}: zs_malloc is declared as")
    assert "int, int" in message and "zskit knows" in message


def test_a_header_without_zs_malloc_is_refused(kernel: Kernel, tmp_path: Path) -> None:
    files = edited(kernel, tmp_path, "zsmalloc_h", "zs_malloc(", "zs_malloc_renamed(")
    assert refusal(kernel, files).startswith(f"{files.zsmalloc_h}: no zs_malloc")


def test_zs_map_object_of_another_form_is_refused(tmp_path: Path) -> None:
    kernel = provision(KernelId("6.12"), Progress())
    files = edited(kernel, tmp_path, "zsmalloc_h", "enum zs_mapmode mm)", "int mm)")
    line = line_of(files.zsmalloc_h, "void *zs_map_object(")
    assert refusal(kernel, files).startswith(
        f"{files.zsmalloc_h}:{line}: zs_map_object is declared as "
        "`void *zs_map_object(struct zs_pool *, unsigned long, int)`"
    )


def test_a_header_and_source_of_different_kernels_are_refused(tmp_path: Path) -> None:
    """7.2's mm/zsmalloc.c defines zs_malloc with a nid; a header without it is refused."""
    kernel = provision(KernelId("7.2"), Progress())
    files = edited(kernel, tmp_path, "zsmalloc_h", "gfp_t flags,\n\t\t\tconst int nid)", "gfp_t f)")
    message = refusal(kernel, files)
    assert "zs_malloc is defined as" in message and f"{files.zsmalloc_h}:" in message


def test_an_unmodelled_oversize_errno_is_refused(tmp_path: Path) -> None:
    kernel = provision(KernelId("6.12"), Progress())
    files = edited(kernel, tmp_path, "zsmalloc_c", "ERR_PTR(-ENOSPC)", "ERR_PTR(-E2BIG)")
    message = refusal(kernel, files)
    assert message.startswith(f"{files.zsmalloc_c}: Linux 6.12's zsmalloc is modelled by no")
    assert "the source -E2BIG" in message
