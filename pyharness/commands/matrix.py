"""The kernel matrix: the entries `make qemu-matrix` runs, run side by side, results merged.

An entry is one kernel x allocator x variant, named `<kernel>-<allocator>-<variant>`
(`6.1-upstream-distro`; a tree's adds its tag: `6.1-upstream-minimal-tree-linux-1a2b3c4d`).
Kconfig's MATRIX_* options choose kernels (MATRIX_KERNELS, a list of series; empty:
every series `kernel/provision.py` describes), trees (MATRIX_TREES, and `zskit
matrix --tree DIR`), allocators and variants; an entry exists for each chosen
kernel and each chosen allocator that kernel can run, decided by
`render.check_allocator` (the same refusal `zskit run` makes before provisioning).
A tree is built with each chosen source-built variant (minimal when only distro
is chosen). The variant names where the kernel
comes from: "distro" is Debian's packaged kernels (`kernel/provision.py`);
"minimal" and "debug" are kernels built from linux-source-X (`kernel/source.py`),
with zsmalloc as a module, so they run the upstream allocator.

`run_matrix` runs every entry as its own `zskit run` process (own Progress,
own results directory, output in its `zskit.log`), as many at once as the
machine has cores. QEMU runs are independent; entries of one kernel share
its cache, and `provision()` takes a per-kernel lock in the cache so only
one of them provisions it. A failing entry (a missing package, a toolchain
failure, an unknown kernel, even a crashed zskit) is a failed entry; the
others still run and report.

`build/results/matrix-<stamp>/` then holds one directory per entry and the
merged results:

- `junit.xml`: one `<testsuite>` per entry (each entry's own junit.xml).
- `results.ktap`: KTAP version 1, one top-level test per entry with a
  subtest per case (stages, then checked batches); a failure is a `#` block
  right before its `not ok` line.
- `kernelci.json`: a list of nodes shaped like KernelCI API nodes (see
  `kernelci_nodes`).
- `summary.txt`: the table printed at the end.

CI runs the entries as separate jobs (`zskit run --entry NAME --results-dir
build/results/NAME`); `zskit matrix --merge build/results` writes the same
merged files from their collected directories.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..kernel.arch import TARGETS
from ..kernel.identity import DISTRO, HOST_ARCH, TREE_VARIANT, KernelId
from ..kernel.manifest import KernelSource
from ..kernel.provision import SOURCES, foreign_source, source_for
from ..kernel.tree import tree_kernel_id
from ..kmod import render
from ..paths import RESULTS
from ..progress import Progress, StageError
from ..report import Case, RunResult, ktap, new_results_dir
from .config import Config, load

# Files of an entry's results directory that kernelci.json names as artifacts.
ARTIFACTS = {
    "console_log": "console.log",
    "session_log": "session.log",
    "dmesg_log": "dmesg.log",
    "zskit_log": "zskit.log",
    "results_json": "results.json",
    "junit": "junit.xml",
    "ktap": "results.ktap",
    "batches": "batches.txt",
}


@dataclass(frozen=True)
class Entry:
    kernel: KernelId
    allocator: str  # "upstream" or "builtin"

    @property
    def name(self) -> str:
        """`6.1-upstream-distro`: the variant is always named in an entry."""
        return self.kernel.name(self.allocator, full=True)

    def as_dict(self) -> dict[str, str | None]:
        return {
            "name": self.name,
            "kernel": self.kernel.series,
            "allocator": self.allocator,
            "variant": self.kernel.variant,
            "machine": self.kernel.arch,
            "tree": str(self.kernel.tree) if self.kernel.tree is not None else None,
        }


def _supports(source: KernelSource, allocator: str) -> bool:
    try:
        render.check_allocator(source, allocator)
    except StageError:
        return False
    return True


def entries(config: Config) -> list[Entry]:
    """The entries the configuration's MATRIX_* options select, in Kconfig order, on each
    machine of MATRIX_MACHINES (x86_64 first)."""
    found: list[Entry] = []
    for variant in config.matrix_variants:
        sources = SOURCES.get(variant)
        if sources is None:  # a variant Kconfig offers but zskit lacks: why_empty() says so
            continue
        for kernel in config.matrix_kernels:
            source = sources.get(kernel)
            for allocator in config.matrix_allocators:
                # A kernel Kconfig offers but zskit lacks still gets its entries:
                # their runs fail with "unknown kernel" while the others go on.
                if source is None or _supports(source, allocator):
                    found.append(Entry(KernelId(kernel, variant), allocator))
    for machine in config.matrix_machines:
        if machine != HOST_ARCH:
            found += _machine_entries(config, machine)
    return found + tree_entries(config)


def _machine_entries(config: Config, machine: str) -> list[Entry]:
    """The chosen kernels and allocators another machine has (its Debian kernels)."""
    found = []
    for variant in config.matrix_variants:
        for series in config.matrix_kernels:
            kernel = KernelId(series, variant, arch=machine)
            source = _foreign(kernel)
            found += [
                Entry(kernel, allocator)
                for allocator in config.matrix_allocators
                if source is not None and _supports(source, allocator)
            ]
    return found


def _foreign(kernel: KernelId) -> KernelSource | None:
    try:
        return foreign_source(kernel)
    except StageError:  # a series or variant that machine does not have
        return None


def tree_entries(config: Config) -> list[Entry]:
    """The entries of the configuration's trees (MATRIX_TREES, --tree): each tree with each
    chosen source-built variant (minimal if none is) and each chosen allocator it runs."""
    variants = [v for v in config.matrix_variants if v != DISTRO and v in SOURCES]
    found: list[Entry] = []
    for tree in dict.fromkeys(config.matrix_trees):
        for variant in variants or [TREE_VARIANT]:
            try:
                kernel = tree_kernel_id(tree, variant)
            except StageError as e:
                raise StageError(f"matrix tree {tree}: {e}") from None
            source = source_for(kernel)
            found += [
                Entry(kernel, allocator)
                for allocator in config.matrix_allocators
                if _supports(source, allocator)
            ]
    return found


def known_entries() -> list[Entry]:
    """Every entry there could be: each known kernel with each allocator it supports, on
    x86_64, then on the other machines."""
    found = [
        Entry(KernelId(kernel, variant), allocator)
        for variant, sources in SOURCES.items()
        for kernel, source in sources.items()
        for allocator in render.ALLOCATORS
        if _supports(source, allocator)
    ]
    for machine, target in TARGETS.items():
        for series in target.debian_series:
            kernel = KernelId(series, DISTRO, arch=machine)
            source = foreign_source(kernel)
            found += [Entry(kernel, a) for a in render.ALLOCATORS if _supports(source, a)]
    return found


def find_entry(name: str) -> Entry:
    """The known entry called `name`; the error lists them all."""
    known = known_entries()
    for entry in known:
        if entry.name == name:
            return entry
    trees = tree_entries(load())  # a tree's entry: of a tree of .config (MATRIX_TREES)
    for entry in trees:
        if entry.name == name:
            return entry
    known += trees
    names = ", ".join(e.name for e in known)
    raise StageError(f"unknown entry {name!r}; known entries: {names} (see `zskit matrix --list`)")


def why_empty(config: Config) -> str:
    """What to change when `entries(config)` is empty."""
    available = [v for v in config.matrix_variants if v in SOURCES]
    planned = [v for v in config.matrix_variants if v not in SOURCES]
    if not available and planned:
        reason = (
            f"variant {', '.join(planned)} has no kernels in zskit (known variants: "
            f"{', '.join(SOURCES)})"
        )
    elif not available:
        reason = "no variant is selected (MATRIX_VARIANT_*)"
    elif not config.matrix_kernels and not config.matrix_trees:
        reason = "no kernel is selected (MATRIX_KERNELS, MATRIX_TREES)"
    elif not config.matrix_allocators:
        reason = "no allocator is selected (MATRIX_ALLOCATOR_*)"
    else:
        runs = [
            f"{e.kernel.series} runs {e.allocator}"
            for e in known_entries()
            if e.kernel.series in config.matrix_kernels and e.kernel.variant in available
        ]
        reason = (
            f"no selected kernel runs a selected allocator ({', '.join(config.matrix_allocators)}"
            f"): {'; '.join(runs)}"
        )
    return (
        f"the matrix is empty: {reason}. Change it with `make menuconfig` or load a preset "
        "(`make ci-matrix_defconfig`)"
    )


def selected(config: Config) -> list[Entry]:
    """`entries(config)`, refusing an empty matrix with the reason."""
    found = entries(config)
    if not found:
        raise StageError(why_empty(config))
    return found


# --- running -----------------------------------------------------------------


@dataclass
class Outcome:
    """One entry's run, as the matrix saw it."""

    entry: Entry
    result: RunResult
    seconds: float  # wall time of the entry's zskit process

    @property
    def passed(self) -> bool:
        return self.result.passed


