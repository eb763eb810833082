"""Reports: the terminal table, Markdown for a review reply, JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict

from ...kernel.identity import DISTRO
from .results import CHECKS, Cost, KernelResult, Validation
from .text import text


def _ratio(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.3f}"


def _rows(v: Validation) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for patch in v.series.patches:
        for k in v.kernels:
            s = k.steps[patch.number - 1]
            subject = patch.subject if len(patch.subject) <= 44 else patch.subject[:43] + "…"
            rows.append(
                (
                    str(patch.number),
                    subject,
                    k.kernel.series,
                    k.kernel.variant,
                    *(s.checks[c].cell for c in CHECKS),
                    _ratio(s.perf.density if s.perf else None),
                    _ratio(s.perf.speed if s.perf else None),
                    _ratio(s.cost.ratio if s.cost else None),
                    s.verdict,
                )
            )
    return rows


HEADER_ROW = (
    "#", "patch", "kernel", "variant", *CHECKS, "density", "speed", "instructions", "verdict"
)  # fmt: skip


def summary(v: Validation) -> str:
    """The terminal table, then a worded verdict per patch."""
    rows = [HEADER_ROW, *_rows(v)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER_ROW))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.append("")
    total = len(v.series.patches)
    for patch in v.series.patches:
        verdict, why = v.verdict(patch.number)
        lines.append(f"{patch.number}/{total} {verdict}: {patch.subject}: {why}")
    lines.append("")
    lines.append("density: pool pages patched/base after the bench's writes (below 1: denser);")
    lines.append("speed: its time patched/base (below 1: faster);")
    lines.append("instructions: the allocator's instructions patched/base, exact.")
    for k in v.kernels:
        lines.append(f"{k.kernel.label}: {k.perf_note}")
        lines.append(f"{k.kernel.label}: {k.cost_note}")
        lines += [f"{k.kernel.label}: {said}" for said in k.clients]
    failed = sum(1 for p in v.series.patches if not v.verdict(p.number)[0].startswith("PASS"))
    lines.append(
        f"{'PASS' if v.passed else 'FAIL'}: {total - failed} of {total} patch(es) pass "
        f"in {v.seconds:.0f} s"
    )
    return "\n".join(lines)


def _phases(cost: Cost) -> str:
    """Per call of each phase: base -> patched (ratio)."""
    ratios = cost.ratios()
    return ", ".join(
        f"{phase} {cost.base_per_call[phase]:.1f} -> {n:.1f}"
        + (f" ({ratios[phase]:.3f})" if phase in ratios else "")
        for phase, n in cost.per_call.items()
    )


def _quote(lines: Sequence[str], limit: int = 40) -> list[str]:
    shown = list(lines[:limit]) + (
        [f"... ({len(lines) - limit} more)"] if len(lines) > limit else []
    )
    return ["```", *[ln.replace("```", "'''") for ln in shown], "```"]


def _origin(k: KernelResult) -> str:
    if k.kernel.variant == DISTRO:
        return f"Debian {k.package_version}"
    return (
        f"built from linux-source-{k.kernel.series} {k.package_version} with qemu/configs/ "
        f"base.config + {k.kernel.variant}.config"
    )


def markdown(v: Validation) -> str:
    s = v.series
    out = [f"# zskit validate: {s.title}", ""]
    out.append(
        f"{len(s.patches)} patch(es)"
        + (f", base-commit {s.base_commit}" if s.base_commit else "")
        + (
            f", prerequisite-patch-id {', '.join(s.prerequisites)} (not applied by zskit)"
            if s.prerequisites
            else ""
        )
        + "."
    )
    for k in v.kernels:
        blobs = "; ".join(f"{path} {how}" for path, how in k.base_blobs.items())
        out.append(
            f"Linux {k.kernel.label} ({k.release}, {_origin(k)}): applied onto "
            f"{k.source}" + (f" ({blobs})" if blobs else "") + "."
        )
    out += [
        "",
        "Each patch is checked on its cumulative tree (base+1..N): git am, a build of "
        "zsmalloc.ko with compiler warnings compared against the base, checkpatch.pl on "
        "the patch, the modules loading in a QEMU guest, the zskit suite (every result, "
        "the class table and the data checked against a reference model, with crash "
        "triage), zram (where the series changes it or a header it includes: the patched "
        "zram.ko on the patched zsmalloc.ko, data written through /dev/zram0 and read back, "
        "before and after compaction), zswap (mm/zswap.c compiled by the same rule; and "
        "where zswap is built in over zpool with zsmalloc a module, the kernel's zswap run "
        "on each state's zsmalloc.ko: pages out through it, read back, its counters read), "
        "and the density, speed and instructions of the driver's bench against the base. "
        "A `-` is a check that was not run; the reasons are below.",
        "",
        "| " + " | ".join(HEADER_ROW) + " |",
        "|" + "---|" * len(HEADER_ROW),
    ]
    for row in _rows(v):
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    out += [
        "",
        "density = pool pages patched/base (below 1: denser); "
        "speed = time patched/base (below 1: faster); "
        "instructions = the allocator's instructions patched/base (exact counts).",
    ]
    for k in v.kernels:
        out.append(f"Measured on {k.kernel.label}: {k.perf_note}.")
        out.append(f"Counted on {k.kernel.label}: {k.cost_note}.")
        out += [f"On {k.kernel.label}, {said}." for said in k.clients]
    out += ["", "## Verdicts", ""]
    total = len(s.patches)
    for patch in s.patches:
        verdict, why = v.verdict(patch.number)
        out.append(f"- **[{patch.number}/{total}] {patch.subject}**: **{verdict}**: {why}")
    out += ["", "## Details"]
    for patch in s.patches:
        out += ["", f"### [{patch.number}/{total}] {patch.subject}", ""]
        out.append(
            f"From {patch.author}"
            + (f", {patch.date}" if patch.date else "")
            + (f", <{patch.message_id}>" if patch.message_id else "")
        )
        out.append("")
        for k in v.kernels:
            step = k.steps[patch.number - 1]
            out.append(f"On {k.kernel.label}: **{step.verdict}**")
            out.append("")
            for name, check in step.checks.items():
                out.append(f"- {name}: {check.summary}")
                if check.details and check.status in ("fail", "warn", "error"):
                    out += ["", *_quote(check.details), ""]
            if step.perf:
                pf = step.perf
                noise = (
                    f", within the noise of {k.perf_noise:.0%}: no measurable change"
                    if abs(pf.speed - 1) <= k.perf_noise
                    else ""
                )
                out.append(
                    f"- density {pf.density:.3f} ({pf.pages} pages vs {pf.base_pages}; after "
                    f"compaction {pf.pages_compacted} vs {pf.base_pages_compacted}), speed "
                    f"{pf.speed:.3f} ({pf.ns:.0f} ns vs {pf.base_ns:.0f} ns per object{noise})"
                )
            elif step.perf_note:
                out.append(f"- density and speed: {step.perf_note}")
            if step.cost:
                out.append(
                    f"- instructions {step.cost.ratio:.4f} of the base's: {_phases(step.cost)}"
                )
            elif step.cost_note:
                out.append(f"- instructions: {step.cost_note}")
            for note in step.notes:
                out.append(f"- note: {note}")
    if s.notes:
        out += ["## Notes", "", *[f"- {n}" for n in s.notes], ""]
    out.append(f"Validated by zskit in {v.seconds:.0f} s; logs in `{v.directory}`.")
    return "\n".join(out) + "\n"


def as_json(v: Validation) -> dict[str, object]:
    s = v.series
    patches = [
        {
            "number": p.number,
            "subject": p.subject,
            "raw_subject": p.raw_subject,
            "author": p.author,
            "date": p.date,
            "message_id": p.message_id,
            "origin": p.origin,
            "file": f"patches/{p.slug}.patch",
            "files": [asdict(f) for f in p.files],
            "verdict": v.verdict(p.number)[0],
            "reason": v.verdict(p.number)[1],
        }
        for p in s.patches
    ]
    kernels_doc = []
    for k in v.kernels:
        steps = []
        for step in k.steps:
            perf = None
            if step.perf:
                perf = {**asdict(step.perf), "density": step.perf.density}
            steps.append(
                {
                    "patch": step.patch,
                    "verdict": step.verdict,
                    "checks": {name: asdict(c) for name, c in step.checks.items()},
                    "perf": perf,
                    "perf_note": step.perf_note,
                    "cost": None
                    if step.cost is None
                    else {
                        **asdict(step.cost),
                        "ratio": step.cost.ratio,
                        "ratios": step.cost.ratios(),
                    },
                    "cost_note": step.cost_note,
                    "notes": step.notes,
                    "directory": step.directory,
                }
            )
        kernels_doc.append(
            {
                "kernel": k.kernel.series,
                "variant": k.kernel.variant,
                "name": k.kernel.slug,
                "tree": str(k.kernel.tree) if k.kernel.tree is not None else None,
                "release": k.release,
                "package_version": k.package_version,
                "source": k.source,
                "base_blobs": k.base_blobs,
                "base_warnings": k.base_warnings,
                "base_suite": k.base_suite,
                "perf_note": k.perf_note,
                "perf_noise": round(k.perf_noise, 3),
                "cost_note": k.cost_note,
                "clients": k.clients,
                "same_boot": True,
                "seconds": round(k.seconds, 1),
                "steps": steps,
            }
        )
    return {
        "kind": "zskit-validate",
        "title": s.title,
        "cover": s.cover,
        "base_commit": s.base_commit,
        "prerequisite_patch_ids": list(s.prerequisites),
        "notes": list(s.notes),
        "verdict": "pass" if v.passed else "fail",
        "seconds": round(v.seconds, 1),
        "patches": patches,
        "kernels": kernels_doc,
    }


def write(v: Validation) -> None:
    (v.directory / "report.md").write_text(markdown(v))
    (v.directory / "report.txt").write_text(text(v, v.tester))
    (v.directory / "results.json").write_text(json.dumps(as_json(v), indent=2) + "\n")
    (v.directory / "summary.txt").write_text(summary(v) + "\n")
