"""zskit's own zsmalloc: the render-time choices of kmod/zsmalloc.c.j2, and its model policy.

The same `OwnAllocator` value renders the C and builds the `model.Policy` that predicts it,
so the template and the model cannot drift apart on a parameter. The choices come from the
OWN_* options of the toolkit's Kconfig.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..kernel.api import KernelApi
from ..model import EINVAL, ENOSPC, ChainRule, CompactionRule, FullnessScheme, InsertRule, Policy
from ..progress import StageError

FULLNESS = {"ratio": FullnessScheme.INUSE_RATIO, "quarters": FullnessScheme.QUARTERS}
CHAIN_RULES = {"min-waste": ChainRule.MIN_WASTE, "usedpc": ChainRule.USEDPC}
KERNEL = "kernel"  # a geometry choice left to the target kernel's own zsmalloc
DEFAULT_CHAIN = 8  # CONFIG_ZSMALLOC_CHAIN_SIZE's default (6.12+)
CLASS_DELTAS = (8, 16, 32, 64)
# Symbol prefix where the kernel has zsmalloc built in and the zs_ names are taken.
BUILTIN_PREFIX = "zsk_"


@dataclass(frozen=True)
class OwnAllocator:
    """The choices; 0 pages, 0 spacing and the chain rule "kernel" take the target kernel's
    geometry: 4 pages and usedpc on 6.1, CONFIG_ZSMALLOC_CHAIN_SIZE and min-waste from
    6.12, classes PAGE_SIZE >> 8 apart. With the same size classes as the kernel's
    zsmalloc, ours is never less dense for them."""

    max_pages: int = 0  # pages per zspage at most (4..16), 0: as the target kernel
    class_delta: int = 0  # bytes between neighbouring size classes, 0: as the kernel
    fullness: str = "ratio"  # fullness groups: "ratio" (tenths) or "quarters"
    chain_rule: str = KERNEL  # "min-waste" (least tail waste), "usedpc", or as the kernel
    stats: bool = True  # debugfs `classes`
    migration: bool = True  # movable pages, where the kernel lets a module have them

    def __post_init__(self) -> None:
        problems = []
        if self.max_pages and not 4 <= self.max_pages <= 16:
            problems.append(f"max pages per zspage {self.max_pages} is not 0 or in 4..16")
        # The menu's choices, or the kernel's PAGE_SIZE >> 8 that for_kernel fills in.
        delta = self.class_delta
        if delta and (delta < 8 or delta & (delta - 1)):
            problems.append(
                f"class spacing {delta} is not 0 (as the kernel) or one of {CLASS_DELTAS}"
            )
        if self.fullness not in FULLNESS:
            problems.append(f"fullness {self.fullness!r} is not one of {', '.join(FULLNESS)}")
        if self.chain_rule not in (*CHAIN_RULES, KERNEL):
            known = ", ".join(CHAIN_RULES)
            problems.append(f"chain rule {self.chain_rule!r} is not one of {known}")
        if problems:
            raise StageError("own allocator: " + "; ".join(problems) + "; see `make menuconfig`")

    def for_kernel(self, api: KernelApi) -> OwnAllocator:
        """The choices with the kernel's geometry filled in, as the template renders them."""
        old = api.model_policy == "6.1"  # before CONFIG_ZSMALLOC_CHAIN_SIZE and min-waste
        rule = self.chain_rule
        if rule == KERNEL:
            rule = "usedpc" if old else "min-waste"
        pages = self.max_pages or (4 if old else api.chain_size or DEFAULT_CHAIN)
        # ZS_SIZE_CLASS_DELTA: PAGE_SIZE >> CLASS_BITS
        delta = self.class_delta or api.geometry.page_size >> 8
        return dataclasses.replace(self, max_pages=pages, chain_rule=rule, class_delta=delta)

    def policy(self, api: KernelApi) -> Policy:
        """The model of this allocator rendered for `api`'s kernel."""
        own = self.for_kernel(api)
        return Policy(
            name="own",
            max_pages_per_zspage=own.max_pages,
            chain_rule=CHAIN_RULES[own.chain_rule],
            fullness=FULLNESS[own.fullness],
            insert_rule=InsertRule.HEAD,
            # The fullest group with room first, down to (never used) empty zspages.
            find_order=tuple(range(FULLNESS[own.fullness].full_group - 1, -1, -1)),
            zero_size_error=-EINVAL,
            oversize_error=-ENOSPC if api.oversize_errno == "ENOSPC" else -EINVAL,
            handle_size=api.geometry.handle_size,
            geometry=api.geometry,
            # A location keeps one index bit spare, so that the no-free marker is no slot.
            obj_tag_bits=1,
            compaction=CompactionRule.DST_FIRST,
            class_spacing=own.class_delta,
            # The `classes` file has the layout of the kernel's own zsmalloc.
            stats_fullness=FULLNESS["ratio" if api.ratio_stats else "quarters"],
        )
