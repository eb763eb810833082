"""Kbuild is not run when nothing a module's build read has changed, and is when its
source or a header it includes is newer than the module (make's own rule)."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest

from pyharness.commands import run
from pyharness.kmod import build
from pyharness.kmod.render import RenderedSources
from pyharness.progress import Progress

pytestmark = pytest.mark.qemu


def test_an_unchanged_build_skips_make_and_an_edit_builds_again(
    prepared: run.Prepared, tmp_path: Path
) -> None:
    for path in prepared.sources.files:
        shutil.copy2(path, tmp_path / path.name)
    sources = RenderedSources(
        tmp_path, tuple(tmp_path / f.name for f in prepared.sources.files), prepared.sources.modules
    )

    def built(out: io.StringIO) -> dict[str, int]:
        build.build(prepared.kernel, sources, Progress(verbose=True, out=out))
        return {ko.name: ko.stat().st_mtime_ns for ko in tmp_path.glob("*.ko")}

    first = built(io.StringIO())
    assert (tmp_path / build.STAMP).is_file()
    log = io.StringIO()
    assert built(log) == first
    assert "nothing changed since its last build" in log.getvalue()

    zsmalloc = tmp_path / "zsmalloc.c"
    zsmalloc.write_text(zsmalloc.read_text() + "\n")  # an edit: newer than the module
    log = io.StringIO()
    again = built(log)
    assert "nothing changed" not in log.getvalue()
    assert again["zsmalloc.ko"] > first["zsmalloc.ko"]

    (tmp_path / build.STAMP).write_text("not json")  # a damaged stamp: make decides
    log = io.StringIO()
    built(log)
    assert "nothing changed" not in log.getvalue()
