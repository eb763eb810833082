"""The checker's own score: `zskit selftest historical` runs the historical-bug corpus.

Each entry of tests/historical/corpus.py (a zsmalloc or zram bug that upstream fixed, or a
benign upstream change) is written as a one-patch series against the pristine source of its
kernel and run through `zskit validate` (without perf). A bug is caught when the patch's
build, load, suite or zram check fails, and the runner names the check that saw it (model,
data, leak, KASAN, KCSAN, lockdep, WARN, crash, build, zram); a benign change must pass
them (checkpatch is reported, never counted: the corpus's patches are planted edits, not
submissions). The score is "caught k of N" and "false alarms b of B".

The corpus is test data about upstream bugs, so it lives in the repository's tests/historical/
and is loaded from there by path: product code never imports tests/, and an installed zskit
without a checkout says it needs one. An entry whose kernel variant zskit cannot build yet
(VARIANT_FRAGMENTS) is not run: the runner says which variant it needs. An entry whose
kernel is not in the cache is not run either, unless --provision asks to build it.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from ..check.scenarios import SCENARIOS
from ..kernel.identity import DISTRO, KernelId
from ..kernel.provision import cached_variants, provision
from ..kernel.source import VARIANT_FRAGMENTS
from ..paths import REPO, RESULTS
from ..progress import Progress, StageError
from ..report import new_results_dir
from . import validate
from .config import Config

CORPUS = REPO / "tests" / "historical" / "corpus.py"
# The checks whose failure counts as a catch (checkpatch never does).
COUNTED = ("apply", "build", "load", "suite", "zram", "zswap")
LOCKDEP = (
    "possible circular locking dependency",
    "possible recursive locking",
    "inconsistent lock state",
    "bad unlock balance",
    "suspicious RCU usage",
    "lockdep",
)


def load_corpus(path: Path = CORPUS) -> ModuleType:
    """tests/historical/corpus.py of the checkout, loaded by path (it is not product code)."""
    if not path.is_file():
        raise StageError(
            f"zskit selftest historical needs a zskit checkout: no {path} (the corpus is test "
            "data kept with the tests, not installed with the package)"
        )
    spec = importlib.util.spec_from_file_location("zskit_historical_corpus", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building
    spec.loader.exec_module(module)
    return module


@dataclass
class Outcome:
    name: str
    series: str
    variant: str
    scenario: str
    benign: bool
    status: str  # caught, missed, pass, false-alarm, not-run, error
    by: str = ""  # the check that caught it (or raised the false alarm)
    why: str = ""  # one line: the failing check's summary, or why it did not run
    expected: tuple[str, ...] = ()
    checkpatch: str = ""
    seconds: float = 0.0
    directory: str = ""

    @classmethod
    def of(cls, entry: Any, status: str, **fields: Any) -> Outcome:
        """An outcome of a corpus entry: its identity and expected checks, and `status`."""
        return cls(
            entry.name,
            entry.series,
            entry.variant,
            entry.scenario,
            entry.benign,
            status,
            expected=tuple(sorted(entry.catches)),
            **fields,
        )

    @property
    def cell(self) -> str:
        if self.status == "caught":
            if not self.expected or self.by in self.expected:
                return f"caught by {self.by}"
            return f"caught by {self.by} (expected {'/'.join(self.expected)})"
        if self.status == "missed" and self.scenario not in ("suite", *SCENARIOS):
            return f"missed (needs scenario {self.scenario})"
        if self.status == "false-alarm":
            return f"FALSE ALARM ({self.by})"
        return {"not-run": self.why, "error": f"error: {self.why}"}.get(self.status, self.status)


def variants_available() -> tuple[str, ...]:
    return (DISTRO, *VARIANT_FRAGMENTS)


def classify(step: validate.Step) -> tuple[str, str] | None:
    """(the check that saw a failure, its summary), or None when every counted check passed;
    ("error", why) when a check could not run (a guest that did not boot is no catch)."""
    for name in COUNTED:
        check = step.checks.get(name)
        if check is None or check.status not in ("fail", "error"):
            continue
        if check.status == "error":  # not the patch's doing (the guest did not boot...)
            return "error", check.summary
        text = "\n".join([check.summary, *check.details])
        if name == "apply":
            return "apply", check.summary
        if name == "build":
            return "build", check.summary
        if name == "zram":
            return "zram", check.summary
        if name == "zswap":
            return "build", check.summary
        kind = step.suite_kind or ""
        if "KCSAN" in text:
            return "KCSAN", check.summary
        if "kernel kasan" in text or "kernel kfence" in text or "KASAN" in text:
            return "KASAN", check.summary
        if any(w in text for w in LOCKDEP):
            return "lockdep", check.summary
        if "kernel warning" in text:
            return "WARN", check.summary
        if kind == "data":
            return "data", check.summary
        if kind in ("pages", "leak"):
            return "leak", check.summary
        if kind in validate.MODEL_KINDS:
            return "model", check.summary
        return "crash", check.summary
    return None


def _pristine(entry: Any, p: Progress) -> Path:
    """The tree validate will apply the entry's patch to (the same blobs)."""
    kernel = provision(KernelId(entry.series, entry.variant), p)
    if entry.variant == DISTRO:
        return validate.source_tree(kernel, entry.paths, p).root
    return validate.full_tree(kernel).root


