"""report.txt: the validation as plain text for a reply on the list, under 80 columns.

A verdict block per patch, the cost in LKP's layout (base, %stddev, %change,
patched, %stddev; a change is claimed only where it is significant at 95%,
the kernel's ministat practice: instructions are exact, times are tested with
Welch's t), what could not run and why, the base, and a Tested-by: line only
when every check of every patch passed.
"""

from __future__ import annotations

import statistics
import subprocess
import textwrap
from collections.abc import Sequence

from ..perf import significant
from .results import KernelResult, Step, Validation

WIDTH = 78


def _wrap(text: str, indent: str = "", first: str = "") -> list[str]:
    return textwrap.wrap(
        text,
        WIDTH,
        initial_indent=first or indent,
        subsequent_indent=indent,
        break_on_hyphens=False,
        break_long_words=True,
    )


def _stddev(samples: Sequence[float]) -> str:
    if len(samples) < 2 or not statistics.mean(samples):
        return ""
    return f"±{statistics.stdev(samples) / statistics.mean(samples):.1%}"


def _row(base: str, base_sd: str, change: str, patched: str, sd: str, metric: str) -> str:
    return f"{base:>12} {base_sd:>7} {change:>9} {patched:>12} {sd:>7}  {metric}".rstrip()


def _cost_rows(step: Step) -> list[str]:
    rows = []
    if step.cost:
        for phase, n in step.cost.per_call.items():
            base = step.cost.base_per_call.get(phase)
            if not base:
                continue
            change = f"{n / base - 1:+.1%}" if n != base else "0.0%"
            rows.append(_row(f"{base:.1f}", "", change, f"{n:.1f}", "", f"instructions/{phase}"))
    pf = step.perf
    if pf and pf.samples and pf.base_samples:
        mean, base_mean = statistics.mean(pf.samples), statistics.mean(pf.base_samples)
        verdict = significant(pf.base_samples, pf.samples)
        change = f"{mean / base_mean - 1:+.1%}" if verdict else "~"
        rows.append(
            _row(
                f"{base_mean:.0f}",
                _stddev(pf.base_samples),
                change,
                f"{mean:.0f}",
                _stddev(pf.samples),
                "ns/object (wall, TCG)",
            )
        )
    if pf:
        rows.append(
            _row(
                str(pf.base_pages),
                "",
                _change(pf.pages, pf.base_pages),
                str(pf.pages),
                "",
                "pool pages after the writes",
            )  # fmt: skip
        )
    return rows


def _change(new: float, old: float) -> str:
    return "0.0%" if new == old or not old else f"{new / old - 1:+.1%}"


def _cost(k: KernelResult) -> list[str]:
    out: list[str] = []
    for step in k.steps:
        rows = _cost_rows(step)
        if not rows:
            continue
        out += ["", f"Cost of patch {step.patch} on {k.kernel.label}, against the base:"]
        out.append(_row("base", "%stddev", "%change", "patched", "%stddev", ""))
        out += rows
    if out:
        out += [""] + _wrap(
            "instructions: the allocator's own, per call of each phase of zstest's bench, "
            "counted exactly (no %stddev: every run gives the same count). ns/object: "
            "the bench's time per object over the loads; '~' where the change is not "
            "significant at 95% (Welch's t)."
        )
    return out


def _not_run(v: Validation) -> list[str]:
    out = []
    for k in v.kernels:
        for step in k.steps:
            for name, check in step.checks.items():
                if check.status == "skip":
                    out += _wrap(
                        check.summary, "    ", f"  {k.kernel.label} #{step.patch} {name}: "
                    )
            if step.cost is None and step.cost_note:
                out += _wrap(step.cost_note, "    ", f"  {k.kernel.label} #{step.patch} cost: ")
    return out


def git_identity() -> str | None:
    """ "Name <email>" from git config (the repository here, else the user's), or None."""
    found = []
    for key in ("user.name", "user.email"):
        proc = subprocess.run(["git", "config", key], capture_output=True, text=True)
        found.append(proc.stdout.strip() if proc.returncode == 0 else "")
    name, mail = found
    return f"{name} <{mail}>" if name and mail else None


def all_passed(v: Validation) -> bool:
    """Every check of every patch on every kernel passed: none failed, erred, warned or
    could not run (a skipped check that the series does not reach is fine)."""
    return (
        v.passed
        and all(
            c.status in ("pass", "skip")
            for k in v.kernels
            for s in k.steps
            for c in s.checks.values()
        )
        and all(s.verdict == "PASS" for k in v.kernels for s in k.steps)
    )


def text(v: Validation, tester: str | None) -> str:
    s = v.series
    out = _wrap(f"zskit validate: {s.title}")
    head = f"{len(s.patches)} patch(es)"
    if s.base_commit:
        head += f", base-commit {s.base_commit}"
    out += _wrap(head + ".")
    for k in v.kernels:
        out += _wrap(f"Applied onto {k.source} on Linux {k.kernel.label} ({k.release}).")
    total = len(s.patches)
    for patch in s.patches:
        verdict, _ = v.verdict(patch.number)
        out += [""] + _wrap(f"[{patch.number}/{total}] {patch.subject}: {verdict}")
        for k in v.kernels:
            step = k.steps[patch.number - 1]
            out += _wrap(step.reason(), "      ", f"  {k.kernel.label}: {step.verdict}: ")
    for k in v.kernels:
        out += _cost(k)
    skipped = _not_run(v)
    if skipped:
        out += ["", "Not run:"] + skipped
    if s.notes:
        out += ["", "Notes:"] + [ln for n in s.notes for ln in _wrap(n, "    ", "  - ")]
    out.append("")
    if all_passed(v) and tester:
        out.append(f"Tested-by: {tester}")
    elif all_passed(v):
        out += _wrap(
            "Every check passed; no Tested-by: line without a name (git config user.name "
            "and user.email, or --tested-by)."
        )
    else:
        out.append("Not every check passed: no Tested-by: line.")
    return "\n".join(out) + "\n"
