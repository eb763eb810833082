"""The own allocator in guests beyond the driver suite: each render-time choice predicted
exactly by its model, and the debug kernel's sanitizers on concurrent use.

The suite of tests/guest/test_zstest.py (and stress, fuzz, stateful) already runs on the default
choices; here every other choice runs the default workload, each in its own boot.
"""

from __future__ import annotations

import pytest

from pyharness.check.driver import DriverModel, check_commands
from pyharness.check.scenarios import settle
from pyharness.commands import config, run
from pyharness.guest.qemu import Guest
from pyharness.guest.zstest import BatchResult, ZsTest
from pyharness.kmod.own import OwnAllocator
from pyharness.progress import Progress
from pyharness.report import RunResult
from tests.guest.test_source_kernels import source_built

pytestmark = pytest.mark.qemu

SERIES = ("6.1", "6.12", "7.2")

CHOICES = [
    pytest.param(OwnAllocator(fullness="quarters"), id="quarters"),
    pytest.param(OwnAllocator(chain_rule="usedpc", max_pages=4), id="usedpc-4"),
    pytest.param(OwnAllocator(max_pages=16), id="max-16"),
    pytest.param(OwnAllocator(class_delta=8), id="delta-8"),
    pytest.param(OwnAllocator(class_delta=64, fullness="quarters"), id="delta-64-quarters"),
    pytest.param(OwnAllocator(stats=False), id="no-stats"),
]


@pytest.mark.parametrize("own", CHOICES)
def test_every_choice_agrees_with_its_model(
    default_config: config.Config, own: OwnAllocator
) -> None:
    cfg = default_config.with_overrides(allocator="own", own=own, workload_ops=3000)
    result = run.run(cfg, Progress())
    assert result.passed, result.first_failure
    assert result.info["classes_checked"] is own.stats


def test_concurrent_use_is_clean_under_kasan_and_lockdep(default_config: config.Config) -> None:
    """On the 6.1 debug kernel (KASAN, KFENCE, lockdep, DEBUG_ATOMIC_SLEEP, DEBUG_VM,
    panic_on_warn): the default workload, then threads allocating, writing, verifying and
    freeing while another compacts the pool and the shell compacts all memory, which
    migrates the pool's pages under them. Any report fails the run."""
    cfg = default_config.with_overrides(allocator="own", variant="debug", workload_ops=2000)
    stress = ["create st", "stress 4 2 7 1000000", "reset", "compact", "stats"]
    answers: list[BatchResult] = []
    migrated: list[str] = []
    pages: list[int] = []

    def after(guest: Guest, result: RunResult, p: Progress) -> None:
        # The same boot, after the workload: memory compaction in the background all along.
        guest.run("(while :; do echo 1 > /proc/sys/vm/compact_memory; done) & echo $! > /tmp/c")
        zstest = ZsTest(guest)
        answers.append(zstest.batch(stress))
        # A zspage emptied under a migration's page lock is released by a worker, later.
        pages.append(settle.settled(0, lambda: settle.pool_pages(zstest)))
        guest.run("kill $(cat /tmp/c); wait")  # the shell reports the job's end here
        migrated.append(guest.run("cat /sys/kernel/debug/zsmalloc/st/migrated").strip())

    result = run.run(cfg, Progress(), run.RunOptions(after=after))
    assert result.passed, result.first_failure
    (answer,) = answers
    assert answer.failures == ()
    seen = dict(answer.values)
    assert int(seen["stress_failures"]) == 0 and int(seen["stress_compactions"]) > 0
    assert pages == [0]
    assert int(migrated[0]) > 0


