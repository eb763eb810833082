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

import dataclasses
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..locking import locked
from ..paths import cache_dir, lock_file
from ..progress import Progress, StageError
from . import fragments as fragments_mod
from .arch import TARGETS
from .archive import ArchiveIndex, newest_suite
from .debian import DebianDistroKernel, DebianForeignKernel, DebianSuiteKernel
from .identity import DISTRO, HOST_ARCH, VARIANTS, KernelId, series_key
from .manifest import Kernel, KernelSource
from .source import MACHINE_FRAGMENTS, VARIANT_FRAGMENTS, SourceBuiltKernel
from .tree import TreeKernel, holding

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


# Debian kernels of other machines, from the host's suites: zsmalloc is a module in 6.1
# (bookworm) and built in from 6.12 (bookworm-security's +deb12 kernels).
FOREIGN_BUILTIN = {"6.1": False, "6.12": True}


def foreign_source(kernel: KernelId) -> KernelSource:
    target = TARGETS.get(kernel.arch)
    if target is None:
        raise StageError(f"unknown machine {kernel.arch!r}; known: {', '.join(TARGETS)}")
    if kernel.tree is not None:
        raise StageError(f"trees are built for x86_64 only so far, not {kernel.arch}")
    if kernel.variant != DISTRO:
        if kernel.arch not in MACHINE_FRAGMENTS:
            raise StageError(
                f"{kernel.arch} kernels are Debian's packages only so far (variant distro); "
                f"source-built variants are built for x86_64, {', '.join(MACHINE_FRAGMENTS)}"
            )
        if kernel.series not in FOREIGN_BUILTIN:
            raise StageError(
                f"no linux-source-{kernel.series} in the host's Debian suites to build a "
                f"{kernel.arch} kernel from; they carry {' and '.join(FOREIGN_BUILTIN)}"
            )
        return SourceBuiltKernel(kernel.series, kernel.variant, target=target)
    if kernel.series not in target.debian_series:
        raise StageError(
            f"no Linux {kernel.series} for {kernel.arch}: the host's Debian suites carry "
            f"{' and '.join(target.debian_series)} for it (--kernel)"
        )
    return DebianForeignKernel(kernel.series, target, FOREIGN_BUILTIN[kernel.series])


def known_series() -> tuple[str, ...]:
    """The series zskit describes itself (the table above), oldest first: the matrix's
    kernels unless MATRIX_KERNELS names others."""
    return tuple(sorted({s for table in SOURCES.values() for s in table}, key=series_key))


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
    """Where that kernel comes from: the table above, else the suite of Debian's archive with
    the newest version of the series (its distribution kernel, or one built from its
    linux-source). An unknown series, variant or machine is refused."""
    if kernel.arch != HOST_ARCH:
        return foreign_source(kernel)
    if kernel.tree is not None:
        return TreeKernel.of(kernel, DEBIAN_SUITES)
    known = sources(kernel.variant)
    if kernel.series in known:
        return known[kernel.series]
    index = ArchiveIndex.in_cache()
    offers = index.offers(Progress(out=io.StringIO()))
    suite = newest_suite(offers, kernel.series)
    if suite is not None:
        distro = DebianSuiteKernel(series=kernel.series, suite=suite)
        return (
            distro
            if kernel.variant == DISTRO
            else SourceBuiltKernel(kernel.series, kernel.variant, distro=distro)
        )
    offered = sorted({o.series for o in offers} - set(known), key=series_key)
    names = ", ".join(sorted(known, key=series_key))
    archive = (
        f"; Debian's archive also has {', '.join(offered)}"
        if offered
        else "; `zskit kernels` asks Debian's archive for the others"
        if index.age() is None
        else ""
    )
    raise StageError(
        f"unknown kernel {kernel.series!r}; known kernels: {names}{archive} (set KERNEL in "
        "`make menuconfig` or pass --kernel)"
    )


def with_build(
    source: KernelSource,
    fragments: Sequence[Path] = (),
    cc: str | None = None,
    p: Progress | None = None,
) -> KernelSource:
    """The source with the user's config fragments merged after the variant's (loudly: each
    setting is said) and, for a tree, the compiler `cc`; refused where zskit builds nothing.
    A fragment that disagrees with the variant's is an error naming both files."""
    if not fragments and cc is None:
        return source
    built = isinstance(source, TreeKernel | SourceBuiltKernel)
    if not built:
        raise StageError(
            f"--config-fragment and --cc change how zskit builds a kernel, and Debian's "
            f"packaged Linux {source.series} is built already; use them with --tree DIR or "
            "--variant minimal|debug"
        )
    if cc is not None and not isinstance(source, TreeKernel):
        raise StageError(
            "--cc picks the compiler of a tree's build (--tree DIR); the kernels built from "
            "linux-source-X use the compiler of their series"
        )
    assert isinstance(source, TreeKernel | SourceBuiltKernel)
    base = source.fragments()
    if fragments:
        variant = fragments_mod.merge(base)
        try:
            merged = fragments_mod.merge([*base, *fragments])
        except fragments_mod.FragmentError as e:
            names = ", ".join(str(f) for f in base)
            raise fragments_mod.FragmentError(
                f"--config-fragment disagrees with the {source.variant} variant's fragments "
                f"({names}): {str(e).split(':', 1)[1].strip()}"
            ) from None
        if p is not None:
            for name, setting in merged.items():
                if name in variant:
                    continue
                p.say(f"config fragment {setting.origin}: {setting.line()}")
            for path in fragments:
                again = [
                    s for s in fragments_mod.parse(path.read_text(), path.name) if s.name in variant
                ]
                if again:
                    p.say(f"config fragment {path}: {len(again)} setting(s) as the variant's")
        source = dataclasses.replace(source, fragment_files=(*base, *fragments))
    if cc is not None and isinstance(source, TreeKernel):
        source = dataclasses.replace(source, cc=cc)
    return source


def provision(
    kernel: KernelId,
    p: Progress,
    refresh: bool = False,
    fragments: Sequence[Path] = (),
    cc: str | None = None,
) -> Kernel:
    """The kernel, from the cache or provisioned now, under its lock; `fragments` and `cc`
    as with_build() takes them."""
    source = with_build(source_for(kernel), fragments, cc, p)

    def waiting() -> None:
        p.say(f"waiting for another zskit provisioning Linux {kernel.label}")

    # A tree's lock first (held already when a run provisions it): always in this order.
    with holding(kernel.tree, p), locked(lock_file(kernel.lock), waiting=waiting):
        return source.provision(cache_dir(), p, refresh=refresh)


def cached_variants(series: str) -> list[str]:
    """The variants of a series whose kernel the cache holds complete (no network needed)."""
    cache = cache_dir()
    manifests = {DISTRO: [cache / "debian" / series / "kernel.json"]}
    for variant in VARIANT_FRAGMENTS:
        manifests[variant] = sorted((cache / "built").glob(f"{series}-{variant}-*/kernel.json"))
    found = []
    for variant, paths in manifests.items():
        kernels = [Kernel.load(path) for path in paths if path.exists()]
        if any(k is not None and k.is_complete() for k in kernels):
            found.append(variant)
    return found
