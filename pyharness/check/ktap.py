"""KTAP (and the TAP 13/14 that kselftest prints), read the way kunit_tool reads it.

A kernel's own tests report in KTAP: KUnit into the kernel log, kselftest's
runner on its output. The document is found in surrounding text by its version
line ("KTAP version 1", "TAP version 13"); whatever stands before that line on
it (a log prefix) is taken off every later line, as are the kernel log's
"[   12.345678] " stamps; indentation stays (a module's suite is printed one
level in, with no top-level header). A test is a result line ("ok 3 name # SKIP reason")
after its diagnostic lines ("# ..."); a subtest is the same, indented by the
next level, and its own result line closes it. What the parser cannot place is
never dropped in silence: a plan that the results do not meet, a missing
version line or unparsable result make the document `errors`, which fail it
like a failed test (kunit_tool does the same with a crashed suite's log).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

VERSION = re.compile(r"(K?TAP) version (\d+)")
STAMP = re.compile(r"^\[\s*\d+\.\d+\]\s?")
PLAN = re.compile(r"^1\.\.(\d+)\s*$")
RESULT = re.compile(r"^(not ok|ok) (\d+)(?: -)?\s*([^#]*?)\s*(?:#\s*(\S+)\s*(.*))?$")
SUBTEST_NAME = re.compile(r"^# Subtest: (.*)$")
INDENT = re.compile(r"^( *)")


@dataclass
class TestResult:
    """One test of a KTAP document: its result, its log and its subtests."""

    name: str
    ok: bool = True
    directive: str | None = None  # SKIP, TODO, TIMEOUT, XFAIL (upper case), or None
    reason: str = ""  # the text after the directive
    log: list[str] = field(default_factory=list)  # its diagnostic lines, without "# "
    subtests: list[TestResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # what the parser could not accept

    @property
    def status(self) -> str:
        """ "ok", "failed", "skipped", "timeout" or "error" (kunit_tool's verdicts)."""
        if self.errors:
            return "error"
        if self.directive == "TIMEOUT":
            return "timeout"
        if self.directive == "SKIP":
            return "skipped"
        if not self.ok and self.directive not in ("TODO", "XFAIL"):
            return "failed"
        return "ok"

    @property
    def passed(self) -> bool:
        return self.status in ("ok", "skipped") and all(t.passed for t in self.subtests)

    def walk(self, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], TestResult]]:
        """Every test under this one (not itself), with the names leading to it."""
        for test in self.subtests:
            here = (*path, test.name)
            yield here, test
            yield from test.walk(here)

    def counts(self) -> dict[str, int]:
        """How many leaf tests have each status (a test with subtests counts by them)."""
        found: dict[str, int] = {}
        for _, test in self.walk():
            if not test.subtests:
                found[test.status] = found.get(test.status, 0) + 1
        return found


def extract(text: str) -> list[str]:
    """The KTAP document's lines from `text`: from its first version line, each line's
    log prefix and kernel time stamp taken off; empty when there is no version line."""
    lines = text.splitlines()
    for start, line in enumerate(lines):
        clean = STAMP.sub("", line)
        m = VERSION.search(clean)
        if m is None:
            continue
        # A log prefix, not indentation: a KUnit module's suite starts one level in.
        prefix = clean[: m.start()] if clean[: m.start()].strip() else ""
        bodies = (STAMP.sub("", raw) for raw in lines[start:])
        return [body.removeprefix(prefix) for body in bodies]
    return []


def parse(text: str, name: str = "ktap") -> TestResult:
    """The KTAP document in `text` as one root test named `name` holding its top-level
    tests; a document that is missing or malformed has the root's `errors` set."""
    root = TestResult(name)
    lines = extract(text)
    if not lines:
        root.errors.append("no KTAP output (no `KTAP version` or `TAP version` line)")
        return root
    _parse_level(root, lines, 0, 0)
    return root


def _indent(line: str) -> int:
    m = INDENT.match(line)
    return len(m[1]) if m else 0


def _parse_level(parent: TestResult, lines: list[str], at: int, level: int) -> int:
    """Read the tests of `parent` at indentation `level` from lines[at]; return the index
    of the first line that is not theirs (a shallower one: the parent's result line)."""
    plan: int | None = None
    log: list[str] = []
    nested: TestResult | None = None  # a subtest read, waiting for its result line here
    i = at
    while i < len(lines):
        line = lines[i]
        depth, body = _indent(line), line.strip()
        if not body:
            i += 1
            continue
        if depth < level:
            break
        if depth > level:
            _unfinished(nested)
            nested = TestResult("")
            i = _parse_level(nested, lines, i, depth)
            parent.subtests.append(nested)
            continue
        if VERSION.search(body) and body.startswith(("KTAP", "TAP")):
            pass
        elif m := PLAN.match(body):
            plan = int(m[1])
        elif m := SUBTEST_NAME.match(body):
            parent.name = parent.name or m[1]  # its result line names it again
        elif m := RESULT.match(body):
            test = nested or TestResult("")
            _close(test, m, log)
            if nested is None:
                parent.subtests.append(test)
            log, nested = [], None
        elif body.startswith("#"):
            log.append(body[1:].removeprefix(" "))
        else:
            log.append(body)  # a line the test printed without "#", kept in its log
        i += 1
    _unfinished(nested)
    parent.log.extend(log)
    if plan is not None and plan != len(parent.subtests):
        parent.errors.append(f"planned {plan} tests, {len(parent.subtests)} reported")
    return i


def _unfinished(nested: TestResult | None) -> None:
    if nested is not None:
        nested.errors.append("the subtest has no result line (it ended early)")


def _close(test: TestResult, m: re.Match[str], log: list[str]) -> None:
    """Fill `test` from its result line `m` and the diagnostic lines before it."""
    test.ok = m[1] == "ok"
    test.name = m[3] or test.name
    if m[4]:
        test.directive = m[4].upper()
        test.reason = m[5] or ""
    test.log = [*log, *test.log]


# kselftest judges a program by its exit status alone, and zram's scripts print their
# failures and exit 0: a program that passed with such a line in its log fails here.
PRINTED_FAILURE = re.compile(r"^(FAIL\b.*|\S+ : \[FAIL\])$")


def verdict(test: TestResult, printed_failures: bool = False) -> str | None:
    """Why `test` failed (its failing tests, each with the end of its log), or None.

    `printed_failures`: a kselftest program's FAIL lines fail it (PRINTED_FAILURE)."""
    lines: list[str] = []
    for path, sub in [((test.name,), test), *(((test.name, *p), t) for p, t in test.walk())]:
        printed = [x for x in sub.log if PRINTED_FAILURE.match(x)] if printed_failures else []
        if sub.status in ("ok", "skipped") and not printed:
            continue
        if sub.subtests and not sub.errors and not printed:
            continue  # its failing subtests say why
        status = sub.status if sub.status not in ("ok", "skipped") else "printed FAIL"
        lines.append(f"{' / '.join(p for p in path if p)}: {status}")
        lines += [f"  {e}" for e in sub.errors]
        lines += [f"  {x}" for x in (printed or sub.log[-15:])]
    return "\n".join(lines) or None
