"""Other machines under TCG: Debian's arm64 kernels with 4 KiB (6.1) and 16 KiB pages
(bookworm-security's 6.12 arm64-16k) and one cross-built from linux-source-6.12, ppc64el
with 64 KiB pages and i386 with PAE and highmem (6.1): our allocator and the kernel's in
one boot, with the same driver, model and checks; the concurrent stress on each; a 4 KiB
assumption that only a 16 KiB kernel shows; and pool pages in highmem.

Each target needs Debian's cross gcc and QEMU for it (installed as root on first use).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest

from pyharness.check.scenarios.zone_migration import zone_zspages
from pyharness.commands import compare, config, run
from pyharness.guest.triage import find_crash
from pyharness.guest.zstest import ZsTest
from pyharness.kernel import arch
from pyharness.kernel.debian import DebianForeignKernel
from pyharness.paths import REPO
from pyharness.progress import Progress, StageError

from .test_stress import stress_holds

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.skipif(
        os.geteuid() != 0, reason="the cross compilers and QEMU are installed on first use, as root"
    ),
]

# (series, target, variant, the kernel's zsmalloc): Debian's 6.1 has zsmalloc as a module
# (upstream built beside ours), 6.12 built in (ours renamed beside it); kernels cross-built
# from linux-source-6.12 have it as a module, with its statistics. make test builds the
# arm64-16k minimal one (162 s cold); the ppc64el one (171 s) and arm64-16k's debug
# (247 s) only with ZSKIT_TEST_CROSS=1, as the matrix runs them.
CROSS = pytest.mark.skipif(
    os.environ.get("ZSKIT_TEST_CROSS") != "1", reason="cross builds beyond one: ZSKIT_TEST_CROSS=1"
)
TARGETS = [
    ("6.1", "arm64", "distro", "upstream"),
    ("6.12", "arm64-16k", "distro", "builtin"),
    ("6.12", "arm64-16k", "minimal", "upstream"),
    pytest.param("6.12", "arm64-16k", "debug", "upstream", marks=CROSS),
    ("6.1", "ppc64el", "distro", "upstream"),
    pytest.param("6.12", "ppc64el", "minimal", "upstream", marks=CROSS),
    ("6.1", "i386", "distro", "upstream"),
]


@pytest.mark.parametrize("series, name, variant, theirs", TARGETS, ids=lambda v: str(v))
def test_both_allocators_agree_with_the_model(
    default_config: config.Config,
    series: str,
    name: str,
    variant: str,
    theirs: str,
    tmp_path: Path,
) -> None:
    cfg = default_config.with_overrides(kernel=series, arch=name, variant=variant, allocator="own")
    plan = compare.Plan(measure=False)
    result, _ = compare.compare(cfg, Progress(), plan, results_dir=tmp_path)
    assert result.passed, result.first_failure
    doc = json.loads((result.directory / "results.json").read_text())
    target = arch.TARGETS[name]
    assert doc["kernel_identity"]["arch"] == target.kbuild_arch
    assert doc["kernel_identity"]["page_size"] == target.page_size
    assert doc["kernel_identity"]["name"] == cfg.kernel_id.slug
    assert doc["machine"] == name
    release = doc["kernel_release"]
    assert release.startswith(series), release
    if variant == "distro":
        assert release.endswith(target.flavours), release
    assert f"{theirs}_suite" in doc  # the kernel's own zsmalloc, checked in the same boot
    assert doc["classes_checked"] is True  # ours has the debugfs classes file everywhere
    if theirs == "upstream":  # built with its statistics: the baseline's classes checked too
        assert doc["upstream_suite"]["classes_checked"] is True
    assert doc["channel"] == "virtio-serial"


PLANTED = (
    "\t\tarea->vaddr = kmap_local_page(zspage->pages[pos >> PAGE_SHIFT]);\n",
    "\t\tarea->vaddr = kmap_local_page(zspage->pages[pos >> 12]);\n",
)


def test_a_4k_page_shift_passes_on_x86_64_and_is_caught_on_16k_pages(
    default_config: config.Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """zs_map_object finding an object's page with a shift of 12: right on 4 KiB pages
    (the suite passes), a page past the zspage on 16 KiB ones (the run fails)."""
    templates = tmp_path / "kmod"
    shutil.copytree(REPO / "kmod", templates)
    source = templates / "zsmalloc.c.j2"
    text = source.read_text()
    assert text.count(PLANTED[0]) == 1, "the planted edit no longer applies"
    source.write_text(text.replace(*PLANTED))
    monkeypatch.setenv("ZSKIT_TEMPLATES", str(templates))
    own = default_config.with_overrides(allocator="own")
    on_x86 = run.run(own, Progress(), run.RunOptions(results_dir=tmp_path / "x86_64"))
    assert on_x86.passed, on_x86.first_failure
    cfg = own.with_overrides(kernel="6.12", arch="arm64-16k")
    on_16k = run.run(cfg, Progress(), run.RunOptions(results_dir=tmp_path / "arm64-16k"))
    failure = on_16k.first_failure
    assert failure is not None, "the 4 KiB page shift went unnoticed on 16 KiB pages"
    assert failure.kind in ("crash", "data"), failure


@pytest.mark.parametrize(
    "series, name, allocator",
    [
        ("6.1", "arm64", "own"),
        ("6.1", "arm64", "upstream"),
        ("6.12", "arm64-16k", "own"),
        ("6.1", "ppc64el", "own"),
        ("6.1", "ppc64el", "upstream"),
        ("6.1", "i386", "own"),
        ("6.1", "i386", "upstream"),
    ],
    ids=lambda v: str(v),
)
def test_stress_and_highmem(
    default_config: config.Config, series: str, name: str, allocator: str, tmp_path: Path
) -> None:
    """The concurrent stress on the machine's 2 CPUs (data and counters afterwards, as on
    x86_64); on i386, whose zstest asks for highmem pages as zram does, the pool's pages
    are in ZONE_HIGHMEM of a 2 GiB guest (every access through kmap_local) and read back."""
    cfg = default_config.with_overrides(kernel=series, arch=name, allocator=allocator)
    prepared = run.prepare(cfg, Progress())
    with (tmp_path / "session.log").open("w") as transcript:
        with run.boot(cfg, Progress(), prepared, tmp_path / "console.log", transcript) as guest:
            zstest = ZsTest(guest)
            stress_holds(zstest, prepared.sources.policy or prepared.api.upstream_policy())
            objects = range(1, 1001)
            lines = ["create zt0", *(f"alloc {i} {100 + i * 3}" for i in objects)]
            lines += [f"write {i} {i}" for i in objects]
            assert zstest.batch(lines).failures == ()
            per_zone = zone_zspages(guest)
            assert zstest.batch([f"verify {i} {i}" for i in objects]).failures == ()
            assert find_crash(guest.run("dmesg")) is None
    if name == "i386":
        highmem = sum(n for zone, n in per_zone.items() if zone.endswith(":HighMem"))
        assert highmem > 0.9 * sum(per_zone.values()), per_zone


def test_a_kernel_of_other_pages_than_its_machine_is_refused_and_not_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A machine whose flavour list is wrong (arm64's 4 KiB pages, arm64-16k's image):
    provisioning unpacks it, sees 16 KiB pages, says what to fix and keeps nothing."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("ZSKIT_CACHE", str(cache))
    wrong = dataclasses.replace(arch.TARGETS["arm64"], flavours=("arm64-16k",))
    with pytest.raises(StageError, match=r"has 16 KiB pages, not the 4k of arm64: fix its"):
        DebianForeignKernel("6.12", wrong, zsmalloc_builtin=True).provision(cache, Progress())
    top = cache / "debian" / "6.12-arm64"
    assert not list(top.glob("root-*")) and not (top / "kernel.json").exists()
