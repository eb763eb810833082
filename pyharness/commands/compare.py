"""Our zsmalloc against the kernel's in one boot: the suite, density, speed and zram.

The baseline is upstream's zsmalloc.ko where the kernel has zsmalloc as a module
(Debian 6.1, the source-built kernels), else the zsmalloc built into the kernel
(ours then has the zsk_ names, see own.py). One initramfs holds both allocators
under own/ and the baseline's directory, the zstest driver, and, where the
kernel image has it, the distribution's zram.ko (not rebuilt) with the modules
it depends on. Nothing loads at boot time beyond ours; the guest then:

1. runs the suite on ours against its model (run.run's test stage);
2. unloads ours, loads the baseline, runs the same suite against its model
   (the cheap "upstream in the same boot" check of `zskit run --baseline`);
3. with `zskit compare`, loads them in turn (own, baseline, own, baseline, own):
   each load runs zstest's `bench` (pool pages, checked exactly against the
   model, and ns per alloc, write, read and free), and on the first loads of
   each a real data set goes through /dev/zram0 on the distribution's zram.ko
   (binaries and text of the guest image, pages of known compressibility; read
   back byte-identical after a discard and a compaction; mm_stat), then validate's
   zram round trip: the same guest script (guest/scripts/zram.sh) on generated pages.

Pages are exact: the same commands give the same pages on every run (the
model predicts them). Times are not: they are ratios of neighbouring loads in
one boot, so the host's drift cancels mostly, and are reported, never judged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import lzma
import statistics
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..check.driver import BENCH_TIMES, DriverModel
from ..guest import clients, qemu
from ..guest.modules import load_modules, unload_modules
from ..guest.zstest import ZsTest
from ..kernel.api import KernelApi
from ..kernel.detect import api_of
from ..kernel.manifest import Kernel
from ..kernel.provision import provision, source_for
from ..kmod import build, render
from ..model import Policy
from ..paths import BUILD
from ..progress import Progress, StageError
from ..report import Case, RunResult, new_results_dir, new_run
from .config import Config
from .perf import BENCH_N, BENCH_REPEATS, BENCH_SEED, Bench, Instructions, Load, bench, counted_boot
from .run import Prepared, RunOptions, check_batches, default_batches, guest_image, run

GUEST_DIR = "/lib/modules/zskit"
SPEED_LOADS = 5  # own, baseline, own, baseline, own
ZRAM_PATH = "kernel/drivers/block/zram/zram.ko"
CLOCKSOURCE = "/sys/devices/system/clocksource/clocksource0/current_clocksource"


@dataclass(frozen=True)
class Side:
    """One allocator as the guest loads it."""

    name: str  # own, upstream, builtin
    modules: tuple[str, ...]  # guest paths in load order; () for the built-in zsmalloc
    policy: Policy | None  # its model; None: the kernel's upstream policy
    classes: bool  # has the debugfs `classes` file
    allocator_ko: Path | None = None  # its allocator module on the host; None: built in

    def load(self, guest: qemu.Guest) -> None:
        load_modules(guest, self.modules)

    def unload(self, guest: qemu.Guest) -> None:
        unload_modules(guest, self.modules)


@dataclass(frozen=True)
class Pair:
    prepared: Prepared  # ours, as run.run boots it
    baseline: Side
    own: Side
    zram: str | None  # guest path of the distribution's zram.ko
    zram_deps: tuple[str, ...]  # guest paths of what zram needs besides zsmalloc
    zram_note: str  # why zram is not run, or what was checked
    crc_note: str


# --- modules on the host -----------------------------------------------------------------


def _elf(ko: Path) -> bytes:
    data = ko.read_bytes()
    if ko.suffix == ".xz":
        data = lzma.decompress(data)
    if data[:4] != b"\x7fELF" or data[4] not in (1, 2) or data[5] not in (1, 2):
        raise StageError(f"{ko} is not an ELF module")
    return data


def _word(data: bytes) -> tuple[str, str]:
    """The struct formats of an ELF's byte order and of its unsigned long."""
    order = "<" if data[5] == 1 else ">"
    return order, "I" if data[4] == 1 else "Q"


def elf_sections(ko: Path) -> dict[str, bytes]:
    """A module's ELF sections by name (a .ko.xz is decompressed first), of any word size
    and byte order."""
    return _sections(_elf(ko))


