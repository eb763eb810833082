"""Tests for pyharness.check: the driver model's predictions and the divergence checks.

Every expected errno and value below is read off kmod/zstest.c.j2 (zt_ctl_write,
zt_run_line, zt_range_cmd, zt_cmd_churn, zt_cmd_stats and the other zt_cmd_* handlers),
the kernel's kstrtou32 and the upstream zsmalloc rules in the reference notes, not taken
from the model.
"""

from __future__ import annotations

import dataclasses

import pytest

from pyharness.check.driver import (
    UNKNOWN,
    DriverModel,
    check_classes,
    check_commands,
    check_geometry,
    keeps_pool,
)
from pyharness.guest.zstest import BatchResult, CommandFailure
from pyharness.kernel.api import KernelApi, api_for
from pyharness.kmod.render import PROTOCOL_VERSION
from pyharness.model import ClassStats, PoolModel, class_table, policy
from pyharness.model.pattern import pattern, pattern_seed, xorshift32

API61 = api_for("6.1")
API612 = api_for("6.12")
# 7.2 has no zs_map_object: everything else as on 6.1, so only the mapping checks differ.
NOMAP = dataclasses.replace(API61, map_object=False)

# Linux errno values, spelled out so the tests do not depend on the host's errno module.
ENOENT = -2
EIO = -5
E2BIG = -7
ENOMEM = -12
EEXIST = -17
EINVAL = -22
ERANGE = -34
ENODATA = -61
EOPNOTSUPP = -95

U32 = 0xFFFFFFFF


def run(*lines: str, driver: DriverModel | None = None) -> list[int | None]:
    d = driver if driver is not None else DriverModel(API61)
    return [d.run(line) for line in lines]


def pool(*lines: str, api: KernelApi = API61) -> DriverModel:
    """A driver model with pool zt0 after `lines`, every one of which must succeed."""
    d = DriverModel(api)
    assert run("create zt0", *lines, driver=d) == [0] * (len(lines) + 1)
    return d


# ------------------------------------------------------------------------ no pool yet


@pytest.mark.parametrize(
    "line",
    [
        "alloc 1 100",
        "write 1 7",
        "verify 1 7",
        "free 1",
        "reset",
        "stats",
        "pwrite 1 7 0 1 rw",
        "pverify 1 7 0 1 ro",
        "churn 1 10 0 8",
        "compact",
        "lookup 100",
    ],
)
def test_pool_commands_before_create(line: str) -> None:
    assert run(line) == [ENOENT]


def test_version_needs_no_pool() -> None:
    d = DriverModel(API61)
    assert run("version", driver=d) == [0]
    assert d.values == [("version", str(PROTOCOL_VERSION))]


def test_argument_count_is_checked_before_the_pool() -> None:
    # zt_run_line checks argc before needs_pool.
    assert run("alloc 1", "stats now", "free", "compact 1", "pwrite 1 2 3 4") == [EINVAL] * 5


def test_bad_number_before_create_is_enoent() -> None:
    # needs_pool is checked before the handler parses its arguments.
    assert run("alloc x 100", "pwrite x 1 0 1 bad", "churn x 1 0 0") == [ENOENT] * 3


# ------------------------------------------------------------------------ objects


def test_alloc_write_verify_free_cycle() -> None:
    d = DriverModel(API61)
    assert run("create zt0", "alloc 1 100", "write 1 7", "verify 1 7", driver=d) == [0, 0, 0, 0]
    # 100 bytes + the 8-byte handle go to class 5 (112 bytes), whose zspage is 2 pages in
    # the real 6.1 `classes` table.
    assert d.model("zt0").total_pages() == 2
    assert run("free 1", driver=d) == [0]
    assert d.model("zt0").total_pages() == 0


@pytest.mark.parametrize(("size", "expected"), [(0, EINVAL), (5000, EINVAL), (4097, EINVAL)])
def test_alloc_size_out_of_range(size: int, expected: int) -> None:
    d = DriverModel(API61)
    assert run("create zt0", f"alloc 1 {size}", driver=d) == [0, expected]
    assert d.model("zt0").total_pages() == 0
    # Nothing was remembered under the id.
    assert run("free 1", driver=d) == [ENOENT]


def test_alloc_size_bounds_are_accepted() -> None:
    d = DriverModel(API61)
    assert run("create zt0", "alloc 1 1", "alloc 2 4096", driver=d) == [0, 0, 0]
    # 4096 is the huge class: one page of its own; 1 byte goes to class 32 (one page).
    assert d.model("zt0").total_pages() == 2


def test_free_never_allocated() -> None:
    assert run("create zt0", "free 99") == [0, ENOENT]


def test_double_free() -> None:
    assert run("create zt0", "alloc 1 64", "free 1", "free 1") == [0, 0, 0, ENOENT]


def test_verify_and_write_of_a_freed_id() -> None:
    lines = ("create zt0", "alloc 1 64", "write 1 5", "free 1", "verify 1 5", "write 1 5")
    assert run(*lines) == [0, 0, 0, 0, ENOENT, ENOENT]


def test_write_never_allocated() -> None:
    assert run("create zt0", "write 3 1") == [0, ENOENT]


def test_verify_before_write() -> None:
    assert run("create zt0", "alloc 1 64", "verify 1 0") == [0, 0, ENODATA]


def test_verify_with_the_wrong_seed() -> None:
    assert run("create zt0", "alloc 1 64", "write 1 7", "verify 1 8") == [0, 0, 0, EIO]


def test_rewrite_changes_the_expected_seed() -> None:
    lines = ("create zt0", "alloc 1 64", "write 1 7", "write 1 9", "verify 1 7", "verify 1 9")
    assert run(*lines) == [0, 0, 0, 0, EIO, 0]


def test_id_reused_while_live() -> None:
    d = DriverModel(API61)
    assert run("create zt0", "alloc 1 64", "alloc 1 64", driver=d) == [0, 0, EEXIST]
    pages = d.model("zt0").total_pages()
    # After a free the id may be used again.
    assert run("free 1", "alloc 1 64", driver=d) == [0, 0]
    assert d.model("zt0").total_pages() == pages


def test_eexist_is_checked_after_the_size() -> None:
    assert run("create zt0", "alloc 1 64", "alloc 1 0") == [0, 0, EINVAL]


def test_reset_frees_everything() -> None:
    d = DriverModel(API61)
    assert run("create zt0", "alloc 1 64", "alloc 2 3000", "alloc 3 4096", driver=d) == [0] * 4
    assert d.model("zt0").total_pages() > 0
    assert run("reset", "verify 1 0", "free 2", driver=d) == [0, ENOENT, ENOENT]
    assert d.model("zt0").total_pages() == 0


