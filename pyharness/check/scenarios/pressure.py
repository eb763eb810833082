"""Shrinker vs allocation under memory pressure: the guest near its memory limit.

With zram as the guest's only swap (zram_swap.py), zskit-swapper's
processes dirty more memory than the guest has available (the operations
bound is that share, in percent: 130 by default), mostly compressible pages
so that swapping them to zram gains memory. Reclaim then runs without
pause, kswapd's and direct: it writes pages to zram, whose zsmalloc pool
grows while its pages are taken back, and it calls the pools' shrinkers
(zsmalloc's compacts the pool). Where the kernel has compaction, a guest
loop also asks for it (compact_memory) twice a second, so the pools' pages
migrate. Meanwhile zstest's `stress` allocates, writes, verifies and frees
on all CPUs on a pool of the run's allocator, with its own compactor.

Checked: every page the processes read back is what they wrote; the
stress threads' every verify held and their survivors settle (settle.py);
reclaim really ran (pages scanned, pages swapped out: /proc/vmstat) and the
OOM killer did not; afterwards zram's end state as for zram-swap (nothing
left after swapoff, zero after reset, the pool gone, zram unloaded).

Memory: the run's QEMU memory (QEMU_MEMORY_MB, 512 MiB by default); the
guest needs at least MIN_MEMORY_MB for this, and the scenario says so
rather than running on less.
"""

from __future__ import annotations

from ...model import PoolModel, policy
from .base import Context, Outcome, Params, Scenario, register
from .settle import settle, survivors
from .zram_swap import (
    PAGE,
    PROCS_PER_CPU,
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
MIN_AVAILABLE_MB = 96  # what must be left available once booted, zram set up
MIN_PERCENT = 105  # of the available memory, to be under pressure at all
FLAG = "/tmp/zskit-pressure"
COMPACT_LOOP = (
    f"touch {FLAG}; (while [ -e {FLAG} ]; do echo 1 > /proc/sys/vm/compact_memory; "
    "sleep 0.5; done) >/dev/null 2>&1 &"
)
STOP_LOOP = f"rm -f {FLAG}"
VMSTAT = (
    "pswpout",
    "pswpin",
    "pgscan_kswapd",
    "pgscan_direct",
    "allocstall_normal",
    "allocstall_dma32",
    "compact_stall",
    "compact_migrate_scanned",
    "oom_kill",
)
# Wait at most this long for the first page to go to swap before stress starts.
PRESSURE_WAIT = 300  # tenths of a second


def parse_vmstat(text: str) -> dict[str, int]:
    """/proc/vmstat's counters of VMSTAT (a kernel without one reads as 0)."""
    values = dict(line.split() for line in text.splitlines() if line.count(" ") == 1)
    return {k: int(values.get(k, 0)) for k in VMSTAT}


def vmstat(ctx: Context) -> dict[str, int]:
    return parse_vmstat(ctx.guest.run("cat /proc/vmstat"))


def refusal(memory_mb: int, percent: int) -> str | None:
    """Why the bounds cannot make pressure (before anything runs), or None."""
    if memory_mb < MIN_MEMORY_MB:
        return (
            f"the guest has {memory_mb} MiB (QEMU_MEMORY_MB); pressure needs at least "
            f"{MIN_MEMORY_MB} MiB, to be pressed near its limit and still run zram, the "
            "driver and the processes: raise QEMU_MEMORY_MB"
        )
    if percent < MIN_PERCENT:
        return (
            f"{percent}% of the available memory does not press on it: ask for at least "
            f"{MIN_PERCENT} (--scenario-ops is the percentage for this scenario)"
        )
    return None


def wait_for_swap(before: int) -> str:
    """A guest command: wait until pswpout has passed `before` (or PRESSURE_WAIT)."""
    return (
        f"n=0; while [ $(awk '/^pswpout /{{print $2}}' /proc/vmstat) -le {before} ] && "
        f"[ $n -lt {PRESSURE_WAIT} ]; do sleep 0.1; n=$((n+1)); done"
    )


def run(ctx: Context, params: Params) -> Outcome:
    percent = params.operations
    counts: dict[str, object] = {"cpus": params.cpus, "percent": percent}
    why = refusal(ctx.guest.spec.memory_mb, percent)
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
    pol = ctx.policy or policy(ctx.api.model_policy, chain_size=ctx.api.chain_size)
    classes = ctx.config("ZSMALLOC_STAT") == "y"
    compaction = ctx.config("COMPACTION") == "y" and ctx.config("PROC_SYSCTL") == "y"
    procs = PROCS_PER_CPU * params.cpus
    per_proc = available * percent // 100 // PAGE // procs
    counts.update(processes=procs, pages=per_proc * procs, available_mb=available >> 20)
    # Rounds begin until twice the deadline, so the processes press on memory for the
    # whole of stress's deadline, which starts once the first page went to swap.
    stress_seconds = min(params.seconds, 60)
    command = swapper_command(
        procs, per_proc, MAX_ROUNDS, params.cpus, 2 * params.seconds, KINDS, SEED
    )
    before = vmstat(ctx)
    stress: dict[str, object] = {}

    def during() -> str | None:
        """Under pressure: zstest's stress on the run's allocator, then settled."""
        ctx.guest.run(wait_for_swap(before["pswpout"]), timeout=PRESSURE_WAIT / 10 + 30)
        if compaction:
            ctx.guest.run(COMPACT_LOOP)
        try:
            line = f"stress {stress_seconds} {params.cpus} {SEED} {BASE}"
            result = ctx.zstest.batch([f"create {POOL}", line], timeout=stress_seconds + 240)
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
            failure = settle(ctx.zstest, POOL, survivors(result), PoolModel(pol), classes)
            if failure is not None:
                return f"after stress under pressure: {failure}"
            ctx.zstest.batch([f"destroy {POOL}"])
            return None
        finally:
            if compaction and ctx.guest.child is not None:
                ctx.guest.run(STOP_LOOP)

    disksize = max(64 << 20, per_proc * procs * PAGE)
    timeout = params.seconds + stress_seconds + 600  # a round always completes
    outcome, swapper, more = run_session(ctx, command, disksize, timeout, False, during)
    counts.update(stress)
    if swapper is not None:
        accumulate(counts, swapper)
    counts.update(more)
    if outcome is not None:
        outcome.counts = {**counts, **outcome.counts}
        return outcome
    after = vmstat(ctx)
    delta = {k: after[k] - before[k] for k in VMSTAT}
    counts.update(
        swapped_out=delta["pswpout"],
        swapped_in=delta["pswpin"],
        reclaim_scanned=delta["pgscan_kswapd"] + delta["pgscan_direct"],
        direct_reclaims=delta["allocstall_normal"] + delta["allocstall_dma32"],
        compact_stalls=delta["compact_stall"],
    )
    if delta["oom_kill"]:
        return Outcome(f"the OOM killer ran {delta['oom_kill']} times", "oom", counts)
    if not counts["reclaim_scanned"]:
        return Outcome(
            f"reclaim never scanned a page: {percent}% of the available memory made no "
            "pressure (raise --scenario-ops)",
            "scenario",
            counts,
        )
    return Outcome(None, counts=counts)


SCENARIO = register(
    Scenario(
        name="pressure",
        kind="pressure",
        summary="processes dirty more than the guest's available memory with zram as swap, so "
        "reclaim, zsmalloc's shrinker and compaction run while zstest's stress allocates",
        run=run,
        operations=130,
        seconds=20,
        unit="percent of available memory",
        needs={"SWAP": "y", "ADVISE_SYSCALLS": "y", "ZRAM": "m"},
        max_operations=300,
    )
)