def _sections(data: bytes) -> dict[str, bytes]:
    order, word = _word(data)
    # e_shoff, then e_shentsize, e_shnum and e_shstrndx, where ELF32 and ELF64 put them.
    shoff_at, counts_at = (0x20, 0x2E) if word == "I" else (0x28, 0x3A)
    (shoff,) = struct.unpack_from(order + word, data, shoff_at)
    shentsize, shnum, shstrndx = struct.unpack_from(order + "HHH", data, counts_at)
    # sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size
    header = order + "II" + word * 4
    headers = [struct.unpack_from(header, data, shoff + i * shentsize) for i in range(shnum)]
    names_at = headers[shstrndx][4]
    sections: dict[str, bytes] = {}
    for name, kind, _, _, offset, size in headers:
        end = data.index(b"\0", names_at + name)
        # SHT_NOBITS (8) has no bytes in the file.
        sections[data[names_at + name : end].decode()] = (
            b"" if kind == 8 else data[offset : offset + size]
        )
    return sections


def modinfo(ko: Path) -> dict[str, list[str]]:
    """The .modinfo strings of a module: key -> values."""
    info: dict[str, list[str]] = {}
    for item in elf_sections(ko).get(".modinfo", b"").split(b"\0"):
        key, sep, value = item.decode(errors="replace").partition("=")
        if sep:
            info.setdefault(key, []).append(value)
    return info


def imported_crcs(ko: Path, prefix: str = "zs_") -> dict[str, str]:
    """The CRCs a module was built against (its __versions entries of 64 bytes: an
    unsigned long CRC, then the name), for the names with prefix, formatted as in
    Module.symvers."""
    data = _elf(ko)
    order, word = _word(data)
    size = struct.calcsize(word)
    table = _sections(data).get("__versions", b"")
    crcs: dict[str, str] = {}
    for off in range(0, len(table) - 63, 64):
        (crc,) = struct.unpack_from(order + word, table, off)
        name = table[off + size : off + 64].split(b"\0")[0].decode()
        if name.startswith(prefix):
            crcs[name] = f"0x{crc:08x}"
    return crcs


def module_index(modules_dir: Path) -> dict[str, Path]:
    """Module name -> file under an image's /lib/modules/<release> (`-` and `_` alike)."""
    index: dict[str, Path] = {}
    for ko in sorted((modules_dir / "kernel").rglob("*.ko*")):
        index[ko.name.split(".ko")[0].replace("-", "_")] = ko
    return index


def zram_modules(kernel: Kernel) -> tuple[list[Path], str]:
    """zram.ko of the kernel image and what it depends on besides zsmalloc, in load order;
    or no files and why not."""
    if kernel.config("ZSMALLOC") != "m" or kernel.modules is None:
        return [], f"Linux {kernel.release} has zsmalloc built in: zram cannot run on ours"
    zram = kernel.modules / ZRAM_PATH
    if not zram.exists():
        return [], f"{kernel.release} has no {ZRAM_PATH} (CONFIG_ZRAM={kernel.config('ZRAM')})"
    return module_chain(kernel.modules, zram), ""


def module_chain(modules: Path, ko: Path) -> list[Path]:
    """A module of the image and what it depends on but zsmalloc, in load order. There is
    no modules.dep in an unpacked package (depmod writes it at install time), so the
    dependencies come from each module's modinfo."""
    index = module_index(modules)
    order: list[Path] = []

    def visit(ko: Path, chain: tuple[str, ...]) -> None:
        for dep in ",".join(modinfo(ko).get("depends", [])).split(","):
            dep = dep.replace("-", "_")
            if not dep or dep == "zsmalloc" or dep in chain:
                continue
            if dep not in index:
                raise StageError(f"{ko.name} depends on {dep}, which is not in {modules}")
            visit(index[dep], (*chain, dep))
            if index[dep] not in order:
                order.append(index[dep])

    visit(ko, (ko.name.split(".ko")[0],))
    return [*order, ko]


def symbol_crcs(symvers: Path, prefix: str = "zs_") -> dict[str, str]:
    """Exported symbol -> CRC from a Module.symvers, for the names with prefix."""
    crcs: dict[str, str] = {}
    for line in symvers.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) >= 2 and fields[1].startswith(prefix):
            crcs[fields[1]] = fields[0]
    return crcs