# ------------------------------------------------------------------------ numbers (kstrtou32)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("alloc x 100", EINVAL),
        ("alloc 1 abc", EINVAL),
        ("alloc 1 1e3", EINVAL),
        ("alloc 1 0x10", EINVAL),  # base 10: the x is trailing garbage
        ("alloc 1 12abc", EINVAL),
        ("alloc 1 -5", EINVAL),  # kstrtou32 does not take a sign other than +
        ("alloc -1 5", EINVAL),
        ("alloc 1 +", EINVAL),
        ("alloc 1 ++5", EINVAL),
        ("alloc 1 ５", EINVAL),  # a full-width digit is not an ASCII digit
        ("alloc 4294967296 5", ERANGE),
        ("alloc 1 4294967296", ERANGE),
        ("alloc 1 99999999999999999999999", ERANGE),  # overflows u64 too
        ("alloc 1 4294967296x", EINVAL),  # fits u64: trailing garbage wins
        ("write 1 4294967296", ERANGE),
        ("verify 1 -7", EINVAL),
        ("free 4294967296", ERANGE),
        ("free one", EINVAL),
        ("lookup x", EINVAL),  # parsed before the kernel support check
        ("lookup 4294967296", ERANGE),
        # The ID is parsed before SIZE, so its error is the one reported.
        ("alloc x 99999999999", EINVAL),
        ("alloc 99999999999 x", ERANGE),
    ],
)
def test_number_errors(line: str, expected: int) -> None:
    assert run("create zt0", line) == [0, expected]


def test_numbers_at_the_edges_are_accepted() -> None:
    lines = (
        "create zt0",
        "alloc 4294967295 +100",
        "write 4294967295 4294967295",
        "verify 4294967295 4294967295",
        "alloc 0 0100",
        "write 0 0",
        "verify +0 00",
        "pverify 0 0 +0 0100 ro",
    )
    assert run(*lines) == [0] * len(lines)


# ------------------------------------------------------------------------ line parsing


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("bogus", EINVAL),
        ("ALLOC 1 2", EINVAL),  # verbs are case-sensitive (strcmp)
        ("alloc 1", EINVAL),
        ("alloc 1 2 3", EINVAL),
        ("alloc 1 2 3 4", EINVAL),  # five tokens: within ZT_MAX_ARGS, wrong count
        ("alloc 1 2 3 4 5", EINVAL),  # six tokens: still only a wrong count
        ("stats 1", EINVAL),
        ("version 1", EINVAL),
        ("create", EINVAL),
        ("free", EINVAL),
        ("compact now", EINVAL),
        ("lookup", EINVAL),
        ("lookup 1 2", EINVAL),
        ("churn 1 2 3", EINVAL),
        ("churn 1 2 3 4 5", EINVAL),
        ("pwrite 1 2 3 4", EINVAL),
        ("pverify 1 2 3", EINVAL),
        ("bogus 1 2 3 4 5", EINVAL),  # six tokens: tokenising succeeds, the verb is unknown
        ("alloc 1 2 3 4 5 6", E2BIG),  # seven tokens
        ("pwrite 1 2 3 4 rw x", E2BIG),
        ("bogus 1 2 3 4 5 6", E2BIG),  # tokenising fails before the verb lookup
        ("a b c d e f g", E2BIG),
        ("a b c d e f g h i j", E2BIG),
    ],
)
def test_verb_and_argument_count(line: str, expected: int) -> None:
    assert run("create zt0", line) == [0, expected]


@pytest.mark.parametrize("line", ["", "   ", "\t", " \t \t "])
def test_blank_lines_are_ignored(line: str) -> None:
    assert run(line) == [0]


def test_tabs_and_repeated_separators() -> None:
    lines = (
        "create\tzt0",
        "alloc\t1\t100",
        "\t write  1 \t 7 ",
        "verify\t\t1  7",
        "pverify\t1 7  0\t100 \tro",
        "free 1\t",
    )
    assert run(*lines) == [0] * len(lines)


def test_long_lines() -> None:
    d = DriverModel(API61)
    assert run("create zt0", driver=d) == [0]
    line_64k = "alloc 1 " + "1" * (64 * 1024)
    line_128 = " " * (128 - len("version")) + "version"
    line_127 = " " * (127 - len("version")) + "version"
    assert len(line_128) == 128
    assert len(line_127) == 127
    assert run(line_64k, line_128, line_127, driver=d) == [E2BIG, E2BIG, 0]
    # A 127-byte line is parsed: with a pool command it acts on the pool.
    alloc_127 = " " * (127 - len("alloc 5 64")) + "alloc 5 64"
    assert run(alloc_127, "alloc 5 64", driver=d) == [0, EEXIST]
    # A too-long line is refused before it is split: its seven tokens do not matter.
    assert run("a b c d e f g" + " " * 128, driver=d) == [E2BIG]


def test_line_length_counts_bytes() -> None:
    # 64 two-byte characters: 64 characters, 128 bytes.
    assert run("é" * 64) == [E2BIG]
    assert run("é" * 63) == [EINVAL]  # 126 bytes: parsed, unknown verb


def test_a_failed_line_changes_nothing() -> None:
    d = DriverModel(API61)
    lines = ("create zt0", "alloc 1 64 extra", "alloc 1 64 a b c d", "churn 1 100 1 0")
    assert run(*lines, driver=d) == [0, EINVAL, E2BIG, EINVAL]
    assert d.model("zt0").total_pages() == 0
    assert d.values == []
    assert run("free 1", driver=d) == [ENOENT]


# ------------------------------------------------------------------------ pools


@pytest.mark.parametrize(
    "name",
    [
        "a" * 32,
        "zt.0",
        "zt/0",
        "zt0!",
        "é",
        "zt:0",
    ],
)
def test_bad_pool_names(name: str) -> None:
    for verb in ("create", "use", "destroy"):
        assert run(f"{verb} {name}") == [EINVAL]


@pytest.mark.parametrize("name", ["a" * 31, "A", "a-b_C9", "-", "_", "0"])
def test_good_pool_names(name: str) -> None:
    assert run(f"create {name}", f"use {name}", f"destroy {name}") == [0, 0, 0]


def test_create_existing_name() -> None:
    assert run("create zt0", "create zt0") == [0, EEXIST]


def test_use_and_destroy_unknown_pool() -> None:
    assert run("use nope", "destroy nope", "create zt0", "use nope") == [
        ENOENT,
        ENOENT,
        0,
        ENOENT,
    ]


def test_destroy_current_pool_then_alloc() -> None:
    assert run("create zt0", "alloc 1 64", "destroy zt0", "alloc 2 64", "stats") == [
        0,
        0,
        0,
        ENOENT,
        ENOENT,
    ]


def test_destroy_other_pool_keeps_current() -> None:
    assert run("create a", "create b", "destroy a", "alloc 1 64", "use a") == [
        0,
        0,
        0,
        0,
        ENOENT,
    ]


def test_pools_have_separate_ids_and_pages() -> None:
    d = DriverModel(API61)
    lines = ("create a", "alloc 1 64", "write 1 5", "create b", "verify 1 5", "alloc 1 64")
    assert run(*lines, driver=d) == [0, 0, 0, 0, ENOENT, 0]
    assert run("use a", "verify 1 5", driver=d) == [0, 0]
    assert d.model("a").total_pages() == 1
    assert d.model("b").total_pages() == 1


