"""zskit compare without a guest: the bench verb's model and the ratios."""

from __future__ import annotations

import errno

from pyharness.check.driver import ANY, BENCH_TIMES, DriverModel, check_commands
from pyharness.commands import compare, perf
from pyharness.guest.zstest import parse_result
from pyharness.kernel.api import api_for

API61 = api_for("6.1")


BENCH_VALUES = ["bench_pages_full", "bench_pages_half", *(f"bench_{w}_ns" for w in BENCH_TIMES)]


def test_bench_is_checked_without_a_pool() -> None:
    driver = DriverModel(API61)
    assert driver.run("bench 0 1") == -errno.EINVAL
    assert driver.run("bench 262145 1") == -errno.EINVAL
    assert driver.run("bench 4294967296 1") == -errno.ERANGE
    assert driver.run("bench 10 x") == -errno.EINVAL
    assert driver.run("bench 10") == -errno.EINVAL
    assert driver.values == []
    assert driver.run("bench 100 7") == 0
    assert [k for k, _ in driver.values] == BENCH_VALUES
    assert all(v == ANY for k, v in driver.values if k.endswith("_ns"))
    assert driver.current is None and driver.pools == {}


def _answer(driver_values: list[tuple[str, str]], **changes: str) -> str:
    lines = [f"s {k} {changes.get(k, '123' if v == ANY else v)}" for k, v in driver_values]
    return "\n".join([*lines, "end 1 0"]) + "\n"


def test_bench_timings_match_anything_but_pages_must_be_exact() -> None:
    expected = DriverModel(API61)
    expected.run("bench 500 3")
    values = list(expected.values)
    good = parse_result(_answer(values))
    assert check_commands(0, ["bench 500 3"], good, DriverModel(API61)) == []
    full = int(dict(values)["bench_pages_full"])
    bad = parse_result(_answer(values, bench_pages_full=str(full + 1)))
    found = check_commands(0, ["bench 500 3"], bad, DriverModel(API61))
    assert [d.kind for d in found] == ["bench_pages_full"]


def _bench(allocator: str, load: int, full: int, ns: int) -> perf.Bench:
    return perf.Bench(allocator, load, full, full // 2, dict.fromkeys(BENCH_TIMES, ns))


def test_ratios_of_pages_and_of_times() -> None:
    c = compare.Comparison("6.1", "6.1.0-test", "upstream", bench_n=10)
    # The host slows down over the boot: the baseline's times double, ours with them.
    c.benches = [
        _bench("own", 0, 90, 100),
        _bench("upstream", 1, 100, 200),
        _bench("own", 2, 90, 300),
        _bench("upstream", 3, 100, 400),
    ]
    c.workload = {"own": [5, 10], "upstream": [4, 12]}
    # Best against best: 100 / 200.
    assert c.speed() == dict.fromkeys([*sorted(BENCH_TIMES), "total"], 0.5)
    # Paired: own 0: 100 / 200; own 2: 300 / mean(200, 400) = 1.0; the median of 0.5 and 1.0.
    assert c.speed_paired()["total"] == 0.75
    assert c.density() == {
        "bench_full": 0.9,
        "bench_half": round(45 / 50, 4),
        "workload_peak": round(10 / 12, 4),
        "workload_sum": round(15 / 16, 4),
    }
    assert c.worse() == []
    c.workload["own"] = [13]
    assert c.worse() == ["workload_peak: 13 pages, upstream 12"]
    assert "| bench_full pages | 90 | 100 | 0.9 |" in c.markdown()
