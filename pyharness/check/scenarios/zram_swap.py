"""zram as swap: processes dirty memory, push it to a zram swap device, read it back.

zram.ko (one built with a series that changes zram, else the kernel's own
in the guest image, see guest/initramfs.py) is loaded on the allocator
under test and made the guest's only swap (disksize, mkswap, swapon). The
guest program zskit-swapper (guest/programs/swapper.c) then forks two
processes per CPU, each bound to one; every round each fills its pages
with patterns of known compressibility (zero, text-like, partly random,
random), pushes them to swap with madvise(MADV_PAGEOUT), waits until all have (zram's mm_stat is
read then), reads everything back and compares. At the end all page out
once more and unmap at once, so the frees of their swap entries (zs_free)
race on every CPU: the pattern behind the 2026 zs_free lock-contention
work.

Checked: every page read back as written; pages were swapped out (VmSwap);
while they were, zram stored them (mm_stat: at least the pages in swap,
zsmalloc memory in use) and zsmalloc had a pool for the device; after
swapoff no page is left in zram (beyond frees zram itself missed, its
debug_stat's miss_free); after a reset mm_stat is zero and zsmalloc's pool
is gone, and zram unloads. Each repeat is a fresh device, hence a fresh
pool. The pressure scenario (pressure.py) shares this machinery.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from ...guest import programs
from ...guest.clients import parse_mm_stat, zram_module
from .base import Context, Outcome, Params, Scenario, register

PAGE = 4096
SWAPPER = programs.guest_path("swapper")
SYS = "/sys/block/zram0"
DEV = "/dev/zram0"
POOL_DEBUGFS = "/sys/kernel/debug/zsmalloc"  # <pool>/ of each pool, both allocators
ZRAM_POOL = "zram0"  # zram names its pool after its disk
OUTPUT = "/tmp/zskit-swapper.out"
PROCS_PER_CPU = 2
ROUNDS = 2  # of the program per repeat
SEED = 0x7377  # fixed: a passing input passes every time
KINDS = "1:5:2:2"  # zero : text : partly random : random pages
FIT = 0.6  # of the available memory: the pages are all resident before the pageout
# VmSwap is a process's swap-entry counter, which the kernel folds in from a per-task
# cache every 64 events (SPLIT_RSS_COUNTING): it may be off by that much per process.
RSS_LAG = 64


class ParseError(ValueError):
    """The program's output does not have the form swapper.c documents."""


@dataclass
class SwapperRun:
    """What zskit-swapper printed, parsed."""

    procs: int = 0
    pages: int = 0  # per process
    cpus: int = 0
    hog_mb: int = 0  # memory the parent locked
    reclaimed: dict[int, int] = field(default_factory=dict)  # round -> in swap before pageout
    swapped: dict[int, int] = field(default_factory=dict)  # round -> pages in swap
    verified: dict[int, int] = field(default_factory=dict)  # round -> pages compared
    mismatches: dict[int, int] = field(default_factory=dict)  # round -> pages that differ
    mismatch_lines: list[str] = field(default_factory=list)  # the first ones, as printed
    final_swapped: int | None = None
    mm_stat: dict[str, dict[str, int]] = field(default_factory=dict)  # moment -> fields
    unmap_us: int | None = None
    summary: dict[str, float] = field(default_factory=dict)  # the summary line's numbers
    ok: bool = False
    failure: str | None = None  # the program's swapper-fail text

    @property
    def rounds(self) -> int:
        return len(self.verified)


SUMMARY_KEYS = ("written", "verified", "mismatches", "swapped", "rounds", "seconds")


