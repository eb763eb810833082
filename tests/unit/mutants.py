"""Mutants of the reference model, and the checker's verdict on each of them.

A mutant changes one decision the model makes (which class a size maps to, which zspage
an allocation takes, where a zspage is linked, when compaction stops, what a statistic
counts, ...). It is written as a small text edit of pyharness/model's own source, applied
at test time and loaded as a separate copy of the package, never as a switch in the
product; an edit that no longer matches the source fails loudly, so the list follows the
model as it changes. Policy choices that are data (a field of a `Policy`, or our own
allocator's choices in kmod/own.py) are mutated by replacing that field of the policy the
mutant model is given.

The simulation: the real model plays the kernel. Validate's suite workload runs through it,
and its answers (each command's errno, the value lines, the `classes` rows) become the
guest's `BatchResult`s; then the mutant model is checked against them by the checker's own
functions (check_geometry, check_commands, check_classes), batch by batch, exactly as
run.check_batches checks a guest. A mutant is killed at its first divergence.

`python -m tests.unit.mutants` prints the table.
"""

from __future__ import annotations

import dataclasses
import enum
import sys
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from unittest import mock

from pyharness.check import driver as driver_module
from pyharness.check.driver import (
    UNKNOWN,
    Divergence,
    DriverModel,
    PageRef,
    check_classes,
    check_commands,
    check_geometry,
)
from pyharness.commands.config import load as load_config
from pyharness.commands.run import default_batches
from pyharness.guest.zstest import BatchResult, CommandFailure
from pyharness.kernel.api import APIS, KernelApi
from pyharness.kmod.own import OwnAllocator
from pyharness.model import ClassStats, Policy, PoolModel, policy

MODEL_DIR = Path(__file__).resolve().parents[2] / "pyharness" / "model"
MODEL_FILES = ("pattern", "policy", "pool")  # in import order

# Validate's suite runs with the configured workload; the tests use Kconfig's defaults.
NO_DOTCONFIG = Path("/nonexistent/.config")
SEED_FOR_TESTS = 1  # Kconfig's WORKLOAD_SEED default

# ---------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    """An allocator on a kernel: the API facts (which shape the workload) and its model."""

    name: str
    api: KernelApi
    own: bool  # zskit's own allocator (its policy from kmod/own.py), else upstream

    def policy(self) -> Policy:
        if self.own:
            return OwnAllocator().policy(self.api)
        return policy(self.api.model_policy, chain_size=self.api.chain_size)


TARGETS = {
    t.name: t
    for t in (
        Target("6.1", APIS["6.1"], own=False),
        Target("6.12", APIS["6.12"], own=False),
        Target("7.2", APIS["7.2"], own=False),
        Target("own-6.1", APIS["6.1"], own=True),
        Target("own-7.2", APIS["7.2"], own=True),
    )
}
UPSTREAM = ("6.1", "6.12", "7.2")
OWN = ("own-6.1", "own-7.2")
ALL = UPSTREAM + OWN
QUARTERS = ("6.1", "own-6.1")  # the quarter groups decide (6.1's lists; own's 6.1 stats)
QUARTERS_LISTS = ("6.1",)  # lists kept in quarter groups
RATIO = ("6.12", "7.2", *OWN)  # lists kept in 10% groups
USEDPC = ("6.1", "own-6.1")  # chains by 6.1's used percentage
MIN_WASTE = ("6.12", "7.2", "own-7.2")  # chains by 6.12's least waste
LOOKUP = ("6.12", "7.2", "own-7.2")  # zs_lookup_class_index exists


def suite_batches(api: KernelApi) -> list[list[str]]:
    """What validate runs on this kernel: run.default_batches with the Kconfig defaults."""
    config = load_config(dotconfig=NO_DOTCONFIG).with_overrides(workload_probes="always")
    return default_batches(config, api)


# ---------------------------------------------------------------------------- mutants


@dataclass(frozen=True)
class Edit:
    """Replace `old` (which must occur exactly `count` times) in model/<file>.py."""

    file: str
    old: str
    new: str
    count: int = 1

    def apply(self, text: str) -> str:
        found = text.count(self.old)
        if found != self.count:
            raise AssertionError(
                f"mutant edit of model/{self.file}.py expects {self.count} occurrence(s) of "
                f"{self.old!r}, found {found}: update tests/unit/mutants.py to the model"
            )
        return text.replace(self.old, self.new)


PolicyChange = Callable[[types.ModuleType, Any], dict[str, Any]]


