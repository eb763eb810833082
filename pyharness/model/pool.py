"""Reference model of upstream zsmalloc, used to predict what a real kernel pool reports.

What is modelled
================

A zsmalloc pool is an array of 255 *size classes* (sizes 32, 48, ... 4096 in steps of 16).
Adjacent classes with the same geometry are merged: when the table is built from index 254
down to 0, an index whose (pages per zspage, objects per zspage) equals the nearest larger
distinct class's simply aliases that class, so a lookup can land in a larger class. (The 2013
design does not merge and has no in-object handle header.)

Every distinct class owns a set of *zspages*. A zspage is a chain of ``ppz`` order-0 pages cut
into ``opz`` equal slots; slot ``j`` sits at byte ``j * size`` of the chain, so it may cross a
page boundary. Free slots form a singly-linked LIFO list, initialised 0, 1, ..., opz-1 in
address order: malloc pops the head and free pushes onto it. That ordering decides which
object index (and hence which address) each allocation gets.

Each zspage sits on exactly one *fullness list* of its class. The group is a function of
``inuse`` (6.1: EMPTY / ALMOST_EMPTY / ALMOST_FULL / FULL with a 3/4 threshold; 2013: the same
groups with a 1/4 threshold and lists only for the two ALMOST groups; 6.12+: twelve 10%-ratio
groups). Lists are ordered: an allocation takes the head of the first non-empty list in a
version-specific search order, and a zspage is only moved (unlinked and re-inserted) when its
group changes, so list positions are observable through which zspage the next malloc uses.
A zspage is created when no list yields one and freed the moment its last object is freed.

Callers hold stable :class:`Handle` objects, never placements: compaction moves objects
between zspages of a class and rewrites where each handle points (the kernel's handle is an
indirection slot for exactly this reason). ``PoolModel.compact`` follows ``zs_compact`` for a
single-threaded caller, so the lock-contention exits never fire.

Everything version-specific lives in a frozen ``Policy``; ``PoolModel`` only follows it.
The rules come from /work/shared/reference/zsmalloc-upstream.md (sections 3 and 5), checked
against the 6.1 and 6.12 ``mm/zsmalloc.c``. Only a single-threaded sequence on one pool is
modelled; the model has unlimited memory, so it never returns -ENOMEM, and there is no page
migration or deferred (async) zspage free.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .policy import (
    QUARTER_ALMOST_EMPTY,
    QUARTER_ALMOST_FULL,
    QUARTER_EMPTY,
    CompactionRule,
    FullnessScheme,
    InsertRule,
    Policy,
    SizeClass,
    build_table,
)


@dataclass(frozen=True)
class ClassStats:
    """One row of the debugfs ``classes`` file.

    For 6.1 (and the 2013 design, which has no debugfs but uses this shape)
    ``almost_full``/``almost_empty`` count zspages in those groups. Ratio policies (6.12+)
    print eleven group columns (10% .. 99%, 100%) instead: those go in ``inuse_ratio`` and the
    two 6.1 columns are 0. ``inuse_ratio`` is None for the quarter schemes.
    """

    index: int
    size: int
    almost_full: int
    almost_empty: int
    obj_allocated: int
    obj_used: int
    pages_used: int
    pages_per_zspage: int
    freeable: int
    inuse_ratio: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Handle:
    """What zs_malloc hands out: stable across compaction, never reused within a pool."""

    serial: int


@dataclass(frozen=True)
class Placement:
    """Where a handle's object currently sits."""

    class_index: int
    zspage: int  # model serial number: increasing, never reused
    obj_index: int  # zspage-global slot index; byte offset is obj_index * class size


@dataclass(eq=False)
class _ZsPage:
    serial: int
    cls: SizeClass
    # LIFO free list; the *last* element is the head (next object handed out). The partial
    # tail slot init_zspage also links (below every real slot) is never reachable, so omitted.
    free_stack: list[int]
    objs: dict[int, Handle] = field(default_factory=dict)  # obj index -> handle stored there
    # Group the zspage is filed under; None before its first insert and while isolated.
    group: int | None = None

    @property
    def inuse(self) -> int:
        return self.cls.objs_per_zspage - len(self.free_stack)

    @property
    def full(self) -> bool:
        return not self.free_stack


