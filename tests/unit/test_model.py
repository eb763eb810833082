"""Tests for the zsmalloc reference model (pyharness.model).

Expected numbers come from the rules in /work/shared/reference/zsmalloc-upstream.md, from
reading the 6.1 / 6.12 ``mm/zsmalloc.c`` (compaction, insert_zspage) and from hand
computation, not from the model itself. Each compaction scenario spells out its derivation.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyharness.model import (
    ChainRule,
    ClassStats,
    CompactionRule,
    FullnessScheme,
    Handle,
    InsertRule,
    Placement,
    Policy,
    PoolModel,
    SizeClass,
    class_table,
    huge_class_size,
    insert_position,
    known_policies,
    policy,
)

P61 = policy("6.1")
P612 = policy("6.12")
P2013 = policy("2013")

# ---------------------------------------------------------------------------------------
# class tables


def rows(p: Policy) -> dict[int, tuple[int, int, int]]:
    return {c.index: (c.size, c.pages_per_zspage, c.objs_per_zspage) for c in class_table(p)}


def test_61_table_size_and_huge() -> None:
    table = class_table(P61)
    assert len(table) == 69
    assert huge_class_size(P61) == 3257
    assert [c.index for c in table] == sorted(c.index for c in table)
    assert table[0] == SizeClass(0, 32, 1, 128)
    assert table[-2] == SizeClass(202, 3264, 4, 5)
    assert table[-1] == SizeClass(254, 4096, 1, 1)
    assert [c.index for c in table if c.huge] == [254]


@pytest.mark.parametrize(
    ("index", "size", "ppz", "opz"),
    [
        (0, 32, 1, 128),  # 4096 % 32 == 0 -> 100% at k=1
        (1, 48, 3, 256),  # 99%, 99%, then 12288 % 48 == 0 -> 100% at k=3
        (2, 64, 1, 64),
        (3, 80, 1, 51),  # 99% at k=1 and never strictly better
        (190, 3072, 3, 4),  # 75%, 75%, 100%
        (202, 3264, 4, 5),  # 79, 79, 79, 99
    ],
)
def test_61_spot_rows(index: int, size: int, ppz: int, opz: int) -> None:
    assert rows(P61)[index] == (size, ppz, opz)


def test_61_merging_aliases_larger_class() -> None:
    m = PoolModel(P61)
    for i in range(255):
        user = 32 + 16 * i - 8  # largest user size whose raw index is i
        cls = m.class_of(user)
        assert cls.index >= i
        if 203 <= i <= 254:
            assert cls == SizeClass(254, 4096, 1, 1)
    assert m.class_of(3256) == SizeClass(202, 3264, 4, 5)
    # Index 4 (size 96) is its own class; index 5 is distinct too (2 pages, 73 objects).
    assert m.class_of(88).index == 4
    assert m.class_of(89).index == 5


def test_612_chain8_table() -> None:
    table = class_table(P612)
    assert len(table) == 119
    assert huge_class_size(P612) == 3625
    tail = [(c.index, c.size, c.pages_per_zspage, c.objs_per_zspage) for c in table[-6:]]
    assert tail == [
        (202, 3264, 4, 5),
        (211, 3408, 5, 6),
        (217, 3504, 6, 7),
        (222, 3584, 7, 8),
        (225, 3632, 8, 9),
        (254, 4096, 1, 1),
    ]
    assert class_table(policy("7.2")) == table


def test_612_chain16_table() -> None:
    p = policy("6.12", chain_size=16)
    assert len(class_table(p)) == 192  # the code's rule; the docs' 191 used the old rule
    assert p.max_pages_per_zspage == 16


def test_min_waste_rule_by_hand() -> None:
    assert P612.pages_per_zspage(2048) == 1  # power of two
    assert P612.pages_per_zspage(48) == 3  # wastes 16, 32, 0
    # 3632: waste 464, 928, 1392, 1856, 2320, 2784, 3248, 96 -> k=8
    assert P612.pages_per_zspage(3632) == 8
    assert P61.pages_per_zspage(3632) == 1  # usedpc: 88, 88, 88, 88


def test_no_merge_policy_keeps_every_index() -> None:
    p = Policy(
        name="nomerge",
        max_pages_per_zspage=4,
        chain_rule=ChainRule.USEDPC,
        fullness=FullnessScheme.QUARTERS,
        insert_rule=InsertRule.HEAD,
        find_order=(2, 1),
        zero_size_error=0,
        oversize_error=0,
        handle_size=0,
        merge_classes=False,
    )
    assert len(class_table(p)) == 255


def test_policy_names() -> None:
    assert known_policies() == ("6.1", "6.12", "7.2", "2013")
    with pytest.raises(ValueError, match=r"known: 6\.1, 6\.12, 7\.2, 2013"):
        policy("5.10")
    with pytest.raises(ValueError):
        policy("6.12", chain_size=17)
    with pytest.raises(ValueError):
        policy("6.1", chain_size=8)
    with pytest.raises(ValueError):
        policy("2013", chain_size=8)
    with pytest.raises(ValueError):
        Policy("bad", 4, ChainRule.USEDPC, FullnessScheme.QUARTERS, InsertRule.HEAD, (3,), 0, 0)
    with pytest.raises(ValueError, match="needs kept fullness lists"):
        replace(P2013, compaction=CompactionRule.DST_FIRST)
    with pytest.raises(ValueError, match="needs fullness quarters"):
        replace(P612, compaction=CompactionRule.SRC_FIRST)
    with pytest.raises(ValueError, match="multiple of 8"):
        replace(P612, class_spacing=12)
    assert P61.compaction is CompactionRule.SRC_FIRST
    assert P612.compaction is policy("7.2").compaction is CompactionRule.DST_FIRST
    assert P2013.compaction is CompactionRule.NONE


# ---------------------------------------------------------------------------------------
# lookup and errors


@pytest.mark.parametrize(
    ("size", "index"),
    [(1, 0), (24, 0), (25, 1), (40, 1), (41, 2), (88, 4), (3256, 202), (3257, 254), (4096, 254)],
)
def test_lookup(size: int, index: int) -> None:
    assert PoolModel(P61).class_of(size).index == index


def test_lookup_small_sizes_all_class0() -> None:
    m = PoolModel(P61)
    assert {m.class_of(s).index for s in range(1, 25)} == {0}


@pytest.mark.parametrize(
    ("name", "size", "index"),
    [
        # 6.12: 3257 + 8 = 3265 -> raw index 203, whose (5 pages, 6 objects) merges into 211.
        ("6.12", 3256, 202),
        ("6.12", 3257, 211),
        ("6.12", 3400, 211),
        ("6.12", 3401, 217),
        ("6.12", 3624, 225),  # 3632 -> index 225, the 8-page class
        ("6.12", 3625, 254),
        ("6.1", 3257, 254),
        ("6.1", 89, 5),
        # 2013: no header, no merging: the raw size's index is the class.
        ("2013", 32, 0),
        ("2013", 33, 1),
        ("2013", 3265, 203),
        ("2013", 4096, 254),
    ],
)
def test_lookup_class_index(name: str, size: int, index: int) -> None:
    assert PoolModel(policy(name)).lookup_class_index(size) == index


def test_alloc_errors() -> None:
    m = PoolModel(P61)
    assert m.alloc(0) == -22
    assert m.alloc(4097) == -22
    assert m.total_pages() == 0
    assert isinstance(m.alloc(4096), Handle)
    m2 = PoolModel(P612)
    assert m2.alloc(0) == -22
    assert m2.alloc(4097) == -28
    m3 = PoolModel(P2013)  # the kernel returns 0 here; the model reports -EINVAL
    assert m3.alloc(0) == -22
    assert m3.alloc(4097) == -22
    assert isinstance(m3.alloc(4096), Handle)


# ---------------------------------------------------------------------------------------
# behaviour (6.1)


def alloc(m: PoolModel, size: int) -> Handle:
    r = m.alloc(size)
    assert isinstance(r, Handle)
    return r


def where(m: PoolModel, h: Handle) -> tuple[int, int]:
    """(zspage serial, object index) of a handle."""
    pl = m.placement(h)
    return pl.zspage, pl.obj_index


def row(m: PoolModel, index: int) -> ClassStats:
    (r,) = [s for s in m.class_stats() if s.index == index]
    return r


def test_handles_are_stable_serials() -> None:
    m = PoolModel(P61)
    a, b = alloc(m, 10), alloc(m, 10)
    assert (a, b) == (Handle(0), Handle(1))
    m.free(a)
    c = alloc(m, 10)
    assert c == Handle(2)  # never reused ...
    assert m.placement(c) == Placement(0, 0, 0)  # ... though the slot is
    assert m.live_handles() == (b, c)
    assert m.is_live(b) and not m.is_live(a)
    assert m.zspage_handles(0) == ((0, c), (1, b))


def test_fullness_transitions_class0() -> None:
    m = PoolModel(P61)
    got = [alloc(m, 16) for _ in range(96)]
    assert [m.placement(g).obj_index for g in got] == list(range(96))
    assert {m.placement(g).zspage for g in got} == {0}
    assert row(m, 0) == ClassStats(0, 32, 0, 1, 128, 96, 1, 1, 0)
    alloc(m, 16)  # 97 > 3*128//4 -> ALMOST_FULL
    assert row(m, 0) == ClassStats(0, 32, 1, 0, 128, 97, 1, 1, 0)
    for _ in range(31):
        alloc(m, 16)
    assert row(m, 0) == ClassStats(0, 32, 0, 0, 128, 128, 1, 1, 0)
    assert m.zspage_lists(0) == ((), (), (), (0,))
    nxt = alloc(m, 1)
    assert m.placement(nxt) == Placement(0, 1, 0)
    assert m.total_pages() == 2
    assert row(m, 0) == ClassStats(0, 32, 0, 1, 256, 129, 2, 1, 0)  # 127 free < 128


def full_zspages(m: PoolModel, n: int, size: int = 24) -> list[Handle]:
    """n full class-0 zspages; on a fresh pool handle k sits at (k // 128, k % 128)."""
    objs = [alloc(m, size) for _ in range(128 * n)]
    full = m.zspage_lists(0)[-1]
    assert len(full) == n and list(full) == sorted(full, reverse=True)
    return objs


def free_range(m: PoolModel, hs: list[Handle], zspage: int, lo: int, hi: int = 128) -> None:
    """Free objects lo..hi-1, ascending, of the ``zspage``-th zspage that ``hs`` filled."""
    for j in range(lo, hi):
        m.free(hs[128 * zspage + j])


def test_list_head_order_and_unchanged_group_keeps_position() -> None:
    m = PoolModel(P61)
    objs = full_zspages(m, 2)
    m.free(objs[10])  # zspage 0 -> ALMOST_FULL
    assert m.zspage_lists(0) == ((), (), (0,), (1,))
    m.free(objs[128 + 20])  # zspage 1 -> ALMOST_FULL, becomes head
    assert m.zspage_lists(0) == ((), (), (1, 0), ())
    m.free(objs[11])  # zspage 0 stays ALMOST_FULL: no move
    assert m.zspage_lists(0) == ((), (), (1, 0), ())
    assert where(m, alloc(m, 24)) == (1, 20)
    assert m.zspage_lists(0) == ((), (), (0,), (1,))
    # LIFO: 11 was pushed after 10
    assert where(m, alloc(m, 24)) == (0, 11)
    assert where(m, alloc(m, 24)) == (0, 10)
    assert m.zspage_lists(0) == ((), (), (), (0, 1))


def test_find_prefers_almost_full_over_almost_empty() -> None:
    m = PoolModel(P61)
    objs = full_zspages(m, 2)
    m.free(objs[5])  # zspage 0: 127 in use, ALMOST_FULL
    for o in objs[128:168]:  # zspage 1: 88 in use, ALMOST_EMPTY (moved last)
        m.free(o)
    assert m.zspage_lists(0) == ((), (1,), (0,), ())
    assert where(m, alloc(m, 24)) == (0, 5)
    assert where(m, alloc(m, 24)) == (1, 39)


def test_insert_second_rule() -> None:
    rule = InsertRule.SECOND_IF_LESS_USED
    assert insert_position(rule, None, 3) == 0
    assert insert_position(rule, 5, 3) == 1
    assert insert_position(rule, 5, 5) == 0
    assert insert_position(rule, 5, 7) == 0
    assert insert_position(InsertRule.HEAD, 5, 3) == 0
    assert P61.insert_rule is rule
    assert P612.insert_rule is InsertRule.HEAD
    assert P2013.insert_rule is InsertRule.HEAD


def test_free_is_lifo() -> None:
    m = PoolModel(P61)
    objs = [alloc(m, 8) for _ in range(10)]
    m.free(objs[5])
    m.free(objs[7])
    assert m.zspage_free_list(0)[:3] == (7, 5, 10)
    assert [m.placement(alloc(m, 8)).obj_index for _ in range(3)] == [7, 5, 10]


def test_emptied_zspage_freed_immediately() -> None:
    m = PoolModel(P61)
    a = alloc(m, 1)
    assert m.placement(a) == Placement(0, 0, 0)
    assert m.total_pages() == 1
    m.free(a)
    assert m.total_pages() == 0
    assert row(m, 0) == ClassStats(0, 32, 0, 0, 0, 0, 0, 1, 0)
    assert m.zspage_lists(0) == ((), (), (), ())
    assert m.placement(alloc(m, 1)) == Placement(0, 1, 0)  # serials never reused


def test_huge_and_multipage_classes() -> None:
    m = PoolModel(P61)
    h = alloc(m, 4000)
    assert m.placement(h) == Placement(254, 0, 0)
    assert row(m, 254) == ClassStats(254, 4096, 0, 0, 1, 1, 1, 1, 0)
    big = alloc(m, 3000)  # 3008 -> index 186 -> class 190 (3072, 3 pages, 4 objects)
    assert m.placement(big) == Placement(190, 1, 0)
    assert m.total_pages() == 4
    assert row(m, 190) == ClassStats(190, 3072, 0, 1, 4, 1, 3, 3, 0)
    m.free(h)
    assert m.total_pages() == 3
    m.free(big)
    assert m.total_pages() == 0


def test_freeable_and_stats_row() -> None:
    m = PoolModel(P61)
    objs = full_zspages(m, 2)
    for o in objs[:100]:  # zspage 0 -> 28 in use
        m.free(o)
    for o in objs[128:156]:  # zspage 1 -> 100 in use
        m.free(o)
    assert row(m, 0) == ClassStats(0, 32, 1, 1, 256, 128, 2, 1, 1)
    assert m.freeable(0) == 1
    assert m.total_pages() == 2


def test_stats_rows_initially_zero() -> None:
    stats = PoolModel(P61).class_stats()
    assert [s.index for s in stats] == [c.index for c in class_table(P61)]
    assert all(
        (s.almost_full, s.almost_empty, s.obj_allocated, s.obj_used, s.pages_used, s.freeable)
        == (0, 0, 0, 0, 0, 0)
        for s in stats
    )
    assert stats[1].pages_per_zspage == 3
    assert all(s.inuse_ratio is None for s in stats)


def test_free_rejects_non_live() -> None:
    m = PoolModel(P61)
    a = alloc(m, 10)
    b = alloc(m, 10)
    m.free(a)
    with pytest.raises(ValueError):
        m.free(a)  # double free
    with pytest.raises(ValueError):
        m.free(Handle(99))
    with pytest.raises(ValueError):
        m.free(m.placement(b))  # type: ignore[arg-type]  # a placement is not a handle
    with pytest.raises(ValueError):
        m.placement(a)
    with pytest.raises(ValueError):
        m.spans(a)
    m.free(b)
    assert m.live_handles() == ()


# ---------------------------------------------------------------------------------------
# behaviour (6.12 ratio groups)


def test_612_ratio_columns() -> None:
    m = PoolModel(P612)
    objs = [alloc(m, 24) for _ in range(128)]
    r = row(m, 0)
    assert r.inuse_ratio == (0,) * 10 + (1,)
    assert (r.almost_full, r.almost_empty) == (0, 0)
    m.free(objs[0])  # 127/128 = 99% -> group 10
    assert row(m, 0).inuse_ratio == (0,) * 9 + (1, 0)
    for o in objs[1:127]:  # 1/128 -> 0% -> group 1 (10% column)
        m.free(o)
    assert row(m, 0).inuse_ratio == (1,) + (0,) * 10


def test_find_order_differs_between_61_and_612() -> None:
    def run(p: Policy) -> tuple[int, int]:
        m = PoolModel(p)
        objs = [alloc(m, 24) for _ in range(256)]
        for o in objs[128 : 128 + 38]:  # zspage 1 -> 90 in use first
            m.free(o)
        for o in objs[:108]:  # then zspage 0 -> 20 in use
            m.free(o)
        return where(m, alloc(m, 24))

    # 6.1: both ALMOST_EMPTY; zspage 0 moved last so it is head.
    assert run(P61) == (0, 107)
    # 6.12: zspage 1 (70% group) beats zspage 0 (20% group).
    assert run(P612) == (1, 37)  # last object freed there


# ---------------------------------------------------------------------------------------
# compaction (6.1)


def test_61_compact_two_sparse_zspages() -> None:
    """Class 0, three full zspages; leave zspage 0 with objects 0..9, zspage 1 with 0..19.

    Lists before: zspage 0 fell into ALMOST_EMPTY first, zspage 1 was inserted at the head
    later (96 in use >= 10), so AE = [1, 0] and FULL = [2]. zs_can_compact = 226 // 128 = 1.
    __zs_compact: src = AE head = zspage 1 (the *fuller* of the two), dst = AF head (none), so
    AE head = zspage 0. Objects 1.0 .. 1.19 move in address order into zspage 0's LIFO free
    list, whose head is 127 (objects 10..127 were freed ascending): 1.j -> 0.(127 - j).
    src exhausted: put back dst (30 in use, AE), put back src (EMPTY) and free it: 1 page.
    Next round: src = zspage 0, zs_can_compact = 98 // 128 = 0: stop, put zspage 0 back.
    """
    m = PoolModel(P61)
    hs = full_zspages(m, 3)
    free_range(m, hs, 0, 10)
    free_range(m, hs, 1, 20)
    assert m.zspage_lists(0) == ((), (1, 0), (), (2,))
    assert m.freeable(0) == 1

    assert m.compact() == 1
    assert m.pages_compacted == 1
    assert m.live_zspages(0) == (0, 2)
    assert m.total_pages() == 2
    assert [where(m, hs[128 + j]) for j in range(20)] == [(0, 127 - j) for j in range(20)]
    assert [where(m, hs[j]) for j in range(10)] == [(0, j) for j in range(10)]
    assert [where(m, hs[256 + j]) for j in range(128)] == [(2, j) for j in range(128)]
    assert m.zspage_lists(0) == ((), (0,), (), (2,))
    assert m.zspage_inuse(0) == 30
    assert m.zspage_free_list(0)[:2] == (107, 106)
    assert m.freeable(0) == 0
    assert row(m, 0) == ClassStats(0, 32, 0, 1, 256, 158, 2, 1, 0)
    # The next allocation takes the head of zspage 0's free list.
    assert where(m, alloc(m, 24)) == (0, 107)

    # Idempotent: nothing left to free.
    assert m.compact() == 0
    assert m.pages_compacted == 1
    assert m.zspage_lists(0) == ((), (0,), (), (2,))


def test_612_same_scenario_keeps_the_other_zspage() -> None:
    """6.12 picks by ratio: dst = fullest (zspage 1, 15% -> group 2), src = emptiest (zspage 0,
    7% -> group 1). Objects 0.0 .. 0.9 go to 1.127 .. 1.118; zspage 0 is freed; zspage 1
    (30 in use, 23% -> group 3) is put back when zs_can_compact reaches 0."""
    m = PoolModel(P612)
    hs = full_zspages(m, 3)
    free_range(m, hs, 0, 10)
    free_range(m, hs, 1, 20)
    assert m.compact() == 1
    assert m.live_zspages(0) == (1, 2)
    assert [where(m, hs[j]) for j in range(10)] == [(1, 127 - j) for j in range(10)]
    assert [where(m, hs[128 + j]) for j in range(20)] == [(1, j) for j in range(20)]
    lists = m.zspage_lists(0)
    assert lists[3] == (1,) and lists[11] == (2,)
    assert sum(map(len, lists)) == 2
    assert m.compact() == 0
    assert m.pages_compacted == 1


def test_61_compact_refills_dst_then_uses_next() -> None:
    """Four class-0 zspages A=0, B=1, C=2, D=3. Free C.120..127, then A.5..127, then B.90..127.

    List history: C -> AF [C]; A passes AF (head: 127 >= 120) then AE [A]; B passes AF then
    AE, head since 96 >= 5: AE = [B, A], AF = [C], FULL = [D]. zs_can_compact = 169 // 128 = 1.
    src = B. dst = C (AF head): B.0..B.7 -> C.127..C.120, C full, B.8 hits -ENOMEM. C goes
    back to FULL at the head (128 >= 128): [C, D]. dst = A (AE head): B.8..B.89 -> A.127 ..
    A.46. src exhausted: A (87 in use) back to AE, B freed. Then src = A, can_compact
    41 // 128 = 0: stop, put A back.
    """
    m = PoolModel(P61)
    hs = full_zspages(m, 4)
    free_range(m, hs, 2, 120)
    free_range(m, hs, 0, 5)
    free_range(m, hs, 1, 90)
    assert m.zspage_lists(0) == ((), (1, 0), (2,), (3,))
    assert m.freeable(0) == 1

    assert m.compact() == 1
    assert m.live_zspages(0) == (0, 2, 3)
    assert m.zspage_lists(0) == ((), (0,), (), (2, 3))
    b = hs[128:256]
    assert [where(m, b[j]) for j in range(8)] == [(2, 127 - j) for j in range(8)]
    assert [where(m, b[8 + k]) for k in range(82)] == [(0, 127 - k) for k in range(82)]
    assert m.zspage_inuse(0) == 87
    assert m.live_objects(0) == tuple(range(5)) + tuple(range(46, 128))
    assert m.freeable(0) == 0
    assert m.compact() == 0


def test_61_putback_inserts_second() -> None:
    """Class-0 zspages S=0, D=1, X=2. Free X.120..127, D.100..127, then S.3..127.

    X -> AF [X]; D enters AF at 127 >= 120: [D, X], then stays AF down to 100; S enters AF at
    the head, then AE: AE = [S], AF = [D, X]. zs_can_compact = 161 // 128 = 1.
    src = S, dst = D: S.0, S.1, S.2 -> D.127, D.126, D.125. dst put back with 103 in use
    into AF whose head X has 120: 103 < 120 -> *second*: AF = [X, D]. S freed (1 page).
    Next round: src = AF head X, can_compact = 33 // 128 = 0: X goes back, at the head again
    (120 >= 103). The next malloc therefore uses X, not D.
    """
    hs: list[Handle] = []

    def build(p: Policy) -> PoolModel:
        m = PoolModel(p)
        hs[:] = full_zspages(m, 3)
        free_range(m, hs, 2, 120)
        free_range(m, hs, 1, 100)
        free_range(m, hs, 0, 3)
        assert m.zspage_lists(0) == ((), (0,), (1, 2), ())
        return m

    m = build(P61)
    assert m.compact() == 1
    assert [where(m, hs[j]) for j in range(3)] == [(1, 127), (1, 126), (1, 125)]
    assert m.zspage_lists(0) == ((), (), (2, 1), ())
    assert where(m, alloc(m, 24)) == (2, 127)

    # With plain head insertion D would stay first and take the next object.
    head_only = replace(P61, name="6.1-head", insert_rule=InsertRule.HEAD)
    m2 = build(head_only)
    assert m2.compact() == 1
    assert m2.zspage_lists(0) == ((), (), (1, 2), ())
    assert where(m2, alloc(m2, 24)) == (1, 124)


def test_61_compact_with_nothing_freeable_still_reorders() -> None:
    """zs_can_compact is tested *after* the src is isolated; the src then goes back through
    insert_zspage. A=0 and B=1 in class 0: free B.90..127 (B -> AE), then A.70..127 (A enters
    AE at 96 >= 90, head): AE = [A(70), B(90)], zs_can_compact = 96 // 128 = 0. Compact
    isolates A, stops, puts A back *second* (70 < 90): AE = [B, A]."""
    m = PoolModel(P61)
    hs = full_zspages(m, 2)
    free_range(m, hs, 1, 90)
    free_range(m, hs, 0, 70)
    assert m.zspage_lists(0) == ((), (0, 1), (), ())
    assert m.freeable(0) == 0
    before = {h: m.placement(h) for h in m.live_handles()}
    assert m.compact() == 0
    assert m.pages_compacted == 0
    assert {h: m.placement(h) for h in m.live_handles()} == before
    assert m.zspage_lists(0) == ((), (1, 0), (), ())
    assert where(m, alloc(m, 24)) == (1, 127)

    control = PoolModel(P61)  # same state, no compaction: A is still the head
    hs = full_zspages(control, 2)
    free_range(control, hs, 1, 90)
    free_range(control, hs, 0, 70)
    assert where(control, alloc(control, 24)) == (0, 127)


def test_61_compact_sums_over_classes() -> None:
    """Class 190 (3072 bytes, 3 pages, 4 objects): two zspages left with one object each are
    both ALMOST_EMPTY (1 <= 3); can_compact = 6 // 4 * 3 = 3. Together with one freeable page
    in class 0 the call returns 4."""
    m = PoolModel(P61)
    big = [alloc(m, 3000) for _ in range(8)]
    for h in big[1:4] + big[5:8]:
        m.free(h)
    assert m.freeable(190) == 3
    hs = full_zspages(m, 2)
    free_range(m, hs, 0, 1)
    free_range(m, hs, 1, 1)
    assert m.freeable(0) == 1
    pages = m.total_pages()
    assert m.compact() == 4
    assert m.total_pages() == pages - 4
    assert m.pages_compacted == 4
    assert m.freeable(190) == m.freeable(0) == 0
    # AE = [1, 0] in class 190 (zspage 1 entered last, 1 >= 1): src = 1, dst = 0.
    # Its object 4 lands on zspage 0's free head, object 3 (freed last).
    assert where(m, big[4]) == (0, 3)
    assert where(m, big[0]) == (0, 0)


# ---------------------------------------------------------------------------------------
# compaction (6.12 / 7.2)


@pytest.mark.parametrize("name", ["6.12", "7.2"])
def test_ratio_compact_keeps_dst_across_sources(name: str) -> None:
    """Class-0 zspages D=0 (100 in use, 78% -> group 8), S1=1 (10, 7% -> 1), S2=2 (20, 15% ->
    2), X=3 (60, 46% -> 5). Objects kept are the low indexes; the rest freed ascending, so
    every free list head is 127. zs_can_compact = 322 // 128 = 2.

    1. dst = D (fullest group), src = S1 (emptiest): S1.j -> D.(127 - j), S1 freed. D is not
       full (110), so it is kept. can_compact = 194 // 128 = 1.
    2. src = S2 (group 2): S2.0..S2.17 -> D.117..D.100, D full: stop. S2 (2 left, group 1) is
       put back; D goes to group 11 and is dropped. can_compact still 1.
    3. dst = X (group 5), src = S2: S2.18, S2.19 -> X.127, X.126; S2 freed. can_compact =
       66 // 128 = 0: loop ends, X (62, 48% -> group 5) is put back.
    """
    m = PoolModel(policy(name))
    hs = full_zspages(m, 4)
    free_range(m, hs, 0, 100)
    free_range(m, hs, 1, 10)
    free_range(m, hs, 2, 20)
    free_range(m, hs, 3, 60)
    lists = m.zspage_lists(0)
    assert (lists[8], lists[1], lists[2], lists[5]) == ((0,), (1,), (2,), (3,))
    assert m.freeable(0) == 2

    assert m.compact() == 2
    assert m.pages_compacted == 2
    assert m.live_zspages(0) == (0, 3)
    s1, s2 = hs[128:138], hs[256:276]
    assert [where(m, h) for h in s1] == [(0, 127 - j) for j in range(10)]
    assert [where(m, h) for h in s2[:18]] == [(0, 117 - j) for j in range(18)]
    assert [where(m, h) for h in s2[18:]] == [(3, 127), (3, 126)]
    lists = m.zspage_lists(0)
    assert lists[11] == (0,) and lists[5] == (3,)
    assert sum(map(len, lists)) == 2
    assert m.zspage_inuse(3) == 62
    assert m.freeable(0) == 0
    assert m.total_pages() == 2
    assert m.compact() == 0
    assert m.pages_compacted == 2


def test_612_dst_is_head_of_fullest_group_src_head_of_emptiest() -> None:
    """Three class-0 zspages all in group 1 (1, 2, 3 objects in use, 0% -> group 1). Freed in
    the order 0, 1, 2, so each entered group 1 at the head: [2, 1, 0]. There is no fuller
    group, so dst = head = zspage 2, then src = new head = zspage 1, then zspage 0."""
    m = PoolModel(P612)
    hs = full_zspages(m, 3)
    free_range(m, hs, 0, 1)
    free_range(m, hs, 1, 2)
    free_range(m, hs, 2, 3)
    assert m.zspage_lists(0)[1] == (2, 1, 0)
    assert m.compact() == 2
    assert m.live_zspages(0) == (2,)
    # zspage 2's free head is 127: first zspage 1's objects 0, 1, then zspage 0's object 0.
    assert [where(m, hs[i]) for i in (128, 129, 0)] == [(2, 127), (2, 126), (2, 125)]
    assert m.zspage_lists(0)[1] == (2,)


def test_2013_has_no_compaction() -> None:
    m = PoolModel(P2013)
    hs = [alloc(m, 32) for _ in range(256)]  # 2013: no header, so 32 bytes is class 0
    for h in hs[1:128] + hs[129:]:
        m.free(h)
    assert m.freeable(0) == 1
    assert m.compact() == 0
    assert m.pages_compacted == 0
    assert m.live_zspages(0) == (0, 1)


# ---------------------------------------------------------------------------------------
# slots and spanning


def test_61_spanning_objects_class_48() -> None:
    """6.1 class 1: 48 bytes, 3 pages, 256 objects. 4096 = 85 * 48 + 16, so object 85 starts
    at 4080 and crosses into page 1, whose first object (86) starts at 32. Page 1 holds
    32 + 48k; k = 84 (object 170) starts at 4064 and crosses. Page 2 starts at 16 and its
    last object (255) ends exactly at 4096."""
    m = PoolModel(P61)
    hs = [alloc(m, 40) for _ in range(256)]
    assert {m.placement(h).class_index for h in hs} == {1}
    assert [i for i, h in enumerate(hs) if m.spans(h)] == [85, 170]
    assert m.slot(hs[0]) == (0, 48)
    assert m.slot(hs[85]) == (4080, 48)
    assert m.slot(hs[86]) == (32, 48)
    assert m.slot(hs[170]) == (4064, 48)
    assert m.slot(hs[171]) == (16, 48)
    assert m.slot(hs[255]) == (4048, 48)


def test_612_spanning_in_eight_page_class() -> None:
    """6.12 class 225: 3632 bytes, 8 pages, 9 objects. Offsets 3632 j mod 4096 are
    0, 3632, 3168, 2704, 2240, 1776, 1312, 848, 384; a slot spans when offset > 464."""
    m = PoolModel(P612)
    hs = [alloc(m, 3624) for _ in range(9)]
    assert {m.placement(h).class_index for h in hs} == {225}
    assert [m.slot(h)[0] for h in hs] == [0, 3632, 3168, 2704, 2240, 1776, 1312, 848, 384]
    assert [m.spans(h) for h in hs] == [False] + [True] * 7 + [False]


def test_huge_never_spans() -> None:
    for name in known_policies():
        m = PoolModel(policy(name))
        h = alloc(m, 4096)
        assert m.slot(h) == (0, 4096)
        assert not m.spans(h)


def test_slot_follows_compaction() -> None:
    m = PoolModel(P61)
    hs = [alloc(m, 40) for _ in range(512)]  # two full class-1 zspages
    for h in hs[1:256]:
        m.free(h)  # zspage 0 keeps object 0
    for h in hs[256:341] + hs[342:512]:
        m.free(h)  # zspage 1 keeps object 85, the spanning one
    mover = hs[341]
    assert m.spans(mover)
    # AE: zspage 0 entered first, zspage 1 later at the head (192 >= 1): src = zspage 1.
    # Object 85 goes to zspage 0's free head, 255 (freed last): offset 4048, no span.
    assert m.compact() == 3
    assert m.placement(mover) == Placement(1, 0, 255)
    assert m.slot(mover) == (4048, 48)
    assert not m.spans(mover)


# ---------------------------------------------------------------------------------------
# the 2013 PATCHv5 design


def test_2013_table() -> None:
    table = class_table(P2013)
    assert len(table) == 255
    assert [c.index for c in table] == list(range(255))
    assert [c.size for c in table] == [32 + 16 * i for i in range(255)]
    merged61 = rows(P61)
    for c in table:  # same usedpc chains as 6.1, wherever 6.1 kept the class
        if c.index in merged61:
            assert (c.size, c.pages_per_zspage, c.objs_per_zspage) == merged61[c.index]
        assert c.pages_per_zspage == P61.pages_per_zspage(c.size)
    assert table[203] == SizeClass(203, 3280, 1, 1)  # not merged into 254
    assert huge_class_size(P2013) == 3265  # no header: 3264 + 1
    assert P2013.handle_size == 0 and not P2013.merge_classes


def test_2013_fullness_quarter_threshold_and_unlisted_full() -> None:
    m = PoolModel(P2013)
    hs = [alloc(m, 20) for _ in range(32)]
    assert m.zspage_lists(0) == ((), (0,), (), ())  # 32 <= 128 // 4 -> ALMOST_EMPTY
    hs.append(alloc(m, 20))
    assert m.zspage_lists(0) == ((), (), (0,), ())  # 33 -> ALMOST_FULL (6.1 would wait: 97)
    assert row(m, 0) == ClassStats(0, 32, 1, 0, 128, 33, 1, 1, 0)
    hs += [alloc(m, 20) for _ in range(95)]
    assert m.zspage_lists(0) == ((), (), (), ())  # FULL zspages sit on no list
    assert m.zspage_group(0) == 3
    extra = alloc(m, 20)
    assert where(m, extra) == (1, 0)
    assert m.zspage_lists(0) == ((), (1,), (), ())  # new zspage placed after its first object
    m.free(hs[7])
    assert m.zspage_lists(0) == ((), (1,), (0,), ())
    assert where(m, alloc(m, 20)) == (0, 7)  # ALMOST_FULL head before ALMOST_EMPTY head
    second = alloc(m, 20)
    assert where(m, second) == (1, 1)
    m.free(extra)
    assert m.live_zspages(0) == (0, 1)
    m.free(second)  # zspage 1 empties and is freed at once
    assert m.live_zspages(0) == (0,)
    assert m.total_pages() == 1
    assert row(m, 0).inuse_ratio is None


def test_2013_head_insertion_and_find_order() -> None:
    """Two class-0 zspages: A=0 left with 40 objects (ALMOST_FULL in 2013, ALMOST_EMPTY in
    6.1), B=1 with 20 (ALMOST_EMPTY in both). 2013 takes A; 6.1 takes the AE head B."""

    def run(p: Policy) -> tuple[int, int]:
        m = PoolModel(p)
        hs = [alloc(m, 24) for _ in range(256)]
        free_range(m, hs, 0, 40)
        free_range(m, hs, 1, 20)
        return where(m, alloc(m, 24))

    assert run(P2013) == (0, 127)
    assert run(P61) == (1, 127)
    m = PoolModel(P2013)
    hs = [alloc(m, 24) for _ in range(384)]
    for z in (0, 1, 2):  # each passes through ALMOST_FULL to ALMOST_EMPTY, inserted at head
        free_range(m, hs, z, 30 - z)
    assert m.zspage_lists(0) == ((), (2, 1, 0), (), ())


# ---------------------------------------------------------------------------------------
# random sequences


# Sizes hitting classes with few objects (190, 202, 254) so zspages fill and empty often.
SIZES = [0, 1, 24, 40, 3000, 3256, 4000, 4096, 4097]

ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("alloc"),
            st.one_of(st.sampled_from(SIZES), st.integers(0, 4200)),
        ),
        st.tuples(st.just("free"), st.integers(0, 10_000)),
        st.tuples(st.just("compact"), st.just(0)),
    ),
    max_size=400,
)