@dataclass
class MatrixResult:
    directory: Path
    outcomes: list[Outcome]
    seconds: float | None  # wall time of the whole matrix; None when merged afterwards
    interrupted: bool = False

    @property
    def passed(self) -> bool:
        return not self.interrupted and all(o.passed for o in self.outcomes)


def _failed(entry: Entry, directory: Path, message: str, kind: str = "error") -> RunResult:
    """A result for an entry whose run left no results.json (zskit itself failed)."""
    return RunResult(
        run_id=directory.name,
        kernel=entry.kernel.series,
        allocator=entry.allocator,
        directory=directory,
        cases=[Case("zskit", failure=message, kind=kind)],
        variant=entry.kernel.variant,
    )


def _new_directory(root: Path) -> Path:
    return new_results_dir("matrix", root)


@dataclass
class _Runner:
    """Starts entries' zskit processes and keeps track of them for Ctrl-C."""

    directory: Path
    argv: list[str]  # the zskit command, up to and excluding `run`
    run_args: list[str]  # extra options of every `zskit run`
    env: dict[str, str]
    progress: Progress
    fragments: tuple[Path, ...] = ()  # --config-fragment of the entries zskit builds
    cc: str | None = None  # --cc of the tree entries
    stop: threading.Event = field(default_factory=threading.Event)
    running: set[subprocess.Popen[bytes]] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, entry: Entry) -> Outcome:
        directory = self.directory / entry.name
        directory.mkdir()
        if self.stop.is_set():
            message = "not run: the matrix was interrupted"
            return Outcome(entry, _failed(entry, directory, message, "interrupted"), 0.0)
        which = ["--kernel", entry.kernel.series]
        if entry.kernel.tree is not None:
            which = ["--tree", str(entry.kernel.tree)]
        argv = [*self.argv, "run", *which, "--allocator", entry.allocator]
        # The baseline is an entry of its own here, not a second suite in this boot.
        argv += ["--variant", entry.kernel.variant, "--no-baseline"]
        argv += ["--results-dir", str(directory), *self.run_args]
        if entry.kernel.variant != DISTRO:  # a kernel zskit builds
            argv += [a for f in self.fragments for a in ("--config-fragment", str(f))]
        if entry.kernel.tree is not None and self.cc is not None:
            argv += ["--cc", self.cc]
        self.progress.say(f"{entry.name}: started (log: {directory / 'zskit.log'})")
        start = time.monotonic()
        with (directory / "zskit.log").open("wb") as log:
            # Its own process group: a Ctrl-C reaches only this process, which passes
            # one SIGINT on (interrupt()), so no run is hit twice while it writes results.
            proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                process_group=0,
            )
            with self.lock:
                self.running.add(proc)
            try:
                rc = proc.wait()
            finally:
                with self.lock:
                    self.running.discard(proc)
        seconds = time.monotonic() - start
        result = RunResult.load(directory)
        if result is None:
            tail = (directory / "zskit.log").read_text(errors="replace").splitlines()[-15:]
            message = f"zskit exited with status {rc} and wrote no results.json:\n" + "\n".join(
                tail
            )
            result = _failed(entry, directory, message)
        outcome = Outcome(entry, result, seconds)
        self.progress.say(f"{entry.name}: {_verdict(outcome)} in {seconds:.1f} s")
        return outcome

    def interrupt(self) -> None:
        """Stop starting entries; ask the running ones to stop (they still write results)."""
        self.stop.set()
        with self.lock:
            for proc in self.running:
                proc.send_signal(signal.SIGINT)


