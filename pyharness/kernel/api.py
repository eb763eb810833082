"""The zsmalloc API facts of a kernel, in the one record the templates and the model read.

A template never tests a version number; it tests one of these fields. A run
reads them from the kernel's own sources (detect.py). `APIS` holds them as
written down by hand for 6.1, 6.12 and 7.2 from
`shared/reference/zsmalloc-upstream.md`: the oracle detection is tested
against, and the facts of commands that have no provisioned kernel to read
(rendering into a tree, the own allocator's model policy).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..model import X86_64, Geometry, Policy, policy
from ..progress import StageError
from .manifest import Kernel


@dataclass(frozen=True)
class KernelApi:
    series: str
    map_object: bool  # zs_map_object/zs_unmap_object with ZS_MM_* modes
    malloc_nid: bool  # zs_malloc takes a node id (7.2)
    lookup_class_index: bool  # zs_lookup_class_index exists
    model_policy: str  # name of the reference-model policy for upstream zsmalloc
    oversize_errno: str  # what zs_malloc returns for size > PAGE_SIZE
    # put/get_unaligned_*: <asm/unaligned.h> until 6.11, then moved to <linux/unaligned.h>.
    unaligned_header: str
    typed_alloc: bool = False  # kzalloc_obj()/kvzalloc_objs(), which checkpatch asks for
    # CONFIG_ZSMALLOC_CHAIN_SIZE of the kernel at hand (6.12+), for the model; None: default.
    chain_size: int | None = None
    # shrinker_alloc()/shrinker_register() (6.7+) instead of an embedded struct shrinker.
    shrinker_alloc: bool = True
    # debugfs `classes` prints eleven 10%-ratio columns (6.12+), not almost_full/almost_empty.
    ratio_stats: bool = True
    # A module may make its pages movable with __SetPageMovable (until 7.x took page types).
    movable_ops: bool = True
    # enum migrate_mode still has MIGRATE_SYNC_NO_COPY (the page copied by the caller).
    migrate_sync_no_copy: bool = False
    # Page size, word size and physical address bits of the kernel's architecture.
    geometry: Geometry = X86_64
    # The crypto API's compressors, which zstest's pages file compresses with
    # (CONFIG_CRYPTO_ACOMP2=y; Debian's kernels and the source-built ones have it).
    acomp: bool = True
    # include/linux/zpool.h has the driver interface of 6.1 (our allocator registers
    # "zsmalloc" with it), and CONFIG_ZPOOL=y: zswap reaches zsmalloc through zpool.
    zpool_driver: bool = False
    zpool: bool = False

    def upstream_policy(self) -> Policy:
        """The model of this kernel's own zsmalloc."""
        return policy(self.model_policy, chain_size=self.chain_size, geometry=self.geometry)


APIS = {
    "6.1": KernelApi(
        series="6.1",
        map_object=True,
        malloc_nid=False,
        lookup_class_index=False,
        model_policy="6.1",
        oversize_errno="EINVAL",
        unaligned_header="asm/unaligned.h",
        shrinker_alloc=False,
        ratio_stats=False,
        migrate_sync_no_copy=True,
        zpool_driver=True,
    ),
    "6.12": KernelApi(
        series="6.12",
        map_object=True,
        malloc_nid=False,
        lookup_class_index=True,
        model_policy="6.12",
        oversize_errno="ENOSPC",
        unaligned_header="linux/unaligned.h",
    ),
    # Checked against include/linux/zsmalloc.h of linux-headers-7.2.13+deb14-common.
    "7.2": KernelApi(
        series="7.2",
        map_object=False,
        malloc_nid=True,
        lookup_class_index=True,
        model_policy="7.2",
        oversize_errno="ENOSPC",
        unaligned_header="linux/unaligned.h",
        typed_alloc=True,
        movable_ops=False,
    ),
}


def api_for(series: str) -> KernelApi:
    try:
        return APIS[series]
    except KeyError:
        known = ", ".join(sorted(APIS))
        raise StageError(
            f"no zsmalloc API facts for kernel {series!r} in pyharness/kernel/api.py "
            f"(known: {known})"
        ) from None


def tabled(kernel: Kernel) -> KernelApi:
    """The table's facts for the kernel's series, with the zspage chain size and the crypto
    compressors its .config sets: what detect.api_of must find in the kernel's files."""
    api = api_for(kernel.series)
    chain = kernel.config("ZSMALLOC_CHAIN_SIZE")
    return dataclasses.replace(
        api,
        chain_size=int(chain) if chain else api.chain_size,
        acomp=kernel.config("CRYPTO_ACOMP2") == "y",
        zpool=kernel.config("ZPOOL") == "y",
    )