def crc_mismatch(a: dict[str, str], b: dict[str, str]) -> list[str]:
    return sorted(s for s in a.keys() | b.keys() if a.get(s) != b.get(s))


# --- preparing the pair ---------------------------------------------------------------------


def run_target(config: Config, allocator: str, purpose: str = "compare") -> str:
    """`compare-6.1-own`: build directories of their own, as a run of the same target
    may be building in run.prepare's directory at the same time."""
    return f"{purpose}-" + config.kernel_id.name(allocator)


def prepare(
    config: Config,
    p: Progress,
    refresh: bool = False,
    extra: Callable[[Kernel], Mapping[str, Path]] | None = None,
    purpose: str = "compare",
) -> Pair:
    """Ours and the baseline built for one kernel, in one initramfs with zram and the
    guest files `extra` names for the kernel (the bench's corpora), named after `purpose`."""
    config = config.with_overrides(allocator="own")
    with p.stage("provision"):
        source = source_for(config.kernel_id)
        kernel = provision(
            config.kernel_id, p, refresh, fragments=config.config_fragments, cc=config.cc
        )
        api = api_of(kernel)
    base_name = "builtin" if source.zsmalloc_builtin else "upstream"
    with contextlib.ExitStack() as held:
        return _prepared(config, p, kernel, api, base_name, held, extra, purpose)


def _prepared(
    config: Config,
    p: Progress,
    kernel: Kernel,
    api: KernelApi,
    base_name: str,
    held: contextlib.ExitStack,
    extra: Callable[[Kernel], Mapping[str, Path]] | None,
    purpose: str,
) -> Pair:
    """prepare's stages after provisioning, each build directory held (`held`) until the
    image of its modules is made."""
    built: dict[str, tuple[build.BuildResult, render.RenderedSources]] = {}
    for allocator in ("own", base_name):
        out = BUILD / "kmod" / run_target(config, allocator)
        held.enter_context(build.building(out, p))
        with p.stage("render"):
            sources = render.render(kernel, api, allocator, out, config.own)
        with p.stage("build"):
            built[allocator] = (build.build(kernel, sources, p), sources)
    with p.stage("initramfs"):
        files: dict[str, Path] = {}
        sides: dict[str, tuple[str, ...]] = {}
        for allocator, (result, _) in built.items():
            sides[allocator] = tuple(f"{GUEST_DIR}/{allocator}/{ko.name}" for ko in result.modules)
            files.update(zip(sides[allocator], result.modules, strict=True))
        crc_note = "zsmalloc built in: each allocator has its own zstest.ko"
        own_crcs = symbol_crcs(built["own"][1].directory / "Module.symvers")
        if base_name == "upstream":
            # One zstest.ko for both when the symbol CRCs agree: the same driver code on both.
            base_crcs = symbol_crcs(built[base_name][1].directory / "Module.symvers")
            bad = crc_mismatch(own_crcs, base_crcs)
            if bad:
                crc_note = f"symbol CRCs differ ({', '.join(bad)}): each has its own zstest.ko"
            else:
                shared = sides["own"][-1]
                sides = {a: (*mods[:-1], shared) for a, mods in sides.items()}
                crc_note = f"{len(own_crcs)} zs_* CRCs agree: one zstest.ko on both"
        zram_files, zram_note = zram_modules(kernel)
        zram: str | None = None
        deps: list[str] = []
        if zram_files:
            # The distribution's zram.ko was built against its zsmalloc.ko: it loads on ours
            # only with the same CRCs (MODVERSIONS), i.e. the same prototypes.
            wanted = imported_crcs(zram_files[-1])
            bad = [s for s, crc in wanted.items() if own_crcs.get(s) != crc]
            if bad:
                zram_note = f"zram.ko needs CRCs ours does not have: {', '.join(bad)}"
            else:
                for ko in zram_files:
                    guest = f"{GUEST_DIR}/distro/{ko.name}"
                    files[guest] = ko
                    deps.append(guest)
                zram, deps = deps[-1], deps[:-1]
                zram_note = (
                    f"the kernel image's zram.ko; the CRCs of its {len(wanted)} zs_* imports agree"
                    if wanted
                    else "the kernel image's zram.ko, built without MODVERSIONS (no CRCs)"
                )
        own_result, own_sources = built["own"]
        if extra is not None:
            files.update(extra(kernel))
        image = guest_image(
            kernel,
            [],
            BUILD / f"initramfs-{run_target(config, 'own', purpose)}.cpio",
            p,
            files=files,
        )
        image = dataclasses.replace(image, modules=sides["own"])
    base_sources = built[base_name][1]
    prepared = Prepared(kernel, api, own_sources, own_result, image)
    return Pair(
        prepared=prepared,
        baseline=Side(
            base_name,
            sides[base_name],
            base_sources.policy,
            base_sources.classes_file,
            _allocator_ko(built[base_name][0]),
        ),
        own=Side(
            "own",
            sides["own"],
            own_sources.policy,
            own_sources.classes_file,
            _allocator_ko(own_result),
        ),
        zram=zram,
        zram_deps=tuple(deps),
        zram_note=zram_note,
        crc_note=crc_note,
    )


