"""The checks of one patch's state on one kernel: apply, build, checkpatch, load, suite,
zram, zswap; and which patch brought a suite failure."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ...guest import clients, initramfs, qemu
from ...kernel.api import KernelApi
from ...kernel.manifest import Kernel
from ...kmod import build, render
from ...kmod.checkpatch import StyleReport, checkpatch
from ...progress import Progress, StageError
from ...report import Case, RunResult
from .. import run
from ..config import Config
from .apply import AppliedSeries
from .builder import Built, new_warnings
from .plan import Plan
from .pristine import BUILT, SOURCE
from .results import Check, KernelResult, Step
from .series import Patch

# Suite failures that say nothing against measuring the modules' density and speed.
MODEL_KINDS = (
    "model",
    "class-stats",
    "command-result",
    "values",
    "pages",
    "huge_class_size",
    "compacted",
)


def not_built_note(patch: Patch, plan: Plan | None = None) -> str | None:
    """What the patch touches that zskit applies but neither builds nor compiles, said plainly."""
    built = set(plan.paths) if plan else set(BUILT)
    not_built = [f for f in patch.touched() if f not in built]
    if not not_built:
        return None
    users = [f for f in not_built if f.startswith(clients.ZRAM_DIR) or f == clients.ZSWAP]
    why = (
        "zsmalloc's users zram and zswap are built only where the kernel allows; " if users else ""
    )
    return (
        f"not built by zskit: {', '.join(not_built)} ({why}zskit builds {SOURCE}, "
        "the headers it and its users include, and zram and zswap when they are exercised; "
        "the rest comes from the kernel's build tree)"
    )


def checkpatch_check(kernel: Kernel, mail: Path, out: Path) -> Check:
    try:
        report: StyleReport = checkpatch(kernel, mail, strict=False, patch=True)
    except StageError as e:
        return Check("error", f"checkpatch.pl did not run: {e}")
    findings = [f.replace(f"{mail}:", "patch line ", 1) for f in report.findings]
    out.write_text("\n".join(findings) + ("\n" if findings else ""))
    counts = f"{report.errors} errors, {report.warnings} warnings"
    if report.errors:
        return Check(
            "fail", f"checkpatch: {counts}", f"{report.errors}E {report.warnings}W", findings
        )
    if report.warnings:
        return Check("warn", f"checkpatch: {counts}", f"{report.warnings}W", findings)
    return Check("pass", "checkpatch clean")


def _build_check(built: Built, base: Built) -> Check:
    if not built.ok:
        error = built.error or "failed"
        lines = error.splitlines()
        return Check("fail", f"does not build: {lines[0].strip()}", details=lines)
    new = new_warnings(base.warnings, built.warnings)
    if new:
        return Check(
            "fail",
            f"builds with {len(new)} new compiler warning(s): {new[0]}",
            f"{len(new)} warn",
            new,
        )
    return Check("pass", "builds without new warnings")


CLIENTS = ("zram", "zswap")  # the suite's boot's round trips: cases of their own


def client_check(result: RunResult, name: str) -> Check | None:
    """The check of a round trip (zram, zswap) from its case, None when it did not run."""
    case = next((c for c in result.cases if c.name == name), None)
    if case is None:
        return None
    info = result.info.get(name)
    summary = str(info.get("summary")) if isinstance(info, dict) else f"{name} round trip"
    details = [str(d) for d in info.get("details", [])] if isinstance(info, dict) else []
    if case.failure is None:
        return Check("pass", summary)
    return Check("fail", summary, details=details or case.failure.splitlines())


def _suite_checks(result: RunResult) -> tuple[Check, Check, Check | None, str | None]:
    """(load, suite, zram or None when it did not run, failure kind) from a run of the suite."""
    zram = client_check(result, "zram")
    failure = next(
        (c for c in result.cases if c.failure is not None and c.name not in CLIENTS), None
    )
    if failure is None:
        batches = sum(1 for c in result.cases if c.name.startswith("batch-"))
        ops = result.info.get("operations", 0)
        summary = f"suite passes ({ops} operations in {batches} batches agree with the model)"
        return Check("pass", "loads"), Check("pass", summary), zram, None
    text = failure.failure or failure.name
    lines = text.splitlines()
    first = lines[0].removeprefix(f"{failure.name}: ")
    kind = failure.kind or "error"
    if failure.name == "boot":
        if "insmod" in text:
            load = Check("fail", f"the module does not load ({kind}): {first}", details=lines[:30])
        else:
            load = Check("error", f"the guest did not boot ({kind}): {first}", details=lines[:30])
        return load, Check("skip", "suite not run: nothing loaded"), zram, kind
    if failure.name.startswith("scenario-"):
        summary = f"suite passes, {failure.name} fails ({kind}): {first}"
        return Check("pass", "loads"), Check("fail", summary, details=lines[:30]), zram, kind
    if failure.name not in ("test", "geometry") and not failure.name.startswith("batch-"):
        load = Check("skip", f"not known: {failure.name} failed")
        return load, Check("error", f"{failure.name} failed: {first}"), zram, kind
    what = {
        "data": "data corrupted",
        "crash": "kernel crash",
        "timeout": "the guest hung",
        "protocol": "the driver broke its protocol",
        "exited": "QEMU exited",
        "command": "a guest command failed",
    }.get(kind, "the model disagrees")
    summary = f"suite fails, {what} ({kind}): {first}"
    if kind in MODEL_KINDS:
        summary += (
            " (if the patch changes the allocator's rules on purpose, pyharness/model/ must "
            "learn them)"
        )
    return Check("pass", "loads"), Check("fail", summary, details=lines[:30]), zram, kind


@dataclass
class Context:
    """What the checks of one kernel share: its configuration, kernel and directories."""

    config: Config
    kernel: Kernel
    directory: Path  # this kernel's results
    tmp: Path
    p: Progress
    label: str  # the kernel as the progress lines name it (KernelId.label)
    api: KernelApi  # the kernel's zsmalloc API facts (kernel/detect.py)
    scenarios: tuple[str, ...] = ()  # run after the suite in each boot (check/scenarios)
    scenario_seconds: int | None = None  # their deadline; None: each one's own


def _clients_after(
    page_size: int, zram: bool, zswap: bool, guest: qemu.Guest, result: RunResult, p: Progress
) -> None:
    """The zram and zswap round trips, in the suite's boot after its workload: a case each."""
    trips: list[tuple[str, Callable[[], clients.ZramResult]]] = []
    if zram:
        trips.append(
            ("zram", lambda: clients.zram_round_trip(guest, initramfs.BUILT_ZRAM, page_size))
        )
    if zswap:
        trips.append(("zswap", lambda: clients.zswap_round_trip(guest, page_size)))
    for name, trip in trips:
        if guest.child is None:  # an earlier round trip crashed the guest
            break
        start = time.monotonic()
        try:
            got = trip()
        except StageError as e:  # the guest crashed or hung: the case says so
            kind = getattr(e, "kind", "error")
            lines = str(e).splitlines()
            got = clients.ZramResult(False, f"{name} round trip: {kind}: {lines[0]}", lines, kind)
        failure = None if got.ok else got.summary + "".join(f"\n{d}" for d in got.details)
        result.cases.append(Case(name, time.monotonic() - start, failure, got.kind))
        info: dict[str, object] = {"summary": got.summary, "details": got.details}
        if name == "zram":
            info["mm_stat"] = got.mm_stat
        result.info[name] = info
        p.say(got.summary)


