"""zsmalloc's in-kernel users, zram and zswap, as zskit validate builds and runs them.

zram is a module wherever zsmalloc is one (Debian 6.1, the source-built
kernels: CONFIG_ZRAM=m), so a patched drivers/block/zram/ is built out of
tree next to the patched zsmalloc.ko, in the same Kbuild directory: modpost
then resolves zram's zs_* from that zsmalloc.ko, with matching symbol CRCs.
In the guest, `zram_round_trip` loads it on the patched zsmalloc and sends
data through /dev/zram0: text, incompressible and partly random pages (many
size classes, the huge class) and zero pages (which zram keeps out of
zsmalloc); it reads everything back, discards half, compacts, reads again,
and checks `mm_stat`'s accounting on the way.

zswap is part of vmlinux (CONFIG_ZSWAP=y on Debian; off on the source-built
kernels), so a patched mm/zswap.c can only run in a rebuilt kernel, which
takes minutes per patch. What validate does instead is a compile check:
`make M=DIR zswap.o` against the headers of Debian's kernel of the series,
whose configuration has zswap on, with the patched mm/ headers beside it. It
is never run.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..progress import StageError
from . import qemu

ZRAM_DIR = "drivers/block/zram/"
ZSWAP = "mm/zswap.c"
ZSWAP_HEADER = "include/linux/zswap.h"
ZSMALLOC_HEADER = "include/linux/zsmalloc.h"
ZRAM_MODULE = "zram/zram"  # the module's path in the build directory, without .ko


def touches_zram(paths: Iterable[str]) -> bool:
    return any(p.startswith(ZRAM_DIR) for p in paths)


def touches_zswap(paths: Iterable[str]) -> bool:
    return any(p in (ZSWAP, ZSWAP_HEADER) for p in paths)


def zram_files(members: Iterable[str]) -> list[str]:
    """The files of drivers/block/zram/ (its sources, headers and Makefile) in a listing."""
    return sorted(
        m
        for m in members
        if m.startswith(ZRAM_DIR) and not m.endswith("/") and "/" not in m[len(ZRAM_DIR) :]
    )


def mm_headers(members: Iterable[str]) -> list[str]:
    """mm/'s own headers (zswap.c includes "swap.h", "internal.h", ...), from a listing."""
    return sorted(m for m in members if re.fullmatch(r"mm/[\w.-]+\.h", m))


# --- the round trip in the guest ------------------------------------------------

# Pages written: text (compressible), partly random, zero (zram's same-filled
# pages, never in zsmalloc), random (incompressible: zsmalloc's huge class).
TEXT_PAGES, MIXED_PAGES, ZERO_PAGES, RANDOM_PAGES = 140, 12, 8, 32
PAGES = TEXT_PAGES + MIXED_PAGES + ZERO_PAGES + RANDOM_PAGES
DISCARDED = 96  # the first pages, discarded before compaction (all text)
MIXED_STEP = 320  # mixed page i has i * MIXED_STEP random bytes, then zeros
MM_STAT = (
    "orig_data_size",
    "compr_data_size",
    "mem_used_total",
    "mem_limit",
    "mem_used_max",
    "same_pages",
    "pages_compacted",
    "huge_pages",
)
ROUND_TRIP = "zram-round-trip.sh"  # in scripts/; its parameters:
ROUND_TRIP_ENV = {
    "TEXT_PAGES": TEXT_PAGES,
    "MIXED_PAGES": MIXED_PAGES,
    "MIXED_STEP": MIXED_STEP,
    "ZERO_PAGES": ZERO_PAGES,
    "RANDOM_PAGES": RANDOM_PAGES,
    "DISCARDED": DISCARDED,
}


@dataclass
class ZramResult:
    ok: bool
    summary: str  # one line
    details: list[str] = field(default_factory=list)
    kind: str | None = None  # failure kind: data, accounting, command, crash, timeout...
    mm_stat: dict[str, dict[str, int]] = field(default_factory=dict)  # by moment