# --- in the guest ---------------------------------------------------------------------------

# The data set of compare's zram runs: the guest image's binaries and text and pages of
# graded compressibility (scripts/zram.sh says how it is made), the same on both allocators.
IMAGE_SET = clients.DataSet("image", "/tmp/zskit-set", 64, {"MODULES_DIR": GUEST_DIR})


@dataclass
class ZramSet:
    """The data set through zram on one allocator."""

    ok: bool
    summary: str
    pages: int = 0  # pages of the data set
    mm_stat: dict[str, dict[str, int]] = field(default_factory=dict)  # by moment
    round_trip: str = ""  # clients.zram_round_trip's summary
    round_trip_ok: bool = False


def zram_set(guest: qemu.Guest, modules: Sequence[str], page_size: int) -> ZramSet:
    """Load zram (and what it needs), send the data set through it, unload it."""
    run = clients.run_zram(guest, modules, IMAGE_SET, page_size, timeout=300)
    pages, stats = run.pages, run.mm_stat
    if not run.ok:
        what = (
            f"zram-fail: {run.failed}"
            if run.failed
            else run.protocol or f"the data set run exited {run.rc}: {run.lines[-5:]}"
        )
        return ZramSet(False, what, pages, stats)
    w, c = stats["written"], stats["compacted"]
    summary = (
        f"{pages} pages ({w['orig_data_size']} bytes stored, {w['same_pages']} same-filled) "
        f"in {w['mem_used_total'] // page_size} pool pages; read back identical after discarding "
        f"half and a compaction that freed {c['pages_compacted']} pages"
    )
    return ZramSet(True, summary, pages, stats)


def workload_pages(batches: Sequence[Sequence[str]], api: KernelApi, side: Side) -> list[int]:
    """Pool pages after each batch of the workload, from the model of the side's allocator.

    The suite of the same boot checked every one of them against the guest's `stats`."""
    driver = DriverModel(api, side.policy)
    pages: list[int] = []
    for lines in batches:
        driver.values = []
        for line in lines:
            driver.run(line)
        pages += [int(v) for k, v in driver.values if k == "pages"]
    return pages


# --- the comparison -------------------------------------------------------------------------


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 4) if b else None