def parse_swapper(text: str) -> SwapperRun:
    """The program's output (lines of other origin, such as a shell's job notice, skipped)."""
    run = SwapperRun()
    for line in text.splitlines():
        line = line.strip()
        try:
            if m := re.fullmatch(r"swapper procs (\d+) pages (\d+) cpus (\d+) .*", line):
                run.procs, run.pages, run.cpus = int(m[1]), int(m[2]), int(m[3])
            elif m := re.fullmatch(r"swapper hog (\d+)", line):
                run.hog_mb = int(m[1])
            elif m := re.fullmatch(r"swapper round (\d+) reclaimed (-?\d+)", line):
                run.reclaimed[int(m[1])] = int(m[2])
            elif m := re.fullmatch(r"swapper round (\d+) swapped (-?\d+)", line):
                run.swapped[int(m[1])] = int(m[2])
            elif m := re.fullmatch(r"swapper round (\d+) verified (\d+) mismatches (\d+)", line):
                run.verified[int(m[1])] = int(m[2])
                run.mismatches[int(m[1])] = int(m[3])
            elif line.startswith("swapper mismatch "):
                run.mismatch_lines.append(line.removeprefix("swapper "))
            elif m := re.fullmatch(r"swapper final swapped (-?\d+)", line):
                run.final_swapped = int(m[1])
            elif m := re.fullmatch(r"mm_stat (\S+) (.*)", line):
                run.mm_stat[m[1]] = parse_mm_stat(m[2])
            elif m := re.fullmatch(r"swapper unmap_us (\d+)", line):
                run.unmap_us = int(m[1])
            elif line.startswith("swapper summary "):
                words = line.split()[2:]
                pairs = dict(zip(words[::2], words[1::2], strict=False))
                if set(pairs) != set(SUMMARY_KEYS):
                    raise ParseError(f"the summary line has {sorted(pairs)}")
                run.summary = {k: float(v) for k, v in pairs.items()}
            elif line == "swapper-ok":
                run.ok = True
            elif line.startswith("swapper-fail: "):
                run.failure = line.removeprefix("swapper-fail: ")
        except ValueError as e:  # int(), float(), parse_mm_stat
            raise ParseError(f"cannot parse `{line}`: {e}") from e
    if run.ok and not run.summary:
        raise ParseError("swapper-ok without a summary line")
    return run


def stored_pages(stat: dict[str, int]) -> int:
    """Pages zram holds (same-filled ones too, though zsmalloc never sees those)."""
    return stat["orig_data_size"] // PAGE


def check_swapper(run: SwapperRun, rc: int, strict: bool) -> tuple[str | None, str]:
    """(failure, kind) of a finished program: data, crash, accounting, nothing swapped.

    strict: every round's mm_stat holds at least the pages the processes have in swap, up
    to VmSwap's lag (under memory pressure, reclaim may have pages unmapped and not yet
    written)."""
    bad = sum(run.mismatches.values())
    if bad:
        where = "; ".join(run.mismatch_lines[:3])
        text = f"{bad} pages read back from zram swap differ from what was written ({where})"
        return text, "data"
    if run.failure is not None or rc != 0 or not run.ok:
        what = run.failure or f"exited {rc} without a verdict"
        kind = "crash" if "signal" in what else "command"
        return f"zskit-swapper: {what}", kind
    if sum(run.swapped.values()) <= 0:
        return "no page was swapped out (VmSwap stayed 0): the scenario tested nothing", "scenario"
    for round_no, swapped in sorted(run.swapped.items()):
        stat = run.mm_stat.get(f"round-{round_no}")
        if stat is None:
            return f"no mm_stat of round {round_no}", "protocol"
        stored = stored_pages(stat)
        if stored <= 0 or (stored > stat["same_pages"] and stat["mem_used_total"] <= 0):
            return (
                f"round {round_no}: {swapped} pages in swap, but zram's mm_stat says "
                f"{stored} pages stored in {stat['mem_used_total']} bytes of zsmalloc",
                "accounting",
            )
        if strict and stored < swapped - RSS_LAG * run.procs:
            return (
                f"round {round_no}: the processes have {swapped} pages in swap, zram "
                f"stores {stored}",
                "accounting",
            )
    return None, ""


# --- the device -----------------------------------------------------------------------


def setup_command(disksize: int, zram: str) -> str:
    return (
        f"insmod {zram} && echo {disksize} > {SYS}/disksize && "
        f"mkswap {DEV} >/dev/null && swapon {DEV} && grep -q '^{DEV} ' /proc/swaps"
    )


CLEANUP = (
    f"swapoff {DEV} 2>/dev/null; echo 1 > {SYS}/reset 2>/dev/null; rmmod zram 2>/dev/null; true"
)


