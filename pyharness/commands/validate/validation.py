"""The whole validation: the kernels chosen, each provisioned and the series applied on it
(bad input fails before any build), then each kernel's checks, then the reports."""

from __future__ import annotations

import concurrent.futures
import contextlib
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ...check.scenarios import find as find_scenario
from ...guest import clients
from ...kernel.detect import api_of
from ...kernel.identity import DISTRO, KernelId
from ...kernel.manifest import Kernel
from ...kernel.provision import provision, source_for
from ...kernel.tree import describe, holding, tree_kernel_id
from ...kmod import render
from ...locking import locked
from ...paths import RESULTS
from ...progress import Progress, StageError
from ...report import new_results_dir
from ..config import Config
from .apply import AppliedSeries, apply_series
from .builder import WORK, Builder, Built
from .perf import PERF_ROUNDS, perf_steps
from .plan import Plan, make_plan, uses
from .pristine import TreeBase, full_tree, source_tree, tree_base, tree_source
from .report import write
from .results import CHECKS, Check, KernelResult, Step, Validation
from .series import Series, ValidateError, read_series
from .steps import Context, attribute, check_step, checkpatch_check, not_built_note


@dataclass(frozen=True)
class Target:
    """A kernel to validate on, and whether its variant was asked for."""

    kernel: KernelId
    chosen: bool = True  # the variant was asked for, not picked because distro cannot


def targets(names: Sequence[str], variant: str | None) -> list[Target]:
    """The kernels to validate on; refused, before anything slow, when one cannot be.

    Without a variant, a kernel whose Debian build has zsmalloc as a module (6.1)
    is Debian's, and one with zsmalloc built in (6.12, 7.2) is the source-built
    minimal kernel of the series (CONFIG_ZSMALLOC=m): only there can a patched
    zsmalloc.c be loaded as zsmalloc.ko.
    """
    found: list[Target] = []
    for name in dict.fromkeys(names):
        # An unknown series is refused here; its API facts are read once it is provisioned.
        distro = source_for(KernelId(name))
        if variant is None:
            picked = "minimal" if distro.zsmalloc_builtin else DISTRO
            found.append(Target(KernelId(name, picked), False))
            continue
        source_for(KernelId(name, variant))
        if variant == DISTRO and distro.zsmalloc_builtin:
            raise ValidateError(
                f"cannot validate zsmalloc patches on Debian's Linux {name}: it has zsmalloc "
                "built in (CONFIG_ZSMALLOC=y), so a patched mm/zsmalloc.c cannot be loaded as "
                "zsmalloc.ko next to it (modpost refuses a second export of every zs_*). "
                f"Use the source-built kernel of the series, which has CONFIG_ZSMALLOC=m: "
                f"--variant minimal (or debug), or leave --variant out"
            )
        found.append(Target(KernelId(name, variant)))
    return found


def tree_targets(trees: Sequence[Path], variant: str | None) -> list[Target]:
    """Kernels built from the user's trees (checked now, before anything slow); a tree's
    kernel has zsmalloc as a module, so its default variant serves (minimal)."""
    return [Target(tree_kernel_id(tree, variant), variant is not None) for tree in trees]


def _bases(
    wanted: Sequence[Target], series: Series, base: str | None, p: Progress
) -> dict[KernelId, TreeBase]:
    """The base of the series on each tree target, chosen (and said) before any build."""
    found: dict[KernelId, TreeBase] = {}
    for target in wanted:
        tree = target.kernel.tree
        if tree is None:
            continue
        chosen = tree_base(tree, base, series.base_commit)
        for note in chosen.notes:
            p.say(note)
        info = describe(tree)
        if info.get("tree_dirty") and chosen.commit is not None:
            p.say(
                f"{tree} has uncommitted changes: the kernel is built from its working state, "
                f"the series is applied on the files of {chosen.commit[:12]} ({chosen.how})"
            )
        elif chosen.how.startswith("--base") or chosen.how.endswith("base-commit"):
            head = info.get("tree_commit")
            if isinstance(head, str) and head != chosen.commit:
                p.say(
                    f"the kernel is built from {tree} as it is (HEAD {head[:12]}); the series "
                    f"is applied on the files of {chosen.commit[:12] if chosen.commit else '?'}"
                )
        found[target.kernel] = chosen
    return found