@dataclass
class Comparison:
    """What one boot measured of ours and the baseline."""

    kernel: str
    release: str
    baseline: str
    bench_n: int
    page_size: int = 4096  # the guest's: mm_stat counts bytes
    suites: dict[str, str] = field(default_factory=dict)  # allocator -> pass or the failure
    benches: list[Bench] = field(default_factory=list)  # in load order
    zram: dict[str, ZramSet] = field(default_factory=dict)
    zswap: dict[str, str] = field(default_factory=dict)  # allocator -> its round trip, said
    workload: dict[str, list[int]] = field(default_factory=dict)  # pages after each batch
    instructions: dict[str, Instructions] = field(default_factory=dict)  # counted boot's
    instructions_note: str = ""
    notes: list[str] = field(default_factory=list)

    def instruction_ratios(self) -> dict[str, float]:
        """own / baseline instructions per call of each phase both ran (exact)."""
        own, base = self.instructions.get("own"), self.instructions.get(self.baseline)
        if own is None or base is None:
            return {}
        return {
            k: round(n / base.per_call[k], 4)
            for k, n in own.per_call.items()
            if base.per_call.get(k)
        }

    def _first(self, allocator: str) -> Bench | None:
        return next((b for b in self.benches if b.allocator == allocator), None)

    def pages(self) -> dict[str, dict[str, int]]:
        """Each exact measure of pool size: allocator -> measure -> pages."""
        out: dict[str, dict[str, int]] = {}
        for allocator in ("own", self.baseline):
            m: dict[str, int] = {}
            if b := self._first(allocator):
                m["bench_full"], m["bench_half"] = b.pages_full, b.pages_half
            if pages := self.workload.get(allocator):
                m["workload_peak"], m["workload_sum"] = max(pages), sum(pages)
            z = self.zram.get(allocator)
            if z is not None and z.ok:
                m["zram_written"] = z.mm_stat["written"]["mem_used_total"] // self.page_size
                m["zram_compacted"] = z.mm_stat["compacted"]["mem_used_total"] // self.page_size
            out[allocator] = m
        return out

    def density(self) -> dict[str, float | None]:
        """own / baseline for each measure both have: below 1 is denser."""
        pages = self.pages()
        own, base = pages["own"], pages[self.baseline]
        return {k: _ratio(own[k], base[k]) for k in own if k in base}

    def speed(self) -> dict[str, float | None]:
        """Per phase and in total: our best ns/op over the baseline's best, over all loads.

        Other work on the host only ever adds time to a run, so the fastest run of each
        is the least disturbed estimate of its own cost."""
        out: dict[str, float | None] = {}
        own, base = self.best("own"), self.best(self.baseline)
        for what in own.keys() & base.keys():
            out[what] = _ratio(own[what], base[what])
        return dict(sorted(out.items()))

    def best(self, allocator: str) -> dict[str, int]:
        """The fastest ns/op of each phase over the allocator's loads, and their sum."""
        runs = [b for b in self.benches if b.allocator == allocator]
        if not runs:
            return {}
        out = {w: min(b.ns[w] for b in runs) for w in BENCH_TIMES}
        out["total"] = sum(out.values())
        return out

    def speed_paired(self) -> dict[str, float | None]:
        """Per phase and in total: the median over our loads of our ns/op over the mean of
        the baseline's loads next to it (neighbours share the host's slow drift)."""
        ratios: dict[str, list[float]] = {}
        for i, b in enumerate(self.benches):
            if b.allocator != "own":
                continue
            near = [
                self.benches[j]
                for j in (i - 1, i + 1)
                if 0 <= j < len(self.benches) and self.benches[j].allocator == self.baseline
            ]
            if not near:
                continue
            for what in (*BENCH_TIMES, "total"):
                mine = b.total_ns if what == "total" else b.ns[what]
                theirs = [x.total_ns if what == "total" else x.ns[what] for x in near]
                if statistics.mean(theirs):
                    ratios.setdefault(what, []).append(mine / statistics.mean(theirs))
        return {k: round(statistics.median(v), 4) for k, v in ratios.items()}

    def worse(self) -> list[str]:
        """The exact measures where ours needs more pages than the baseline."""
        pages = self.pages()
        own, base = pages["own"], pages[self.baseline]
        return [
            f"{k}: {own[k]} pages, {self.baseline} {base[k]}"
            for k in own
            if k in base and own[k] > base[k]
        ]

    def as_dict(self) -> dict[str, object]:
        return {
            "kernel": self.kernel,
            "release": self.release,
            "baseline": self.baseline,
            "bench": {"objects": self.bench_n, "seed": BENCH_SEED, "repeats": BENCH_REPEATS},
            "suites": self.suites,
            "pages": self.pages(),
            "density": self.density(),
            "ns_per_op": {a: self.best(a) for a in ("own", self.baseline)},
            "speed": self.speed(),
            "speed_paired": self.speed_paired(),
            "loads": [dataclasses.asdict(b) for b in self.benches],
            "zram": {a: dataclasses.asdict(z) for a, z in self.zram.items()},
            "zswap": self.zswap,
            "workload_pages": self.workload,
            "instructions": {a: dataclasses.asdict(i) for a, i in self.instructions.items()},
            "instruction_ratios": self.instruction_ratios(),
            "instructions_note": self.instructions_note,
            "worse": self.worse(),
            "notes": self.notes,
        }

    def rows(self) -> list[tuple[str, ...]]:
        pages, density, speed = self.pages(), self.density(), self.speed()

        def fmt(x: float | None) -> str:
            return "-" if x is None else f"{x:.3f}"

        head = (
            "allocator",
            "bench pages (full/half)",
            "density",
            "ns/op (alloc+write+read+free)",
            "speed",
            "zram mem_used_total",
            "zram ratio",
            "suite",
        )
        out: list[tuple[str, ...]] = [head]
        for a in ("own", self.baseline):
            m, ns = pages[a], self.best(a)
            mine = a == "own"
            zram = m.get("zram_written")
            out.append(
                (
                    a,
                    f"{m['bench_full']}/{m['bench_half']}" if "bench_full" in m else "-",
                    fmt(density.get("bench_full")) if mine or "bench_full" not in m else "1",
                    (f"{ns['total']} ({'+'.join(str(ns[w]) for w in BENCH_TIMES)})") if ns else "-",
                    fmt(speed.get("total")) if mine or not ns else "1",
                    f"{zram * self.page_size}" if zram is not None else "-",
                    fmt(density.get("zram_written")) if mine or zram is None else "1",
                    self.suites.get(a, "-"),
                )
            )
        return out

    def table(self) -> str:
        rows = self.rows()
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join(
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
        )

    def markdown(self) -> str:
        rows = self.rows()
        lines = [
            f"# zskit compare: own against {self.baseline} on Linux {self.release}",
            "",
            "| " + " | ".join(rows[0]) + " |",
            "|" + "---|" * len(rows[0]),
            *("| " + " | ".join(r) + " |" for r in rows[1:]),
            "",
            "Ratios are own / "
            f"{self.baseline}: density in pool pages (exact, below 1 is denser), speed in "
            "ns per object (the fastest of all runs of each in the same boot, per phase; "
            "under TCG on a busy host expect tens of percent between boots).",
            "",
            "| measure | own | " + self.baseline + " | ratio |",
            "|---|---|---|---|",
        ]
        pages, density = self.pages(), self.density()
        for k, r in density.items():
            lines.append(f"| {k} pages | {pages['own'][k]} | {pages[self.baseline][k]} | {r} |")
        for k, r in self.speed().items():
            own, base = self.best("own").get(k), self.best(self.baseline).get(k)
            lines.append(f"| {k} ns/op | {own} | {base} | {r} |")
        ratios = self.instruction_ratios()
        if ratios:
            mine, theirs = self.instructions["own"], self.instructions[self.baseline]
            lines += ["", f"| instructions per call | own | {self.baseline} | ratio |"]
            lines.append("|---|---|---|---|")
            for k, r in ratios.items():
                lines.append(f"| {k} | {mine.per_call[k]:.1f} | {theirs.per_call[k]:.1f} | {r} |")
        if self.instructions_note:
            lines += ["", f"Instructions: {self.instructions_note}."]
        worse = self.worse()
        if worse:
            lines += ["", "Where ours needs more pages than " + self.baseline + ":", ""]
            lines += [f"- {w}" for w in worse]
        for a, z in self.zram.items():
            lines += ["", f"zram on {a}: {z.summary}"]
            if z.round_trip:
                lines.append(f"zram round trip on {a}: {z.round_trip}")
        for a, said in self.zswap.items():
            lines += ["", f"zswap on {a}: {said}"]
        if self.notes:
            lines += ["", *(f"- {n}" for n in self.notes)]
        return "\n".join(lines) + "\n"