def swap_on(ctx: Context, disksize: int) -> str | dict[str, int]:
    """zram0 as the guest's swap: its mm_stat then (mkswap wrote a header), or why not."""
    zram = zram_module(ctx.guest)
    rc, out = ctx.guest.run_status(f"test -x {SWAPPER}")
    if rc != 0 or zram is None:
        return (
            f"the guest image lacks {SWAPPER} or a zram.ko: the kernel's modules are not "
            "unpacked, or zram is not a module of it"
        )
    rc, out = ctx.guest.run_status(setup_command(disksize, zram))
    if rc != 0:
        ctx.guest.run_status(CLEANUP)
        return f"setting up zram swap failed (exit {rc}): {out[-2000:]}"
    return mm_stat(ctx)


def mm_stat(ctx: Context) -> dict[str, int]:
    return parse_mm_stat(ctx.guest.run(f"cat {SYS}/mm_stat"))


def miss_free(debug_stat: str) -> int:
    """zram's frees missed on a contended slot lock (debug_stat's second number)."""
    lines = debug_stat.strip().splitlines()
    numbers = lines[-1].split() if lines else []
    if not lines or not lines[0].startswith("version:") or len(numbers) < 2:
        raise ParseError(f"unexpected debug_stat {debug_stat!r}")
    return int(numbers[1])


def check_end_state(
    before: dict[str, int], after_swapoff: dict[str, int], missed: int, after_reset: dict[str, int]
) -> str | None:
    """After swapoff: no page left but those stored before the swap was used (mkswap's
    header) and those whose free zram missed; after reset: zeros."""
    stored, header = stored_pages(after_swapoff), stored_pages(before)
    if stored > header + missed:
        return (
            f"after swapoff zram still stores {stored} pages ({after_swapoff['mem_used_total']} "
            f"bytes of zsmalloc) with no swap entry left ({header} before swapon, {missed} "
            "frees missed)"
        )
    left = {k: after_reset[k] for k in ("orig_data_size", "compr_data_size", "mem_used_total")}
    if any(left.values()):
        return f"after the reset zram's mm_stat is not zero: {left}"
    return None


def swap_off(
    ctx: Context, before: dict[str, int], stats_dir: bool
) -> tuple[str | None, dict[str, object]]:
    """swapoff, the end state checked, reset, zsmalloc's pool gone, zram unloaded."""
    counts: dict[str, object] = {}
    try:
        if stats_dir and ctx.guest.run_status(f"test -d {POOL_DEBUGFS}/{ZRAM_POOL}")[0]:
            return f"zsmalloc has no pool {ZRAM_POOL} in {POOL_DEBUGFS} while zram is in use", {}
        ctx.guest.run(f"swapoff {DEV}", timeout=300)
        after_swapoff = mm_stat(ctx)
        missed = miss_free(ctx.guest.run(f"cat {SYS}/debug_stat"))
        counts.update(compacted=after_swapoff["pages_compacted"], miss_free=missed)
        ctx.guest.run(f"echo 1 > {SYS}/reset")
        failure = check_end_state(before, after_swapoff, missed, mm_stat(ctx))
        if failure is not None:
            return failure, counts
        if stats_dir and ctx.guest.run_status(f"test -e {POOL_DEBUGFS}/{ZRAM_POOL}")[0] == 0:
            return f"zsmalloc's pool {ZRAM_POOL} outlived zram's reset (still in debugfs)", counts
        rc, out = ctx.guest.run_status("rmmod zram")
        if rc != 0:
            return f"rmmod zram failed after the reset: {out}", counts
        return None, counts
    finally:
        if ctx.guest.child is not None:
            ctx.guest.run_status(CLEANUP)


def swapper_command(
    procs: int,
    pages: int,
    rounds: int,
    cpus: int,
    seconds: int,
    kinds: str,
    seed: int = SEED,
    hog_mb: int = 0,
) -> str:
    hog = f" -H {hog_mb}" if hog_mb else ""
    return (
        f"{SWAPPER} -p {procs} -n {pages} -r {rounds} -c {cpus} -t {seconds} -s {seed} "
        f"-k {kinds} -m {SYS}/mm_stat{hog}"
    )


def mem_available(ctx: Context) -> int:
    """The guest's MemAvailable, in bytes."""
    return int(ctx.guest.run("awk '/^MemAvailable:/ {print $2}' /proc/meminfo").strip()) * 1024


