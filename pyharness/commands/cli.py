"""The `zskit` command: stages as subcommands, plus `run` for all of them.

zskit run         provision, build, boot and check the default workload
zskit matrix      run every entry of the kernel matrix in parallel; --list shows them
zskit validate    check a patch series patch by patch: applies, builds, checkpatch, suite
zskit compare     our zsmalloc against the kernel's in one boot: suite, density, speed, zram
zskit provision   fetch and unpack the target kernel into the cache
zskit parse LOG   triage a saved console log offline
zskit model classes|huge-size   print the model's class table
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from .. import model
from ..guest.triage import find_crash
from ..kernel.api import api_for
from ..kernel.identity import VARIANTS
from ..kernel.provision import provision
from ..kmod import render
from ..progress import Progress, StageError
from . import compare, matrix, validate
from . import config as config_mod
from .run import RunOptions, read_replay, run


def _config(args: argparse.Namespace) -> config_mod.Config:
    kernel, allocator = getattr(args, "kernel", None), getattr(args, "allocator", None)
    variant = getattr(args, "variant", None)
    if name := getattr(args, "entry", None):
        if kernel or allocator or variant:
            raise StageError(
                "--entry names the kernel, allocator and variant; drop --kernel/--allocator/"
                "--variant"
            )
        entry = matrix.find_entry(name)
        kernel, allocator, variant = entry.kernel.series, entry.allocator, entry.kernel.variant
    return config_mod.load().with_overrides(
        kernel=kernel,
        allocator=allocator,
        variant=variant,
        accel=getattr(args, "accel", None),
        workload_ops=getattr(args, "ops", None),
        workload_seed=getattr(args, "seed", None),
        workload_batch=getattr(args, "batch", None),
        workload_churn_percent=getattr(args, "churn", None),
    )


def cmd_run(args: argparse.Namespace, p: Progress) -> int:
    cfg = _config(args)
    batches = read_replay(Path(args.replay)) if getattr(args, "replay", None) else None
    results_dir = Path(args.results_dir) if getattr(args, "results_dir", None) else None
    baseline = getattr(args, "baseline", None)
    if baseline and (cfg.allocator != "own" or batches is not None):
        raise StageError("--baseline goes with --allocator own and the default workload")
    if baseline is None:  # RUN_BASELINE decides for ours, unless a matrix entry is run
        entry = getattr(args, "entry", None)
        baseline = cfg.baseline and cfg.allocator == "own" and batches is None and not entry
    if baseline:
        plan = compare.Plan(measure=False)
        result, _ = compare.compare(cfg, p, plan, results_dir=results_dir, refresh=args.refresh)
    else:
        options = RunOptions(refresh=args.refresh, batches=batches, results_dir=results_dir)
        result = run(cfg, p, options)
    p.say(p.summary())
    target = cfg.kernel_id.label
    failure = result.first_failure
    if failure is None:
        also = [k.removesuffix("_suite") for k in result.info if k.endswith("_suite")]
        print(
            f"PASS: Linux {target} / {cfg.allocator}: {result.info.get('operations', 0)} "
            "operations agree with the model"
            + "".join(f", and on {a} in the same boot" for a in also)
            + f" ({result.directory})"
        )
        return 0
    print(f"FAIL: Linux {target} / {cfg.allocator}: {failure.name} ({failure.kind})")
    print(failure.failure)
    print(f"results and console log: {result.directory}")
    return 1


def cmd_matrix(args: argparse.Namespace, p: Progress) -> int:
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
    if args.list:
        entries = matrix.selected(cfg)
        if args.json:
            print(json.dumps([e.as_dict() for e in entries]))
        else:
            rows = [("name", "kernel", "allocator", "variant")]
            rows += [(e.name, e.kernel.series, e.allocator, e.kernel.variant) for e in entries]
            widths = [max(len(r[i]) for r in rows) for i in range(4)]
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
    cfg = config_mod.load().with_overrides(
        accel=args.accel, workload_ops=args.ops, workload_seed=args.seed
    )
    result = validate.validate(
        cfg,
        [Path(i) for i in args.inputs],
        p,
        kernel_names=args.kernel or (),
        results_dir=Path(args.results_dir) if args.results_dir else None,
        perf_rounds=0 if args.no_perf else validate.PERF_ROUNDS,
        variant=args.variant,
    )
    print(validate.summary(result))
    print(f"report: {result.directory / 'report.md'} (and results.json)")
    return 0 if result.passed else 1


def cmd_compare(args: argparse.Namespace, p: Progress) -> int:
    if args.bench_objects is not None and not 1 <= args.bench_objects <= 1 << 18:
        raise StageError("--bench-objects takes 1..262144")
    if args.loads is not None and args.loads < 2:
        raise StageError("--loads takes 2 or more (ours and the baseline at least once)")
    plan = compare.Plan(
        bench_n=args.bench_objects or compare.BENCH_N,
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
    cfg = _config(args)
    kernel = provision(cfg.kernel_id, p, refresh=args.refresh)
    print(
        f"{kernel.release} ({kernel.package_version}, {kernel.variant})\n"
        f"  image  {kernel.vmlinuz}\n"
        f"  kdir   {kernel.kdir}\n  source {kernel.source}"
    )
    if kernel.toolchain is not None:
        print(f"  root   {kernel.toolchain} (modules are built chrooted there)")
    return 0


def cmd_parse(args: argparse.Namespace, p: Progress) -> int:
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
    tree = Path(args.kernel_tree)
    api = api_for(render.tree_series(tree))
    for path in render.render_into_tree(tree, api, config_mod.load().own):
        print(f"wrote {path}")
    print("build it in the tree as mm/zsmalloc.c (CONFIG_ZSMALLOC=y or m)")
    return 0


def cmd_model(args: argparse.Namespace, p: Progress) -> int:
    if args.policy == "own":  # the own allocator, as the .config's OWN_* options render it
        series = args.kernel or config_mod.load().kernel
        pol = config_mod.load().own.policy(api_for(series))
    else:
        pol = model.policy(args.policy, chain_size=args.chain)
    if args.what == "huge-size":
        print(model.huge_class_size(pol))
        return 0
    print("index,size,pages_per_zspage,objs_per_zspage")
    for c in model.class_table(pol):
        print(f"{c.index},{c.size},{c.pages_per_zspage},{c.objs_per_zspage}")
    return 0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="zskit", description=__doc__.splitlines()[0])
    ap.add_argument("-v", "--verbose", action="store_true", help="show commands and the console")
    sub = ap.add_subparsers(dest="command", required=True)

    def target(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--kernel", help="kernel series (default: KERNEL in .config)")
        sp.add_argument(
            "--variant",
            choices=list(VARIANTS),
            help="distro: Debian's kernel; minimal, debug: built from linux-source (VARIANT)",
        )
        sp.add_argument("--refresh", action="store_true", help="re-resolve and refetch the kernel")

    sp = sub.add_parser("run", help="build, boot and check the workload")
    target(sp)
    sp.add_argument("--allocator", choices=list(render.ALLOCATORS))
    sp.add_argument("--entry", help="a matrix entry, e.g. 6.1-upstream-distro (kernel + allocator)")
    sp.add_argument("--results-dir", metavar="DIR", help="results here, not build/results/<id>")
    sp.add_argument("--accel", choices=["auto", "tcg", "kvm"])
    sp.add_argument("--ops", type=int, help="commands in the workload")
    sp.add_argument("--batch", type=int, help="commands per checked batch")
    sp.add_argument("--seed", type=int, help="workload seed")
    sp.add_argument("--churn", type=int, metavar="PERCENT", help="share of ops run by churn")
    sp.add_argument(
        "--baseline",
        action=argparse.BooleanOptionalAction,
        help="with --allocator own: also the kernel's zsmalloc, its suite in the same boot "
        "(default: RUN_BASELINE, on)",
    )
    sp.set_defaults(func=cmd_run)

    sp = sub.add_parser("replay", help="rerun a saved batches.txt or replay file, checked")
    target(sp)
    sp.add_argument("replay", metavar="FILE")
    sp.add_argument("--allocator", choices=list(render.ALLOCATORS))
    sp.add_argument("--accel", choices=["auto", "tcg", "kvm"])
    sp.set_defaults(func=cmd_run)

    sp = sub.add_parser("matrix", help="run the kernel matrix (MATRIX_* options) in parallel")
    sp.add_argument("--list", action="store_true", help="print the entries instead of running")
    sp.add_argument("--json", action="store_true", help="with --list: as a JSON list")
    sp.add_argument("--config", metavar="FILE", help="a .config or configs/ preset to read")
    sp.add_argument("--jobs", type=int, metavar="N", help="entries at once (default: cores)")
    sp.add_argument("--accel", choices=["auto", "tcg", "kvm"])
    sp.add_argument(
        "--merge", metavar="DIR", help="merge entry directories under DIR (CI jobs) instead"
    )
    sp.set_defaults(func=cmd_matrix)

    sp = sub.add_parser("validate", help="validate a patch series for review, patch by patch")
    sp.add_argument("inputs", nargs="+", metavar="PATCH|MBOX|DIR")
    sp.add_argument(
        "--kernel", action="append", help="kernel series, repeatable (default: KERNEL in .config)"
    )
    sp.add_argument(
        "--variant",
        choices=list(VARIANTS),
        help="every kernel's variant (default: Debian's kernel where zsmalloc is a module, "
        "else the source-built minimal one)",
    )
    sp.add_argument("--results-dir", metavar="DIR", help="here, not build/results/validate-<stamp>")
    sp.add_argument("--accel", choices=["auto", "tcg", "kvm"])
    sp.add_argument("--ops", type=int, help="operations in the suite's workload")
    sp.add_argument("--seed", type=int, help="the suite's workload seed")
    sp.add_argument("--no-perf", action="store_true", help="skip the density and speed runs")
    sp.set_defaults(func=cmd_validate)

    sp = sub.add_parser(
        "compare", help="our zsmalloc against the kernel's in one boot: density, speed, zram"
    )
    target(sp)
    sp.add_argument("--results-dir", metavar="DIR", help="here, not build/results/compare-<stamp>")
    sp.add_argument("--accel", choices=["auto", "tcg", "kvm"])
    sp.add_argument("--ops", type=int, help="operations in the suite's workload")
    sp.add_argument("--seed", type=int, help="the suite's workload seed")
    sp.add_argument(
        "--bench-objects",
        type=int,
        metavar="N",
        help=f"objects per bench (default {compare.BENCH_N})",
    )
    sp.add_argument(
        "--loads",
        type=int,
        metavar="N",
        help=f"allocator loads, alternating, ours first (default {compare.SPEED_LOADS})",
    )
    sp.add_argument("--no-zram", action="store_true", help="skip the data set through zram")
    sp.set_defaults(func=cmd_compare)

    sp = sub.add_parser("provision", help="fetch the kernel into the cache")
    target(sp)
    sp.set_defaults(func=cmd_provision)

    sp = sub.add_parser("parse", help="triage a saved console log")
    sp.add_argument("log")
    sp.set_defaults(func=cmd_parse)

    sp = sub.add_parser("render", help="write the own allocator into a kernel source tree")
    sp.add_argument("--kernel-tree", metavar="DIR", required=True, help="a Linux source tree")
    sp.set_defaults(func=cmd_render)

    sp = sub.add_parser("model", help="the reference model's class table")
    sp.add_argument("what", choices=["classes", "huge-size"])
    sp.add_argument("--policy", default="6.1", choices=[*model.known_policies(), "own"])
    sp.add_argument("--kernel", help="with --policy own: the kernel API (default: KERNEL)")
    sp.add_argument("--chain", type=int, help="ZSMALLOC_CHAIN_SIZE (6.12 and later)")
    sp.add_argument("--format", choices=["csv"], default="csv")
    sp.set_defaults(func=cmd_model)
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
