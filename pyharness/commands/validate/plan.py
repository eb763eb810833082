"""The plan: what each state of a series is built into on one kernel (zsmalloc.ko, and
zram.ko and zswap.o when the series reaches them)."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ...guest import clients
from ...kernel.manifest import Kernel
from .pristine import HEADER, SOURCE, SourceTree
from .series import Series


@dataclass(frozen=True)
class Plan:
    """What each state of the series is built into on one kernel, by tree path.

    zsmalloc.c and its mm/ headers go into the modules' Kbuild directory; files
    under include/ (zsmalloc.h at least) into an include/ there that comes before
    the kernel's own; zram's directory into zram/ of the same Kbuild directory
    (so modpost takes zs_* from the zsmalloc.ko beside it); zswap.c and mm/'s
    headers into a directory of their own, compiled against a kernel with
    CONFIG_ZSWAP=y. A user of zsmalloc is built when the series touches it or a
    header its sources include.
    """

    sources: tuple[str, ...]  # zsmalloc.c and the mm/ headers it includes
    overlay: tuple[str, ...]  # include/... files
    zram: tuple[str, ...] = ()  # drivers/block/zram/ files; () when zram is not built
    zswap: tuple[str, ...] = ()  # mm/zswap.c and mm/*.h; () when zswap is not compiled
    zram_why: str = ""  # why zram is not built (said in its check)
    zswap_why: str = ""
    zswap_kernel: Kernel | None = None  # the kernel zswap.o is compiled against
    # Why the kernel's zswap cannot run on each state's zsmalloc.ko; "": it runs
    # (clients.zswap_round_trip, in the suite's boot).
    zswap_run_why: str = ""

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.sources, *self.overlay, *self.zram, *self.zswap)))


def _includes(text: bytes) -> list[str]:
    """Tree paths a C file includes: <x> as include/x, "x" as a sibling (dir left to the caller)."""
    found = [f"include/{m.decode()}" for m in re.findall(rb"^#include <([\w./-]+)>", text, re.M)]
    return found + [m.decode() for m in re.findall(rb'^#include "([\w.-]+)"', text, re.M)]


def uses(tree: SourceTree, files: Sequence[str], changed: set[str]) -> str | None:
    """The first changed path among the files and the headers they include, or None."""
    for path in files:
        if path in changed:
            return path
        if not path.endswith((".c", ".h")) or not (tree.root / path).is_file():
            continue
        for inc in _includes((tree.root / path).read_bytes()):
            full = (
                inc if inc.startswith("include/") else posixpath.join(posixpath.dirname(path), inc)
            )
            if full in changed:
                return full
    return None


def make_plan(
    series: Series,
    tree: SourceTree,
    kernel: Kernel,
    label: str,
    zswap_kernel: Kernel | None,
    zswap_missing: str = "",
) -> Plan:
    """The Plan of a series on a kernel (`label` names it in the reasons given)."""
    touched = {p for patch in series.patches for p in patch.touched()}
    local = [
        f"mm/{inc}"
        for inc in _includes((tree.root / SOURCE).read_bytes())
        if not inc.startswith("include/") and tree.has_file(f"mm/{inc}")
    ]
    sources = (SOURCE, *local)
    overlay = tuple(sorted({HEADER} | {p for p in touched if p.startswith("include/")}))
    zram_tree = clients.zram_files(tree.members) + sorted(
        p for p in touched if p.startswith(clients.ZRAM_DIR)
    )
    zram_tree = list(dict.fromkeys(zram_tree))
    zram: tuple[str, ...] = ()
    why = uses(tree, zram_tree, touched)
    if why is None:
        zram_why = "not run: the series touches neither zram nor a header it includes"
    elif kernel.config("ZRAM") != "m":
        zram_why = (
            f"not run: {why} is changed, but Linux {label} has CONFIG_ZRAM="
            f"{kernel.config('ZRAM') or 'n'}, so zram cannot be loaded from the patched tree"
        )
    else:
        zram, zram_why = tuple(zram_tree), ""
    zswap_files = [clients.ZSWAP]
    zswap: tuple[str, ...] = ()
    why = uses(tree, zswap_files, touched) if tree.has_file(clients.ZSWAP) else None
    if why is None:
        zswap_why = "not compiled: the series touches neither mm/zswap.c nor a header it includes"
    elif zswap_kernel is None:
        zswap_why = f"not compiled: {why} is changed, but {zswap_missing}"
    else:
        mm = clients.mm_headers(tree.members) + sorted(
            p for p in touched if re.fullmatch(r"mm/[\w.-]+\.h", p)
        )
        zswap = tuple(dict.fromkeys([clients.ZSWAP, *mm]))
        zswap_why = ""
    return Plan(
        sources,
        overlay,
        zram,
        zswap,
        zram_why,
        zswap_why,
        zswap_kernel if zswap else None,
        clients.zswap_runnable(kernel) or "",
    )
