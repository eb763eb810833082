"""Concurrent stress in a real 6.1 guest with 2 CPUs: what must hold whatever the interleaving.

Two worker threads allocate, write, verify and free on one pool while a
third compacts. Afterwards every surviving object verifies, and the pool's
counters equal the live set: per class, obj_used is the number of
survivors of that class, and the total pages are the sum of the classes'.
"""

from __future__ import annotations

import errno

import pytest

from pyharness.guest.qemu import Guest
from pyharness.guest.triage import find_crash
from pyharness.guest.zstest import ZsTest
from pyharness.model import Policy, PoolModel

pytestmark = pytest.mark.qemu

BASE = 1_000_000


def test_stress_keeps_data_and_counters(guest: Guest, zstest: ZsTest, suite_policy: Policy) -> None:
    assert guest.run("grep -c ^processor /proc/cpuinfo").strip() == "2"
    stress_holds(zstest, suite_policy)


def stress_holds(zstest: ZsTest, suite_policy: Policy) -> None:
    """Two workers and a compactor on pool `st`, then the survivors and counters checked."""
    result = zstest.batch(["create st", "stress 4 2 7 1000000"])
    assert result.failures == ()
    values = dict(v for v in result.values if v[0] != "stress_obj")
    survivors = [tuple(map(int, v.split(":"))) for k, v in result.values if k == "stress_obj"]
    assert int(values["stress_failures"]) == 0
    assert int(values["stress_ops"]) > 1000
    assert int(values["stress_compactions"]) > 0
    assert int(values["stress_live"]) == len(survivors) > 0
    assert all(BASE <= oid < BASE + 2 * 256 for oid, _, _ in survivors)

    model = PoolModel(suite_policy)
    want: dict[int, int] = {}
    for _, size, _ in survivors:
        index = model.class_of(size).index
        want[index] = want.get(index, 0) + 1
    rows = zstest.classes("st")
    assert {r.index: r.obj_used for r in rows if r.obj_used} == want
    opz = {c.index: c.objs_per_zspage for c in model.classes}
    for r in rows:
        assert r.obj_used <= r.obj_allocated
        assert r.pages_used == r.obj_allocated // opz[r.index] * r.pages_per_zspage
    stats = zstest.batch(["stats"])
    assert int(stats.value("pages")) == sum(r.pages_used for r in rows)

    check = zstest.batch([f"verify {oid} {seed}" for oid, _, seed in survivors])
    assert check.failures == ()
    freed = zstest.batch([f"free {oid}" for oid, _, _ in survivors] + ["free 999"] + ["stats"])
    assert [(f.line, f.errno) for f in freed.failures] == [(len(survivors) + 1, -errno.ENOENT)]
    assert int(freed.value("pages")) == 0


def test_stress_arguments_are_checked(zstest: ZsTest) -> None:
    result = zstest.batch(
        ["stress 0 2 1 0", "stress 61 2 1 0", "stress 1 9 1 0", "stress 1 2 1 4294967000"]
    )
    assert [f.errno for f in result.failures] == [-errno.EINVAL] * 4


def test_kernel_log_is_clean(guest: Guest) -> None:
    dmesg = guest.run("dmesg")
    assert find_crash(dmesg) is None, dmesg[-2000:]