def _run_suite(ctx: Context, built: Built, out: Path, zswap: bool) -> RunResult:
    """The default suite on these modules, through run.run (its own results directory);
    then, with a zram.ko, the zram round trip in the same boot, and with `zswap` the
    kernel's zswap on the patched zsmalloc.ko."""
    image = run.guest_image(ctx.kernel, built.modules, ctx.tmp / f"{out.parent.name}.cpio", ctx.p)
    allocator = [m for m in built.modules if m.name in ("zsmalloc.ko", "zstest.ko")]
    # zram.ko is in the image, loaded by the round trip, not at boot.
    image = dataclasses.replace(
        image, modules=tuple(f"/{initramfs.MODULE_DIR}/{m.name}" for m in allocator)
    )
    sources = render.RenderedSources(out.parent / "sources", built.sources, ("zsmalloc", "zstest"))
    prepared = run.Prepared(
        ctx.kernel, ctx.api, sources, build.BuildResult(tuple(allocator), built.warnings), image
    )
    zram = built.module("zram") is not None
    after = (
        functools.partial(_clients_after, ctx.api.geometry.page_size, zram, zswap)
        if zram or zswap
        else None
    )
    with (out.parent / "zskit.log").open("w") as log:
        progress = Progress(verbose=ctx.p.verbose, out=ctx.p.out if ctx.p.verbose else log)
        options = run.RunOptions(
            results_dir=out,
            after=after,
            scenarios=ctx.scenarios,
            scenario_seconds=ctx.scenario_seconds,
        )
        return run.run(ctx.config, progress, options, prepared=prepared)


