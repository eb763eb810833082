"""Density and speed: the bench of commands/perf.py on the base and every variant, in one
boot, each variant's load between two of the base's."""

from __future__ import annotations

import dataclasses
import json
import shutil
import statistics
from dataclasses import asdict
from pathlib import Path

from ...guest import initramfs, qemu
from ...guest.modules import load_modules, unload_modules
from ...guest.zstest import ZsTest
from ...kmod import build, render
from ...progress import Progress, StageError
from .. import run
from ..perf import (
    BENCH_N,
    BENCH_REPEATS,
    Bench,
    Instructions,
    Load,
    base_drift,
    bench,
    bench_lines,
    counted_boot,
    paired_ratios,
)
from .builder import Built
from .results import Cost, KernelResult, Perf
from .steps import MODEL_KINDS, Context

PERF_ROUNDS = 2  # loads of each variant, each between two loads of the base
ALLOCATOR = ("zsmalloc", "zstest")  # the modules of a variant, in load order


def _staged(ctx: Context, variants: dict[str, Built]) -> run.Prepared:
    """Every variant's modules in one image, as `<variant>-<module>.ko`, none loaded at boot:
    each measurement loads its own pair and unloads it."""
    staged = ctx.tmp / "perf-modules"
    staged.mkdir(exist_ok=True)
    files: list[Path] = []
    for name, built in variants.items():
        for ko in built.modules:
            if ko.stem not in ALLOCATOR:
                continue
            files.append(staged / f"{name}-{ko.name}")
            shutil.copy2(ko, files[-1])
    image = run.guest_image(ctx.kernel, files, ctx.tmp / "perf.cpio", ctx.p)
    any_built = next(iter(variants.values()))
    return run.Prepared(
        ctx.kernel,
        ctx.api,
        render.RenderedSources(staged, (), ()),
        build.BuildResult(any_built.modules, ()),
        dataclasses.replace(image, modules=()),
    )


def _perf(
    ctx: Context, variants: dict[str, Built], prepared: run.Prepared, rounds: int
) -> tuple[list[Bench], dict[str, str]]:
    """The bench on every variant in one boot: its loads in order, and errors."""
    out = ctx.directory / "perf"
    out.mkdir(parents=True, exist_ok=True)
    timeline: list[Bench] = []
    errors: dict[str, str] = {}
    with (out / "zskit.log").open("w") as log, (out / "session.log").open("w") as transcript:
        progress = Progress(verbose=ctx.p.verbose, out=ctx.p.out if ctx.p.verbose else log)
        try:
            with run.boot(ctx.config, progress, prepared, out / "console.log", transcript) as g:
                others = [name for name in variants if name != "base"]
                _perf_rounds(g, others, rounds, timeline, errors)
                if g.child is not None:
                    g.poweroff()
        except StageError as e:  # no boot, or a crash outside a measurement
            for name in variants:
                errors.setdefault(name, f"not measured: {str(e).splitlines()[0]}")
        finally:
            doc = {
                "workload": bench_lines(),
                "timeline": [asdict(b) for b in timeline],
                "errors": errors,
            }
            (out / "perf.json").write_text(json.dumps(doc, indent=2) + "\n")
    return timeline, errors


def _perf_rounds(
    guest: qemu.Guest,
    variants: list[str],
    rounds: int,
    timeline: list[Bench],
    errors: dict[str, str],
) -> None:
    """Loads in the order base, v1, base, v2, ..., base; reversed in odd rounds."""
    for r in range(rounds):
        order = variants if r % 2 == 0 else variants[::-1]
        for name in ["base", *(x for v in order for x in (v, "base"))]:
            if name in errors:
                continue
            try:
                timeline.append(_measure(guest, name, len(timeline)))
            except StageError as e:
                kind = getattr(e, "kind", "error")
                errors[name] = f"{kind}: {str(e).splitlines()[0]}"
                if guest.child is None or name == "base":  # nothing left to compare with
                    for other in ["base", *variants]:
                        errors.setdefault(other, f"not measured: the run of {name} failed")
                    return
                unload_modules(guest, ALLOCATOR, check=False)


def _measure(guest: qemu.Guest, name: str, load: int) -> Bench:
    """Load a variant's modules, run the bench, unload them."""
    prefix = f"/{initramfs.MODULE_DIR}/{name}"
    load_modules(guest, [f"{prefix}-{module}.ko" for module in ALLOCATOR])
    result, _ = bench(ZsTest(guest), name, load)
    unload_modules(guest, ALLOCATOR)
    return result