def _validate_on(
    ctx: Context,
    target: Target,
    series: Series,
    applied: AppliedSeries,
    plan: Plan,
    mails: Sequence[Path],
    perf_rounds: int,
) -> KernelResult:
    started = time.monotonic()
    kernel, directory, p = ctx.kernel, ctx.directory, ctx.p
    directory.mkdir(parents=True, exist_ok=True)
    work = WORK / target.kernel.slug
    work.mkdir(parents=True, exist_ok=True)
    result = KernelResult(
        kernel=target.kernel,
        release=kernel.release,
        package_version=kernel.package_version,
        source=applied.tree.label,
        base_blobs=applied.base_blobs,
        base_warnings=[],
        steps=[],
        clients=_clients_said(plan, ctx.label),
    )
    base_contents = dict(applied.base)
    # Runs on one kernel share the warm build directories: one at a time.
    with (
        locked(work / "validate.lock"),
        concurrent.futures.ThreadPoolExecutor(1) as builds,
        concurrent.futures.ThreadPoolExecutor(1) as styles,
    ):
        with p.stage("build"):
            rendered = render.render(kernel, ctx.api, "upstream", work / "rendered")
            builder = Builder(kernel, rendered, work, plan, base_contents)
            base = builder.build("base", base_contents, directory / "base")
            if not base.ok:
                raise StageError(
                    f"the unpatched {applied.tree.label} does not build on Linux {ctx.label}:\n"
                    f"{base.error}"
                )
            if plan.zswap and base.zswap != "ok":
                raise StageError(
                    f"the unpatched mm/zswap.c of {applied.tree.label} does not compile "
                    f"against Linux {plan.zswap_kernel.release if plan.zswap_kernel else '?'}:"
                    f"\n{base.zswap}"
                )
        result.base_warnings = list(base.warnings)
        outs = [directory / f"{i:02d}" for i in range(1, len(series.patches) + 1)]
        for out in outs:
            out.mkdir(exist_ok=True)
        styles_f = [
            styles.submit(checkpatch_check, kernel, mail, out / "checkpatch.txt")
            for mail, out in zip(mails, outs, strict=True)
        ]
        # Builds run ahead of the boots, on the host's spare core.
        builds_f: dict[int, concurrent.futures.Future[Built]] = {}
        previous = ""
        for i, app in enumerate(applied.steps, 1):
            if not app.ok:
                break
            contents = dict(app.contents)
            key = builder.key(contents)
            if key != previous:  # an unchanged state is carried over, not rebuilt
                builds_f[i] = builds.submit(builder.build, "step", contents, outs[i - 1])
            previous = key
        try:
            for i, patch in enumerate(series.patches, 1):
                step = Step(i, {}, directory=f"{target.kernel.slug}/{i:02d}")
                result.steps.append(step)
                if note := not_built_note(patch, plan):
                    step.notes.append(note)
                step.checks["checkpatch"] = styles_f[i - 1].result()
                check_step(ctx, step, applied, builds_f.get(i), result, base, plan)
                step.checks = {name: step.checks[name] for name in CHECKS}
        finally:
            pending: list[concurrent.futures.Future[Built] | concurrent.futures.Future[Check]]
            pending = [*builds_f.values(), *styles_f]
            for f in pending:
                f.cancel()
            builds.shutdown()
            builder.prune()
        attribute(ctx, result, base)
        if perf_rounds > 0:
            with p.stage("perf"):
                perf_steps(ctx, result, base, perf_rounds)
        else:
            result.perf_note = "density and speed not measured (--no-perf)"
    result.seconds = time.monotonic() - started
    return result