def check_invariants(m: PoolModel, live: list[Handle]) -> None:
    p = m.policy
    stats = m.class_stats()
    assert sum(s.pages_used for s in stats) == m.total_pages()
    assert set(m.live_handles()) == set(live)
    places = {h: m.placement(h) for h in live}
    assert len(set(places.values())) == len(live)
    pages = 0
    for s in stats:
        cls = next(c for c in m.classes if c.index == s.index)
        opz, ppz = cls.objs_per_zspage, cls.pages_per_zspage
        mine = [pl for pl in places.values() if pl.class_index == s.index]
        assert s.obj_used == len(mine)
        serials = m.live_zspages(s.index)
        assert s.obj_allocated == len(serials) * opz
        pages += len(serials) * ppz
        lists = m.zspage_lists(s.index)
        listed = [z for lst in lists for z in lst]
        assert len(listed) == len(set(listed))
        assert lists[p.fullness.empty_group] == ()
        for z in serials:
            inuse = m.zspage_inuse(z)
            assert 1 <= inuse <= opz
            g = p.fullness.group(inuse, opz)
            assert m.zspage_group(z) == g
            assert (z in lists[g]) == p.fullness.has_list(g)
            assert m.live_objects(z) == tuple(sorted(pl.obj_index for pl in mine if pl.zspage == z))
            assert len(m.zspage_free_list(z)) == opz - inuse
        assert set(listed) <= set(serials)
        if p.fullness is not FullnessScheme.INUSE_RATIO:
            assert (s.almost_empty, s.almost_full) == (len(lists[1]), len(lists[2]))
        free_objs = s.obj_allocated - s.obj_used
        assert s.freeable == free_objs // opz * ppz
        assert s.freeable < len(serials) * ppz or not serials
    assert pages == m.total_pages()
    for h in live:
        off, size = m.slot(h)
        assert size == m.classes[[c.index for c in m.classes].index(places[h].class_index)].size
        assert m.spans(h) == (off + size > 4096)


