"""Free storms vs page migration: zspages emptied in bursts while the kernel migrates them.

A guest loop writes /proc/sys/vm/compact_memory without pause, so the
kernel's compaction keeps migrating the pool's (movable) pages through
zsmalloc's migration callbacks. Meanwhile each round fills the pool with
objects of every size, verifies them, and frees them all at once in one of
several orders (allocation order, reverse, every other then the rest), so
whole zspages empty while their pages may be under migration: those
batches go through the run's checker, since migration moves pages, not
objects. A `stress` step then frees concurrently on all CPUs, settled as
in settle.py. The loop's count of compactions is part of the result.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

from ...model import PoolModel
from .base import Context, Outcome, Params, Scenario, register
from .settle import settle, survivors

POOL = "sc-storm"
BASE = 3_000_000
FLAG = "/tmp/zskit-storm"
COMPACT_LOOP = (
    f"touch {FLAG}; (n=0; while [ -e {FLAG} ]; do echo 1 > /proc/sys/vm/compact_memory; "
    f"n=$((n+1)); done; echo $n > {FLAG}.n) >/dev/null 2>&1 &"
)
STOP_LOOP = f"rm -f {FLAG}; while [ ! -s {FLAG}.n ]; do sleep 0.1; done; cat {FLAG}.n"
ORDERS = ("forward", "reverse", "interleaved")
NEVER_RAN = "compact_memory never ran: the scenario tested nothing"


@contextmanager
def compacting(ctx: Context, counts: dict[str, object]) -> Iterator[None]:
    """compact_memory written without pause while the block runs; how often, in counts."""
    ctx.guest.run(COMPACT_LOOP)
    try:
        yield
    finally:
        if ctx.guest.child is not None:
            # The shell may add its job notice ("[1]+ Done ...") after the count.
            words = ctx.guest.run(STOP_LOOP).split()
            counts["kernel_compactions"] = int(words[0]) if words and words[0].isdigit() else 0


def storm(rng: random.Random, first: int, count: int, order: str) -> list[str]:
    """Allocate and write `count` objects of mixed sizes, verify them, free them all."""
    ids = list(range(first, first + count))
    lines = []
    for oid in ids:
        size = rng.randint(1, 512) if rng.random() < 0.6 else rng.randint(513, 4096)
        lines += [f"alloc {oid} {size}", f"write {oid} {oid}"]
    lines += [f"verify {oid} {oid}" for oid in ids]
    if order == "reverse":
        ids.reverse()
    elif order == "interleaved":
        ids = ids[::2] + ids[1::2]
    return [*lines, *(f"free {oid}" for oid in ids), "stats"]


def batches(params: Params) -> list[list[str]]:
    rng = random.Random(0x53544F52)  # fixed: a passing input passes every time
    per_round = max(1, params.operations // (3 * len(ORDERS) * params.repeat))
    out: list[list[str]] = [[f"create {POOL}"]]
    first = BASE
    for _ in range(params.repeat):
        for order in ORDERS:
            out.append(storm(rng, first, per_round, order))
            first += per_round
    return out


def run(ctx: Context, params: Params) -> Outcome:
    pol = ctx.policy or ctx.api.upstream_policy()
    classes = ctx.config("ZSMALLOC_STAT") == "y"
    counts: dict[str, object] = {"cpus": params.cpus}
    with compacting(ctx, counts):
        plan = batches(params)
        counts["commands"] = sum(len(b) for b in plan)
        failure = ctx.check(plan)
        if failure is not None:
            return Outcome(failure, "model", counts)
        pool = f"{POOL}-stress"
        line = f"stress {min(params.seconds, 60)} {params.cpus} 11 {BASE}"
        result = ctx.zstest.batch([f"create {pool}", line], timeout=params.seconds + 60)
        if result.failures:
            return Outcome(f"`{line}` failed: {result.failures[0].reason}", "command", counts)
        values = dict(result.values)
        counts.update(stress_ops=int(values["stress_ops"]))
        if int(values["stress_failures"]):
            return Outcome(f"{values['stress_failures']} stress steps failed", "data", counts)
        unsettled = settle(ctx.zstest, pool, survivors(result), PoolModel(pol), classes, counts)
        if unsettled is not None:
            return unsettled
        ctx.zstest.batch([f"destroy {pool}", f"destroy {POOL}"])
    if not counts.get("kernel_compactions"):
        return Outcome(NEVER_RAN, "scenario", counts)
    return Outcome(None, counts=counts)


SCENARIO = register(
    Scenario(
        name="free-storm",
        kind="free-storm",
        summary="zspages emptied in bursts (three free orders) and by concurrent stress while "
        "the kernel's compaction migrates the pool's pages",
        run=run,
        operations=3_000,
        seconds=5,
        needs={"COMPACTION": "y", "PROC_SYSCTL": "y"},
    )
)
