"""`zskit bench` (`make qemu-bench`): what each allocator's memory costs on real data.

One boot holds the corpora (check/corpus.py) in its initramfs. The guest compresses
each corpus page by page with the kernel's own compressor (zstest's pages file), and
the same objects, of those lengths and in the same order, go to every allocator:
ours, the kernel's zsmalloc (upstream as a module, or the built-in one), and a
kmalloc pool of zstest, the slab allocator the seed compares zsmalloc with. Every
command is checked against the model as in a run (kmalloc's against
model/kmalloc.py), so each figure is also a verdict. Where zsmalloc is a module
(Debian's 6.1, the source-built kernels) each corpus then goes through the kernel's
zram.ko on ours and on upstream, read back identical (scripts/zram.sh), with zram's
own rule for what it stores whole.

Per corpus, compressor and allocator: pool bytes per compressed and per original
byte and their inverse, utilisation; pages and compressed bytes by class; what is
left after freeing a random half and, on a fresh fill, the oldest half, before and
after compaction; the growth of the kmalloc caches from /proc/slabinfo (which also
holds zstest's own bookkeeping, about 32 bytes an object whatever the allocator);
and the seed's claim: objects between PAGE_SIZE/2 and PAGE_SIZE alone, kmalloc
against zsmalloc. Wall time is the bench's own, labelled as such.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ...check import corpus as corpora
from ...check.driver import DriverModel, check_classes, check_commands
from ...guest import clients, qemu
from ...guest.modules import load_modules
from ...guest.zstest import ZsTest
from ...kernel.api import KernelApi
from ...kernel.manifest import Kernel
from ...model import class_table
from ...progress import Progress, StageError
from ...report import Case, RunResult, new_results_dir
from ..compare import GUEST_DIR, Pair, Side, module_chain, prepare
from ..config import Config
from ..run import RunOptions, run
from . import plots

ALLOCATORS = ("own", "upstream", "kmalloc", "zbud", "z3fold")
ZPOOLS = ("zbud", "z3fold")  # through zswap, where the kernel still has them (6.1)
COMPRESSORS = ("lzo-rle",)
# crypto/<module>.ko of a compressor, where it is a module; its CONFIG_CRYPTO_<option>.
COMPRESSOR_MODULES = {"lzo-rle": "lzo", "lzo": "lzo", "lz4": "lz4", "lz4hc": "lz4hc"}
CORPUS_DIR = "/corpus"
POOL = "bench"
BATCH_LINES = 16384
SEED = 20261202
MIB = 1 << 20
ROOT_SHARE = 90  # percent of the guest's memory its root tmpfs may take
BASE_MEMORY_MB = 512  # the kernel, the image's other files, the model's headroom
HISTOGRAM_STEP = 32  # bytes per bucket of the size distribution
SLAB_PAGES = "awk '/^kmalloc-/ && !/^kmalloc-cg-/ {s += $15 * $6} END {print s + 0}' /proc/slabinfo"


@dataclass
class Fill:
    """One allocator's figures on one corpus and compressor."""

    allocator: str
    objects: int
    compressed_bytes: int
    original_bytes: int
    pool_bytes: int  # zsmalloc: its pages; kmalloc: the slots (ksize)
    slab_bytes: dict[str, int]  # kmalloc caches' growth since before the fill, by moment
    freed: dict[str, dict[str, int]]  # random-half / oldest-half: pool bytes before, after
    claim: dict[str, int]  # the objects above PAGE_SIZE/2 alone
    classes: list[dict[str, int]] = field(default_factory=list)  # zsmalloc only

    def as_dict(self) -> dict[str, object]:
        def ratio(a: int, b: int) -> float | None:
            return round(a / b, 5) if b else None

        return {
            **self.__dict__,
            "bytes_per_compressed_byte": ratio(self.pool_bytes, self.compressed_bytes),
            "bytes_per_original_byte": ratio(self.pool_bytes, self.original_bytes),
            "utilisation": ratio(self.compressed_bytes, self.pool_bytes),
        }


