"""The `zskit` command: each stage a subcommand, and `run` for all of them.

Each subcommand's help is its function's docstring; options shared by
several commands are added by the add_*_opt(s) helpers, so they read the
same everywhere.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from debian.debian_support import Version

from .. import model
from ..check import corpus, scenarios
from ..guest.triage import find_crash
from ..kernel import arch as arch_mod
from ..kernel.api import api_for
from ..kernel.archive import Offer, archive_offers, newest_suite
from ..kernel.identity import VARIANTS, series_key
from ..kernel.provision import SOURCES, cached_variants, provision
from ..kernel.tree import tree_api
from ..kmod import render
from ..kmod.external import parse_module_args
from ..progress import Progress, StageError
from . import b4check, compare, dev, external, matrix, perf, selftest, validate
from . import config as config_mod
from .bench import density, figures
from .bench import loop as bench_loop
from .run import RunOptions, read_replay, run


def _config(args: argparse.Namespace) -> config_mod.Config:
    kernel, allocator = getattr(args, "kernel", None), getattr(args, "allocator", None)
    variant, tree = getattr(args, "variant", None), getattr(args, "tree", None)
    machine = _arch(args)
    if name := getattr(args, "entry", None):
        if kernel or allocator or variant or tree or machine:
            raise StageError(
                "--entry names the kernel, allocator, variant and machine; drop --kernel/"
                "--allocator/--variant/--tree/--arch/--page-size"
            )
        entry = matrix.find_entry(name)
        kernel, allocator, variant = entry.kernel.series, entry.allocator, entry.kernel.variant
        machine = entry.kernel.arch
        if entry.kernel.tree is not None:
            kernel, tree = None, str(entry.kernel.tree)
    cfg = config_mod.load()
    if tree is not None:  # the tree names the series; its variant is never "distro"
        cfg = cfg.with_tree(Path(tree), variant)
        variant = None
    return cfg.with_overrides(
        kernel=kernel,
        allocator=allocator,
        variant=variant,
        accel=getattr(args, "accel", None),
        workload_ops=getattr(args, "ops", None),
        workload_seed=getattr(args, "seed", None),
        workload_probes=_probes(getattr(args, "probes", None)),
        workload_batch=getattr(args, "batch", None),
        workload_churn_percent=getattr(args, "churn", None),
        config_fragments=_fragments(args) or None,
        cc=getattr(args, "cc", None),
        transport=getattr(args, "transport", None),
        arch=machine,
    )


def _arch(args: argparse.Namespace) -> str | None:
    """The target --arch and --page-size name (None: the configured one)."""
    arch, page_size = getattr(args, "arch", None), getattr(args, "page_size", None)
    if arch is None and page_size is None:
        return None
    if arch is None:  # a page size for the configured machine's architecture
        arch = arch_mod.TARGETS[config_mod.load().arch].arch
    return arch_mod.target(arch, page_size).name


def _fragments(args: argparse.Namespace) -> tuple[Path, ...]:
    """--config-fragment FILE..., absolute, each checked to be a readable file."""
    found = []
    for name in getattr(args, "config_fragment", None) or ():
        path = Path(name).expanduser().resolve()
        if not path.is_file():
            raise StageError(f"--config-fragment {name}: no such file")
        found.append(path)
    return tuple(found)


def cmd_run(args: argparse.Namespace, p: Progress) -> int:
    """Build, boot and check the workload.

    Provisions the kernel, renders and builds the allocator and zstest, boots
    them and checks every batch against the model; with the own allocator the
    kernel's zsmalloc then runs its suite in the same boot (RUN_BASELINE).
    """
    if any(getattr(args, key, None) is not None for key in ("module", *MODULE_ONLY)):
        return cmd_run_module(args, p)
    cfg = _config(args)
    batches = read_replay(Path(args.replay)) if getattr(args, "replay", None) else None
    results_dir = Path(args.results_dir) if getattr(args, "results_dir", None) else None
    baseline = getattr(args, "baseline", None)
    if baseline and (cfg.allocator != "own" or batches is not None):
        raise StageError("--baseline goes with --allocator own and the default workload")
    chosen = tuple(getattr(args, "scenario", None) or ())
    if baseline and chosen:
        raise StageError("--baseline and --scenario do not go together: run one, then the other")
    if baseline is None:  # RUN_BASELINE decides for ours, unless a matrix entry is run
        entry = getattr(args, "entry", None)
        baseline = cfg.baseline and cfg.allocator == "own" and batches is None and not entry
        baseline = baseline and not chosen
    if baseline:
        plan = compare.Plan(measure=False)
        result, _ = compare.compare(cfg, p, plan, results_dir=results_dir, refresh=args.refresh)
    else:
        options = RunOptions(
            refresh=args.refresh,
            batches=batches,
            results_dir=results_dir,
            scenarios=chosen,
            scenario_ops=getattr(args, "scenario_ops", None),
            scenario_seconds=getattr(args, "scenario_seconds", None),
            scenario_repeat=getattr(args, "scenario_repeat", None) or 1,
            tree_tests=getattr(args, "tree_tests", True),
        )
        result = run(cfg, p, options)
    p.say(p.summary())
    target = cfg.kernel_id.label
    failure = result.first_failure
    if failure is None:
        also = [k.removesuffix("_suite") for k in result.info if k.endswith("_suite")]
        own = result.info.get("tree_tests")
        print(
            f"PASS: Linux {target} / {cfg.allocator}: {result.info.get('operations', 0)} "
            "operations agree with the model"
            + "".join(f", and on {a} in the same boot" for a in also)
            + (f"; the tree's own {len(own)} tests pass" if isinstance(own, dict) and own else "")
            + f" ({result.directory})"
        )
        return 0
    print(f"FAIL: Linux {target} / {cfg.allocator}: {failure.name} ({failure.kind})")
    print(failure.failure)
    print(f"results and console log: {result.directory}")
    return 1


MODULE_ONLY = ("module_args", "module_timeout", "settle", "memory")
NOT_WITH_MODULE = {
    "baseline": "--baseline",
    "scenario": "--scenario",
    "ops": "--ops",
    "seed": "--seed",
    "batch": "--batch",
    "churn": "--churn",
}


def cmd_dev(args: argparse.Namespace, p: Progress) -> int:
    """A warm guest for an editing session: a verdict on every edit, in seconds.

    Boots once and runs the suite; then on every change of what the run builds from
    (the kmod/ templates, .config, a tree's mm/zsmalloc.c and the headers it includes)
    rebuilds the modules, reloads them in the same guest over the fast channel, runs
    the suite again and prints one verdict line with the time from the edit. It boots
    afresh only when it must: a crash, a module that does not unload, a changed kernel,
    or a guest without the fast channel. Ctrl-C ends it; no QEMU outlives it.
    """
    _config(args)  # the options' errors now, before anything is built
    results_dir = Path(args.results_dir) if args.results_dir else None
    return dev.dev(
        lambda: _config(args), verbose=p.verbose, results_dir=results_dir, refresh=args.refresh
    )


def cmd_bench(args: argparse.Namespace, p: Progress) -> int:
    """Figures measured on this machine: memory on real data (default), or `loop`.

    `zskit bench` (`make qemu-bench`): the corpora (synthetic, text, binaries or a
    directory of yours), compressed in the guest by the kernel's compressors, stored by
    ours, the kernel's zsmalloc and kmalloc, each command checked against the model, then
    through the kernel's zram on both zsmalloc and its zswap on zbud, z3fold and zsmalloc
    where it has them: pool bytes per compressed byte, utilisation, pages by class, what
    freeing and compaction leave, the seed's claim against kmalloc. Writes bench.json,
    bench.md and plots.
    `zskit bench corpus` builds the corpora only and prints their hashes.

    `zskit bench loop` (`make bench-loop`): warm `zskit run` of the default target, `zskit
    dev`'s edit-to-verdict after an edit of a template and of a tree's mm/zsmalloc.c, and
    a million checked operations at the default churn share and at 98%: each over the
    fast channel and over the serial shell, side by side in one run.
    """
    if args.what == "loop":
        directory = bench_loop.loop(p, repeats=args.repeats, million=not args.no_million)
        print((directory / "bench.md").read_text(), end="")
        print(f"results: {directory}")
        return 0
    size = corpus.parse_size(args.size)
    names = args.corpus.split(",")
    cfg = _config(args)
    if args.what == "corpus":
        with p.stage("provision"):
            kernel = provision(cfg.kernel_id, p, args.refresh, fragments=cfg.config_fragments)
        for name in names:
            c = corpus.build(name, size, kernel)
            print(f"{c.name}: {c.path} ({c.pages} pages) sha256 {c.sha256}; {c.source}")
        return 0
    result, measured = density.density(
        cfg,
        p,
        allocators=args.allocators.split(",") if args.allocators else None,
        corpus_names=names,
        size=size,
        compressors=args.compressors.split(","),
        results_dir=Path(args.results_dir) if args.results_dir else None,
    )
    if measured is not None:
        print(figures.markdown(measured), end="")
    failure = result.first_failure
    if failure is not None:
        print(f"FAIL: {failure.name} ({failure.kind})\n{failure.failure}")
    print(f"results: {result.directory} (bench.json, bench.md, *.png, *.svg)")
    return 0 if failure is None else 1


def cmd_run_module(args: argparse.Namespace, p: Progress) -> int:
    """`zskit run --module`: an external test module against the allocator under test."""
    if args.module is None:
        given = [f"--{k.replace('_', '-')}" for k in MODULE_ONLY if getattr(args, k) is not None]
        raise StageError(f"{', '.join(given)}: only with --module FILE.c|DIR")
    clashes = [flag for key, flag in NOT_WITH_MODULE.items() if getattr(args, key, None)]
    if clashes:
        raise StageError(
            f"--module runs the module's own test, not the workload: drop {', '.join(clashes)}"
        )
    options = external.ModuleOptions(
        path=Path(args.module),
        args=parse_module_args(args.module_args),
        timeout=args.module_timeout,
        settle=external.SETTLE_SECONDS if args.settle is None else args.settle,
        results_dir=Path(args.results_dir) if args.results_dir else None,
        refresh=args.refresh,
    )
    source = external.check_options(options)  # before the configuration and provisioning
    cfg = _config(args).with_overrides(memory_mb=args.memory)
    result = external.run_module(cfg, p, options)
    p.say(p.summary())
    output = (result.directory / "module.log").read_text()
    if output:
        print(f"--- output of {source.name} (kernel log from its insmod) ---")
        print(output, end="")
        print("---")
    target = f"Linux {cfg.kernel_id.label} / {cfg.allocator}"
    warnings = result.info.get("module_warnings")
    for warning in warnings if isinstance(warnings, list) else []:
        print(f"warning: {warning}")
    failure = result.first_failure
    if failure is None:
        untested = (
            " (it does not call the allocator under test: see the warning)" if warnings else ""
        )
        print(
            f"PASS: {target}: module {source.name} loaded, no kernel report{untested} "
            f"({result.directory})"
        )
        return 0
    print(f"FAIL: {target}: module {source.name}: {failure.name} ({failure.kind})")
    print(failure.failure)
    print(f"results and console log: {result.directory}")
    return 1


def cmd_replay(args: argparse.Namespace, p: Progress) -> int:
    """Rerun a saved batches.txt or replay file, checked."""
    return cmd_run(args, p)


def cmd_matrix(args: argparse.Namespace, p: Progress) -> int:
    """Run the kernel matrix (MATRIX_* options) in parallel.

    Each entry runs as its own `zskit run`; the merged results (JUnit, KTAP,
    kernelci.json) land in build/results/matrix-<stamp>/.
    """
    config_file = Path(args.config) if args.config else None
    if config_file is not None and not config_file.is_file():
        raise StageError(f"no configuration {config_file}; presets are configs/*_defconfig")
    if args.json and not args.list:
        raise StageError("--json goes with --list")
    if args.merge:
        outcomes = matrix.collect(Path(args.merge))
        matrix.write_merged(Path(args.merge), outcomes)
        merged = matrix.MatrixResult(Path(args.merge), outcomes, seconds=None)
        print(matrix.summary(merged))
        print(f"merged results: {args.merge} (junit.xml, results.ktap, kernelci.json)")
        return 0 if merged.passed else 1
    cfg = config_mod.load(dotconfig=config_file)
    if args.tree:  # trees of this run, after MATRIX_TREES
        trees = tuple(Path(t).expanduser() for t in args.tree)
        cfg = dataclasses.replace(cfg, matrix_trees=(*cfg.matrix_trees, *trees))
    cfg = dataclasses.replace(cfg, config_fragments=_fragments(args), cc=args.cc)
    if args.list:
        entries = matrix.selected(cfg)
        if args.json:
            print(json.dumps([e.as_dict() for e in entries]))
        else:
            rows = [("name", "kernel", "allocator", "variant", "machine")]
            rows += [
                (e.name, e.kernel.series, e.allocator, e.kernel.variant, e.kernel.arch)
                for e in entries
            ]
            widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
            for row in rows:
                print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        return 0
    with p.stage("matrix"):
        result = matrix.run_matrix(
            cfg, p, jobs=args.jobs, config_file=config_file, accel=args.accel
        )
    print(matrix.summary(result))
    print(f"merged results: {result.directory} (junit.xml, results.ktap, kernelci.json)")
    if result.interrupted:
        return 130
    return 0 if result.passed else 1


def cmd_validate(args: argparse.Namespace, p: Progress) -> int:
    """Validate a patch series for review, patch by patch.

    Every cumulative state of the series is applied onto the kernel's pristine
    source, built, style-checked and run through the suite (zram and zswap
    where the series reaches them), then measured against the base.
    """
    cfg = config_mod.load().with_overrides(
        accel=args.accel,
        workload_ops=args.ops,
        workload_seed=args.seed,
        workload_probes=_probes(args.probes),
    )
    result = validate.validate(
        cfg,
        [Path(i) for i in args.inputs],
        p,
        kernel_names=args.kernel or (),
        results_dir=Path(args.results_dir) if args.results_dir else None,
        perf_rounds=0 if args.no_perf else validate.PERF_ROUNDS,
        variant=args.variant,
        trees=[Path(t) for t in args.tree or ()],
        base=args.base,
        fragments=_fragments(args),
        cc=args.cc,
        scenarios=tuple(args.scenario or ()),
        scenario_seconds=args.scenario_seconds,
        revision=args.revision,
        tester=args.tested_by or validate.git_identity(),
    )
    print(validate.summary(result))
    print(f"report: {result.directory / 'report.md'} (report.txt, results.json)")
    return 0 if result.passed else 1


def cmd_b4_check(args: argparse.Namespace, p: Progress) -> int:
    """Validate the message on standard input as a b4 review check command.

    b4 (review-perpatch-check-cmd, review-series-check-cmd) pipes one message: a
    patch (`patch`), or a series' cover letter or first patch (`series`). The
    answer on standard output is the JSON array b4 reads: one result per check
    (apply, build, checkpatch, suite, zram, zswap, cost), bad input included.
    Exit status 1 when a check failed. Progress goes to standard error.
    """
    cfg = config_mod.load().with_overrides(accel=args.accel)
    results = b4check.check(
        args.mode,
        sys.stdin.buffer.read(),
        cfg,
        p,
        kernels=args.kernel or (),
        trees=[Path(t) for t in args.tree or ()],
        variant=args.variant,
        perf=not args.no_perf,
    )
    sys.stdout.write(json.dumps(results, indent=2) + "\n")
    return b4check.exit_status(results)


def cmd_selftest(args: argparse.Namespace, p: Progress) -> int:
    """The checker's own score: planted historical bugs must be caught, benign changes pass.

    `historical` runs tests/historical/corpus.py (zsmalloc and zram bugs upstream fixed,
    2019-2026, and benign upstream changes), each as a one-patch series through
    `zskit validate`, and prints "caught k of N" and "false alarms b of B" with the check
    that caught each bug. Entries whose kernel variant zskit cannot build yet are not run.
    """
    if args.list:
        for entry in selftest.load_corpus().ENTRIES:
            kind = "benign" if entry.benign else "bug"
            print(f"{entry.name:40} {kind:6} {entry.series:4} {entry.variant:12} {entry.scenario}")
        return 0
    cfg = config_mod.load().with_overrides(accel=args.accel)
    score, directory = selftest.historical(
        cfg,
        p,
        only=args.only or (),
        allow_provision=args.provision,
        results_dir=Path(args.results_dir) if args.results_dir else None,
    )
    print(selftest.table(score))
    print()
    print("\n".join(score.lines()))
    print(f"results: {directory} (summary.txt, results.json; one directory per entry)")
    failed = score.count(True, "false-alarm", "error") + score.count(False, "error")
    return 1 if failed else 0


def cmd_compare(args: argparse.Namespace, p: Progress) -> int:
    """Our zsmalloc against the kernel's in one boot: density, speed, zram."""
    plan = compare.Plan(
        bench_n=args.bench_objects or perf.BENCH_N,
        loads=args.loads or compare.SPEED_LOADS,
        zram=not args.no_zram,
    )
    results_dir = Path(args.results_dir) if args.results_dir else None
    result, comparison = compare.compare(
        _config(args), p, plan, results_dir=results_dir, refresh=args.refresh
    )
    p.say(p.summary())
    if comparison is not None and comparison.benches:
        print(comparison.table())
        density, speed = comparison.density(), comparison.speed()
        print(
            "own/"
            + comparison.baseline
            + ": "
            + ", ".join(f"{k} pages {v}" for k, v in density.items())
            + f"; ns/op {speed.get('total', '-')}"
        )
    failure = result.first_failure
    if failure is not None:
        print(f"FAIL: {failure.name} ({failure.kind})\n{failure.failure}")
    print(f"results: {result.directory} (compare.md, compare.json)")
    return 0 if failure is None else 1


def cmd_provision(args: argparse.Namespace, p: Progress) -> int:
    """Fetch the kernel into the cache."""
    cfg = _config(args)
    kernel = provision(cfg.kernel_id, p, args.refresh, fragments=cfg.config_fragments, cc=cfg.cc)
    print(
        f"{kernel.release} ({kernel.package_version}, {kernel.variant})\n"
        f"  image  {kernel.vmlinuz}\n"
        f"  kdir   {kernel.kdir}\n  source {kernel.source}"
    )
    if kernel.toolchain is not None:
        print(f"  root   {kernel.toolchain} (modules are built chrooted there)")
    return 0


def cmd_kernels(args: argparse.Namespace, p: Progress) -> int:
    """The kernel series Debian's archive carries, which zskit runs, and which are cached.

    The archive is asked (a private apt index in the cache, refreshed daily or
    with --refresh). A series outside zskit's table runs from the suite with its
    newest version ("via <suite>").
    """
    offers, note = archive_offers(p, refresh=args.refresh)
    by_series: dict[str, list[Offer]] = {}
    for offer in offers:
        by_series.setdefault(offer.series, []).append(offer)
    known = {series for variant in SOURCES.values() for series in variant}
    rows = [("series", "in Debian's archive (suite version)", "zskit runs", "cached")]
    for series in sorted(by_series.keys() | known, key=series_key):
        newest: dict[str, str] = {}
        for offer in by_series.get(series, []):
            if offer.suite not in newest or Version(offer.version) > Version(newest[offer.suite]):
                newest[offer.suite] = offer.version
        archive = ", ".join(f"{suite} {version}" for suite, version in newest.items()) or "-"
        runs = ", ".join(v for v, by in SOURCES.items() if series in by)
        if not runs:  # from the archive's suite with its newest version
            runs = f"{', '.join(SOURCES)} via {newest_suite(offers, series)}"
        cached = cached_variants(series)
        rows.append((series, archive, runs, ", ".join(cached) or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    print(f"({note})" if note else "")
    return 0


def cmd_parse(args: argparse.Namespace, p: Progress) -> int:
    """Triage a saved console log."""
    try:
        # Bytes, not read_text(): newline translation would shift the line numbers.
        text = Path(args.log).read_bytes().decode(errors="replace")
    except OSError as e:
        raise StageError(f"cannot read {args.log}: {e.strerror}") from e
    crash = find_crash(text)
    if crash is None:
        print("no kernel failure in the log")
        return 0
    print(f"{crash.headline()} (line {crash.line})\n{crash.excerpt}")
    return 1


def cmd_render(args: argparse.Namespace, p: Progress) -> int:
    """Write the own allocator into a kernel source tree."""
    tree = Path(args.tree)
    api = tree_api(tree)  # detected from the tree's own files, before they are replaced
    for path in render.render_into_tree(tree, api, config_mod.load().own):
        print(f"wrote {path}")
    print("build it in the tree as mm/zsmalloc.c (CONFIG_ZSMALLOC=y or m)")
    return 0


def cmd_model(args: argparse.Namespace, p: Progress) -> int:
    """The reference model's class table."""
    physmem = args.physmem_bits or (52 if args.bits == 64 else 36)
    geometry = model.Geometry(model.PAGE_SIZES[args.page_size], args.bits, physmem)
    if args.policy == "own":  # the own allocator, as the .config's OWN_* options render it
        series = args.kernel or config_mod.load().kernel
        api = dataclasses.replace(api_for(series), geometry=geometry)
        pol = config_mod.load().own.policy(api)
    else:
        pol = model.policy(args.policy, chain_size=args.chain, geometry=geometry)
    if args.what == "huge-size":
        print(model.huge_class_size(pol))
        return 0
    print("index,size,pages_per_zspage,objs_per_zspage")
    for c in model.class_table(pol):
        print(f"{c.index},{c.size},{c.pages_per_zspage},{c.objs_per_zspage}")
    return 0


ACCELS = ["auto", "tcg", "kvm"]


def cmd_scenarios(args: argparse.Namespace, p: Progress) -> int:
    """List the scenarios `zskit run --scenario NAME` runs after the workload.

    Each is bounded by an operation count and a deadline (--scenario-ops,
    --scenario-seconds) and says on how many CPUs it ran; `needs` names the
    kernel options it requires (the debug variant has fault injection).
    """
    for name, s in sorted(scenarios.SCENARIOS.items()):
        needs = ", ".join(f"CONFIG_{k}={v}" for k, v in s.needs.items()) or "-"
        print(f"{name:16} {s.summary}")
        print(f"{'':16} default {s.operations} {s.unit}, {s.seconds} s; needs {needs}")
    return 0


def add_command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    func: Callable[[argparse.Namespace, Progress], int],
) -> argparse.ArgumentParser:
    """A subcommand whose help is its function's docstring: the first line, then the rest."""
    doc = inspect.getdoc(func) or ""
    sp = sub.add_parser(
        name,
        help=(doc[:1].lower() + doc.splitlines()[0][1:].rstrip(".")) if doc else None,
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sp.set_defaults(func=func)
    return sp


def add_page_size_opt(sp: argparse.ArgumentParser, default: str | None = None) -> None:
    """--page-size, spelled the same by every command."""
    sp.add_argument(
        "--page-size",
        choices=list(model.PAGE_SIZES),
        default=default,
        help=f"PAGE_SIZE (default: {default or 'the smallest the architecture has'})",
    )


def add_kernel_opts(sp: argparse.ArgumentParser) -> None:
    """Which kernel: --kernel or --tree, --variant, and --refresh of its cached copy."""
    which = sp.add_mutually_exclusive_group()
    which.add_argument("--kernel", help="kernel series (default: KERNEL in .config)")
    which.add_argument(
        "--tree",
        metavar="DIR",
        help="build the kernel from your own kernel tree (never written to: the build goes "
        "to the cache with O=, and an edit rebuilds only what changed)",
    )
    sp.add_argument(
        "--variant",
        choices=list(VARIANTS),
        help="distro: Debian's kernel; minimal, debug: built from linux-source or --tree "
        "(VARIANT; a tree's default is minimal)",
    )
    sp.add_argument(
        "--arch",
        choices=list(arch_mod.ARCHES),
        help="the guest's architecture (ARCH in `make menuconfig`; default x86_64): other "
        "machines boot Debian's kernels under TCG",
    )
    add_page_size_opt(sp)
    sp.add_argument("--refresh", action="store_true", help="re-resolve and refetch the kernel")


def add_build_opts(sp: argparse.ArgumentParser) -> None:
    """How zskit builds a kernel (--tree, --variant minimal|debug): fragments, compiler."""
    sp.add_argument(
        "--config-fragment",
        action="append",
        metavar="FILE",
        help="a kernel config fragment merged after the variant's (each setting said; one "
        "that disagrees with the variant's is an error); repeatable",
    )
    sp.add_argument(
        "--cc",
        metavar="CC",
        help="a tree's compiler, e.g. clang or gcc-13 (default: $CC, else the series' own)",
    )


def add_allocator_opt(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--allocator", choices=list(render.ALLOCATORS))


def add_accel_opt(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--accel", choices=ACCELS)


def add_transport_opt(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "--transport",
        choices=("auto", "serial"),
        help="auto: batches over the fast channel where the guest has it; serial: over the "
        "serial shell only, the probes then left out (default auto)",
    )


def add_results_dir_opt(sp: argparse.ArgumentParser, default: str) -> None:
    sp.add_argument("--results-dir", metavar="DIR", help=f"results here, not {default}")


def bounded(low: int, high: int, source: str = "") -> Callable[[str], int]:
    """An argparse type: an integer in low..high, else an error naming the range (and
    where it is declared), before anything is built or booted."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            where = f" ({source})" if source else ""
            raise argparse.ArgumentTypeError(f"{value} is out of range: {low}..{high}{where}")
        return value

    return parse


def kconfig_int(symbol: str) -> Callable[[str], int]:
    """An argparse type bounded by the range Kconfig declares for `symbol`."""

    def parse(text: str) -> int:
        return bounded(*config_mod.int_range(symbol), f"{symbol} in Kconfig")(text)

    return parse


def add_scenario_seconds_opt(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "--scenario-seconds", type=bounded(1, 3600), metavar="S", help="each scenario's deadline"
    )


def add_workload_opts(sp: argparse.ArgumentParser, *, shape: bool = False) -> None:
    """The workload's size and seed; with `shape`, its batch size and churn share too."""
    sp.add_argument("--ops", type=kconfig_int("WORKLOAD_OPS"), help="operations in the workload")
    if shape:
        sp.add_argument(
            "--batch", type=kconfig_int("WORKLOAD_BATCH"), help="commands per checked batch"
        )
    sp.add_argument("--seed", type=kconfig_int("WORKLOAD_SEED"), help="workload seed")
    sp.add_argument(
        "--probes",
        action=argparse.BooleanOptionalAction,
        help="after the workload, probe every decision of the model (WORKLOAD_PROBES)",
    )
    if shape:
        sp.add_argument(
            "--churn",
            type=kconfig_int("WORKLOAD_CHURN_PERCENT"),
            metavar="PERCENT",
            help="share of ops run by churn",
        )


def _probes(flag: bool | None) -> str | None:
    """--probes runs them even over the serial shell; --no-probes never."""
    return None if flag is None else "always" if flag else "never"


def add_module_opts(sp: argparse.ArgumentParser) -> None:
    """`run --module`: an external test module instead of the workload."""
    group = sp.add_argument_group("external test module (instead of the workload)")
    group.add_argument(
        "--module",
        metavar="FILE.c|DIR",
        help="build this test module against the allocator under test, insmod it after the "
        "allocator and judge its kernel log (a DIR has its own Kbuild or Makefile; either "
        "is copied, never written to)",
    )
    group.add_argument(
        "--module-args", metavar='"A=1 B=2"', help="the module's parameters, given to insmod"
    )
    group.add_argument(
        "--module-timeout",
        type=float,
        metavar="SECONDS",
        help="insmod's deadline (default: QEMU_COMMAND_TIMEOUT); past it QEMU is killed",
    )
    group.add_argument(
        "--settle",
        type=float,
        metavar="SECONDS",
        help=f"time the module's threads get to print after insmod returns, before rmmod "
        f"(default {external.SETTLE_SECONDS:g})",
    )
    group.add_argument(
        "--memory",
        type=kconfig_int("QEMU_MEMORY_MB"),
        metavar="MiB",
        help="guest memory (default: QEMU_MEMORY_MB)",
    )


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="zskit",
        description="Build, boot and check zsmalloc under QEMU against a reference model.",
    )
    ap.add_argument("-v", "--verbose", action="store_true", help="show commands and the console")
    sub = ap.add_subparsers(dest="command", required=True)

    sp = add_command(sub, "bench", cmd_bench)
    sp.add_argument("what", nargs="?", choices=("density", "corpus", "loop"), default="density")
    add_kernel_opts(sp)
    add_accel_opt(sp)
    add_results_dir_opt(sp, "build/results/bench-<stamp>")
    sp.add_argument(
        "--allocators",
        help="comma-separated, of own, upstream (the kernel's zsmalloc), kmalloc, zbud, "
        "z3fold (through zswap, where the kernel has them); default: every one it has",
    )
    sp.add_argument(
        "--corpus",
        default=",".join(corpus.NAMES),
        help=f"comma-separated, of {', '.join(corpus.NAMES)} or directories (default all)",
    )
    sp.add_argument("--size", default="256M", help="of each corpus (default 256M)")
    sp.add_argument(
        "--compressors",
        default=",".join(density.COMPRESSORS),
        help="comma-separated crypto compressors, e.g. lzo-rle,lz4,zstd (default lzo-rle)",
    )
    sp.add_argument(
        "--repeats", type=bounded(1, 20), default=3, help="loop: of each figure but the 1M runs"
    )
    sp.add_argument(
        "--no-million", action="store_true", help="loop: leave out the 1M-operation runs"
    )

    sp = add_command(sub, "dev", cmd_dev)
    add_kernel_opts(sp)
    add_build_opts(sp)
    add_allocator_opt(sp)
    add_results_dir_opt(sp, "build/results/dev-<stamp>")
    add_accel_opt(sp)
    add_transport_opt(sp)
    add_workload_opts(sp, shape=True)

    sp = add_command(sub, "run", cmd_run)
    add_kernel_opts(sp)
    add_build_opts(sp)
    add_allocator_opt(sp)
    sp.add_argument("--entry", help="a matrix entry, e.g. 6.1-upstream-distro (kernel + allocator)")
    add_results_dir_opt(sp, "build/results/<id>")
    add_accel_opt(sp)
    add_transport_opt(sp)
    add_workload_opts(sp, shape=True)
    sp.add_argument(
        "--baseline",
        action=argparse.BooleanOptionalAction,
        help="with --allocator own: also the kernel's zsmalloc, its suite in the same boot "
        "(default: RUN_BASELINE, on)",
    )
    sp.add_argument(
        "--scenario",
        action="append",
        metavar="NAME",
        help="after the workload, run this scenario (repeatable; `zskit scenarios` lists them)",
    )
    sp.add_argument(
        "--scenario-ops", type=bounded(1, 10**7), metavar="N", help="each scenario's bound"
    )
    add_scenario_seconds_opt(sp)
    sp.add_argument(
        "--scenario-repeat", type=bounded(1, 1000), metavar="N", help="rounds of each scenario"
    )
    sp.add_argument(
        "--tree-tests",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="with --tree: also the tree's own zsmalloc/zram kselftests and KUnit suites "
        "(default: on)",
    )
    add_module_opts(sp)

    sp = add_command(sub, "replay", cmd_replay)
    add_kernel_opts(sp)
    add_build_opts(sp)
    sp.add_argument("replay", metavar="FILE")
    add_allocator_opt(sp)
    add_accel_opt(sp)

    sp = add_command(sub, "matrix", cmd_matrix)
    sp.add_argument("--list", action="store_true", help="print the entries instead of running")
    sp.add_argument("--json", action="store_true", help="with --list: as a JSON list")
    sp.add_argument("--config", metavar="FILE", help="a .config or configs/ preset to read")
    sp.add_argument(
        "--jobs", type=bounded(1, 64), metavar="N", help="entries at once (default: cores)"
    )
    sp.add_argument(
        "--tree",
        action="append",
        metavar="DIR",
        help="also the entries of a kernel built from this tree (as MATRIX_TREES); repeatable",
    )
    add_build_opts(sp)
    add_accel_opt(sp)
    sp.add_argument(
        "--merge", metavar="DIR", help="merge entry directories under DIR (CI jobs) instead"
    )

    sp = add_command(sub, "validate", cmd_validate)
    sp.add_argument("inputs", nargs="+", metavar="PATCH|MBOX|DIR")
    sp.add_argument(
        "--scenario",
        action="append",
        metavar="NAME",
        help="after each patch's suite, run this scenario in the same boot (repeatable)",
    )
    add_scenario_seconds_opt(sp)
    sp.add_argument(
        "--kernel", action="append", help="kernel series, repeatable (default: KERNEL in .config)"
    )
    sp.add_argument(
        "--variant",
        choices=list(VARIANTS),
        help="every kernel's variant (default: Debian's kernel where zsmalloc is a module, "
        "else the source-built minimal one)",
    )
    sp.add_argument(
        "--tree",
        action="append",
        metavar="DIR",
        help="also (or, without --kernel, only) on a kernel built from your own tree, the "
        "series applied on its HEAD, or on its base-commit where the tree has it; repeatable",
    )
    sp.add_argument(
        "--base", metavar="REV", help="with --tree: apply the series on this commit of the tree"
    )
    sp.add_argument(
        "--revision",
        type=int,
        metavar="N",
        help="of an input that holds several revisions, validate vN (default: the newest "
        "complete one)",
    )
    sp.add_argument(
        "--tested-by",
        metavar="'NAME <EMAIL>'",
        help="report.txt's Tested-by: line when every check passes (default: git config "
        "user.name and user.email; none without them)",
    )
    add_build_opts(sp)
    add_results_dir_opt(sp, "build/results/validate-<stamp>")
    add_accel_opt(sp)
    add_workload_opts(sp)
    sp.add_argument("--no-perf", action="store_true", help="skip the density and speed runs")

    sp = add_command(sub, "b4-check", cmd_b4_check)
    sp.add_argument("mode", choices=["patch", "series"], help="what b4 pipes: see above")
    sp.add_argument(
        "--kernel", action="append", help="kernel series, repeatable (default: KERNEL in .config)"
    )
    sp.add_argument("--variant", choices=list(VARIANTS), help="as for validate")
    sp.add_argument("--tree", action="append", metavar="DIR", help="as for validate")
    sp.add_argument("--no-perf", action="store_true", help="skip the density and cost runs")
    add_accel_opt(sp)

    sp = add_command(sub, "selftest", cmd_selftest)
    sp.add_argument("suite", choices=["historical"], help="the corpus to run")
    sp.add_argument("--only", action="append", metavar="NAME", help="this entry (repeatable)")
    sp.add_argument("--list", action="store_true", help="name the entries instead of running")
    sp.add_argument(
        "--provision", action="store_true", help="build kernels the cache lacks (else: not run)"
    )
    add_results_dir_opt(sp, "build/results/selftest-historical-<stamp>")
    add_accel_opt(sp)

    sp = add_command(sub, "compare", cmd_compare)
    add_kernel_opts(sp)
    add_results_dir_opt(sp, "build/results/compare-<stamp>")
    add_accel_opt(sp)
    add_transport_opt(sp)
    add_workload_opts(sp)
    sp.add_argument(
        "--bench-objects",
        type=bounded(1, 1 << 18),
        metavar="N",
        help=f"objects per bench (default {perf.BENCH_N})",
    )
    sp.add_argument(
        "--loads",
        type=bounded(2, 1000, "ours and the baseline at least once"),
        metavar="N",
        help=f"allocator loads, alternating, ours first (default {compare.SPEED_LOADS})",
    )
    sp.add_argument("--no-zram", action="store_true", help="skip the data set through zram")

    sp = add_command(sub, "provision", cmd_provision)
    add_kernel_opts(sp)
    add_build_opts(sp)

    add_command(sub, "scenarios", cmd_scenarios)
    sp = add_command(sub, "kernels", cmd_kernels)
    sp.add_argument("--refresh", action="store_true", help="fetch the archive's index now")

    add_command(sub, "parse", cmd_parse).add_argument("log")

    sp = add_command(sub, "render", cmd_render)
    sp.add_argument(
        "--tree",
        "--kernel-tree",  # the old spelling
        dest="tree",
        metavar="DIR",
        required=True,
        help="a Linux source tree (written to: use a copy)",
    )

    sp = add_command(sub, "model", cmd_model)
    sp.add_argument("what", choices=["classes", "huge-size"])
    sp.add_argument("--policy", default="6.1", choices=[*model.known_policies(), "own"])
    sp.add_argument("--kernel", help="with --policy own: the kernel API (default: KERNEL)")
    sp.add_argument("--chain", type=bounded(4, 16), help="ZSMALLOC_CHAIN_SIZE (6.12 and later)")
    add_page_size_opt(sp, "4k")
    sp.add_argument(
        "--bits", type=int, choices=[32, 64], default=64, help="BITS_PER_LONG (default: 64)"
    )
    sp.add_argument(
        "--physmem-bits",
        type=bounded(20, 64),
        metavar="B",
        help="MAX_POSSIBLE_PHYSMEM_BITS (default: 52 for 64-bit, as x86_64 and arm64 with "
        "52-bit addresses; 36 for 32-bit, as x86 PAE)",
    )
    sp.add_argument("--format", choices=["csv"], default="csv")
    return ap


def main(argv: list[str] | None = None) -> int:
    # `zskit model classes | head` should end quietly, as other CLI tools do.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    args = parser().parse_args(argv)
    p = Progress(verbose=args.verbose)
    try:
        return int(args.func(args, p))
    except StageError as e:
        print(f"zskit: {e}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"zskit: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("zskit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
