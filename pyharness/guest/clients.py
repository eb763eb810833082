"""zsmalloc's in-kernel users, zram and zswap, as zskit validate builds and runs them.

zram is a module wherever zsmalloc is one (Debian 6.1, the source-built
kernels: CONFIG_ZRAM=m), so a patched drivers/block/zram/ is built out of
tree next to the patched zsmalloc.ko, in the same Kbuild directory: modpost
then resolves zram's zs_* from that zsmalloc.ko, with matching symbol CRCs.
In the guest, `zram_round_trip` loads it on the patched zsmalloc and sends
data through /dev/zram0: zero pages (which zram keeps out of zsmalloc), text,
partly random and incompressible pages (many size classes, the huge class);
it reads everything back, discards every other 32 KiB, compacts, reads again,
and checks `mm_stat`'s accounting on the way. Where the image has a ramdisk
module (brd.ko) and zram its writeback (CONFIG_ZRAM_WRITEBACK, Debian's), every
page is then written back to the ramdisk and read back from there once more.
zskit compare sends its own data set (binaries, text, graded random pages)
through the same script, scripts/zram.sh, with `run_zram`.

zswap is part of vmlinux (CONFIG_ZSWAP=y on Debian; off on the source-built
kernels), so a patched mm/zswap.c can only run in a rebuilt kernel, which
takes minutes per patch. What validate does instead is a compile check:
`make M=DIR zswap.o` against the headers of Debian's kernel of the series,
whose configuration has zswap on, with the patched mm/ headers beside it. It
is never run. The bench runs the kernel's own zswap (`run_zswap`,
scripts/zswap.sh): a file's pages pushed through it on each zpool the kernel
has (zbud, z3fold, and the loaded zsmalloc.ko where zswap still takes a
zpool, as on 6.1), and read back intact.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ..kernel.manifest import Kernel
from ..progress import StageError
from . import qemu
from .initramfs import BUILT_ZRAM, KERNEL_BRD, KERNEL_ZRAM, MODULE_DIR
from .modules import ModuleError, load_modules, unload_modules

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

ZRAM_SCRIPT = "zram.sh"  # in scripts/: the one zram round trip, for any data set
CHUNK_PAGES = 8  # discarded in chunks of 32 KiB, every other one from the second


def discarded_pages(pages: int) -> int:
    """How many pages of a set of `pages` the script discards: every other whole chunk."""
    return pages // CHUNK_PAGES // 2 * CHUNK_PAGES


@dataclass(frozen=True)
class DataSet:
    """A data set of scripts/zram.sh: DATA=name, made once per boot in `file`."""

    name: str  # "pages" (generated) or "image" (the guest image's files)
    file: str  # guest path: every allocator of a boot gets the same bytes
    disksize_mb: int  # zram's disksize with 4 KiB pages, at least the set's size
    params: Mapping[str, object] = field(default_factory=dict)  # the set's own VAR=value

    def env(self, page_size: int) -> dict[str, object]:
        """The script's parameters on a guest with `page_size` pages: the generated sets
        are in pages, so they grow with them."""
        return {
            "DATA": self.name,
            "FILE": self.file,
            "DISKSIZE": f"{self.disksize_mb * page_size // 4096}M",
            "CHUNK_PAGES": CHUNK_PAGES,
            "PAGE": page_size,
            **self.params,
        }


# The round trip's pages, in this order: zero (zram's same-filled pages, never in
# zsmalloc; first, in the one chunk of them the discard keeps), text (compressible),
# partly random, random (incompressible: zsmalloc's huge class).
TEXT_PAGES, MIXED_PAGES, ZERO_PAGES, RANDOM_PAGES = 140, 12, 8, 32
PAGES = TEXT_PAGES + MIXED_PAGES + ZERO_PAGES + RANDOM_PAGES
DISCARDED = discarded_pages(PAGES)  # 96: text, partly random and random pages
MIXED_STEP = 320  # mixed page i has i * MIXED_STEP random bytes, then zeros
PAGES_SET = DataSet(
    "pages",
    "/tmp/zskit-pages",
    8,
    {
        "ZERO_PAGES": ZERO_PAGES,
        "TEXT_PAGES": TEXT_PAGES,
        "MIXED_PAGES": MIXED_PAGES,
        "MIXED_STEP": MIXED_STEP,
        "RANDOM_PAGES": RANDOM_PAGES,
    },
)
BACKING = "/dev/ram0"
BD_STAT = ("bd_count", "bd_reads", "bd_writes")  # pages on the backing device, read, written
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


@dataclass
class ZramRun:
    """What one run of scripts/zram.sh printed, parsed."""

    rc: int
    lines: list[str]
    pages: int = 0  # of the data set (`set pages N`)
    mm_stat: dict[str, dict[str, int]] = field(default_factory=dict)  # by moment
    failed: str | None = None  # what failed: the script's `zram-fail:` text, or insmod/rmmod
    protocol: str | None = None  # an mm_stat line that would not parse
    bd_stat: dict[str, int] | None = None  # after the writeback, where the script made one

    @property
    def ok(self) -> bool:
        return (
            self.rc == 0
            and self.failed is None
            and self.protocol is None
            and "zram-ok" in self.lines
        )


def zram_module(guest: qemu.Guest) -> str | None:
    """The zram.ko of this guest: the one built with the modules under test, else the
    kernel's own; None when the image has neither."""
    for path in (BUILT_ZRAM, KERNEL_ZRAM):
        if guest.run_status(f"test -e {path}")[0] == 0:
            return path
    return None


