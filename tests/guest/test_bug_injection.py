"""The checker's power: upstream zsmalloc with a planted bug must fail the default run.

Each test edits the upstream mm/zsmalloc.c at build time (the edit lives
here; no upstream code is committed), builds and boots it, and expects the
run to fail with the divergence kind the bug should produce.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from pyharness.commands import config, run
from pyharness.kmod import build
from pyharness.kmod.render import RenderedSources
from pyharness.progress import Progress

pytestmark = pytest.mark.qemu

# name -> (upstream text, replacement, divergence kinds that catch it)
BUGS = {
    "class-size-off-by-one-step": (
        "ZS_SIZE_CLASS_DELTA);\n\n\treturn min_t(int, ZS_SIZE_CLASSES - 1, idx);",
        "ZS_SIZE_CLASS_DELTA) + 1;\n\n\treturn min_t(int, ZS_SIZE_CLASSES - 1, idx);",
        {"class-stats"},
    ),
    # Classes 32 bytes apart, not 16: a class table the model does not know.
    "class-spacing-doubled": (
        "#define ZS_SIZE_CLASS_DELTA\t(PAGE_SIZE >> CLASS_BITS)",
        "#define ZS_SIZE_CLASS_DELTA\t(PAGE_SIZE >> (CLASS_BITS - 1))",
        {"model"},
    ),
    "corrupted-free-list": (
        "link->next = get_freeobj(zspage) << OBJ_TAG_BITS;",
        "link->next = (get_freeobj(zspage) + 1) << OBJ_TAG_BITS;",
        {"data", "class-stats", "command-result", "crash"},
    ),
    "compaction-forgets-the-handle": (
        "record_obj(handle, free_obj);",
        "/* handle not updated */",
        {"data", "crash"},
    ),
    "spanning-write-drops-last-byte": (
        "memcpy(addr, buf + sizes[0], sizes[1]);",
        "memcpy(addr, buf + sizes[0], sizes[1] - 1);",
        {"data"},
    ),
}


def edited(prepared: run.Prepared, edit: Callable[[str], str], tmp: Path) -> run.Prepared:
    """Copy the rendered sources, edit zsmalloc.c, build and pack the modules."""
    for path in prepared.sources.files:
        text = path.read_text()
        (tmp / path.name).write_text(edit(text) if path.name == "zsmalloc.c" else text)
    sources = RenderedSources(
        tmp, tuple(tmp / f.name for f in prepared.sources.files), prepared.sources.modules
    )
    built = build.build(prepared.kernel, sources, Progress())
    image = run.guest_image(prepared.kernel, built.modules, tmp / "initramfs.cpio", Progress())
    return dataclasses.replace(prepared, sources=sources, built=built, image=image)


def with_bug(prepared: run.Prepared, name: str, tmp: Path) -> run.Prepared:
    """The modules with a bug of BUGS planted."""
    old, new, _ = BUGS[name]

    def plant(text: str) -> str:
        assert text.count(old) == 1, f"the edit for {name} no longer applies"
        return text.replace(old, new)

    return edited(prepared, plant, tmp)


@pytest.mark.parametrize("name", sorted(BUGS))
def test_planted_bug_is_caught(
    name: str, prepared: run.Prepared, default_config: config.Config, tmp_path: Path
) -> None:
    buggy = with_bug(prepared, name, tmp_path)
    result = run.run(default_config, Progress(), prepared=buggy)
    failure = result.first_failure
    assert failure is not None, f"{name} went unnoticed"
    assert failure.kind in BUGS[name][2], f"{name}: caught as {failure.kind}: {failure.failure}"


def test_a_class_table_the_model_does_not_know_stops_before_the_workload(
    prepared: run.Prepared, default_config: config.Config, tmp_path: Path
) -> None:
    result = run.run(
        default_config, Progress(), prepared=with_bug(prepared, "class-spacing-doubled", tmp_path)
    )
    failure = result.first_failure
    assert failure is not None and failure.name == "geometry", failure
    assert failure.failure is not None
    assert failure.failure.startswith("the model does not describe this zsmalloc: row ")
    assert not any(c.name.startswith("batch-") for c in result.cases)
