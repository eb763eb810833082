"""Scenarios without a guest: their bounds, their refusals, and that their checked batches
are what the model expects to succeed (a plan the model rejects would test nothing)."""

from __future__ import annotations

import errno

import pytest

from pyharness.check import scenarios
from pyharness.check.driver import DriverModel
from pyharness.check.scenarios import (
    deferred,
    fault,
    free_storm,
    lifecycle,
    page_ends,
    settle,
    zram_sysfs,
)
from pyharness.guest.zstest import BatchResult, CommandFailure
from pyharness.kernel.api import api_for
from pyharness.model import Handle, PoolModel, policy

API61 = api_for("6.1")
API72 = api_for("7.2")


def model_of(api_series: str) -> PoolModel:
    api = api_for(api_series)
    return PoolModel(policy(api.model_policy, chain_size=api.chain_size))


def test_every_scenario_is_registered_with_a_kind_and_bounds() -> None:
    assert set(scenarios.SCENARIOS) == {
        "page-ends",
        "map-vs-compact",
        "free-storm",
        "fault",
        "zram-swap",
        "pressure",
        "pool-lifecycle",
        "deferred-free",
        "zram-sysfs-race",
        "zone-migration",
    }
    for s in scenarios.SCENARIOS.values():
        assert s.operations > 0 and 0 < s.seconds <= 600 and s.summary


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"operations": 0}, "0 operations is out of range"),
        ({"seconds": 0}, "a deadline of 0 s"),
        ({"cpus": 3}, "3 CPUs asked, the guest has 2"),
        ({"repeat": 0}, "repeat must be at least 1"),
    ],
)
def test_out_of_range_parameters_are_refused(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(scenarios.ScenarioError, match=message):
        scenarios.params_for(scenarios.find("map-vs-compact"), 2, **kwargs)


def test_defaults_fill_in_and_unknown_names_list_the_known() -> None:
    params = scenarios.params_for(scenarios.find("fault"), 2)
    assert params == scenarios.Params(4000, 30, 2, 1)
    with pytest.raises(
        scenarios.ScenarioError, match="known scenarios: deferred-free, fault, free-storm"
    ):
        scenarios.find("nope")


def test_missing_kernel_options_are_named() -> None:
    config = {"FAILSLAB": "y"}.get
    assert scenarios.missing_options(scenarios.find("fault"), config) == [
        "CONFIG_FAIL_PAGE_ALLOC=y (this kernel has n)",
        "CONFIG_FAULT_INJECTION_DEBUG_FS=y (this kernel has n)",
    ]


@pytest.mark.parametrize("series", ["6.1", "6.12", "7.2"])
def test_page_ends_puts_both_ends_of_merged_classes_into_spanning_slots(series: str) -> None:
    model = model_of(series)
    merged = page_ends.merged_classes(model)
    assert merged, "every series has merged classes"
    for smallest, largest, cls in merged:
        assert model.class_of(smallest) == cls == model.class_of(largest)
        assert smallest == 1 or model.class_of(smallest - 1) != cls
        assert model.class_of(largest + 1) != cls
    spanning = {True: 0, False: 0}
    for smallest, largest, cls in merged:
        for n in range(cls.objs_per_zspage):
            h = model.alloc(smallest if n % 2 == 0 else largest)
            assert isinstance(h, Handle)
            if model.spans(h):
                spanning[n % 2 == 0] += 1
    assert spanning[True] and spanning[False]


@pytest.mark.parametrize("series", ["6.1", "7.2"])
def test_page_ends_batches_succeed_in_the_model(series: str) -> None:
    api = api_for(series)
    plan = page_ends.batches(api, policy(api.model_policy, chain_size=api.chain_size), 20_000)
    driver = DriverModel(api)
    for batch in plan:
        assert [(line, driver.run(line)) for line in batch if driver.run(line) != 0] == []
    modes = {line.split()[-1] for batch in plan for line in batch if line.startswith("pverify")}
    assert modes == ({"ro", "rw"} if api.map_object else {"ro", "sg"})


def test_page_ends_honours_its_bound() -> None:
    pol = policy(API61.model_policy, chain_size=API61.chain_size)
    small = page_ends.batches(API61, pol, 10)
    assert len(small) == 3  # create, one class (the bound is checked between classes), destroy


def test_free_storm_batches_succeed_in_the_model_and_leave_the_pool_empty() -> None:
    plan = free_storm.batches(scenarios.Params(900, 8, 2, 2))
    driver = DriverModel(API61)
    for batch in plan:
        for line in batch:
            assert driver.run(line) == 0, line
    assert driver.model(free_storm.POOL).total_pages() == 0
    frees = [[ln for ln in b if ln.startswith("free")] for b in plan[1:]]
    assert frees[1] == list(reversed(frees[1])) or frees[1][0] != frees[0][0]
    assert len(plan) == 1 + 2 * len(free_storm.ORDERS)


@pytest.mark.parametrize("series", ["6.1", "7.2"])
def test_pool_lifecycle_fills_every_class_and_destroys_full_and_empty_pools(series: str) -> None:
    model = model_of(series)
    sizes = lifecycle.class_sizes(model)
    assert {model.class_of(size).index for size in sizes} == {c.index for c in model.classes}
    plan = lifecycle.batches(sizes, scenarios.Params(1, 8, 2, 1))
    assert len(plan) == 2  # one round of each kind of destroy, whatever the bound
    driver = DriverModel(api_for(series))
    for batch in plan:
        for line in batch:
            assert driver.run(line) == 0, line
    freed = [any(line.startswith("free") for line in batch) for batch in plan]
    assert freed == [True, False] and all(b[-1].startswith("destroy") for b in plan)


def failure(line: int, verb: str, err: int) -> CommandFailure:
    return CommandFailure(line, verb, err, "x")


def test_a_fault_window_allows_enomem_and_the_enoent_it_causes() -> None:
    lines = ["create p", "destroy p", "use sc-fault", "alloc 5 100", "write 5 5", "alloc 6 9"]
    result = BatchResult(
        6,
        (
            failure(1, "create", -errno.ENOMEM),
            failure(2, "destroy", -errno.ENOENT),
            failure(4, "alloc", -errno.ENOMEM),
            failure(5, "write", -errno.ENOENT),
        ),
        (),
    )
    assert fault.check_window(lines, result) == (None, {5}, 2)


@pytest.mark.parametrize(
    ("failed", "message"),
    [
        (failure(4, "alloc", -errno.EINVAL), "line 4 `alloc 5 100` failed with errno -22"),
        (failure(6, "alloc", -errno.EIO), "errno -5"),
        (failure(3, "use", -errno.ENOMEM), "`use sc-fault`"),
    ],
)
def test_a_fault_window_refuses_other_errors(failed: CommandFailure, message: str) -> None:
    lines = ["create p", "destroy p", "use sc-fault", "alloc 5 100", "write 5 5", "alloc 6 9"]
    got, _, _ = fault.check_window(lines, BatchResult(6, (failed,), ()))
    assert got is not None and message in got


def test_a_write_fails_with_enoent_only_after_its_alloc_failed() -> None:
    lines = ["use sc-fault", "alloc 5 100", "write 5 5"]
    got, _, _ = fault.check_window(lines, BatchResult(3, (failure(3, "write", -errno.ENOENT),), ()))
    assert got is not None and "write 5 5" in got


def test_fault_setup_clears_the_defaults_that_skip_zsmalloc() -> None:
    lines = fault.setup_commands(7)
    assert "echo 0 > /sys/kernel/debug/fail_page_alloc/min-order" in lines
    for name in fault.INJECTORS:
        assert f"echo N > /sys/kernel/debug/{name}/ignore-gfp-wait" in lines
        assert f"echo Y > /sys/kernel/debug/{name}/task-filter" in lines


def test_survivors_are_read_from_stress_lines() -> None:
    result = BatchResult(
        2, (), (("stress_obj", "7:100:9"), ("stress_ops", "5"), ("stress_obj", "8:4096:1"))
    )
    assert settle.survivors(result) == [(7, 100, 9), (8, 4096, 1)]


def test_the_fault_window_verb_takes_zero_or_one() -> None:
    driver = DriverModel(API61)
    assert [driver.run(line) for line in ("faults 1", "faults 0", "faults 2", "faults x")] == [
        0,
        0,
        -errno.EINVAL,
        -errno.EINVAL,
    ]


def test_deferred_free_reads_what_each_locked_free_did() -> None:
    def failure(line: int, err: int) -> CommandFailure:
        return CommandFailure(line, "lockfree", -err, "why")

    ok = BatchResult(3, (), (("lockfree", "4:4"), ("lockfree", "1:1")))
    assert deferred.locked_frees(ok) == (2, 0, None)
    busy = BatchResult(3, (failure(2, errno.EBUSY),), (("lockfree", "4:4"),))
    assert deferred.locked_frees(busy) == (1, 1, None)
    dropped = BatchResult(1, (), (("lockfree", "4:3"),))
    assert "went from 4 to 3" in str(deferred.locked_frees(dropped)[2])
    fixed = BatchResult(1, (failure(1, errno.EOPNOTSUPP),), ())
    assert deferred.locked_frees(fixed)[2] == deferred.NOT_MOVABLE
    spans = BatchResult(1, (failure(1, errno.EINVAL),), ())
    assert "line 1 lockfree: why" in str(deferred.locked_frees(spans)[2])


def test_zram_sysfs_race_sums_its_readers_and_wants_a_verdict() -> None:
    out = "sysfs cpus 3\nsysfs reads 10 odd 1\nsysfs writes 7 failed 0\n"
    out += "sysfs reads 5 odd 0\nsysfs-ok\n"
    counts, failure = zram_sysfs.parse(out)
    assert failure is None
    assert counts == {"cpus": 3, "writes": 7, "failed": 0, "reads": 15, "odd": 1}
    assert zram_sysfs.parse("sysfs cpus 2\nsysfs-fail: pread: Bad address\n")[1] == (
        "pread: Bad address"
    )
    assert zram_sysfs.parse("sysfs cpus 2\n")[1] == "no sysfs-ok line"