def _clients_said(plan: Plan, label: str) -> list[str]:
    """What the report says of zram and zswap on this kernel."""
    said = []
    if plan.zram:
        said.append(
            f"zram: the patched drivers/block/zram/ is built as zram.ko with each state's "
            f"zsmalloc.ko and round-trips data through /dev/zram0 in the suite's boot on "
            f"Linux {label}"
        )
    else:
        said.append(f"zram: {plan.zram_why}")
    if not plan.zswap_run_why:
        run = (
            f"the kernel's own zswap runs on each state's zsmalloc.ko (its zpool driver) in the "
            f"suite's boot on Linux {label}: the image's binaries paged out through it and "
            "read back"
        )
    else:
        run = f"not run on Linux {label}: {plan.zswap_run_why}"
    if plan.zswap and plan.zswap_kernel is not None:
        z = plan.zswap_kernel
        said.append(
            f"zswap: mm/zswap.c is compiled (zswap.o against Linux {z.release}, Debian's "
            f"{z.package_version} configuration with CONFIG_ZSWAP=y), its patched code is "
            f"never run (it is part of vmlinux); {run}"
        )
    else:
        said.append(f"zswap: {plan.zswap_why}; {run}")
    return said


def _results_dir(root: Path = RESULTS) -> Path:
    return new_results_dir("validate", root)


def _provision(
    target: Target, p: Progress, fragments: Sequence[Path] = (), cc: str | None = None
) -> Kernel:
    kernel = target.kernel
    if kernel.tree is not None:
        p.say(f"Linux {kernel.series}: the {kernel.variant} kernel built from {kernel.tree}")
    elif kernel.variant != DISTRO:
        why = "" if target.chosen else " (Debian's has zsmalloc built in)"
        p.say(f"Linux {kernel.series}: the source-built {kernel.variant} kernel{why}")
    return provision(kernel, p, fragments=fragments, cc=cc)


def _zswap_kernel(kernel: Kernel, p: Progress) -> tuple[Kernel | None, str]:
    """A kernel of the series with CONFIG_ZSWAP=y to compile zswap.o against, or why none."""
    if kernel.config("ZSWAP") == "y":
        return kernel, ""
    try:
        distro = provision(KernelId(kernel.series), p)
    except StageError as e:
        first = str(e).splitlines()[0]
        return None, f"Debian's Linux {kernel.series}, which has zswap, is not at hand: {first}"
    if distro.config("ZSWAP") != "y":
        return None, (
            f"neither Linux {kernel.release} nor Debian's {distro.release} has CONFIG_ZSWAP=y"
        )
    p.say(
        f"Linux {kernel.release} has no zswap: mm/zswap.c is compiled against Debian's "
        f"{distro.release} instead"
    )
    return distro, ""


def validate(
    config: Config,
    inputs: Sequence[Path],
    p: Progress,
    kernel_names: Sequence[str] = (),
    results_dir: Path | None = None,
    perf_rounds: int = PERF_ROUNDS,
    variant: str | None = None,
    trees: Sequence[Path] = (),
    base: str | None = None,
    fragments: Sequence[Path] = (),
    cc: str | None = None,
    scenarios: Sequence[str] = (),
    scenario_seconds: int | None = None,
    revision: int | None = None,
    tester: str | None = None,
) -> Validation:
    """Validate a series on each kernel; bad input raises ValidateError before any build.

    `variant` (distro, minimal, debug) applies to every kernel; by default, the
    configuration's VARIANT when it is source-built, else Debian's kernel where
    zsmalloc is a module and the source-built minimal kernel where it is built in.
    `trees`: kernels built from the user's trees too (only those without
    `kernel_names`), the series applied on `base` (a commit of each), else on the
    series' base-commit where the tree has it, else on its HEAD. `fragments` and `cc`
    change how the kernels are built (provision.with_build): source-built ones and trees.
    `scenarios` (check/scenarios) run after the suite in each patch's boot, with
    `scenario_seconds` as their deadline where given. `revision`: the series' vN to take
    from an input that holds several (default: the newest complete one). `tester`: the
    "Name <email>" of report.txt's Tested-by: line, written only when every check passed.
    """
    with contextlib.ExitStack() as held:  # each tree's lock, for the whole validation
        for tree in dict.fromkeys(trees):
            checked = tree_kernel_id(Path(tree)).tree  # a bad tree is refused before a lock
            held.enter_context(holding(checked, p))
        return _validate(
            config,
            inputs,
            p,
            kernel_names,
            results_dir,
            perf_rounds,
            variant,
            trees,
            base,
            fragments,
            cc,
            scenarios,
            scenario_seconds,
            revision,
            tester,
        )


