"""zskit validate on real patches to upstream zsmalloc: verdicts from builds and boots.

Every series here is written by the test: text edits made in a temporary git
checkout, exported with git format-patch. The edits to upstream zsmalloc
apply to the files of the cached linux-source package at test time; no
upstream code is committed.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from pyharness.commands import cli, config, run, validate
from pyharness.commands.validate import SourceTree
from pyharness.guest import clients
from pyharness.kernel import fragments
from pyharness.kernel.identity import KernelId
from pyharness.kernel.provision import SOURCES, provision
from pyharness.kernel.source import SourceBuiltKernel
from pyharness.paths import cache_dir
from pyharness.progress import Progress
from tests.unit.test_validate import (
    Edit,
    make_series,
    tree_hash,
)


@pytest.fixture(scope="module")
def upstream(prepared: run.Prepared) -> SourceTree:
    return validate.source_tree(prepared.kernel, validate.BUILT, Progress())


def check(cfg: config.Config, directory: Path, tmp: Path, perf: bool = True) -> validate.Validation:
    rounds = validate.PERF_ROUNDS if perf else 0
    return validate.validate(
        cfg, [directory], Progress(), ["6.1"], results_dir=tmp / "results", perf_rounds=rounds
    )


C, H = validate.SOURCE, validate.HEADER


GOOD = [
    Edit(
        "mm/zsmalloc: rename SetZsHugePage to set_zs_huge_page",
        [
            (C, "static void SetZsHugePage(struct", "static void set_zs_huge_page(struct"),
            (C, "\t\t\t\tSetZsHugePage(zspage);", "\t\t\t\tset_zs_huge_page(zspage);"),
        ],
    ),
    Edit(
        "mm/zsmalloc: fix a typo in a comment",
        [(C, "calls must occurs in reverse", "calls must occur in reverse")],
    ),
    Edit(
        "zsmalloc: explain ZS_MM_RW in the header",
        [(H, "ZS_MM_RW, /* normal read-write mapping */", "ZS_MM_RW, /* copy in and out */")],
    ),
    Edit(
        "mm/zsmalloc: rename find_alloced_obj to find_allocated_obj",
        [
            (C, "long find_alloced_obj(struct", "long find_allocated_obj(struct"),
            (C, "handle = find_alloced_obj(class,", "handle = find_allocated_obj(class,"),
        ],
    ),
    Edit(
        "mm/zsmalloc: say why zs_object_copy loops",
        [
            (
                C,
                "\twhile (1) {\n\t\tsize = min(s_size, d_size);",
                "\t/* An object may span two pages on either side. */\n"
                "\twhile (1) {\n\t\tsize = min(s_size, d_size);",
            )
        ],
    ),
]


BUILD_BREAK = Edit(
    "zsmalloc: return the pages compacted as int",
    [
        (
            H,
            "unsigned long zs_compact(struct zs_pool *pool);",
            "int zs_compact(struct zs_pool *pool);",
        )
    ],
)


SIZING = Edit(
    "mm/zsmalloc: allow zspages of eight pages",
    [(C, "#define ZS_MAX_ZSPAGE_ORDER 2", "#define ZS_MAX_ZSPAGE_ORDER 3")],
    body="Longer zspages waste less of their last page in big classes.",
)


COMPACTION = Edit(
    "mm/zsmalloc: stop copying at the source page's end",
    [
        (
            C,
            "\t\tif (written == class->size)\n\t\t\tbreak;",
            "\t\tif (written == class->size || s_off + size == PAGE_SIZE)\n\t\t\tbreak;",
        )
    ],
    body="Copy one page's part of an object per pass.",
)


def test_a_patch_that_does_not_apply(
    upstream: SourceTree, default_config: config.Config, tmp_path: Path
) -> None:
    directory = make_series(upstream.root, [GOOD[1]], tmp_path / "s")
    (path,) = directory.glob("*.patch")
    # Context the kernel does not have, on the kernel's own pre-image: a patch for
    # another stable release, say.
    path.write_text(path.read_text().replace(" \t\t * kunmap_atomic(d_addr)", " \t\t * unmap(d)"))
    v = check(default_config, directory, tmp_path)
    (step,) = v.kernels[0].steps
    assert step.verdict == "FAIL"
    apply_check = step.checks["apply"]
    assert apply_check.summary.startswith("does not apply: mm/zsmalloc.c: hunk #1 rejected")
    assert "-\t\t * calls must occurs in reverse order" in apply_check.details[0]
    assert [step.checks[c].status for c in ("build", "load", "suite")] == ["skip"] * 3
    assert step.checks["checkpatch"].status == "pass"
    assert not (tmp_path / "results" / "6.1" / "01" / "suite").exists()
    assert "hunk #1 rejected" in (tmp_path / "results" / "report.md").read_text()


def test_a_patch_that_breaks_the_build(
    upstream: SourceTree, default_config: config.Config, tmp_path: Path
) -> None:
    v = check(default_config, make_series(upstream.root, [BUILD_BREAK], tmp_path / "s"), tmp_path)
    (step,) = v.kernels[0].steps
    assert step.verdict == "FAIL"
    build = step.checks["build"]
    assert build.status == "fail"
    # The patched header reached zsmalloc.c: the conflict is there (gcc quotes by locale).
    assert re.search(r"zsmalloc\.c:\d+:\d+: conflicting types for .zs_compact.", build.summary)
    assert [step.checks[c].status for c in ("load", "suite")] == ["skip", "skip"]
    assert not (tmp_path / "results" / "6.1" / "01" / "suite").exists()


@pytest.mark.parametrize("case", ["another tree", "unknown base", "not a patch"])
def test_bad_series_are_refused_by_the_cli(
    case: str, upstream: SourceTree, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if case == "another tree":
        other = tmp_path / "other"
        (other / "lib").mkdir(parents=True)
        (other / "lib" / "zsmalloc.py").write_text("SIZE = 1\n")
        edit = Edit("zsmalloc: bigger", [("lib/zsmalloc.py", "SIZE = 1", "SIZE = 2")])
        series = make_series(other, [edit], tmp_path / "s", files=("lib/zsmalloc.py",))
        message = "not for the Linux kernel tree: linux-source-6.1 .* has no lib/zsmalloc.py"
    elif case == "unknown base":
        hidden = Edit(
            "local", [(C, "#define ZS_MAX_ZSPAGE_ORDER 2", "#define ZS_MAX_ZSPAGE_ORDER 1")]
        )
        edit = Edit("mm/zsmalloc: order 0", [(C, "ZSPAGE_ORDER 1", "ZSPAGE_ORDER 0")])
        series = make_series(upstream.root, [edit], tmp_path / "s", hidden=hidden)
        message = "the series' base is unknown: patch 1 .* expects mm/zsmalloc.c at blob"
    else:
        series = tmp_path / "notes.patch"
        series.write_text("Subject: thoughts\n\nzsmalloc could be faster.\n")
        message = "is not a patch: it holds no diff"
    before = tree_hash(upstream.root)
    results = tmp_path / "results"
    code = cli.main(["validate", "--kernel", "6.1", "--results-dir", str(results), str(series)])
    assert code == 1
    assert re.search(message, capsys.readouterr().err)
    assert not results.exists()
    assert tree_hash(upstream.root) == before


@pytest.mark.qemu
def test_a_good_series_passes(
    upstream: SourceTree, default_config: config.Config, tmp_path: Path
) -> None:
    series = make_series(upstream.root, GOOD, tmp_path / "s", cover=True)
    start = time.monotonic()
    v = check(default_config, series, tmp_path)
    print(f"\n5-patch series validated in {time.monotonic() - start:.0f} s")
    assert v.passed, validate.summary(v)
    steps = v.kernels[0].steps
    assert [s.verdict for s in steps] == ["PASS"] * 5
    for step in steps:
        assert step.perf is not None and step.perf.density == 1.0, step.perf_note
    # Renames and comments: the same instructions, counted exactly (not one more or less).
    costs = [step.cost for step in steps if step.cost is not None]
    assert costs, [step.cost_note for step in steps]
    assert all(c.total == c.base_total and c.per_call == c.base_per_call for c in costs)
    # Both modules compiled against the patched header (patch 3 changed it).
    deps = (validate.WORK / "6.1" / "step" / ".zstest.o.cmd").read_text()
    assert str(validate.WORK / "6.1" / "step" / "include" / "linux" / "zsmalloc.h") in deps
    report = (tmp_path / "results" / "report.md").read_text()
    assert "PASS" in report and "density" in report
    text = (tmp_path / "results" / "report.txt").read_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "instructions/alloc" in text and "ns/object (wall, TCG)" in text


@pytest.mark.qemu
def test_a_change_of_class_sizing_is_caught_by_the_model(
    upstream: SourceTree, default_config: config.Config, tmp_path: Path
) -> None:
    v = check(default_config, make_series(upstream.root, [SIZING], tmp_path / "s"), tmp_path)
    (step,) = v.kernels[0].steps
    assert step.verdict == "FAIL"
    assert step.suite_kind in validate.MODEL_KINDS, step.reason()
    assert "the base passed, so this patch brings the failure" in step.checks["suite"].summary
    # The model disagrees, yet the modules are sound: their density is still measured.
    assert step.perf is not None and step.perf.density != 1.0
    assert step.cost is not None and step.cost.total != step.cost.base_total, step.cost_note


@pytest.mark.qemu
def test_corruption_after_compaction_is_caught_by_integrity(
    upstream: SourceTree, default_config: config.Config, tmp_path: Path
) -> None:
    series = make_series(upstream.root, [GOOD[1], COMPACTION], tmp_path / "s")
    v = check(default_config, series, tmp_path)
    first, second = v.kernels[0].steps
    assert first.verdict == "PASS", first.reason()
    assert second.verdict == "FAIL"
    assert second.suite_kind == "data", second.reason()
    assert "patch 1 passed, so this patch brings the failure" in second.checks["suite"].summary
    assert second.perf is None and "data" in second.perf_note


Z = "drivers/block/zram/zram_drv.c"


ZRAM_GOOD = Edit(
    "zram: say which device was added in lower case",
    [(Z, 'pr_info("Added device: %s\\n", zram', 'pr_info("added device %s\\n", zram')],
)


ZRAM_CORRUPT = Edit(
    "zram: flip a bit of every incompressible page it reads",
    [
        (
            Z,
            "\t\tmemcpy(dst, src, PAGE_SIZE);\n\t\tkunmap_atomic(dst);",
            "\t\tmemcpy(dst, src, PAGE_SIZE);\n\t\t((u8 *)dst)[PAGE_SIZE - 1] ^= 1;\n"
            "\t\tkunmap_atomic(dst);",
        )
    ],
    body="A planted bug: huge pages read back differ in their last byte.",
)


W = "mm/zswap.c"


ZSWAP_GOOD = Edit(
    "mm/zswap: say what hit the limit",
    [(W, "/* Pool limit was hit (see", "/* The pool limit was hit (see")],
)


ZSWAP_BREAK = Edit(
    "mm/zswap: drop a semicolon",
    [(W, "zswap_max_pool_percent = 20;", "zswap_max_pool_percent = 20")],
)


@pytest.fixture(scope="module")
def upstream_users(prepared: run.Prepared) -> SourceTree:
    return validate.source_tree(prepared.kernel, (*validate.BUILT, Z, W), Progress())


@pytest.mark.qemu
def test_a_zram_patch_is_built_and_run_on_the_patched_zsmalloc(
    upstream_users: SourceTree, default_config: config.Config, tmp_path: Path
) -> None:
    files = (*validate.BUILT, Z)
    directory = make_series(
        upstream_users.root, [ZRAM_GOOD, ZRAM_CORRUPT], tmp_path / "s", files=files
    )
    v = check(default_config, directory, tmp_path, perf=False)
    good, bad = v.kernels[0].steps
    assert good.verdict == "PASS", good.reason()
    assert good.checks["zram"].summary.startswith(
        f"zram round trip: {clients.PAGES} pages written, read back identical"
    )
    assert good.built is not None and good.built.module("zram") is not None
    # The patched zram.ko was what ran: its message is in the guest's kernel log.
    assert "added device zram0" in (tmp_path / "results/6.1/01/suite/dmesg.log").read_text()
    # zswap is not compiled (untouched) but runs on the patched zsmalloc.ko, after zram.
    assert good.checks["zswap"].summary.startswith("zswap round trip: "), good.checks["zswap"]
    assert not any(n.startswith("not built by zskit") for n in good.notes), good.notes
    assert bad.verdict == "FAIL"
    assert bad.checks["suite"].status == "pass"  # zsmalloc itself is fine
    assert bad.checks["zram"].status == "fail"
    assert "read back differs" in bad.checks["zram"].summary
    report = (tmp_path / "results" / "report.md").read_text()
    assert "On 6.1, zram: the patched drivers/block/zram/ is built as zram.ko" in report


@pytest.mark.qemu
def test_a_zswap_patch_is_compiled_and_zswap_run_on_the_patched_zsmalloc(
    upstream_users: SourceTree, default_config: config.Config, tmp_path: Path
) -> None:
    files = (*validate.BUILT, W)
    directory = make_series(
        upstream_users.root, [ZSWAP_GOOD, ZSWAP_BREAK], tmp_path / "s", files=files
    )
    v = check(default_config, directory, tmp_path, perf=False)
    good, bad = v.kernels[0].steps
    release = v.kernels[0].release
    assert good.verdict == "PASS", good.reason()
    zswap = good.checks["zswap"].summary
    assert zswap.startswith("zswap round trip: "), zswap
    assert "stored in zsmalloc" in zswap and "read back identical" in zswap
    assert zswap.endswith(f"; mm/zswap.c compiles against Linux {release} (CONFIG_ZSWAP=y)")
    assert good.checks["zram"].status == "skip"
    assert bad.verdict == "FAIL"
    assert bad.checks["zswap"].status == "fail"
    # gcc places the missing semicolon at the next statement: a macro of moduleparam.h.
    assert re.search(r"\.[ch]:\d+:\d+: expected .*before", bad.checks["zswap"].summary)
    assert bad.checks["build"].status == "pass"  # the modules still build and run
    assert bad.checks["suite"].status == "pass"
    said = v.kernels[0].clients
    assert said[1].startswith("zswap: mm/zswap.c is compiled (zswap.o against")
    assert "the kernel's own zswap runs on each state's zsmalloc.ko" in said[1]


# zswap's writes through zpool mapped read-only: a spanning object's bytes never leave the
# bounce buffer. The suite maps through zs_map_object itself and never sees it.
ZPOOL_BREAK = Edit(
    "mm/zsmalloc: map zswap's write mappings read-only",
    [
        (
            C,
            "\tcase ZPOOL_MM_WO:\n\t\tzs_mm = ZS_MM_WO;",
            "\tcase ZPOOL_MM_WO:\n\t\tzs_mm = ZS_MM_RO;",
        )
    ],
)


@pytest.mark.qemu
def test_a_patch_that_breaks_zswaps_data_path_is_caught_by_zswap(
    upstream: SourceTree, default_config: config.Config, tmp_path: Path
) -> None:
    v = check(
        default_config,
        make_series(upstream.root, [ZPOOL_BREAK], tmp_path / "s"),
        tmp_path,
        perf=False,
    )
    (step,) = v.kernels[0].steps
    assert step.checks["suite"].status == "pass", step.reason()
    zswap = step.checks["zswap"]
    assert zswap.status == "fail", zswap.summary
    # zswap 6.1 BUG()s on a page it cannot decompress: the round trip ends in a crash.
    assert "zswap" in zswap.summary and ("crash" in zswap.summary or "corrupts" in zswap.summary)
    assert step.verdict == "FAIL"


def cached_source_kernel(series: str, variant: str) -> bool:
    """A source-built kernel of the current fragments is in the cache (no build needed)."""

    source = SOURCES[variant][series]
    assert isinstance(source, SourceBuiltKernel)
    request = fragments.text(fragments.merge(source.fragments()))
    built = cache_dir() / "built"
    return any(
        (d / "kernel.json").exists() and (d / "request.config").read_text() == request
        for d in built.glob(f"{series}-{variant}-*")
        if (d / "request.config").exists()
    )


@pytest.mark.qemu
@pytest.mark.skipif(
    os.environ.get("ZSKIT_TEST_SOURCE_612") != "1" and not cached_source_kernel("6.12", "minimal"),
    reason="no 6.12 minimal kernel of the current fragments in the cache, and a cold build "
    "takes 6-9 min on 2 cores; ZSKIT_TEST_SOURCE_612=1 builds it",
)
def test_a_series_on_the_source_built_612_kernel(
    default_config: config.Config, tmp_path: Path
) -> None:
    kernel = provision(KernelId("6.12", "minimal"), Progress())
    tree = validate.full_tree(kernel)
    files = (*validate.BUILT, Z)
    directory = make_series(tree.root, [GOOD[1], ZRAM_GOOD], tmp_path / "s", files=files)
    results = tmp_path / "results"
    code = cli.main(["validate", "--kernel", "6.12", "--results-dir", str(results), str(directory)])
    doc = json.loads((results / "results.json").read_text())
    assert code == 0, (results / "summary.txt").read_text()
    (k,) = doc["kernels"]
    assert (k["kernel"], k["variant"], k["name"]) == ("6.12", "minimal", "6.12-minimal")
    assert k["release"].endswith("-zskit-minimal")
    assert [s["verdict"] for s in k["steps"]] == ["PASS", "PASS"]
    for step in k["steps"]:
        assert step["checks"]["zram"]["status"] == "pass", step["checks"]["zram"]
        assert step["perf"] is not None and step["perf"]["density"] == 1.0
    # The suite's model took 6.12's chain size from the built kernel and checked classes.
    suite = json.loads((results / "6.12-minimal/01/suite/results.json").read_text())
    assert suite["classes_checked"] is True
    report = (results / "report.md").read_text()
    assert "| 1 | mm/zsmalloc: fix a typo in a comment | 6.12 | minimal |" in report
    assert "built from linux-source-6.12" in report


@pytest.mark.qemu
def test_the_debug_kernel_runs_each_patch(default_config: config.Config, tmp_path: Path) -> None:
    kernel = provision(KernelId("6.1", "debug"), Progress())
    assert kernel.config("KASAN") == "y"
    tree = validate.full_tree(kernel)
    directory = make_series(tree.root, [GOOD[1]], tmp_path / "s")
    v = validate.validate(
        default_config,
        [directory],
        Progress(),
        ["6.1"],
        results_dir=tmp_path / "results",
        perf_rounds=0,
        variant="debug",
    )
    (k,) = v.kernels
    assert (k.kernel.series, k.kernel.variant, k.release) == ("6.1", "debug", kernel.release)
    (step,) = k.steps
    assert step.verdict == "PASS", step.reason()
    suite = tmp_path / "results/6.1-debug/01/suite"
    assert json.loads((suite / "results.json").read_text())["kernel_release"] == kernel.release
    # The debug kernel's checkers were on in that boot (lockdep announces itself).
    assert "Lock dependency validator" in (suite / "console.log").read_text()
