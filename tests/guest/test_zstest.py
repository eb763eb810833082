"""The zstest driver in a real 6.1 guest: bad input is refused, and the checker can fail.

The module runs once per allocator of the suite (upstream, own), one guest each. Every line
must come back with the errno the driver documents, the host's DriverModel must predict the
same errnos and value lines, the `classes` table must match the model after every batch,
and the kernel log must stay clean.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable

import pytest

from pyharness.check.driver import UNKNOWN, DriverModel, check_classes, check_commands
from pyharness.check.workload import Workload
from pyharness.guest.qemu import Guest
from pyharness.guest.triage import find_crash
from pyharness.guest.zstest import ZsTest
from pyharness.kernel.api import api_for
from pyharness.kmod.render import PROTOCOL_VERSION
from pyharness.model import PoolModel, policy

pytestmark = pytest.mark.qemu

EINVAL, ENOENT, EEXIST = -errno.EINVAL, -errno.ENOENT, -errno.EEXIST
E2BIG, ERANGE, EIO = -errno.E2BIG, -errno.ERANGE, -errno.EIO
ENODATA, EOPNOTSUPP = -errno.ENODATA, -errno.EOPNOTSUPP
API61 = api_for("6.1")


def send(zstest: ZsTest, driver: DriverModel, lines: list[str]) -> list[int]:
    """Run a batch in the guest; check it against the model; return each line's errno.

    Afterwards `driver.values` holds the batch's value lines, which the guest printed too.
    """
    result = zstest.batch(lines)
    found = check_commands(0, lines, result, driver)
    if driver.current is not None:
        rows = zstest.classes(driver.current)
        found += check_classes(0, rows, driver.model(driver.current))
    assert found == [], "\n".join(str(d) for d in found)
    got = {f.line: f.errno for f in result.failures}
    return [got.get(n, 0) for n in range(1, len(lines) + 1)]


def test_pool_setup(zstest: ZsTest, driver: DriverModel) -> None:
    assert send(zstest, driver, ["alloc 1 64"]) == [ENOENT]  # no pool yet
    assert send(zstest, driver, ["create bad", "version"]) == [0, 0]
    assert driver.values == [("version", str(PROTOCOL_VERSION))]


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
        ["alloc 1", "free", "stats 1", "alloc 1 2 3 4", "compact 1", "churn 1 2 3", "lookup"],
        [EINVAL] * 7,
        id="wrong-arity",
    ),
    pytest.param(
        ["alloc 1 2 3 4 5 6", "pwrite 1 2 3 4 rw x", "bogus 1 2 3 4 5 6", "alloc 1 2 3 4 5"],
        [E2BIG, E2BIG, E2BIG, EINVAL],
        id="seven-tokens",
    ),
    pytest.param(
        ["create a/b", "use nosuchpool", "destroy nosuchpool"],
        [EINVAL, ENOENT, ENOENT],
        id="pool-names",
    ),
    pytest.param(
        ["alloc 6 300", "write 6 1", "verify 6 2", "free 6"], [0, 0, EIO, 0], id="verify-wrong-seed"
    ),
    pytest.param(["alloc 7 300", "verify 7 1", "free 7"], [0, ENODATA, 0], id="verify-unwritten"),
    pytest.param(["lookup 100", "lookup x"], [EOPNOTSUPP, EINVAL], id="lookup-on-6.1"),
    pytest.param(
        [
            "churn 1 10 0 0",
            "churn 1 1048577 0 1",
            "churn x 10 0 1",
            "churn 1 4294967296 0 0",
            "churn 1 0 0 1",
        ],
        [EINVAL, EINVAL, EINVAL, ERANGE, 0],
        id="churn-arguments",
    ),
    # pwrite/pverify: numbers, then the mode, then the id, then the range.
    pytest.param(
        [
            "alloc 10 100",
            "write 10 1",
            "pwrite x 1 0 1 rw",
            "pwrite 10 1 0 4294967296 ro",
            "pwrite 10 2 0 1 ro",
            "pverify 10 1 0 1 wo",
            "pwrite 10 2 0 1 RW",
            "pwrite 99 1 0 1 ro",
            "pwrite 99 1 0 0 rw",
            "pverify 99 1 0 1 ro",
            "free 10",
        ],
        [0, 0, EINVAL, ERANGE, EINVAL, EINVAL, EINVAL, EINVAL, ENOENT, ENOENT, 0],
        id="range-argument-order",
    ),
    pytest.param(
        [
            "alloc 11 100",
            "write 11 1",
            "pwrite 11 2 0 0 rw",
            "pwrite 11 2 100 1 rw",
            "pwrite 11 2 99 2 wo",
            "pwrite 11 2 0 101 wo",
            "pwrite 11 2 4294967295 2 rw",  # a u32 sum would wrap to 1 and pass
            "pverify 11 1 0 0 ro",
            "pverify 11 1 0 101 rw",
            "pverify 11 1 4294967200 100 ro",
            "verify 11 1",  # the refused writes changed nothing
            "pwrite 11 2 0 1 wo",
            "pwrite 11 2 99 1 rw",
            "pverify 11 2 99 1 ro",
            "free 11",
        ],
        [0, 0] + [EINVAL] * 8 + [0, 0, 0, 0, 0],
        id="range-outside-the-object",
    ),
    pytest.param(
        ["alloc 12 100", "pverify 12 1 0 0 ro", "pverify 12 1 0 1 ro", "free 12"],
        [0, EINVAL, ENODATA, 0],
        id="pverify-unwritten",
    ),
    # lockfree: the numbers, then MS's range, then the id; a refused one frees nothing.
    pytest.param(
        ["lockfree 99 0", "lockfree x 0", "alloc 13 100", "lockfree 13 1001", "lockfree 13 -1"]
        + ["lockfree 13 4294967296", "verify 13 0", "free 13"],
        [ENOENT, EINVAL, 0, EINVAL, EINVAL, ERANGE, ENODATA, 0],
        id="lockfree-arguments",
    ),
    pytest.param(
        ["where 99", "where x", "where 4294967296", "where", "alloc 14 100", "where 14", "free 14"],
        [ENOENT, EINVAL, ERANGE, EINVAL, 0, 0, 0],
        id="where-arguments",
    ),
    # A kmalloc pool takes alloc, free, reset and stats; the rest fail before their arguments.
    pytest.param(
        ["kcreate kp", "create kp", "alloc 1 100", "write 1 1", "compact", "churn x 1 1 1"]
        + ["alloc 1 5", "alloc 2 0", "alloc 2 4097", "free 3", "stats", "reset", "free 1"]
        + ["destroy kp", "use bad"],
        [0, EEXIST, 0, EOPNOTSUPP, EOPNOTSUPP, EOPNOTSUPP, EEXIST, EINVAL, EINVAL, ENOENT]
        + [0, 0, ENOENT, 0, 0],
        id="kmalloc-pool",
    ),
    pytest.param(
        ["compressor LZO", "compressor lzo/rle", "compressor", "compressor " + "z" * 32],
        [EINVAL] * 4,
        id="compressor-names",
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
    # Every object the tests above made was freed; a refused line allocated nothing.
    assert send(zstest, driver, ["use bad", "stats"]) == [0, 0]
    huge = str(driver.model("bad").huge_class_size())
    assert driver.values == [("pages", "0"), ("huge_class_size", huge), ("pages_compacted", "0")]
    assert driver.live("bad") == {}


def test_the_allocator_refuses_bad_sizes_itself(zstest: ZsTest, driver: DriverModel) -> None:
    """What the driver refuses before the allocator (sizes 0 and above PAGE_SIZE, a freed id),
    handed to the allocator itself: zs_malloc returns its documented errno, zs_free ignores
    the error value, and the pool is intact afterwards."""
    lines = ["create raw", "alloc 1 100", "write 1 4", "alloc 2 3000", "write 2 5", "free 2"]
    assert send(zstest, driver, lines) == [0] * len(lines)
    oversize = -errno.EINVAL if driver.api.oversize_errno == "EINVAL" else -errno.ENOSPC
    sizes = [0, 4097, 65536, 4294967295, 64, 4096]
    assert send(zstest, driver, [f"raw {s}" for s in sizes]) == [0] * len(sizes)
    assert driver.values == [
        ("raw", str(-errno.EINVAL)),
        *[("raw", str(oversize))] * 3,
        ("raw", "0"),
        ("raw", "0"),
    ]
    # A freed id never reaches the allocator: mapping it is refused by the driver.
    freed = ["verify 2 5", "pverify 2 5 0 1 ro", "pwrite 2 5 0 1 rw", "free 2"]
    assert send(zstest, driver, freed) == [ENOENT] * len(freed)
    assert send(zstest, driver, ["verify 1 4", "compact", "reset", "stats"]) == [0] * 4
    assert driver.values[1] == ("pages", "0")


def test_partial_writes(zstest: ZsTest, driver: DriverModel) -> None:
    lines = ["create spans", *[f"alloc {i} 100" for i in range(1, 38)]]
    lines += [f"write {i} 5" for i in range(1, 38)]
    assert send(zstest, driver, lines) == [0] * len(lines)
    m, live = driver.model("spans"), driver.live("spans")
    # The 112-byte class (2 pages): slot 36 sits at 4032 and crosses into the second page.
    span = [i for i, obj in live.items() if m.spans(obj.handle)]
    flat = [i for i, obj in live.items() if not m.spans(obj.handle)]
    assert span == [37]
    s, n = span[0], flat[0]

    # A write-only mapping of a spanning object copies the whole per-CPU buffer back.
    got = send(
        zstest,
        driver,
        [
            f"pwrite {s} 9 10 20 wo",
            f"verify {s} 5",
            f"pverify {s} 9 10 20 ro",
            f"pverify {s} 9 10 20 rw",
            f"pverify {s} 5 30 70 ro",
        ],
    )
    assert [driver.run(f"verify {s} 5"), driver.run(f"pverify {s} 5 30 70 ro")] == [UNKNOWN] * 2
    assert got[0] == 0 and got[1] in (0, EIO) and got[2:4] == [0, 0] and got[4] in (0, EIO)

    # The same through a non-spanning object: mapped in place, exact.
    assert send(
        zstest,
        driver,
        [
            f"pwrite {n} 9 10 20 wo",
            f"verify {n} 5",
            f"pverify {n} 9 10 20 ro",
            f"pverify {n} 5 0 10 ro",
            f"pverify {n} 5 30 70 rw",
            f"pverify {n} 5 0 11 ro",
        ],
    ) == [0, EIO, 0, 0, 0, EIO]

    # rw on the spanning object copies it in first: the rest stays.
    assert send(
        zstest,
        driver,
        [
            f"write {s} 6",
            f"pwrite {s} 9 10 20 rw",
            f"verify {s} 6",
            f"pverify {s} 9 10 20 ro",
            f"pverify {s} 6 0 10 ro",
            f"pverify {s} 6 30 70 rw",
            f"pwrite {s} 9 0 100 wo",  # the whole object through wo: exact again
            f"verify {s} 9",
        ],
    ) == [0, 0, EIO, 0, 0, 0, 0, 0]

    # Ranges outside the object change nothing.
    assert send(
        zstest,
        driver,
        [
            f"pwrite {s} 1 0 101 rw",
            f"pwrite {s} 1 100 1 wo",
            f"pverify {s} 9 99 2 ro",
            f"pwrite {n} 1 4294967295 2 wo",
            f"verify {s} 9",
            "reset",
            "stats",
        ],
    ) == [EINVAL] * 4 + [0, 0, 0]
    assert driver.values[0] == ("pages", "0")


def test_where_shows_the_zspage_and_slot_the_model_predicts(
    zstest: ZsTest, driver: DriverModel
) -> None:
    # Three zspages' worth of 100- and 1000-byte objects, two of every three freed, new
    # allocations into the freed slots, then a compaction that moves the survivors:
    # every object's page and offset are checked against the model after each step.
    small, large = range(3000, 3219), range(4000, 4036)
    lines = [
        "create where",
        *(f"alloc {i} 100" for i in small),
        *(f"alloc {i} 1000" for i in large),
    ]
    assert send(zstest, driver, lines) == [0] * len(lines)
    kept = [i for i in [*small, *large] if i % 3 == 0]
    frees = [f"free {i}" for i in [*small, *large] if i % 3]
    refill = [f"alloc {i} 100" for i in range(5000, 5040)]
    for batch in (frees + refill, ["compact"]):
        assert send(zstest, driver, batch) == [0] * len(batch)
        ids = [*kept, *range(5000, 5040)]
        got = send(zstest, driver, [f"where {i}" for i in ids])
        assert got.count(0) > len(ids) // 2 and set(got) <= {0, EINVAL}
    assert send(zstest, driver, ["destroy where"]) == [0]


def test_churn(zstest: ZsTest, driver: DriverModel) -> None:
    assert send(zstest, driver, ["create churn", "churn 7 20000 1000 512", "stats"]) == [0] * 3
    pages = int(driver.values[0][1])
    assert pages > 0
    # The model's objects are the guest's: verify every one churn left.
    live = driver.live("churn")
    assert all(1000 <= oid < 1512 for oid in live)
    verifies = [f"verify {oid} {obj.seed}" for oid, obj in live.items()]
    assert send(zstest, driver, verifies) == [0] * len(verifies)
    # Objects of the workload among churn's ids: whole, partly written, never written.
    lines = [
        "alloc 2000 200",
        "write 2000 3",
        "alloc 2001 3000",
        "alloc 2002 100",
        "write 2002 4",
        "pwrite 2002 8 0 10 rw",
        "churn 8 5000 2000 64",
        "churn 9 3000 1000 512",
        "compact",
        "stats",
    ]
    assert send(zstest, driver, lines) == [0] * len(lines)
    assert [k for k, _ in driver.values] == [
        "compacted",
        "pages",
        "huge_class_size",
        "pages_compacted",
    ]
    assert send(zstest, driver, ["reset", "stats"]) == [0, 0]
    assert driver.values[0] == ("pages", "0")


def test_compact(zstest: ZsTest, driver: DriverModel) -> None:
    # Two zspages of the 112-byte class (upstream 6.1: 2 pages, 73 objects) holding one
    # object each: the first object of each.
    assert send(zstest, driver, ["create compact"]) == [0]
    cls = driver.model("compact").class_of(100)
    objs, pages = cls.objs_per_zspage, cls.pages_per_zspage
    huge = str(driver.model("compact").huge_class_size())
    keep = (1, objs + 1)
    lines = [f"alloc {i} 100" for i in range(1, 2 * objs + 1)]
    lines += [f"write {i} {i}" for i in keep]
    lines += [f"free {i}" for i in range(1, 2 * objs + 1) if i not in keep]
    assert send(zstest, driver, lines) == [0] * len(lines)
    verifies = [f"verify {i} {i}" for i in keep]
    assert send(zstest, driver, ["stats", "compact", *verifies, "compact", "stats"]) == [0] * 6
    # One zspage drains into the other and is freed; a second compaction finds nothing.
    assert driver.values == [
        ("pages", str(2 * pages)),
        ("huge_class_size", huge),
        ("pages_compacted", "0"),
        ("compacted", str(pages)),
        ("compacted", "0"),
        ("pages", str(pages)),
        ("huge_class_size", huge),
        ("pages_compacted", str(pages)),
    ]
    assert send(zstest, driver, ["reset", "compact", "destroy compact"]) == [0, 0, 0]
    assert driver.values == [("compacted", "0")]


def test_lockfree_defers_the_release_and_refuses_a_spanning_object(
    zstest: ZsTest, driver: DriverModel
) -> None:
    # One zspage full of a class whose objects cross page ends, freed with their pages locked.
    # Sent outside the model: the release happens when the allocator's worker runs.
    model = PoolModel(
        driver.policy or policy(driver.api.model_policy, chain_size=driver.api.chain_size)
    )
    size = next(s for s in range(2000, 4096, 16) if model.class_of(s).pages_per_zspage > 1)
    cls = model.class_of(size)
    slot = cls.size
    spanning = sum(
        k * slot // 4096 != ((k + 1) * slot - 1) // 4096 for k in range(cls.objs_per_zspage)
    )
    ids = range(1, cls.objs_per_zspage + 1)
    lines = ["create lockfree", *(f"alloc {i} {size}" for i in ids), "stats"]
    lines += [f"lockfree {i} 20" for i in ids]
    result = zstest.batch(lines)
    assert result.value("pages") == str(cls.pages_per_zspage)
    refused = [f for f in result.failures if f.verb == "lockfree"]
    assert len(result.failures) == len(refused) == spanning > 0
    assert {(f.errno, f.reason) for f in refused} == {
        (EINVAL, "the object spans pages: no page of its own to lock")
    }
    # Pages counted before and after each free: never dropping while a page is locked.
    taken = [v for k, v in result.values if k == "lockfree"]
    assert taken == [f"{cls.pages_per_zspage}:{cls.pages_per_zspage}"] * (len(ids) - spanning)
    # The spanning objects are freed plainly; then the deferred release gives the pages back.
    pages = zstest.batch(["reset", "stats"]).value("pages")
    for _ in range(50):
        if pages == "0":
            break
        time.sleep(0.1)
        pages = zstest.batch(["stats"]).value("pages")
    assert pages == "0"
    zstest.batch(["destroy lockfree", *([f"use {driver.current}"] if driver.current else [])])


def test_the_workload_agrees_with_the_model(
    zstest: ZsTest, new_driver: Callable[[], DriverModel]
) -> None:
    right = new_driver()
    batches = Workload(seed=3, batch_ops=300, pool="right").batches(600)
    assert any(line.startswith("churn ") for b in batches for line in b)
    assert any(line.startswith("pwrite ") for b in batches for line in b)
    for number, lines in enumerate(batches):
        result = zstest.batch(lines)
        found = check_commands(number, lines, result, right)
        found += check_classes(number, zstest.classes("right"), right.model("right"))
        assert found == [], "\n".join(str(d) for d in found)
    assert dict(result.values)["pages"] == "0"


def test_checker_catches_a_wrong_model(zstest: ZsTest, driver: DriverModel) -> None:
    """The same workload checked against 6.12's policy must diverge on 6.1, for upstream and
    for ours (which takes 6.1's geometry by default)."""
    other = "6.12"
    wrong = DriverModel(API61, policy(other))
    batches = Workload(seed=3, batch_ops=300, pool="wrong").batches(600)
    assert batches[0] == ["create wrong"]
    batches[0] = ["create wrong", "stats"]  # an empty pool: only huge_class_size can differ
    found = []
    for number, lines in enumerate(batches):
        result = zstest.batch(lines)
        found += check_commands(number, lines, result, wrong)
        found += check_classes(number, zstest.classes("wrong"), wrong.model("wrong"))
    assert found, f"the model of {other} agreed"
    assert found[0].kind == "huge_class_size"
    assert "3257" in found[0].detail and "3625" in found[0].detail
    assert {d.kind for d in found} >= {"class-stats", "huge_class_size", "pages"}


def test_the_pages_file_takes_whole_pages_once_a_compressor_is_chosen(
    guest: Guest, zstest: ZsTest
) -> None:
    pages = "/sys/kernel/debug/zstest/pages"
    rc, out = guest.run_status(f"dd if=/dev/zero of={pages} bs=4096 count=1 2>&1")
    assert rc != 0 and "No such file" in out  # ENOENT: no compressor yet
    missing = zstest.batch(["compressor nosuchalg"]).failures
    assert [f.errno for f in missing] == [ENOENT]
    assert zstest.batch(["compressor lzo-rle"]).failures == ()
    rc, out = guest.run_status(f"dd if=/dev/urandom of={pages} bs=100 count=1 2>&1")
    assert rc != 0 and "Invalid argument" in out
    guest.run(f"dd if=/dev/zero of={pages} bs=4096 count=2 2>/dev/null")
    guest.run(f"dd if=/dev/urandom of={pages} bs=4096 count=1 2>/dev/null")
    zero, same, random = (int(n) for n in zstest.read_file("pages").split())
    assert (zero, same) == (0, 0) and random > 4096  # lzo-rle grows random data
    assert zstest.batch(["compressor lzo-rle"]).failures == ()  # which forgets the lengths
    assert zstest.read_file("pages") == ""


def test_kernel_log_is_clean(guest: Guest) -> None:
    assert guest.run(
        "echo 'version' > /sys/kernel/debug/zstest/ctl && cat /sys/kernel/debug/zstest/ctl"
    ).splitlines() == [f"s version {PROTOCOL_VERSION}", "end 1 0"]
    dmesg = guest.run("dmesg")
    assert find_crash(dmesg) is None
    # Bad input leaves no trace in the kernel log: only the load-time taint notes.
    noise = [
        line
        for line in dmesg.splitlines()
        if ("zstest" in line or "zsmalloc" in line) and "taint" not in line
    ]
    assert noise == []
