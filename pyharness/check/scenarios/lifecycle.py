"""Pool lifecycle under page migration: pools filled in every class, then destroyed.

Each round creates a pool, fills every class of it (the smallest and the
largest size each class serves, merged classes included, twice over so that
classes hold more than one zspage), verifies every object, and destroys the
pool: in one round of two after freeing everything, in the other with the
objects still in it (zstest's `destroy` frees them, then zs_destroy_pool). All
the while free-storm's compact_memory loop keeps the kernel migrating the
pool's pages, so zspages empty while their pages are isolated and take
zsmalloc's deferred free, which zs_destroy_pool must wait for (the class of
bug that freed a pool under its pending work). The model checks every batch;
a use after free is KASAN's on the debug kernel.
"""

from __future__ import annotations

from ...model import PoolModel
from . import page_ends
from .base import Context, Outcome, Params, Scenario, register
from .free_storm import NEVER_RAN, compacting

POOL = "sc-life"
BASE = 5_000_000
COPIES = 2  # objects of each size in a round


def class_sizes(model: PoolModel) -> list[int]:
    """The smallest and largest request size of every class, huge ones included."""
    return sorted({s for pair in page_ends.size_ranges(model).values() for s in pair})


def batches(sizes: list[int], params: Params) -> list[list[str]]:
    """Rounds of create, fill, verify, (free,) destroy, within params.operations allocs."""
    per_round = len(sizes) * COPIES
    rounds = max(2 * params.repeat, params.operations // per_round)  # both kinds of destroy
    out = []
    oid = BASE
    for n in range(rounds):
        pool = f"{POOL}-{n}"
        ids = []
        lines = [f"create {pool}"]
        for size in sizes * COPIES:
            lines += [f"alloc {oid} {size}", f"write {oid} {oid & 0xFFFFFFFF}"]
            ids.append(oid)
            oid += 1
        lines += [f"verify {i} {i & 0xFFFFFFFF}" for i in ids]
        if n % 2 == 0:
            lines += [f"free {i}" for i in ids]
        lines += ["stats", f"destroy {pool}"]
        out.append(lines)
    return out


def run(ctx: Context, params: Params) -> Outcome:
    pol = ctx.policy or ctx.api.upstream_policy()
    plan = batches(class_sizes(PoolModel(pol)), params)
    counts: dict[str, object] = {
        "cpus": params.cpus,
        "pools": len(plan),
        "objects": sum(sum(line.startswith("alloc") for line in b) for b in plan),
    }
    with compacting(ctx, counts):
        failure = ctx.check(plan)
    if failure is not None:
        return Outcome(failure, "model", counts)
    if not counts.get("kernel_compactions"):
        return Outcome(NEVER_RAN, "scenario", counts)
    return Outcome(None, counts=counts)


SCENARIO = register(
    Scenario(
        name="pool-lifecycle",
        kind="pool-lifecycle",
        summary="pools filled in every class (merged and huge too) and destroyed, with or "
        "without freeing first, while the kernel's compaction migrates their pages",
        run=run,
        operations=2_000,
        seconds=60,
        needs={"COMPACTION": "y", "PROC_SYSCTL": "y"},
    )
)