def accumulate(counts: dict[str, object], run: SwapperRun) -> None:
    def add(key: str, value: float) -> None:
        old = counts.get(key, 0)
        counts[key] = (old if isinstance(old, int | float) else 0) + value

    add("rounds", run.rounds)
    add("pages_written", int(run.summary.get("written", 0)))
    add("pages_verified", int(run.summary.get("verified", 0)))
    add("pages_swapped", int(run.summary.get("swapped", 0)))
    add("pages_reclaimed", sum(run.reclaimed.values()))
    add("program_seconds", round(run.summary.get("seconds", 0.0), 3))
    stored = [stored_pages(s) for s in run.mm_stat.values()]
    counts["max_stored"] = max([int(str(counts.get("max_stored", 0))), *stored])
    if run.unmap_us is not None:
        counts["unmap_ms"] = round(run.unmap_us / 1000, 1)


def run_session(
    ctx: Context,
    command: str,
    disksize: int,
    timeout: float,
    strict: bool,
    during: Callable[[], str | None] | None = None,
) -> tuple[Outcome | None, SwapperRun | None, dict[str, object]]:
    """One device's life: swap on, the program (with `during` run meanwhile, the program
    then in the background), checks, swap off. (failure or None, the run, counts)."""
    stats_dir = ctx.config("ZSMALLOC_STAT") == "y"
    before = swap_on(ctx, disksize)
    if isinstance(before, str):
        return Outcome(before, "command"), None, {}
    try:
        if during is None:
            rc, out = ctx.guest.run_status(f"{command} 2>&1", timeout=timeout)
        else:
            ctx.guest.run(f"{command} > {OUTPUT} 2>&1 & echo $! > {OUTPUT}.pid")
            failure = during()
            # The shell may add its job notice after the output.
            rc, _ = ctx.guest.run_status(f"wait $(cat {OUTPUT}.pid)", timeout=timeout)
            out = ctx.guest.run(f"cat {OUTPUT}")
            if failure is not None:
                return Outcome(failure, "data"), None, {}
        try:
            run = parse_swapper(out)
        except ParseError as e:
            return Outcome(f"zskit-swapper's output: {e}", "protocol"), None, {}
        failure, kind = check_swapper(run, rc, strict)
        if failure is not None:
            return Outcome(failure, kind), run, {}
        failure, counts = swap_off(ctx, before, stats_dir)
        if failure is not None:
            return Outcome(failure, "leak"), run, counts
        return None, run, counts
    finally:
        if ctx.guest.child is not None:
            ctx.guest.run_status(CLEANUP)


def run(ctx: Context, params: Params) -> Outcome:
    procs = PROCS_PER_CPU * params.cpus
    per_proc = max(1, params.operations // procs)
    total = per_proc * procs
    counts: dict[str, object] = {"cpus": params.cpus, "processes": procs, "pages": total}
    available = mem_available(ctx)
    if total * PAGE > FIT * available:
        return Outcome(
            f"{total} pages ({total * PAGE >> 20} MiB) do not fit in {FIT:.0%} of the guest's "
            f"available memory ({available >> 20} MiB of {ctx.guest.spec.memory_mb} MiB): ask "
            "for fewer pages (--scenario-ops) or a larger guest (QEMU_MEMORY_MB); the pressure "
            "scenario is the one that overfills memory",
            "params",
            counts,
        )
    command = swapper_command(procs, per_proc, ROUNDS, params.cpus, params.seconds, KINDS)
    disksize = max(16 << 20, 2 * total * PAGE)
    for _ in range(params.repeat):
        outcome, swapper, more = run_session(
            ctx, command, disksize, timeout=params.seconds * ROUNDS + 300, strict=True
        )
        if swapper is not None:
            accumulate(counts, swapper)
        counts.update(more)
        if outcome is not None:
            outcome.counts = {**counts, **outcome.counts}
            return outcome
    return Outcome(None, counts=counts)


SCENARIO = register(
    Scenario(
        name="zram-swap",
        kind="zram-swap",
        summary="two processes per CPU dirty memory, push it to zram swap (MADV_PAGEOUT), read "
        "it back and compare, then all unmap at once (zskit-swapper); mm_stat checked, zero "
        "at the end",
        run=run,
        operations=8192,
        seconds=30,
        unit="pages",
        needs={"SWAP": "y", "ADVISE_SYSCALLS": "y", "ZRAM": "m"},
        max_operations=4_000_000,
    )
)