# --- one boot ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What the boot does after our suite."""

    measure: bool = True  # bench and zram; False: only the baseline's suite
    bench_n: int = BENCH_N
    loads: int = SPEED_LOADS
    zram: bool = True


def _suite(
    guest: qemu.Guest,
    side: Side,
    batches: list[list[str]],
    api: KernelApi,
    result: RunResult,
    p: Progress,
) -> str:
    """The suite on the loaded side, its cases added to result as `<side>/batch-NNN`."""
    sub = new_run(result.kernel_id, side.name, directory=result.directory / side.name)
    check_batches(ZsTest(guest), batches, api, sub, p, side.classes, side.policy)
    result.cases += [dataclasses.replace(c, name=f"{side.name}/{c.name}") for c in sub.cases]
    result.info[f"{side.name}_suite"] = sub.info
    failure = sub.first_failure
    return "pass" if failure is None else f"FAIL ({failure.kind})"


def _zram(guest: qemu.Guest, pair: Pair, side: Side, result: RunResult, p: Progress) -> ZramSet:
    assert pair.zram is not None
    start = time.monotonic()
    page_size = pair.prepared.api.geometry.page_size
    z = zram_set(guest, [*pair.zram_deps, pair.zram], page_size)
    result.cases.append(
        Case(
            f"zram-set/{side.name}",
            time.monotonic() - start,
            None if z.ok else z.summary,
            None if z.ok else "zram",
        )
    )
    p.say(f"zram on {side.name}: {z.summary}")
    if not z.ok:
        return z
    # The round trip of validate too: the generated pages, and mm_stat's accounting checked.
    start = time.monotonic()
    rt = clients.zram_round_trip(guest, pair.zram, page_size, pair.zram_deps)
    z.round_trip, z.round_trip_ok = rt.summary, rt.ok
    failure = None if rt.ok else "\n".join([rt.summary, *rt.details])
    result.cases.append(
        Case(f"zram-round-trip/{side.name}", time.monotonic() - start, failure, rt.kind)
    )
    p.say(rt.summary)
    return z


