"""The own allocator in guests beyond the driver suite: each render-time choice predicted
exactly by its model, and the debug kernel's sanitizers on concurrent use.

The suite of tests/test_zstest.py (and stress, fuzz, stateful) already runs on the default
choices; here every other choice runs the default workload, each in its own boot.
"""

from __future__ import annotations

import pytest
from test_source_kernels import source_built

from pyharness import config, run
from pyharness.guest import BatchResult, ZsTest
from pyharness.own import OwnAllocator
from pyharness.progress import Progress
from pyharness.qemu import Guest
from pyharness.report import RunResult

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
    freeing while another compacts. Any report fails the run."""
    cfg = default_config.with_overrides(allocator="own", variant="debug", workload_ops=2000)
    stress = ["create st", "stress 4 2 7 1000000", "reset", "compact", "stats"]
    answers: list[BatchResult] = []

    def after(guest: Guest, result: RunResult, p: Progress) -> None:
        answers.append(ZsTest(guest).batch(stress))  # the same boot, after the workload

    result = run.run(cfg, Progress(), run.RunOptions(after=after))
    assert result.passed, result.first_failure
    (answer,) = answers
    assert answer.failures == ()
    seen = dict(answer.values)
    assert int(seen["stress_failures"]) == 0 and int(seen["stress_compactions"]) > 0
    assert seen["pages"] == "0"


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
