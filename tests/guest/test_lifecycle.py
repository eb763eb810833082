"""A pool's whole life on the 6.1 debug kernel (KASAN, KFENCE, lockdep, panic_on_warn).

Every class is filled, merged ones included (each size from 1 to PAGE_SIZE in steps of
16 bytes: many sizes share one class), every object freed and the pool destroyed, three
pools one after the other, for ours and upstream's allocator, every batch checked
against the model. Destroying a pool is where the own allocator once read freed memory:
a merged index points at the class that serves it, and freeing that class first left
the index pointing at freed memory.
"""

from __future__ import annotations

import pytest

from pyharness.commands import config, run
from pyharness.progress import Progress
from tests.guest.test_source_kernels import source_built

SIZES = range(1, 4097, 16)


def life(pool: str, first: int) -> list[list[str]]:
    """Fill every class of a new pool, free everything, destroy it."""
    ids = range(first, first + len(SIZES))
    return [
        [f"create {pool}", *(f"alloc {i} {size}" for i, size in zip(ids, SIZES, strict=True))],
        [*(f"write {i} {i}" for i in ids), "stats"],
        [*(f"free {i}" for i in ids), "stats", f"destroy {pool}"],
    ]


@pytest.mark.qemu
@pytest.mark.parametrize("allocator", ["own", "upstream"])
@pytest.mark.parametrize(("series", "variant"), [source_built("6.1", "debug")])
def test_pools_are_created_filled_and_destroyed_cleanly(
    default_config: config.Config, allocator: str, series: str, variant: str
) -> None:
    cfg = default_config.with_overrides(kernel=series, variant=variant, allocator=allocator)
    batches = [batch for n in range(3) for batch in life(f"life{n}", 1000 * n)]
    result = run.run(cfg, Progress(), run.RunOptions(batches=batches))
    assert result.passed, result.first_failure
    assert result.info["commands"] == sum(len(b) for b in batches)
