"""Tests for pyharness.check: the driver model's predictions and the divergence checks.

Every expected errno below is read off kmod/zstest.c.j2 (zt_ctl_write, zt_run_line and the
zt_cmd_* handlers) and the kernel's kstrtou32, not taken from the model.
"""

from __future__ import annotations

import dataclasses

import pytest

from pyharness.check import DriverModel, check_commands, check_state
from pyharness.guest import BatchResult, CommandFailure
from pyharness.model import huge_class_size, policy
from pyharness.pattern import pattern

P61 = policy("6.1")

# Linux errno values, spelled out so the tests do not depend on the host's errno module.
ENOENT = -2
EIO = -5
E2BIG = -7
EEXIST = -17
EINVAL = -22
ERANGE = -34
ENODATA = -61


def run(*lines: str, driver: DriverModel | None = None) -> list[int]:
    d = driver if driver is not None else DriverModel(P61)
    return [d.run(line) for line in lines]


# ------------------------------------------------------------------------ no pool yet


@pytest.mark.parametrize(
    "line",
    ["alloc 1 100", "write 1 7", "verify 1 7", "free 1", "reset", "stats"],
)
def test_pool_commands_before_create(line: str) -> None:
    assert run(line) == [ENOENT]


def test_version_needs_no_pool() -> None:
    assert run("version") == [0]


def test_argument_count_is_checked_before_the_pool() -> None:
    # zt_run_line checks argc before needs_pool.
    assert run("alloc 1", "stats now", "free") == [EINVAL, EINVAL, EINVAL]


def test_bad_number_before_create_is_enoent() -> None:
    # needs_pool is checked before the handler parses its arguments.
    assert run("alloc x 100") == [ENOENT]


# ------------------------------------------------------------------------ objects


def test_alloc_write_verify_free_cycle() -> None:
    d = DriverModel(P61)
    assert run("create zt0", "alloc 1 100", "write 1 7", "verify 1 7", driver=d) == [0, 0, 0, 0]
    # 100 bytes + the 8-byte handle go to class 5 (112 bytes), whose zspage is 2 pages in
    # the real 6.1 `classes` table.
    assert d.model("zt0").total_pages() == 2
    assert run("free 1", driver=d) == [0]
    assert d.model("zt0").total_pages() == 0


@pytest.mark.parametrize(("size", "expected"), [(0, EINVAL), (5000, EINVAL), (4097, EINVAL)])
def test_alloc_size_out_of_range(size: int, expected: int) -> None:
    d = DriverModel(P61)
    assert run("create zt0", f"alloc 1 {size}", driver=d) == [0, expected]
    assert d.model("zt0").total_pages() == 0
    # Nothing was remembered under the id.
    assert run("free 1", driver=d) == [ENOENT]


def test_alloc_size_bounds_are_accepted() -> None:
    d = DriverModel(P61)
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
    d = DriverModel(P61)
    assert run("create zt0", "alloc 1 64", "alloc 1 64", driver=d) == [0, 0, EEXIST]
    pages = d.model("zt0").total_pages()
    # After a free the id may be used again.
    assert run("free 1", "alloc 1 64", driver=d) == [0, 0]
    assert d.model("zt0").total_pages() == pages


def test_eexist_is_checked_after_the_size() -> None:
    assert run("create zt0", "alloc 1 64", "alloc 1 0") == [0, 0, EINVAL]


def test_reset_frees_everything() -> None:
    d = DriverModel(P61)
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
        ("stats 1", EINVAL),
        ("version 1", EINVAL),
        ("create", EINVAL),
        ("free", EINVAL),
        ("alloc 1 2 3 4", E2BIG),  # five tokens
        ("bogus 1 2 3 4", E2BIG),  # tokenising fails before the verb lookup
        ("a b c d e f g", E2BIG),
    ],
)
def test_verb_and_argument_count(line: str, expected: int) -> None:
    assert run("create zt0", line) == [0, expected]


@pytest.mark.parametrize("line", ["", "   ", "\t", " \t \t "])
def test_blank_lines_are_ignored(line: str) -> None:
    assert run(line) == [0]


def test_tabs_and_repeated_separators() -> None:
    lines = ("create\tzt0", "alloc\t1\t100", "\t write  1 \t 7 ", "verify\t\t1  7", "free 1\t")
    assert run(*lines) == [0] * len(lines)


def test_long_lines() -> None:
    d = DriverModel(P61)
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


def test_line_length_counts_bytes() -> None:
    # 64 two-byte characters: 64 characters, 128 bytes.
    assert run("é" * 64) == [E2BIG]
    assert run("é" * 63) == [EINVAL]  # 126 bytes: parsed, unknown verb


