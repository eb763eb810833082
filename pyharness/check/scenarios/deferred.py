"""Deferred zspage release: frees that empty a zspage whose page migration holds locked.

zsmalloc may not release a zspage while one of its pages is locked (page
migration locks it): it hands the zspage to a worker, and zs_destroy_pool
must wait for that worker. Under real migration that path is rare and
timing-bound; zstest's `lockfree` makes it certain, by locking the object's
page as migration does and unlocking it a few milliseconds later.

Each round creates a pool and puts one object, written and verified, alone
in a zspage of every class (slot 0: it never spans a page), then frees each
with its page locked. In a `release` round the pool must then drop to zero
pages once the pages are unlocked; in a `destroy` round the pool is
destroyed while the releases are still pending, which must wait for them
(KASAN on the debug kernel sees a pool freed under its worker). All the
while the kernel's compaction migrates the zspages' other pages, so the
worker meets migration too. The kernel's nr_zspages (summed over the zones;
both allocators keep it) must come back to its value before the scenario.
"""

from __future__ import annotations

import errno

from ...guest.zstest import BatchResult
from ...model import PoolModel
from . import page_ends
from .base import Context, Outcome, Params, Scenario, register
from .free_storm import NEVER_RAN, compacting
from .settle import SETTLE_SECONDS, pool_pages, settled
from .zone_migration import zone_zspages

POOL = "sc-defer"
BASE = 6_000_000
UNLOCK_MS = {"release": 5, "destroy": 100}  # destroy: long enough to be still pending
NOT_MOVABLE = "not movable"


def nr_zspages(ctx: Context) -> int:
    return sum(zone_zspages(ctx.guest).values())


def fill(pool: str, sizes: list[int], first: int) -> list[str]:
    """A fresh pool with one object, written and verified, alone in a zspage of each size's
    class."""
    lines = [f"create {pool}"]
    for oid, size in enumerate(sizes, first):
        lines += [f"alloc {oid} {size}", f"write {oid} {oid}", f"verify {oid} {oid}"]
    return lines


def locked_frees(result: BatchResult) -> tuple[int, int, str | None]:
    """(frees taken with the page locked, frees refused because migration held the page,
    the first thing that did not hold)."""
    busy = [f for f in result.failures if f.verb == "lockfree" and f.errno == -errno.EBUSY]
    if len(busy) < len(result.failures):
        f = next(f for f in result.failures if f not in busy)
        if f.errno == -errno.EOPNOTSUPP:
            return 0, len(busy), NOT_MOVABLE
        return 0, len(busy), f"line {f.line} {f.verb}: {f.reason} (errno {f.errno})"
    taken = [value for key, value in result.values if key == "lockfree"]
    for value in taken:
        before, after = (int(n) for n in value.split(":"))
        if after != before:
            return (
                len(taken),
                len(busy),
                (
                    f"the pool went from {before} to {after} pages in a free whose zspage had "
                    "its page locked: a zspage was released under its page lock"
                ),
            )
    return len(taken), len(busy), None


def run(ctx: Context, params: Params) -> Outcome:
    pol = ctx.policy or ctx.api.upstream_policy()
    sizes = [largest for _, largest in sorted(page_ends.size_ranges(PoolModel(pol)).values())]
    rounds = max(2 * params.repeat, -(-params.operations // len(sizes)))
    counts: dict[str, object] = {"cpus": params.cpus, "rounds": rounds, "classes": len(sizes)}
    locked = busy = 0
    vm_before = nr_zspages(ctx)
    with compacting(ctx, counts):
        for n in range(rounds):
            kind = "destroy" if n % 2 else "release"
            pool, first = f"{POOL}-{n}", BASE + n * len(sizes)
            made = ctx.zstest.batch(fill(pool, sizes, first))
            if made.failures:
                f = made.failures[0]
                return Outcome(f"line {f.line} {f.verb}: {f.reason}", "data", counts)
            ids = range(first, first + len(sizes))
            frees = [f"lockfree {oid} {UNLOCK_MS[kind]}" for oid in ids]
            # destroy: in the same batch, so the releases are still waiting for their pages.
            tail = [f"destroy {pool}"] if kind == "destroy" else ["reset"]
            took, refused, broken = locked_frees(
                ctx.zstest.batch([*frees, *tail], timeout=params.seconds + 60)
            )
            locked, busy = locked + took, busy + refused
            if broken == NOT_MOVABLE:
                # No migration ever locks such a page: the allocator defers nothing.
                ctx.zstest.batch([f"destroy {pool}"])
                counts["skipped"] = "the allocator's pages are not movable: nothing to defer"
                return Outcome(None, counts=counts)
            if broken is not None:
                return Outcome(broken, "lockfree", counts)
            if kind == "destroy":
                continue
            pages = settled(0, lambda: pool_pages(ctx.zstest))
            if pages:
                text = (
                    f"{pages} pages left in the pool {SETTLE_SECONDS:.0f} s after every object "
                    "was freed and its page unlocked: a deferred zspage release never ran"
                )
                return Outcome(text, "leak", counts)
            ctx.zstest.batch([f"destroy {pool}"])
    counts.update(locked_frees=locked, busy=busy)
    vm_after = settled(vm_before, lambda: nr_zspages(ctx))
    if vm_after != vm_before:
        text = f"nr_zspages (all zones) is {vm_after} after the scenario, {vm_before} before it"
        return Outcome(text, "leak", counts)
    if not locked:
        text = "no free was taken with its page locked: the scenario tested nothing"
        return Outcome(text, "scenario", counts)
    if not counts.get("kernel_compactions"):
        return Outcome(NEVER_RAN, "scenario", counts)
    return Outcome(None, counts=counts)


SCENARIO = register(
    Scenario(
        name="deferred-free",
        kind="deferred-free",
        summary="frees that empty a zspage with its page locked (zstest lockfree), released "
        "by zsmalloc's deferred worker or waited for by zs_destroy_pool, while the kernel's "
        "compaction migrates the pool's pages",
        run=run,
        operations=400,
        seconds=30,
        unit="locked frees",
        needs={"COMPACTION": "y", "PROC_SYSCTL": "y"},
    )
)
