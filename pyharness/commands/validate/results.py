"""Results of the checks: a check, a step (one patch on one kernel), a kernel's results,
the whole validation's."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ...kernel.identity import KernelId
from .builder import Built
from .series import Series


@dataclass
class Check:
    status: str  # pass, warn, fail, error (not the patch's doing), skip
    summary: str  # one line
    cell: str = ""  # the table's short form
    details: list[str] = field(default_factory=list)  # quoted lines

    def __post_init__(self) -> None:
        default = {"pass": "ok", "warn": "warn", "fail": "FAIL", "error": "ERROR"}
        self.cell = self.cell or default.get(self.status, "-")


@dataclass
class Perf:
    pages: int  # after the bench's writes
    base_pages: int
    pages_compacted: int  # after it freed half and compacted
    base_pages_compacted: int
    ns: float  # the median of the loads' fastest time per object (the bench's phases)
    base_ns: float
    speed: float  # the median of time / time of the base runs next to it
    pairs: int  # how many such comparisons
    samples: list[float] = field(default_factory=list)  # each load's time per object
    base_samples: list[float] = field(default_factory=list)

    @property
    def density(self) -> float:
        return self.pages / self.base_pages if self.base_pages else float("nan")


@dataclass
class Cost:
    """The allocator's instructions per call of each phase of the counted bench, patched
    and base (exact: the counting plugin's counts do not depend on time)."""

    per_call: dict[str, float]
    base_per_call: dict[str, float]
    total: int  # all phases of one bench
    base_total: int

    @property
    def ratio(self) -> float:
        return self.total / self.base_total if self.base_total else float("nan")

    def ratios(self) -> dict[str, float]:
        return {
            phase: n / self.base_per_call[phase]
            for phase, n in self.per_call.items()
            if self.base_per_call.get(phase)
        }


CHECKS = ("apply", "build", "checkpatch", "load", "suite", "zram", "zswap")
# zram: the patched zram.ko round-trips data on the patched zsmalloc in the suite's boot;
# zswap: the patched mm/zswap.c compiles (zswap is in vmlinux: never run).


@dataclass
class Step:
    """One patch on one kernel: its cumulative state's checks."""

    patch: int
    checks: dict[str, Check]
    perf: Perf | None = None
    perf_note: str = ""
    cost: Cost | None = None
    cost_note: str = ""
    notes: list[str] = field(default_factory=list)
    directory: str = ""  # relative to the validation's directory
    built: Built | None = None
    suite_kind: str | None = None  # the suite's failure kind

    @property
    def verdict(self) -> str:
        statuses = [c.status for c in self.checks.values()]
        if "fail" in statuses:
            return "FAIL"
        if "error" in statuses:
            return "ERROR"
        if self.checks["apply"].status == "skip":
            return "NOT TESTED"
        return "PASS (warnings)" if "warn" in statuses else "PASS"

    @property
    def passed(self) -> bool:
        return self.verdict.startswith("PASS")

    def reason(self) -> str:
        """Why the verdict is what it is, in one sentence."""
        bad = [c.summary for c in self.checks.values() if c.status in ("fail", "error")]
        if bad:
            return "; ".join(bad)
        if self.verdict == "NOT TESTED":
            return self.checks["apply"].summary
        said = [c.summary for c in self.checks.values() if c.status in ("pass", "warn")]
        return "; ".join(said)


@dataclass
class KernelResult:
    kernel: KernelId
    release: str
    package_version: str
    source: str  # the pristine tree's label
    base_blobs: dict[str, str]
    base_warnings: list[str]
    steps: list[Step]
    perf_note: str = ""
    perf_noise: float = 0.0  # the base's own spread of times: speed nearer 1 is no change
    cost_note: str = ""  # how instructions were counted, or why they were not
    base_suite: str | None = None  # the base's suite verdict, when it was run
    seconds: float = 0.0
    clients: list[str] = field(default_factory=list)  # what of zram and zswap ran, and why


@dataclass
class Validation:
    directory: Path
    series: Series
    kernels: list[KernelResult]
    seconds: float = 0.0
    tester: str | None = None  # "Name <email>" of report.txt's Tested-by: line

    @property
    def passed(self) -> bool:
        return all(s.passed for k in self.kernels for s in k.steps)

    def verdict(self, number: int) -> tuple[str, str]:
        """The patch's verdict over every kernel, and why."""
        steps = [(k, k.steps[number - 1]) for k in self.kernels]
        for wanted in ("FAIL", "ERROR", "NOT TESTED"):
            for k, s in steps:
                if s.verdict == wanted:
                    return wanted, f"on {k.kernel.label}: {s.reason()}"
        verdict = "PASS (warnings)" if any(s.verdict != "PASS" for _, s in steps) else "PASS"
        return verdict, "; ".join(f"{k.kernel.label}: {s.reason()}" for k, s in steps)