def parse_mm_stat(text: str) -> dict[str, int]:
    """zram's mm_stat line, by field name (8 or 9 numbers, depending on the kernel)."""
    numbers = [int(n) for n in text.split()]
    if len(numbers) < len(MM_STAT):
        raise ValueError(f"mm_stat has {len(numbers)} fields, expected at least {len(MM_STAT)}")
    return dict(zip(MM_STAT, numbers, strict=False))


def check_accounting(stats: dict[str, dict[str, int]]) -> list[str]:
    """What mm_stat got wrong, given the pages the round trip wrote."""
    problems: list[str] = []
    written, discarded, compacted = (stats.get(k) for k in ("written", "discarded", "compacted"))
    if written is None or discarded is None or compacted is None:
        return [f"mm_stat missing (have {', '.join(stats) or 'none'})"]
    # Same-filled pages count as stored, though zsmalloc never holds them.
    expect = {
        ("written", "same_pages"): ZERO_PAGES,
        ("written", "orig_data_size"): PAGES * 4096,
        ("discarded", "orig_data_size"): (PAGES - DISCARDED) * 4096,
        ("discarded", "same_pages"): ZERO_PAGES,
    }
    for (moment, name), value in expect.items():
        got = stats[moment][name]
        if got != value:
            problems.append(f"{name} after the {moment} step is {got}, expected {value}")
    w = written
    if w["huge_pages"] < RANDOM_PAGES:
        problems.append(
            f"huge_pages is {w['huge_pages']} with {RANDOM_PAGES} incompressible pages written"
        )
    if not 0 < w["compr_data_size"] < w["orig_data_size"]:
        problems.append(
            f"compr_data_size {w['compr_data_size']} is not below orig_data_size "
            f"{w['orig_data_size']}"
        )
    if w["mem_used_total"] < w["compr_data_size"]:
        problems.append(
            f"mem_used_total {w['mem_used_total']} is below compr_data_size "
            f"{w['compr_data_size']}: zsmalloc holds less than zram stored"
        )
    if compacted["mem_used_total"] > discarded["mem_used_total"]:
        problems.append(
            f"compaction grew the pool: mem_used_total {discarded['mem_used_total']} -> "
            f"{compacted['mem_used_total']}"
        )
    return problems


def zram_round_trip(guest: qemu.Guest, module: str) -> ZramResult:
    """Load zram.ko on the loaded zsmalloc, round-trip data through /dev/zram0, unload it."""
    try:
        script = guest.send_script(ROUND_TRIP)
        rc, output = guest.run_status(qemu.script_command(script, ROUND_TRIP_ENV, (module,)))
    except StageError as e:
        kind = getattr(e, "kind", "error")
        lines = str(e).splitlines()
        return ZramResult(False, f"zram round trip: {kind}: {lines[0]}", lines[:30], kind)
    lines = output.splitlines()
    stats: dict[str, dict[str, int]] = {}
    for line in lines:
        if m := re.match(r"^mm_stat (\w+) (.*)$", line):
            try:
                stats[m[1]] = parse_mm_stat(m[2])
            except ValueError as e:
                return ZramResult(False, f"zram round trip: {e}", lines, "protocol")
    failed = next(
        (ln.removeprefix("zram-fail: ") for ln in lines if ln.startswith("zram-fail")), None
    )
    if rc != 0 or failed is not None or "zram-ok" not in lines:
        what = failed or f"the round trip exited {rc}"
        kind = "data" if failed and ("differs" in failed or "not zero" in failed) else "command"
        return ZramResult(False, f"zram round trip fails: {what}", lines[-30:], kind, stats)
    problems = check_accounting(stats)
    if problems:
        return ZramResult(
            False, f"zram accounting is wrong: {problems[0]}", problems, "accounting", stats
        )
    w, c = stats["written"], stats["compacted"]
    summary = (
        f"zram round trip: {PAGES} pages written, read back identical, half discarded, "
        f"compacted ({c['pages_compacted']} pages freed), read back identical; "
        f"{w['compr_data_size']} bytes compressed in {w['mem_used_total'] // 4096} zsmalloc pages"
    )
    return ZramResult(True, summary, [], None, stats)