def _validate(
    config: Config,
    inputs: Sequence[Path],
    p: Progress,
    kernel_names: Sequence[str],
    results_dir: Path | None,
    perf_rounds: int,
    variant: str | None,
    trees: Sequence[Path],
    base: str | None,
    fragments: Sequence[Path],
    cc: str | None,
    scenarios: Sequence[str],
    scenario_seconds: int | None,
    revision: int | None,
    tester: str | None,
) -> Validation:
    started = time.monotonic()
    for name in scenarios:  # an unknown name is refused before any build
        find_scenario(name)
    if base is not None and not trees:
        raise ValidateError("--base REV names a commit of a tree: it goes with --tree DIR")
    chosen = variant or (config.variant if config.variant != "distro" else None)
    wanted = targets(kernel_names or ([] if trees else [config.kernel]), chosen)
    wanted += tree_targets(trees, chosen)
    with p.stage("parse"):
        series = read_series(inputs, revision)
        p.say(f"{len(series.patches)} patch(es): {series.title}")
        for note in series.notes:
            p.say(note)
    bases = _bases(wanted, series, base, p)
    touched = {path for patch in series.patches for path in patch.touched()}
    provisioned: list[tuple[Target, Kernel, AppliedSeries, Plan]] = []
    with tempfile.TemporaryDirectory(prefix="zskit-validate-") as tmpdir:
        tmp = Path(tmpdir)
        mails = []
        (tmp / "patches").mkdir()
        for patch in series.patches:
            mails.append(tmp / "patches" / f"{patch.slug}.patch")
            mails[-1].write_bytes(patch.mail)
        for target in wanted:
            label = target.kernel.label
            with p.stage("provision"):
                kernel = _provision(target, p, fragments, cc)
                on = bases.get(target.kernel)
                files = tmp / f"base-{target.kernel.slug}"  # a tree's files at its base
                if on is not None:
                    tree = tree_source(on, touched, files)
                elif target.kernel.variant == DISTRO:
                    tree = source_tree(kernel, touched, p)
                else:
                    tree = full_tree(kernel)
                zswap_kernel, missing = None, ""
                if tree.has_file(clients.ZSWAP) and uses(tree, [clients.ZSWAP], touched):
                    zswap_kernel, missing = _zswap_kernel(kernel, p)
                plan = make_plan(series, tree, kernel, label, zswap_kernel, missing)
                if any(tree.has_file(f) and not (tree.root / f).is_file() for f in plan.paths):
                    if on is not None:
                        tree = tree_source(on, touched | set(plan.paths), files)
                    else:
                        tree = source_tree(kernel, touched | set(plan.paths), p)
            with p.stage("apply"):
                repo = tmp / f"repo-{target.kernel.slug}"
                applied = apply_series(series, tree, mails, repo, keep=plan.paths)
                shutil.rmtree(repo)  # every patched state is in `applied` now
                good = sum(1 for a in applied.steps if a.ok)
                p.say(f"{label}: {good} of {len(series.patches)} patch(es) apply on {tree.label}")
            provisioned.append((target, kernel, applied, plan))
        directory = results_dir or _results_dir()
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "patches").mkdir(exist_ok=True)
        saved = []
        for mail in mails:
            saved.append(directory / "patches" / mail.name)
            shutil.copy2(mail, saved[-1])
    validation = Validation(directory, series, [], tester=tester)
    for target, kernel, applied, plan in provisioned:
        # The suite runs on the kernel provisioned above, whatever .config says.
        cfg = config.with_overrides(
            kernel=kernel.series,
            allocator="upstream",
            variant=target.kernel.variant,
            tree=target.kernel.tree,
        )
        with p.stage("validate"), tempfile.TemporaryDirectory(prefix="zskit-validate-") as tmpdir:
            ctx = Context(
                cfg,
                kernel,
                directory / target.kernel.slug,
                Path(tmpdir),
                p,
                target.kernel.label,
                api_of(kernel),
                tuple(scenarios),
                scenario_seconds,
            )
            validation.kernels.append(
                _validate_on(ctx, target, series, applied, plan, saved, perf_rounds)
            )
    validation.seconds = time.monotonic() - started
    write(validation)
    return validation
