"""The density bench's host side: kmalloc's model, the driver model's kmalloc pools and
compressor, the corpora, the tables and the plots (no QEMU)."""

from __future__ import annotations

import dataclasses
import errno
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pyharness.check import corpus
from pyharness.check.driver import DriverModel
from pyharness.commands.bench import density, figures, plots
from pyharness.kernel.api import api_for
from pyharness.kernel.manifest import Kernel
from pyharness.model.kmalloc import KmallocPool, kmalloc_sizes, slot_size
from pyharness.progress import StageError

API = api_for("6.1")


def test_kmalloc_caches_are_mm_slab_commons_kmalloc_info() -> None:
    small = (8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192)
    assert kmalloc_sizes(4096) == small
    # arm64 before 6.5: ARCH_DMA_MINALIGN 128, so neither 96 nor 192 exists.
    assert kmalloc_sizes(4096, 128) == (128, 256, 512, 1024, 2048, 4096, 8192)
    assert 96 not in kmalloc_sizes(4096, 64) and 192 in kmalloc_sizes(4096, 64)
    assert [slot_size(n, small) for n in (1, 8, 9, 65, 97, 193, 2049, 4096)] == [
        8,
        8,
        16,
        96,
        128,
        256,
        4096,
        4096,
    ]


def test_a_kmalloc_pool_sums_its_slots() -> None:
    pool = KmallocPool(4096)
    for oid, size in enumerate((100, 2100, 3000, 40)):
        pool.alloc(oid, size)
    assert pool.slot_bytes == 128 + 4096 + 4096 + 64
    pool.free(1)
    assert pool.slot_bytes == 128 + 4096 + 64
    pool.reset()
    assert (pool.slot_bytes, pool.slots) == (0, {})


def run_lines(driver: DriverModel, *lines: str) -> list[int | None]:
    return [driver.run(line) for line in lines]


def test_the_driver_model_answers_kmalloc_pools_as_zstest_does() -> None:
    driver = DriverModel(API)
    assert run_lines(driver, "kcreate k", "alloc 1 100", "alloc 2 3000", "stats") == [0] * 4
    assert driver.values == [("objects", "2"), ("slot_bytes", str(128 + 4096))]
    # Only alloc, free, reset and stats take a kmalloc pool; the arguments are checked after.
    assert (
        run_lines(driver, "write 1 5", "compact", "where 1", "churn x 1 1 1")
        == [-errno.EOPNOTSUPP] * 4
    )
    assert run_lines(driver, "alloc 1 10", "alloc 3 0", "alloc 3 4097", "free 9") == [
        -errno.EEXIST,
        -errno.EINVAL,
        -errno.EINVAL,
        -errno.ENOENT,
    ]
    assert run_lines(driver, "create k", "kcreate k", "create z", "alloc 1 100") == [
        -errno.EEXIST,
        -errno.EEXIST,
        0,
        0,
    ]
    assert run_lines(driver, "use k", "free 1", "reset", "destroy k", "stats") == [
        0,
        0,
        0,
        0,
        -errno.ENOENT,
    ]


def test_compressor_names_are_checked_before_the_crypto_api_sees_them() -> None:
    driver = DriverModel(API)
    assert run_lines(driver, "compressor lzo-rle", "compressor LZ4", "compressor a/b") == [
        0,
        -errno.EINVAL,
        -errno.EINVAL,
    ]
    assert run_lines(driver, "compressor " + "z" * 32) == [-errno.EINVAL]
    without = DriverModel(dataclasses.replace(API, acomp=False))
    assert run_lines(without, "compressor lzo-rle") == [-errno.EOPNOTSUPP]


def fake_kernel(tmp_path: Path, config: str = "") -> Kernel:
    kdir = tmp_path / "linux-headers-1-amd64"
    kdir.mkdir(parents=True)
    (kdir / ".config").write_text(config)
    (kdir / "Makefile").write_text("# a Makefile\n" * 500)
    common = tmp_path / "linux-headers-1-common"
    (common / "include").mkdir(parents=True)
    (common / "include" / "a.h").write_text("#define A 1\n" * 2000)
    modules = tmp_path / "modules"
    (modules / "kernel" / "crypto").mkdir(parents=True)
    (modules / "kernel" / "m.ko").write_bytes(bytes(range(256)) * 64)
    vmlinux = tmp_path / "vmlinux"
    vmlinux.write_bytes(b"\x7fELF" + bytes(2 * 4096))
    return Kernel("6.1", "1-amd64", "1-1", vmlinux, vmlinux, kdir, modules, kdir)


