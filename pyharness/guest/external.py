"""An external test module in the guest: insmod under a deadline, its printk output, a verdict.

Such a module (the zsmalloc maintainer's zsmalloc_test and its kind) runs its whole test
in module_init and prints the results. The harness raises the console log level so every
message reaches the kernel console (a file QEMU writes, which survives a crash), writes a
start marker into the kernel log, runs insmod with the module's deadline, lets kthreads it
started print for a bounded settle time, unloads it, and writes an end marker. The module's
output is the kernel log between the markers. The verdict fails on an insmod that fails
(with its errno), a guest that crashes or hangs, and any kernel report in the log: the
triage's (oops, BUG, WARN, KASAN, panic...) including those that do not stop a kernel
(lockdep's, KCSAN's), and RCU stalls.
"""

from __future__ import annotations

import errno
import os
import re
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass

from .modules import module_name
from .qemu import Guest, GuestError
from .triage import EXCERPT_LINES, PATTERNS, TIMESTAMP, Crash, clean_lines

START = "zskit-module: start"
END = "zskit-module: end"

# Reports the crash triage leaves alone that fail a module's run too: an RCU stall (a CPU
# that held off RCU for the stall timeout, 21 s: the soft lockup's cousin) and lockdep's
# "INFO:" headers of older kernels.
REPORTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("rcu-stall", re.compile(r"^rcu: INFO: rcu_\w+ (detected|self-detected) stalls? ")),
    ("lockdep", re.compile(r"^INFO: possible (circular|recursive|irq lock inversion) ")),
)

# glibc's messages (busybox-static's insmod prints strerror) back to errno names.
_ERRNO_NAMES = {os.strerror(n): name for n, name in sorted(errno.errorcode.items(), reverse=True)}


@dataclass
class LoadOutcome:
    """What happened to one external module in the guest."""

    name: str
    command: str
    step: str = "setup"  # what the harness was doing last: setup, insmod, settle, rmmod
    rc: int | None = None  # insmod's exit status; None when it never returned
    shell_output: str = ""  # what insmod printed
    errno: str | None = None  # ENOMEM... from insmod's message, when it failed
    unloaded: bool | None = None  # rmmod after the settle time; None: not tried
    unload_output: str = ""
    error: GuestError | None = None  # the guest crashed, hung or exited

    @property
    def inserted(self) -> bool:
        return self.rc == 0


def find_report(console: str) -> Crash | None:
    """The first kernel report of the log: the crash triage's kinds (KASAN, KCSAN,
    lockdep, WARN, BUG, oops, soft lockup, panic...) and RCU stalls."""
    lines = clean_lines(console)
    for number, line in enumerate(lines):
        text = TIMESTAMP.sub("", line)
        for kind, pattern in (*PATTERNS, *REPORTS):
            if pattern.search(text):
                excerpt = "\n".join(lines[number : number + EXCERPT_LINES])
                return Crash(kind=kind, line=number + 1, excerpt=excerpt)
    return None


def errno_of(output: str) -> str | None:
    """The errno of a failed insmod (`insmod: can't insert 'x.ko': Cannot allocate memory`)."""
    for line in reversed(output.splitlines()):
        message = line.rsplit(": ", 1)[-1].strip()
        if message in _ERRNO_NAMES:
            return _ERRNO_NAMES[message]
    return None


def module_log(console: str) -> str:
    """The kernel log lines between each start marker and its end marker (or the log's end):
    the output of every external module loaded so far."""
    body: list[str] = []
    inside = False
    for line in clean_lines(console):
        if START in line:
            inside = True
        elif END in line:
            inside = False
        elif inside and line.strip():
            body.append(line)
    return "\n".join(body)


def kmsg(guest: Guest, text: str) -> None:
    """A line of the harness's own in the kernel log (and so on the console)."""
    guest.run(f"echo {shlex.quote(text)} > /dev/kmsg")


def load_external(
    guest: Guest,
    path: str,
    args: Sequence[str],
    timeout: float,
    settle: float,
) -> LoadOutcome:
    """insmod the module at its guest path with its parameters; never raises GuestError.

    A deadline or crash kills the guest: the outcome's `error` says which. Otherwise the
    module, once inserted, gets `settle` seconds for its threads, then is unloaded."""
    name = module_name(path)
    command = " ".join(["insmod", path, *map(shlex.quote, args)])
    outcome = LoadOutcome(name, command)
    try:
        guest.run("echo 8 > /proc/sys/kernel/printk")  # every level to the console
        kmsg(guest, f"{START} {name}")
        outcome.step = "insmod"
        outcome.rc, outcome.shell_output = guest.run_status(command, timeout=timeout)
        if outcome.rc != 0:
            outcome.errno = errno_of(outcome.shell_output)
        else:
            outcome.step = "settle"
            time.sleep(settle)
            if guest.run_status(f"test -d /sys/module/{name}")[0] == 0:
                outcome.step = "rmmod"
                rc, outcome.unload_output = guest.run_status(f"rmmod {name}", timeout=timeout)
                outcome.unloaded = rc == 0
        outcome.step = "done"
        kmsg(guest, f"{END} {name}")
    except GuestError as e:
        outcome.error = e
    return outcome
