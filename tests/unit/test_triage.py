"""Tests for pyharness.triage: finding the first kernel failure report in a console log.

The recorded logs in tests/data come from real boots under QEMU (x86_64 6.1, and arm64,
i386 and ppc64el guests); the short snippets below follow the kernel's own report formats,
with the `\\r\\r\\n` line ends a serial console gives.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pyharness.commands import cli
from pyharness.guest import triage
from pyharness.guest.triage import EXCERPT_LINES, clean_lines, find_crash

DATA = Path(__file__).parent / "data"
PANIC_LOG = DATA / "console-6.1-sysrq-panic.log"
PASS_LOG = DATA / "console-6.1-pass.log"
DMESG_LOG = DATA / "dmesg-6.1-pass.log"

CRLF = "\r\r\n"  # what the guest's serial console sends for each newline


def raw(path: Path) -> str:
    """A log exactly as recorded: no newline translation, so `\\r\\r\\n` stays intact."""
    return path.read_bytes().decode("utf-8", errors="replace")


def console(*lines: str) -> str:
    return "".join(line + CRLF for line in lines)


BOOT = (
    "[    0.000000] Linux version 6.1.0-56-amd64 (debian-kernel@lists.debian.org)",
    "[    1.024765] mtrr: your CPUs had inconsistent variable MTRR settings",
    "zskit-init: ready",
    "[    2.202452] zsmalloc: loading out-of-tree module taints kernel.",
)
TRACE = (
    "[    2.700001] CPU: 0 PID: 57 Comm: sh Tainted: G           OE      6.1.0-56-amd64 #1",
    "[    2.700002] Hardware name: QEMU Standard PC (Q35 + ICH9, 2009), BIOS 1.16.2 04/01/2014",
    "[    2.700003] Call Trace:",
    "[    2.700004]  <TASK>",
    "[    2.700005]  dump_stack_lvl+0x44/0x5c",
    "[    2.700006]  zs_free+0x1f/0x160 [zsmalloc]",
    "[    2.700007]  zt_ctl_write+0x1a2/0x3c0 [zstest]",
    "[    2.700008]  </TASK>",
)


# ------------------------------------------------------------------------ recorded logs


def test_real_sysrq_panic_is_found_with_its_call_trace() -> None:
    text = raw(PANIC_LOG)
    crash = find_crash(text)
    assert crash is not None
    assert crash.kind == "panic"
    excerpt = crash.excerpt.splitlines()
    assert excerpt[0] == "[    2.666501] Kernel panic - not syncing: sysrq triggered crash"
    # The line number points at the report in the recorded file.
    recorded = text.split("\n")
    assert "Kernel panic - not syncing: sysrq triggered crash" in recorded[crash.line - 1]
    assert crash.line == 23
    # The excerpt carries the trace that explains the panic, CR-free.
    assert "[    2.667477] Call Trace:" in excerpt
    assert any("sysrq_handle_crash+0x16/0x20" in line for line in excerpt)
    assert any("write_sysrq_trigger" in line for line in excerpt)
    assert "\r" not in crash.excerpt
    assert 1 < len(excerpt) <= EXCERPT_LINES
    assert crash.headline() == (
        "kernel panic: [    2.666501] Kernel panic - not syncing: sysrq triggered crash"
    )


@pytest.mark.parametrize("log", [PASS_LOG, DMESG_LOG], ids=lambda p: p.name)
def test_real_clean_logs_have_no_crash(log: Path) -> None:
    text = raw(log)
    # Sanity: these logs are real boots that print lines a naive matcher would trip over.
    assert "zsmalloc: module verification failed" in text
    assert "report a bug" in text
    assert find_crash(text) is None


def test_clean_lines_strips_serial_padding() -> None:
    assert clean_lines("a\r\r\nb\r\nc\n\r\r\nd") == ["a", "b", "c", "", "d"]


# ------------------------------------------------------------------------ one per kind

WARNING_REPORT = (
    "[    3.400000] WARNING: CPU: 1 PID: 57 at mm/zsmalloc.c:123 zs_free+0x1/0x2 [zsmalloc]"
)
# kernel/panic.c __warn() prints "WARNING: CPU: %d PID: %d at %s:%d %pS".

KIND_CASES = [
    pytest.param(
        "kasan",
        "[    3.104417] BUG: KASAN: use-after-free in zs_map_object+0x4f/0x2c0 [zsmalloc]",
        id="kasan",
    ),
    pytest.param(
        "kfence",
        "[    3.104417] BUG: KFENCE: out-of-bounds read in zt_check+0x39/0x60 [zstest]",
        id="kfence",
    ),
    pytest.param(
        "kcsan",
        "[    5.218843] BUG: KCSAN: data-race in zs_free [zsmalloc] / zs_page_migrate [zsmalloc]",
        id="kcsan",
    ),
    pytest.param(
        "lockdep",
        "[    4.101010] WARNING: possible circular locking dependency detected",
        id="lockdep-circular",
    ),
    pytest.param(
        "lockdep",
        "[    4.101010] WARNING: inconsistent lock state",
        id="lockdep-inconsistent",
    ),
    pytest.param(
        "soft-lockup",
        "[   26.512003] watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [sh:1]",
        id="soft-lockup",
    ),
    pytest.param(
        "hung-task",
        "[  242.688141] INFO: task sh:1 blocked for more than 120 seconds.",
        id="hung-task",
    ),
    pytest.param(
        "general-protection-fault",
        "[    3.212345] general protection fault, probably for non-canonical address "
        "0xdead000000000100: 0000 [#1] PREEMPT SMP NOPTI",
        id="gpf",
    ),
    pytest.param("bug", "[    3.300000] kernel BUG at mm/zsmalloc.c:1234!", id="kernel-bug-at"),
    pytest.param(
        "bug",
        "[    3.300000] BUG: unable to handle page fault for address: ffffa0d8c5a01000",
        id="bug-page-fault",
    ),
    pytest.param("oops", "[    3.300001] Oops: 0000 [#1] SMP", id="oops"),
    pytest.param("warning", WARNING_REPORT, id="warning"),
    pytest.param("panic", "[    3.500000] Kernel panic - not syncing: Fatal exception", id="panic"),
]


@pytest.mark.parametrize(("kind", "report"), KIND_CASES)
def test_each_kind_is_found_at_its_line(kind: str, report: str) -> None:
    text = console(*BOOT, report, *TRACE)
    crash = find_crash(text)
    assert crash is not None
    assert crash.kind == kind
    assert crash.line == len(BOOT) + 1
    lines = crash.excerpt.split("\n")
    assert lines[0] == report
    assert lines[1:] == [*TRACE, ""]  # the rest of the console, CR-free
    assert crash.headline() == f"kernel {kind}: {report}"


def test_report_on_first_line_has_line_number_one() -> None:
    report = "[    3.500000] Kernel panic - not syncing: Attempted to kill init!"
    crash = find_crash(console(report))
    assert crash is not None
    assert (crash.kind, crash.line) == ("panic", 1)


def test_report_without_timestamp_is_found() -> None:
    crash = find_crash(console(*BOOT, "BUG: KASAN: slab-out-of-bounds in zs_malloc+0x10/0x20"))
    assert crash is not None
    assert crash.kind == "kasan"
    assert crash.line == len(BOOT) + 1


def test_excerpt_is_bounded() -> None:
    filler = [f"[    4.{i:06d}] filler line {i}" for i in range(3 * EXCERPT_LINES)]
    report = "[    3.500000] Kernel panic - not syncing: Fatal exception"
    crash = find_crash(console(*BOOT, report, *filler))
    assert crash is not None
    lines = crash.excerpt.split("\n")
    assert len(lines) == EXCERPT_LINES
    assert lines[0] == report
    assert lines[-1] == filler[EXCERPT_LINES - 2]


def test_first_report_wins_warning_before_panic() -> None:
    warning = WARNING_REPORT
    panic = "[    3.400500] Kernel panic - not syncing: panic_on_warn set ..."
    text = console(*BOOT, warning, *TRACE, panic, *TRACE)
    crash = find_crash(text)
    assert crash is not None
    assert crash.kind == "warning"
    assert crash.line == len(BOOT) + 1
    assert crash.excerpt.split("\n")[0] == warning
    # The panic that followed is still in the excerpt.
    assert panic in crash.excerpt.split("\n")


def test_first_report_wins_bug_before_panic() -> None:
    bug = "[    3.300000] kernel BUG at mm/zsmalloc.c:1234!"
    panic = "[    3.400500] Kernel panic - not syncing: Fatal exception"
    crash = find_crash(console(*BOOT, bug, *TRACE, panic))
    assert crash is not None
    assert (crash.kind, crash.line) == ("bug", len(BOOT) + 1)
    assert crash.excerpt.split("\n")[0] == bug
    assert panic in crash.excerpt.split("\n")


def test_old_style_warning_at_is_found() -> None:
    # The pre-3.x format "WARNING: at FILE:LINE" still matches.
    report = "[    3.400000] WARNING: at mm/zsmalloc.c:123 zs_free+0x1/0x2()"
    crash = find_crash(console(*BOOT, report))
    assert crash is not None
    assert (crash.kind, crash.line) == ("warning", len(BOOT) + 1)


def test_first_report_wins_panic_before_later_bug() -> None:
    panic = "[    3.400500] Kernel panic - not syncing: Fatal exception"
    bug = "[    3.500000] kernel BUG at mm/zsmalloc.c:1234!"
    crash = find_crash(console(*BOOT, panic, bug))
    assert crash is not None
    assert (crash.kind, crash.line) == ("panic", len(BOOT) + 1)


def test_precedence_on_one_line_prefers_the_specific_kind() -> None:
    # A KASAN report starts with "BUG: " too; it must be reported as KASAN, not as a bug.
    crash = find_crash(console("[    1.0] BUG: KASAN: double-free in zs_free+0x1/0x2"))
    assert crash is not None
    assert crash.kind == "kasan"


ORDINARY = [
    "[    2.204270] zsmalloc: module verification failed: signature and/or required key "
    "missing - tainting kernel",
    "[    0.100000] ACPI: bug workaround",
    "no bugs here",
    "warning: this is only a user-space echo",
    "[    0.721732] PCI: Using host bridge windows from ACPI; if necessary, use "
    '"pci=nocrs" and report a bug',
    "[    1.200686] AMD-Vi: AMD IOMMUv2 functionality not available on this system - "
    "This is not a bug.",
    "[    0.130000] Spectre V2 : WARNING: Unprivileged eBPF is enabled with eIBRS on, data "
    "leaks possible via Spectre v2 BHB attacks!",
    "[    0.000000] Kernel command line: console=ttyS0 panic=-1 oops=panic panic_on_warn=1",
    "[    2.202452] zsmalloc: loading out-of-tree module taints kernel.",
    "s pages 79",
    "end 1001 0",
]


@pytest.mark.parametrize("line", ORDINARY)
def test_ordinary_lines_are_not_reported(line: str) -> None:
    assert find_crash(console(*BOOT, line, *BOOT)) is None


def test_empty_console_has_no_crash() -> None:
    assert find_crash("") is None


# ------------------------------------------------------------------------ zskit parse


def test_cli_parse_panic_log_exits_1_with_headline(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["parse", str(PANIC_LOG)]) == 1
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert first.startswith(
        "kernel panic: [    2.666501] Kernel panic - not syncing: sysrq triggered crash (line "
    )
    assert "Call Trace:" in out


def test_cli_parse_clean_log_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["parse", str(PASS_LOG)]) == 0
    out = capsys.readouterr().out
    assert out.strip() == "no kernel failure in the log"


def test_cli_parse_reports_the_line_of_the_recorded_file(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["parse", str(PANIC_LOG)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("(line 23)")
    # The excerpt follows the file line by line, without inserted blank lines.
    assert out[1] == "[    2.666501] Kernel panic - not syncing: sysrq triggered crash"
    assert out[2].startswith("[    2.666825] CPU: 0 PID: 1 Comm: sh Tainted:")


# Strict KCSAN on unmodified 6.1 (make test-scenarios, free-storm): get_zspage()'s read of
# zspage->magic in zs_page_isolate races the fullness bits written beside it.
KNOWN_RACE = DATA / "kcsan-known-race-6.1.log"
# The corpus's planted bug: zs_page_isolate writes the isolation count without the lock.
PLANTED_RACE = DATA / "kcsan-planted-isolation-race-6.1.log"


# The same word read in zs_unmap_object and zs_map_object, and zs_page_isolate's read
# against putback_zspage's write (60 s free-storms on the unmodified base).
KNOWN_RACES = {
    "isolate": KNOWN_RACE,
    "unmap": DATA / "kcsan-known-race-unmap-6.1.log",
    "map": DATA / "kcsan-known-race-map-6.1.log",
    "putback": DATA / "kcsan-known-race-putback-6.1.log",
}
KNOWN_RACE_UNMAP = KNOWN_RACES["unmap"]


@pytest.mark.parametrize("log", list(KNOWN_RACES.values()), ids=list(KNOWN_RACES))
def test_a_known_race_of_unmodified_zsmalloc_is_recorded_not_failed(log: Path) -> None:
    text = log.read_text()
    assert "BUG: KCSAN: data-race in " in text
    assert triage.find_crash(text) is None
    assert triage.known_races(text) == ["get_zspage-magic"]


def test_a_known_reader_racing_another_writer_still_fails_the_run() -> None:
    text = KNOWN_RACE_UNMAP.read_text().replace("fix_fullness_group+", "obj_malloc+")
    crash = triage.find_crash(text)
    assert crash is not None and crash.kind == "kcsan"


def test_the_same_functions_racing_otherwise_still_fail_the_run() -> None:
    text = PLANTED_RACE.read_text()  # zs_page_isolate writes here, obj_free reads
    crash = triage.find_crash(text)
    assert crash is not None and crash.kind == "kcsan"
    assert triage.known_races(text) == []
    # A report after a known one is found, with its own line.
    both = KNOWN_RACE.read_text() + text
    later = triage.find_crash(both)
    assert later is not None and "obj_free [zsmalloc] / zs_page_isolate" in later.excerpt
    assert later.line > len(KNOWN_RACE.read_text().splitlines())


def test_real_arm64_oops_is_found_at_its_first_line() -> None:
    """A 16 KiB-page arm64 guest (Debian's 6.12 arm64-16k) running our allocator with a
    planted 4 KiB page shift: arm64 names the fault first, then "Internal error: Oops"."""
    text = raw(DATA / "console-6.12-arm64-16k-oops.log")
    crash = find_crash(text)
    assert crash is not None and crash.kind == "oops" and crash.line == 3
    excerpt = crash.excerpt.splitlines()
    assert excerpt[0].endswith(
        "Unable to handle kernel paging request at virtual address ffffc04000001548"
    )
    assert any("Internal error: Oops: 0000000096000045 [#1] SMP" in line for line in excerpt)
    # zstest writes through the mapping it got, into a page past the zspage's.
    assert any("pc : zt_fill+0xb0/0xc8 [zstest]" in line for line in excerpt)


@pytest.mark.parametrize(
    "log, first, then",
    [
        (
            "console-6.1-i386-oops.log",
            "BUG: kernel NULL pointer dereference, address: 00000010",
            "Oops: 0002 [#1] PREEMPT SMP PTI",
        ),
        (
            "console-6.1-ppc64el-oops.log",
            "BUG: Kernel NULL pointer dereference on write at 0x00000010",
            "Oops: Kernel access of bad area, sig: 11 [#1]",
        ),
    ],
)
def test_real_i386_and_ppc64el_oopses_are_found_at_their_first_line(
    log: str, first: str, then: str
) -> None:
    """A test module (`zskit run --module`) writing to address 16 on Debian's 686-pae and
    ppc64el 6.1 kernels: each names the fault first, then its Oops line."""
    crash = find_crash(raw(DATA / log))
    assert crash is not None and crash.kind == "bug"
    excerpt = crash.excerpt.splitlines()
    assert excerpt[0].endswith(first)
    assert any(line.endswith(then) for line in excerpt)
    assert any("zs_oops_init" in line for line in excerpt)