@dataclass(frozen=True)
class Mutant:
    name: str
    decision: str  # the decision point it changes
    change: str  # what the mutant does instead
    targets: tuple[str, ...]  # where the decision is taken
    edits: tuple[Edit, ...] = ()
    # Fields replaced in the policy the mutant model gets: (mutant's policy module, policy).
    policy_change: PolicyChange | None = None
    # Why no observable of the protocol can tell it apart; None: it must be killed.
    unobservable: str | None = None
    # Targets where it is observable but the suite does not provoke it yet, and why.
    not_provoked: tuple[str, ...] = ()
    not_provoked_why: str = ""


def pool_edit(old: str, new: str, count: int = 1) -> tuple[Edit, ...]:
    return (Edit("pool", old, new, count),)


def policy_edit(old: str, new: str, count: int = 1) -> tuple[Edit, ...]:
    return (Edit("policy", old, new, count),)


def _find_reversed(mod: types.ModuleType, p: Any) -> dict[str, Any]:
    """The partial groups searched emptiest first (EMPTY, if searched, still last)."""
    partial = [g for g in p.find_order if g != p.fullness.empty_group]
    tail = [g for g in p.find_order if g == p.fullness.empty_group]
    return {"find_order": (*reversed(partial), *tail)}


def _find_skip_first(mod: types.ModuleType, p: Any) -> dict[str, Any]:
    return {"find_order": p.find_order[1:]}


def _insert_swapped(mod: types.ModuleType, p: Any) -> dict[str, Any]:
    rule = mod.InsertRule
    other = rule.HEAD if p.insert_rule is rule.SECOND_IF_LESS_USED else rule.SECOND_IF_LESS_USED
    return {"insert_rule": other}


def _chain_swapped(mod: types.ModuleType, p: Any) -> dict[str, Any]:
    rule = mod.ChainRule
    return {"chain_rule": rule.MIN_WASTE if p.chain_rule is rule.USEDPC else rule.USEDPC}


def _errno_swapped(field: str) -> PolicyChange:
    def change(mod: types.ModuleType, p: Any) -> dict[str, Any]:
        value = getattr(p, field)
        return {field: -mod.ENOSPC if value == -mod.EINVAL else -mod.EINVAL}

    return change


