"""Where each kernel comes from, and the one way every command provisions it.

`SOURCES` maps a variant and a series to a `KernelSource`: Debian's packaged
kernels for "distro" (debian.py), builds from linux-source-X for "minimal"
and "debug" (source.py); a KernelId with a `tree` is built from that tree
(tree.py). `provision(kernel_id)` resolves the identity,
holds the kernel's lock (entries of one kernel run in parallel in a
matrix: one provisions, the rest wait and reuse it) and returns the cached
or newly provisioned kernel.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..locking import locked
from ..paths import cache_dir, lock_file
from ..progress import Progress, StageError
from .debian import DebianDistroKernel, DebianSuiteKernel
from .identity import DISTRO, HOST_ARCH, VARIANTS, KernelId
from .manifest import Kernel, KernelSource
from .source import VARIANT_FRAGMENTS, SourceBuiltKernel
from .tree import TreeKernel

# The distribution kernels of trixie and sid; zsmalloc is built in on both.
DEBIAN_SUITES = {
    "6.12": DebianSuiteKernel(series="6.12", suite="trixie"),
    "7.2": DebianSuiteKernel(series="7.2", suite="sid"),
}
SOURCES: dict[str, dict[str, KernelSource]] = {
    DISTRO: {"6.1": DebianDistroKernel(series="6.1", abi_prefix="6.1.0"), **DEBIAN_SUITES},
    **{
        variant: {
            "6.1": SourceBuiltKernel("6.1", variant),
            "6.12": SourceBuiltKernel("6.12", variant, distro=DEBIAN_SUITES["6.12"]),
            "7.2": SourceBuiltKernel("7.2", variant, distro=DEBIAN_SUITES["7.2"]),
        }
        for variant in VARIANT_FRAGMENTS
    },
}


def sources(variant: str = DISTRO) -> Mapping[str, KernelSource]:
    """The kernels of a variant, by series."""
    try:
        return SOURCES[variant]
    except KeyError:
        raise StageError(
            f"unknown variant {variant!r}; known variants: {', '.join(VARIANTS)} (set VARIANT "
            "in `make menuconfig` or pass --variant)"
        ) from None


def source_for(kernel: KernelId) -> KernelSource:
    """Where that kernel comes from; an unknown series, variant or machine is refused."""
    if kernel.arch != HOST_ARCH:
        raise StageError(f"zskit boots {HOST_ARCH} kernels only, not {kernel.arch}")
    if kernel.tree is not None:
        return TreeKernel.of(kernel, DEBIAN_SUITES)
    known = sources(kernel.variant)
    try:
        return known[kernel.series]
    except KeyError:
        names = ", ".join(sorted(known))
        raise StageError(
            f"unknown kernel {kernel.series!r}; known kernels: {names} (set KERNEL in `make "
            "menuconfig` or pass --kernel)"
        ) from None


def provision(kernel: KernelId, p: Progress, refresh: bool = False) -> Kernel:
    """The kernel, from the cache or provisioned now, under its lock."""
    source = source_for(kernel)

    def waiting() -> None:
        p.say(f"waiting for another zskit provisioning Linux {kernel.label}")

    with locked(lock_file(kernel.lock), waiting=waiting):
        return source.provision(cache_dir(), p, refresh=refresh)
