"""zram as swap and memory pressure on real kernels: both pass on the unmodified allocators
of the 6.1 debug kernel (KASAN, lockdep), each says what it did, and a page corrupted in
the guest fails the run as a data mismatch.

`make test` runs each once per allocator with small bounds, and the planted failure once.
"""

from __future__ import annotations

import os

import pytest

from pyharness.commands import config, run
from pyharness.progress import Progress

pytestmark = pytest.mark.qemu

# Small bounds for `make test`: pages (of all processes) and seconds.
QUICK = {"zram-swap": (2048, 10), "pressure": (8192, 10)}


def run_scenario(cfg: config.Config, name: str, inject: str | None = None) -> run.RunResult:
    ops, seconds = QUICK[name]
    options = run.RunOptions(
        batches=[["create zt0"], ["stats"]],  # the scenario is the test
        scenarios=(name,),
        scenario_ops=ops,
        scenario_seconds=seconds,
        inject=inject,
    )
    return run.run(cfg, Progress(), options)


def counts_of(result: run.RunResult, name: str) -> dict[str, object]:
    scenarios = result.info["scenarios"]
    assert isinstance(scenarios, dict) and name in scenarios
    counts = scenarios[name]
    assert isinstance(counts, dict)
    return counts


# `make test` runs our allocator; `make test-scenarios` (ZSKIT_SCENARIOS=all) both, and
# pressure (about 100 s on the debug kernel).
FULL = pytest.mark.skipif(
    os.environ.get("ZSKIT_SCENARIOS") != "all",
    reason="upstream's run and pressure (~100 s each) are in `make test-scenarios`",
)


@pytest.mark.parametrize("allocator", ["own", pytest.param("upstream", marks=FULL)])
def test_zram_swap_passes_on_the_debug_kernel(
    default_config: config.Config, allocator: str
) -> None:
    cfg = default_config.with_overrides(kernel="6.1", variant="debug", allocator=allocator)
    result = run_scenario(cfg, "zram-swap")
    assert result.passed, result.first_failure
    counts = counts_of(result, "zram-swap")
    assert counts["cpus"] == cfg.cpus == 2 and counts["processes"] == 4
    rounds = counts["rounds"]  # the deadline may end them after the first
    assert isinstance(rounds, int) and 1 <= rounds <= 2
    assert counts["pages_verified"] == counts["pages_written"] == rounds * 2048
    assert isinstance(counts["pages_swapped"], int) and counts["pages_swapped"] > 0
    assert isinstance(counts["max_stored"], int) and counts["max_stored"] > 0


@FULL
@pytest.mark.parametrize("allocator", ["own", "upstream"])
def test_pressure_passes_on_the_debug_kernel(default_config: config.Config, allocator: str) -> None:
    cfg = default_config.with_overrides(kernel="6.1", variant="debug", allocator=allocator)
    result = run_scenario(cfg, "pressure")
    assert result.passed, result.first_failure
    counts = counts_of(result, "pressure")
    assert counts["cpus"] == 2
    assert isinstance(counts["pages_reclaimed"], int) and counts["pages_reclaimed"] > 0
    assert isinstance(counts["stress_ops"], int) and counts["stress_ops"] > 0


def test_a_page_corrupted_before_the_compare_fails_as_data(
    default_config: config.Config,
) -> None:
    cfg = default_config.with_overrides(kernel="6.1", variant="debug", allocator="own")
    # Test-only: the program's hidden switch flips one byte of one page it read back.
    result = run_scenario(cfg, "zram-swap", inject="export ZSKIT_SWAPPER_CORRUPT=1")
    failure = result.first_failure
    assert failure is not None and failure.name == "scenario-zram-swap"
    assert failure.kind == "data"
    assert "1 pages read back from zram swap differ" in str(failure.failure)
    assert "proc 0 round 0 page 256" in str(failure.failure)


def test_a_guest_too_small_for_pressure_is_told_so(default_config: config.Config) -> None:
    cfg = default_config.with_overrides(
        kernel="6.1", variant="debug", allocator="own", memory_mb=200
    )
    result = run_scenario(cfg, "pressure")
    failure = result.first_failure
    assert failure is not None and failure.kind == "params"
    assert "the guest has 200 MiB" in str(failure.failure)
    assert "at least 256 MiB" in str(failure.failure)
