"""kmalloc as zstest's kmalloc pools use it: the slab allocator zsmalloc is measured against.

An object of n bytes takes a slot of the smallest kmalloc cache that holds it,
and ksize() reports that slot: the caches are the powers of two from
KMALLOC_MIN_SIZE (8 where no DMA alignment raises it: x86, ppc64, arm64 from
6.5) up to two pages, plus 96 and 192 where the minimum is at most 32 and 64
(mm/slab_common.c's kmalloc_info). Objects here are at most a page, so every
one comes from a cache, never from the page allocator.
"""

from __future__ import annotations

from dataclasses import dataclass, field

KMALLOC_MIN_SIZE = 8


def kmalloc_sizes(page_size: int, min_size: int = KMALLOC_MIN_SIZE) -> tuple[int, ...]:
    """The object sizes of the kmalloc caches, smallest first."""
    sizes = set()
    size = min_size
    while size <= 2 * page_size:
        sizes.add(size)
        size *= 2
    sizes |= {s for s in (96, 192) if s > min_size and min_size <= s // 3}
    return tuple(sorted(sizes))


def slot_size(n: int, sizes: tuple[int, ...]) -> int:
    """ksize() of kmalloc(n): the smallest cache that holds n bytes."""
    return next(s for s in sizes if s >= n)


@dataclass
class KmallocPool:
    """A kmalloc pool's objects by id and the sum of their slots (its `slot_bytes`)."""

    page_size: int
    sizes: tuple[int, ...] = ()
    slots: dict[int, int] = field(default_factory=dict)  # id -> slot bytes
    slot_bytes: int = 0

    def __post_init__(self) -> None:
        self.sizes = self.sizes or kmalloc_sizes(self.page_size)

    def alloc(self, oid: int, size: int) -> None:
        slot = slot_size(size, self.sizes)
        self.slots[oid] = slot
        self.slot_bytes += slot

    def free(self, oid: int) -> None:
        self.slot_bytes -= self.slots.pop(oid)

    def reset(self) -> None:
        self.slots.clear()
        self.slot_bytes = 0
