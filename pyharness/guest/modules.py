"""Kernel modules in the guest: loaded in order, unloaded in reverse, by one helper.

A module is named by its guest path (`/lib/modules/zskit/own/zsmalloc.ko`); rmmod
takes the module's name, which is the file's name without `.ko` (or `.ko.xz`)
and with `-` as `_`, as the kernel and kbuild spell it. A file renamed after it
was built (validate's `base-zsmalloc.ko`) keeps the name it was built with:
give that name (`zsmalloc`) to unload_modules instead of the path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath

from .qemu import Guest, GuestError

KCSAN_CONTROL = "/sys/kernel/debug/kcsan"
# Every function of the loaded modules (kallsyms tags them `[name]`) goes into
# KCSAN's report filter, which is then made an allow-list and turned on: the
# kcsan variant boots with KCSAN off, so only races in the code under test (the
# allocator, zstest, zram) report. A reloaded module gets its new addresses.
KCSAN_ARM = (
    'awk \'$4 ~ /^\\[/ && ($2 == "t" || $2 == "T") { print "!" $3 }\' /proc/kallsyms'
    f' | while read f; do echo "$f" > {KCSAN_CONTROL} 2>/dev/null; done;'
    f" echo whitelist > {KCSAN_CONTROL} && echo on > {KCSAN_CONTROL}"
)


def kcsan_counters(guest: Guest) -> dict[str, int]:
    """KCSAN's counters (setup_watchpoints, data_races, ...): how hard it looked."""
    text = guest.run(f"cat {KCSAN_CONTROL}")
    found = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {k.strip(): int(v) for k, v in found if v.strip().isdigit()}


class ModuleError(GuestError):
    """insmod or rmmod failed in the guest (kind "command"); `command` is the one that did."""

    def __init__(self, command: str, rc: int, output: str) -> None:
        # The text Guest.run gives any failed command (validate looks for "insmod" in it).
        super().__init__("command", f"guest command `{command}` exited {rc}:\n{output}")
        self.command = command
        self.output = output


def module_name(path: str) -> str:
    """The name rmmod takes for a module file (or a name, returned as is)."""
    return PurePosixPath(path).name.split(".ko")[0].replace("-", "_")


def load_modules(guest: Guest, paths: Sequence[str]) -> None:
    """insmod each path in order; the first that fails raises ModuleError.

    On a KCSAN kernel (BootSpec.kcsan) the loaded modules' functions are then the
    ones whose races KCSAN reports."""
    for path in paths:
        command = f"insmod {path}"
        rc, output = guest.run_status(command)
        if rc != 0:
            raise ModuleError(command, rc, output)
    if guest.spec.kcsan and paths:
        rc, output = guest.run_status(KCSAN_ARM)
        if rc != 0:
            raise ModuleError("arming KCSAN's report filter", rc, output)


RMMOD_WAIT = 10  # seconds a module that is still referenced gets to become free


def _rmmod_waiting(name: str) -> str:
    tries = RMMOD_WAIT * 5
    return (
        f"i=0; until rmmod {name} 2>/tmp/zskit-rmmod.err; do i=$((i + 1)); "
        f"if [ $i -ge {tries} ]; then cat /tmp/zskit-rmmod.err; lsmod; break; fi; "
        f"sleep 0.2; done; [ $i -lt {tries} ]"
    )


def unload_modules(guest: Guest, paths: Sequence[str], check: bool = True) -> None:
    """rmmod the modules of paths (or names) in reverse order: users before what they use.

    check=False is for cleaning up after a failure: every rmmod is tried, in one guest
    command, and what fails is ignored (the module may never have loaded)."""
    names = [module_name(p) for p in reversed(paths)]
    if not check:
        if names:
            guest.run_status("; ".join(f"rmmod {n} 2>/dev/null" for n in names) + "; true")
        return
    for name in names:
        command = f"rmmod {name}"
        rc, output = guest.run_status(command)
        if rc != 0 and "temporarily unavailable" in output:
            # A reference that deferred work still holds (zswap releases a pool's zpool
            # from a work item): tried again for RMMOD_WAIT s, then lsmod says who holds.
            rc, output = guest.run_status(_rmmod_waiting(name))
        if rc != 0:
            raise ModuleError(command, rc, output)