MUTANTS: tuple[Mutant, ...] = (
    # ---- class lookup
    Mutant(
        "class-of-rounds-down",
        "class lookup (zs_malloc's get_size_class_index)",
        "rounds the index down instead of up",
        ALL,
        pool_edit(
            "-(-(s - p.min_alloc_size) // p.class_delta)\n"
            "        return self._lookup[min(idx, p.num_indexes - 1)]\n\n",
            "(s - p.min_alloc_size) // p.class_delta\n"
            "        return self._lookup[min(idx, p.num_indexes - 1)]\n\n",
        ),
    ),
    Mutant(
        "class-of-no-header",
        "class lookup (zs_malloc's get_size_class_index)",
        "looks the class up without the handle header",
        ALL,
        pool_edit(
            '"""The merged class a user ``size`` maps to (header added, index clamped as in C)."""'
            "\n        if size < 0:\n"
            '            raise ValueError(f"size cannot be negative: {size}")\n'
            "        p = self.policy\n        s = size + p.handle_size\n",
            '"""The merged class a user ``size`` maps to (header added, index clamped as in C)."""'
            "\n        if size < 0:\n"
            '            raise ValueError(f"size cannot be negative: {size}")\n'
            "        p = self.policy\n        s = size\n",
        ),
    ),
    Mutant(
        "no-handle-header",
        "in-object handle header (ZS_HANDLE_SIZE)",
        "objects carry no header: every size lands one header lower",
        ALL,
        policy_change=lambda mod, p: {"handle_size": 0},
    ),
    Mutant(
        "class-spacing-doubled",
        "class spacing (ZS_SIZE_CLASS_DELTA, OWN_CLASS_DELTA)",
        "classes 32 bytes apart",
        ALL,
        policy_change=lambda mod, p: {"class_spacing": 2 * p.class_delta},
    ),
    Mutant(
        "no-class-merging",
        "class merging",
        "every index is a class of its own",
        ALL,
        policy_change=lambda mod, p: {"merge_classes": False},
    ),
    Mutant(
        "merge-on-objects-only",
        "class merging",
        "merges neighbours with the same objects per zspage whatever their pages",
        ALL,
        policy_edit(
            "and (prev.pages_per_zspage, prev.objs_per_zspage) == (ppz, opz)",
            "and prev.objs_per_zspage == opz",
        ),
        unobservable="equivalent for the geometries modelled: no two neighbouring indexes "
        "have the same objects per zspage and different chain lengths (the class table, "
        "checked row by row, would show it)",
    ),
    # ---- lookup_class_index
    Mutant(
        "lookup-rounds-down",
        "zs_lookup_class_index",
        "rounds the index down",
        LOOKUP,
        pool_edit(
            "-(-(s - p.min_alloc_size) // p.class_delta)\n"
            "        return self._lookup[min(idx, p.num_indexes - 1)].index",
            "(s - p.min_alloc_size) // p.class_delta\n"
            "        return self._lookup[min(idx, p.num_indexes - 1)].index",
        ),
    ),
    Mutant(
        "lookup-no-header",
        "zs_lookup_class_index",
        "looks up without the handle header",
        LOOKUP,
        pool_edit(
            'its callers ask about."""\n        p = self.policy\n'
            "        s = size + p.handle_size\n",
            'its callers ask about."""\n        p = self.policy\n        s = size\n',
        ),
    ),
    Mutant(
        "lookup-clamp-low",
        "zs_lookup_class_index",
        "clamps to the second-largest index",
        LOOKUP,
        pool_edit(
            "return self._lookup[min(idx, p.num_indexes - 1)].index",
            "return self._lookup[min(idx, p.num_indexes - 2)].index",
        ),
        unobservable="equivalent: indexes 253 and 254 are one merged class (4080 and 4096 "
        "bytes both take one page for one object) in every geometry modelled",
    ),
    # ---- pages per zspage
    Mutant(
        "usedpc-last-best",
        "pages per zspage (6.1 get_pages_per_zspage)",
        "takes the last chain length of the best used-percentage",
        USEDPC,
        policy_edit("if pct > best_pct:", "if pct >= best_pct:"),
    ),
    Mutant(
        "min-waste-last-best",
        "pages per zspage (6.12 calculate_zspage_chain_size)",
        "takes the last chain length of the least waste",
        MIN_WASTE,
        policy_edit("if waste < best_waste:", "if waste <= best_waste:"),
    ),
    Mutant(
        "min-waste-no-power-of-two-rule",
        "pages per zspage (6.12 calculate_zspage_chain_size)",
        "drops the power-of-two shortcut",
        MIN_WASTE,
        policy_edit("if size & (size - 1) == 0:", "if False:"),
        unobservable="equivalent: a power of two up to PAGE_SIZE already has zero waste at "
        "one page, the first length the search tries",
    ),
    Mutant(
        "chain-rule-swapped",
        "pages per zspage (chain rule)",
        "usedpc where min-waste is the rule, and the reverse",
        ALL,
        policy_change=_chain_swapped,
    ),
    Mutant(
        "chain-one-page-shorter",
        "pages per zspage (maximum chain)",
        "one page fewer at most",
        ALL,
        policy_change=lambda mod, p: {"max_pages_per_zspage": p.max_pages_per_zspage - 1},
    ),
    # ---- huge classes
    Mutant(
        "huge-size-off-by-one",
        "huge_class_size",
        "size - ZS_HANDLE_SIZE instead of size - (ZS_HANDLE_SIZE - 1)",
        ALL,
        policy_edit("huge_size = size - (p.handle_size - 1)", "huge_size = size - p.handle_size"),
    ),
    Mutant(
        "huge-boundary-either",
        "huge_class_size",
        "the first class with more than one page or more than one object bounds it",
        ALL,
        policy_edit(
            "if ppz != 1 and opz != 1 and huge_size == 0:",
            "if (ppz != 1 or opz != 1) and huge_size == 0:",
        ),
        unobservable="equivalent: objects of at most PAGE_SIZE give opz >= ppz, and walking "
        "down from 4096 a chain longer than one page comes before two objects in one page, "
        "so the first class with either is the first with both",
    ),
    Mutant(
        "huge-class-not-special",
        "huge-class handling (a huge object has no handle header and is never mapped "
        "through the copy buffer)",
        "treats no class as huge",
        ALL,
        policy_edit(
            "return self.objs_per_zspage == 1 and self.pages_per_zspage == 1",
            "return False",
        ),
    ),
    # ---- zs_malloc's own checks
    Mutant(
        "zero-size-errno",
        "zs_malloc(0)'s error",
        "the other errno",
        ALL,
        policy_change=_errno_swapped("zero_size_error"),
    ),
    Mutant(
        "oversize-errno",
        "zs_malloc(> PAGE_SIZE)'s error",
        "the other errno",
        ALL,
        policy_change=_errno_swapped("oversize_error"),
    ),
    Mutant(
        "oversize-bound-inclusive",
        "zs_malloc's size limit",
        "refuses PAGE_SIZE itself",
        ALL,
        policy_edit("if size > self.page_size:", "if size >= self.page_size:"),
    ),
    # ---- fullness groups
    Mutant(
        "quarter-threshold-half",
        "fullness threshold (6.1: ALMOST_EMPTY up to 3/4)",
        "ALMOST_EMPTY only up to 1/2",
        QUARTERS,
        policy_edit(
            "return QUARTER_ALMOST_EMPTY if inuse <= 3 * opz // 4 else QUARTER_ALMOST_FULL",
            "return QUARTER_ALMOST_EMPTY if inuse <= opz // 2 else QUARTER_ALMOST_FULL",
        ),
    ),
    Mutant(
        "quarter-threshold-strict",
        "fullness threshold (6.1: ALMOST_EMPTY up to 3/4)",
        "below 3/4 only",
        QUARTERS,
        policy_edit(
            "return QUARTER_ALMOST_EMPTY if inuse <= 3 * opz // 4 else QUARTER_ALMOST_FULL",
            "return QUARTER_ALMOST_EMPTY if inuse < 3 * opz // 4 else QUARTER_ALMOST_FULL",
        ),
    ),
    Mutant(
        "ratio-rounds-to-nearest",
        "fullness threshold (6.12+: 10% groups)",
        "rounds the ratio to the nearest tenth",
        RATIO,
        policy_edit(
            "return (100 * inuse // opz) // 10 + 1",
            "return min((100 * inuse // opz + 5) // 10 + 1, 10)",
        ),
    ),
    Mutant(
        "own-lists-in-quarters",
        "our allocator's fullness groups (OWN_FULLNESS)",
        "quarters where ratio groups are rendered",
        OWN,
        policy_change=lambda mod, p: {
            "fullness": mod.FullnessScheme.QUARTERS,
            "find_order": (2, 1, 0),
            "stats_fullness": p.stats_fullness or p.fullness,
        },
    ),
    # ---- zspage choice on alloc
    Mutant(
        "find-emptiest-first",
        "zspage choice on alloc (find_get_zspage's group order)",
        "searches the partial groups emptiest first",
        ALL,
        policy_change=_find_reversed,
    ),
    Mutant(
        "find-skips-fullest",
        "zspage choice on alloc (find_get_zspage's group order)",
        "never takes from the fullest partial group",
        ALL,
        policy_change=_find_skip_first,
    ),
    Mutant(
        "find-takes-tail",
        "zspage choice on alloc (head of the list)",
        "takes the tail of the list",
        ALL,
        pool_edit(
            "            if st.lists[g]:\n                return st.lists[g][0]",
            "            if st.lists[g]:\n                return st.lists[g][-1]",
        ),
    ),
    Mutant(
        "new-zspage-free-list-descending",
        "object choice in a new zspage (free list in address order)",
        "links a new zspage's free list from its last slot",
        ALL,
        pool_edit(
            "free_stack=list(range(c.objs_per_zspage - 1, -1, -1))",
            "free_stack=list(range(c.objs_per_zspage))",
        ),
    ),
    Mutant(
        "free-pushes-tail",
        "object choice after a free (LIFO free list)",
        "a freed slot goes to the tail of the free list",
        ALL,
        pool_edit("zs.free_stack.append(obj)", "zs.free_stack.insert(0, obj)"),
    ),
    # ---- list insertion
    Mutant(
        "insert-at-head-6.1",
        "list insertion position (6.1 insert_zspage: second when less used than the head)",
        "always at the head",
        QUARTERS_LISTS,
        policy_change=_insert_swapped,
    ),
    Mutant(
        "insert-second-if-less-used-6.12",
        "list insertion position (6.12+ and ours: always at the head)",
        "second when less used than the head, as 6.1",
        RATIO,
        policy_change=_insert_swapped,
        unobservable="equivalent in every sequence tried: with head insertion and the "
        "fullest-first allocation and compaction of 10% groups, no zspage was ever linked "
        "into a non-empty list with fewer objects in use than its head (allocation enters "
        "empty lists, a free enters at the top of its group); a random search of 600 "
        "single-class sequences of 300 operations never produced a different list order",
    ),
    Mutant(
        "insert-second-if-not-more-used",
        "list insertion position (6.1 insert_zspage)",
        "second also when as used as the head",
        ("6.1",),
        pool_edit(
            "head_inuse is not None and inuse < head_inuse:",
            "head_inuse is not None and inuse <= head_inuse:",
        ),
    ),
    Mutant(
        "insert-at-tail",
        "list insertion position (insert_zspage)",
        "links at the tail",
        ALL,
        pool_edit(
            "lst.insert(insert_position(self.policy.insert_rule, head_inuse, zs.inuse), zs)",
            "lst.append(zs)",
        ),
    ),
    Mutant(
        "relink-on-every-change",
        "list position kept while the group is unchanged (fix_fullness)",
        "unlinks and relinks after every alloc and free",
        ALL,
        pool_edit(
            "        new = self._group(zs)\n        if new == zs.group:\n            return\n",
            "        new = self._group(zs)\n",
        ),
    ),
    # ---- release of an empty zspage, accounting
    Mutant(
        "empty-zspage-kept",
        "release of an empty zspage (zs_free)",
        "keeps it on the EMPTY list for reuse",
        ALL,
        pool_edit(
            "        if zs.inuse == 0:\n            self._free_zspage(st, zs)\n"
            "        else:\n            self._fix_fullness(st, zs)",
            "        self._fix_fullness(st, zs)",
        ),
    ),
    Mutant(
        "total-pages-not-returned",
        "zs_get_total_pages",
        "a released zspage's pages stay counted",
        ALL,
        pool_edit("        self._pages_allocated -= zs.cls.pages_per_zspage\n", ""),
    ),
    Mutant(
        "obj-allocated-not-returned",
        "obj_allocated (classes) and zs_can_compact",
        "a released zspage's objects stay counted",
        ALL,
        pool_edit("        st.obj_allocated -= zs.cls.objs_per_zspage\n", ""),
    ),
    # ---- compaction
    Mutant(
        "src-first-takes-fuller-source",
        "compaction source order (6.1 isolate_src_zspage)",
        "ALMOST_FULL before ALMOST_EMPTY",
        ("6.1",),
        pool_edit(
            "_SRC_61 = (QUARTER_ALMOST_EMPTY, QUARTER_ALMOST_FULL)",
            "_SRC_61 = (QUARTER_ALMOST_FULL, QUARTER_ALMOST_EMPTY)",
        ),
    ),
    Mutant(
        "src-first-takes-emptier-destination",
        "compaction destination order (6.1 isolate_dst_zspage)",
        "ALMOST_EMPTY before ALMOST_FULL",
        ("6.1",),
        pool_edit(
            "_DST_61 = (QUARTER_ALMOST_FULL, QUARTER_ALMOST_EMPTY)",
            "_DST_61 = (QUARTER_ALMOST_EMPTY, QUARTER_ALMOST_FULL)",
        ),
    ),
    Mutant(
        "src-first-puts-back-src-first",
        "compaction putback order (6.1: dst, then src)",
        "puts back src before dst",
        ("6.1",),
        unobservable="equivalent: the loop puts back src only once it is drained, so src "
        "goes to EMPTY and is freed at once, never sharing a list with dst",
        edits=pool_edit(
            "            self._putback(st, dst)\n"
            "            if self._putback(st, src) == QUARTER_EMPTY:\n",
            "            group = self._putback(st, src)\n"
            "            self._putback(st, dst)\n"
            "            if group == QUARTER_EMPTY:\n",
        ),
    ),
    Mutant(
        "src-first-ignores-can-compact",
        "compaction stop (6.1 zs_can_compact after isolating src)",
        "migrates whether or not a zspage can be freed",
        ("6.1",),
        pool_edit(
            "            if not self._can_compact(st):\n"
            "                break  # src is still isolated: put back below\n",
            "",
        ),
    ),
    Mutant(
        "src-first-keeps-empty-src",
        "release of a drained zspage (6.1 compaction)",
        "leaves the drained src on the EMPTY list",
        ("6.1",),
        pool_edit(
            "            if self._putback(st, src) == QUARTER_EMPTY:\n"
            "                self._free_zspage(st, src)\n"
            "                freed += st.cls.pages_per_zspage\n",
            "            self._putback(st, src)\n",
        ),
    ),
    Mutant(
        "compaction-rule-swapped",
        "compaction loop (6.1 src-first)",
        "6.12's dst-first loop",
        ("6.1",),
        policy_change=lambda mod, p: {"compaction": mod.CompactionRule.DST_FIRST},
    ),
    Mutant(
        "dst-first-takes-fullest-source",
        "compaction source order (6.12+: emptiest group first)",
        "fullest group first",
        RATIO,
        pool_edit("src = self._isolate(st, partial)", "src = self._isolate(st, reversed(partial))"),
    ),
    Mutant(
        "dst-first-takes-emptiest-destination",
        "compaction destination order (6.12+: fullest group first)",
        "emptiest group first",
        RATIO,
        pool_edit("dst = self._isolate(st, reversed(partial))", "dst = self._isolate(st, partial)"),
    ),
    Mutant(
        "dst-first-loses-last-dst",
        "compaction putback of the last destination (6.12+)",
        "the unfilled dst is not put back",
        RATIO,
        pool_edit(
            "        if dst is not None:\n            self._putback(st, dst)\n        return freed",
            "        return freed",
        ),
    ),
    Mutant(
        "dst-first-keeps-empty-src",
        "release of a drained zspage (6.12+ compaction)",
        "leaves the drained src on the EMPTY list",
        RATIO,
        pool_edit(
            "            if self._putback(st, src) == self.policy.fullness.empty_group:\n"
            "                self._free_zspage(st, src)\n"
            "                freed += st.cls.pages_per_zspage\n",
            "            self._putback(st, src)\n",
        ),
    ),
    Mutant(
        "isolate-takes-tail",
        "compaction's zspage choice (head of the list)",
        "isolates the tail of the list",
        ALL,
        pool_edit(
            "                zs = st.lists[g][0]\n", "                zs = st.lists[g][-1]\n"
        ),
    ),
    Mutant(
        "compact-classes-ascending",
        "compaction's class order (254 down to 0)",
        "0 up to 254",
        ALL,
        pool_edit("for c in reversed(self._classes))", "for c in self._classes)"),
        unobservable="equivalent: classes share no state, and the protocol only sees the sum "
        "of the pages freed in one zs_compact",
    ),
    Mutant(
        "compacted-counts-zspages",
        "zs_compact's result",
        "counts freed zspages instead of pages",
        ALL,
        pool_edit(
            "                freed += st.cls.pages_per_zspage\n",
            "                freed += 1\n",
            count=2,
        ),
    ),
    Mutant(
        "compact-returns-running-total",
        "zs_compact's result",
        "returns pages_compacted (cumulative) instead of this call's pages",
        ALL,
        pool_edit(
            "        self._pages_compacted += freed\n        return freed\n",
            "        self._pages_compacted += freed\n        return self._pages_compacted\n",
        ),
    ),
    Mutant(
        "pages-compacted-not-cumulative",
        "pages_compacted (zs_pool_stats)",
        "holds the last call's pages only",
        ALL,
        pool_edit("self._pages_compacted += freed", "self._pages_compacted = freed"),
    ),
    Mutant(
        "can-compact-rounds-per-page",
        "zs_can_compact",
        "rounds wasted objects to pages, not to whole zspages",
        ALL,
        pool_edit(
            "return (st.obj_allocated - st.obj_used) // c.objs_per_zspage * c.pages_per_zspage",
            "return (st.obj_allocated - st.obj_used) * c.pages_per_zspage // c.objs_per_zspage",
        ),
    ),
    # ---- statistics (the classes table)
    Mutant(
        "stats-almost-swapped",
        "classes: almost_full / almost_empty",
        "the two columns swapped",
        QUARTERS,
        pool_edit(
            "almost_full=0 if ratio else counts[QUARTER_ALMOST_FULL],\n"
            "                    almost_empty=0 if ratio else counts[QUARTER_ALMOST_EMPTY],",
            "almost_full=0 if ratio else counts[QUARTER_ALMOST_EMPTY],\n"
            "                    almost_empty=0 if ratio else counts[QUARTER_ALMOST_FULL],",
        ),
    ),
    Mutant(
        "stats-ratio-shifted",
        "classes: the inuse-ratio columns",
        "columns shifted by one group",
        ("6.12", "7.2", "own-7.2"),
        pool_edit(
            "inuse_ratio=tuple(counts[1:]) if ratio else None",
            "inuse_ratio=tuple(counts[:-1]) if ratio else None",
        ),
    ),
    Mutant(
        "stats-lists-grouping",
        "classes: grouping of our allocator's table (the kernel's layout)",
        "prints our lists' groups instead",
        ("own-6.1",),
        pool_edit(
            "scheme = self.policy.stats_fullness or self.policy.fullness",
            "scheme = self.policy.fullness",
        ),
    ),
    Mutant(
        "stats-obj-used",
        "classes: obj_used",
        "prints obj_allocated",
        ALL,
        pool_edit("obj_used=st.obj_used,", "obj_used=st.obj_allocated,"),
    ),
    Mutant(
        "stats-obj-allocated",
        "classes: obj_allocated",
        "prints obj_used",
        ALL,
        pool_edit("obj_allocated=st.obj_allocated,", "obj_allocated=st.obj_used,"),
    ),
    Mutant(
        "stats-pages-used-zspages",
        "classes: pages_used",
        "counts zspages",
        ALL,
        pool_edit(
            "pages_used=st.obj_allocated // c.objs_per_zspage * c.pages_per_zspage,",
            "pages_used=st.obj_allocated // c.objs_per_zspage,",
        ),
    ),
    Mutant(
        "stats-freeable-zero",
        "classes: freeable",
        "always 0",
        ALL,
        pool_edit("freeable=self._can_compact(st),", "freeable=0,"),
    ),
)