@dataclass
class Series:
    """One corpus through one compressor: the objects, and each allocator's figures."""

    corpus: dict[str, object]
    compressor: str
    pages: int
    same_filled: int  # pages zram would keep out of zsmalloc: not stored here either
    lengths: list[int] = field(repr=False)  # compressed length of each stored page
    fills: dict[str, Fill] = field(default_factory=dict)
    # Through zram on each zsmalloc: its mm_stat after the writes, after discarding every
    # other 32 KiB and after compacting (zram's own huge-page rule decides the sizes).
    zram: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    # Through zswap, by zpool: its counters while the corpus's pages were out.
    zswap: dict[str, dict[str, int]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        sizes = Counter(n // HISTOGRAM_STEP * HISTOGRAM_STEP for n in self.lengths)
        return {
            "corpus": self.corpus,
            "compressor": self.compressor,
            "pages": self.pages,
            "same_filled": self.same_filled,
            "stored": len(self.lengths),
            "compressed_bytes": sum(self.lengths),
            "size_histogram": {str(k): v for k, v in sorted(sizes.items())},
            "fills": {name: f.as_dict() for name, f in self.fills.items()},
            "zram": self.zram,
            "zswap": self.zswap,
        }


@dataclass
class Bench:
    kernel: str
    release: str
    page_size: int
    baseline: str  # upstream or builtin
    series: list[Series] = field(default_factory=list)
    class_sizes: dict[str, list[int]] = field(default_factory=dict)  # by allocator
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the whole bench, under TCG

    def as_dict(self) -> dict[str, object]:
        return {
            "kernel": self.kernel,
            "release": self.release,
            "page_size": self.page_size,
            "baseline": self.baseline,
            "wall_seconds": round(self.seconds, 1),
            "class_sizes": self.class_sizes,
            "notes": self.notes,
            "series": [s.as_dict() for s in self.series],
        }


# --- the host's side: what to build, and how much guest it needs ---------------------


def check_allocators(names: Sequence[str]) -> tuple[str, ...]:
    unknown = [n for n in names if n not in (*ALLOCATORS, "builtin")]
    if unknown or not names:
        raise StageError(
            f"--allocators {','.join(names)}: choose from {', '.join(ALLOCATORS)} "
            "(upstream means the kernel's own zsmalloc, a module or built in)"
        )
    return tuple(dict.fromkeys("upstream" if n == "builtin" else n for n in names))


def zswap_zpools(kernel: Kernel, asked: Sequence[str], explicit: bool) -> tuple[list[str], str]:
    """The zpools zswap is run on (zsmalloc beside them), the modules they need, and a
    note; a zpool asked for by name that the kernel lacks is refused."""
    wanted = [z for z in ZPOOLS if z in asked]
    missing = [
        z
        for z in wanted
        if kernel.config("ZSWAP") != "y"
        or kernel.config("ZPOOL") != "y"
        or kernel.config(z.upper()) not in ("y", "m")
    ]
    if missing and explicit:
        raise StageError(
            f"Linux {kernel.release} has no {', '.join(missing)} for zswap (CONFIG_ZSWAP, "
            f"CONFIG_ZPOOL, CONFIG_{missing[0].upper()}: zbud and z3fold left the kernel in "
            "6.15); leave them out of --allocators"
        )
    kept = [z for z in wanted if z not in missing]
    note = f"{', '.join(missing)}: not in Linux {kernel.release}" if missing else ""
    return kept, note


def guest_memory_mb(corpus_bytes: int) -> int:
    """The initramfs is in memory twice while it unpacks; then the corpora, zram.sh's copy
    of one and a pool of at most its size."""
    return BASE_MEMORY_MB + 3 * corpus_bytes // MIB


def check_memory(need_mb: int) -> None:
    host_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // MIB
    if need_mb > host_mb * 3 // 4:
        raise StageError(
            f"the corpora need a guest of {need_mb} MiB (3 x their size + {BASE_MEMORY_MB} MiB) "
            f"and this host has {host_mb} MiB: lower --size or bench fewer corpora"
        )


def compressor_modules(kernel: Kernel, compressors: Sequence[str]) -> dict[str, list[Path]]:
    """The modules each compressor needs loaded (none where it is built in); a compressor
    the kernel lacks is refused, saying which option it needs."""
    found: dict[str, list[Path]] = {}
    for alg in compressors:
        module = COMPRESSOR_MODULES.get(alg, alg)
        option = module.upper()
        setting = kernel.config(f"CRYPTO_{option}")
        if setting == "y":
            found[alg] = []
            continue
        kos = sorted(kernel.modules.glob(f"kernel/crypto/{module}.ko*")) if kernel.modules else []
        if setting != "m" or not kos or kernel.modules is None:
            raise StageError(
                f"compressor {alg}: Linux {kernel.release} lacks it (CONFIG_CRYPTO_{option} "
                f"is {setting or 'not set'}); choose another with --compressors"
            )
        found[alg] = module_chain(kernel.modules, kos[0])
    return found


# --- the guest's side ------------------------------------------------------------------


class Diverged(StageError):
    kind = "divergence"


def _program(
    zstest: ZsTest, driver: DriverModel, lines: Sequence[str], what: str
) -> list[tuple[str, str]]:
    """Run lines in batches, each checked against the model; the values they printed."""
    values: list[tuple[str, str]] = []
    for start in range(0, len(lines), BATCH_LINES):
        chunk = list(lines[start : start + BATCH_LINES])
        result = zstest.batch(chunk)
        problems = check_commands(start // BATCH_LINES + 1, chunk, result, driver)
        if problems:
            raise Diverged(f"{what}: {problems[0]}")
        values += result.values
    return values


def _ints(values: Sequence[tuple[str, str]], key: str) -> list[int]:
    return [int(v) for k, v in values if k == key]


def _slab_bytes(guest: qemu.Guest, page_size: int) -> int:
    return int(guest.run(SLAB_PAGES).strip() or 0) * page_size


@dataclass
class Target:
    """An allocator as the bench drives it."""

    name: str
    side: Side | None  # the zsmalloc module loaded for it; None for kmalloc
    create: str  # create or kcreate


def _measure(
    guest: qemu.Guest, api: KernelApi, target: Target, lengths: Sequence[int], original: int
) -> Fill:
    page = api.geometry.page_size
    zstest = ZsTest(guest)
    side = target.side
    driver = DriverModel(api, side.policy if side else None)
    sizes = [min(n, page) for n in lengths]
    zs = side is not None
    what = target.name

    def fill(chosen: Sequence[int]) -> list[str]:
        return [f"{target.create} {POOL}", *(f"alloc {i} {s}" for i, s in enumerate(chosen))]

    def held(values: Sequence[tuple[str, str]]) -> list[int]:
        return [n * page for n in _ints(values, "pages")] if zs else _ints(values, "slot_bytes")

    slab_before = _slab_bytes(guest, page)
    filled = _program(zstest, driver, [*fill(sizes), "stats"], f"{what} fill")
    slab = {"filled": _slab_bytes(guest, page) - slab_before}
    classes: list[dict[str, int]] = []
    if side is not None:  # zs, spelled so that mypy knows side
        model = driver.model(POOL)
        if side.classes:
            problems = check_classes(0, zstest.classes(POOL), model)
            if problems:
                raise Diverged(f"{what} classes: {problems[0]}")
        compressed: Counter[int] = Counter()
        for s in sizes:
            compressed[model.class_of(s).index] += s
        classes = [
            {
                "index": row.index,
                "size": row.size,
                "objects": row.obj_used,
                "pages": row.pages_used,
                "compressed_bytes": compressed[row.index],
            }
            for row in model.class_stats()
            if row.pages_used
        ]
    freed: dict[str, dict[str, int]] = {}
    half = len(sizes) // 2
    orders = {
        "random-half": random.Random(SEED).sample(range(len(sizes)), half),
        "oldest-half": list(range(half)),
    }
    for number, (name, order) in enumerate(orders.items()):
        lines = [f"free {i}" for i in order] + ["stats"] + (["compact", "stats"] if zs else [])
        if number:  # a fresh fill for each free pattern
            lines = [f"destroy {POOL}", *fill(sizes), *lines]
        left = held(_program(zstest, driver, lines, f"{what} {name}"))
        freed[name] = {"before": left[0], "after_compaction": left[-1]}
        slab[name] = _slab_bytes(guest, page) - slab_before
    big = [s for s in sizes if s > page // 2]
    claim_values = _program(
        zstest, driver, [f"destroy {POOL}", *fill(big), "stats", f"destroy {POOL}"], f"{what} claim"
    )
    return Fill(
        allocator=target.name,
        objects=len(sizes),
        compressed_bytes=sum(sizes),
        original_bytes=original,
        pool_bytes=held(filled)[-1],
        slab_bytes=slab,
        freed=freed,
        claim={
            "objects": len(big),
            "compressed_bytes": sum(big),
            "pool_bytes": held(claim_values)[-1],
        },
        classes=classes,
    )


def _zram(
    guest: qemu.Guest,
    pair: Pair,
    series: Series,
    allocator: str,
    page_size: int,
    result: RunResult,
    p: Progress,
) -> None:
    """The corpus through the kernel's zram.ko on the loaded zsmalloc, read back identical
    after the discards and the compaction (scripts/zram.sh; no writeback)."""
    assert pair.zram is not None
    start = time.monotonic()
    name = str(series.corpus["name"])
    pages = series.pages
    data = clients.DataSet(
        name,
        f"{CORPUS_DIR}/{Path(str(series.corpus['path'])).name}",
        -(-pages * page_size // MIB) * 4096 // page_size,
        {"COMP": series.compressor},
    )
    run = clients.run_zram(
        guest,
        [*pair.zram_deps, pair.zram],
        data,
        page_size,
        timeout=max(300, pages // 50),
        writeback=False,
    )
    case = f"zram/{name}/{series.compressor}/{allocator}"
    failure = None if run.ok else (run.failed or run.protocol or "\n".join(run.lines[-5:]))
    result.cases.append(Case(case, time.monotonic() - start, failure, None if run.ok else "zram"))
    if failure:
        p.say(f"FAIL {case}: {failure}")
        return
    series.zram[allocator] = run.mm_stat
    w = run.mm_stat["written"]
    p.say(f"{case}: {w['mem_used_total'] / max(w['compr_data_size'], 1):.4f} pool per compressed")


def _zswap(
    guest: qemu.Guest,
    series: Series,
    zpools: Sequence[str],
    page_size: int,
    result: RunResult,
    p: Progress,
) -> None:
    """The corpus's pages through the kernel's zswap on each zpool, read back intact."""
    start = time.monotonic()
    name = str(series.corpus["name"])
    run = clients.run_zswap(
        guest,
        f"{CORPUS_DIR}/{Path(str(series.corpus['path'])).name}",
        zpools,
        series.compressor,
        series.pages * page_size // 1024 + 4096,
        timeout=max(300, series.pages // 20),
    )
    case = f"zswap/{name}/{series.compressor}"
    failure = None if run.ok else (run.failed or "\n".join(run.lines[-5:]))
    result.cases.append(Case(case, time.monotonic() - start, failure, None if run.ok else "zswap"))
    if failure:
        p.say(f"FAIL {case}: {failure}")
        return
    # zswap refuses a page by its compressed length, what its zpool cannot hold (above
    # a page, or a page less its header on zbud and z3fold): the pages it stored (its
    # count has the same-filled ones too) are the shortest.
    fit = sorted(n for n in series.lengths if n <= page_size)
    for counters in run.pools.values():
        stored = counters["stored_pages"] - counters["same_filled_pages"]
        if 0 <= stored <= len(fit):
            counters["compressed_bytes"] = sum(fit[:stored])
    series.zswap = run.pools
    p.say(
        f"{case}: "
        + ", ".join(
            f"{z} {c['pool_total_size'] / max(c.get('compressed_bytes', 0), 1):.4f}"
            for z, c in run.pools.items()
        )
    )


def _compress(
    guest: qemu.Guest, corpus: corpora.Corpus, alg: str, page_size: int
) -> tuple[list[int], int]:
    """The compressed length of each page of the corpus, in the guest; and how many were
    same-filled (length 0: zram keeps them out of zsmalloc, so the bench does too)."""
    zstest = ZsTest(guest)
    result = zstest.batch([f"compressor {alg}"])
    if result.failures:
        f = result.failures[0]
        raise StageError(f"compressor {alg}: zstest says {f.reason} ({f.errno})")
    bs = max(page_size, 256 << 10)
    rc, out = guest.run_status(
        f"dd if={CORPUS_DIR}/{corpus.path.name} of=/sys/kernel/debug/zstest/pages bs={bs} "
        "2>/tmp/zskit-dd || { cat /tmp/zskit-dd; false; }",
        timeout=max(120, corpus.pages // 100),
    )
    if rc:
        raise StageError(f"compressing {corpus.name} with {alg} in the guest failed: {out}")
    lengths = [int(line) for line in zstest.read_file("pages").split()]
    if len(lengths) != corpus.pages:
        raise StageError(
            f"zstest compressed {len(lengths)} pages of {corpus.name}'s {corpus.pages}"
        )
    return [n for n in lengths if n], lengths.count(0)


def density(
    config: Config,
    p: Progress,
    allocators: Sequence[str] | None = None,  # None: every one the kernel has
    corpus_names: Sequence[str] = corpora.NAMES,
    size: int = 256 * MIB,
    compressors: Sequence[str] = COMPRESSORS,
    results_dir: Path | None = None,
) -> tuple[RunResult, Bench | None]:
    """Build the corpora and both zsmalloc modules, boot once, bench every allocator."""
    explicit = allocators is not None
    allocators = check_allocators(allocators or ALLOCATORS)
    need = guest_memory_mb(len(corpus_names) * size)
    check_memory(need)
    started = time.monotonic()
    built: dict[str, corpora.Corpus] = {}
    modules: dict[str, list[Path]] = {}
    zpools: list[str] = []
    notes: list[str] = []

    def extra(kernel: Kernel) -> Mapping[str, Path]:
        with p.stage("corpus"):
            for name in corpus_names:
                built[name] = c = corpora.build(name, size, kernel)
                p.say(f"corpus {name}: {c.pages} pages, sha256 {c.sha256[:16]}, {c.source}")
        modules.update(compressor_modules(kernel, compressors))
        kept, note = zswap_zpools(kernel, allocators, explicit)
        zpools.extend(kept)
        notes.extend([note] if note else [])
        for z in kept:
            if kernel.config(z.upper()) == "m" and kernel.modules is not None:
                modules[z] = module_chain(kernel.modules, kernel.modules / f"kernel/mm/{z}.ko")
        files = {f"{CORPUS_DIR}/{c.path.name}": c.path for c in built.values()}
        for paths in modules.values():
            files.update({f"{GUEST_DIR}/crypto/{ko.name}": ko for ko in paths})
        return files

    config = config.with_overrides(allocator="own")
    results_dir = results_dir or new_results_dir("bench")
    pair = prepare(config, p, extra=extra, purpose="bench")
    api = pair.prepared.api
    page = api.geometry.page_size
    bench = Bench(config.kernel, pair.prepared.kernel.release, page, pair.baseline.name)
    bench.notes += [f"guest memory {max(need, config.memory_mb)} MiB", *notes]
    targets = {
        "own": Target("own", pair.own, "create"),
        "upstream": Target(pair.baseline.name, pair.baseline, "create"),
        "kmalloc": Target("kmalloc", None, "kcreate"),
    }
    for name in ("own", "upstream"):
        if name in allocators:
            side = targets[name].side
            assert side is not None
            pol = side.policy or api.upstream_policy()
            bench.class_sizes[targets[name].name] = [c.size for c in class_table(pol)]

    def step(guest: qemu.Guest, result: RunResult, p: Progress) -> None:
        loaded = pair.own
        # The root is a tmpfs of half the memory; zram.sh keeps a copy of a corpus there.
        guest.run_status(f"mount -o remount,size={ROOT_SHARE}% /")
        needed = (f"{GUEST_DIR}/crypto/{ko.name}" for chain in modules.values() for ko in chain)
        load_modules(guest, list(dict.fromkeys(needed)))
        for c in built.values():
            for alg in compressors:
                with p.stage("compress"):
                    lengths, same = _compress(guest, c, alg, page)
                series = Series(c.record(), alg, c.pages, same, lengths)
                bench.series.append(series)
                p.say(f"{c.name}/{alg}: {len(lengths)} objects, {sum(lengths)} bytes")
        order = [a for a in ("own", "kmalloc", "upstream") if a in allocators]
        for name in order:
            target = targets[name]
            side = target.side
            if side is not None and side is not loaded:
                loaded.unload(guest)
                side.load(guest)
                loaded = side
            for series in bench.series:
                start = time.monotonic()
                case = f"bench/{series.corpus['name']}/{series.compressor}/{target.name}"
                try:
                    fill = _measure(guest, api, target, series.lengths, series.pages * page)
                except Diverged as e:
                    result.cases.append(Case(case, time.monotonic() - start, str(e), e.kind))
                    p.say(f"FAIL {case}: {e}")
                    continue
                series.fills[target.name] = fill
                result.cases.append(Case(case, time.monotonic() - start))
                p.say(
                    f"{case}: {fill.pool_bytes / max(fill.compressed_bytes, 1):.4f} bytes per "
                    "compressed byte"
                )
                if side is not None and pair.zram is not None:
                    _zram(guest, pair, series, target.name, page, result, p)
        if zpools:
            # zsmalloc beside them where it is a module that registered its zpool.
            with_zs = (
                [*zpools, "zsmalloc"] if loaded is pair.baseline and loaded.modules[:-1] else zpools
            )
            for series in bench.series:
                _zswap(guest, series, with_zs, page, result, p)
        loaded.unload(guest)

    result = run(
        config.with_overrides(memory_mb=max(need, config.memory_mb)),
        p,
        RunOptions(results_dir=results_dir, after=step),
        prepared=pair.prepared,
    )
    bench.seconds = time.monotonic() - started
    if bench.series:
        write(bench, results_dir)
    return result, bench if bench.series else None


def write(bench: Bench, directory: Path) -> None:
    (directory / "bench.json").write_text(json.dumps(bench.as_dict(), indent=2) + "\n")
    (directory / "bench.md").write_text(markdown(bench))
    plots.draw(bench.as_dict(), directory)


def _client_table(
    bench: Bench,
    caption: str,
    names: Sequence[str],
    cell: Callable[[Series, str], str | None],
) -> list[str]:
    """A table of an in-kernel client's figures: a row per series, a column per name."""
    if not names:
        return []
    out = ["", caption, "", "| corpus | compressor | " + " | ".join(names) + " |"]
    out.append("|---|---|" + "---|" * len(names))
    for s in bench.series:
        cells = [cell(s, n) or "-" for n in names]
        out.append(f"| {s.corpus['name']} | {s.compressor} | " + " | ".join(cells) + " |")
    return out


def _zswap_cell(s: Series, zpool: str) -> str | None:
    c = s.zswap.get(zpool)
    if c is None or not c.get("compressed_bytes"):
        return None
    return f"{c['pool_total_size'] / c['compressed_bytes']:.5f} ({c['stored_pages']} stored)"


def _zram_cell(s: Series, allocator: str) -> str | None:
    stat = s.zram.get(allocator)
    if stat is None:
        return None
    w, c = stat["written"], stat["compacted"]
    ratio = w["mem_used_total"] / max(w["compr_data_size"], 1)
    return (
        f"{ratio:.5f}, {c['mem_used_total'] / MIB:.2f} MiB after "
        f"({c['pages_compacted']} pages compacted)"
    )


def markdown(bench: Bench) -> str:
    """The tables of bench.md: density by corpus, what freeing leaves, the seed's claim."""
    names = [
        n for n in (bench.baseline, "own", "kmalloc") if any(n in s.fills for s in bench.series)
    ]
    out = [
        f"# zskit bench: Linux {bench.release}, {bench.page_size}-byte pages",
        "",
        "Pool bytes per compressed byte (lower is better; utilisation in brackets). "
        "zsmalloc: its pages; kmalloc: the slots its objects take (ksize), and in the last "
        "column the pages the kmalloc caches grew by (slabinfo).",
        "",
        "| corpus | compressor | objects | compressed MiB | "
        + " | ".join(names)
        + " | kmalloc slabs |",
        "|---|---|---|---|" + "---|" * (len(names) + 1),
    ]
    for s in bench.series:
        cells = []
        for n in names:
            f = s.fills.get(n)
            if f is None:
                cells.append("-")
                continue
            d = f.as_dict()
            cells.append(f"{d['bytes_per_compressed_byte']} ({d['utilisation']:.1%})")
        k = s.fills.get("kmalloc")
        cells.append(f"{k.slab_bytes['filled'] / k.compressed_bytes:.5f}" if k else "-")
        out.append(
            f"| {s.corpus['name']} | {s.compressor} | {len(s.lengths)} | "
            f"{sum(s.lengths) / MIB:.1f} | " + " | ".join(cells) + " |"
        )
    out += _client_table(
        bench,
        "Through zram (the kernel's zram.ko on each zsmalloc, its own huge-page rule): "
        "mem_used_total per compr_data_size after the writes, and pool MiB after "
        "discarding every other 32 KiB and compacting.",
        list(dict.fromkeys(a for s in bench.series for a in s.zram)),
        _zram_cell,
    )
    out += _client_table(
        bench,
        "Through zswap (the kernel's, the same pages paged out on each zpool, a ramdisk "
        "behind it): pool_total_size per compressed byte of the pages it stored (the "
        "shortest: it refuses by length what the zpool cannot hold), and how many.",
        list(dict.fromkeys(z for s in bench.series for z in s.zswap)),
        _zswap_cell,
    )
    out += [
        "",
        "After freeing half the objects: pool MiB before / after compaction; kmalloc, which "
        "cannot compact: its slots / the slab pages the frees leave (partly empty slabs stay).",
        "",
        "| corpus | pattern | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for s in bench.series:
        for pattern in ("random-half", "oldest-half"):
            cells = []
            for n in names:
                f = s.fills.get(n)
                freed = f.freed[pattern] if f else None
                if f is None or freed is None:
                    cells.append("-")
                elif n == "kmalloc":
                    slabs = f.slab_bytes[pattern]
                    cells.append(f"{freed['before'] / MIB:.2f} / {slabs / MIB:.2f} slabs")
                else:
                    after = freed["after_compaction"]
                    cells.append(f"{freed['before'] / MIB:.2f} / {after / MIB:.2f}")
            out.append(f"| {s.corpus['name']} | {pattern} | " + " | ".join(cells) + " |")
    out += [
        "",
        f"The seed's claim: objects of {bench.page_size // 2 + 1}..{bench.page_size} bytes "
        "alone, memory used (MiB) and its ratio to kmalloc's.",
        "",
        "| corpus | objects | kmalloc | " + " | ".join(n for n in names if n != "kmalloc") + " |",
        "|---|---|---|" + "---|" * (len(names) - 1),
    ]
    for s in bench.series:
        k = s.fills.get("kmalloc")
        if k is None:
            continue
        cells = []
        for n in names:
            f = s.fills.get(n)
            if n == "kmalloc" or f is None:
                continue
            ratio = f.claim["pool_bytes"] / k.claim["pool_bytes"] if k.claim["pool_bytes"] else 0
            cells.append(f"{f.claim['pool_bytes'] / MIB:.2f} ({ratio:.3f})")
        out.append(
            f"| {s.corpus['name']} | {k.claim['objects']} | {k.claim['pool_bytes'] / MIB:.2f} | "
            + " | ".join(cells)
            + " |"
        )
    out += ["", f"Wall time of the bench (TCG, not a cost figure): {bench.seconds:.0f} s."]
    out += [f"- {n}" for n in bench.notes]
    return "\n".join(out) + "\n"