def not_run_reason(entry: Any, allow_provision: bool) -> str | None:
    if entry.variant not in variants_available():
        built = ", ".join(VARIANT_FRAGMENTS)
        return f"not run: needs variant {entry.variant} (zskit builds {built})"
    if not allow_provision and entry.variant not in cached_variants(entry.series):
        what = "Debian's kernel" if entry.variant == DISTRO else f"the {entry.variant} kernel"
        return (
            f"not run: needs kernel {entry.series}-{entry.variant} ({what} is not in the cache; "
            f"--provision builds it)"
        )
    return None


def run_entry(
    config: Config, entry: Any, corpus: ModuleType, directory: Path, p: Progress
) -> Outcome:
    outcome = Outcome.of(entry, "error", directory=str(directory))
    started = time.monotonic()
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / "zskit.log"
    with log.open("w") as out:
        quiet = Progress(verbose=p.verbose, out=p.out if p.verbose else out)
        try:
            pristine = _pristine(entry, quiet)
            mail = corpus.patch(entry, pristine, directory / f"{entry.name}.patch")
            result = validate.validate(
                config,
                [mail],
                quiet,
                kernel_names=[entry.series],
                results_dir=directory / "validate",
                perf_rounds=0,
                variant=entry.variant,
                # The scenario that should make it happen, where zskit has it.
                scenarios=(entry.scenario,) if entry.scenario in SCENARIOS else (),
                scenario_seconds=entry.scenario_seconds,
            )
        except (StageError, ValueError, RuntimeError, OSError) as e:
            outcome.why = str(e).splitlines()[0] if str(e) else type(e).__name__
            outcome.seconds = time.monotonic() - started
            return outcome
    step = result.kernels[0].steps[0]
    outcome.checkpatch = step.checks["checkpatch"].cell
    seen = classify(step)
    if seen is None:
        outcome.status = "pass" if entry.benign else "missed"
        outcome.why = step.checks["suite"].summary
    elif seen[0] == "error":
        outcome.why = seen[1]
    else:
        outcome.by, outcome.why = seen
        outcome.status = "false-alarm" if entry.benign else "caught"
    outcome.seconds = time.monotonic() - started
    return outcome


@dataclass
class Score:
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, benign: bool, *statuses: str) -> int:
        return sum(1 for o in self.outcomes if o.benign == benign and o.status in statuses)

    def total(self, benign: bool) -> int:
        return sum(1 for o in self.outcomes if o.benign == benign)

    def lines(self) -> list[str]:
        caught, bugs = self.count(False, "caught"), self.total(False)
        ran = self.count(False, "caught", "missed")
        alarms, benign = self.count(True, "false-alarm"), self.total(True)
        not_run = self.count(False, "not-run") + self.count(True, "not-run")
        errors = self.count(False, "error") + self.count(True, "error")
        said = [
            f"caught {caught} of {bugs}" + (f" ({caught} of the {ran} run)" if ran != bugs else ""),
            f"false alarms {alarms} of {benign}",
        ]
        if not_run:
            said.append(f"not run: {not_run} (their variant or kernel is not at hand)")
        if errors:
            said.append(f"errors: {errors} (the run itself failed: see their zskit.log)")
        said.append(f"wall time {self.seconds:.0f} s")
        return said


def table(score: Score) -> str:
    rows = [("entry", "series", "variant", "scenario", "verdict", "time")]
    for o in score.outcomes:
        took = f"{o.seconds:.0f} s" if o.status not in ("not-run",) else "-"
        rows.append((o.name, o.series, o.variant, o.scenario, o.cell, took))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
        for r in rows
    )


def historical(
    config: Config,
    p: Progress,
    only: Sequence[str] = (),
    allow_provision: bool = False,
    results_dir: Path | None = None,
    corpus_path: Path = CORPUS,
) -> tuple[Score, Path]:
    """Run the corpus (or the entries named in `only`) through validate, entry by entry."""
    started = time.monotonic()
    corpus = load_corpus(corpus_path)
    entries = list(corpus.ENTRIES)
    if only:
        names = {e.name for e in entries}
        unknown = [n for n in only if n not in names]
        if unknown:
            raise StageError(f"no corpus entry {', '.join(unknown)}; `--list` names them")
        entries = [e for e in entries if e.name in only]
    directory = results_dir or new_results_dir("selftest-historical", RESULTS)
    directory.mkdir(parents=True, exist_ok=True)
    score = Score()
    for n, entry in enumerate(entries, 1):
        why = not_run_reason(entry, allow_provision)
        if why is not None:
            outcome = Outcome.of(entry, "not-run", why=why)
        else:
            p.say(f"[{n}/{len(entries)}] {entry.name} on {entry.series} {entry.variant}")
            outcome = run_entry(config, entry, corpus, directory / entry.name, p)
        p.say(f"{entry.name}: {outcome.cell}")
        score.outcomes.append(outcome)
    score.seconds = time.monotonic() - started
    _write(score, directory)
    return score, directory


def _write(score: Score, directory: Path) -> None:
    data = {
        "kind": "zskit-selftest-historical",
        "summary": score.lines(),
        "seconds": round(score.seconds, 1),
        "entries": [
            {
                "name": o.name,
                "series": o.series,
                "variant": o.variant,
                "scenario": o.scenario,
                "benign": o.benign,
                "status": o.status,
                "by": o.by,
                "expected": list(o.expected),
                "verdict": o.cell,
                "why": o.why,
                "checkpatch": o.checkpatch,
                "seconds": round(o.seconds, 1),
                "directory": o.directory,
            }
            for o in score.outcomes
        ],
    }
    (directory / "results.json").write_text(json.dumps(data, indent=1) + "\n")
    (directory / "summary.txt").write_text(table(score) + "\n\n" + "\n".join(score.lines()) + "\n")
