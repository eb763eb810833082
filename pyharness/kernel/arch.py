"""The machines zskit builds for and boots: an architecture at one page size.

A `Target` names what each stage needs of the machine: Debian's names for
packages (architecture, image flavour), Kbuild's ARCH and the cross
compiler's triplet, the QEMU profile (qemu/<profile>.toml), and how the
kernel's config and headers fix zsmalloc's geometry (`geometry`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..model import PAGE_SIZES, Geometry
from ..progress import StageError
from .identity import HOST_ARCH


@dataclass(frozen=True)
class Target:
    arch: str  # zskit's name (--arch), as results and KernelCI JSON give it
    page_size: str  # "4k", "16k", "64k" (--page-size)
    debian_arch: str  # dpkg's architecture: amd64, arm64, ppc64el, i386
    # Debian's image flavours (linux-image-<abi>-<flavour>), the first a series has: 6.1's
    # powerpc64le has 64 KiB pages, 6.12's 4 KiB ones beside a powerpc64le-64k.
    flavours: tuple[str, ...]
    kbuild_arch: str  # ARCH= for Kbuild
    triplet: str  # the GNU triplet of its cross compiler: aarch64-linux-gnu-gcc-12
    profile: str  # qemu/<profile>.toml
    qemu_package: str  # the Debian package of the profile's QEMU binary
    # The series of Debian's kernels for it in the host's suites (bookworm: 6.1, and 6.12
    # in bookworm-security; i386 has no 6.12, arm64-16k no 6.1); x86_64's: provision.py.
    debian_series: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """`arm64`, `arm64-16k`: the page size named where the architecture has several."""
        default = DEFAULT_PAGE_SIZE.get(self.arch)
        return self.arch if self.page_size == default else f"{self.arch}-{self.page_size}"

    @property
    def srcarch(self) -> str:
        """Its directory under arch/ (SRCARCH)."""
        return "x86" if self.kbuild_arch in ("x86_64", "i386") else self.kbuild_arch

    @property
    def cross(self) -> bool:
        """Whether its code is built by a cross compiler on this (x86_64) host."""
        return self.arch != HOST_ARCH

    @property
    def cc(self) -> str:
        """The compiler of the guest's static programs."""
        return f"{self.triplet}-gcc" if self.cross else "gcc"

    @property
    def host_packages(self) -> tuple[str, ...]:
        """What the host needs to build for it (cross gcc, static libc) and to boot it."""
        # dwarves: pahole, for the BTF of modules where the headers ship a vmlinux (6.12).
        cross = (f"crossbuild-essential-{self.debian_arch}", "dwarves") if self.cross else ()
        return (*cross, self.qemu_package)

    @property
    def make_vars(self) -> tuple[str, ...]:
        """What every make against such a kernel's headers needs."""
        if not self.cross:
            return ()
        return (f"ARCH={self.kbuild_arch}", f"CROSS_COMPILE={self.triplet}-")

    def physmem_bits(self, config: dict[str, str], arch_include: Path | None) -> int:
        """MAX_POSSIBLE_PHYSMEM_BITS of a kernel of this target, by the rule its headers
        follow (zsmalloc falls back to MAX_PHYSMEM_BITS, then BITS_PER_LONG)."""
        if self.kbuild_arch in ("x86_64", "i386"):
            # x86_64: 52 in pgtable_64_types.h (4- and 5-level paging alike); 32-bit:
            # 36 with PAE (pgtable-3level_types.h), else 32.
            if config.get("CONFIG_64BIT") == "y":
                return 52
            return 36 if config.get("CONFIG_X86_PAE") == "y" else 32
        if self.kbuild_arch == "arm64":
            # 6.12 defines MAX_POSSIBLE_PHYSMEM_BITS (52) in asm/sparsemem.h; 6.1 only
            # MAX_PHYSMEM_BITS, which is CONFIG_ARM64_PA_BITS.
            header = arch_include / "asm/sparsemem.h" if arch_include else None
            text = header.read_text() if header and header.exists() else ""
            m = re.search(r"^#define\s+MAX_POSSIBLE_PHYSMEM_BITS\s+\(?(\d+)\)?", text, re.M)
            return int(m[1]) if m else int(config["CONFIG_ARM64_PA_BITS"])
        if self.kbuild_arch == "powerpc":
            # book3s/64: the larger of hash's and radix's limit, 51 with SPARSEMEM_VMEMMAP
            # and SPARSEMEM_EXTREME, else 46 (hash-64k.h, radix.h).
            wide = all(config.get(f"CONFIG_SPARSEMEM_{k}") == "y" for k in ("VMEMMAP", "EXTREME"))
            return 51 if wide else 46
        raise StageError(f"no rule for the physical address bits of {self.kbuild_arch}")

    def geometry(self, config: dict[str, str], arch_include: Path | None) -> Geometry:
        """zsmalloc's geometry on a kernel of this target with `config` (CONFIG_* -> value)."""
        page_size = page_size_of(config, self.kbuild_arch)
        if page_size != PAGE_SIZES[self.page_size]:
            raise StageError(
                f"the kernel has {page_size >> 10} KiB pages, not the {self.page_size} of "
                f"--arch {self.arch} --page-size {self.page_size}"
            )
        bits = 64 if config.get("CONFIG_64BIT") == "y" else 32
        return Geometry(page_size, bits, self.physmem_bits(config, arch_include))


