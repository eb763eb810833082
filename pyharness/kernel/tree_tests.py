"""The zsmalloc and zram tests a kernel tree carries itself, found in its source and build.

`zskit run --tree` runs them beside its own checks (guest/tree_tests.py runs them,
check/ktap.py reads their KTAP). Two kinds are looked for:

- kselftests: `tools/testing/selftests/<dir>` for the directories of SELFTEST_DIRS
  (6.1 to 7.2 carry `zram`). Its Makefile's TEST_PROGS are the tests, TEST_FILES
  what they need beside them (kselftest's lib.mk), and its `settings` file may set
  the per-test timeout (kselftest's default: 45 s). Programs that kselftest would
  compile first (TEST_GEN_PROGS) are listed as not run.
- KUnit suites: modules of the tree's build under KUNIT_PLACES that depend on
  the kunit module. Trees are built with KUNIT_ALL_TESTS=m (qemu/configs/tree.config),
  so a suite that follows KUnit's convention (`default KUNIT_ALL_TESTS`) is built
  without zskit naming its option, and an edit that adds one rebuilds only it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

SELFTESTS = Path("tools/testing/selftests")
SELFTEST_DIRS = ("zram", "zsmalloc")
DEFAULT_TIMEOUT = 45  # kselftest's runner, when the directory's `settings` says nothing
# Build paths (as modules.order names them) whose KUnit modules test zsmalloc or zram.
KUNIT_PLACES = (
    re.compile(r"^kernel/mm/(.*/)?[^/]*zsmalloc[^/]*\.ko$"),
    re.compile(r"^kernel/drivers/block/zram/.*\.ko$"),
)
KUNIT_MODULE = "kernel/lib/kunit/kunit.ko"  # under the image's /lib/modules/<release>
LISTS = ("TEST_PROGS", "TEST_FILES", "TEST_GEN_PROGS", "TEST_GEN_FILES", "TEST_PROGS_EXTENDED")
ASSIGN = re.compile(rf"^({'|'.join(LISTS)})\s*(:=|\+=|=)\s*(.*)$")


@dataclass(frozen=True)
class Kselftest:
    """One kselftest directory of the tree: its programs and the files they use."""

    name: str  # the directory's name: "zram"
    directory: Path  # absolute, in the tree
    programs: tuple[str, ...]  # TEST_PROGS, run in order
    files: tuple[str, ...]  # every file copied beside them (programs, TEST_FILES, ...)
    timeout: int  # seconds per program
    unbuilt: tuple[str, ...] = ()  # TEST_GEN_PROGS: need a compiler first; not run


@dataclass(frozen=True)
class TreeTests:
    """What a tree carries: kselftest directories, and KUnit modules of its build."""

    kselftests: tuple[Kselftest, ...] = ()
    kunit: tuple[Path, ...] = ()  # module files in the build's staged modules
    kunit_core: Path | None = None  # kunit.ko, when KUnit is a module

    def __bool__(self) -> bool:
        return bool(self.kselftests or self.kunit)


def makefile_lists(text: str) -> dict[str, list[str]]:
    """The file lists of a kselftest Makefile (`TEST_PROGS := a.sh`, `+=`, continued lines)."""
    joined = re.sub(r"\\\n", " ", text)
    found: dict[str, list[str]] = {}
    for line in joined.splitlines():
        if m := ASSIGN.match(line.strip()):
            words = [w for w in m[3].split() if not w.startswith("$")]
            found[m[1]] = (found.get(m[1], []) if m[2] == "+=" else []) + words
    return found


def settings_timeout(directory: Path) -> int:
    """The `timeout=N` of a kselftest directory's `settings` file, else kselftest's 45 s."""
    settings = directory / "settings"
    text = settings.read_text(errors="replace") if settings.is_file() else ""
    m = re.search(r"^timeout=(\d+)\s*$", text, re.M)
    return int(m[1]) if m else DEFAULT_TIMEOUT


def kselftests(tree: Path) -> list[Kselftest]:
    """The tree's kselftest directories of SELFTEST_DIRS that have programs to run."""
    found = []
    for name in SELFTEST_DIRS:
        directory = tree / SELFTESTS / name
        makefile = directory / "Makefile"
        if not makefile.is_file():
            continue
        lists = makefile_lists(makefile.read_text(errors="replace"))
        programs = tuple(lists.get("TEST_PROGS", []))
        extra = lists.get("TEST_FILES", []) + lists.get("TEST_PROGS_EXTENDED", [])
        files = tuple(f for f in dict.fromkeys([*programs, *extra]) if (directory / f).is_file())
        if programs or lists.get("TEST_GEN_PROGS"):
            found.append(
                Kselftest(
                    name,
                    directory,
                    tuple(p for p in programs if p in files),
                    files,
                    settings_timeout(directory),
                    tuple(lists.get("TEST_GEN_PROGS", [])),
                )
            )
    return found


def module_depends(ko: Path) -> list[str]:
    """The modules a .ko depends on, from its .modinfo `depends=` string."""
    data = ko.read_bytes()
    m = re.search(rb"(?:^|\0)depends=([^\0]*)\0", data)
    return [d for d in m[1].decode(errors="replace").split(",") if d] if m else []


def kunit_modules(modules: Path) -> list[Path]:
    """The KUnit modules among a kernel's staged modules that test zsmalloc or zram."""
    order = modules / "modules.order"
    lines = order.read_text().split() if order.is_file() else []
    return [
        modules / line
        for line in lines
        if any(p.match(line) for p in KUNIT_PLACES)
        and (modules / line).is_file()
        and "kunit" in module_depends(modules / line)
    ]


def find_tree_tests(tree: Path, modules: Path | None) -> TreeTests:
    """What `tree` carries of its own tests; `modules` is its build's staged modules."""
    if modules is None:
        return TreeTests(tuple(kselftests(tree)))
    core = modules / KUNIT_MODULE
    return TreeTests(
        tuple(kselftests(tree)), tuple(kunit_modules(modules)), core if core.is_file() else None
    )
