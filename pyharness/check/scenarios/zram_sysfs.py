"""zram's sysfs attributes raced: one CPU rewrites backing_dev while the others read it.

zram's attribute callbacks take zram->init_lock; a show that reads device
state before taking it (the 2019 backing_dev_show bug) races the store that
replaces that state under the lock, and may follow a pointer the store has
just released. zram.ko (the one built with a series that changes it, else
the kernel's; on the allocator under test) and the kernel's ramdisk brd.ko
are loaded; the guest program zskit-sysfs
(guest/programs/sysfs.c) then binds a writer to CPU 0, which sets
backing_dev to /dev/ram0 and /dev/ram1 in turn, and a reader to every other
CPU, which reads it back without pause. A KCSAN report (the kcsan variant)
or a KASAN one fails the run through triage; the scenario itself checks
that every store took, that every show printed a device a store set (or
"none"), and that zram resets and unloads afterwards.
"""

from __future__ import annotations

import re

from ...guest import programs
from ...guest.clients import zram_module
from ...guest.initramfs import KERNEL_BRD
from ...guest.modules import ModuleError, load_modules, unload_modules
from .base import Context, Outcome, Params, Scenario, register

RACER = programs.guest_path("sysfs")
SYS = "/sys/block/zram0"
VALUES = ("/dev/ram0", "/dev/ram1")  # brd's two ramdisks on the kcsan kernel


def parse(output: str) -> tuple[dict[str, int], str | None]:
    """The program's counts (cpus, writes, failed, reads, odd: readers summed) and its
    failure, or "no sysfs-ok line" when it printed no verdict."""
    counts = {"cpus": 0, "writes": 0, "failed": 0, "reads": 0, "odd": 0}
    for line in output.splitlines():
        if m := re.fullmatch(r"sysfs cpus (\d+)", line.strip()):
            counts["cpus"] = int(m[1])
        elif m := re.fullmatch(r"sysfs writes (\d+) failed (\d+)", line.strip()):
            counts.update(writes=int(m[1]), failed=int(m[2]))
        elif m := re.fullmatch(r"sysfs reads (\d+) odd (\d+)", line.strip()):
            counts["reads"] += int(m[1])
            counts["odd"] += int(m[2])
        elif line.startswith("sysfs-fail: "):
            return counts, line.removeprefix("sysfs-fail: ")
    if "sysfs-ok" not in output.split():
        return counts, "no sysfs-ok line"
    return counts, None


def run(ctx: Context, params: Params) -> Outcome:
    if params.cpus < 2:
        return Outcome("zram-sysfs-race needs 2 CPUs: one writes, the others read", "scenario")
    zram = zram_module(ctx.guest)
    rc, _ = ctx.guest.run_status(f"test -x {RACER} && test -e {KERNEL_BRD}")
    if rc != 0 or zram is None:
        text = (
            f"the guest image lacks {RACER}, a zram.ko or the kernel's brd.ko ({KERNEL_BRD}): "
            "the kernel has no zram or ramdisk module"
        )
        return Outcome(text, "scenario")
    modules = [KERNEL_BRD, zram]
    try:
        load_modules(ctx.guest, modules)  # on a kcsan kernel: zram's races report too
    except ModuleError as e:
        unload_modules(ctx.guest, modules, check=False)
        return Outcome(f"loading zram: {e}", "command")
    command = f"{RACER} {SYS}/backing_dev {params.seconds} {params.operations} {' '.join(VALUES)}"
    counts: dict[str, int] = {}
    failure, rc = None, 0
    for _ in range(params.repeat):
        rc, output = ctx.guest.run_status(f"{command} 2>&1", timeout=params.seconds + 60)
        got, failure = parse(output)
        counts = {k: v if k == "cpus" else counts.get(k, 0) + v for k, v in got.items()}
        if failure is not None or rc != 0:
            break
    out: dict[str, object] = {**counts, "cpus": counts.get("cpus") or params.cpus}
    after = ctx.guest.run(f"cat {SYS}/backing_dev; echo 1 > {SYS}/reset; echo reset")
    try:
        unload_modules(ctx.guest, modules)
    except ModuleError as e:
        return Outcome(f"zram did not unload after the race: {e}", "command", out)
    if failure is not None or rc != 0:
        return Outcome(f"zskit-sysfs: {failure or f'exited {rc}'}", "command", out)
    if counts["odd"]:
        text = f"{counts['odd']} reads of backing_dev printed a device no store had set"
        return Outcome(text, "data", out)
    if counts["failed"]:
        text = f"{counts['failed']} of {counts['writes']} stores to backing_dev failed"
        return Outcome(text, "command", out)
    last = (after.split() or [""])[0]
    if last not in VALUES:
        return Outcome(f"backing_dev reads {last!r} after the race", "data", out)
    if not counts["writes"] or not counts["reads"]:
        return Outcome("no store or no show ran: the scenario tested nothing", "scenario", out)
    return Outcome(None, counts=out)


SCENARIO = register(
    Scenario(
        name="zram-sysfs-race",
        kind="zram-sysfs",
        summary="zram's backing_dev rewritten on one CPU while the others read it "
        "(zskit-sysfs), on the kernel's zram.ko and ramdisk",
        run=run,
        operations=20_000,
        seconds=30,
        unit="stores",
        needs={"ZRAM": "m", "ZRAM_WRITEBACK": "y", "BLK_DEV_RAM": "m"},
        max_operations=10_000_000,
    )
)