def test_recreated_pool_starts_empty() -> None:
    d = DriverModel(API61)
    assert run("create zt0", "alloc 1 64", "destroy zt0", "create zt0", driver=d) == [0] * 4
    assert d.model("zt0").total_pages() == 0
    assert run("free 1", "alloc 1 64", driver=d) == [ENOENT, 0]


# ------------------------------------------------------------ seeds that share a pattern

_A, _B, _C = 0x9E3779B1, 0x85EBCA6B, 0xC2B2AE35


def _colliding_seeds(oid: int, length: int) -> tuple[int, int]:
    """Two seeds whose patterns are identical: one gives a zero xorshift seed, replaced by
    0x6d2b79f5, the other gives 0x6d2b79f5 itself."""
    inv_b = pow(_B, -1, 1 << 32)
    base = ((oid * _A) ^ (length * _C)) & U32
    return (base * inv_b) & U32, ((base ^ 0x6D2B79F5) * inv_b) & U32


def test_colliding_seeds_give_the_same_driverpattern() -> None:
    a, b = _colliding_seeds(1, 4096)
    assert a != b
    assert pattern(1, a, 4096) == pattern(1, b, 4096)
    assert pattern(1, a, 4096) != pattern(1, a + 1, 4096)


def test_verify_with_a_seed_of_the_same_pattern_passes() -> None:
    a, b = _colliding_seeds(1, 4096)
    assert run("create zt0", "alloc 1 4096", f"write 1 {a}", f"verify 1 {b}") == [0, 0, 0, 0]
    # Also for a range written with one seed and checked with the other.
    d = pool("alloc 1 4096", "write 1 5", f"pwrite 1 {a} 100 200 rw")
    assert run(f"pverify 1 {b} 100 200 ro", f"verify 1 {b}", driver=d) == [0, EIO]


def test_u64_overflow_with_trailing_garbage_is_erange() -> None:
    assert run("create zt0", "alloc 1 99999999999999999999999x") == [0, ERANGE]


# ------------------------------------------------------------------------ pwrite / pverify
# zt_range_cmd checks, in this order: the numbers ID SEED OFF LEN, the mode, whether the
# kernel has mapping modes, the id, the range; only then does pverify check `written`.


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # numbers, in argument order, before anything else
        ("pwrite x 1 0 1 rw", EINVAL),
        ("pwrite 1 4294967296 0 1 rw", ERANGE),
        ("pwrite 1 1 -1 1 rw", EINVAL),
        ("pwrite 1 1 0 99999999999 rw", ERANGE),
        ("pwrite 1 x 0 4294967296 rw", EINVAL),  # SEED before LEN
        ("pwrite 1 1 0 4294967296 ro", ERANGE),  # a bad number beats a bad mode
        ("pwrite 99 1 0 4294967296 rw", ERANGE),  # ... and an unknown id
        ("pverify 1 1 0x1 1 ro", EINVAL),
        ("pverify 1 1 0 4294967296 wo", ERANGE),
        # the mode: pwrite takes rw|wo, pverify ro|rw; matched exactly (strcmp)
        ("pwrite 1 1 0 1 ro", EINVAL),
        ("pwrite 1 1 0 1 RW", EINVAL),
        ("pwrite 1 1 0 1 r", EINVAL),
        ("pwrite 1 1 0 1 rwx", EINVAL),
        ("pverify 1 1 0 1 wo", EINVAL),
        ("pverify 1 1 0 1 xx", EINVAL),
        ("pwrite 99 1 0 1 ro", EINVAL),  # the mode beats an unknown id
        # the id
        ("pwrite 99 1 0 1 rw", ENOENT),
        ("pwrite 99 1 0 0 wo", ENOENT),  # the id beats an empty range
        ("pverify 99 1 500 500 ro", ENOENT),  # ... and a range past the end
        # the range of a 100-byte object: non-empty and inside
        ("pwrite 1 1 0 0 rw", EINVAL),
        ("pwrite 1 1 100 1 rw", EINVAL),
        ("pwrite 1 1 99 2 wo", EINVAL),
        ("pwrite 1 1 0 101 rw", EINVAL),
        ("pwrite 1 1 4294967295 2 rw", EINVAL),  # OFF + LEN is a u64 sum: no wrap to 1
        ("pwrite 1 1 4294967295 4294967295 rw", EINVAL),
        ("pverify 1 1 0 0 ro", EINVAL),
        ("pverify 1 1 50 51 rw", EINVAL),
        ("pverify 1 1 4294967200 100 ro", EINVAL),
        # inside: accepted
        ("pwrite 1 1 99 1 rw", 0),
        ("pwrite 1 1 0 100 wo", 0),
        ("pverify 1 7 0 100 ro", 0),
        ("pverify 1 7 99 1 rw", 0),
    ],
)
def test_range_argument_checks(line: str, expected: int) -> None:
    d = pool("alloc 1 100", "write 1 7")
    assert run(line, driver=d) == [expected]


def test_range_checks_come_before_the_written_check() -> None:
    d = pool("alloc 1 100")
    assert run("pverify 1 1 0 0 ro", "pverify 1 1 0 101 ro", driver=d) == [EINVAL, EINVAL]
    assert run("pverify 1 1 0 1 ro", "pverify 1 1 0 100 rw", driver=d) == [ENODATA, ENODATA]


def test_failed_range_commands_change_nothing() -> None:
    d = pool("alloc 1 100", "write 1 7")
    bad = ("pwrite 1 9 0 0 rw", "pwrite 1 9 0 101 wo", "pwrite 1 9 0 100 ro", "pwrite 2 9 0 1 rw")
    assert run(*bad, driver=d) == [EINVAL, EINVAL, EINVAL, ENOENT]
    assert run("verify 1 7", driver=d) == [0]


@pytest.mark.parametrize("api", [NOMAP, api_for("7.2")], ids=["6.1-nomap", "7.2"])
def test_kernels_without_mapping_modes(api: KernelApi) -> None:
    d = pool("alloc 1 100", "write 1 7", api=api)
    lines = (
        "pwrite 1 9 0 10 rw",
        "pwrite 1 9 0 10 wo",
        "pverify 1 7 0 10 rw",
        "pverify 1 7 0 10 ro",  # reads need no mode: supported
        "pverify 1 8 0 10 ro",
        "verify 1 7",  # nothing was written by the refused pwrites
    )
    assert run(*lines, driver=d) == [EOPNOTSUPP, EOPNOTSUPP, EOPNOTSUPP, 0, EIO, 0]
    # Order: numbers, then mode, then support, then the id, then the range.
    ordered = (
        "pwrite 1 4294967296 0 1 wo",  # numbers first
        "pwrite 1 9 0 1 ro",  # a bad mode is EINVAL, not EOPNOTSUPP
        "pverify 1 9 0 1 wo",
        "pwrite 99 9 0 1 rw",  # support before the id
        "pwrite 1 9 0 0 rw",  # ... and before the range
        "pverify 99 9 0 1 ro",  # ro goes on to the id
        "pverify 1 9 0 0 ro",  # ... and the range
    )
    assert run(*ordered, driver=d) == [
        ERANGE,
        EINVAL,
        EINVAL,
        EOPNOTSUPP,
        EOPNOTSUPP,
        ENOENT,
        EINVAL,
    ]


