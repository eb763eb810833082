"""Scenarios on real kernels: every one passes on the unmodified allocators, and says on
how many CPUs it ran.

`make test` runs each scenario once on the 6.1 debug kernel (KASAN, lockdep,
fault injection) with our allocator and small bounds, and zram-sysfs-race and
zone-migration on Debian's 6.1 (the source-built debug kernel has no zram
writeback and no memory hot-remove). `make test-scenarios` (ZSKIT_SCENARIOS=all)
runs them for both allocators on the debug, kcsan and nocompaction variants,
five times each: a flaky check is a bug, so any
failure there is a false alarm to fix.
"""

from __future__ import annotations

import os

import pytest

from pyharness.check import scenarios
from pyharness.commands import config, run
from pyharness.progress import Progress, StageError

ALL = os.environ.get("ZSKIT_SCENARIOS") == "all"
FULL = pytest.mark.skipif(
    not ALL,
    reason="the full scenario set (3 variants x 2 allocators x 5 rounds) runs in "
    "`make test-scenarios`",
)
# Small bounds for `make test`; the full set uses each scenario's defaults.
QUICK = {
    "page-ends": 600,
    "map-vs-compact": 5000,
    "free-storm": 600,
    "fault": 600,
    "pool-lifecycle": 600,
    "deferred-free": 200,
    "zram-sysfs-race": 2000,
    "zone-migration": 1000,
}
# Scenarios only Debian's 6.1 can run here (the source-built kernels lack the options).
ON_DISTRO = ("zram-sysfs-race", "zone-migration")
# What a variant can run: nocompaction has no compact_memory, kcsan no fault injection.
RUNS_ON = {
    "debug": (
        "page-ends",
        "map-vs-compact",
        "free-storm",
        "fault",
        "pool-lifecycle",
        "deferred-free",
    ),
    "kcsan": (
        "page-ends",
        "map-vs-compact",
        "free-storm",
        "pool-lifecycle",
        "deferred-free",
        "zram-sysfs-race",
    ),
    "nocompaction": ("page-ends", "map-vs-compact"),
}


def run_scenarios(
    cfg: config.Config, names: tuple[str, ...], quick: bool, repeat: int = 1
) -> run.RunResult:
    options = run.RunOptions(
        batches=[["create zt0"], ["stats"]],  # the scenarios are the test
        scenarios=names,
        # One bound for all: the smallest of the chosen.
        scenario_ops=min(QUICK[n] for n in names) if quick else None,
        scenario_seconds=3 if quick else None,
        scenario_repeat=repeat,
    )
    return run.run(cfg, Progress(), options)


@pytest.mark.qemu
@pytest.mark.parametrize("allocator", ["own", pytest.param("upstream", marks=FULL)])
def test_every_scenario_passes_on_the_debug_kernel(
    default_config: config.Config, allocator: str
) -> None:
    cfg = default_config.with_overrides(kernel="6.1", variant="debug", allocator=allocator)
    result = run_scenarios(cfg, RUNS_ON["debug"], quick=True)
    assert result.passed, result.first_failure
    counts = result.info["scenarios"]
    assert isinstance(counts, dict) and set(counts) == set(RUNS_ON["debug"])
    assert all(c["cpus"] >= 1 for c in counts.values())
    assert counts["map-vs-compact"]["cpus"] == cfg.cpus == 2
    assert counts["map-vs-compact"]["compactions"] > 0
    assert counts["free-storm"]["kernel_compactions"] > 0
    assert counts["fault"]["injected"] > 0
    assert counts["pool-lifecycle"]["pools"] >= 2 and counts["pool-lifecycle"]["kernel_compactions"]
    assert counts["deferred-free"]["locked_frees"] > 0


@pytest.mark.qemu
@pytest.mark.parametrize("allocator", ["own", pytest.param("upstream", marks=FULL)])
def test_the_distro_kernel_scenarios_pass(default_config: config.Config, allocator: str) -> None:
    # What the source-built debug kernel lacks: zram writeback with brd.ko, memory hot-remove.
    cfg = default_config.with_overrides(kernel="6.1", variant="distro", allocator=allocator)
    result = run_scenarios(cfg, ON_DISTRO, quick=True)
    assert result.passed, result.first_failure
    counts = result.info["scenarios"]
    assert isinstance(counts, dict)
    race, zones = counts["zram-sysfs-race"], counts["zone-migration"]
    assert race["cpus"] == 2 and race["writes"] == min(QUICK[n] for n in ON_DISTRO)
    assert race["reads"] > 0
    # The pool's pages went into ZONE_MOVABLE, and out of it to another zone.
    assert zones["in_movable"] > 0 and zones["offlined"]
    moved = zones["nr_zspages"]["offlined"]
    assert sum(n for z, n in moved.items() if "Movable" not in z) > 0


@pytest.mark.qemu
def test_a_scenario_the_kernel_cannot_run_is_refused_before_booting(
    default_config: config.Config,
) -> None:
    cfg = default_config.with_overrides(kernel="6.1", variant="distro", allocator="upstream")
    options = run.RunOptions(scenarios=("fault",))
    result = run.run(cfg, Progress(), options)
    failure = result.first_failure
    assert failure is not None
    assert "scenario fault needs CONFIG_FAILSLAB=y (this kernel has n)" in str(failure.failure)
    assert "boot" not in [c.name for c in result.cases]


def test_out_of_range_bounds_are_refused() -> None:
    with pytest.raises(StageError, match="4 CPUs asked, the guest has 2"):
        scenarios.params_for(scenarios.find("free-storm"), 2, cpus=4)


# A real bug of the unmodified allocator, which the scenario must keep catching: Debian's
# 6.1.192 mm/zsmalloc.c has empty migrate_write_lock() stubs without CONFIG_COMPACTION,
# while zs_compact() (the shrinker's, or a direct call) still moves objects, so an object
# is moved while it is mapped (upstream fixed it in 2024, "mm/zsmalloc: fix
# migrate_write_lock() when !CONFIG_COMPACTION"; 6.1 never took the fix).
KNOWN_BUGS = {("nocompaction", "upstream"): "map-vs-compact"}


@FULL
@pytest.mark.qemu
@pytest.mark.parametrize("allocator", ["own", "upstream"])
@pytest.mark.parametrize("variant", sorted(RUNS_ON))
def test_scenarios_never_raise_a_false_alarm(
    default_config: config.Config, variant: str, allocator: str
) -> None:
    cfg = default_config.with_overrides(kernel="6.1", variant=variant, allocator=allocator)
    known = KNOWN_BUGS.get((variant, allocator))
    names = tuple(n for n in RUNS_ON[variant] if n != known)
    result = run_scenarios(cfg, names, quick=False, repeat=5)
    assert result.passed, result.first_failure


@FULL
@pytest.mark.qemu
@pytest.mark.parametrize(("variant", "allocator"), sorted(KNOWN_BUGS))
def test_the_known_bug_of_61_without_compaction_is_caught_every_time(
    default_config: config.Config, variant: str, allocator: str
) -> None:
    cfg = default_config.with_overrides(kernel="6.1", variant=variant, allocator=allocator)
    for _ in range(5):
        result = run_scenarios(cfg, (KNOWN_BUGS[variant, allocator],), quick=False)
        failure = result.first_failure
        assert failure is not None and failure.kind == "data", failure
        assert "map/verify steps failed in the guest while compaction ran" in str(failure.failure)
