"""Density and speed: a fixed workload on the base and every variant, in one boot, each
variant's load between two of the base's."""

from __future__ import annotations

import json
import shutil
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

from ...guest import initramfs, qemu
from ...guest.zstest import CTL, ZsTest, parse_result
from ...kmod import build, render
from ...progress import Progress, StageError
from .. import run
from .builder import Built
from .results import KernelResult, Perf
from .steps import MODEL_KINDS, Context

# The fixed workload of the density and speed comparison: churn leaves the same
# live set for any allocator that accepts the same sizes; then compaction. The
# pool is destroyed at the end, so the batch can run again on the same modules.
PERF_LINES = (
    "create perf",
    "churn 20251125 20000 1073741824 8192",
    "stats",
    "compact",
    "stats",
    "destroy perf",
)
PERF_FILE = "/tmp/zskit-perf"
PERF_ROUNDS = 2  # loads of each variant, each between two loads of the base
PERF_REPEATS = 2  # runs of the workload per load; the best counts
_NOW = "$(head -n 3 /proc/timer_list | sed -n 's/^now at \\([0-9]*\\) nsecs$/\\1/p')"
# Timed in the guest (/proc/timer_list has nanoseconds; busybox date has not).
PERF_COMMAND = (
    f"t0={_NOW}; dd if={PERF_FILE} of={CTL} bs=4M 2>/dev/null; t1={_NOW}; "
    f'echo "elapsed $((${{t1:-0}} - ${{t0:-0}}))"; cat {CTL}'
)


# One load of a variant in the perf boot: (variant, best seconds, pages, after compaction).
Sample = tuple[str, float, int, int]


def paired_ratios(timeline: Sequence[Sample]) -> dict[str, list[float]]:
    """Each variant's time over the mean of the base's loads right before and after it.

    The host's speed drifts over seconds (other guests, builds); neighbours in
    time share most of that drift, so their ratio keeps little of it.
    """
    ratios: dict[str, list[float]] = {}
    for i, (name, seconds, _, _) in enumerate(timeline):
        if name == "base":
            continue
        near = [
            timeline[j][1]
            for j in (i - 1, i + 1)
            if 0 <= j < len(timeline) and timeline[j][0] == "base"
        ]
        if near:
            ratios.setdefault(name, []).append(seconds / statistics.mean(near))
    return ratios


def base_drift(timeline: Sequence[Sample]) -> float:
    """The largest change between neighbouring loads of the base: the noise of a speed ratio
    (the same code measured twice; under TCG on a busy host it is tens of percent)."""
    times = [t for name, t, _, _ in timeline if name == "base"]
    return max((abs(b / a - 1) for a, b in zip(times, times[1:], strict=False)), default=0.0)


def _perf(
    ctx: Context, variants: dict[str, Built], rounds: int
) -> tuple[list[Sample], dict[str, str]]:
    """The fixed workload on every variant in one boot: its loads in order, and errors."""
    out = ctx.directory / "perf"
    out.mkdir(parents=True, exist_ok=True)
    staged = ctx.tmp / "perf-modules"
    staged.mkdir(exist_ok=True)
    files: list[Path] = []
    for name, built in variants.items():
        for ko in built.modules:
            if ko.name not in ("zsmalloc.ko", "zstest.ko"):
                continue
            files.append(staged / f"{name}-{ko.name}")
            shutil.copy2(ko, files[-1])
    shell_tty = qemu.Profile.load().shell_tty
    image = initramfs.build_initramfs(files, ctx.tmp / "perf.cpio", shell_tty)
    # Nothing loads at boot: each measurement loads its own pair and unloads it.
    image = initramfs.Initramfs(image.path, ())
    any_built = next(iter(variants.values()))
    prepared = run.Prepared(
        ctx.kernel,
        render.RenderedSources(staged, (), ()),
        build.BuildResult(any_built.modules, ()),
        image,
    )
    timeline: list[Sample] = []
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
            doc = {"workload": PERF_LINES, "timeline": timeline, "errors": errors}
            (out / "perf.json").write_text(json.dumps(doc, indent=2) + "\n")
    return timeline, errors