# ------------------------------------------------------------------------ segments


def test_rw_pwrite_replaces_only_its_range() -> None:
    d = pool("alloc 1 300", "write 1 7", "pwrite 1 9 10 50 rw")
    assert run(
        "verify 1 7",  # bytes 10..59 now hold seed 9's pattern
        "verify 1 9",
        "pverify 1 9 10 50 ro",
        "pverify 1 9 10 51 ro",  # one byte past the range is seed 7's
        "pverify 1 7 10 50 ro",
        "pverify 1 7 0 10 ro",  # outside the range: untouched
        "pverify 1 7 60 240 rw",
        "pverify 1 9 20 10 ro",  # inside the range
        driver=d,
    ) == [EIO, EIO, 0, EIO, EIO, 0, 0, 0]


def test_pwrite_with_the_same_seed_keeps_the_object_whole() -> None:
    d = pool("alloc 1 300", "write 1 7", "pwrite 1 7 13 101 rw", "pwrite 1 7 0 300 wo")
    assert run("verify 1 7", driver=d) == [0]


def test_pwrite_over_the_whole_object_with_a_new_seed() -> None:
    d = pool("alloc 1 300", "write 1 7", "pwrite 1 9 0 300 rw")
    assert run("verify 1 9", "verify 1 7", driver=d) == [0, EIO]


def test_overlapping_pwrites_keep_the_last_bytes() -> None:
    d = pool("alloc 1 300", "write 1 1", "pwrite 1 2 0 200 rw", "pwrite 1 3 100 150 rw")
    assert run(
        "pverify 1 2 0 100 ro",
        "pverify 1 3 100 150 ro",
        "pverify 1 1 250 50 ro",
        "pverify 1 2 0 101 ro",
        "pverify 1 3 99 151 ro",
        driver=d,
    ) == [0, 0, 0, EIO, EIO]


def test_pwrite_of_a_never_written_object() -> None:
    # The rest of the slot holds whatever was there: only the written range is known.
    d = pool("alloc 1 100", "pwrite 1 9 10 20 rw")
    assert run("pverify 1 9 10 20 ro", "verify 1 9", "pverify 1 9 0 11 ro", driver=d) == [
        0,
        UNKNOWN,
        UNKNOWN,
    ]


def test_a_whole_write_after_a_pwrite_restores_the_object() -> None:
    d = pool("alloc 1 300", "write 1 7", "pwrite 1 9 10 50 rw", "write 1 11")
    assert run("verify 1 11", "pverify 1 11 10 50 ro", "verify 1 7", driver=d) == [0, 0, EIO]


def spanning_pool(count: int = 37, size: int = 100) -> tuple[DriverModel, list[int], list[int]]:
    """`count` objects of `size` bytes written with seed 5: (driver, spanning, non-spanning).

    Class 5 (112 bytes, 2 pages per zspage on 6.1) puts slot 36 at offset 4032, across the
    page boundary; the model's spans() must say so.
    """
    lines = [f"alloc {i} {size}" for i in range(1, count + 1)]
    d = pool(*lines, *[f"write {i} 5" for i in range(1, count + 1)])
    m = d.model("zt0")
    live = d.live("zt0")
    spanning = [i for i, obj in live.items() if m.spans(obj.handle)]
    whole = [i for i, obj in live.items() if not m.spans(obj.handle)]
    return d, spanning, whole


def test_spanning_objects_are_found_through_the_model() -> None:
    d, spanning, whole = spanning_pool()
    assert spanning == [37]  # slot 36: 36 * 112 = 4032, and 4032 + 112 > 4096
    assert len(whole) == 36
    offset, size = d.model("zt0").slot(d.live("zt0")[37].handle)
    assert (offset, size) == (4032, 112)


def test_wo_pwrite_on_a_spanning_object_leaves_the_rest_undefined() -> None:
    d, (span, *_), _ = spanning_pool()
    assert run(f"pwrite {span} 9 10 20 wo", driver=d) == [0]
    assert run(
        f"verify {span} 5",
        f"verify {span} 9",
        f"pverify {span} 9 10 20 ro",  # the written range is known
        f"pverify {span} 9 12 5 rw",
        f"pverify {span} 5 0 10 ro",  # everything else came from the per-CPU buffer
        f"pverify {span} 5 30 70 ro",
        f"pverify {span} 5 0 11 ro",
        f"pverify {span} 9 10 21 ro",  # 20 known bytes and one undefined
        driver=d,
    ) == [UNKNOWN, UNKNOWN, 0, 0, UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN]


def test_wo_pwrite_on_a_spanning_object_then_known_bytes_again() -> None:
    d, (span, *_), _ = spanning_pool()
    lines = (f"pwrite {span} 9 10 20 wo", f"pwrite {span} 3 0 50 rw", f"pwrite {span} 4 50 50 rw")
    assert run(*lines, driver=d) == [0, 0, 0]
    # Every byte was written again through rw mappings: all known.
    assert run(
        f"pverify {span} 3 0 50 ro", f"pverify {span} 4 50 50 ro", f"verify {span} 5", driver=d
    ) == [0, 0, EIO]


def test_wo_pwrite_of_the_whole_spanning_object_is_exact() -> None:
    d, (span, *_), _ = spanning_pool()
    assert run(f"pwrite {span} 9 0 100 wo", f"verify {span} 9", driver=d) == [0, 0]


def test_wo_pwrite_on_a_non_spanning_object_is_exact() -> None:
    d, _, whole = spanning_pool()
    oid = whole[0]
    assert run(f"pwrite {oid} 9 10 20 wo", driver=d) == [0]
    assert run(
        f"verify {oid} 5",
        f"pverify {oid} 9 10 20 ro",
        f"pverify {oid} 5 0 10 ro",
        f"pverify {oid} 5 30 70 rw",
        f"pverify {oid} 5 0 11 ro",
        driver=d,
    ) == [EIO, 0, 0, 0, EIO]


def test_rw_pwrite_on_a_spanning_object_is_exact() -> None:
    d, (span, *_), _ = spanning_pool()
    assert run(f"pwrite {span} 9 10 20 rw", driver=d) == [0]
    assert run(f"verify {span} 5", f"pverify {span} 5 30 70 ro", driver=d) == [EIO, 0]


def test_huge_objects_never_span() -> None:
    # 4096 bytes: class 254, one object per page, mapped directly.
    d = pool("alloc 1 4096", "write 1 5", "pwrite 1 9 10 20 wo")
    assert not d.model("zt0").spans(d.live("zt0")[1].handle)
    assert run("verify 1 5", "pverify 1 5 30 4066 ro", driver=d) == [EIO, 0]


