"""KTAP parsing (check/ktap.py): KUnit's log in dmesg, kselftest's TAP, broken documents."""

from __future__ import annotations

from pyharness.check import ktap

# The shape KUnit prints into the kernel log (6.1), with dmesg's stamps and other messages.
KUNIT_DMESG = """\
[    3.100000] zsmalloc: loaded
[    3.200000] KTAP version 1
[    3.200001] 1..1
[    3.200002]     KTAP version 1
[    3.200003]     # Subtest: zsmalloc
[    3.200004]     1..3
[    3.200005]     ok 1 zs_alloc_free
[    3.200006]     # zs_map_span: EXPECTATION FAILED at mm/zsmalloc_kunit.c:40
[    3.200007]     Expected data[0] == 0x5a, but
[    3.200008]     not ok 2 zs_map_span
[    3.200009]     ok 3 zs_huge # SKIP needs 64K pages
[    3.200010] # zsmalloc: pass:1 fail:1 skip:1 total:3
[    3.200011] not ok 1 zsmalloc
"""

KSELFTEST = """\
TAP version 13
1..2
# selftests: zram: zram.sh
# zram01 : [PASS]
ok 1 selftests: zram: zram.sh
# selftests: zram: slow.sh
not ok 2 selftests: zram: slow.sh # TIMEOUT 45 seconds
"""


def test_kunit_in_dmesg_is_parsed_with_its_subtests_logs_and_directives() -> None:
    root = ktap.parse(KUNIT_DMESG)
    assert not root.errors
    (suite,) = root.subtests
    assert suite.name == "zsmalloc" and suite.status == "failed"
    names = [(t.name, t.status) for t in suite.subtests]
    assert names == [("zs_alloc_free", "ok"), ("zs_map_span", "failed"), ("zs_huge", "skipped")]
    assert suite.subtests[1].log[0].startswith("zs_map_span: EXPECTATION FAILED")
    assert suite.subtests[2].reason == "needs 64K pages"
    assert root.counts() == {"ok": 1, "failed": 1, "skipped": 1}
    assert not root.passed


def test_a_kunit_modules_suite_starts_one_level_in() -> None:
    # A suite of a module loaded after boot: no top-level version line or plan.
    module = "".join(line + "\n" for line in KUNIT_DMESG.splitlines()[3:])
    root = ktap.parse(module)
    assert not root.errors and [t.name for t in root.subtests] == ["zsmalloc"]
    assert root.counts() == {"ok": 1, "failed": 1, "skipped": 1}


def test_kselftest_tap_with_a_timeout() -> None:
    root = ktap.parse(KSELFTEST)
    first, second = root.subtests
    assert first.passed and first.log == ["selftests: zram: zram.sh", "zram01 : [PASS]"]
    assert second.status == "timeout" and not root.passed


def test_a_log_prefix_is_taken_off_every_line() -> None:
    text = "".join(f"guest: {line}\n" for line in KSELFTEST.splitlines())
    assert [t.name for t in ktap.parse(text).subtests] == [
        "selftests: zram: zram.sh",
        "selftests: zram: slow.sh",
    ]


def test_no_document_and_a_short_plan_are_errors() -> None:
    assert ktap.parse("Oops: general protection fault\n").status == "error"
    crashed = ktap.parse(KUNIT_DMESG.split("[    3.200009]")[0])
    (suite,) = crashed.subtests
    assert suite.status == "error"
    assert suite.errors == [
        "planned 3 tests, 2 reported",
        "the subtest has no result line (it ended early)",
    ]
    assert crashed.errors == []  # the plan of one is met by the unfinished suite
    short = ktap.parse("KTAP version 1\n1..2\nok 1 one\n")
    assert short.errors == ["planned 2 tests, 1 reported"] and not short.passed