def check_step(
    ctx: Context,
    step: Step,
    applied: AppliedSeries,
    future: concurrent.futures.Future[Built] | None,
    result: KernelResult,
    base: Built,
    plan: Plan,
) -> None:
    """Fill a step's apply, build, load, suite, zram and zswap checks."""
    i = step.patch
    app = applied.steps[i - 1] if i <= len(applied.steps) else None
    runs = ("build", "load", "suite", "zram", "zswap")
    if app is None:
        why = f"not tested: patch {len(applied.steps)} does not apply"
        for name in ("apply", *runs):
            step.checks[name] = Check("skip", why)
        return
    if not app.ok:
        first = app.rejects[0].splitlines()[0]
        step.checks["apply"] = Check("fail", f"does not apply: {first}", details=list(app.rejects))
        for name in runs:
            step.checks[name] = Check("skip", "not built: the patch does not apply")
        return
    step.checks["apply"] = Check("pass", "applies")
    if future is None:  # nothing built differs from the previous patch's state
        prev = result.steps[i - 2]
        for name in runs:
            c = prev.checks[name]
            step.checks[name] = Check(c.status, c.summary, c.cell, list(c.details))
        step.built, step.suite_kind = prev.built, prev.suite_kind
        step.notes.append(
            f"no built file changes: build, load, suite, zram and zswap are those of patch {i - 1}"
        )
        return
    with ctx.p.stage("build"):
        try:
            built = future.result()
        except (StageError, OSError) as e:
            step.checks["build"] = Check("error", f"the build could not run: {e}")
            built = None
    step.checks["zram"] = Check("skip", plan.zram_why or "not run: no zram.ko was built")
    step.checks["zswap"] = _zswap_check(built, plan)
    if built is None:
        for name in ("load", "suite"):
            step.checks[name] = Check("skip", "not run: no build")
        return
    step.built = built
    step.checks["build"] = _build_check(built, base)
    how = "cached" if built.cached else f"{built.seconds:.1f} s"
    ctx.p.say(f"{ctx.label} #{i}: {step.checks['build'].summary} ({how})")
    if not built.ok:
        for name in ("load", "suite"):
            step.checks[name] = Check("skip", "not run: the build failed")
        if plan.zram:
            step.checks["zram"] = Check("skip", "not run: the build failed")
        return
    with ctx.p.stage("suite"):
        ctx.p.say(f"{ctx.label} #{i}: booting the suite ({step.directory}/suite)")
        run_result = _run_suite(
            ctx, built, ctx.directory / f"{i:02d}" / "suite", not plan.zswap_run_why
        )
    load, suite, zram, kind = _suite_checks(run_result)
    step.checks["zswap"] = _zswap_check(built, plan, client_check(run_result, "zswap"))
    step.checks["load"], step.checks["suite"] = load, suite
    if zram is not None:
        step.checks["zram"] = zram
    elif plan.zram:
        step.checks["zram"] = Check("skip", "not run: the suite's boot ended before it")
    step.suite_kind = kind
    ctx.p.say(f"{ctx.label} #{i}: {suite.summary}")


def _zswap_check(built: Built | None, plan: Plan, ran: Check | None = None) -> Check:
    """mm/zswap.c compiled (when the series touches it) and the kernel's zswap run on the
    patched zsmalloc.ko (where the kernel lets it: `ran`, None before the suite's boot)."""
    compiled: Check | None = None
    if plan.zswap and plan.zswap_kernel is not None:
        against = f"against Linux {plan.zswap_kernel.release} (CONFIG_ZSWAP=y)"
        if built is None or not built.ok:
            compiled = Check("skip", "not compiled: the modules' build failed first")
        elif built.zswap == "ok":
            compiled = Check("pass", f"mm/zswap.c compiles {against}", "cc")
        else:
            lines = built.zswap.splitlines()
            compiled = Check(
                "fail", f"mm/zswap.c does not compile {against}: {lines[0]}", details=lines
            )
    if compiled is not None and compiled.status == "fail":
        return compiled
    if ran is not None and ran.status == "fail":
        return ran
    if ran is not None:
        also = f"; {compiled.summary}" if compiled is not None and compiled.status == "pass" else ""
        return Check("pass", ran.summary + also, "run")
    not_run = plan.zswap_run_why or "the suite's boot ended before it"
    if compiled is not None and compiled.status == "pass":
        return Check("pass", f"{compiled.summary}; not run: {not_run}", "cc")
    return Check("skip", f"{plan.zswap_why}; not run: {not_run}")


def attribute(ctx: Context, result: KernelResult, base: Built) -> None:
    """Say which patch brought each suite failure; the base runs only when nothing before
    the first failure passed."""
    base_passes: bool | None = None
    for step in result.steps:
        suite = step.checks["suite"]
        if suite.status != "fail":
            continue
        before = result.steps[: step.patch - 1]
        passed = [s.patch for s in before if s.checks["suite"].status == "pass"]
        last = passed[-1] if passed else 0
        between = before[last:]  # the patches after the last that passed
        if not passed and base_passes is None:
            with ctx.p.stage("suite"):
                ctx.p.say(f"{ctx.label}: running the base's suite, to compare")
                base_run = _run_suite(ctx, base, ctx.directory / "base" / "suite", False)
            _, base_suite, _, kind = _suite_checks(base_run)
            result.base_suite = base_suite.summary
            base_passes = kind is None
        if not passed and not base_passes:
            suite.summary += "; the base fails the suite too: not this series' doing"
        elif not between:
            since = f"patch {last}" if last else "the base"
            suite.summary += f"; {since} passed, so this patch brings the failure"
        elif all(s.checks["suite"].status == "fail" for s in between):
            suite.summary += f"; failing since patch {between[0].patch}"
        else:
            since = f"patch {last}" if last else "the base"
            after = ", ".join(
                f"{s.patch} {'failed' if s.checks['suite'].status == 'fail' else 'not run'}"
                for s in between
            )
            suite.summary += f"; {since} is the last that passed (then patches {after})"