@pytest.mark.parametrize("variant", ["distro", "debug"])
def test_pages_move_and_every_object_stays(default_config: config.Config, variant: str) -> None:
    """Memory compaction moves the pool's pages (zs_page_migrate, first pages included, so
    handles are rewritten): afterwards every object verifies and the pool agrees with the
    model, whose state migration must not change."""
    cfg = default_config.with_overrides(allocator="own", variant=variant, workload_ops=200)
    prepared = run.prepare(cfg, Progress())
    found: list[object] = []
    migrated: list[int] = []

    def after(guest: Guest, result: RunResult, p: Progress) -> None:
        zstest = ZsTest(guest)
        driver = DriverModel(prepared.api, prepared.sources.policy)
        lines = ["create mig", "churn 5 40000 0 20000", "stats"]
        found.extend(check_commands(0, lines, zstest.batch(lines), driver))
        # Compaction is best effort (a pass may find nothing it can take); a few passes,
        # as free-storm's loop does, so some of the pool's pages do move.
        guest.run("for i in 1 2 3 4; do echo 1 > /proc/sys/vm/compact_memory; done")
        migrated.append(int(guest.run("cat /sys/kernel/debug/zsmalloc/mig/migrated")))
        live = driver.live("mig")
        lines = [f"verify {i} {o.seed}" for i, o in live.items() if o.seed is not None]
        lines += ["compact", "stats", "reset", "stats"]
        found.extend(check_commands(1, lines, zstest.batch(lines), driver))

    result = run.run(cfg, Progress(), run.RunOptions(after=after), prepared=prepared)
    assert result.passed, result.first_failure
    assert found == []
    assert migrated[0] > 0


@pytest.mark.parametrize(("series", "variant"), [source_built(s, "minimal") for s in SERIES])
def test_source_built_kernels_run_ours_as_zsmalloc_ko(
    default_config: config.Config, series: str, variant: str
) -> None:
    """zsmalloc is a module there, so ours takes the zs_ names (and zram's place)."""
    cfg = default_config.with_overrides(
        kernel=series, variant=variant, allocator="own", workload_ops=3000
    )
    result = run.run(cfg, Progress())
    assert result.passed, result.first_failure
    assert result.info["classes_checked"] is True
    assert (
        "EXPORT_SYMBOL_GPL(zs_malloc);" in (result.directory / "sources" / "zsmalloc.c").read_text()
    )


@pytest.mark.parametrize("series", ["6.12", "7.2"])
def test_ours_under_a_prefix_beside_the_builtin_zsmalloc(
    default_config: config.Config, series: str
) -> None:
    """Debian's 6.12 and 7.2 have zsmalloc built in: ours runs as zsk_* beside it. The
    default workload, the allocator's own refusals (7.2 and 6.12 answer -ENOSPC above
    PAGE_SIZE) and concurrent stress, in one boot."""
    cfg = default_config.with_overrides(kernel=series, allocator="own", workload_ops=3000)
    prepared = run.prepare(cfg, Progress())
    assert prepared.sources.modules == ("zsk", "zstest")
    found: list[object] = []
    values: list[tuple[str, str]] = []  # the guest's, checked equal to the model's
    stress: list[BatchResult] = []

    def after(guest: Guest, result: RunResult, p: Progress) -> None:
        zstest = ZsTest(guest)
        driver = DriverModel(prepared.api, prepared.sources.policy)
        lines = ["create edge", "raw 0", "raw 4097", "raw 64", "lookup 4096", "lookup 4097"]
        lines.append("stats")
        found.extend(check_commands(0, lines, zstest.batch(lines), driver))
        values.extend(driver.values)
        stress.append(zstest.batch(["create st", "stress 3 2 7 1000000", "reset", "stats"]))

    result = run.run(cfg, Progress(), run.RunOptions(after=after), prepared=prepared)
    assert result.passed, result.first_failure
    assert found == []
    assert values[:3] == [("raw", "-22"), ("raw", "-28"), ("raw", "0")]
    assert values[3] == ("class_index", "254")
    after_stress = dict(stress[0].values)
    assert int(after_stress["stress_failures"]) == 0 and after_stress["pages"] == "0"