def run_zram(
    guest: qemu.Guest,
    modules: Sequence[str],
    data: DataSet,
    page_size: int,
    timeout: float | None = None,
    writeback: bool = True,
) -> ZramRun:
    """Load zram (modules: what it needs, then zram.ko) on the loaded zsmalloc, send the
    data set through /dev/zram0 with scripts/zram.sh, and unload zram again; with
    `writeback`, onto a ramdisk too where the kernel has brd.ko.

    A failed insmod, rmmod or script step is in the result; a crash or a timeout raises
    (the guest is gone)."""
    script = guest.send_script(ZRAM_SCRIPT)
    env = data.env(page_size)
    if writeback and guest.run_status(f"test -e {KERNEL_BRD}")[0] == 0:
        modules = [KERNEL_BRD, *modules]  # its first ramdisk backs zram's writeback
        env["BACKING"] = BACKING
    try:
        load_modules(guest, modules)
    except ModuleError as e:
        unload_modules(guest, modules, check=False)  # those that did load
        return ZramRun(1, e.output.splitlines(), failed=e.command)
    rc, output = guest.run_status(qemu.script_command(script, env), timeout)
    run = ZramRun(rc, output.splitlines())
    for line in run.lines:
        if m := re.match(r"^mm_stat (\w+) (.*)$", line):
            try:
                run.mm_stat[m[1]] = parse_mm_stat(m[2])
            except ValueError as e:
                run.protocol = run.protocol or str(e)
        elif m := re.match(r"^set pages (\d+)$", line):
            run.pages = int(m[1])
        elif m := re.match(r"^bd_stat\s+(\d+)\s+(\d+)\s+(\d+)\s*$", line):
            run.bd_stat = dict(zip(BD_STAT, (int(n) for n in m.groups()), strict=True))
    run.failed = next(
        (ln.removeprefix("zram-fail: ") for ln in run.lines if ln.startswith("zram-fail")), None
    )
    if not run.ok:
        unload_modules(guest, modules, check=False)  # so that the allocator can unload
        return run
    try:
        unload_modules(guest, modules)
    except ModuleError as e:
        run.failed = e.command
        run.lines += e.output.splitlines()
    return run


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


