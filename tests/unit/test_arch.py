"""Targets beyond x86_64: their names, and zsmalloc's geometry from a kernel's config and
headers (the rules of kernel/arch.py, each checked against what a Debian kernel has)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from pyharness.commands import cli, run
from pyharness.kernel import arch, foreign, provision
from pyharness.kernel.identity import KernelId
from pyharness.kernel.manifest import Kernel
from pyharness.model import Geometry
from pyharness.progress import Progress, StageError


def test_names_say_the_page_size_only_where_an_architecture_has_several() -> None:
    assert arch.target().name == "x86_64"
    assert arch.target("arm64").name == "arm64"
    assert arch.target("arm64", "16k").name == "arm64-16k"
    assert arch.target("ppc64el").page_size == "64k"
    assert arch.target("arm64").make_vars == ("ARCH=arm64", "CROSS_COMPILE=aarch64-linux-gnu-")
    assert arch.target().make_vars == ()


@pytest.mark.parametrize(
    "machine, page_size, problem",
    [
        ("riscv64", None, r"unknown architecture 'riscv64'; known: x86_64, arm64, ppc64el, i386"),
        ("arm64", "64k", r"arm64 has no 64k page target in zskit; its page sizes: 4k, 16k"),
        ("i386", "16k", r"i386 has no 16k page target"),
    ],
)
def test_unknown_targets_are_refused_with_the_known_ones(
    machine: str, page_size: str | None, problem: str
) -> None:
    with pytest.raises(StageError, match=problem):
        arch.target(machine, page_size)


def include(tmp_path: Path, sparsemem: str) -> Path:
    (tmp_path / "asm").mkdir()
    (tmp_path / "asm" / "sparsemem.h").write_text(sparsemem)
    return tmp_path


def test_arm64_6_1_takes_the_physical_bits_of_its_config(tmp_path: Path) -> None:
    # Debian's 6.1 arm64: asm/sparsemem.h has only MAX_PHYSMEM_BITS CONFIG_ARM64_PA_BITS.
    headers = include(tmp_path, "#define MAX_PHYSMEM_BITS\tCONFIG_ARM64_PA_BITS\n")
    config = {"CONFIG_64BIT": "y", "CONFIG_ARM64_4K_PAGES": "y", "CONFIG_ARM64_PA_BITS": "48"}
    assert arch.target("arm64").geometry(config, headers) == Geometry(4096, 64, 48)


def test_arm64_6_12_has_a_fixed_possible_bits(tmp_path: Path) -> None:
    # Debian's 6.12 arm64-16k: MAX_POSSIBLE_PHYSMEM_BITS (52), whatever PA_BITS says.
    headers = include(
        tmp_path,
        "#define MAX_PHYSMEM_BITS\t\tPHYS_MASK_SHIFT\n#define MAX_POSSIBLE_PHYSMEM_BITS\t(52)\n",
    )
    config = {"CONFIG_64BIT": "y", "CONFIG_PAGE_SHIFT": "14", "CONFIG_ARM64_PA_BITS": "48"}
    assert arch.target("arm64", "16k").geometry(config, headers) == Geometry(16384, 64, 52)


def test_a_kernel_of_other_pages_than_asked_is_refused(tmp_path: Path) -> None:
    config = {"CONFIG_64BIT": "y", "CONFIG_PAGE_SHIFT": "14", "CONFIG_ARM64_PA_BITS": "48"}
    with pytest.raises(StageError, match="the kernel has 16 KiB pages, not the 4k of --arch arm64"):
        arch.target("arm64").geometry(config, include(tmp_path, ""))


@pytest.mark.parametrize(
    "config, bits",
    [
        ({"CONFIG_X86_PAE": "y", "CONFIG_HIGHMEM64G": "y"}, 36),  # Debian's 686-pae
        ({"CONFIG_HIGHMEM4G": "y"}, 32),
    ],
)
def test_i386_physical_bits_follow_pae(config: dict[str, str], bits: int) -> None:
    assert arch.target("i386").geometry(config, None) == Geometry(4096, 32, bits)


def test_ppc64_64k_pages() -> None:
    config = {
        "CONFIG_64BIT": "y",
        "CONFIG_PPC_64K_PAGES": "y",
        "CONFIG_SPARSEMEM_VMEMMAP": "y",
        "CONFIG_SPARSEMEM_EXTREME": "y",
    }
    assert arch.target("ppc64el").geometry(config, None) == Geometry(65536, 64, 51)


@pytest.mark.parametrize(
    "kernel, problem",
    [
        (
            KernelId("7.2", arch="arm64"),
            r"no Linux 7\.2 for arm64: the host's Debian suites carry 6\.1 and 6\.12",
        ),
        (
            KernelId("6.1", "debug", arch="i386"),
            r"i386 kernels are Debian's packages only so far",
        ),
        (
            KernelId("6.1", arch="sparc64"),
            r"unknown machine 'sparc64'; known: x86_64, arm64, arm64-16k",
        ),
    ],
)
def test_kernels_zskit_cannot_get_for_a_machine_are_refused(kernel: KernelId, problem: str) -> None:
    with pytest.raises(StageError, match=problem):
        provision.source_for(kernel)


def test_a_missing_cross_compiler_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(foreign.os, "geteuid", lambda: 1000)  # not root: nothing is installed
    missing = "zskit-no-such-package"
    with pytest.raises(StageError, match=rf"sudo apt-get install {missing}`, or run zskit as root"):
        foreign.require_host_packages(["dpkg", missing], "an arm64 kernel", Progress())
    foreign.require_host_packages(["dpkg"], "an arm64 kernel", Progress())  # installed: quiet


@pytest.mark.usefixtures("isolated")  # no developer's .config: the machine is x86_64
def test_arch_and_page_size_options_name_one_target() -> None:
    def named(**options: str | None) -> str | None:
        return cli._arch(argparse.Namespace(**options))

    assert named(arch="arm64", page_size="16k") == "arm64-16k"
    assert named(arch="ppc64el", page_size=None) == "ppc64el"
    assert named(arch=None, page_size=None) is None  # the configured machine
    with pytest.raises(StageError, match="x86_64 has no 16k page target"):
        named(arch=None, page_size="16k")  # the configured x86_64 has 4 KiB pages only
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["run", "--arch", "sparc64"])


def test_scenarios_are_refused_on_pages_they_do_not_assume(tmp_path: Path) -> None:
    def kernel(machine: str) -> Kernel:
        path = tmp_path / machine
        return Kernel("6.12", "r", "v", path, path, path, None, path, arch=machine)

    options = run.RunOptions(scenarios=("map-vs-compact",))
    with pytest.raises(StageError, match="the scenarios assume 4 KiB pages .* not arm64-16k's 16k"):
        run.check_scenarios_runnable(options, kernel("arm64-16k"), 2)
    run.check_scenarios_runnable(options, kernel("arm64"), 2)  # 4 KiB pages: it may run
