"""Crash triage: find the first kernel failure in a console log and quote it.

A run fails on any of these, wherever they appear in the console or the
kernel log. The excerpt starts at the report's first line and covers the
lines that follow, so the verdict carries the trace that explains it.

One exception: a KCSAN report of a race the unmodified allocator has
(KNOWN_RACES) is recorded (`known_races`), not failed. Strict KCSAN reports
it in upstream zsmalloc itself, so without the exception the kcsan variant
would fail unmodified kernels at random.
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
    # x86 and powerpc print "Oops: ", arm64 "Internal error: Oops", after the line that
    # names the fault ("Unable to handle kernel paging request", powerpc's "BUG: Kernel
    # NULL pointer dereference", taken as "bug" above).
    ("oops", re.compile(r"^Oops: |^Unable to handle kernel |^Internal error: Oops")),
    ("warning", re.compile(r"^WARNING: (CPU: |at )")),
    ("panic", re.compile(r"\bKernel panic - not syncing\b")),
)

EXCERPT_LINES = 40
TIMESTAMP = re.compile(r"^\[\s*\d+\.\d+\]\s?")
# One access of a KCSAN report: "read to 0x... of 4 bytes by task 267 on cpu 0:", then
# its stack, whose first frame is the function that made it.
KCSAN_ACCESS = re.compile(r"^(read|write)(?: \(marked\))? to 0x[0-9a-f]+ of \d+ bytes by ")
FRAME = re.compile(r"^\s*([\w.]+)\+0x")
KCSAN_END = re.compile(r"^=+$")


@dataclass(frozen=True)
class KnownRace:
    """A race of unmodified zsmalloc that strict KCSAN reports: one of `readers` reads
    what one of `writers` writes; the read is harmless for the reason given."""

    name: str
    readers: tuple[str, ...]
    writers: tuple[str, ...]
    why: str


KNOWN_RACES = (
    KnownRace(
        "get_zspage-magic",
        # The lockless readers of that word: zs_page_isolate() and zs_unmap_object()
        # (get_zspage(), zspage_class()), zs_map_object() once it has dropped the lock
        # (zspage_class(), ZsHugePage()).
        ("zs_page_isolate", "zs_map_object", "zs_unmap_object"),
        # Where set_zspage_mapping() rewrites fullness (and the same class bits).
        ("fix_fullness_group", "putback_zspage", "zs_malloc"),
        "get_zspage()'s BUG_ON (zspage->magic), zspage_class() and ZsHugePage() read "
        "bits that share a word of bitfields with fullness, without the pool lock, while "
        "zs_malloc/zs_free rewrite fullness under it on another CPU; the bits read never "
        "change (6.1; 7.2 reads the word the same way)",
    ),
)


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


def known_race(lines: list[str]) -> KnownRace | None:
    """The known race a KCSAN report (its lines, from its first) is, or None: one whose
    read is made by the rule's reader while the other access writes."""
    accesses: list[tuple[str, str]] = []  # (read or write, the function that made it)
    for number, raw in enumerate(lines[1:], 1):
        text = TIMESTAMP.sub("", raw)
        if KCSAN_END.match(text.strip()):
            break
        if (m := KCSAN_ACCESS.match(text)) and number + 1 < len(lines):
            frame = FRAME.match(TIMESTAMP.sub("", lines[number + 1]))
            accesses.append((m[1], frame[1] if frame else ""))
    kinds = sorted(kind for kind, _ in accesses)
    for race in KNOWN_RACES:
        readers = [f for kind, f in accesses if kind == "read" and f in race.readers]
        writers = [f for kind, f in accesses if kind == "write" and f in race.writers]
        if kinds == ["read", "write"] and readers and writers:
            return race
    return None


def _reports(console: str) -> list[tuple[Crash, KnownRace | None]]:
    lines = clean_lines(console)
    found: list[tuple[Crash, KnownRace | None]] = []
    for number, line in enumerate(lines):
        text = TIMESTAMP.sub("", line)
        for kind, pattern in PATTERNS:
            if pattern.search(text):
                excerpt = "\n".join(lines[number : number + EXCERPT_LINES])
                race = known_race(lines[number:]) if kind == "kcsan" else None
                found.append((Crash(kind=kind, line=number + 1, excerpt=excerpt), race))
                break
    return found


def find_crash(console: str) -> Crash | None:
    """The first kernel failure report in the console (but known races), or None."""
    return next((crash for crash, race in _reports(console) if race is None), None)


def known_races(console: str) -> list[str]:
    """The known races (KNOWN_RACES) the console reports, by name, in order."""
    return [race.name for _, race in _reports(console) if race is not None]