def test_a_failed_line_changes_nothing() -> None:
    d = DriverModel(P61)
    assert run("create zt0", "alloc 1 64 extra", "alloc 1 64 a b", driver=d) == [0, EINVAL, E2BIG]
    assert d.model("zt0").total_pages() == 0
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
    d = DriverModel(P61)
    lines = ("create a", "alloc 1 64", "write 1 5", "create b", "verify 1 5", "alloc 1 64")
    assert run(*lines, driver=d) == [0, 0, 0, 0, ENOENT, 0]
    assert run("use a", "verify 1 5", driver=d) == [0, 0]
    assert d.model("a").total_pages() == 1
    assert d.model("b").total_pages() == 1


def test_recreated_pool_starts_empty() -> None:
    d = DriverModel(P61)
    assert run("create zt0", "alloc 1 64", "destroy zt0", "create zt0", driver=d) == [0] * 4
    assert d.model("zt0").total_pages() == 0
    assert run("free 1", "alloc 1 64", driver=d) == [ENOENT, 0]


# ------------------------------------------------------------ seeds that share a pattern

_A, _B, _C = 0x9E3779B1, 0x85EBCA6B, 0xC2B2AE35
_M = 0xFFFFFFFF


def _colliding_seeds(oid: int, length: int) -> tuple[int, int]:
    """Two seeds whose patterns are identical: one gives a zero xorshift seed, replaced by
    0x6d2b79f5, the other gives 0x6d2b79f5 itself."""
    inv_b = pow(_B, -1, 1 << 32)
    base = ((oid * _A) ^ (length * _C)) & _M
    return (base * inv_b) & _M, ((base ^ 0x6D2B79F5) * inv_b) & _M


def test_colliding_seeds_give_the_same_driverpattern() -> None:
    a, b = _colliding_seeds(1, 4096)
    assert a != b
    assert pattern(1, a, 4096) == pattern(1, b, 4096)
    assert pattern(1, a, 4096) != pattern(1, a + 1, 4096)


def test_verify_with_a_seed_of_the_same_pattern_passes() -> None:
    a, b = _colliding_seeds(1, 4096)
    assert run("create zt0", "alloc 1 4096", f"write 1 {a}", f"verify 1 {b}") == [0, 0, 0, 0]


def test_u64_overflow_with_trailing_garbage_is_erange() -> None:
    assert run("create zt0", "alloc 1 99999999999999999999999x") == [0, ERANGE]


# ------------------------------------------------------------------------ check_commands

BATCH = ["create zt0", "alloc 1 100", "write 1 7", "verify 1 7", "alloc 2 0", "stats"]
SIZE_ERROR = CommandFailure(5, "alloc", EINVAL, "SIZE must be 1..PAGE_SIZE")
STATS = (("pages", "2"), ("huge_class_size", "3257"))


def test_check_commands_agreeing_batch() -> None:
    result = BatchResult(commands=len(BATCH), failures=(SIZE_ERROR,), values=STATS)
    assert check_commands(0, BATCH, result, DriverModel(P61)) == []


def test_check_commands_missing_error() -> None:
    result = BatchResult(commands=len(BATCH), failures=(), values=STATS)
    found = check_commands(3, BATCH, result, DriverModel(P61))
    assert len(found) == 1
    d = found[0]
    assert d.kind == "command-result"
    assert d.batch == 3
    assert "line 5 `alloc 2 0`" in d.detail
    assert "expected -EINVAL, got ok" in d.detail
    assert str(d).startswith("batch 3: command-result: ")


def test_check_commands_unexpected_error() -> None:
    nomem = CommandFailure(2, "alloc", -12, "zs_malloc failed")
    result = BatchResult(commands=len(BATCH), failures=(nomem, SIZE_ERROR), values=STATS)
    found = check_commands(0, BATCH, result, DriverModel(P61))
    assert len(found) == 1
    assert found[0].kind == "command-result"
    assert "line 2 `alloc 1 100`" in found[0].detail
    assert "expected ok, got -ENOMEM (zs_malloc failed)" in found[0].detail


def test_check_commands_wrong_errno() -> None:
    wrong = CommandFailure(5, "alloc", ERANGE, "SIZE is not a number in 0..4294967295")
    result = BatchResult(commands=len(BATCH), failures=(wrong,), values=STATS)
    found = check_commands(0, BATCH, result, DriverModel(P61))
    assert [d.kind for d in found] == ["command-result"]
    assert "expected -EINVAL, got -ERANGE" in found[0].detail


