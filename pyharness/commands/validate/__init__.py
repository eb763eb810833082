"""Reviewer patch validation: a zsmalloc series, patch by patch, on each kernel.

`zskit validate SERIES...` reads a series (files from `git format-patch`, an
mbox, or a directory of them), applies it with `git am` onto pristine files
of the kernel's own linux-source package and checks every cumulative state
(base+1, base+1+2, ...):

  apply       git am; rejected hunks are quoted with file and hunk
  build       zsmalloc.ko (and zstest.ko) against the patched mm/zsmalloc.c and
              include/linux/zsmalloc.h; compiler warnings the base lacks fail it
  checkpatch  the kernel's scripts/checkpatch.pl on the patch itself
  load        the modules load in the guest
  suite       run.run: the default workload checked against the model (results,
              class table, data), with crash triage
  perf        pool pages and in-kernel time of the driver's bench (commands/perf.py)
              against the base, every variant measured in one boot (density and
              speed ratios)
  zram        when the series reaches zram (its files, or a header it includes) and
              the kernel has CONFIG_ZRAM=m: the patched zram.ko round-trips data on
              the patched zsmalloc.ko in the suite's boot (clients.py)
  zswap       the same rule for mm/zswap.c: compiled against a kernel with
              CONFIG_ZSWAP=y, never run (it is part of vmlinux)

Kernels (`Target`): Debian's where zsmalloc is a module (6.1), else the
source-built minimal kernel of the series (6.12, 7.2); --variant picks
minimal or debug for all. A source-built kernel's own unpacked source tree
is the pristine tree. With --tree DIR, a kernel built from the user's tree (TreeKernel),
the series applied on files read from the tree's .git at its base: --base REV, else the
series' base-commit where the tree has it, else HEAD (pristine.tree_base); a plain
directory's files as they are.

Where things live:
  <cache>/validate/<series>/<version>/  members.txt (the source tarball's listing)
      and tree/ (pristine files taken from linux-source-<series>, never modified)
  build/validate/<series>/              warm Kbuild dirs (base/, step/) and built
      modules by content (objs/)
  build/results/validate-<stamp>/       report.md, results.json, summary.txt,
      patches/ and a directory per kernel and patch

Patches are applied in a temporary git repository, deleted as soon as every
patched state has been read into memory, so nothing half-patched outlives a
run and every run starts from the pristine files.

The package, in the order its modules import each other: series (reading a
series), pristine (the kernel's pristine files), apply (git am), plan (what is
built on a kernel), builder (the builds), results (what a check finds), steps
(the checks of one patch's state), perf (density and speed), report (the
tables and documents), validation (the whole run).
"""

from .apply import Applied, AppliedSeries, apply_series, check_tree
from .builder import WORK, Builder, Built, new_warnings, warning_key
from .perf import PERF_ROUNDS
from .plan import Plan, make_plan
from .pristine import (
    BUILT,
    HEADER,
    SOURCE,
    SourceTree,
    TreeBase,
    full_tree,
    source_tree,
    tree_base,
    tree_source,
)
from .report import as_json, markdown, summary, write
from .results import CHECKS, Check, Cost, KernelResult, Perf, Step, Validation
from .series import FileChange, Patch, Series, ValidateError, parse_diff, read_series
from .steps import MODEL_KINDS, attribute, not_built_note
from .text import git_identity, text
from .validation import Target, targets, tree_targets, validate

__all__ = [
    "BUILT",
    "CHECKS",
    "HEADER",
    "MODEL_KINDS",
    "PERF_ROUNDS",
    "SOURCE",
    "WORK",
    "Applied",
    "AppliedSeries",
    "Built",
    "Builder",
    "Check",
    "FileChange",
    "KernelResult",
    "Patch",
    "Perf",
    "Cost",
    "Plan",
    "Series",
    "SourceTree",
    "Step",
    "Target",
    "TreeBase",
    "ValidateError",
    "Validation",
    "apply_series",
    "as_json",
    "attribute",
    "check_tree",
    "full_tree",
    "make_plan",
    "markdown",
    "new_warnings",
    "not_built_note",
    "parse_diff",
    "read_series",
    "git_identity",
    "text",
    "source_tree",
    "summary",
    "targets",
    "tree_base",
    "tree_source",
    "tree_targets",
    "validate",
    "warning_key",
    "write",
]