def test_wo_hazard_depends_on_the_mapping_not_the_command() -> None:
    # A wo pwrite on the spanning object leaves its neighbours alone.
    d, (span, *_), whole = spanning_pool()
    assert run(f"pwrite {span} 9 10 20 wo", driver=d) == [0]
    assert run(*[f"verify {oid} 5" for oid in whole], driver=d) == [0] * len(whole)


# ------------------------------------------------------------------------ churn

MAX_CHURN = 1 << 20


def churn_steps(
    live: dict[int, tuple[bool, int]], seed: int, n: int, base: int, span: int
) -> list[str]:
    """zt_cmd_churn spelled out as single commands, from the comment above it in the driver.

    `live` maps each live id to (holds a whole-object pattern, its seed) and is updated.
    """
    state = pattern_seed(base, seed, n)
    lines: list[str] = []
    for _ in range(n):
        state = xorshift32(state)
        oid = (base + state % span) & U32
        if oid in live:
            whole, data_seed = live.pop(oid)
            if state >> 28 == 0 and whole:
                lines.append(f"verify {oid} {data_seed}")
            lines.append(f"free {oid}")
        else:
            state = xorshift32(state)
            size = 1 + (state % 512 if state >> 31 else state % 4096)
            state = xorshift32(state)
            lines += [f"alloc {oid} {size}", f"write {oid} {state}"]
            live[oid] = (True, state)
    return lines


def snapshot(d: DriverModel) -> tuple[object, ...]:
    m = d.model("zt0")
    objects = {oid: (obj.size, obj.segments, obj.whole) for oid, obj in d.live("zt0").items()}
    return m.total_pages(), m.class_stats(), objects


def test_churn_is_deterministic() -> None:
    lines = ("churn 12345 3000 1000 300", "churn 777 2000 1000 300", "stats")
    a, b = DriverModel(API61), DriverModel(API61)
    assert run("create zt0", *lines, driver=a) == [0, 0, 0, 0]
    assert run("create zt0", *lines, driver=b) == [0, 0, 0, 0]
    assert a.values == b.values
    assert snapshot(a) == snapshot(b)
    assert int(a.values[0][1]) > 0


def test_the_same_churn_line_twice_is_not_a_no_op() -> None:
    d = pool("churn 5 500 0 64")
    first = snapshot(d)
    assert run("churn 5 500 0 64", driver=d) == [0]
    assert snapshot(d) != first


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("churn 1 10 0 0", EINVAL),  # SPAN 0
        (f"churn 1 {MAX_CHURN + 1} 0 64", EINVAL),
        ("churn 1 4294967295 0 64", EINVAL),
        (f"churn 1 {MAX_CHURN + 1} 0 0", EINVAL),
        ("churn x 10 0 0", EINVAL),  # the numbers come first
        ("churn 1 4294967296 0 0", ERANGE),
        ("churn 1 10 -1 64", EINVAL),
        ("churn 1 10 0 4294967296", ERANGE),
        ("churn 1 0 0 64", 0),  # zero steps
        ("churn 1 0 0 1", 0),
    ],
)
def test_churn_argument_checks(line: str, expected: int) -> None:
    d = pool()
    assert run(line, "stats", driver=d) == [expected, 0]
    assert d.values[0] == ("pages", "0")  # a refused churn did nothing
    assert d.live("zt0") == {}


@pytest.mark.parametrize(
    ("seed", "n", "base", "span"),
    [
        (12345, 3000, 1000, 300),
        (1, 2000, 0, 64),
        (99, 1500, 4294967290, 64),  # ids wrap around the u32 range
        (7, 400, 50, 1),  # one id: alternately allocated and freed
    ],
)
def test_churn_equals_its_single_steps(seed: int, n: int, base: int, span: int) -> None:
    # Some ids of the churn range are live before it: whole, partly written, never written.
    setup = [
        f"alloc {(base + 1) & U32} 200",
        f"write {(base + 1) & U32} 3",
        f"alloc {(base + 2) & U32} 3000",
        f"alloc {(base + 3) & U32} 100",
        f"write {(base + 3) & U32} 4",
        f"pwrite {(base + 3) & U32} 8 0 10 rw",
    ]
    live = {(base + 1) & U32: (True, 3), (base + 2) & U32: (False, 0), (base + 3) & U32: (False, 4)}
    for oid in list(live):
        if (oid - base) & U32 >= span:
            del live[oid]
    setup = [line for line in setup if int(line.split()[1]) in live]
    steps = churn_steps(live, seed, n, base, span)
    churned = pool(*setup, f"churn {seed} {n} {base} {span}", "stats")
    expanded = pool(*setup, *steps, "stats")
    assert churned.values == expanded.values
    assert snapshot(churned) == snapshot(expanded)
    assert sorted(churned.live("zt0")) == sorted(live)
    pages = int(churned.values[0][1])
    assert pages == churned.model("zt0").total_pages()
    assert pages > 0 or not live
    # Every object churn left holds the pattern of the last seed it drew for it.
    verifies = [f"verify {oid} {s}" for oid, (whole, s) in live.items() if whole]
    assert run(*verifies, driver=churned) == [0] * len(verifies)


def test_churn_steps_exercise_every_branch() -> None:
    live: dict[int, tuple[bool, int]] = {}
    steps = churn_steps(live, 12345, 3000, 1000, 300)
    verbs = {line.split()[0] for line in steps}
    assert verbs == {"alloc", "write", "verify", "free"}


def _seed_with_a_verify(base: int) -> int:
    """A churn SEED whose first step draws r with r >> 28 == 0 (for N 1)."""
    return next(s for s in range(100000) if xorshift32(pattern_seed(base, s, 1)) >> 28 == 0)


def test_churn_verifies_only_whole_objects() -> None:
    d, (span, *_), _ = spanning_pool()
    seed = _seed_with_a_verify(span)
    # Undefined bytes, but not whole: churn frees it without a verify, so the result is known.
    assert run(f"pwrite {span} 9 10 20 wo", f"churn {seed} 1 {span} 1", driver=d) == [0, 0]
    assert span not in d.live("zt0")
    # A never-written object is not verified either (it would be -ENODATA).
    assert run(f"alloc {span} 100", f"churn {seed} 1 {span} 1", driver=d) == [0, 0]
    assert span not in d.live("zt0")


def test_churn_changes_total_pages() -> None:
    d = pool("stats", "churn 3 1000 0 4096", "stats", "churn 4 20000 0 512", "stats")
    pages = [int(v) for k, v in d.values if k == "pages"]
    assert pages[0] == 0
    assert pages[1] > 0
    assert pages[2] > 0
    assert pages[2] == d.model("zt0").total_pages()
    assert run("reset", "stats", driver=d) == [0, 0]
    assert d.values[-3] == ("pages", "0")


# ------------------------------------------------------------------------ compact


def fragmented() -> DriverModel:
    """Class 5 on 6.1 (112 bytes, 2 pages, 73 objects): two zspages with one object each."""
    lines = [f"alloc {i} 100" for i in range(1, 147)] + ["write 1 1", "write 74 74"]
    lines += [f"free {i}" for i in range(2, 147) if i != 74]
    return pool(*lines)


