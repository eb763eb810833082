"""Shrinker vs allocation under memory pressure: the guest near its memory limit.

With zram as the guest's only swap (zram_swap.py), zskit-swapper locks a
hog of the guest's memory (-H), so that what is left is half of what its
processes then dirty (the operations bound, in pages; plus KASAN's
quarantine on a debug kernel): mostly compressible pages, so that
swapping them to zram gains memory. Reclaim
then runs while they fill, kswapd's and direct: it writes pages to zram,
whose zsmalloc pool grows while memory is short, and it calls the pools'
shrinkers (zsmalloc's compacts the pool). Where the kernel has compaction,
a guest loop also asks for it (compact_memory) twice a second, so the
pools' pages migrate. Meanwhile zstest's `stress` allocates, writes,
verifies and frees on all CPUs on a pool of the run's allocator, with its
own compactor, from the moment the first page went to swap.

Checked: every page the processes read back is what they wrote; reclaim
took pages while they filled (VmSwap before their own pageout: the
source-built kernels have no vmstat event counters); the stress threads'
every verify held and their survivors settle (settle.py); no process was
killed (the OOM killer); afterwards zram's end state as for zram-swap
(nothing left after swapoff, zero after reset, the pool gone, zram
unloaded).

Memory: the run's QEMU memory (QEMU_MEMORY_MB, 512 MiB by default); the
guest needs at least MIN_MEMORY_MB, and MIN_AVAILABLE_MB available once
booted with zram set up: the scenario says so rather than run on less.
"""

from __future__ import annotations

from ...model import PoolModel
from .base import Context, Outcome, Params, Scenario, register
from .settle import settle, survivors
from .zram_swap import (
    PAGE,
    PROCS_PER_CPU,
    SWAPPER,
    accumulate,
    mem_available,
    run_session,
    swapper_command,
)

POOL = "sc-press"
BASE = 5_000_000
SEED = 0x707273
KINDS = "2:7:1:0"  # zero : text : partly random : random: swapping to zram must gain memory
MAX_ROUNDS = 1000  # the deadline ends them
MIN_MEMORY_MB = 256  # the guest's memory at the least (a debug kernel's KASAN takes 1/8)
MIN_AVAILABLE_MB = 96  # what must be available once booted, zram set up
LEFT = 1 / 2  # of the processes' pages, what the hog leaves available
# KASAN's quarantine keeps freed memory up to 1/32 of the guest's (kasan/quarantine.c)
# and reclaim cannot take it back: on a KASAN kernel the hog leaves that much more, or
# the OOM killer ends the run (seen on 6.1 debug with two thirds and no allowance).
QUARANTINE = 32
FLAG = "/tmp/zskit-pressure"
COMPACT_LOOP = (
    f"touch {FLAG}; (while [ -e {FLAG} ]; do echo 1 > /proc/sys/vm/compact_memory; "
    "sleep 0.5; done) >/dev/null 2>&1 &"
)
STOP_LOOP = f"rm -f {FLAG}"
# Wait at most this long for the first page to go to swap before stress starts.
PRESSURE_WAIT = 600  # tenths of a second


def refusal(memory_mb: int) -> str | None:
    """Why a guest of this size cannot run the scenario, or None."""
    if memory_mb < MIN_MEMORY_MB:
        return (
            f"the guest has {memory_mb} MiB (QEMU_MEMORY_MB); pressure needs at least "
            f"{MIN_MEMORY_MB} MiB, to be pressed near its limit and still run zram, the "
            "driver and the processes: raise QEMU_MEMORY_MB"
        )
    return None


def hog_mb(available: int, pages: int, reserve: int = 0) -> int:
    """MiB to lock so that LEFT of the processes' pages (and `reserve` bytes) stay
    available (0: none needed)."""
    return max(0, int(available - reserve - pages * PAGE * LEFT) >> 20)


def wait_for_swap() -> str:
    """A guest command: wait until some page is in swap (or PRESSURE_WAIT passed)."""
    return (
        "n=0; while [ $(awk '/^SwapTotal:/ {t=$2} /^SwapFree:/ {f=$2} END {print t-f}' "
        f"/proc/meminfo) -eq 0 ] && [ $n -lt {PRESSURE_WAIT} ]; do sleep 0.1; n=$((n+1)); "
        f"done; pidof {SWAPPER.rsplit('/', 1)[-1]} >/dev/null"
    )


