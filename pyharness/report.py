"""Results of a run: a directory per run with the console, JSON, JUnit XML and sources.

`build/results/<run-id>/` (`<stamp>-<kernel>-<allocator>-<variant>`, the
run's matrix entry name after the time stamp; `build/results/latest` names
the newest) holds `console.log` (the kernel console, written
live by QEMU), `session.log` (the guest shell), `dmesg.log`, `results.json`,
`junit.xml`, `results.ktap`, `batches.txt` (every command sent, a
reproducer), and `sources/` (the rendered files that were built). It is
written even when a stage fails, so a failed CI run can be read afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .kernel.arch import TARGETS
from .kernel.identity import DISTRO, HOST_ARCH, KernelId
from .paths import RESULTS

# results.json keys that are RunResult fields; every other key is `info`.
_FIELDS = (
    "run_id",
    "kernel",
    "allocator",
    "variant",
    "machine",
    "kernel_identity",
    "verdict",
    "failure",
    "timings",
    "cases",
)


@dataclass
class Case:
    """One JUnit testcase: a stage or a checked batch."""

    name: str
    seconds: float = 0.0
    failure: str | None = None  # None when it passed
    kind: str | None = None  # failure kind: crash, timeout, divergence, error...


@dataclass
class RunResult:
    run_id: str
    kernel: str
    allocator: str
    directory: Path
    cases: list[Case] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    info: dict[str, object] = field(default_factory=dict)
    variant: str = DISTRO  # where the kernel came from: distro, minimal, debug
    tree: Path | None = None  # the user's tree the kernel was built from (--tree)
    arch: str = HOST_ARCH  # the machine: a name of kernel/arch.py's TARGETS

    @property
    def kernel_id(self) -> KernelId:
        return KernelId(self.kernel, self.variant, arch=self.arch, tree=self.tree)

    def identity(self) -> dict[str, object]:
        """The kernel as results.json names it; a tree's with its commit and dirtiness
        (what `kernel.tree.describe` found when the run started, kept in `info`)."""
        kernel = self.kernel_id
        tree = None
        if kernel.tree is not None:
            tree = {
                "path": str(kernel.tree),
                "commit": self.info.get("tree_commit"),
                "dirty": self.info.get("tree_dirty"),
            }
        machine = TARGETS[kernel.arch]
        return {
            "series": kernel.series,
            "variant": kernel.variant,
            "arch": machine.kbuild_arch,  # the kernel's own name (ARCH=)
            "page_size": machine.page_size,
            "name": kernel.slug,
            "tree": tree,
        }

    @property
    def passed(self) -> bool:
        return bool(self.cases) and all(c.failure is None for c in self.cases)

    @property
    def first_failure(self) -> Case | None:
        return next((c for c in self.cases if c.failure is not None), None)

    def console_log(self) -> Path:
        return self.directory / "console.log"

    def write(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        failure = self.first_failure
        doc = {
            "run_id": self.run_id,
            "kernel": self.kernel,
            "allocator": self.allocator,
            "variant": self.variant,
            "machine": self.arch,  # the target (arm64-16k): kernel_identity has its parts
            "kernel_identity": self.identity(),
            "verdict": "pass" if self.passed else "fail",
            "failure": asdict(failure) if failure else None,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "cases": [asdict(c) for c in self.cases],
            **self.info,
        }
        (self.directory / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
        (self.directory / "junit.xml").write_bytes(self.junit())
        (self.directory / "results.ktap").write_text(ktap([(self.name, self)]))

    @property
    def name(self) -> str:
        """The matrix entry this run is: `6.1-upstream-distro` (a tree's adds its tag)."""
        return self.kernel_id.name(self.allocator, full=True)

    @classmethod
    def load(cls, directory: Path) -> RunResult | None:
        """The run a results directory holds (its results.json), or None when there is none."""
        try:
            doc = json.loads((directory / "results.json").read_text())
            tree = (doc.get("kernel_identity") or {}).get("tree") or {}
            return cls(
                run_id=doc["run_id"],
                kernel=doc["kernel"],
                allocator=doc["allocator"],
                directory=directory,
                cases=[Case(**c) for c in doc["cases"]],
                timings=dict(doc["timings"]),
                info={k: v for k, v in doc.items() if k not in _FIELDS},
                variant=doc.get("variant", DISTRO),
                tree=Path(tree["path"]) if tree.get("path") else None,
                arch=doc.get("machine", HOST_ARCH),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def ktap_lines(self, number: int, name: str) -> list[str]:
        """This run as test `number` of a KTAP document: a subtest per case, failures in `#`."""
        desc = name.replace("#", "")  # a KTAP description cannot hold '#'
        lines = ["  KTAP version 1", f"  # Subtest: {desc}", f"  1..{len(self.cases)}"]
        for n, case in enumerate(self.cases, 1):
            if case.failure is None:
                lines.append(f"  ok {n} {case.name}")
                continue
            lines.append(f"  # {case.name} failed ({case.kind or 'failure'}):")
            lines += [f"  # {line}".rstrip() for line in case.failure.splitlines()]
            directive = " # TIMEOUT" if case.kind == "timeout" else ""
            lines.append(f"  not ok {n} {case.name}{directive}")
        release = self.info.get("kernel_release")
        total = self.timings.get("total")
        lines.append(
            f"# {desc}: Linux {release or self.kernel}, allocator {self.allocator}"
            + (f", {total:.1f} s" if total is not None else "")
        )
        lines.append(f"{'ok' if self.passed else 'not ok'} {number} {desc}")
        return lines

    def junit(self) -> bytes:
        failures = sum(1 for c in self.cases if c.failure is not None)
        suite = ET.Element(
            "testsuite",
            name=f"zskit.{self.name}",
            tests=str(len(self.cases)),
            failures=str(failures),
            errors="0",
            time=f"{sum(c.seconds for c in self.cases):.3f}",
        )
        for case in self.cases:
            tc = ET.SubElement(
                suite,
                "testcase",
                classname=f"zskit.{self.name}",
                name=case.name,
                time=f"{case.seconds:.3f}",
            )
            if case.failure is not None:
                fail = ET.SubElement(tc, "failure", type=case.kind or "failure")
                fail.set("message", case.failure.splitlines()[0] if case.failure else "")
                fail.text = case.failure
        root = ET.Element("testsuites")
        root.append(suite)
        ET.indent(root)
        return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def ktap(runs: Sequence[tuple[str, RunResult]]) -> str:
    """KTAP v1: one top-level test per (name, run), with a subtest per case."""
    lines = ["KTAP version 1", f"1..{len(runs)}"]
    for number, (name, result) in enumerate(runs, 1):
        lines += result.ktap_lines(number, name)
    return "\n".join(lines) + "\n"


def new_run(
    kernel: KernelId,
    allocator: str,
    root: Path = RESULTS,
    directory: Path | None = None,
) -> RunResult:
    """A new results directory: `root/<stamp>-<kernel>-<allocator>-<variant>` (and
    `root/latest`), or `directory` as given (zskit matrix, CI shards), leaving `latest` alone."""
    if directory is None:
        name = kernel.name(allocator, full=True)
        directory = _fresh(root, f"{time.strftime('%Y%m%d-%H%M%S')}-{name}")
        _link(root, "latest", directory)
    else:
        directory.mkdir(parents=True, exist_ok=True)
    return RunResult(
        run_id=directory.name,
        kernel=kernel.series,
        allocator=allocator,
        directory=directory,
        variant=kernel.variant,
        tree=kernel.tree,
        arch=kernel.arch,
    )


def save_sources(result: RunResult, files: list[Path]) -> None:
    dest = result.directory / "sources"
    dest.mkdir(parents=True, exist_ok=True)
    for path in files:
        shutil.copy2(path, dest / path.name)


def new_results_dir(kind: str, root: Path = RESULTS) -> Path:
    """A fresh `<kind>-<stamp>` directory under root, and `latest-<kind>` pointing at it."""
    directory = _fresh(root, f"{kind}-" + time.strftime("%Y%m%d-%H%M%S"))
    _link(root, f"latest-{kind}", directory)
    return directory


def _fresh(root: Path, base: str) -> Path:
    """root/base, or root/base-2, -3...: a new directory (runs may start in the same second)."""
    root.mkdir(parents=True, exist_ok=True)
    directory, n = root / base, 1
    while True:
        try:
            directory.mkdir()
            return directory
        except FileExistsError:
            n += 1
            directory = root / f"{base}-{n}"


def _link(root: Path, name: str, directory: Path) -> None:
    """root/name -> directory, swapped atomically: it always names a whole directory."""
    tmp = root / f".{name}-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(directory.name)
    tmp.replace(root / name)
