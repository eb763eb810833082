"""Map vs compact: objects in almost-empty zspages mapped on one CPU, compacted on another.

zstest's `mapcompact` verb runs it in the guest: worker threads bound to the
first CPUs keep rewriting and verifying the survivors of zspages they
emptied to one object in eight, through every write and read path of the
kernel's API, while a thread bound to the last CPU runs zs_compact without
pause. Every verify inside the guest must hold; afterwards the survivors
settle (settle.py).
"""

from __future__ import annotations

from ...model import PoolModel
from .base import Context, Outcome, Params, Scenario, register
from .settle import settle, survivors

POOL = "sc-mapc"
BASE = 2_000_000
SEED = 0x6D6170  # fixed: a passing input passes every time


def run(ctx: Context, params: Params) -> Outcome:
    pol = ctx.policy or ctx.api.upstream_policy()
    classes = ctx.config("ZSMALLOC_STAT") == "y"
    threads = max(1, params.cpus - 1)  # the compactor has the last CPU to itself
    counts: dict[str, object] = {"cpus": params.cpus, "threads": threads, "rounds": 0}
    ops = compactions = 0
    for round_no in range(params.repeat):
        pool = f"{POOL}{round_no}"
        line = f"mapcompact {params.seconds} {threads} {SEED + round_no} {BASE} {params.operations}"
        result = ctx.zstest.batch([f"create {pool}", line], timeout=params.seconds + 60)
        if result.failures:
            f = result.failures[0]
            return Outcome(f"`{line}` failed: {f.reason} (errno {f.errno})", "command", counts)
        values = dict(result.values)
        cpus = int(values["mapcompact_cpus"])
        if cpus != params.cpus:
            return Outcome(f"the driver saw {cpus} CPUs, the run asked {params.cpus}", "cpus")
        ops += int(values["stress_ops"])
        compactions += int(values["stress_compactions"])
        counts.update(operations=ops, compactions=compactions, rounds=round_no + 1)
        if int(values["stress_failures"]):
            return Outcome(
                f"{values['stress_failures']} of {values['stress_ops']} map/verify steps "
                "failed in the guest while compaction ran (data or allocation)",
                "data",
                counts,
            )
        unsettled = settle(ctx.zstest, pool, survivors(result), PoolModel(pol), classes, counts)
        if unsettled is not None:
            return unsettled
        ctx.zstest.batch([f"destroy {pool}"])
    if compactions == 0:
        return Outcome("the compactor never ran: the scenario tested nothing", "scenario", counts)
    return Outcome(None, counts=counts)


SCENARIO = register(
    Scenario(
        name="map-vs-compact",
        kind="map-vs-compact",
        summary="objects of almost-empty zspages mapped, rewritten and verified on some CPUs "
        "while another compacts (zstest mapcompact)",
        run=run,
        operations=200_000,
        seconds=20,
    )
)