def check_accounting(stats: dict[str, dict[str, int]], page_size: int) -> list[str]:
    """What mm_stat got wrong, given the pages (of page_size bytes) the round trip wrote."""
    problems: list[str] = []
    written, discarded, compacted = (stats.get(k) for k in ("written", "discarded", "compacted"))
    if written is None or discarded is None or compacted is None:
        return [f"mm_stat missing (have {', '.join(stats) or 'none'})"]
    # Same-filled pages count as stored, though zsmalloc never holds them.
    expect = {
        ("written", "same_pages"): ZERO_PAGES,
        ("written", "orig_data_size"): PAGES * page_size,
        ("discarded", "orig_data_size"): (PAGES - DISCARDED) * page_size,
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


def zram_round_trip(
    guest: qemu.Guest, module: str, page_size: int, deps: Sequence[str] = ()
) -> ZramResult:
    """Load zram.ko (after deps) on the loaded zsmalloc, round-trip the generated pages
    through /dev/zram0, check mm_stat's accounting, unload it."""
    try:
        run = run_zram(guest, [*deps, module], PAGES_SET, page_size)
    except StageError as e:
        kind = getattr(e, "kind", "error")
        lines = str(e).splitlines()
        return ZramResult(False, f"zram round trip: {kind}: {lines[0]}", lines[:30], kind)
    lines, stats, failed = run.lines, run.mm_stat, run.failed
    if run.protocol is not None:
        return ZramResult(False, f"zram round trip: {run.protocol}", lines, "protocol")
    if not run.ok:
        what = failed or f"the round trip exited {run.rc}"
        kind = "data" if failed and "differs" in failed else "command"
        return ZramResult(False, f"zram round trip fails: {what}", lines[-30:], kind, stats)
    problems = check_accounting(stats, page_size)
    if run.bd_stat is not None and not run.bd_stat["bd_writes"]:
        problems.append(f"the writeback to {BACKING} wrote no page (bd_stat {run.bd_stat})")
    if problems:
        return ZramResult(
            False, f"zram accounting is wrong: {problems[0]}", problems, "accounting", stats
        )
    w, c = stats["written"], stats["compacted"]
    summary = (
        f"zram round trip: {PAGES} pages written, read back identical, half discarded, "
        f"compacted ({c['pages_compacted']} pages freed), read back identical; "
        f"{w['compr_data_size']} bytes compressed in {w['mem_used_total'] // page_size} "
        "zsmalloc pages"
    )
    if run.bd_stat is not None:
        summary += (
            f"; {run.bd_stat['bd_writes']} pages written back to {BACKING}, read back identical"
        )
    return ZramResult(True, summary, [], None, stats)


# --- zswap, in the guest -----------------------------------------------------------

ZSWAP_SCRIPT = "zswap.sh"
ZSWAP_FIELDS = (
    "pool_total_size",
    "stored_pages",
    "same_filled_pages",
    "reject_compress_poor",
    "reject_alloc_fail",
    "written_back_pages",
)


@dataclass
class ZswapRun:
    """What one run of scripts/zswap.sh printed, parsed: zswap's counters by zpool while
    the file's pages were out, and each pageout's own count of them."""

    rc: int
    lines: list[str]
    pools: dict[str, dict[str, int]] = field(default_factory=dict)
    failed: str | None = None

    @property
    def ok(self) -> bool:
        return self.rc == 0 and self.failed is None and "zswap-ok" in self.lines


def run_zswap(
    guest: qemu.Guest,
    file: str,
    zpools: Sequence[str],
    compressor: str,
    swap_kb: int,
    timeout: float | None = None,
) -> ZswapRun:
    """Push the guest file's pages through zswap on each zpool in turn (their modules
    loaded by the caller), the kernel's brd.ko as the swap device behind it."""
    script = guest.send_script(ZSWAP_SCRIPT)
    env = {
        "FILE": file,
        "ZPOOLS": " ".join(zpools),
        "COMP": compressor,
        "SWAP_KB": swap_kb,
        "BRD": KERNEL_BRD,
    }
    rc, output = guest.run_status(qemu.script_command(script, env), timeout)
    run = ZswapRun(rc, output.splitlines())
    for line in run.lines:
        words = line.split()
        if len(words) == 2 + len(ZSWAP_FIELDS) and words[0] == "zswap":
            try:
                run.pools[words[1]] = dict(zip(ZSWAP_FIELDS, map(int, words[2:]), strict=True))
            except ValueError:
                run.failed = run.failed or f"zswap counters that are not numbers: {line}"
        elif m := re.match(r"^pageout pages (\d+) swapped (\d+)$", line):
            last = list(run.pools.values())[-1] if run.pools else None
            if last is not None:
                last["paged_out"] = int(m[2])
        elif line.startswith("zswap-fail: "):
            run.failed = line.removeprefix("zswap-fail: ")
    return run


ZSWAP_DATA = "/tmp/zskit-zswap-data"  # the round trip's data: the image's own binaries


def zswap_runnable(kernel: Kernel) -> str | None:
    """Why zswap cannot run on the zsmalloc.ko under test on this kernel, or None: zswap
    must be built in over zpool with zsmalloc a module (which registers the zpool
    driver "zsmalloc"), and brd a module for the swap device."""
    if kernel.config("ZSWAP") != "y":
        return "the kernel has no zswap (CONFIG_ZSWAP)"
    if kernel.config("ZPOOL") != "y":
        return (
            "zswap calls zsmalloc directly here (no zpool), so only a kernel rebuilt with the "
            "patched zsmalloc built in could run it"
        )
    if kernel.config("ZSMALLOC") != "m":
        return "zsmalloc is built in: the patched zsmalloc.ko cannot serve zswap"
    if kernel.config("BLK_DEV_RAM") != "m":
        return "no brd.ko for zswap's swap device (CONFIG_BLK_DEV_RAM=m)"
    return None


def zswap_round_trip(guest: qemu.Guest, page_size: int) -> ZramResult:
    """The image's binaries paged out through zswap on the loaded zsmalloc.ko (its zpool
    driver), zswap's counters read while they are out, read back and compared."""
    modules = f"find /{MODULE_DIR} -name '*.ko' | sort"
    guest.run(f"{{ {modules} | xargs cat; cat /bin/busybox; }} > {ZSWAP_DATA}")
    size = int(guest.run(f"wc -c < {ZSWAP_DATA}").strip())
    compressor = guest.run("cat /sys/module/zswap/parameters/compressor").strip()
    run = run_zswap(guest, ZSWAP_DATA, ["zsmalloc"], compressor, 2 * size // 1024 + 1024)
    pool = run.pools.get("zsmalloc", {})
    bad = [
        m for line in run.lines if (m := re.match(r"^pageout verified \d+ mismatches (\d+)$", line))
    ]
    if bad and int(bad[-1][1]):
        what = f"{bad[-1][1]} page(s) read back from zswap differ from what was paged out"
        return ZramResult(
            False, f"zswap on zsmalloc corrupts data: {what}", run.lines[-30:], "data"
        )
    if not run.ok:
        what = run.failed or f"zswap.sh exited {run.rc}"
        return ZramResult(False, f"zswap on zsmalloc fails: {what}", run.lines[-30:], "command")
    stored = pool.get("stored_pages", 0) - pool.get("same_filled_pages", 0)
    if stored <= 0:
        return ZramResult(
            False, f"zswap stored no page in zsmalloc ({pool})", run.lines[-30:], "zswap"
        )
    pages = size // page_size
    return ZramResult(
        True,
        f"zswap round trip: {pool.get('paged_out', pages)} of {pages} pages paged out, "
        f"{stored} stored in zsmalloc ({pool['pool_total_size']} bytes, {compressor}), read "
        "back identical",
    )
