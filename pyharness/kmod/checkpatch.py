"""Kernel coding style: the matching kernel's own scripts/checkpatch.pl on a C file or a patch."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..kernel.manifest import Kernel
from ..progress import StageError

# A finding the source explains, in a comment of its own:
# /* checkpatch: TYPE TOKEN... : why */
JUSTIFICATION = re.compile(r"/\* checkpatch: ([A-Z_]+) ([^:]+): .+\*/")
TOTAL = re.compile(r"^total: (\d+) errors, (\d+) warnings, (?:(\d+) checks, )?(\d+) lines checked")
FINDING = re.compile(r"^(\S+?):(\d+): (ERROR|WARNING|CHECK):")


@dataclass(frozen=True)
class StyleReport:
    errors: int
    warnings: int
    checks: int
    findings: tuple[str, ...]  # "file:line: KIND: message"

    @property
    def clean(self) -> bool:
        return self.errors == self.warnings == self.checks == 0

    def without_justified(self, source: Path) -> StyleReport:
        """The report less the findings `source` justifies (the token in <...> named)."""
        allowed = {
            (kind, token)
            for kind, tokens in JUSTIFICATION.findall(source.read_text())
            for token in tokens.split()
        }
        kept, dropped = [], {"ERROR": 0, "WARNING": 0, "CHECK": 0}
        for finding in self.findings:
            m = re.search(r": (ERROR|WARNING|CHECK):([A-Z_]+):.*<([^>]+)>", finding)
            if m and (m[2], m[3]) in allowed:
                dropped[m[1]] += 1
            else:
                kept.append(finding)
        return StyleReport(
            self.errors - dropped["ERROR"],
            self.warnings - dropped["WARNING"],
            self.checks - dropped["CHECK"],
            tuple(kept),
        )


def checkpatch(
    kernel: Kernel, source: Path, strict: bool = True, patch: bool = False
) -> StyleReport:
    """`patch`: source is a patch (a mail from git format-patch), checked as maintainers do."""
    script = kernel.source / "scripts" / "checkpatch.pl"
    if not script.exists():
        raise StageError(f"{script} is missing; rerun provisioning with --refresh")
    cmd = ["perl", str(script), "--no-tree", "--terse", "--show-types"]
    cmd += [str(source)] if patch else ["-f", str(source)]
    if strict:
        cmd.insert(2, "--strict")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = proc.stdout.splitlines()
    findings = tuple(line for line in lines if FINDING.match(line))
    totals = next((TOTAL.match(line) for line in lines if TOTAL.match(line)), None)
    if totals is None:
        # --terse prints no total line for a clean file; anything else is a failure to run.
        if proc.returncode == 0 and not findings:
            return StyleReport(0, 0, 0, ())
        raise StageError(f"checkpatch.pl failed on {source}:\n{proc.stdout}{proc.stderr}")
    return StyleReport(
        errors=int(totals[1]),
        warnings=int(totals[2]),
        checks=int(totals[3] or 0),
        findings=findings,
    )
