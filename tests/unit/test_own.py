"""The own allocator's choices, its model policy, and what the templates render (no guest).

The guest-side checks of the own allocator are the driver suite itself
(tests/guest/conftest.py runs it once per allocator), tests/guest/test_own.py
and tests/guest/test_kmod_style.py (checkpatch, compiler warnings).
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import pytest

from pyharness.kernel.api import api_for
from pyharness.kernel.tree import makefile_series
from pyharness.kmod import render
from pyharness.kmod.checkpatch import StyleReport
from pyharness.kmod.own import OwnAllocator
from pyharness.model import PoolModel, class_table, huge_class_size, policy
from pyharness.progress import StageError

SERIES = ("6.1", "6.12", "7.2")


def test_bad_choices_are_named() -> None:
    with pytest.raises(StageError) as e:
        OwnAllocator(max_pages=3, class_delta=12, fullness="halves", chain_rule="best")
    message = str(e.value)
    for part in ("max pages per zspage 3", "class spacing 12", "'halves'", "'best'"):
        assert part in message
    assert "make menuconfig" in message


def test_upstream_geometry_is_one_of_the_choices() -> None:
    """With upstream's parameters the own table is upstream's, class for class."""
    as_612 = OwnAllocator().policy(api_for("6.12"))
    assert class_table(as_612) == class_table(policy("6.12"))
    assert huge_class_size(as_612) == 3625 and len(class_table(as_612)) == 119
    as_61 = OwnAllocator(max_pages=4, fullness="quarters", chain_rule="usedpc")
    own_61 = as_61.policy(api_for("6.1"))
    assert class_table(own_61) == class_table(policy("6.1"))
    assert huge_class_size(own_61) == 3257 and len(class_table(own_61)) == 69
    # By default the geometry is the target kernel's, the chain size it was built with too.
    assert class_table(OwnAllocator().policy(api_for("6.1"))) == class_table(policy("6.1"))
    api_16 = dataclasses.replace(api_for("7.2"), chain_size=16)
    assert class_table(OwnAllocator().policy(api_16)) == class_table(policy("7.2", chain_size=16))
    assert OwnAllocator(max_pages=8).for_kernel(api_for("6.1")).chain_rule == "usedpc"


def test_class_spacing_changes_the_table() -> None:
    api = api_for("6.12")
    tables = {d: class_table(OwnAllocator(class_delta=d).policy(api)) for d in (8, 16, 32, 64)}
    assert tables[16] == class_table(policy("6.12"))
    for delta, table in tables.items():
        assert all((c.size - 32) % delta == 0 or c.size == 4096 for c in table)
        assert table[-1].size == 4096
        # A lookup lands on the spacing's grid, at or above the size plus the header.
        got = PoolModel(OwnAllocator(class_delta=delta).policy(api)).class_of(92).size
        assert got >= 100 and (got - 32) % delta == 0
    # Finer spacing gives more distinct classes, never fewer.
    counts = [len(tables[d]) for d in (64, 32, 16, 8)]
    assert counts == sorted(counts) and counts[0] < counts[-1]


def test_errors_and_lookup_follow_the_kernel_api() -> None:
    own_61 = OwnAllocator().policy(api_for("6.1"))
    own_72 = OwnAllocator().policy(api_for("7.2"))
    assert own_61.alloc_error(0) == own_72.alloc_error(0) == -22
    assert own_61.alloc_error(4097) == -22 and own_72.alloc_error(4097) == -28
    assert PoolModel(own_72).lookup_class_index(4096) == 254


@pytest.mark.parametrize("series", SERIES)
@pytest.mark.parametrize("prefix", ["zs_", "zsk_"])
def test_templates_render_the_kernel_api(series: str, prefix: str) -> None:
    api = api_for(series)
    sources = render.own_sources(api, OwnAllocator(), prefix)
    c = sources["zsmalloc.c"]
    assert "{{" not in c and "{%" not in c
    exported = set(re.findall(r"^EXPORT_SYMBOL_GPL\((\w+)\);$", c, re.M))
    names = {"create_pool", "destroy_pool", "malloc", "free", "compact", "get_total_pages"}
    names |= {"pool_stats", "huge_class_size"}
    if api.map_object:
        names |= {"map_object", "unmap_object"}
    else:
        names |= {"obj_read_begin", "obj_read_end", "obj_read_sg_begin", "obj_read_sg_end"}
        names |= {"obj_write"}
    if api.lookup_class_index:
        names.add("lookup_class_index")
    assert exported == {prefix + n for n in names}
    assert ("const int nid)" in c) == api.malloc_nid
    assert ("shrinker_alloc(" in c) == api.shrinker_alloc
    if prefix == "zs_":
        assert set(sources) == {"zsmalloc.c"}  # the kernel's own header declares the API
    else:
        header = sources[f"{prefix}malloc.h"]
        declared = set(re.findall(r"\b(" + prefix + r"\w+)\(", header))
        assert declared == exported


def test_render_into_a_kernel_tree_keeps_a_hard_linked_original(tmp_path: Path) -> None:
    pristine, tree = tmp_path / "pristine", tmp_path / "tree"
    for top in (pristine, tree):
        (top / "mm").mkdir(parents=True)
    (pristine / "Makefile").write_text("VERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = 117\n")
    (pristine / "mm" / "zsmalloc.c").write_text("/* upstream */\n")
    (pristine / "Kconfig").write_text("# the kernel's top Kconfig\n")
    for name in ("Makefile", "Kconfig", "mm/zsmalloc.c"):
        os.link(pristine / name, tree / name)
    assert makefile_series(tree) == "6.12"
    written = render.render_into_tree(tree, api_for("6.12"), OwnAllocator())
    assert written == [tree / "mm" / "zsmalloc.c"]
    assert "zskit's own" in written[0].read_text()
    assert (pristine / "mm" / "zsmalloc.c").read_text() == "/* upstream */\n"


def test_a_directory_that_is_not_a_kernel_tree_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StageError, match="is not a kernel tree"):
        makefile_series(tmp_path)


def test_only_findings_the_source_justifies_are_dropped(tmp_path: Path) -> None:
    source = tmp_path / "x.c"
    source.write_text("/* checkpatch: CAMELCASE __SetPageMovable: the kernel's name */\n")
    findings = (
        "x.c:3: CHECK:CAMELCASE: Avoid CamelCase: <__SetPageMovable>",
        "x.c:4: CHECK:CAMELCASE: Avoid CamelCase: <myVar>",
        "x.c:5: WARNING:LONG_LINE: line length of 105 exceeds 100 columns",
    )
    report = StyleReport(0, 1, 2, findings).without_justified(source)
    assert report == StyleReport(0, 1, 1, findings[1:])
    assert not report.clean
    assert StyleReport(0, 0, 1, findings[:1]).without_justified(source).clean
