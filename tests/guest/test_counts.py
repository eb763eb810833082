"""Instruction counts from the counting plugin, on the 6.1 kernel with our allocator: the
same on every boot, and a planted slowdown of known size seen exactly."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from pyharness.commands import config, run
from pyharness.commands.perf import Instructions, count
from pyharness.guest import plugin
from pyharness.guest.zstest import ZsTest
from pyharness.progress import Progress, StageError
from tests.guest.test_bug_injection import edited

pytestmark = pytest.mark.qemu

NOPS = 100  # the planted slowdown: this many NOPs more in every mapping
MAP = "void *zs_map_object(struct zs_pool *pool, unsigned long handle, enum zs_mapmode mm)\n{"
MAP_BODY = "\tzspage = zs_get_reader(pool, handle, &idx);\n"


@pytest.fixture(scope="module")
def own(default_config: config.Config) -> run.Prepared:
    return run.prepare(default_config.with_overrides(allocator="own"), Progress())


def counted(cfg: config.Config, prepared: run.Prepared, tmp: Path) -> Instructions:
    """Boot with the plugin and count our allocator's bench."""
    so = plugin.counting_plugin("qemu-system-x86_64", Progress())
    out = tmp / "counts.txt"
    with (tmp / "session.log").open("w") as transcript:
        with run.boot(
            cfg, Progress(), prepared, tmp / "console.log", transcript, counter=(so, out)
        ) as guest:
            ko = next(k for k in prepared.built.modules if k.stem == "zsmalloc")
            return count(ZsTest(guest), out, "own", "zsmalloc", ko, prepared.api.map_object)


def slowed(prepared: run.Prepared, tmp: Path) -> run.Prepared:
    """Our allocator with NOPS more instructions at the start of every mapping."""

    def pad(text: str) -> str:
        at = text.index(MAP_BODY, text.index(MAP))
        return text[:at] + f'\tasm volatile(".rept {NOPS}\\n\\tnop\\n\\t.endr");\n' + text[at:]

    return edited(prepared, pad, tmp)


def test_counts_are_the_same_on_every_boot_and_a_slowdown_shows_exactly(
    own: run.Prepared, default_config: config.Config, tmp_path: Path
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "slow").mkdir()
    first = counted(default_config, own, tmp_path / "a")
    second = counted(default_config, own, tmp_path / "b")
    for got in (first, second):
        assert got.repeatable, {k: [r.get(k) for r in got.runs] for k in got.runs[0]}
    assert first.totals == second.totals, (first.functions, second.functions)
    assert first.functions == second.functions
    for phase in ("alloc", "free", "write_begin", "write_end", "read_begin", "read_end"):
        assert first.per_call[phase] > 10, (phase, first.per_call)
    assert first.functions["alloc"]["zs_malloc"] > 0

    slow = counted(default_config, slowed(own, tmp_path / "slow"), tmp_path / "slow")
    assert slow.repeatable, slow.runs
    for phase, n in first.totals.items():
        extra = NOPS * first.calls[phase] if phase in ("write_begin", "read_begin") else 0
        assert slow.totals[phase] == n + extra, (phase, n, slow.totals[phase])


def test_a_plugin_that_does_not_build_says_why_and_leaves_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    broken = tmp_path / "zscount.c"
    broken.write_text("#include <qemu-plugin.h>\nint qemu_plugin_version = ;\n")
    monkeypatch.setattr(plugin, "SOURCE", broken)
    with pytest.raises(StageError, match="building the counting plugin against qemu .* failed"):
        plugin.counting_plugin("qemu-system-x86_64", Progress())
    home = plugin.cache_dir() / "plugins"
    digest = hashlib.sha256(broken.read_bytes()).hexdigest()[:12]
    assert not list(home.glob(f"*-{digest}")) and not list(home.glob(".building-*"))
