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

import os
import random
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ...check import corpus as corpora
from ...check.driver import DriverModel, check_classes, check_commands
from ...guest import clients, qemu
from ...guest.modules import load_modules
from ...guest.zstest import ZsTest
from ...kernel.api import KernelApi
from ...kernel.manifest import Kernel
from ...kmod.render import registers_zpool
from ...model import class_table
from ...progress import Progress, StageError
from ...report import Case, RunResult, new_results_dir
from ..compare import GUEST_DIR, Pair, Side, count_sides, module_chain, prepare
from ..config import Config
from ..run import RunOptions, run
from .figures import MIB, Bench, Fill, Series, write

ALLOCATORS = ("own", "upstream", "kmalloc", "zbud", "z3fold")
ZPOOLS = ("zbud", "z3fold")  # through zswap, where the kernel still has them (6.1)
COMPRESSORS = ("lzo-rle",)
# crypto/<module>.ko of a compressor, where it is a module; its CONFIG_CRYPTO_<option>.
COMPRESSOR_MODULES = {"lzo-rle": "lzo", "lzo": "lzo", "lz4": "lz4", "lz4hc": "lz4hc"}
CORPUS_DIR = "/corpus"
POOL = "bench"
BATCH_LINES = 16384
SEED = 20261202
ROOT_SHARE = 90  # percent of the guest's memory its root tmpfs may take
BASE_MEMORY_MB = 512  # the kernel, the image's other files, the model's headroom
SLAB_PAGES = "awk '/^kmalloc-/ && !/^kmalloc-cg-/ {s += $15 * $6} END {print s + 0}' /proc/slabinfo"


# --- the host's side: what to build, and how much guest it needs ---------------------


def guest_file(corpus: Path) -> str:
    """Where the image puts a corpus file of the cache."""
    return f"{CORPUS_DIR}/{corpus.name}"


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
        guest_file(Path(str(series.corpus["path"]))),
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
    label: str | None = None,  # the name the zsmalloc zpool is recorded by (ours: "own")
) -> None:
    """The corpus's pages through the kernel's zswap on each zpool, read back intact."""
    start = time.monotonic()
    name = str(series.corpus["name"])
    run = clients.run_zswap(
        guest,
        guest_file(Path(str(series.corpus["path"]))),
        zpools,
        series.compressor,
        series.pages * page_size // 1024 + 4096,
        timeout=max(300, series.pages // 20),
    )
    case = f"zswap/{name}/{series.compressor}" + (f"/{label}" if label else "")
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
    if label is not None and "zsmalloc" in run.pools:
        run.pools[label] = run.pools.pop("zsmalloc")
    series.zswap.update(run.pools)
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
        f"dd if={guest_file(corpus.path)} of=/sys/kernel/debug/zstest/pages bs={bs} "
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
        files = {guest_file(c.path): c.path for c in built.values()}
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

    ko = pair.own.allocator_ko
    own_zpool = ko is not None and registers_zpool(api, ko.stem)

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
            if name == "own" and zpools and own_zpool:
                for series in bench.series:
                    _zswap(guest, series, ["zsmalloc"], page, result, p, label="own")
        if zpools:
            # zsmalloc beside them where it is a module that registered its zpool.
            with_zs = (
                [*zpools, "zsmalloc"] if loaded is pair.baseline and loaded.modules[:-1] else zpools
            )
            for series in bench.series:
                _zswap(guest, series, with_zs, page, result, p)
        loaded.unload(guest)

    # The corpora are in the image: every boot of this bench needs their memory.
    config = config.with_overrides(memory_mb=max(need, config.memory_mb))
    result = run(config, p, RunOptions(results_dir=results_dir, after=step), prepared=pair.prepared)
    counted = [targets[a].name for a in ("own", "upstream") if a in allocators]
    if bench.series and counted:
        found, bench.instructions_note = count_sides(pair, config, results_dir, p, counted)
        bench.instructions = {name: i.per_call for name, i in found.items()}
    bench.seconds = time.monotonic() - started
    if bench.series:
        write(bench, results_dir)
    return result, bench if bench.series else None