def test_compact_values() -> None:
    d = fragmented()
    assert d.model("zt0").total_pages() == 4
    assert run("compact", "verify 1 1", "verify 74 74", "compact", "stats", driver=d) == [0] * 5
    # One ALMOST_EMPTY zspage drains into the other and is freed: its 2 pages. Then
    # zs_can_compact finds (73 - 2) // 73 == 0 zspages to gain and compaction stops.
    assert d.values == [
        ("compacted", "2"),
        ("compacted", "0"),
        ("pages", "2"),
        ("huge_class_size", "3257"),
        ("pages_compacted", "2"),
    ]


def test_compact_of_an_empty_pool() -> None:
    d = pool("compact", "stats")
    assert d.values == [
        ("compacted", "0"),
        ("pages", "0"),
        ("huge_class_size", "3257"),
        ("pages_compacted", "0"),
    ]


def test_pages_compacted_is_per_pool() -> None:
    d = fragmented()
    assert run("compact", "create other", "stats", "use zt0", "stats", driver=d) == [0] * 5
    assert [v for k, v in d.values if k == "pages_compacted"] == ["0", "2"]


# ------------------------------------------------------------------------ stats, lookup


def test_stats_values() -> None:
    d = pool("stats", "alloc 1 100", "stats", "alloc 2 4096", "stats", "free 1", "stats")
    assert d.values == [
        ("pages", "0"),
        ("huge_class_size", "3257"),
        ("pages_compacted", "0"),
        ("pages", "2"),  # class 5: 2 pages per zspage
        ("huge_class_size", "3257"),
        ("pages_compacted", "0"),
        ("pages", "3"),  # plus one huge page
        ("huge_class_size", "3257"),
        ("pages_compacted", "0"),
        ("pages", "1"),
        ("huge_class_size", "3257"),
        ("pages_compacted", "0"),
    ]


@pytest.mark.parametrize(("series", "huge"), [("6.1", "3257"), ("6.12", "3625"), ("7.2", "3625")])
def test_huge_class_size_by_kernel(series: str, huge: str) -> None:
    d = pool("stats", api=api_for(series))
    assert d.values[1] == ("huge_class_size", huge)


def test_lookup_is_not_supported_on_6_1() -> None:
    d = pool()
    assert run("lookup 100", "lookup 0", "lookup x", driver=d) == [EOPNOTSUPP, EOPNOTSUPP, EINVAL]
    assert d.values == []


@pytest.mark.parametrize(("size", "index"), [(1, 0), (100, 5), (4088, 254), (4096, 254)])
def test_lookup_where_the_kernel_has_it(size: int, index: int) -> None:
    d = pool(f"lookup {size}", api=API612)
    assert d.values == [("class_index", str(index))]


@pytest.mark.parametrize("size", [4097, 2147483640, 2147483648, 4294967295])
def test_lookup_refuses_what_is_no_object_size(size: int) -> None:
    # 6.12's get_size_class_index() compares its int with an unsigned long: the sizes
    # whose sum with the header wraps negative index before the table. Never asked.
    assert run("create zt0", f"lookup {size}", driver=DriverModel(API612)) == [0, EINVAL]


def kernel_class_index(series: str, size: int) -> int:
    """zs_lookup_class_index: lookup_size_class(size), i.e. the class of size + 8
    (ZS_HANDLE_SIZE)."""
    idx = min(254, 0 if size + 8 <= 32 else -(-(size + 8 - 32) // 16))
    return min(c.index for c in class_table(policy(series)) if c.index >= idx)


@pytest.mark.parametrize("size", [0, 32, 41, 48, 3257, 3625, 4089])
def test_lookup_matches_zs_lookup_class_index(size: int) -> None:
    d = pool(f"lookup {size}", api=API612)
    assert d.values == [("class_index", str(kernel_class_index("6.12", size)))]


# ------------------------------------------------------------------------ check_commands

BATCH = ["create zt0", "alloc 1 100", "write 1 7", "verify 1 7", "alloc 2 0", "stats"]
SIZE_ERROR = CommandFailure(5, "alloc", EINVAL, "SIZE must be 1..PAGE_SIZE")
STATS = (("pages", "2"), ("huge_class_size", "3257"), ("pages_compacted", "0"))


def result(*failures: CommandFailure, values: tuple[tuple[str, str], ...] = STATS) -> BatchResult:
    return BatchResult(commands=len(BATCH), failures=failures, values=values)


def test_check_commands_agreeing_batch() -> None:
    assert check_commands(0, BATCH, result(SIZE_ERROR), DriverModel(API61)) == []


def test_check_commands_missing_error() -> None:
    found = check_commands(3, BATCH, result(), DriverModel(API61))
    assert len(found) == 1
    d = found[0]
    assert d.kind == "command-result"
    assert d.batch == 3
    assert "line 5 `alloc 2 0`" in d.detail
    assert "expected -EINVAL, got ok" in d.detail
    assert str(d).startswith("batch 3: command-result: ")


def test_check_commands_unexpected_error() -> None:
    nomem = CommandFailure(2, "alloc", ENOMEM, "zs_malloc failed")
    found = check_commands(0, BATCH, result(nomem, SIZE_ERROR), DriverModel(API61))
    assert len(found) == 1
    assert found[0].kind == "command-result"
    assert "line 2 `alloc 1 100`" in found[0].detail
    assert "expected ok, got -ENOMEM (zs_malloc failed)" in found[0].detail


def test_check_commands_wrong_errno() -> None:
    wrong = CommandFailure(5, "alloc", ERANGE, "SIZE is not a number in 0..4294967295")
    found = check_commands(0, BATCH, result(wrong), DriverModel(API61))
    assert [d.kind for d in found] == ["command-result"]
    assert "expected -EINVAL, got -ERANGE" in found[0].detail


def test_check_commands_verify_eio_is_data() -> None:
    bad = CommandFailure(4, "verify", EIO, "mismatch at offset 17 of 100")
    found = check_commands(1, BATCH, result(bad, SIZE_ERROR), DriverModel(API61))
    assert len(found) == 1
    assert found[0].kind == "data"
    assert "line 4 `verify 1 7`" in found[0].detail
    assert "mismatch at offset 17 of 100" in found[0].detail


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("pverify 1 7 0 10 ro", "data"),
        ("churn 1 100 1000 64", "data"),
        ("pwrite 1 7 0 10 rw", "command-result"),  # a write cannot mismatch
        ("free 1", "command-result"),
    ],
)
def test_check_commands_eio_kind(line: str, kind: str) -> None:
    lines = ["create zt0", "alloc 1 100", "write 1 7", line]
    eio = CommandFailure(4, line.split()[0], EIO, "mismatch at offset 3 of 100")
    res = BatchResult(commands=4, failures=(eio,), values=())
    found = check_commands(0, lines, res, DriverModel(API61))
    assert [d.kind for d in found] == [kind]
    assert "expected ok, got -EIO" in found[0].detail


