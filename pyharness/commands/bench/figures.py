"""The bench's figures: what was measured (bench.json), its tables (bench.md) and plots."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import plots

MIB = 1 << 20
HISTOGRAM_STEP = 32  # bytes per bucket of the size distribution


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
    # allocator -> phase -> instructions per call (the counted boot's); how, or why not
    instructions: dict[str, dict[str, float]] = field(default_factory=dict)
    instructions_note: str = ""

    def as_dict(self) -> dict[str, object]:
        return {
            "kernel": self.kernel,
            "release": self.release,
            "page_size": self.page_size,
            "baseline": self.baseline,
            "wall_seconds": round(self.seconds, 1),
            "class_sizes": self.class_sizes,
            "notes": self.notes,
            "instructions_per_call": self.instructions,
            "instructions_note": self.instructions_note,
            "series": [s.as_dict() for s in self.series],
        }


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
    if bench.instructions:
        counted = list(bench.instructions)
        out += [
            "",
            "Instructions per call in the allocator's own code (counted, exact: "
            f"{bench.instructions_note}).",
            "",
            "| phase | " + " | ".join(counted) + " |",
            "|---|" + "---|" * len(counted),
        ]
        for phase in bench.instructions[counted[0]]:
            cells = [f"{bench.instructions[a].get(phase, 0):.1f}" for a in counted]
            out.append(f"| {phase} | " + " | ".join(cells) + " |")
    elif bench.instructions_note:
        out += ["", f"Instructions: {bench.instructions_note}."]
    out += ["", f"Wall time of the bench (TCG, not a cost figure): {bench.seconds:.0f} s."]
    out += [f"- {n}" for n in bench.notes]
    return "\n".join(out) + "\n"