def run_matrix(
    config: Config,
    progress: Progress,
    *,
    jobs: int | None = None,
    root: Path = RESULTS,
    config_file: Path | None = None,
    accel: str | None = None,
) -> MatrixResult:
    """Run every selected entry, `jobs` at a time (default: one per core), and merge the results.

    The configuration's config fragments go to the entries of kernels zskit builds (trees,
    minimal, debug), its compiler to the trees' entries.

    `config_file` (a .config or preset) is what the entries' processes load too;
    without it they read `.config` or $KCONFIG_CONFIG, as this process did.
    """
    chosen = selected(config)
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(chosen)))
    directory = _new_directory(root)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if config_file is not None:
        env["KCONFIG_CONFIG"] = str(config_file.resolve())
    run_args = ["--accel", accel] if accel else []
    argv = [sys.executable, "-m", "pyharness.commands.cli", *(["-v"] if progress.verbose else [])]
    runner = _Runner(directory, argv, run_args, env, progress, config.config_fragments, config.cc)
    progress.say(f"{len(chosen)} entries, {jobs} at a time; results: {directory}")
    start = time.monotonic()
    interrupted = False
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="entry") as pool:
        futures = [pool.submit(runner.run, entry) for entry in chosen]
        outcomes: list[Outcome] = []
        for future in futures:
            while True:
                try:
                    outcomes.append(future.result())
                    break
                except KeyboardInterrupt:
                    # Let every entry finish its results; a second Ctrl-C is no different.
                    interrupted = True
                    progress.say("interrupted: stopping the running entries")
                    runner.interrupt()
    result = MatrixResult(directory, outcomes, time.monotonic() - start, interrupted)
    write_merged(directory, outcomes)
    (directory / "summary.txt").write_text(summary(result) + "\n")
    return result