# ---------------------------------------------------------------------------- loading


_loaded: dict[str, types.ModuleType] = {}


def load_model(mutant: Mutant) -> types.ModuleType:
    """A copy of pyharness.model with the mutant's edits: a package whose `policy` and
    `pool` attributes are the edited modules."""
    name = f"_zskit_mutant_{mutant.name.replace('-', '_')}"
    if name in _loaded:
        return _loaded[name]
    package = types.ModuleType(name)
    package.__path__ = []
    package.__package__ = name
    sys.modules[name] = package
    for file in MODEL_FILES:
        text = (MODEL_DIR / f"{file}.py").read_text()
        for edit in mutant.edits:
            if edit.file == file:
                text = edit.apply(text)
        module = types.ModuleType(f"{name}.{file}")
        module.__package__ = name
        module.__file__ = str(MODEL_DIR / f"{file}.py")
        sys.modules[module.__name__] = module
        exec(compile(text, f"<mutant {mutant.name}: model/{file}.py>", "exec"), module.__dict__)
        if file == "pool":
            # Rows of the product's type, so the checker compares them with the kernel's
            # (the real model's) as they are; no mutant edits the record itself.
            module.__dict__["ClassStats"] = ClassStats
        setattr(package, file, module)
    _loaded[name] = package
    return package


