"""Tests for the zsmalloc reference model (pyharness.model).

Expected numbers come from the rules in /work/shared/reference/zsmalloc-upstream.md and from
hand computation of the usedpc / min-waste rules, not from the model itself.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyharness.model import (
    ChainRule,
    ClassStats,
    FullnessScheme,
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
    assert known_policies() == ("6.1", "6.12", "7.2")
    with pytest.raises(ValueError, match=r"known: 6\.1, 6\.12, 7\.2"):
        policy("5.10")
    with pytest.raises(ValueError):
        policy("6.12", chain_size=17)
    with pytest.raises(ValueError):
        policy("6.1", chain_size=8)
    with pytest.raises(ValueError):
        Policy("bad", 4, ChainRule.USEDPC, FullnessScheme.QUARTERS, InsertRule.HEAD, (3,), 0, 0)


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


def test_alloc_errors() -> None:
    m = PoolModel(P61)
    assert m.alloc(0) == -22
    assert m.alloc(4097) == -22
    assert m.total_pages() == 0
    assert isinstance(m.alloc(4096), Placement)
    m2 = PoolModel(P612)
    assert m2.alloc(0) == -22
    assert m2.alloc(4097) == -28


# ---------------------------------------------------------------------------------------
# behaviour (6.1)


def alloc(m: PoolModel, size: int) -> Placement:
    r = m.alloc(size)
    assert isinstance(r, Placement)
    return r


def row(m: PoolModel, index: int) -> ClassStats:
    (r,) = [s for s in m.class_stats() if s.index == index]
    return r


def test_fullness_transitions_class0() -> None:
    m = PoolModel(P61)
    got = [alloc(m, 16) for _ in range(96)]
    assert [g.obj_index for g in got] == list(range(96))
    assert {g.zspage for g in got} == {0}
    assert row(m, 0) == ClassStats(0, 32, 0, 1, 128, 96, 1, 1, 0)
    alloc(m, 16)  # 97 > 3*128//4 -> ALMOST_FULL
    assert row(m, 0) == ClassStats(0, 32, 1, 0, 128, 97, 1, 1, 0)
    for _ in range(31):
        alloc(m, 16)
    assert row(m, 0) == ClassStats(0, 32, 0, 0, 128, 128, 1, 1, 0)
    assert m.zspage_lists(0) == ((), (), (), (0,))
    nxt = alloc(m, 1)
    assert nxt == Placement(0, 1, 0)
    assert m.total_pages() == 2
    assert row(m, 0) == ClassStats(0, 32, 0, 1, 256, 129, 2, 1, 0)  # 127 free < 128


def two_full_zspages(m: PoolModel) -> list[Placement]:
    objs = [alloc(m, 24) for _ in range(256)]
    assert m.zspage_lists(0) == ((), (), (), (1, 0))
    return objs


def test_list_head_order_and_unchanged_group_keeps_position() -> None:
    m = PoolModel(P61)
    objs = two_full_zspages(m)
    m.free(objs[10])  # zspage 0 -> ALMOST_FULL
    assert m.zspage_lists(0) == ((), (), (0,), (1,))
    m.free(objs[128 + 20])  # zspage 1 -> ALMOST_FULL, becomes head
    assert m.zspage_lists(0) == ((), (), (1, 0), ())
    m.free(objs[11])  # zspage 0 stays ALMOST_FULL: no move
    assert m.zspage_lists(0) == ((), (), (1, 0), ())
    assert m.alloc(24) == Placement(0, 1, 20)
    assert m.zspage_lists(0) == ((), (), (0,), (1,))
    # LIFO: 11 was pushed after 10
    assert m.alloc(24) == Placement(0, 0, 11)
    assert m.alloc(24) == Placement(0, 0, 10)
    assert m.zspage_lists(0) == ((), (), (), (0, 1))


def test_find_prefers_almost_full_over_almost_empty() -> None:
    m = PoolModel(P61)
    objs = two_full_zspages(m)
    m.free(objs[5])  # zspage 0: 127 in use, ALMOST_FULL
    for o in objs[128:168]:  # zspage 1: 88 in use, ALMOST_EMPTY (moved last)
        m.free(o)
    assert m.zspage_lists(0) == ((), (1,), (0,), ())
    assert m.alloc(24) == Placement(0, 0, 5)
    assert m.alloc(24) == Placement(0, 1, 39)


def test_insert_second_rule() -> None:
    rule = InsertRule.SECOND_IF_LESS_USED
    assert insert_position(rule, None, 3) == 0
    assert insert_position(rule, 5, 3) == 1
    assert insert_position(rule, 5, 5) == 0
    assert insert_position(rule, 5, 7) == 0
    assert insert_position(InsertRule.HEAD, 5, 3) == 0
    assert P61.insert_rule is rule
    assert P612.insert_rule is InsertRule.HEAD


def test_free_is_lifo() -> None:
    m = PoolModel(P61)
    objs = [alloc(m, 8) for _ in range(10)]
    m.free(objs[5])
    m.free(objs[7])
    assert m.zspage_free_list(0)[:3] == (7, 5, 10)
    assert [alloc(m, 8).obj_index for _ in range(3)] == [7, 5, 10]


def test_emptied_zspage_freed_immediately() -> None:
    m = PoolModel(P61)
    a = alloc(m, 1)
    assert a == Placement(0, 0, 0)
    assert m.total_pages() == 1
    m.free(a)
    assert m.total_pages() == 0
    assert row(m, 0) == ClassStats(0, 32, 0, 0, 0, 0, 0, 1, 0)
    assert m.zspage_lists(0) == ((), (), (), ())
    assert m.alloc(1) == Placement(0, 1, 0)  # serials never reused


def test_huge_and_multipage_classes() -> None:
    m = PoolModel(P61)
    h = alloc(m, 4000)
    assert h == Placement(254, 0, 0)
    assert row(m, 254) == ClassStats(254, 4096, 0, 0, 1, 1, 1, 1, 0)
    big = alloc(m, 3000)  # 3008 -> index 186 -> class 190 (3072, 3 pages, 4 objects)
    assert big == Placement(190, 1, 0)
    assert m.total_pages() == 4
    assert row(m, 190) == ClassStats(190, 3072, 0, 1, 4, 1, 3, 3, 0)
    m.free(h)
    assert m.total_pages() == 3
    m.free(big)
    assert m.total_pages() == 0


def test_freeable_and_stats_row() -> None:
    m = PoolModel(P61)
    objs = two_full_zspages(m)
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
        m.free(Placement(0, 99, 0))
    with pytest.raises(ValueError):
        m.free(Placement(2, b.zspage, b.obj_index))
    m.free(b)


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
    def run(p: Policy) -> Placement:
        m = PoolModel(p)
        objs = [alloc(m, 24) for _ in range(256)]
        for o in objs[128 : 128 + 38]:  # zspage 1 -> 90 in use first
            m.free(o)
        for o in objs[:108]:  # then zspage 0 -> 20 in use
            m.free(o)
        return alloc(m, 24)

    # 6.1: both ALMOST_EMPTY; zspage 0 moved last so it is head.
    assert run(P61) == Placement(0, 0, 107)
    # 6.12: zspage 1 (70% group) beats zspage 0 (20% group).
    assert run(P612) == Placement(0, 1, 37)  # last object freed there


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
    ),
    max_size=400,
)


def check_invariants(m: PoolModel, live: list[Placement]) -> None:
    p = m.policy
    stats = m.class_stats()
    assert sum(s.pages_used for s in stats) == m.total_pages()
    assert len(set(live)) == len(live)
    pages = 0
    for s in stats:
        cls = next(c for c in m.classes if c.index == s.index)
        opz, ppz = cls.objs_per_zspage, cls.pages_per_zspage
        mine = [pl for pl in live if pl.class_index == s.index]
        assert s.obj_used == len(mine)
        serials = m.live_zspages(s.index)
        assert s.obj_allocated == len(serials) * opz
        pages += len(serials) * ppz
        lists = m.zspage_lists(s.index)
        listed = [z for lst in lists for z in lst]
        assert sorted(listed) == list(serials)
        assert lists[p.fullness.empty_group] == ()
        for g, lst in enumerate(lists):
            for z in lst:
                inuse = m.zspage_inuse(z)
                assert 1 <= inuse <= opz
                assert p.fullness.group(inuse, opz) == g
                assert m.live_objects(z) == tuple(
                    sorted(pl.obj_index for pl in mine if pl.zspage == z)
                )
                assert len(m.zspage_free_list(z)) == opz - inuse
        if p.fullness is FullnessScheme.QUARTERS:
            assert (s.almost_empty, s.almost_full) == (len(lists[1]), len(lists[2]))
        free_objs = s.obj_allocated - s.obj_used
        assert s.freeable == free_objs // opz * ppz
        assert s.freeable < len(serials) * ppz or not serials
    assert pages == m.total_pages()


@pytest.mark.parametrize("name", ["6.1", "6.12"])
@settings(max_examples=60, deadline=None)
@given(seq=ops)
def test_random_sequences(name: str, seq: list[tuple[str, int]]) -> None:
    m = PoolModel(policy(name))
    live: list[Placement] = []
    for op, arg in seq:
        if op == "alloc":
            r = m.alloc(arg)
            if arg == 0:
                assert r == -22
            elif arg > 4096:
                assert r == (-22 if name == "6.1" else -28)
            else:
                assert isinstance(r, Placement)
                assert r.class_index == m.class_of(arg).index
                live.append(r)
        elif live:
            m.free(live.pop(arg % len(live)))
        check_invariants(m, live)
    for pl in live:
        m.free(pl)
    assert m.total_pages() == 0
    assert all(s.obj_allocated == 0 for s in m.class_stats())