# --- merged results -------------------------------------------------------------


def _verdict(outcome: Outcome) -> str:
    return "PASS" if outcome.passed else "FAIL"


def collect(directory: Path) -> list[Outcome]:
    """Outcomes from entry directories under `directory` (CI artifacts of separate jobs)."""
    outcomes = []
    for sub in sorted(p for p in directory.iterdir() if p.is_dir()):
        result = RunResult.load(sub)
        if result is None:
            continue
        entry = Entry(result.kernel_id, result.allocator)
        outcomes.append(Outcome(entry, result, result.timings.get("total", 0.0)))
    if not outcomes:
        raise StageError(
            f"no results under {directory}: expected one directory per entry holding "
            "results.json (`zskit run --entry NAME --results-dir DIR/NAME`)"
        )
    return outcomes


def junit(outcomes: Sequence[Outcome]) -> bytes:
    """One JUnit document: each entry's own testsuite, renamed after the entry."""
    root = ET.Element("testsuites", name="zskit matrix")
    tests = failures = 0
    seconds = 0.0
    for outcome in outcomes:
        for suite in ET.fromstring(outcome.result.junit()).iter("testsuite"):
            suite.set("name", outcome.entry.name)
            tests += int(suite.get("tests", "0"))
            failures += int(suite.get("failures", "0"))
            seconds += float(suite.get("time", "0"))
            root.append(suite)
    root.set("tests", str(tests))
    root.set("failures", str(failures))
    root.set("errors", "0")
    root.set("time", f"{seconds:.3f}")
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def kernelci_nodes(outcomes: Sequence[Outcome], directory: Path) -> list[dict[str, object]]:
    """Nodes shaped like KernelCI API nodes (kernelci-api `Node`), ready to submit.

    Per entry one node of kind "job" (path ["zskit", ENTRY]) and one of kind
    "test" per case (path ["zskit", ENTRY, CASE], group ENTRY). Every node has
    `state` "done" and `result` "pass" or "fail", and in `data`:
    `kernel_version` (the guest's `uname -r`, null when the run stopped before
    provisioning), `kernel_package` (the Debian version), `kernel_series`,
    `variant`, `allocator`, `arch` "x86_64", `platform` "qemu-x86_64",
    `runtime` as KernelCI means it, what ran the job ("qemu-tcg",
    "qemu-kvm", or "qemu" when it never booted), `duration` in seconds (the
    entry's wall time; a case's own time) and, when failed, `error_code`
    (the failure kind: crash, timeout, divergence...) and `error_msg` (its
    first line). `artifacts` maps names to the entry's files, as paths
    relative to the merged directory (KernelCI has URLs there; upload the
    directory and prefix them).
    """
    nodes: list[dict[str, object]] = []
    for outcome in outcomes:
        entry, result = outcome.entry, outcome.result
        where = result.directory
        base = where.relative_to(directory) if where.is_relative_to(directory) else where
        artifacts = {k: str(base / f) for k, f in ARTIFACTS.items() if (where / f).exists()}
        accel = result.info.get("accel")
        data: dict[str, object] = {
            "kernel_version": result.info.get("kernel_release"),
            "kernel_package": result.info.get("kernel_package"),
            "kernel_series": entry.kernel.series,
            "variant": entry.kernel.variant,
            "allocator": entry.allocator,
            "arch": TARGETS[entry.kernel.arch].kbuild_arch,
            "platform": f"qemu-{TARGETS[entry.kernel.arch].profile}",  # qemu/<profile>.toml
            "runtime": f"qemu-{accel}" if accel else "qemu",
        }
        job = ["zskit", entry.name]
        nodes.append(
            _node("job", job, result.passed, result.first_failure, outcome.seconds, data, artifacts)
        )
        for case in result.cases:
            passed = case.failure is None
            nodes.append(
                _node("test", [*job, case.name], passed, case, case.seconds, data, artifacts)
            )
    return nodes


