"""Fault injection aimed at the allocator's task: failed allocations fail cleanly, leak nothing.

failslab and fail_page_alloc are set up through their debugfs files to fail
every INTERVAL-th allocation of tasks marked make-it-fail (task-filter), and
zstest's `faults 1` marks the task that writes the batch for the rest of it
(set from inside the driver: marking the shell's task instead made its own
open() and exec() fail before the batch reached the driver).
fail_page_alloc's defaults would skip exactly zsmalloc's allocations
(min-order=1 skips order 0, ignore-gfp-wait skips GFP_KERNEL), so both are
cleared. Within the window each round creates and destroys pools (creation
failing part way) and allocates and writes objects of every size: each
command either succeeds or fails with ENOMEM (ENOENT for a write whose
alloc failed), nothing else. Outside the window every object that was
allocated verifies, everything is freed, the pool returns to zero pages and
to all-zero class counters. (Not kmemleak: its own allocations fail in the
window too, and it then disables itself.)
"""

from __future__ import annotations

import errno
import random

from ...guest.zstest import BatchResult
from .base import Context, Outcome, Params, Scenario, register

POOL = "sc-fault"
BASE = 4_000_000
INJECTORS = ("failslab", "fail_page_alloc")
DEBUGFS = "/sys/kernel/debug"


def setup_commands(interval: int) -> list[str]:
    lines = []
    for name in INJECTORS:
        d = f"{DEBUGFS}/{name}"
        lines += [
            f"echo Y > {d}/task-filter",
            f"echo 100 > {d}/probability",
            f"echo {interval} > {d}/interval",
            f"echo -1 > {d}/times",
            f"echo 0 > {d}/space",
            f"echo 0 > {d}/verbose",
            f"echo N > {d}/ignore-gfp-wait",
        ]
    lines += [f"echo 0 > {DEBUGFS}/fail_page_alloc/min-order"]
    return lines


def allowed(line: str, err: int, failed_allocs: set[int]) -> bool:
    verb, *args = line.split()
    if err == -errno.ENOMEM:
        return verb in ("create", "alloc", "write")
    if err == -errno.ENOENT and verb in ("write", "destroy"):
        return int(args[0]) in failed_allocs if verb == "write" else True
    return False


def window(rng: random.Random, first: int, count: int, pools: int) -> list[str]:
    lines = []
    for n in range(pools):
        lines += [f"create {POOL}-p{n}", f"destroy {POOL}-p{n}"]
    lines.append(f"use {POOL}")
    for oid in range(first, first + count):
        size = rng.randint(1, 4096)
        lines += [f"alloc {oid} {size}", f"write {oid} {oid}"]
    return lines


def check_window(lines: list[str], result: BatchResult) -> tuple[str | None, set[int], int]:
    """(failure, ids whose alloc failed, injected failures seen) of a batch in the window."""
    failed_allocs: set[int] = set()
    injected = 0
    for f in result.failures:
        line = lines[f.line - 1]
        verb, *args = line.split()
        if verb == "alloc" and f.errno == -errno.ENOMEM:
            failed_allocs.add(int(args[0]))
        if not allowed(line, f.errno, failed_allocs):
            return f"line {f.line} `{line}` failed with errno {f.errno}: {f.reason}", set(), 0
        injected += f.errno == -errno.ENOMEM
    return None, failed_allocs, injected


def run(ctx: Context, params: Params) -> Outcome:
    classes = ctx.config("ZSMALLOC_STAT") == "y"
    counts: dict[str, object] = {"cpus": 1, "injected": 0, "allocated": 0}
    ctx.guest.run("; ".join(setup_commands(interval=7)))
    ctx.zstest.batch([f"create {POOL}"])
    rng = random.Random(0x4641554C)  # fixed: a passing input passes every time
    per_round = max(1, params.operations // (2 * params.repeat))
    first = BASE
    live: list[int] = []
    for _ in range(params.repeat):
        lines = ["faults 1", *window(rng, first, per_round, pools=8), "faults 0"]
        first += per_round
        result = ctx.zstest.batch(lines, timeout=params.seconds + 60)
        failure, failed, injected = check_window(lines, result)
        if failure is not None:
            return Outcome(failure, "errno", counts)
        ids = [int(ln.split()[1]) for ln in lines if ln.startswith("alloc ")]
        live += [oid for oid in ids if oid not in failed]
        counts["injected"] = int(str(counts["injected"])) + injected
    counts["allocated"] = len(live)
    if not counts["injected"]:
        return Outcome("no allocation failed: the fault window injected nothing", "scenario")
    check = ctx.zstest.batch([f"verify {oid} {oid}" for oid in live] + ["reset", "stats"])
    if check.failures:
        f = check.failures[0]
        return Outcome(f"after the window: line {f.line}: {f.reason}", "data", counts)
    if int(check.value("pages")):
        return Outcome(f"{check.value('pages')} pages left after every object was freed", "leak")
    if classes:
        busy = [r for r in ctx.zstest.classes(POOL) if r.obj_allocated or r.obj_used]
        if busy:
            r = busy[0]
            return Outcome(
                f"class {r.index} still counts {r.obj_allocated} allocated, {r.obj_used} used "
                "objects after every object was freed",
                "leak",
                counts,
            )
    ctx.zstest.batch([f"destroy {POOL}"])
    return Outcome(None, counts=counts)


SCENARIO = register(
    Scenario(
        name="fault",
        kind="fault",
        summary="every 7th slab and page allocation of the allocator's task fails (failslab, "
        "fail_page_alloc): clean ENOMEM, and no page or object left after the frees",
        run=run,
        operations=4_000,
        seconds=30,
        needs={"FAILSLAB": "y", "FAIL_PAGE_ALLOC": "y", "FAULT_INJECTION_DEBUG_FS": "y"},
    )
)