@pytest.mark.parametrize("name", ["6.1", "6.12", "2013"])
@settings(max_examples=60, deadline=None)
@given(seq=ops)
def test_random_sequences(name: str, seq: list[tuple[str, int]]) -> None:
    p = policy(name)
    m = PoolModel(p)
    live: list[Handle] = []
    compacted = 0
    for op, arg in seq:
        if op == "alloc":
            r = m.alloc(arg)
            if arg == 0:
                assert r == -22
            elif arg > 4096:
                assert r == (-28 if name == "6.12" else -22)
            else:
                assert isinstance(r, Handle)
                assert m.placement(r).class_index == m.class_of(arg).index
                live.append(r)
        elif op == "free":
            if live:
                m.free(live.pop(arg % len(live)))
        else:
            before_pages = m.total_pages()
            before_cls = {h: m.placement(h).class_index for h in live}
            freeable = sum(s.freeable for s in m.class_stats())
            got = m.compact()
            compacted += got
            assert m.pages_compacted == compacted
            assert m.total_pages() == before_pages - got
            assert {h: m.placement(h).class_index for h in live} == before_cls
            if p.compaction is CompactionRule.NONE:
                assert got == 0
            else:
                # Single-threaded, both loops run until zs_can_compact is 0 everywhere, and
                # they free at least what was freeable (whole zspages only).
                assert all(s.freeable == 0 for s in m.class_stats())
                assert got >= freeable
                after = {h: m.placement(h) for h in live}
                assert m.compact() == 0
                assert {h: m.placement(h) for h in live} == after
        check_invariants(m, live)
    for h in live:
        m.free(h)
    assert m.total_pages() == 0
    assert all(s.obj_allocated == 0 for s in m.class_stats())
