"""Crash triage: find the first kernel failure in a console log and quote it.

A run fails on any of these, wherever they appear in the console or the
kernel log. The excerpt starts at the report's first line and covers the
lines that follow, so the verdict carries the trace that explains it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Kinds in order of precedence when several start on the same line. A "^"
# anchors at the start of the message (after the timestamp), so ordinary
# text that merely mentions a bug is not taken for a report.
PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("kasan", re.compile(r"\bBUG: KASAN: |\bKASAN: ")),
    ("kfence", re.compile(r"\bBUG: KFENCE: ")),
    ("kcsan", re.compile(r"\bBUG: KCSAN: ")),
    # lockdep reports are printed, not WARN()ed: panic_on_warn never sees them.
    (
        "lockdep",
        re.compile(
            r"^WARNING: (possible (circular|recursive) locking|inconsistent lock state|"
            r"possible irq lock inversion|bad unlock balance|held lock freed|"
            r"lock held when returning to user space|suspicious RCU usage|"
            r"Nested lock was not taken)"
        ),
    ),
    ("soft-lockup", re.compile(r"\bwatchdog: BUG: soft lockup\b|\bsoft lockup - CPU#")),
    ("hung-task", re.compile(r"\bINFO: task .* blocked for more than \d+ seconds")),
    ("general-protection-fault", re.compile(r"\bgeneral protection fault\b")),
    ("bug", re.compile(r"^BUG: |\bkernel BUG at ")),
    ("oops", re.compile(r"^Oops: ")),
    ("warning", re.compile(r"^WARNING: (CPU: |at )")),
    ("panic", re.compile(r"\bKernel panic - not syncing\b")),
)

EXCERPT_LINES = 40
TIMESTAMP = re.compile(r"^\[\s*\d+\.\d+\]\s?")


@dataclass(frozen=True)
class Crash:
    kind: str
    line: int  # 1-based line of the console where the report starts
    excerpt: str

    def headline(self) -> str:
        first = self.excerpt.splitlines()[0] if self.excerpt else ""
        return f"kernel {self.kind}: {first.strip()}"


def clean_lines(console: str) -> list[str]:
    """Console text as lines, without the serial line's CR padding."""
    return [line.rstrip("\r") for line in console.replace("\r\n", "\n").split("\n")]


def find_crash(console: str) -> Crash | None:
    """The first kernel failure report in the console, or None."""
    lines = clean_lines(console)
    for number, line in enumerate(lines):
        text = TIMESTAMP.sub("", line)
        for kind, pattern in PATTERNS:
            if pattern.search(text):
                excerpt = "\n".join(lines[number : number + EXCERPT_LINES])
                return Crash(kind=kind, line=number + 1, excerpt=excerpt)
    return None