@dataclass
class _ClassState:
    cls: SizeClass
    # One ordered list per fullness group, head at position 0.
    lists: list[list[_ZsPage]]
    obj_allocated: int = 0
    obj_used: int = 0
    zspages: dict[int, _ZsPage] = field(default_factory=dict)  # live zspages by serial


def insert_position(rule: InsertRule, head_inuse: int | None, inuse: int) -> int:
    """Position (0 = head, 1 = second) at which ``insert_zspage`` links a zspage.

    ``head_inuse`` is the current head's inuse, or None for an empty list. Through malloc and
    free alone the 6.1 second-position case cannot arise (a zspage only moves down into a group
    at that group's highest inuse, and only moves up into an empty list or into FULL); the
    putbacks of compaction are what make it observable.
    """
    if rule is InsertRule.SECOND_IF_LESS_USED and head_inuse is not None and inuse < head_inuse:
        return 1
    return 0


# isolate_zspage search orders of 6.1; dst-first takes the non-empty, non-full groups.
_SRC_61 = (QUARTER_ALMOST_EMPTY, QUARTER_ALMOST_FULL)
_DST_61 = (QUARTER_ALMOST_FULL, QUARTER_ALMOST_EMPTY)


class PoolModel:
    """One zs_pool driven by a single thread of zs_malloc / zs_free / zs_compact calls."""

    def __init__(self, p: Policy) -> None:
        self.policy = p
        distinct, lookup, huge = build_table(p)
        self._classes = distinct
        self._lookup = lookup
        self._huge_class_size = huge
        groups = p.fullness.groups
        self._state: dict[int, _ClassState] = {
            c.index: _ClassState(cls=c, lists=[[] for _ in range(groups)]) for c in distinct
        }
        self._zspages: dict[int, _ZsPage] = {}
        self._handles: dict[int, tuple[_ZsPage, int]] = {}  # handle serial -> (zspage, obj)
        self._next_serial = 0
        self._next_handle = 0
        self._pages_allocated = 0
        self._pages_compacted = 0

    # ---- lookups -------------------------------------------------------------------------

    @property
    def classes(self) -> list[SizeClass]:
        """Distinct classes, ascending index."""
        return list(self._classes)

    def huge_class_size(self) -> int:
        return self._huge_class_size

    def class_of(self, size: int) -> SizeClass:
        """The merged class a user ``size`` maps to (header added, index clamped as in C)."""
        if size < 0:
            raise ValueError(f"size cannot be negative: {size}")
        p = self.policy
        s = size + p.handle_size
        idx = 0 if s <= p.min_alloc_size else -(-(s - p.min_alloc_size) // p.class_delta)
        return self._lookup[min(idx, p.num_indexes - 1)]

    def lookup_class_index(self, size: int) -> int:
        """zs_lookup_class_index (6.12+): index of the merged class holding ``size`` bytes,
        for the object sizes (at most PAGE_SIZE) its callers ask about."""
        p = self.policy
        s = size + p.handle_size
        idx = 0 if s <= p.min_alloc_size else -(-(s - p.min_alloc_size) // p.class_delta)
        return self._lookup[min(idx, p.num_indexes - 1)].index

    # ---- malloc / free -------------------------------------------------------------------

    def alloc(self, size: int) -> int | Handle:
        """zs_malloc: a new Handle, or the (negative errno) value the kernel returns."""
        err = self.policy.alloc_error(size)
        if err is not None:
            return err
        cls = self.class_of(size)
        st = self._state[cls.index]
        zs = self._find(st)
        if zs is None:
            zs = self._new_zspage(st)
        h = Handle(self._next_handle)
        self._next_handle += 1
        obj = zs.free_stack.pop()
        zs.objs[obj] = h
        self._handles[h.serial] = (zs, obj)
        st.obj_used += 1
        self._fix_fullness(st, zs)
        return h

    def free(self, h: Handle) -> None:
        """zs_free: push the slot back (LIFO); release the zspage at once when it empties."""
        zs, obj = self._where(h)
        del self._handles[h.serial]
        del zs.objs[obj]
        zs.free_stack.append(obj)
        st = self._state[zs.cls.index]
        st.obj_used -= 1
        if zs.inuse == 0:
            self._free_zspage(st, zs)
        else:
            self._fix_fullness(st, zs)

    def placement(self, h: Handle) -> Placement:
        """Where ``h``'s object sits now (changes only through compaction)."""
        zs, obj = self._where(h)
        return Placement(class_index=zs.cls.index, zspage=zs.serial, obj_index=obj)

    def slot(self, h: Handle) -> tuple[int, int]:
        """(offset of the slot within the page it starts in, class size)."""
        zs, obj = self._where(h)
        return obj * zs.cls.size % self.policy.page_size, zs.cls.size

    def spans(self, h: Handle) -> bool:
        """Whether the slot crosses a page boundary (zs_map_object then uses the copy buffer)."""
        zs, _ = self._where(h)
        if zs.cls.huge:
            return False
        off, size = self.slot(h)
        return off + size > self.policy.page_size

    def mapped(self, h: Handle) -> tuple[int, int, int] | None:
        """Where a read mapping of a slot that lies in one page points: (zspage, page of
        its chain, offset in that page, past the handle header of a non-huge class); None
        for a spanning slot, mapped through a copy."""
        if self.spans(h):
            return None
        zs, obj = self._where(h)
        start = obj * zs.cls.size
        header = 0 if zs.cls.huge else self.policy.handle_size
        page = self.policy.page_size
        return zs.serial, start // page, start % page + header

    def has_zspage(self, serial: int) -> bool:
        return serial in self._zspages

    def is_live(self, h: Handle) -> bool:
        return h.serial in self._handles

    def live_handles(self) -> tuple[Handle, ...]:
        """Every live handle, in allocation order."""
        return tuple(Handle(s) for s in self._handles)

    # ---- compaction ----------------------------------------------------------------------

    def compact(self) -> int:
        """zs_compact: compact every distinct class from index 254 down; pages freed."""
        rule = self.policy.compaction
        if rule is CompactionRule.NONE:
            return 0
        run = (
            self._compact_src_first if rule is CompactionRule.SRC_FIRST else self._compact_dst_first
        )
        freed = sum(run(self._state[c.index]) for c in reversed(self._classes))
        self._pages_compacted += freed
        return freed

    @property
    def pages_compacted(self) -> int:
        """zs_pool_stats' pages_compacted: total pages freed by compaction so far."""
        return self._pages_compacted

    # ---- statistics ----------------------------------------------------------------------

    def total_pages(self) -> int:
        """zs_get_total_pages: pages in all live zspages."""
        return self._pages_allocated

    def freeable(self, class_index: int) -> int:
        """zs_can_compact: pages compaction could release in this class."""
        return self._can_compact(self._state[class_index])

    def class_stats(self) -> list[ClassStats]:
        """Rows of debugfs ``classes``: one per distinct class, ascending, zeros included."""
        rows: list[ClassStats] = []
        scheme = self.policy.stats_fullness or self.policy.fullness
        ratio = scheme is FullnessScheme.INUSE_RATIO
        for c in self._classes:
            st = self._state[c.index]
            # Between calls every zspage is on the list of its group (2013: AE/AF only).
            counts = [0] * scheme.groups
            for zs in st.zspages.values():
                counts[scheme.group(zs.inuse, c.objs_per_zspage)] += 1
            rows.append(
                ClassStats(
                    index=c.index,
                    size=c.size,
                    almost_full=0 if ratio else counts[QUARTER_ALMOST_FULL],
                    almost_empty=0 if ratio else counts[QUARTER_ALMOST_EMPTY],
                    obj_allocated=st.obj_allocated,
                    obj_used=st.obj_used,
                    pages_used=st.obj_allocated // c.objs_per_zspage * c.pages_per_zspage,
                    pages_per_zspage=c.pages_per_zspage,
                    freeable=self._can_compact(st),
                    inuse_ratio=tuple(counts[1:]) if ratio else None,
                )
            )
        return rows

    # ---- introspection (for tests and compaction checks) ---------------------------------

    def zspage_lists(self, class_index: int) -> tuple[tuple[int, ...], ...]:
        """Serials on each fullness list of a class, indexed by group, head first.

        Under the 2013 scheme the EMPTY and FULL entries are always empty (no such lists).
        """
        st = self._state[class_index]
        return tuple(tuple(z.serial for z in lst) for lst in st.lists)

    def zspage_inuse(self, serial: int) -> int:
        return self._zspage(serial).inuse

    def zspage_group(self, serial: int) -> int:
        """Fullness group of a live zspage (also for 2013 FULL zspages, which are unlisted)."""
        g = self._zspage(serial).group
        assert g is not None
        return g

    def zspage_free_list(self, serial: int) -> tuple[int, ...]:
        """Free object indexes of a live zspage, head (next handed out) first."""
        return tuple(reversed(self._zspage(serial).free_stack))

    def live_objects(self, serial: int) -> tuple[int, ...]:
        """Allocated object indexes of a live zspage, in address order."""
        return tuple(sorted(self._zspage(serial).objs))

    def zspage_handles(self, serial: int) -> tuple[tuple[int, Handle], ...]:
        """(object index, handle) pairs of a live zspage, in address order."""
        return tuple(sorted(self._zspage(serial).objs.items()))

    def live_zspages(self, class_index: int) -> tuple[int, ...]:
        """Serials of the class's live zspages, ascending."""
        return tuple(sorted(self._state[class_index].zspages))

    # ---- internals -----------------------------------------------------------------------

    def _where(self, h: Handle) -> tuple[_ZsPage, int]:
        got = self._handles.get(h.serial) if isinstance(h, Handle) else None
        if got is None:
            raise ValueError(f"not a live handle: {h!r}")
        return got

    def _zspage(self, serial: int) -> _ZsPage:
        zs = self._zspages.get(serial)
        if zs is None:
            raise ValueError(f"no live zspage {serial}")
        return zs

    def _can_compact(self, st: _ClassState) -> int:
        c = st.cls
        if st.obj_allocated <= st.obj_used:
            return 0
        return (st.obj_allocated - st.obj_used) // c.objs_per_zspage * c.pages_per_zspage

    def _find(self, st: _ClassState) -> _ZsPage | None:
        """find_get_zspage: head of the first non-empty list in the policy's order."""
        for g in self.policy.find_order:
            if st.lists[g]:
                return st.lists[g][0]
        return None

    def _new_zspage(self, st: _ClassState) -> _ZsPage:
        c = st.cls
        # Free list 0 -> 1 -> ... in address order; stored reversed so pop() yields the head.
        zs = _ZsPage(
            serial=self._next_serial,
            cls=c,
            free_stack=list(range(c.objs_per_zspage - 1, -1, -1)),
        )
        self._next_serial += 1
        self._zspages[zs.serial] = zs
        st.zspages[zs.serial] = zs
        st.obj_allocated += c.objs_per_zspage
        self._pages_allocated += c.pages_per_zspage
        return zs

    def _group(self, zs: _ZsPage) -> int:
        return self.policy.fullness.group(zs.inuse, zs.cls.objs_per_zspage)

    def _link(self, st: _ClassState, zs: _ZsPage, group: int) -> None:
        """insert_zspage into ``group``'s list (if the scheme keeps one)."""
        if self.policy.fullness.has_list(group):
            lst = st.lists[group]
            head_inuse = lst[0].inuse if lst else None
            lst.insert(insert_position(self.policy.insert_rule, head_inuse, zs.inuse), zs)
        zs.group = group

    def _unlink(self, st: _ClassState, zs: _ZsPage) -> None:
        """remove_zspage: the rest of the list keeps its order."""
        if zs.group is not None and self.policy.fullness.has_list(zs.group):
            st.lists[zs.group].remove(zs)
        zs.group = None

    def _fix_fullness(self, st: _ClassState, zs: _ZsPage) -> None:
        """Move a zspage only if its group changed; otherwise its list position is kept."""
        new = self._group(zs)
        if new == zs.group:
            return
        self._unlink(st, zs)
        self._link(st, zs, new)

    def _free_zspage(self, st: _ClassState, zs: _ZsPage) -> None:
        self._unlink(st, zs)
        del self._zspages[zs.serial]
        del st.zspages[zs.serial]
        st.obj_allocated -= zs.cls.objs_per_zspage
        self._pages_allocated -= zs.cls.pages_per_zspage

    def _isolate(self, st: _ClassState, groups: Iterable[int]) -> _ZsPage | None:
        """isolate_zspage: unlink and return the head of the first non-empty listed group."""
        for g in groups:
            if st.lists[g]:
                zs = st.lists[g][0]
                self._unlink(st, zs)
                return zs
        return None

    def _putback(self, st: _ClassState, zs: _ZsPage) -> int:
        """putback_zspage: insert_zspage into the group its inuse now gives; returns it."""
        g = self._group(zs)
        self._link(st, zs, g)
        return g

    def _move(self, src: _ZsPage, dst: _ZsPage, obj: int) -> None:
        """One object of migrate_zspage: obj_malloc in dst, rewrite the handle, obj_free."""
        h = src.objs.pop(obj)
        new = dst.free_stack.pop()
        dst.objs[new] = h
        self._handles[h.serial] = (dst, new)
        src.free_stack.append(obj)

    def _compact_src_first(self, st: _ClassState) -> int:
        """6.1 __zs_compact for one class."""
        freed = 0
        while (src := self._isolate(st, _SRC_61)) is not None:
            if not self._can_compact(st):
                break  # src is still isolated: put back below
            # migrate_zspage resumes where the previous dst filled up; since everything before
            # that point has left src, this is simply "src's live objects in address order".
            dst: _ZsPage | None = None
            while (dst := self._isolate(st, _DST_61)) is not None:
                src_done = True
                for obj in sorted(src.objs):
                    if dst.full:
                        src_done = False  # -ENOMEM: dst full with objects left in src
                        break
                    self._move(src, dst, obj)
                if src_done:
                    break
                self._putback(st, dst)
            if dst is None:
                # No dst left. Unreachable single-threaded (the free slots zs_can_compact
                # counted would all be in src, so src would be empty), kept for fidelity.
                break
            self._putback(st, dst)
            if self._putback(st, src) == QUARTER_EMPTY:
                self._free_zspage(st, src)
                freed += st.cls.pages_per_zspage
        if src is not None:
            self._putback(st, src)
        return freed

    def _compact_dst_first(self, st: _ClassState) -> int:
        """6.12 / 7.2 __zs_compact for one class (and the own allocator's)."""
        freed = 0
        dst: _ZsPage | None = None
        partial = range(1, self.policy.fullness.full_group)
        while self._can_compact(st):
            if dst is None:
                dst = self._isolate(st, reversed(partial))
                if dst is None:
                    break
            src = self._isolate(st, partial)
            if src is None:
                break
            for obj in sorted(src.objs):
                self._move(src, dst, obj)
                if dst.full:
                    break
            if self._putback(st, src) == self.policy.fullness.empty_group:
                self._free_zspage(st, src)
                freed += st.cls.pages_per_zspage
            if dst.full:
                self._putback(st, dst)
                dst = None
        if dst is not None:
            self._putback(st, dst)
        return freed