def _translate(value: Any, mod: types.ModuleType) -> Any:
    """A product policy field's value in the mutant's own types (its enums)."""
    if isinstance(value, enum.Enum):
        return getattr(mod, type(value).__name__)(value.value)
    return value


def mutant_policy(mutant: Mutant, target: Target) -> Any:
    """The policy the mutant model follows on `target`: the mutant package's own policy,
    then the mutant's policy change."""
    mod = load_model(mutant).policy
    if target.own:
        own = target.policy()
        p = mod.Policy(
            **{f.name: _translate(getattr(own, f.name), mod) for f in dataclasses.fields(own)}
        )
    else:
        p = mod.policy(target.api.model_policy, chain_size=target.api.chain_size)
    if mutant.policy_change is not None:
        p = dataclasses.replace(p, **mutant.policy_change(mod, p))
    return p


# ---------------------------------------------------------------------------- the simulation


@dataclass(frozen=True)
class Answers:
    """What the real model, playing the kernel, answered to one workload."""

    batches: list[list[str]]
    geometry: list[ClassStats]  # a fresh pool's classes table
    results: list[BatchResult]
    classes: list[list[ClassStats] | None]  # the current pool's table after each batch


def _page_number(value: str, numbers: dict[str, str]) -> str:
    """The kernel numbers each page the first time `where` sees it (none moves here)."""
    if isinstance(value, PageRef):
        return numbers.setdefault(value, str(len(numbers) + 1))
    return value