def page_size_of(config: dict[str, str], kbuild_arch: str) -> int:
    """PAGE_SIZE from a .config: CONFIG_PAGE_SHIFT (6.8+), else the arch's page options."""
    if shift := config.get("CONFIG_PAGE_SHIFT"):
        return 1 << int(shift)
    prefix = {"arm64": "CONFIG_ARM64_", "powerpc": "CONFIG_PPC_"}.get(kbuild_arch)
    for size in (64, 16, 4):
        if prefix and config.get(f"{prefix}{size}K_PAGES") == "y":
            return size << 10
    return 4096


_ALL = (
    Target(
        arch="x86_64", page_size="4k", debian_arch="amd64", flavours=("amd64",),
        kbuild_arch="x86_64", triplet="x86_64-linux-gnu",
        profile="x86_64", qemu_package="qemu-system-x86",
    ),
    Target(
        arch="arm64", page_size="4k", debian_arch="arm64", flavours=("arm64",),
        kbuild_arch="arm64", triplet="aarch64-linux-gnu",
        profile="arm64", qemu_package="qemu-system-arm", debian_series=("6.1", "6.12"),
    ),
    Target(
        arch="arm64", page_size="16k", debian_arch="arm64", flavours=("arm64-16k",),
        kbuild_arch="arm64", triplet="aarch64-linux-gnu",
        profile="arm64", qemu_package="qemu-system-arm", debian_series=("6.12",),
    ),
    Target(
        arch="ppc64el", page_size="64k", debian_arch="ppc64el",
        flavours=("powerpc64le-64k", "powerpc64le"),
        kbuild_arch="powerpc", triplet="powerpc64le-linux-gnu",
        profile="ppc64el", qemu_package="qemu-system-ppc", debian_series=("6.1", "6.12"),
    ),
    Target(
        arch="i386", page_size="4k", debian_arch="i386", flavours=("686-pae",),
        kbuild_arch="i386", triplet="i686-linux-gnu",
        profile="i386", qemu_package="qemu-system-x86", debian_series=("6.1",),
    ),
)  # fmt: skip
#: Each architecture's page size when --page-size is not given: its first above.
DEFAULT_PAGE_SIZE: dict[str, str] = {}
for _t in _ALL:
    DEFAULT_PAGE_SIZE.setdefault(_t.arch, _t.page_size)
TARGETS = {t.name: t for t in _ALL}
ARCHES = tuple(DEFAULT_PAGE_SIZE)
HOST = TARGETS[HOST_ARCH]


def target(arch: str = HOST_ARCH, page_size: str | None = None) -> Target:
    """The target of --arch and --page-size; an unknown pair is refused with the known ones."""
    if arch not in DEFAULT_PAGE_SIZE:
        raise StageError(f"unknown architecture {arch!r}; known: {', '.join(ARCHES)} (--arch)")
    size = page_size or DEFAULT_PAGE_SIZE[arch]
    for t in TARGETS.values():
        if (t.arch, t.page_size) == (arch, size):
            return t
    sizes = ", ".join(t.page_size for t in TARGETS.values() if t.arch == arch)
    raise StageError(f"{arch} has no {size} page target in zskit; its page sizes: {sizes}")
