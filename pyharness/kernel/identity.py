"""Which kernel: the one identity every command, entry, directory and lock is named from."""

from __future__ import annotations

from dataclasses import dataclass

DISTRO = "distro"  # the variant of Debian's packaged kernels
# Where kernels come from: Debian's packages, or built from linux-source-X with
# the config fragments of qemu/configs/ (source.py).
VARIANTS = (DISTRO, "minimal", "debug")
HOST_ARCH = "x86_64"


@dataclass(frozen=True)
class KernelId:
    """A kernel series ("6.1"), where its kernel comes from, and the machine it runs on."""

    series: str
    variant: str = DISTRO
    arch: str = HOST_ARCH

    def name(self, *parts: str, full: bool = False) -> str:
        """The series, then `parts`, then what sets this kernel apart, joined with "-".

        `6.1-upstream`, `6.1-upstream-minimal`; with `full` the variant is always
        named (`6.1-upstream-distro`, as matrix entries and results directories are).
        """
        words = [self.series, *parts]
        if full or self.variant != DISTRO:
            words.append(self.variant)
        if self.arch != HOST_ARCH:
            words.append(self.arch)
        return "-".join(words)

    @property
    def slug(self) -> str:
        """`6.1`, `6.12-minimal`: the kernel's directory in results and build trees."""
        return self.name()

    @property
    def label(self) -> str:
        """`6.1`, `6.12 (minimal)`: the kernel as reports and progress lines name it."""
        extra = [w for w in (self.variant, self.arch) if w not in (DISTRO, HOST_ARCH)]
        return self.series + (f" ({', '.join(extra)})" if extra else "")

    @property
    def lock(self) -> str:
        """The cache lock held while this kernel is provisioned."""
        return f"provision-{self.slug}"