@cache
def kernel_answers(target_name: str) -> Answers:
    target = TARGETS[target_name]
    batches = suite_batches(target.api)
    real = DriverModel(target.api, target.policy())
    page_numbers: dict[str, str] = {}
    results: list[BatchResult] = []
    tables: list[list[ClassStats] | None] = []
    for number, lines in enumerate(batches):
        real.values = []
        failures = []
        for line_no, line in enumerate(lines, start=1):
            got = real.run(line)
            if got is UNKNOWN:
                # The kernel may answer either; a mutant's verdict would be a guess.
                raise AssertionError(
                    f"{target_name} batch {number} line {line_no} `{line}`: the model cannot "
                    "predict its bytes; keep such lines out of the suite"
                )
            if got != 0:
                failures.append(CommandFailure(line_no, line.split()[0], got, "model"))
        values = tuple((key, _page_number(value, page_numbers)) for key, value in real.values)
        results.append(BatchResult(len(lines), tuple(failures), values))
        current = real.current
        tables.append(real.model(current).class_stats() if current is not None else None)
    geometry = PoolModel(target.policy()).class_stats()
    return Answers(batches, geometry, results, tables)


@dataclass(frozen=True)
class Verdict:
    mutant: str
    target: str
    divergence: Divergence | None  # the first one: the mutant is killed
    commands: int  # commands checked up to it

    @property
    def killed(self) -> bool:
        return self.divergence is not None


