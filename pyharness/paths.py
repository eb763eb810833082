"""Every path zskit reads or writes outside a temporary directory, in one place.

The repository's data (templates, QEMU profiles, config fragments) and its
build output sit beside the package; the kernel cache lives outside it, so
a fresh clone reuses kernels provisioned by another.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KCONFIG = REPO / "Kconfig"
QEMU_DIR = REPO / "qemu"  # QEMU profiles and the guest's /init template
CONFIGS = QEMU_DIR / "configs"  # kernel config fragments of the source-built variants
BUILD = REPO / "build"
RESULTS = BUILD / "results"


def templates_dir() -> Path:
    """The jinja2 templates of kernel C: $ZSKIT_TEMPLATES, else the repository's kmod/."""
    return Path(os.environ.get("ZSKIT_TEMPLATES") or REPO / "kmod")


def cache_dir() -> Path:
    """$ZSKIT_CACHE, else $XDG_CACHE_HOME/zskit, else ~/.cache/zskit."""
    if env := os.environ.get("ZSKIT_CACHE"):
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "zskit"


def lock_file(name: str) -> Path:
    """The cache's lock file of that name: one per kernel, root or probe."""
    return cache_dir() / "locks" / f"{name}.lock"