def test_check_commands_wrong_command_count_is_protocol() -> None:
    res = BatchResult(commands=len(BATCH) - 1, failures=(SIZE_ERROR,), values=STATS)
    found = check_commands(2, BATCH, res, DriverModel(API61))
    assert [d.kind for d in found] == ["protocol"]
    assert f"{len(BATCH) - 1} commands ran, sent {len(BATCH)}" in found[0].detail


def test_check_commands_advances_the_driver_model() -> None:
    d = DriverModel(API61)
    assert check_commands(0, BATCH, result(SIZE_ERROR), d) == []
    assert d.model("zt0").total_pages() == 2
    # Object 1 is live in the model now, so a second alloc of it must fail.
    again = BatchResult(commands=1, failures=(), values=())
    found = check_commands(1, ["alloc 1 100"], again, d)
    assert len(found) == 1
    assert "expected -EEXIST, got ok" in found[0].detail


def test_check_commands_compares_values_per_batch() -> None:
    d = DriverModel(API61)
    assert check_commands(0, BATCH, result(SIZE_ERROR), d) == []
    # The next batch's values are its own: the first batch's stats are not expected again.
    version = ("version", str(PROTOCOL_VERSION))
    res = BatchResult(commands=2, failures=(), values=(version, ("compacted", "0")))
    assert check_commands(1, ["version", "compact"], res, d) == []
    assert d.values == [version, ("compacted", "0")]
    # A batch without value lines expects none.
    assert check_commands(2, ["free 1"], BatchResult(1, (), ()), d) == []


@pytest.mark.parametrize(
    ("values", "kind", "texts"),
    [
        ((("pages", "3"), *STATS[1:]), "pages", ("3", "2")),
        ((STATS[0], ("huge_class_size", "3264"), STATS[2]), "huge_class_size", ("3264", "3257")),
        ((*STATS[:2], ("pages_compacted", "1")), "pages_compacted", ("1", "0")),
        # The first differing value ends the comparison: pages is reported, not huge.
        ((("pages", "9"), ("huge_class_size", "3264"), STATS[2]), "pages", ("9", "2")),
        # Another key where the model expects pages.
        ((("huge_class_size", "3257"), *STATS[1:]), "values", ("huge_class_size", "pages")),
        (STATS[:2], "values", ("2", "3")),  # a missing value line: counts differ
        ((*STATS, ("compacted", "0")), "values", ("4", "3")),  # an extra one
        ((), "values", ("0", "3")),
    ],
)
def test_check_commands_value_mismatch(
    values: tuple[tuple[str, str], ...], kind: str, texts: tuple[str, ...]
) -> None:
    found = check_commands(6, BATCH, result(SIZE_ERROR, values=values), DriverModel(API61))
    assert [(d.kind, d.batch) for d in found] == [(kind, 6)]
    for text in texts:
        assert text in found[0].detail


def test_check_commands_compacted_mismatch() -> None:
    lines = ["create zt0", "alloc 1 100", "compact"]
    res = BatchResult(commands=3, failures=(), values=(("compacted", "2"),))
    found = check_commands(0, lines, res, DriverModel(API61))
    assert [d.kind for d in found] == ["compacted"]
    assert "2" in found[0].detail and "0" in found[0].detail


NO_LOOKUP = (CommandFailure(2, "lookup", EOPNOTSUPP, "this kernel has no zs_lookup_class_index"),)


@pytest.mark.parametrize(
    ("lines", "api", "failures", "values", "kind"),
    [
        (["version"], API61, (), (("version", "99"),), "version"),
        (["create zt0", "lookup 100"], API612, (), (("class_index", "6"),), "class_index"),
        (["create zt0", "lookup 100"], API612, (), (), "values"),
        # 6.1 has no zs_lookup_class_index: no value line is expected.
        (["create zt0", "lookup 100"], API61, NO_LOOKUP, (("class_index", "5"),), "values"),
    ],
)
def test_check_commands_other_values(
    lines: list[str],
    api: KernelApi,
    failures: tuple[CommandFailure, ...],
    values: tuple[tuple[str, str], ...],
    kind: str,
) -> None:
    res = BatchResult(commands=len(lines), failures=failures, values=values)
    found = check_commands(0, lines, res, DriverModel(api))
    assert [d.kind for d in found] == [kind]


def test_check_commands_reports_commands_and_values() -> None:
    res = result(values=(("pages", "3"), *STATS[1:]))  # the alloc 2 0 error is missing too
    found = check_commands(0, BATCH, res, DriverModel(API61))
    assert [d.kind for d in found] == ["command-result", "pages"]


WO_SPANNING = [
    "create zt0",
    *[f"alloc {i} 100" for i in range(1, 38)],
    "write 37 5",
    "pwrite 37 9 10 20 wo",
    "verify 37 5",
    "pverify 37 9 10 20 ro",
]


@pytest.mark.parametrize("verify_errno", [0, EIO])
def test_check_commands_accepts_either_answer_when_unknown(verify_errno: int) -> None:
    assert run(*WO_SPANNING[-2:], driver=pool(*WO_SPANNING[1:-2])) == [UNKNOWN, 0]
    line = len(WO_SPANNING) - 1
    failures = (CommandFailure(line, "verify", verify_errno, "mismatch"),) if verify_errno else ()
    res = BatchResult(commands=len(WO_SPANNING), failures=failures, values=())
    assert check_commands(0, WO_SPANNING, res, DriverModel(API61)) == []


def test_check_commands_known_range_after_wo_must_match() -> None:
    bad = CommandFailure(len(WO_SPANNING), "pverify", EIO, "mismatch at offset 12 of 100")
    res = BatchResult(commands=len(WO_SPANNING), failures=(bad,), values=())
    found = check_commands(0, WO_SPANNING, res, DriverModel(API61))
    assert [d.kind for d in found] == ["data"]


def test_check_commands_unknown_is_only_match_or_mismatch() -> None:
    lost = CommandFailure(len(WO_SPANNING) - 1, "verify", ENOENT, "no live object with this id")
    res = BatchResult(commands=len(WO_SPANNING), failures=(lost,), values=())
    found = check_commands(0, WO_SPANNING, res, DriverModel(API61))
    assert [d.kind for d in found] == ["command-result"]


# ------------------------------------------------------------------------ check_classes


def populated() -> DriverModel:
    lines = [f"alloc {i} {(i * 97) % 4096 + 1}" for i in range(1, 300)]
    lines += [f"free {i}" for i in range(1, 300, 3)]
    return pool(*lines)


def test_check_classes_agrees_with_its_own_model() -> None:
    m = populated().model("zt0")
    assert check_classes(0, m.class_stats(), m) == []


def test_check_classes_perturbed_row() -> None:
    m = populated().model("zt0")
    rows = m.class_stats()
    k = next(i for i, r in enumerate(rows) if r.obj_used > 0)
    target = rows[k]
    rows[k] = dataclasses.replace(target, obj_used=target.obj_used + 1)
    found = check_classes(4, rows, m)
    assert len(found) == 1
    d = found[0]
    assert (d.kind, d.batch) == ("class-stats", 4)
    assert f"class {target.index} (size {target.size})" in d.detail
    assert f"obj_used guest {target.obj_used + 1} model {target.obj_used}" in d.detail