def _serves_zswap(pair: Pair, side: Side) -> bool:
    """Whether the kernel's zswap can run on this side's zsmalloc.ko (its zpool driver)."""
    ko = side.allocator_ko
    if ko is None or clients.zswap_runnable(pair.prepared.kernel) is not None:
        return False
    api = pair.prepared.api
    return ko.stem == "zsmalloc" and (side is pair.baseline or render.registers_zpool(api, ko.stem))


def _zswap(guest: qemu.Guest, pair: Pair, side: Side, result: RunResult, p: Progress) -> str:
    start = time.monotonic()
    got = clients.zswap_round_trip(guest, pair.prepared.api.geometry.page_size)
    failure = None if got.ok else "\n".join([got.summary, *got.details])
    result.cases.append(Case(f"zswap/{side.name}", time.monotonic() - start, failure, got.kind))
    p.say(f"zswap on {side.name}: {got.summary}")
    return got.summary


def after_suite(
    pair: Pair, config: Config, batches: list[list[str]], plan: Plan, comparison: Comparison
) -> Callable[[qemu.Guest, RunResult, Progress], None]:
    """run.run's `after` step: ours is loaded and its suite has run."""
    api = pair.prepared.api
    own, base = pair.own, pair.baseline

    def step(guest: qemu.Guest, result: RunResult, p: Progress) -> None:
        zstest = ZsTest(guest)
        failure = result.first_failure
        if plan.measure:
            clock = guest.run(f"cat {CLOCKSOURCE}").strip()
            comparison.notes.append(f"guest clocksource {clock}")
            if "jiffies" in clock:  # a minimal kernel without TSC or HPET drivers
                comparison.notes.append(
                    "ktime advances in jiffies here: each phase's time is rounded to a tick, "
                    "so raise --bench-objects for finer speed ratios"
                )
        comparison.suites["own"] = "pass" if failure is None else f"FAIL ({failure.kind})"
        order = [own, base] + [(own, base)[i % 2] for i in range(plan.loads - 2)]
        loaded = own
        for load, side in enumerate(order):
            if load > 0:
                loaded.unload(guest)
                side.load(guest)
                loaded = side
            if load == 1:
                p.say(f"{base.name} loaded: its suite")
                comparison.suites[base.name] = _suite(guest, base, batches, api, result, p)
            if not plan.measure:
                if load == 1:
                    break
                continue
            first = load < 2
            start = time.monotonic()
            model = DriverModel(api, side.policy) if first else None
            b, problems = bench(zstest, side.name, load, plan.bench_n, model)
            comparison.benches.append(b)
            p.say(
                f"bench {side.name}: {b.pages_full}/{b.pages_half} pages, "
                + ", ".join(f"{w} {ns} ns" for w, ns in b.ns.items())
            )
            if first:
                failure_text = "\n".join(problems) or None
                result.cases.append(
                    Case(
                        f"bench/{side.name}",
                        time.monotonic() - start,
                        failure_text,
                        "pages" if problems else None,
                    )
                )
                if plan.zram and pair.zram is not None:
                    comparison.zram[side.name] = _zram(guest, pair, side, result, p)
                if plan.zram and _serves_zswap(pair, side):
                    comparison.zswap[side.name] = _zswap(guest, pair, side, result, p)
        loaded.unload(guest)
        if plan.measure:
            # The workload's pages, not the probes': those are checks, fragmentation made
            # on purpose, not a data set.
            workload = default_batches(config.with_overrides(workload_probes="never"), api)
            comparison.workload = {s.name: workload_pages(workload, api, s) for s in (own, base)}
            # Reported, not a failed case: density is a goal of the allocator's design, and
            # a run that measured it correctly has done its job.
            for line in comparison.worse():
                p.say(f"DENSITY: ours is worse on {line}")
            _write(comparison, result)

    return step


