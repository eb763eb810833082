"""Tests for the host side of the zstest protocol (pyharness.guest), pure functions only.

The result format is the one kmod/zstest.c.j2 prints: `e LINE VERB ERRNO TEXT` per failed
command, `s KEY VALUE` for version and stats, and always a last `end COMMANDS ERRORS`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyharness.guest.zstest import (
    CHUNK_BYTES,
    BatchResult,
    CommandFailure,
    ProtocolError,
    chunks,
    parse_classes,
    parse_result,
    patch_rows,
)
from pyharness.model import ClassStats, class_table, policy
from pyharness.progress import StageError

DATA = Path(__file__).parent / "data"

# ------------------------------------------------------------------------ parse_result


def test_parse_result_with_errors_and_values() -> None:
    text = (
        "e 2 alloc -22 SIZE must be 1..PAGE_SIZE\n"
        "e 5 verify -5 mismatch at offset 3 of 100\n"
        "s pages 3\n"
        "s huge_class_size 3257\n"
        "end 6 2\n"
    )
    r = parse_result(text)
    assert r.commands == 6
    assert r.failures == (
        CommandFailure(2, "alloc", -22, "SIZE must be 1..PAGE_SIZE"),
        CommandFailure(5, "verify", -5, "mismatch at offset 3 of 100"),
    )
    assert r.values == (("pages", "3"), ("huge_class_size", "3257"))
    assert r.value("pages") == "3"
    assert r.value("huge_class_size") == "3257"


def test_parse_result_only_end_line() -> None:
    r = parse_result("end 1001 0\n")
    assert r == BatchResult(commands=1001, failures=(), values=())


def test_parse_result_tolerates_serial_carriage_returns_and_blank_lines() -> None:
    r = parse_result("\r\ns version 1\r\r\n\r\nend 1 0\r\r\n")
    assert r.commands == 1
    assert r.failures == ()
    assert r.value("version") == "1"


def test_parse_result_unknown_verb_line() -> None:
    # zt_run_line reports an unknown verb with "-" as the verb.
    r = parse_result("e 1 - -22 unknown verb\nend 1 1")
    assert r.failures == (CommandFailure(1, "-", -22, "unknown verb"),)


def test_protocol_error_is_a_stage_error() -> None:
    assert issubclass(ProtocolError, StageError)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("\r\n\n\r\r\n", "empty"),
        ("s pages 3\n", "end line"),
        ("e 1 alloc -22 why\n", "end line"),
        ("end 2 0\nend 2 0\n", "unexpected line"),
        ("hello\nend 1 0\n", "unexpected line"),
        ("s pages\nend 1 0\n", "unexpected line"),  # a value line without its value
        ("s pages 3 4\nend 1 0\n", "unexpected line"),
        ("e 1 alloc 22 positive errno\nend 1 1\n", "unexpected line"),
        ("e x alloc -22 why\nend 1 1\n", "unexpected line"),
        ("[    2.1] zsmalloc: loading out-of-tree module\nend 1 0\n", "unexpected line"),
        ("end 3 1\n", "counts 1 failures but 0"),
        ("e 1 alloc -22 why\ne 2 alloc -22 why\nend 3 1\n", "counts 1 failures but 2"),
        ("e 1 alloc -22 why\nend 3 0\n", "counts 0 failures but 1"),
        ("end 3 0 truncated\n", "truncated"),
        ("end 300000 12 truncated\n", "truncated"),
        ("end -1 0\n", "end line"),
        ("end 1\n", "end line"),
    ],
)
def test_parse_result_rejects(text: str, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        parse_result(text)


def test_value_missing_key() -> None:
    r = parse_result("s pages 3\nend 1 0\n")
    with pytest.raises(ProtocolError, match="huge_class_size.*got 0"):
        r.value("huge_class_size")


def test_value_duplicate_key() -> None:
    r = parse_result("s pages 3\ns pages 4\nend 2 0\n")
    assert r.values == (("pages", "3"), ("pages", "4"))
    with pytest.raises(ProtocolError, match="pages.*got 2"):
        r.value("pages")


# ------------------------------------------------------------------------ parse_classes


def first_classes_table() -> str:
    """The first `cat .../zt0/classes` output in the recorded console, header to Total."""
    lines = (DATA / "console-6.1-pass.log").read_bytes().decode().split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith(" class  size almost_full"))
    end = next(i for i in range(start, len(lines)) if lines[i].lstrip().startswith("Total"))
    return "\n".join(lines[start : end + 1])


TABLE = first_classes_table()


def test_real_table_rows() -> None:
    rows = parse_classes(TABLE)
    assert len(rows) == 69
    indexes = [r.index for r in rows]
    assert indexes == sorted(indexes)
    assert len(set(indexes)) == len(indexes)
    assert (rows[0].index, rows[0].size, rows[0].pages_per_zspage) == (0, 32, 1)
    assert (rows[-1].index, rows[-1].size) == (254, 4096)
    assert all(isinstance(r, ClassStats) for r in rows)
    assert all(r.inuse_ratio is None for r in rows)
    # Row 0 exactly as printed: "0 32 0 1 128 2 1 1 0".
    assert rows[0] == ClassStats(
        index=0,
        size=32,
        almost_full=0,
        almost_empty=1,
        obj_allocated=128,
        obj_used=2,
        pages_used=1,
        pages_per_zspage=1,
        freeable=0,
    )


def test_real_table_totals_match_the_total_row() -> None:
    rows = parse_classes(TABLE)
    total = [int(f) for f in TABLE.split("\n")[-1].split()[1:]]
    sums = [
        sum(r.almost_full for r in rows),
        sum(r.almost_empty for r in rows),
        sum(r.obj_allocated for r in rows),
        sum(r.obj_used for r in rows),
        sum(r.pages_used for r in rows),
        sum(r.freeable for r in rows),
    ]
    assert total == sums


def test_real_table_geometry_matches_the_model() -> None:
    rows = parse_classes(TABLE)
    got = [(r.index, r.size, r.pages_per_zspage) for r in rows]
    want = [(c.index, c.size, c.pages_per_zspage) for c in class_table(policy("6.1"))]
    assert got == want


def test_real_table_every_recorded_output_parses() -> None:
    lines = (DATA / "console-6.1-pass.log").read_bytes().decode().split("\n")
    starts = [i for i, line in enumerate(lines) if line.startswith(" class  size almost_full")]
    assert len(starts) >= 2
    for start in starts:
        end = next(i for i in range(start, len(lines)) if lines[i].lstrip().startswith("Total"))
        rows = parse_classes("\n".join(lines[start : end + 1]))
        assert [r.index for r in rows] == [c.index for c in class_table(policy("6.1"))]


def test_parse_classes_rejects_wrong_header() -> None:
    lines = TABLE.split("\n")
    wrong = lines[0].replace("almost_full almost_empty", "10% 20%")
    with pytest.raises(ProtocolError, match="header"):
        parse_classes("\n".join([wrong, *lines[1:]]))


def test_parse_classes_rejects_missing_column_in_header() -> None:
    lines = TABLE.split("\n")
    wrong = lines[0].replace(" freeable", "")
    with pytest.raises(ProtocolError, match="header"):
        parse_classes("\n".join([wrong, *lines[1:]]))


def test_parse_classes_rejects_empty() -> None:
    with pytest.raises(ProtocolError, match="header"):
        parse_classes("\r\n\n")


@pytest.mark.parametrize(
    "row",
    [
        "     3    80           0            1            51          1          1",
        "     3    80           0            1            51          1          1    1    0   7",
        "     3    80           0            x            51          1          1    1    0",
        "     3    80           0           -1            51          1          1    1    0",
        "cat: can't open '/sys/kernel/debug/zsmalloc/zt0/classes': No such file or directory",
    ],
)
def test_parse_classes_rejects_malformed_row(row: str) -> None:
    lines = TABLE.split("\n")
    with pytest.raises(ProtocolError, match="malformed"):
        parse_classes("\n".join([lines[0], lines[1], row, *lines[2:]]))


def test_parse_classes_header_only() -> None:
    assert parse_classes(TABLE.split("\n")[0]) == []


# ------------------------------------------------------------------------ chunks


def test_chunks_small_example() -> None:
    assert chunks(["ab", "cd", "ef"], limit=6) == ["ab\ncd\n", "ef\n"]
    assert chunks(["ab", "cd", "ef"], limit=9) == ["ab\ncd\nef\n"]
    assert chunks([], limit=9) == []
    assert chunks([""], limit=9) == ["\n"]


def test_chunks_default_limit_on_a_workload_sized_batch() -> None:
    lines = [f"alloc {i} {i % 4096 + 1}" for i in range(1, 2001)]
    out = chunks(lines)
    assert len(out) > 1
    assert all(len(c.encode()) <= CHUNK_BYTES for c in out)
    assert "".join(out) == "".join(f"{line}\n" for line in lines)


# Driver commands are ASCII lines shorter than 128 bytes; any printable ASCII line that fits
# a chunk must be handled.
ascii_line = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)


@given(lines=st.lists(ascii_line, max_size=80), limit=st.integers(min_value=61, max_value=400))
def test_chunks_property(lines: list[str], limit: int) -> None:
    out = chunks(lines, limit=limit)
    joined = "".join(f"{line}\n" for line in lines)
    assert "".join(out) == joined
    for chunk in out:
        assert chunk.endswith("\n")
        assert len(chunk.encode()) <= limit
    # Greedy: no chunk could have taken the first line of the next one.
    for chunk, following in zip(out, out[1:], strict=False):
        first = following.split("\n", 1)[0]
        assert len(chunk.encode()) + len(first) + 1 > limit
    assert sum(c.count("\n") for c in out) == len(lines)


def test_chunks_limit_is_in_bytes() -> None:
    lines = ["é" * 40] * 10  # 80 bytes + newline each
    out = chunks(lines, limit=200)
    assert "".join(out) == "".join(f"{line}\n" for line in lines)
    assert all(len(c.encode()) <= 200 for c in out)


# ------------------------------------------------------------------- classes, changed rows


def test_a_classes_read_patches_the_rows_that_changed() -> None:
    first = patch_rows([], "3\n1:head\n2:row a\n3:Total")
    assert first == ["head", "row a", "Total"]
    assert patch_rows(first, "3\n2:row b") == ["head", "row b", "Total"]
    assert patch_rows(first, "3") == first  # nothing changed
    assert patch_rows(first, "2\n2:Total") == ["head", "Total"]  # a shorter table
    assert patch_rows(first, "4\n4:more") == [*first, "more"]


@pytest.mark.parametrize(
    "answer",
    ["", "x\n1:head", "3\n0:head", "3\n4:head", "3\nhead", "2\n1:head\n\n"],
    ids=["empty", "no-count", "row-0", "past-the-end", "unnumbered", "rows-never-sent"],
)
def test_a_malformed_classes_answer_is_a_protocol_error(answer: str) -> None:
    with pytest.raises(ProtocolError, match="`classes` read"):
        patch_rows([], answer)