def test_corpora_are_reproducible_cached_and_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZSKIT_CACHE", str(tmp_path / "cache"))
    kernel = fake_kernel(tmp_path)
    a = corpus.build("synthetic", 64 * 4096 + 100, kernel)
    assert (a.pages, a.page_size, a.path.stat().st_size) == (64, 4096, 64 * 4096)
    again = corpus.build("synthetic", 64 * 4096, kernel)
    assert again == a
    a.path.unlink()  # a cache entry without its data is built again, the same
    assert corpus.build("synthetic", 64 * 4096, kernel).sha256 == a.sha256
    data = a.path.read_bytes()
    pages = [data[i : i + 4096] for i in range(0, len(data), 4096)]
    assert pages[15] == bytes(4096) and pages[14] != bytes(4096)
    text = corpus.build("text", 10 * 4096, kernel)
    assert b"#define A 1" in text.path.read_bytes() and "headers tree" in text.source
    # Later passes over the tree cut pages at other offsets: more text than the tree holds.
    assert corpus.build("text", 20 * 4096, kernel).pages == 20
    with pytest.raises(StageError, match="are 0 MiB, fewer than the size asked"):
        corpus.build("binaries", 8 * 4096, kernel)
    binaries = corpus.build("binaries", 6 * 4096, kernel).path.read_bytes()
    assert binaries[:16384] == bytes(range(256)) * 64 and binaries[16384:16388] == b"\x7fELF"
    assert corpus.build("binaries", 4 * 4096, kernel).source.startswith("the modules and")
    assert not list((tmp_path / "cache").rglob(".*"))  # no half-written file left


def test_bad_corpus_sizes_and_names_are_refused(tmp_path: Path) -> None:
    kernel = fake_kernel(tmp_path)
    assert corpus.parse_size("256M") == 256 << 20 and corpus.parse_size("8192") == 8192
    for bad in ("", "0", "12Q", "M", "-1M"):
        with pytest.raises(StageError, match="give a size"):
            corpus.parse_size(bad)
    with pytest.raises(StageError, match="unknown corpus 'zeros'"):
        corpus.build("zeros", 4096, kernel)
    with pytest.raises(StageError, match="at least one page"):
        corpus.build("synthetic", 100, kernel)


def test_bad_bench_options_say_what_to_choose(tmp_path: Path) -> None:
    assert density.check_allocators(["own", "builtin", "upstream"]) == ("own", "upstream")
    with pytest.raises(StageError, match="choose from own, upstream, kmalloc, zbud, z3fold"):
        density.check_allocators(["slab"])
    with pytest.raises(StageError, match="need a guest of .* MiB"):
        density.check_memory(density.guest_memory_mb(1 << 50))
    kernel = fake_kernel(tmp_path, "CONFIG_CRYPTO_LZO=y\n# CONFIG_CRYPTO_842 is not set\n")
    assert density.compressor_modules(kernel, ["lzo-rle"]) == {"lzo-rle": []}
    with pytest.raises(StageError, match="lacks it .CONFIG_CRYPTO_842 is not set"):
        density.compressor_modules(kernel, ["842"])


def small_bench() -> figures.Bench:
    bench = figures.Bench("6.1", "6.1.0-57-amd64", 4096, "upstream")
    bench.class_sizes = {"upstream": [32, 48, 4096], "own": [32, 48, 4096]}
    series = figures.Series({"name": "text"}, "lzo-rle", 4, 1, [100, 3000, 2500])
    for name, pool in (("upstream", 12288), ("own", 12288), ("kmalloc", 8320)):
        series.fills[name] = figures.Fill(
            allocator=name,
            objects=3,
            compressed_bytes=5600,
            original_bytes=16384,
            pool_bytes=pool,
            slab_bytes={"filled": 8192, "random-half": 8192, "oldest-half": 4096},
            freed={"random-half": {"before": pool, "after_compaction": pool // 2}}
            | {"oldest-half": {"before": pool, "after_compaction": pool // 2}},
            claim={"objects": 2, "compressed_bytes": 5500, "pool_bytes": 8192},
            classes=[]
            if name == "kmalloc"
            else [{"index": 1, "size": 3008, "objects": 2, "pages": 2, "compressed_bytes": 5500}],
        )
    bench.series.append(series)
    return bench


def test_the_tables_and_plots_hold_every_measure(tmp_path: Path) -> None:
    bench = small_bench()
    fills = bench.as_dict()["series"][0]["fills"]  # type: ignore[index]
    assert fills["kmalloc"]["bytes_per_compressed_byte"] == round(8320 / 5600, 5)
    assert fills["own"]["utilisation"] == round(5600 / 12288, 5)
    text = figures.markdown(bench)
    assert "| text | lzo-rle | 3 |" in text and "| text | 2 | 0.01 |" in text
    figures.write(bench, tmp_path)
    for name in ("density", "sizes", "classes"):
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert ET.parse(tmp_path / f"{name}.svg").getroot().tag.endswith("svg")
    assert len(plots.draw(bench.as_dict(), tmp_path)) == 6


def test_zswap_runs_on_the_zpools_the_kernel_has(tmp_path: Path) -> None:
    old = fake_kernel(tmp_path / "6.1", "CONFIG_ZSWAP=y\nCONFIG_ZPOOL=y\nCONFIG_ZBUD=y\n")
    assert density.zswap_zpools(old, density.ALLOCATORS, explicit=False) == (
        ["zbud"],
        "z3fold: not in Linux 1-amd64",
    )
    new = fake_kernel(tmp_path / "7.2", "CONFIG_ZSWAP=y\n# CONFIG_ZPOOL is not set\n")
    assert density.zswap_zpools(new, ["own", "kmalloc"], explicit=True) == ([], "")
    with pytest.raises(StageError, match="has no zbud for zswap .* leave them out"):
        density.zswap_zpools(new, ["own", "zbud"], explicit=True)