def run(ctx: Context, params: Params) -> Outcome:
    counts: dict[str, object] = {"cpus": params.cpus}
    why = refusal(ctx.guest.spec.memory_mb)
    if why is not None:
        return Outcome(why, "params", counts)
    available = mem_available(ctx)
    if available < MIN_AVAILABLE_MB << 20:
        return Outcome(
            f"only {available >> 20} MiB available in a guest of {ctx.guest.spec.memory_mb} "
            f"MiB; pressure needs {MIN_AVAILABLE_MB} MiB available: raise QEMU_MEMORY_MB",
            "params",
            counts,
        )
    pol = ctx.policy or ctx.api.upstream_policy()
    classes = ctx.config("ZSMALLOC_STAT") == "y"
    compaction = ctx.config("COMPACTION") == "y" and ctx.config("PROC_SYSCTL") == "y"
    procs = PROCS_PER_CPU * params.cpus
    per_proc = max(1, params.operations // procs)
    kasan = ctx.config("KASAN") == "y"
    reserve = (ctx.guest.spec.memory_mb << 20) // QUARANTINE if kasan else 0
    hog = hog_mb(available, per_proc * procs, reserve)
    counts.update(processes=procs, pages=per_proc * procs, available_mb=available >> 20, hog_mb=hog)
    # Rounds begin until twice the deadline, so the processes press on memory for the
    # whole of stress's deadline, which starts once the first page went to swap.
    stress_seconds = min(params.seconds, 60)
    command = swapper_command(
        procs, per_proc, MAX_ROUNDS, params.cpus, 2 * params.seconds, KINDS, SEED, hog
    )
    stress: dict[str, object] = {}

    def during() -> str | None:
        """Under pressure: zstest's stress on the run's allocator, then settled."""
        ctx.guest.run(wait_for_swap(), timeout=PRESSURE_WAIT / 10 + 60)
        if compaction:
            ctx.guest.run(COMPACT_LOOP)
        try:
            line = f"stress {stress_seconds} {params.cpus} {SEED} {BASE}"
            result = ctx.zstest.batch([f"create {POOL}", line], timeout=stress_seconds + 300)
            if result.failures:
                f = result.failures[0]
                return f"`{line}` failed under memory pressure: {f.reason} (errno {f.errno})"
            values = dict(result.values)
            stress.update(
                stress_ops=int(values["stress_ops"]),
                stress_compactions=int(values["stress_compactions"]),
            )
            if int(values["stress_failures"]):
                return (
                    f"{values['stress_failures']} of {values['stress_ops']} stress steps "
                    "failed under memory pressure (data or allocation)"
                )
            unsettled = settle(ctx.zstest, POOL, survivors(result), PoolModel(pol), classes, {})
            if unsettled is not None:
                return f"after stress under pressure: {unsettled.failure}"
            ctx.zstest.batch([f"destroy {POOL}"])
            return None
        finally:
            if compaction and ctx.guest.child is not None:
                ctx.guest.run(STOP_LOOP)

    disksize = max(64 << 20, 2 * per_proc * procs * PAGE)
    timeout = 2 * params.seconds + 600  # a round always completes
    outcome, swapper, more = run_session(ctx, command, disksize, timeout, False, during)
    counts.update(stress)
    if swapper is not None:
        accumulate(counts, swapper)
    counts.update(more)
    if outcome is not None:
        outcome.counts = {**counts, **outcome.counts}
        return outcome
    if not counts.get("pages_reclaimed"):
        return Outcome(
            "reclaim took no page while the processes filled memory: no pressure (ask for "
            "more pages with --scenario-ops)",
            "scenario",
            counts,
        )
    return Outcome(None, counts=counts)


SCENARIO = register(
    Scenario(
        name="pressure",
        kind="pressure",
        summary="a hog locks memory, processes dirty twice what is left with zram as "
        "swap, so reclaim, zsmalloc's shrinker and compaction run while zstest's stress "
        "allocates",
        run=run,
        operations=16384,
        seconds=20,
        unit="pages",
        needs={"SWAP": "y", "ADVISE_SYSCALLS": "y", "ZRAM": "m"},
        max_operations=4_000_000,
    )
)
