"""The zstest driver in a real 6.1 guest: bad input is refused, and the checker can fail.

One guest boots for the whole module. Every bad line must come back as an
error line with the errno the driver documents, the host's DriverModel
must predict the same errno, and the kernel log must stay clean.
"""

from __future__ import annotations

import errno

import pytest

from pyharness.check import DriverModel, check_commands, check_state
from pyharness.guest import ZsTest
from pyharness.model import policy
from pyharness.qemu import Guest
from pyharness.triage import find_crash
from pyharness.workload import Workload

pytestmark = pytest.mark.qemu

EINVAL, ENOENT, EEXIST = -errno.EINVAL, -errno.ENOENT, -errno.EEXIST
E2BIG, ERANGE, EIO = -errno.E2BIG, -errno.ERANGE, -errno.EIO


@pytest.fixture(scope="module")
def zstest(guest: Guest) -> ZsTest:
    return ZsTest(guest)


@pytest.fixture(scope="module")
def driver() -> DriverModel:
    """The host's prediction, fed the same batches as the guest in this module."""
    return DriverModel(policy("6.1"))


def send(zstest: ZsTest, driver: DriverModel, lines: list[str]) -> list[int]:
    """Run a batch in the guest; return each line's errno and check the model agrees."""
    result = zstest.batch(lines)
    got = {f.line: f.errno for f in result.failures}
    errnos = [got.get(n, 0) for n in range(1, len(lines) + 1)]
    predicted = [driver.run(line) for line in lines]
    assert errnos == predicted, f"guest {errnos} but the model predicts {predicted}"
    return errnos


def test_pool_setup(zstest: ZsTest, driver: DriverModel) -> None:
    assert send(zstest, driver, ["alloc 1 64"]) == [ENOENT]  # no pool yet
    assert send(zstest, driver, ["create bad", "version"]) == [0, 0]


BAD_INPUT = [
    pytest.param(["alloc 1 0"], [EINVAL], id="alloc-size-0"),
    pytest.param(["alloc 1 5000"], [EINVAL], id="alloc-size-5000"),
    pytest.param(["free 99"], [ENOENT], id="free-never-allocated"),
    pytest.param(["alloc 2 100", "free 2", "free 2"], [0, 0, ENOENT], id="double-free"),
    pytest.param(
        ["alloc 3 100", "write 3 7", "free 3", "verify 3 7"], [0, 0, 0, ENOENT], id="verify-freed"
    ),
    pytest.param(["alloc 4 100", "alloc 4 200", "free 4"], [0, EEXIST, 0], id="id-reused-live"),
    pytest.param(["alloc x 100", "alloc 5 1k", "free -1"], [EINVAL] * 3, id="non-numeric"),
    pytest.param(
        ["alloc 4294967296 10", "alloc 1 99999999999999999999999"], [ERANGE] * 2, id="too-large"
    ),
    pytest.param(["frobnicate 1 2", "ALLOC 1 2"], [EINVAL, EINVAL], id="unknown-verb"),
    pytest.param(
        ["alloc 1", "free", "stats 1", "alloc 1 2 3 4"], [EINVAL] * 3 + [E2BIG], id="wrong-arity"
    ),
    pytest.param(
        ["create a/b", "use nosuchpool", "destroy nosuchpool"],
        [EINVAL, ENOENT, ENOENT],
        id="pool-names",
    ),
    pytest.param(
        ["alloc 6 300", "write 6 1", "verify 6 2", "free 6"], [0, 0, EIO, 0], id="verify-wrong-seed"
    ),
]


@pytest.mark.parametrize("lines,expected", BAD_INPUT)
def test_bad_input_is_refused(
    zstest: ZsTest, driver: DriverModel, lines: list[str], expected: list[int]
) -> None:
    assert send(zstest, driver, lines) == expected


def test_line_of_64k_is_refused(guest: Guest, zstest: ZsTest, driver: DriverModel) -> None:
    # Made in the guest: a 64 KiB line cannot cross the serial tty in one piece.
    guest.run("head -c 65536 /dev/zero | tr '\\0' a > /tmp/long && echo >> /tmp/long")
    guest.run("echo 'alloc 7 64' >> /tmp/long && echo 'free 7' >> /tmp/long")
    result = zstest.batch_file("/tmp/long")
    assert result.commands == 3
    assert [(f.line, f.errno) for f in result.failures] == [(1, E2BIG)]
    assert driver.run("a" * 65536) == E2BIG


def test_pool_is_intact_after_bad_input(zstest: ZsTest, driver: DriverModel) -> None:
    result = zstest.batch(["stats"])
    assert int(result.value("pages")) == 0  # every object the tests made was freed
    rows = zstest.classes("bad")
    assert check_state(0, result, rows, driver.model("bad")) == []


def test_checker_catches_a_wrong_model(zstest: ZsTest) -> None:
    """The same workload checked against the 6.12 policy must diverge on 6.1."""
    wrong = DriverModel(policy("6.12"))
    found = []
    for number, lines in enumerate(Workload(seed=3, batch_ops=300, pool="wrong").batches(600)):
        result = zstest.batch(lines)
        found += check_commands(number, lines, result, wrong)
        if "stats" in lines:
            found += check_state(number, result, zstest.classes("wrong"), wrong.model("wrong"))
    assert found, "a model of another kernel version agreed with 6.1"
    assert {d.kind for d in found} >= {"class-stats", "huge-class-size"}


def test_kernel_log_is_clean(guest: Guest) -> None:
    assert guest.run(
        "echo 'version' > /sys/kernel/debug/zstest/ctl && cat /sys/kernel/debug/zstest/ctl"
    ).splitlines() == ["s version 1", "end 1 0"]
    dmesg = guest.run("dmesg")
    assert find_crash(dmesg) is None
    # Bad input leaves no trace in the kernel log: only the load-time taint notes.
    noise = [
        line
        for line in dmesg.splitlines()
        if ("zstest" in line or "zsmalloc" in line) and "taint" not in line
    ]
    assert noise == []
