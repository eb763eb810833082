"""Class tables beyond x86_64's 4 KiB pages, checked against values derived by hand.

Each test writes the derivation out from upstream's rules (reference section 3):
ZS_SIZE_CLASS_DELTA = PAGE_SIZE >> 8; OBJ_INDEX_BITS = BITS_PER_LONG - _PFN_BITS
(- OBJ_TAG_BITS = 1 on 6.1); ZS_MIN_ALLOC_SIZE = MAX(32, maxpages << PAGE_SHIFT >>
OBJ_INDEX_BITS); ZS_SIZE_CLASSES = DIV_ROUND_UP(PAGE_SIZE - min, delta) + 1; the huge
class size is the largest non-huge class's size - (ZS_HANDLE_SIZE - 1).
"""

from __future__ import annotations

import pytest

from pyharness.commands import cli
from pyharness.model import Geometry, Policy, class_table, huge_class_size, policy

ARM64_16K = Geometry(page_size=16384, bits_per_long=64, physmem_bits=52)
PPC64_64K = Geometry(page_size=65536, bits_per_long=64, physmem_bits=51)
X86_PAE = Geometry(page_size=4096, bits_per_long=32, physmem_bits=36)


def classes(p: Policy) -> dict[int, tuple[int, int]]:
    return {c.size: (c.pages_per_zspage, c.objs_per_zspage) for c in class_table(p)}


def test_16k_pages_on_6_12_chain_8() -> None:
    p = policy("6.12", chain_size=8, geometry=ARM64_16K)
    # delta 16384 >> 8 = 64; _PFN_BITS 52 - 14 = 38, OBJ_INDEX_BITS 64 - 38 = 26;
    # 8 << 14 >> 26 = 0, so the minimum stays 32.
    assert (p.class_delta, p.obj_index_bits, p.min_alloc_size) == (64, 26, 32)
    # DIV_ROUND_UP(16384 - 32, 64) = DIV_ROUND_UP(16352, 64) = 256 (255.5 up), + 1.
    assert p.num_indexes == 257
    table = classes(p)
    # 14560 = 32 + 64 * 227: k * 16384 % 14560 = 1824 k for k <= 7 (1824 .. 12768), and
    # 8 * 16384 = 131072 = 9 * 14560 + 32: the least waste at k = 8, 9 objects.
    assert table[14560] == (8, 9)
    # Above it (14624 .. 16352) the tail w = 16384 - size <= 1760 and 8 w < size, so the
    # waste k w only grows with k: one page, one object, huge. 14560 - 7 = 14553.
    assert huge_class_size(p) == 14553
    # Powers of two take one page: 512 objects of 32 bytes.
    assert table[32] == (1, 512)
    assert table[16384] == (1, 1)


def test_64k_pages_on_6_1() -> None:
    p = policy("6.1", geometry=PPC64_64K)
    # delta 65536 >> 8 = 256; OBJ_INDEX_BITS 64 - (51 - 16) - 1 = 28; 4 << 16 >> 28 = 0.
    assert (p.class_delta, p.obj_index_bits, p.min_alloc_size) == (256, 28, 32)
    # DIV_ROUND_UP(65504, 256) = 256 (255.875 up), + 1.
    assert p.num_indexes == 257
    table = classes(p)
    # 52256 = 32 + 256 * 204, usedpc for k = 1..4: 52256 / 65536 -> 79;
    # 2 * 52256 / 131072 -> 79; 3 * 52256 / 196608 -> 79; 5 * 52256 = 261280 of 262144 -> 99.
    assert table[52256] == (4, 5)
    # 52512: k = 1 gives 80 and k = 4 (4 objects, 210048 of 262144) 80, not more: huge.
    assert table[65536] == (1, 1) and 52512 not in table
    assert huge_class_size(p) == 52256 - 7


def test_32_bit_pae_on_6_1() -> None:
    p = policy("6.1", geometry=X86_PAE)
    # _PFN_BITS 36 - 12 = 24; OBJ_INDEX_BITS 32 - 24 - 1 = 7; 4 << 12 >> 7 = 128 > 32.
    assert (p.obj_index_bits, p.min_alloc_size, p.handle_size) == (7, 128, 4)
    # DIV_ROUND_UP(4096 - 128, 16) = 248, + 1.
    assert p.num_indexes == 249
    table = classes(p)
    assert min(table) == 128 and table[128] == (1, 32)
    # 3264 = 128 + 16 * 196: usedpc 79, 79, 79, then 5 * 3264 = 16320 of 16384 -> 99.
    assert table[3264] == (4, 5)
    # ZS_HANDLE_SIZE is 4 here: 3264 - 3, where x86_64 has 3264 - 7.
    assert huge_class_size(p) == 3261
    assert huge_class_size(policy("6.1")) == 3257


def test_4k_x86_64_is_unchanged() -> None:
    p = policy("7.2")
    assert (p.min_alloc_size, p.class_delta, p.num_indexes, p.obj_index_bits) == (32, 16, 255, 24)
    assert huge_class_size(p) == 3625  # reference section 3.2, 4 KiB pages


@pytest.mark.parametrize(
    "page_size, bits, physmem, problem",
    [
        (8192, 64, 52, "page size 8192 is not one of"),
        (4096, 48, 52, "BITS_PER_LONG must be 32 or 64"),
        (4096, 32, 60, "60 physical address bits do not fit"),
    ],
)
def test_impossible_geometry_is_refused(
    page_size: int, bits: int, physmem: int, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        Geometry(page_size, bits, physmem)


def test_cli_prints_the_table_for_a_page_size(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["model", "huge-size", "--policy", "6.12", "--page-size", "16k"]) == 0
    assert capsys.readouterr().out == "14553\n"
    assert cli.main(["model", "classes", "--policy", "6.1", "--bits", "32"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[1] == "0,128,1,32" and len(rows) - 1 == len(
        class_table(policy("6.1", geometry=X86_PAE))
    )
    with pytest.raises(SystemExit):
        cli.main(["model", "classes", "--page-size", "8k"])
