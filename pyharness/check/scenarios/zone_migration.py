"""Migration across zones: the pool's pages moved out of ZONE_MOVABLE by memory offlining.

Compaction moves pages within a zone; memory hot-remove moves them to any
zone with room. The guest boots with part of its memory as ZONE_MOVABLE
(`movablecore=`), where zstest's allocations may land (it asks with
__GFP_HIGHMEM | __GFP_MOVABLE, as zram does). The pool is filled and
written, then every online memory block of ZONE_MOVABLE is offlined, which
migrates the pool's pages there into ZONE_DMA32 through zsmalloc's
migration callbacks; every object is verified, freed, the pool destroyed,
and the blocks brought back online.

Checked: the data after the move, and the kernel's per-zone nr_zspages
(read from /proc/zoneinfo after vm.stat_refresh folds the per-CPU counts),
which must come back in every zone to what it was before: a migration that
does not move the count with the page (the 2020 fix "mm/zsmalloc.c: fix the
migrated zspage statistics") leaves it in the old zone. Both allocators keep
that count.
"""

from __future__ import annotations

import re

from ...guest.qemu import Guest
from .base import Context, Outcome, Params, Scenario, register

POOL = "sc-zone"
BASE = 7_000_000
SIZE = 2000  # two objects a page or so: many pages for few commands
MEMORY = "/sys/devices/system/memory"
REFRESH = "echo 1 > /proc/sys/vm/stat_refresh"
HOG = "/tmp/zskit-zone-hog"  # page cache in ZONE_MOVABLE's pinned blocks


def zone_counts(guest: Guest, counter: str) -> dict[str, int]:
    """A counter of /proc/zoneinfo ("nr_zspages", "pages free") for every zone, by
    "node:zone", per-CPU counts folded in first."""
    text = guest.run(f"{REFRESH}; cat /proc/zoneinfo")
    found: dict[str, int] = {}
    zone = None
    line_of = re.compile(rf"\s+{re.escape(counter)}\s+(\d+)")
    for line in text.splitlines():
        if m := re.match(r"Node (\d+), zone\s+(\S+)", line):
            zone = f"{m[1]}:{m[2]}"
        elif zone and zone not in found and (m := line_of.match(line)):
            found[zone] = int(m[1])
    return found


def zone_zspages(guest: Guest) -> dict[str, int]:
    return zone_counts(guest, "nr_zspages")


def movable_blocks(guest: Guest) -> list[str]:
    """The online memory blocks of ZONE_MOVABLE."""
    out = guest.run(
        f"for b in {MEMORY}/memory*; do "
        f'[ "$(cat $b/state)" = online ] && grep -qx Movable $b/valid_zones && echo ${{b##*/}}; '
        "done; true"
    )
    return out.split()


def movable_free_pages(guest: Guest) -> int:
    return sum(n for z, n in zone_counts(guest, "pages free").items() if z.endswith(":Movable"))


def set_state(guest: Guest, blocks: list[str], state: str, seconds: int) -> list[str]:
    """The blocks that took the state."""
    return [
        b
        for b in blocks
        if guest.run_status(f"echo {state} > {MEMORY}/{b}/state", timeout=seconds + 60)[0] == 0
    ]


def one_round(ctx: Context, params: Params, clean: list[str], counts: dict[str, object]) -> Outcome:
    """Fill ZONE_MOVABLE's pinned blocks, the pool into the clean ones, offline those."""
    # What is left of ZONE_MOVABLE is filled, so that the pool's pages can only go to the
    # clean blocks, and leave ZONE_MOVABLE when they go offline.
    hog = movable_free_pages(ctx.guest)
    ctx.guest.run(f"dd if=/dev/zero of={HOG} bs=4096 count={hog} 2>/dev/null; true")
    counts["hog_pages"] = hog
    set_state(ctx.guest, clean, "online_movable", params.seconds)
    before = zone_zspages(ctx.guest)
    ids = range(BASE, BASE + params.operations)
    fill = [f"create {POOL}"]
    for oid in ids:
        fill += [f"alloc {oid} {SIZE}", f"write {oid} {oid}"]
    made = ctx.zstest.batch(fill, timeout=params.seconds + 60)
    filled = zone_zspages(ctx.guest)
    counts["in_movable"] = sum(n - before.get(z, 0) for z, n in filled.items() if "Movable" in z)
    offlined = set_state(ctx.guest, clean, "offline", params.seconds)
    counts["offlined"] = offlined
    moved = zone_zspages(ctx.guest)
    verified = ctx.zstest.batch([f"verify {oid} {oid}" for oid in ids], timeout=params.seconds + 60)
    ctx.zstest.batch([f"destroy {POOL}"])
    ctx.guest.run(f"rm -f {HOG}")
    after = zone_zspages(ctx.guest)
    counts["nr_zspages"] = {"before": before, "filled": filled, "offlined": moved, "after": after}
    if made.failures:
        f = made.failures[0]
        return Outcome(f"line {f.line} {f.verb}: {f.reason}", "command", counts)
    if verified.failures:
        f = verified.failures[0]
        text = f"after the move out of ZONE_MOVABLE, line {f.line} {f.verb}: {f.reason}"
        return Outcome(text, "data", counts)
    if offlined != clean:
        text = f"the ZONE_MOVABLE blocks {', '.join(clean)} did not all go offline again"
        return Outcome(text, "scenario", counts)
    if not counts["in_movable"]:
        text = "none of the pool's pages was counted in ZONE_MOVABLE: nothing moved across zones"
        return Outcome(text, "scenario", counts)
    drift = {z: (before.get(z, 0), n) for z, n in after.items() if n != before.get(z, 0)}
    if drift:
        zone, (was, now) = sorted(drift.items())[0]
        text = (
            f"zone {zone} counts {now} nr_zspages after the pool was destroyed, {was} before "
            "it was filled: a migrated page's count stayed in the zone it left"
        )
        return Outcome(text, "leak", counts)
    return Outcome(None, counts=counts)


def run(ctx: Context, params: Params) -> Outcome:
    counts: dict[str, object] = {"cpus": 1, "rounds": params.repeat}
    blocks = movable_blocks(ctx.guest)
    # Early boot allocations pin some blocks (memblock allocates top-down): find the rest.
    clean = set_state(ctx.guest, blocks, "offline", params.seconds)
    counts.update(blocks=blocks, clean=clean)
    if not clean:
        named = ", ".join(blocks) or "none: the kernel ignored movablecore="
        text = f"none of the ZONE_MOVABLE blocks ({named}) can be offlined: nothing would move"
        return Outcome(text, "scenario", counts)
    try:
        for _ in range(params.repeat):
            outcome = one_round(ctx, params, clean, counts)
            if outcome.failure is not None:
                return outcome
        return outcome
    finally:
        if ctx.guest.child is not None:  # the memory back for what runs next
            set_state(ctx.guest, clean, "online_movable", params.seconds)


SCENARIO = register(
    Scenario(
        name="zone-migration",
        kind="zone-migration",
        summary="the pool's pages in ZONE_MOVABLE moved to another zone by memory offlining; "
        "data verified, per-zone nr_zspages back to where it was",
        run=run,
        operations=3_000,
        seconds=60,
        unit="objects",
        needs={"MEMORY_HOTREMOVE": "y", "COMPACTION": "y"},
        boot_args=("movablecore=50%",),
        max_operations=100_000,
    )
)