@contextmanager
def _driver_uses(pool_model: type) -> Iterator[None]:
    """The checker's DriverModel builds its pools with the mutant's PoolModel."""
    with mock.patch.object(driver_module, "PoolModel", pool_model):
        yield


def verdict(mutant: Mutant, target_name: str) -> Verdict:
    """Check the mutant model against the real model's answers, as the checker checks a
    guest: the geometry of a fresh pool, then every batch's commands, values and table."""
    target = TARGETS[target_name]
    answers = kernel_answers(target_name)
    package = load_model(mutant)
    pol = mutant_policy(mutant, target)
    commands = 0
    with _driver_uses(package.pool.PoolModel):
        try:
            wrong = check_geometry(answers.geometry, package.pool.PoolModel(pol))
            if wrong is not None:
                return Verdict(mutant.name, target_name, wrong, 0)
            driver = DriverModel(target.api, pol)
            for number, lines in enumerate(answers.batches):
                found = check_commands(number, lines, answers.results[number], driver)
                table = answers.classes[number]
                if table is not None and driver.current is not None:
                    found += check_classes(number, table, driver.model(driver.current))
                commands += len(lines)
                if found:
                    return Verdict(mutant.name, target_name, found[0], commands)
        except Exception as e:  # the mutant model broke: the checker would stop there too
            crash = Divergence("model-error", -1, f"{type(e).__name__}: {e}")
            return Verdict(mutant.name, target_name, crash, commands)
    return Verdict(mutant.name, target_name, None, commands)


