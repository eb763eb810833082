"""`zskit bench` in a guest on Debian's 6.1: every allocator it has, small corpora.

One boot per bench: the corpora compressed by the kernel's lzo-rle, then ours, upstream
and kmalloc, every command checked against the model (kmalloc's against its size
classes), zram on ours and upstream, zswap on zbud, z3fold, upstream's zsmalloc and ours.
A planted regression in ours (zspages chained up to 16 pages, which wastes
the unfilled tail of every class's last zspage on a pool this small) must show in the
figures; bad options are refused before anything boots.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pyharness.commands.bench import density, figures
from pyharness.commands.config import Config
from pyharness.kmod.own import OwnAllocator
from pyharness.model.kmalloc import kmalloc_sizes, slot_size
from pyharness.progress import Progress, StageError
from pyharness.report import RunResult

SIZE = 4 << 20  # 1024 pages of each corpus: room for THPs, which zswap must not be given


def bench(config: Config, out: Path) -> tuple[RunResult, figures.Bench]:
    result, measured = density.density(config, Progress(), size=SIZE, results_dir=out)
    assert measured is not None, [c.failure for c in result.cases if c.failure]
    return result, measured


@pytest.fixture(scope="module")
def benched(
    default_config: Config, tmp_path_factory: pytest.TempPathFactory
) -> tuple[RunResult, figures.Bench, Path]:
    out = tmp_path_factory.mktemp("bench")
    return (*bench(default_config.with_overrides(kernel="6.1"), out), out)


@pytest.mark.qemu
def test_every_allocator_stores_every_corpus_as_the_model_says(
    benched: tuple[RunResult, figures.Bench, Path],
) -> None:
    result, measured, out = benched
    assert [c.failure for c in result.cases if c.failure] == []
    assert [s.corpus["name"] for s in measured.series] == list(density.corpora.NAMES)
    saved = json.loads((out / "bench.json").read_text())
    for series, s in zip(measured.series, saved["series"], strict=True):
        assert set(s["fills"]) == {"own", "upstream", "kmalloc"}  # zbud, z3fold: zswap
        assert len(s["corpus"]["sha256"]) == 64 and s["pages"] == SIZE // 4096
        assert s["stored"] + s["same_filled"] == s["pages"]
        for fill in s["fills"].values():
            for key in ("bytes_per_compressed_byte", "bytes_per_original_byte", "utilisation"):
                assert 0 < fill[key] < 3, (key, fill)
            assert set(fill["freed"]) == {"random-half", "oldest-half"}
            assert fill["claim"]["objects"] == sum(n > 2048 for n in series.lengths)
        # What the guest's ksize() summed is what kmalloc's caches give these lengths.
        slots = sum(slot_size(min(n, 4096), kmalloc_sizes(4096)) for n in series.lengths)
        assert s["fills"]["kmalloc"]["pool_bytes"] == slots
        # zsmalloc compacts after frees; kmalloc cannot.
        own = s["fills"]["own"]["freed"]["random-half"]
        assert own["after_compaction"] <= own["before"]
        assert sum(r["objects"] for r in s["fills"]["own"]["classes"]) == s["stored"]
        # zram read the corpus back identical on both (zram.sh's cmp), and stored it all.
        assert set(s["zram"]) == {"own", "upstream"}
        written = s["zram"]["own"]["written"]
        assert written["orig_data_size"] == SIZE and written["same_pages"] == s["same_filled"]
        # zswap on each zpool: every page out; zsmalloc (upstream's, and ours as "own")
        # took every one that compresses to at most a page, zbud and z3fold all but those
        # too long for their headers.
        fit = sorted(n for n in series.lengths if n <= 4096)
        assert set(s["zswap"]) == {"zbud", "z3fold", "zsmalloc", "own"}
        for zpool, counters in s["zswap"].items():
            stored = counters["stored_pages"] - counters["same_filled_pages"]
            assert counters["same_filled_pages"] == s["same_filled"]
            assert counters["paged_out"] == s["pages"]
            # zbud and z3fold: a page less a header chunk and a chunk, less zswap's header.
            assert len([n for n in fit if n <= 4096 - 2 * 64 - 8]) <= stored <= len(fit)
            assert stored == len(fit) or zpool not in ("zsmalloc", "own")
            assert counters["compressed_bytes"] == sum(fit[:stored])
    assert "The seed's claim" in (out / "bench.md").read_text()
    # Instructions per call from the counted boot, for both zsmalloc modules.
    counted = saved["instructions_per_call"]
    assert set(counted) == {"own", "upstream"}, saved["instructions_note"]
    assert all(counted[a]["alloc"] > 0 and counted[a]["free"] > 0 for a in counted)
    assert "| phase | own | upstream |" in (out / "bench.md").read_text()
    for name in ("density", "sizes", "classes"):
        assert (out / f"{name}.png").stat().st_size > 1000
        assert (out / f"{name}.svg").read_text().lstrip().startswith("<?xml")
    # The synthetic pages span every size: random shares of 0..100% of each block.
    synthetic = measured.series[0].lengths
    assert min(synthetic) < 400 and max(synthetic) > 4096


@pytest.mark.qemu
def test_a_planted_wasteful_chain_costs_memory(
    default_config: Config,
    benched: tuple[RunResult, figures.Bench, Path],
    tmp_path: Path,
) -> None:
    wasteful = default_config.with_overrides(kernel="6.1", own=OwnAllocator(max_pages=16))
    result, planted = bench(wasteful, tmp_path)
    assert [c.failure for c in result.cases if c.failure] == []  # the model still agrees
    fair = benched[1]
    for before, after in zip(fair.series, planted.series, strict=True):
        assert before.fills["own"].pool_bytes == before.fills["upstream"].pool_bytes
        assert after.fills["own"].pool_bytes > 1.3 * after.fills["upstream"].pool_bytes
        assert after.fills["upstream"].pool_bytes == before.fills["upstream"].pool_bytes


@pytest.mark.qemu
def test_the_kernels_other_compressors_load_as_modules(
    default_config: Config, tmp_path: Path
) -> None:
    # On 6.1, lz4 and zstd are modules with dependencies of their own (lz4_compress, ...).
    result, measured = density.density(
        default_config.with_overrides(kernel="6.1"),
        Progress(),
        allocators=["own", "kmalloc"],
        corpus_names=["text"],
        size=SIZE,
        compressors=["lz4", "zstd"],
        results_dir=tmp_path,
    )
    assert [c.failure for c in result.cases if c.failure] == []
    assert measured is not None
    lz4, zstd = (sum(s.lengths) for s in measured.series)
    assert zstd < lz4 < SIZE  # zstd packs text tighter than lz4


@pytest.mark.qemu
def test_bad_bench_input_is_refused_before_a_boot(default_config: Config, tmp_path: Path) -> None:
    cfg = default_config.with_overrides(kernel="6.1")
    with pytest.raises(StageError, match="unknown corpus 'nothing'"):
        density.density(cfg, Progress(), corpus_names=["nothing"], size=SIZE, results_dir=tmp_path)
    with pytest.raises(StageError, match="compressor 842: Linux .* lacks it"):
        density.density(cfg, Progress(), compressors=["842"], size=SIZE, results_dir=tmp_path)
    with pytest.raises(StageError, match="need a guest of"):
        density.density(cfg, Progress(), corpus_names=["synthetic"], size=1 << 45)
    assert not list(tmp_path.glob("*.png"))
