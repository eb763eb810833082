"""A zsmalloc version's rules as data: class sizes, chain lengths, fullness, compaction.

A frozen `Policy` holds every decision that differs between versions (and
our own allocator's render-time choices); `class_table` and
`huge_class_size` derive the size-class table from it. `pool.py` follows a
policy operation by operation.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

# Linux errno values (fixed by the kernel ABI, independent of the host's errno module).
EINVAL = 22
ENOMEM = 12
ENOSPC = 28

# Constants of every modelled version on every architecture (reference section 3.1).
ZS_MIN_ALLOC_FLOOR = 32  # ZS_MIN_ALLOC_SIZE is at least this
CLASS_BITS = 8
ZS_ALIGN = 8  # class sizes are multiples of it

#: Page sizes zskit knows, by the one spelling every command takes (--page-size).
PAGE_SIZES = {"4k": 4096, "16k": 16384, "64k": 65536}


@dataclass(frozen=True)
class Geometry:
    """What the architecture and its config fix for zsmalloc: PAGE_SIZE, BITS_PER_LONG and
    MAX_POSSIBLE_PHYSMEM_BITS (the address bits a pfn in a location must hold)."""

    page_size: int = 4096
    bits_per_long: int = 64
    physmem_bits: int = 52

    def __post_init__(self) -> None:
        if self.page_size not in PAGE_SIZES.values():
            known = ", ".join(str(v) for v in PAGE_SIZES.values())
            raise ValueError(f"page size {self.page_size} is not one of {known}")
        if self.bits_per_long not in (32, 64):
            raise ValueError(f"BITS_PER_LONG must be 32 or 64, got {self.bits_per_long}")
        if not self.page_shift < self.physmem_bits <= self.bits_per_long + self.page_shift:
            raise ValueError(
                f"{self.physmem_bits} physical address bits do not fit {self.page_size}-byte "
                f"pages and {self.bits_per_long}-bit words"
            )

    @property
    def page_shift(self) -> int:
        return self.page_size.bit_length() - 1

    @property
    def handle_size(self) -> int:
        """ZS_HANDLE_SIZE: sizeof(unsigned long)."""
        return self.bits_per_long // 8

    @property
    def pfn_bits(self) -> int:
        """_PFN_BITS: the bits of a page frame number."""
        return self.physmem_bits - self.page_shift


#: x86_64 (4-level or 5-level paging: MAX_POSSIBLE_PHYSMEM_BITS is 52 either way).
X86_64 = Geometry()


class ChainRule(Enum):
    """How many pages a zspage of a given object size spans."""

    #: 6.1 and 2013 ``get_pages_per_zspage``: first k maximising the integer used-percentage.
    USEDPC = "usedpc"
    #: 6.12+ ``calculate_zspage_chain_size``: 1 for powers of two, else first k with the
    #: least tail waste ``(k * PAGE_SIZE) % size``.
    MIN_WASTE = "min-waste"


class InsertRule(Enum):
    """Where ``insert_zspage`` links a zspage into its fullness list."""

    #: Always at the head (6.12+, and the 2013 design).
    HEAD = "head"
    #: 6.1: second position if the list is non-empty and the zspage has fewer objects in use
    #: than the current head, else the head. Keeps the fuller zspage first for allocation.
    SECOND_IF_LESS_USED = "second-if-less-used"


class FullnessScheme(Enum):
    """Maps ``(inuse, opz)`` to a fullness group number (the index of its list)."""

    #: 6.1: EMPTY=0, ALMOST_EMPTY=1, ALMOST_FULL=2, FULL=3, ALMOST_EMPTY up to 3/4 of opz.
    QUARTERS = "quarters"
    #: 2013 design: same group numbers (the kernel's enum order differs, AF=0 and AE=1, which
    #: is not observable), ALMOST_EMPTY only up to opz/4, and EMPTY/FULL zspages sit on no list.
    QUARTERS_2013 = "quarters-2013"
    #: 6.12+: ZS_INUSE_RATIO_0=0, 10%-buckets 1..10 (10 is "99%"), ZS_INUSE_RATIO_100=11.
    INUSE_RATIO = "inuse-ratio"

    @property
    def groups(self) -> int:
        """Number of fullness groups per class (each has a list unless has_list says not)."""
        return 12 if self is FullnessScheme.INUSE_RATIO else 4

    @property
    def empty_group(self) -> int:
        return 0

    @property
    def full_group(self) -> int:
        return self.groups - 1

    def has_list(self, group: int) -> bool:
        """Whether zspages of ``group`` are linked on a list (2013: only the ALMOST groups)."""
        if self is FullnessScheme.QUARTERS_2013:
            return group in (QUARTER_ALMOST_EMPTY, QUARTER_ALMOST_FULL)
        return True

    def group(self, inuse: int, opz: int) -> int:
        """The group a zspage with ``inuse`` of ``opz`` objects in use belongs to."""
        if not 0 <= inuse <= opz:
            raise ValueError(f"inuse {inuse} outside 0..{opz}")
        if inuse == 0:
            return self.empty_group
        if inuse == opz:
            return self.full_group
        if self is FullnessScheme.QUARTERS:
            # The kernel comment says N/f but the code uses 3N/4 (fullness_threshold_frac=4).
            return QUARTER_ALMOST_EMPTY if inuse <= 3 * opz // 4 else QUARTER_ALMOST_FULL
        if self is FullnessScheme.QUARTERS_2013:
            return QUARTER_ALMOST_EMPTY if inuse <= opz // 4 else QUARTER_ALMOST_FULL
        return (100 * inuse // opz) // 10 + 1


# 6.1 group numbers (enum fullness_group); the 2013 scheme reuses them.
QUARTER_EMPTY = 0
QUARTER_ALMOST_EMPTY = 1
QUARTER_ALMOST_FULL = 2
QUARTER_FULL = 3


class CompactionRule(Enum):
    """Which ``__zs_compact`` loop a policy follows."""

    #: The 2013 design has no compaction: ``compact()`` returns 0 and changes nothing.
    NONE = "none"
    #: 6.1: isolate src (head of ALMOST_EMPTY, else ALMOST_FULL), then test zs_can_compact;
    #: drain src into dsts (head of ALMOST_FULL, else ALMOST_EMPTY), putting each filled dst
    #: back; put back dst and then src (freed if empty); repeat. Needs ``QUARTERS``.
    SRC_FIRST = "src-first"
    #: 6.12 / 7.2 (and zskit's own allocator): while zs_can_compact, keep a dst (fullest
    #: non-full group first) until it is full and feed it srcs taken from the emptiest group.
    DST_FIRST = "dst-first"


@dataclass(frozen=True)
class Policy:
    """Every version-dependent rule the model needs, so a new kernel is a new instance.

    ``find_order`` lists the fullness groups ``find_get_zspage`` scans, first match wins.
    ``zero_size_error`` / ``oversize_error`` are what ``zs_malloc`` returns for size 0 and
    size > PAGE_SIZE (negative errno; the 2013 design really returns 0 and is modelled as
    -EINVAL). ``handle_size`` is the in-object header (0 for the 2013 design) and
    ``merge_classes`` enables class merging; ``obj_tag_bits`` are the bits OBJ_INDEX_BITS
    leaves out beside the pfn (6.1's OBJ_TAG_BITS; 0 from 6.12), which on a 32-bit kernel
    raise ZS_MIN_ALLOC_SIZE above 32. ``class_spacing`` overrides ZS_SIZE_CLASS_DELTA,
    ``stats_fullness`` is the grouping the ``classes`` file prints when it is not the one the
    lists keep.
    """

    name: str
    max_pages_per_zspage: int
    chain_rule: ChainRule
    fullness: FullnessScheme
    insert_rule: InsertRule
    find_order: tuple[int, ...]
    zero_size_error: int
    oversize_error: int
    handle_size: int = 8
    merge_classes: bool = True
    geometry: Geometry = X86_64
    obj_tag_bits: int = 1
    compaction: CompactionRule = CompactionRule.NONE
    class_spacing: int | None = None
    stats_fullness: FullnessScheme | None = None

    def __post_init__(self) -> None:
        if self.max_pages_per_zspage < 1:
            raise ValueError(f"max_pages_per_zspage must be >= 1, got {self.max_pages_per_zspage}")
        bad = [g for g in self.find_order if not 0 <= g < self.fullness.groups]
        if bad:
            raise ValueError(f"find_order groups {bad} not in 0..{self.fullness.groups - 1}")
        if self.fullness.full_group in self.find_order:
            raise ValueError("find_order must not include the FULL group")
        if self.compaction is not CompactionRule.NONE and self.fullness not in (
            FullnessScheme.QUARTERS,
            FullnessScheme.INUSE_RATIO,
        ):
            raise ValueError(f"compaction {self.compaction.value} needs kept fullness lists")
        if self.compaction is CompactionRule.SRC_FIRST and self.fullness is not (
            FullnessScheme.QUARTERS
        ):
            raise ValueError("compaction src-first needs fullness quarters")
        spacing = self.class_delta
        if spacing < ZS_ALIGN or spacing % ZS_ALIGN:
            raise ValueError(f"class spacing must be a multiple of {ZS_ALIGN}: {spacing}")

    @property
    def page_size(self) -> int:
        return self.geometry.page_size

    @property
    def obj_index_bits(self) -> int:
        """OBJ_INDEX_BITS: the bits of a location left for the object's index."""
        g = self.geometry
        return g.bits_per_long - g.pfn_bits - self.obj_tag_bits

    @property
    def min_alloc_size(self) -> int:
        """ZS_MIN_ALLOC_SIZE: small enough classes would need more indexes than fit."""
        chain = self.max_pages_per_zspage << self.geometry.page_shift
        return max(ZS_MIN_ALLOC_FLOOR, chain >> self.obj_index_bits)

    @property
    def class_delta(self) -> int:
        """ZS_SIZE_CLASS_DELTA: spacing between class sizes (PAGE_SIZE >> CLASS_BITS)."""
        return self.class_spacing or self.page_size >> CLASS_BITS

    @property
    def num_indexes(self) -> int:
        """ZS_SIZE_CLASSES: number of class indexes before merging (255 for 4 KiB pages)."""
        return -(-(self.page_size - self.min_alloc_size) // self.class_delta) + 1

    def alloc_error(self, size: int) -> int | None:
        """The value zs_malloc returns for an impossible ``size``, or None if it is valid."""
        if size < 0:
            raise ValueError(f"size is a size_t, cannot be negative: {size}")
        if size == 0:
            return self.zero_size_error
        if size > self.page_size:
            return self.oversize_error
        return None

    def pages_per_zspage(self, size: int) -> int:
        """Chain length (in pages) for objects of ``size`` bytes."""
        ps = self.page_size
        if self.chain_rule is ChainRule.USEDPC:
            best_pct, best_k = 0, 1
            for k in range(1, self.max_pages_per_zspage + 1):
                chain = k * ps
                pct = (chain - chain % size) * 100 // chain
                if pct > best_pct:
                    best_pct, best_k = pct, k
            return best_k
        if size & (size - 1) == 0:
            return 1
        best_waste, best_k = ps, 1
        for k in range(1, self.max_pages_per_zspage + 1):
            waste = (k * ps) % size
            if waste < best_waste:
                best_waste, best_k = waste, k
        return best_k


def _quarters_policy(geometry: Geometry) -> Policy:
    return Policy(
        name="6.1",
        max_pages_per_zspage=4,
        chain_rule=ChainRule.USEDPC,
        fullness=FullnessScheme.QUARTERS,
        insert_rule=InsertRule.SECOND_IF_LESS_USED,
        find_order=(QUARTER_ALMOST_FULL, QUARTER_ALMOST_EMPTY, QUARTER_EMPTY),
        zero_size_error=-EINVAL,
        oversize_error=-EINVAL,
        handle_size=geometry.handle_size,
        geometry=geometry,
        compaction=CompactionRule.SRC_FIRST,
    )


def _ratio_policy(name: str, chain_size: int, geometry: Geometry) -> Policy:
    return Policy(
        name=name,
        max_pages_per_zspage=chain_size,
        chain_rule=ChainRule.MIN_WASTE,
        fullness=FullnessScheme.INUSE_RATIO,
        insert_rule=InsertRule.HEAD,
        find_order=tuple(range(10, -1, -1)),
        zero_size_error=-EINVAL,
        oversize_error=-ENOSPC,
        handle_size=geometry.handle_size,
        geometry=geometry,
        obj_tag_bits=0,
        compaction=CompactionRule.DST_FIRST,
    )


def _policy_2013(geometry: Geometry) -> Policy:
    # zs_malloc returns 0 (not an ERR_PTR) for size 0 and size > PAGE_SIZE; modelled as
    # -EINVAL so every failure is a negative int.
    return Policy(
        name="2013",
        max_pages_per_zspage=4,
        chain_rule=ChainRule.USEDPC,
        fullness=FullnessScheme.QUARTERS_2013,
        insert_rule=InsertRule.HEAD,
        find_order=(QUARTER_ALMOST_FULL, QUARTER_ALMOST_EMPTY),
        zero_size_error=-EINVAL,
        oversize_error=-EINVAL,
        handle_size=0,
        merge_classes=False,
        geometry=geometry,
        obj_tag_bits=0,
        compaction=CompactionRule.NONE,
    )


_RATIO_VERSIONS = ("6.12", "7.2")
_DEFAULT_CHAIN = 8  # CONFIG_ZSMALLOC_CHAIN_SIZE default, and Debian's value


def known_policies() -> tuple[str, ...]:
    """Names accepted by :func:`policy` ("2013" is the PATCHv5 design, not a kernel build)."""
    return ("6.1", *_RATIO_VERSIONS, "2013")


def policy(name: str, *, chain_size: int | None = None, geometry: Geometry = X86_64) -> Policy:
    """The policy for kernel ``name`` on an architecture of ``geometry``.

    ``chain_size`` is CONFIG_ZSMALLOC_CHAIN_SIZE (4..16, default 8) and only exists for 6.12+;
    6.1 and the 2013 design hard-code 4 pages per zspage.
    """
    if name in ("6.1", "2013"):
        if chain_size is not None and chain_size != 4:
            raise ValueError(f"{name} has no CONFIG_ZSMALLOC_CHAIN_SIZE (fixed at 4 pages)")
        return _quarters_policy(geometry) if name == "6.1" else _policy_2013(geometry)
    if name in _RATIO_VERSIONS:
        chain = _DEFAULT_CHAIN if chain_size is None else chain_size
        if not 4 <= chain <= 16:
            raise ValueError(f"CONFIG_ZSMALLOC_CHAIN_SIZE must be in 4..16, got {chain}")
        return _ratio_policy(name, chain, geometry)
    raise ValueError(f"unknown zsmalloc policy {name!r}; known: {', '.join(known_policies())}")


@dataclass(frozen=True)
class SizeClass:
    """One distinct size class (``struct size_class``) after merging."""

    index: int
    size: int
    pages_per_zspage: int
    objs_per_zspage: int

    @property
    def huge(self) -> bool:
        """One object per single page: stored without an in-object handle header."""
        return self.objs_per_zspage == 1 and self.pages_per_zspage == 1


def build_table(p: Policy) -> tuple[list[SizeClass], list[SizeClass], int]:
    """Walk indexes 254..0 like zs_create_pool.

    Returns (distinct classes ascending, per-index lookup array, huge_class_size).
    """
    by_index: list[SizeClass | None] = [None] * p.num_indexes
    distinct: list[SizeClass] = []
    huge_size = 0
    prev: SizeClass | None = None
    for i in range(p.num_indexes - 1, -1, -1):
        size = min(p.min_alloc_size + i * p.class_delta, p.page_size)
        ppz = p.pages_per_zspage(size)
        opz = ppz * p.page_size // size
        # First class (walking down) that is not one-object-per-page: anything bigger is huge.
        if ppz != 1 and opz != 1 and huge_size == 0:
            huge_size = size - (p.handle_size - 1)
        if (
            p.merge_classes
            and prev is not None
            and (prev.pages_per_zspage, prev.objs_per_zspage) == (ppz, opz)
        ):
            by_index[i] = prev
            continue
        prev = SizeClass(index=i, size=size, pages_per_zspage=ppz, objs_per_zspage=opz)
        by_index[i] = prev
        distinct.append(prev)
    distinct.reverse()
    lookup = [c for c in by_index if c is not None]
    assert len(lookup) == p.num_indexes
    return distinct, lookup, huge_size


def class_table(p: Policy) -> list[SizeClass]:
    """Distinct size classes in ascending index order."""
    return build_table(p)[0]


def huge_class_size(p: Policy) -> int:
    """zs_huge_class_size: the smallest user size that lands in a huge class.

    In the kernel this is a global set by the first pool; every pool of one kernel computes
    the same value, so here it is a property of the policy. The 2013 design has no such call;
    the same rule (no header) gives the smallest size whose class holds one object per page.
    """
    return build_table(p)[2]