def _write(comparison: Comparison, result: RunResult) -> None:
    result.info["comparison"] = comparison.as_dict()
    (result.directory / "compare.json").write_text(
        json.dumps(comparison.as_dict(), indent=2) + "\n"
    )
    (result.directory / "compare.md").write_text(comparison.markdown())


def compare(
    config: Config,
    p: Progress,
    plan: Plan = Plan(),
    results_dir: Path | None = None,
    refresh: bool = False,
) -> tuple[RunResult, Comparison | None]:
    """Build both allocators, boot once, run ours, the baseline, and (plan.measure) the rest."""
    config = config.with_overrides(allocator="own")
    if results_dir is None and plan.measure:
        results_dir = new_results_dir("compare")
    try:
        pair = prepare(config, p, refresh)
    except StageError as e:
        result = new_run(config.kernel_id, "own", directory=results_dir)
        stage = p.failed_stage or "setup"
        result.cases.append(Case(stage, failure=f"{stage}: {e}", kind=getattr(e, "kind", "error")))
        result.write()
        p.say(f"FAILED in {stage}: {e}")
        return result, None
    comparison = Comparison(
        config.kernel,
        pair.prepared.kernel.release,
        pair.baseline.name,
        plan.bench_n,
        pair.prepared.api.geometry.page_size,
    )
    comparison.notes += [pair.crc_note, pair.zram_note]
    fast = pair.prepared.image.fast_channel and config.fast_channel
    batches = default_batches(config, pair.prepared.api, fast)
    options = RunOptions(
        results_dir=results_dir, after=after_suite(pair, config, batches, plan, comparison)
    )
    result = run(config, p, options, prepared=pair.prepared)
    if plan.measure:
        found, comparison.instructions_note = count_sides(pair, config, result.directory, p)
        comparison.instructions = found
        for k, r in comparison.instruction_ratios().items():
            p.say(f"instructions per {k}: own/{pair.baseline.name} {r}")
        _write(comparison, result)
        result.write()
    return result, comparison if plan.measure else None


def _allocator_ko(built: build.BuildResult) -> Path | None:
    return next((ko for ko in built.modules if ko.stem != "zstest"), None)


def count_sides(
    pair: Pair, config: Config, directory: Path, p: Progress, names: Sequence[str] = ()
) -> tuple[dict[str, Instructions], str]:
    """The counted bench on both allocators (or those `names` names) in one boot with the
    counting plugin: their instructions per call, and how they were counted or why not."""
    sides = [s for s in (pair.own, pair.baseline) if not names or s.name in names]
    loads = [
        Load(s.name, s.modules, s.modules, s.allocator_ko.stem, s.allocator_ko)
        for s in sides
        if s.allocator_ko is not None
    ]
    # Nothing loads at boot: each side is loaded for its count.
    image = dataclasses.replace(pair.prepared.image, modules=())
    prepared = dataclasses.replace(pair.prepared, image=image)
    found, note = counted_boot(
        config, p, prepared, directory / "counted", loads, pair.prepared.api.map_object
    )
    skipped = [s.name for s in sides if s.allocator_ko is None]
    if skipped:
        note += f"; {', '.join(skipped)} not counted: built into the kernel, not in module space"
    return found, note