def perf_steps(ctx: Context, result: KernelResult, base: Built, rounds: int) -> None:
    """Density and speed of every measurable step against the base, in one boot."""
    variants: dict[str, Built] = {"base": base}
    keys: dict[str, str] = {base.key: "base"}
    for step in result.steps:
        built = step.built
        if built is None or not built.ok or step.checks["suite"].status not in ("pass", "fail"):
            continue
        if step.suite_kind is not None and step.suite_kind not in MODEL_KINDS:
            step.perf_note = f"not measured: the suite found {step.suite_kind}"
            continue
        if built.key not in keys:
            keys[built.key] = f"p{step.patch:02d}"
            variants[keys[built.key]] = built
    if len(variants) == 1:
        result.perf_note = "nothing to measure"
        for step in result.steps:
            if step.built is not None and step.built.key == base.key:
                step.perf_note = "the same modules as the base"
        return
    ctx.p.say(
        f"{ctx.label}: density and speed of {len(variants) - 1} variant(s) against the "
        f"base, {rounds} round(s) in one boot"
    )
    prepared = _staged(ctx, variants)
    _cost_steps(result, keys, _count(ctx, variants, prepared))
    timeline, errors = _perf(ctx, variants, prepared, rounds)
    if "base" in errors:
        result.perf_note = f"not measured: {errors['base']}"
        return
    base_runs = [b for b in timeline if b.allocator == "base"]
    ratios = paired_ratios(timeline, "base")
    result.perf_noise = base_drift(timeline, "base")
    result.perf_note = (
        f"one boot; {rounds} load(s) of each variant, each between two loads of the base "
        f"({BENCH_REPEATS} runs per load, the fastest counts); speed is the median ratio to "
        f"those neighbours of the in-kernel time per object; neighbouring base loads differ "
        f"by up to {result.perf_noise:.0%}, so speed nearer 1 than that is noise; workload: "
        f"bench {BENCH_N} (that many objects written, read and freed; pages after the writes "
        "and after freeing half and compacting)"
    )
    for step in result.steps:
        if step.built is None or step.perf_note:
            continue
        name = keys.get(step.built.key)
        if name is None:
            continue
        runs = [b for b in timeline if b.allocator == name]
        if name in errors or not runs or (name != "base" and name not in ratios):
            step.perf_note = f"not measured: {errors.get(name, 'no data')}"
            continue
        step.perf = Perf(
            pages=runs[0].pages_full,
            base_pages=base_runs[0].pages_full,
            pages_compacted=runs[0].pages_half,
            base_pages_compacted=base_runs[0].pages_half,
            ns=statistics.median(b.total_ns for b in runs),
            base_ns=statistics.median(b.total_ns for b in base_runs),
            speed=statistics.median(ratios[name]) if name != "base" else 1.0,
            pairs=len(ratios.get(name, [])),
            samples=[b.total_ns for b in runs],
            base_samples=[b.total_ns for b in base_runs],
        )


def _count(
    ctx: Context, variants: dict[str, Built], prepared: run.Prepared
) -> tuple[dict[str, Instructions], str]:
    """The counted bench on every variant, in one boot with the counting plugin."""
    staged = prepared.sources.directory
    prefix = f"/{initramfs.MODULE_DIR}"
    loads = [
        Load(
            name,
            [f"{prefix}/{name}-{module}.ko" for module in ALLOCATOR],
            ALLOCATOR,
            ALLOCATOR[0],
            staged / f"{name}-{ALLOCATOR[0]}.ko",
        )
        for name in variants
    ]
    out = ctx.directory / "cost"
    out.mkdir(parents=True, exist_ok=True)
    with (out / "zskit.log").open("w") as log:
        progress = Progress(verbose=ctx.p.verbose, out=ctx.p.out if ctx.p.verbose else log)
        return counted_boot(ctx.config, progress, prepared, out, loads, ctx.api.map_object)


def _cost_steps(
    result: KernelResult,
    keys: dict[str, str],
    counted: tuple[dict[str, Instructions], str],
) -> None:
    found, note = counted
    result.cost_note = note
    base = found.get("base")
    for step in result.steps:
        name = keys.get(step.built.key) if step.built is not None else None
        if name is None:
            continue
        mine = found.get(name)
        if mine is None or base is None:
            step.cost_note = note if not found else f"not counted: {note}"
            continue
        step.cost = Cost(
            per_call=mine.per_call,
            base_per_call=base.per_call,
            total=sum(mine.totals.values()),
            base_total=sum(base.totals.values()),
        )