def test_check_commands_verify_eio_is_data() -> None:
    bad = CommandFailure(4, "verify", EIO, "mismatch at offset 17 of 100")
    result = BatchResult(commands=len(BATCH), failures=(bad, SIZE_ERROR), values=STATS)
    found = check_commands(1, BATCH, result, DriverModel(P61))
    assert len(found) == 1
    assert found[0].kind == "data"
    assert "line 4 `verify 1 7`" in found[0].detail
    assert "mismatch at offset 17 of 100" in found[0].detail


def test_check_commands_wrong_command_count_is_protocol() -> None:
    result = BatchResult(commands=len(BATCH) - 1, failures=(SIZE_ERROR,), values=STATS)
    found = check_commands(2, BATCH, result, DriverModel(P61))
    assert [d.kind for d in found] == ["protocol"]
    assert f"{len(BATCH) - 1} commands ran, sent {len(BATCH)}" in found[0].detail


def test_check_commands_advances_the_driver_model() -> None:
    d = DriverModel(P61)
    result = BatchResult(commands=len(BATCH), failures=(SIZE_ERROR,), values=STATS)
    assert check_commands(0, BATCH, result, d) == []
    assert d.model("zt0").total_pages() == 2
    # Object 1 is live in the model now, so a second alloc of it must fail.
    again = BatchResult(commands=1, failures=(), values=())
    found = check_commands(1, ["alloc 1 100"], again, d)
    assert len(found) == 1
    assert "expected -EEXIST, got ok" in found[0].detail


# ------------------------------------------------------------------------ check_state


def populated() -> DriverModel:
    d = DriverModel(P61)
    lines = ["create zt0"] + [f"alloc {i} {(i * 97) % 4096 + 1}" for i in range(1, 300)]
    lines += [f"free {i}" for i in range(1, 300, 3)]
    assert set(run(*lines, driver=d)) == {0}
    return d


def stats_result(pages: int, huge: int) -> BatchResult:
    return BatchResult(
        commands=1, failures=(), values=(("pages", str(pages)), ("huge_class_size", str(huge)))
    )


def test_check_state_agrees_with_its_own_model() -> None:
    m = populated().model("zt0")
    rows = m.class_stats()
    result = stats_result(m.total_pages(), huge_class_size(P61))
    assert check_state(0, result, rows, m) == []


def test_check_state_perturbed_row() -> None:
    m = populated().model("zt0")
    rows = m.class_stats()
    k = next(i for i, r in enumerate(rows) if r.obj_used > 0)
    target = rows[k]
    rows[k] = dataclasses.replace(target, obj_used=target.obj_used + 1)
    found = check_state(4, stats_result(m.total_pages(), 3257), rows, m)
    assert len(found) == 1
    d = found[0]
    assert (d.kind, d.batch) == ("class-stats", 4)
    assert f"class {target.index} (size {target.size})" in d.detail
    assert f"obj_used guest {target.obj_used + 1} model {target.obj_used}" in d.detail


@pytest.mark.parametrize(
    "field", ["almost_full", "almost_empty", "obj_allocated", "pages_used", "freeable"]
)
def test_check_state_names_the_field(field: str) -> None:
    m = populated().model("zt0")
    rows = m.class_stats()
    rows[-1] = dataclasses.replace(rows[-1], **{field: getattr(rows[-1], field) + 3})
    found = check_state(0, stats_result(m.total_pages(), 3257), rows, m)
    assert [d.kind for d in found] == ["class-stats"]
    assert "class 254 (size 4096)" in found[0].detail
    assert field in found[0].detail


def test_check_state_missing_row() -> None:
    m = populated().model("zt0")
    rows = m.class_stats()
    del rows[10]
    found = check_state(0, stats_result(m.total_pages(), 3257), rows, m)
    assert [d.kind for d in found] == ["class-stats"]
    assert "class indexes differ" in found[0].detail


def test_check_state_wrong_total_pages() -> None:
    m = populated().model("zt0")
    pages = m.total_pages()
    assert pages > 0
    found = check_state(0, stats_result(pages + 1, 3257), m.class_stats(), m)
    assert [d.kind for d in found] == ["total-pages"]
    assert found[0].detail == f"guest {pages + 1} pages, model {pages}"


def test_check_state_wrong_huge_class_size() -> None:
    m = populated().model("zt0")
    found = check_state(0, stats_result(m.total_pages(), 3264), m.class_stats(), m)
    assert [d.kind for d in found] == ["huge-class-size"]
    assert found[0].detail == "guest 3264, model 3257"


def test_check_state_reports_every_divergence() -> None:
    m = populated().model("zt0")
    rows = m.class_stats()
    rows[0] = dataclasses.replace(rows[0], pages_per_zspage=2)
    found = check_state(0, stats_result(0, 0), rows, m)
    assert [d.kind for d in found] == ["total-pages", "huge-class-size", "class-stats"]