def verdicts() -> list[Verdict]:
    return [verdict(m, t) for m in MUTANTS for t in m.targets]


def command_count(target_name: str) -> int:
    return sum(len(b) for b in kernel_answers(target_name).batches)


def main() -> None:
    """The score and a Markdown table: one row per mutant, its verdict on each target."""
    rows = verdicts()
    by_mutant: dict[str, list[Verdict]] = {}
    for v in rows:
        by_mutant.setdefault(v.mutant, []).append(v)
    for group, own in (("upstream", False), ("own", True)):
        observable = [
            m
            for m in MUTANTS
            if m.unobservable is None and any(TARGETS[t].own == own for t in m.targets)
        ]
        killed = [
            m
            for m in observable
            if all(v.killed for v in by_mutant[m.name] if TARGETS[v.target].own == own)
        ]
        equivalent = [
            m
            for m in MUTANTS
            if m.unobservable is not None and any(TARGETS[t].own == own for t in m.targets)
        ]
        print(
            f"{group} policies: {len(killed)} of {len(observable)} observable mutants killed "
            f"on every target; {len(equivalent)} listed as unobservable"
        )
    print()
    print("| target | suite commands |\n|---|---|")
    for name in TARGETS:
        print(f"| {name} | {command_count(name)} |")
    print()
    print("| mutant | decision | killed on | survives on | reason |\n|---|---|---|---|---|")
    for m in MUTANTS:
        killed_on = [v.target for v in by_mutant[m.name] if v.killed]
        alive = [v.target for v in by_mutant[m.name] if not v.killed]
        reason = m.unobservable or m.not_provoked_why
        print(
            f"| {m.name} | {m.decision} | {', '.join(killed_on) or '-'} | "
            f"{', '.join(alive) or '-'} | {reason} |"
        )


if __name__ == "__main__":
    main()