def _node(
    kind: str,
    path: list[str],
    passed: bool,
    failure: Case | None,
    seconds: float,
    data: dict[str, object],
    artifacts: dict[str, str],
) -> dict[str, object]:
    extra: dict[str, object] = {"duration": round(seconds, 3)}
    if not passed and failure is not None and failure.failure is not None:
        extra["error_code"] = failure.kind or "failure"
        extra["error_msg"] = failure.failure.splitlines()[0] if failure.failure else ""
    return {
        "kind": kind,
        "name": path[-1],
        "path": path,
        "group": path[-2],
        "state": "done",
        "result": "pass" if passed else "fail",
        "artifacts": artifacts,
        "data": {**data, **extra},
    }


def write_merged(directory: Path, outcomes: Sequence[Outcome]) -> None:
    (directory / "junit.xml").write_bytes(junit(outcomes))
    (directory / "results.ktap").write_text(ktap([(o.entry.name, o.result) for o in outcomes]))
    nodes = kernelci_nodes(outcomes, directory)
    (directory / "kernelci.json").write_text(json.dumps(nodes, indent=2) + "\n")


def summary(result: MatrixResult) -> str:
    """The table printed at the end: one row per entry, then the totals."""
    header = ("kernel", "variant", "allocator", "verdict", "time", "failure")
    rows = [header]
    for o in result.outcomes:
        failure = o.result.first_failure
        detail = f"{failure.name} ({failure.kind or 'failure'})" if failure else ""
        row = (o.entry.kernel.series, o.entry.kernel.variant, o.entry.allocator, _verdict(o))
        rows.append((*row, f"{o.seconds:.1f} s", detail))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    failed = sum(1 for o in result.outcomes if not o.passed)
    took = f" in {result.seconds:.1f} s" if result.seconds is not None else ""
    lines.append(
        f"{len(result.outcomes)} entries: {len(result.outcomes) - failed} passed, {failed} failed"
        f"{took}{' (interrupted)' if result.interrupted else ''}"
    )
    return "\n".join(lines)