def _perf_rounds(
    guest: qemu.Guest,
    variants: list[str],
    rounds: int,
    timeline: list[Sample],
    errors: dict[str, str],
) -> None:
    """Loads in the order base, v1, base, v2, ..., base; reversed in odd rounds."""
    ZsTest(guest).upload(PERF_LINES, dest=PERF_FILE)
    for r in range(rounds):
        order = variants if r % 2 == 0 else variants[::-1]
        for name in ["base", *(x for v in order for x in (v, "base"))]:
            if name in errors:
                continue
            try:
                timeline.append(_measure(guest, name, PERF_REPEATS))
            except StageError as e:
                kind = getattr(e, "kind", "error")
                errors[name] = f"{kind}: {str(e).splitlines()[0]}"
                if guest.child is None or name == "base":  # nothing left to compare with
                    for other in ["base", *variants]:
                        errors.setdefault(other, f"not measured: the run of {name} failed")
                    return
                guest.run_status("rmmod zstest; rmmod zsmalloc")


def _measure(guest: qemu.Guest, name: str, repeats: int) -> Sample:
    """Load a variant's modules, run the fixed workload `repeats` times, unload them."""
    prefix = f"/{initramfs.MODULE_DIR}/{name}"
    guest.run(f"insmod {prefix}-zsmalloc.ko && insmod {prefix}-zstest.ko")
    runs = []
    for _ in range(repeats):
        start = time.monotonic()
        output = guest.run(PERF_COMMAND)
        host = time.monotonic() - start
        lines = output.splitlines()
        elapsed = next((ln.split()[1] for ln in lines if ln.startswith("elapsed ")), "0")
        result = parse_result("\n".join(ln for ln in lines if not ln.startswith("elapsed ")))
        if result.failures:
            f = result.failures[0]
            raise StageError(f"the fixed workload failed: {f.verb} {f.errno} {f.reason}")
        pages = [int(v) for k, v in result.values if k == "pages"]
        seconds = int(elapsed) / 1e9 if elapsed.isdigit() and int(elapsed) > 0 else host
        runs.append((name, seconds, pages[0], pages[-1]))
    guest.run("rmmod zstest && rmmod zsmalloc")
    return min(runs, key=lambda sample: sample[1])


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
    timeline, errors = _perf(ctx, variants, rounds)
    if "base" in errors:
        result.perf_note = f"not measured: {errors['base']}"
        return
    base_runs = [sample for sample in timeline if sample[0] == "base"]
    ratios = paired_ratios(timeline)
    result.perf_noise = base_drift(timeline)
    result.perf_note = (
        f"one boot; {rounds} load(s) of each variant, each between two loads of the base "
        f"({PERF_REPEATS} runs per load, the best counts); speed is the median ratio to those "
        f"neighbours; neighbouring base loads differ by up to {result.perf_noise:.0%}, so "
        f"speed nearer 1 than that is noise; workload: {' / '.join(PERF_LINES[1:-1])}"
    )
    for step in result.steps:
        if step.built is None or step.perf_note:
            continue
        name = keys.get(step.built.key)
        if name is None:
            continue
        runs = [sample for sample in timeline if sample[0] == name]
        if name in errors or not runs or (name != "base" and name not in ratios):
            step.perf_note = f"not measured: {errors.get(name, 'no data')}"
            continue
        step.perf = Perf(
            pages=runs[0][2],
            base_pages=base_runs[0][2],
            pages_compacted=runs[0][3],
            base_pages_compacted=base_runs[0][3],
            seconds=statistics.median(s[1] for s in runs),
            base_seconds=statistics.median(s[1] for s in base_runs),
            speed=statistics.median(ratios[name]) if name != "base" else 1.0,
            pairs=len(ratios.get(name, [])),
        )
