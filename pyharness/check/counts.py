"""Instruction counts of the allocator, from the counting plugin's dumps.

The plugin (qemu/plugins/zscount.c) counts every instruction run in module
space per guest address and per phase, the phase named by zstest's markers,
and appends a block per dump. Here a dump is attributed to one loaded module:
its addresses are mapped to its executable sections (where the guest loaded
them) and its functions (from the .ko), everything else (zstest, other
modules) dropped. Counts do not depend on time: the same workload on the same
module gives the same numbers, on any host, whatever else it is doing.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

from ..kmod.elf import ModuleCode

# zstest's enum zt_phase, in order (kmod/zstest.c.j2).
PHASES = (
    "outside",
    "alloc",
    "free",
    "write_begin",
    "write_end",
    "read_begin",
    "read_end",
    "compact",
    "create",
    "destroy",
)

Dump = dict[tuple[int, int], int]  # (phase, address) -> instructions run there
LINE = re.compile(r"^(\d+) ([0-9a-f]+) (\d+)$")


def read_dumps(text: str) -> list[Dump]:
    """The complete dump blocks of the plugin's output, oldest first (a block cut short by
    QEMU's end is left out)."""
    dumps: list[Dump] = []
    current: Dump | None = None
    for line in text.splitlines():
        if line.startswith("dump "):
            current = {}
        elif line.startswith("end ") and current is not None:
            dumps.append(current)
            current = None
        elif current is not None and (m := LINE.match(line)):
            current[(int(m[1]), int(m[2], 16))] = int(m[3])
    return dumps


def parse_sections(text: str) -> dict[str, int]:
    """`NAME ADDRESS` lines (the guest's /sys/module/M/sections/) as name -> address."""
    found = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].startswith("0x"):
            found[parts[0].rsplit("/", 1)[-1]] = int(parts[1], 16)
    return found


@dataclass(frozen=True)
class Loaded:
    """A module's code where the guest loaded it."""

    code: ModuleCode
    addresses: dict[str, int]  # section -> load address

    def __post_init__(self) -> None:
        missing = set(self.code.sections) - set(self.addresses) - {".init.text"}
        if missing:
            raise ValueError(f"the guest did not say where {sorted(missing)} were loaded")

    def spans(self) -> list[tuple[int, int, str]]:
        return sorted(
            (self.addresses[name], self.addresses[name] + size, name)
            for name, size in self.code.sections.items()
            if name in self.addresses and name != ".init.text"  # freed after init
        )

    def functions(self) -> tuple[list[int], list[tuple[int, str]]]:
        """Function starts (sorted) and their (end, name), for bisecting an address."""
        spans = sorted(
            (self.addresses[f.section] + f.offset, f.size, f.name)
            for f in self.code.functions
            if f.section in self.addresses and f.section != ".init.text"
        )
        return [s for s, _, _ in spans], [(s + n, name) for s, n, name in spans]


@dataclass
class Counts:
    """A dump's instructions in one module, per phase and per (phase, function)."""

    phases: dict[str, int] = field(default_factory=dict)
    functions: dict[str, dict[str, int]] = field(default_factory=dict)


def attribute(dump: Dump, loaded: Loaded) -> Counts:
    spans = loaded.spans()
    starts, ends = loaded.functions()
    counts = Counts()
    for (phase, address), n in dump.items():
        if not any(lo <= address < hi for lo, hi, _ in spans):
            continue
        name = PHASES[phase] if phase < len(PHASES) else f"phase{phase}"
        counts.phases[name] = counts.phases.get(name, 0) + n
        i = bisect.bisect_right(starts, address) - 1
        function = ends[i][1] if i >= 0 and address < ends[i][0] else "?"
        by_function = counts.functions.setdefault(name, {})
        by_function[function] = by_function.get(function, 0) + n
    return counts