@pytest.mark.parametrize(
    "field",
    [
        "size",
        "almost_full",
        "almost_empty",
        "obj_allocated",
        "obj_used",
        "pages_used",
        "pages_per_zspage",
        "freeable",
    ],
)
def test_check_classes_names_the_field(field: str) -> None:
    m = populated().model("zt0")
    rows = m.class_stats()
    rows[-1] = dataclasses.replace(rows[-1], **{field: getattr(rows[-1], field) + 3})
    found = check_classes(0, rows, m)
    assert [d.kind for d in found] == ["class-stats"]
    assert "class 254" in found[0].detail
    assert f"{field} guest {getattr(rows[-1], field)}" in found[0].detail
    others = {"obj_used", "freeable", "pages_used"} - {field}
    assert not any(f"{name} guest" in found[0].detail for name in others)


def test_check_classes_reports_every_row() -> None:
    m = populated().model("zt0")
    rows = m.class_stats()
    rows[0] = dataclasses.replace(rows[0], pages_per_zspage=2)
    rows[5] = dataclasses.replace(rows[5], freeable=rows[5].freeable + 1)
    found = check_classes(0, rows, m)
    assert [d.kind for d in found] == ["class-stats", "class-stats"]
    assert f"class {rows[0].index} " in found[0].detail
    assert f"class {rows[5].index} " in found[1].detail


def test_check_classes_missing_row() -> None:
    m = populated().model("zt0")
    rows = m.class_stats()
    missing = rows.pop(10)
    found = check_classes(0, rows, m)
    assert [d.kind for d in found] == ["class-stats"]
    assert "class indexes differ" in found[0].detail
    assert "only in model" in found[0].detail and str(missing.index) in found[0].detail


def test_check_classes_extra_row() -> None:
    m = populated().model("zt0")
    rows = m.class_stats()
    rows.append(dataclasses.replace(rows[0], index=300))
    found = check_classes(0, rows, m)
    assert [d.kind for d in found] == ["class-stats"]
    assert "only in guest [300]" in found[0].detail


def test_check_classes_of_another_kernel() -> None:
    # The 6.12 table (119 classes) against a 6.1 model (69 classes).
    m = populated().model("zt0")
    other = pool(api=API612).model("zt0").class_stats()
    found = check_classes(0, other, m)
    assert [d.kind for d in found] == ["class-stats"]
    assert "guest has 119 classes, model 69" in found[0].detail


def _geometry_rows(model: PoolModel) -> list[ClassStats]:
    return [
        ClassStats(c.index, c.size, 0, 0, 0, 0, 0, c.pages_per_zspage, 0) for c in model.classes
    ]


@pytest.mark.parametrize("name", ["6.1", "6.12", "7.2"])
def test_a_fresh_pools_class_table_has_the_models_geometry(name: str) -> None:
    model = PoolModel(policy(name))
    assert check_geometry(_geometry_rows(model), model) is None


def test_a_class_table_the_model_does_not_know_names_the_first_differing_row() -> None:
    model = PoolModel(policy("6.1"))
    rows = _geometry_rows(model)
    rows[3] = dataclasses.replace(rows[3], pages_per_zspage=rows[3].pages_per_zspage + 1)
    found = check_geometry(rows, model)
    assert found is not None and found.kind == "model"
    assert found.detail.startswith("the model does not describe this zsmalloc: row 3 ")
    assert f"size {rows[3].size} with {rows[3].pages_per_zspage} pages" in found.detail
    fewer = check_geometry(_geometry_rows(model)[:-1], model)
    assert fewer is not None and "classes table has" in fewer.detail


# ------------------------------------------------------------------------ where

# 6.1's class of 100-byte objects: 100 + 8 header -> size 112, 73 objects in 2 pages.
# Slot 36 sits at 4032 and crosses into the second page; slot 37 starts at 4144.
SMALL = 100


def where_values(d: DriverModel, *ids: int) -> list[tuple[str, str]]:
    d.values = []
    assert run(*(f"where {i}" for i in ids), driver=d) == [0] * len(ids)
    return d.values


def test_where_points_past_the_header_and_refuses_a_spanning_slot() -> None:
    d = pool(*(f"alloc {i} {SMALL}" for i in range(1, 39)), "alloc 40 4096")
    first, second, last = where_values(d, 1, 2, 38)[::2]
    assert [v for k, v in d.values if k == "offset"] == ["8", "120", "56"]
    assert first == second != last  # one page; the zspage's second page
    assert where_values(d, 40)[1] == ("offset", "0")  # a huge object has no header
    assert run("where 37", "where 39", "where x", driver=d) == [EINVAL, ENOENT, EINVAL]
    assert run("where", "where 1 2", driver=d) == [EINVAL, EINVAL]


def guest(*values: tuple[str, str]) -> BatchResult:
    return BatchResult(len(values) // 2, (), values)


def test_page_numbers_must_name_the_same_pages_as_the_model() -> None:
    d = pool(*(f"alloc {i} {SMALL}" for i in range(1, 39)))
    seen = guest(("page", "1"), ("offset", "8"), ("page", "2"), ("offset", "56"))
    assert check_commands(1, ["where 1", "where 38"], seen, d) == []
    # Object 1's page is numbered 2 now, but 2 is the zspage's other page: a contradiction.
    moved = guest(("page", "2"), ("offset", "8"))
    (found,) = check_commands(2, ["where 1"], moved, d)
    assert found.kind == "page" and "page 0 of zspage" in found.detail
    wrong_slot = guest(("page", "1"), ("offset", "120"))
    assert [f.kind for f in check_commands(3, ["where 1"], wrong_slot, d)] == ["offset"]


def test_a_migrated_or_reused_page_takes_its_new_number() -> None:
    d = pool(*(f"alloc {i} {SMALL}" for i in range(1, 3)))
    assert check_commands(1, ["where 1"], guest(("page", "1"), ("offset", "8")), d) == []
    # Migration gave the page a new pfn, so a number zstest has not printed before.
    assert check_commands(2, ["where 2"], guest(("page", "5"), ("offset", "120")), d) == []
    # Its zspage freed, the old pfn serves a new zspage.
    assert run("free 1", "free 2", "alloc 3 100", driver=d) == [0, 0, 0]
    assert check_commands(3, ["where 3"], guest(("page", "5"), ("offset", "8")), d) == []


def test_keeps_pool_names_the_batches_the_host_may_read_ahead_of() -> None:
    assert keeps_pool(["alloc 1 100", "write 1 7", "churn 1 1000 10 64", "where 1", "stats"])
    assert keeps_pool(["nonsense line", "\0", ""])  # refused lines change nothing
    for changing in ("create zt1", "use zt0", "destroy zt0", "stress 1 1 1 1", "lockfree 1 5"):
        assert not keeps_pool(["alloc 1 100", changing]), changing
    assert not keeps_pool(["mapcompact\t1 1 1 1 1"])  # the driver splits on tabs too
