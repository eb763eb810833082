"""Which kernel: the one identity every command, entry, directory and lock is named from."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

DISTRO = "distro"  # the variant of Debian's packaged kernels
# Where kernels come from: Debian's packages, or built from linux-source-X with
# the config fragments of qemu/configs/ (source.py), or from the user's tree (tree.py).
VARIANTS = (DISTRO, "minimal", "debug", "kcsan", "nocompaction", "zswap")
TREE_VARIANT = "minimal"  # a tree's variant unless one is asked for
HOST_ARCH = "x86_64"


def tree_tag(tree: Path) -> str:
    """`tree-linux-1a2b3c4d`: a tree's short stable name, its basename and a hash of its path.

    Two trees with one basename (~/a/linux, ~/b/linux) get different names, so they
    never share a build directory, a lock or a results name; odd characters
    (spaces, colons) become "_" since Kbuild and make take these names as words.
    """
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", tree.name).strip("_") or "root"
    return f"tree-{base}-{hashlib.sha256(str(tree).encode()).hexdigest()[:8]}"


def series_key(series: str) -> tuple[int, ...]:
    """Orders "6.12" after "6.1" and before "7.2"."""
    return tuple(int(part) for part in series.split("."))


@dataclass(frozen=True)
class KernelId:
    """A kernel series ("6.1"), where its kernel comes from, and the machine it runs on.

    `tree`: the user's kernel tree (an absolute path) the kernel is built from; None:
    Debian's packages or linux-source-X.
    """

    series: str
    variant: str = DISTRO
    arch: str = HOST_ARCH
    tree: Path | None = None

    def name(self, *parts: str, full: bool = False) -> str:
        """The series, then `parts`, then what sets this kernel apart, joined with "-".

        `6.1-upstream`, `6.1-upstream-minimal`; with `full` the variant is always
        named (`6.1-upstream-distro`, as matrix entries and results directories are);
        a tree adds its tag (`6.1-upstream-minimal-tree-linux-1a2b3c4d`).
        """
        words = [self.series, *parts]
        if full or self.variant != DISTRO:
            words.append(self.variant)
        if self.arch != HOST_ARCH:
            words.append(self.arch)
        if self.tree is not None:
            words.append(tree_tag(self.tree))
        return "-".join(words)

    @property
    def slug(self) -> str:
        """`6.1`, `6.12-minimal`: the kernel's directory in results and build trees."""
        return self.name()

    @property
    def label(self) -> str:
        """`6.1`, `6.12 (minimal)`, `6.1 (minimal, tree ~/linux)`: as reports name it."""
        extra = [w for w in (self.variant, self.arch) if w not in (DISTRO, HOST_ARCH)]
        if self.tree is not None:
            extra.append(f"tree {self.tree}")
        return self.series + (f" ({', '.join(extra)})" if extra else "")

    @property
    def lock(self) -> str:
        """The cache lock held while this kernel is provisioned."""
        return f"provision-{self.slug}"
