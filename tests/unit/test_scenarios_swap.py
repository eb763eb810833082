"""The zram-swap and pressure scenarios without a guest: the program's output and zram's
files parsed, every check able to fail, bad bounds refused; the program itself built and
run on the host (no swap there: it still writes, reads back and compares)."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from pyharness.check import scenarios
from pyharness.check.scenarios import Context, pressure, zram_swap
from pyharness.check.scenarios.zram_swap import (
    ParseError,
    check_end_state,
    check_swapper,
    miss_free,
    parse_swapper,
)
from pyharness.guest import programs
from pyharness.guest.clients import parse_mm_stat

# What the program printed in a 6.1 guest (4 processes of 2048 pages, own allocator).
OUTPUT = """\
swapper procs 4 pages 2048 cpus 2 rounds 2 seed 29559
swapper hog 100
swapper round 0 reclaimed 10
swapper round 0 swapped 8192
mm_stat round-0 33558528 17219482 18038784        0 18038784      838        0     1996     1996
swapper round 0 verified 8192 mismatches 0
swapper round 1 swapped 8192
mm_stat round-1 34082816 17568286 18366464        0 18366464      783        0     2041     4006
swapper round 1 verified 8192 mismatches 0
[1]+  Done                       true
swapper final swapped 8304
mm_stat final 34082816 17565552 18374656        0 18374656      782        0     2038     6016
swapper unmap_us 576157
swapper summary written 16384 verified 16384 mismatches 0 swapped 16384 rounds 2 seconds 16.165
swapper-ok
"""


def test_the_programs_output_is_parsed() -> None:
    run = parse_swapper(OUTPUT)
    assert (run.procs, run.pages, run.cpus, run.rounds) == (4, 2048, 2, 2)
    assert run.swapped == {0: 8192, 1: 8192} and run.final_swapped == 8304
    assert run.hog_mb == 100 and run.reclaimed == {0: 10}
    assert run.verified == {0: 8192, 1: 8192} and run.mismatches == {0: 0, 1: 0}
    assert set(run.mm_stat) == {"round-0", "round-1", "final"}
    assert run.mm_stat["round-0"]["orig_data_size"] == 33558528
    assert run.mm_stat["round-0"]["same_pages"] == 838
    assert run.unmap_us == 576157
    assert run.summary["written"] == 16384 and run.summary["seconds"] == pytest.approx(16.165)
    assert run.ok and run.failure is None
    assert check_swapper(run, 0, strict=True) == (None, "")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mm_stat round-0 1 2 3\n", "mm_stat has 3 fields"),
        ("mm_stat round-0 1 2 x 4 5 6 7 8\n", "cannot parse"),
        ("swapper summary written 1 verified 1\n", "the summary line has"),
        ("swapper-ok\n", "swapper-ok without a summary"),
    ],
)
def test_malformed_output_is_a_parse_error(text: str, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        parse_swapper(text)


def replace(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new)


@pytest.mark.parametrize(
    ("output", "rc", "kind", "message"),
    [
        (
            replace(
                replace(
                    OUTPUT,
                    "round 1 verified 8192 mismatches 0",
                    "round 1 verified 8192 mismatches 1",
                ),
                "swapper-ok",
                "swapper mismatch proc 0 round 1 page 1024 offset 1365 kind text\n"
                "swapper-fail: 1 of 16384 pages read back differ from what was written",
            ),
            1,
            "data",
            "1 pages read back from zram swap differ .*proc 0 round 1 page 1024 offset 1365",
        ),
        (
            OUTPUT.split("swapper round 1 swapped")[0]
            + "swapper-fail: process 2 killed by signal 7 (Bus error)\n",
            1,
            "crash",
            "process 2 killed by signal 7",
        ),
        (OUTPUT.split("swapper final")[0], 139, "command", "exited 139 without a verdict"),
        (
            OUTPUT.replace("swapped 8192", "swapped 0").replace("swapped 16384", "swapped 0"),
            0,
            "scenario",
            "no page was swapped out",
        ),
        (
            replace(OUTPUT, "mm_stat round-1 34082816 17568286 18366464", "mm_stat round-1 0 0 0"),
            0,
            "accounting",
            "round 1: 8192 pages in swap, but zram's mm_stat says 0 pages stored",
        ),
        (
            replace(OUTPUT, "mm_stat round-1 34082816", "mm_stat round-1 16777216"),
            0,
            "accounting",
            "round 1: the processes have 8192 pages in swap, zram stores 4096",
        ),
    ],
)
def test_each_check_of_the_program_can_fail(output: str, rc: int, kind: str, message: str) -> None:
    failure, got = check_swapper(parse_swapper(output), rc, strict=True)
    assert failure is not None and got == kind
    assert re.search(message, failure), failure


def test_under_pressure_zram_may_lag_the_processes_swap() -> None:
    output = replace(OUTPUT, "mm_stat round-1 34082816", "mm_stat round-1 16777216")
    assert check_swapper(parse_swapper(output), 0, strict=False) == (None, "")


ZERO = parse_mm_stat("0 0 0 0 0 0 0 0 0")
HEADER = parse_mm_stat("4096 74 12288 0 12288 0 0 0 0")


def test_the_end_state_allows_mkswaps_header_and_missed_frees_only() -> None:
    assert check_end_state(HEADER, HEADER, 0, ZERO) is None
    three = parse_mm_stat("12288 200 12288 0 12288 0 0 0 0")
    assert check_end_state(HEADER, three, 2, ZERO) is None
    failure = check_end_state(HEADER, three, 1, ZERO)
    assert failure is not None and "still stores 3 pages" in failure and "1 frees missed" in failure
    failure = check_end_state(HEADER, HEADER, 0, HEADER)
    assert failure is not None and "after the reset zram's mm_stat is not zero" in failure


def test_debug_stat_gives_the_missed_frees() -> None:
    assert miss_free("version: 1\n       0        7\n") == 7
    with pytest.raises(ParseError):
        miss_free("garbage")


# --- bounds and refusals ---------------------------------------------------------------


def test_both_are_registered_with_their_needs() -> None:
    for name in ("zram-swap", "pressure"):
        s = scenarios.find(name)
        assert s.needs == {"SWAP": "y", "ADVISE_SYSCALLS": "y", "ZRAM": "m"}
        assert s.operations > 0 and 0 < s.seconds <= 600
    assert scenarios.find("pressure").unit == "pages"


def test_a_kernel_without_swap_is_named_what_it_lacks() -> None:
    config = {"ADVISE_SYSCALLS": "y", "ZRAM": "m"}.get
    missing = scenarios.missing_options(scenarios.find("zram-swap"), config)
    assert missing == ["CONFIG_SWAP=y (this kernel has n)"]


def test_zero_pages_are_refused() -> None:
    with pytest.raises(scenarios.ScenarioError, match=r"0 pages is out of range"):
        scenarios.params_for(scenarios.find("pressure"), 2, operations=0)


def test_pressure_refuses_a_small_guest() -> None:
    small = pressure.refusal(128)
    assert small is not None and "128 MiB" in small and "at least 256 MiB" in small
    assert "QEMU_MEMORY_MB" in small
    assert pressure.refusal(512) is None


def test_the_hog_leaves_half_the_processes_pages_and_the_reserve() -> None:
    assert pressure.hog_mb(400 << 20, 16384) == 400 - 32
    assert pressure.hog_mb(400 << 20, 16384, 16 << 20) == 400 - 32 - 16
    assert pressure.hog_mb(10 << 20, 16384) == 0


@dataclass
class FakeSpec:
    memory_mb: int
    cpus: int = 2


@dataclass
class FakeGuest:
    """Answers /proc/meminfo only: a refusal must come before anything else runs."""

    spec: FakeSpec
    available_kb: int
    commands: list[str] = field(default_factory=list)

    def run(self, command: str, timeout: float | None = None) -> str:
        self.commands.append(command)
        assert "MemAvailable" in command, f"ran {command!r} before refusing"
        return f"{self.available_kb}\n"


def fake_context(memory_mb: int, available_mb: int) -> Context:
    guest = FakeGuest(FakeSpec(memory_mb), available_mb * 1024)
    return Context(
        guest=cast(Any, guest),
        zstest=cast(Any, None),
        api=cast(Any, None),
        policy=None,
        config={"ZSMALLOC_STAT": "y"}.get,
        progress=cast(Any, None),
        check=lambda batches: None,
    )


def test_zram_swap_refuses_pages_that_do_not_fit_in_memory() -> None:
    params = scenarios.Params(operations=100_000, seconds=10, cpus=2)
    outcome = zram_swap.run(fake_context(512, 400), params)
    assert outcome.kind == "params" and outcome.failure is not None
    assert "100000 pages (390 MiB) do not fit in 60% of the guest's available memory" in (
        outcome.failure
    )
    assert "--scenario-ops" in outcome.failure and outcome.counts["processes"] == 4


def test_pressure_refuses_a_guest_left_with_too_little_memory() -> None:
    params = scenarios.Params(operations=16384, seconds=10, cpus=2)
    outcome = pressure.run(fake_context(512, 50), params)
    assert outcome.kind == "params" and outcome.failure is not None
    assert "only 50 MiB available" in outcome.failure
    outcome = pressure.run(fake_context(200, 50), params)
    assert outcome.failure is not None and "at least 256 MiB" in outcome.failure


# --- the program, on the host ----------------------------------------------------------


def run_program(*args: str, corrupt: bool = False) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ZSKIT_SWAPPER_CORRUPT": "1" if corrupt else "0"}
    binary = programs.build_program("swapper")
    return subprocess.run(
        [str(binary), *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def test_the_program_builds_static_and_is_cached() -> None:
    binary = programs.build_program("swapper")
    assert programs.build_program("swapper") == binary
    assert b"ld-linux" not in binary.read_bytes()[:65536]


def test_the_program_writes_reads_back_and_compares_on_the_host() -> None:
    proc = run_program("-p", "3", "-n", "64", "-r", "2", "-c", "1", "-s", "5")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = parse_swapper(proc.stdout)
    assert run.ok and run.procs == 3 and run.rounds == 2
    assert run.summary["written"] == run.summary["verified"] == 2 * 3 * 64


def test_the_test_switch_makes_a_mismatch_the_program_reports() -> None:
    proc = run_program("-p", "2", "-n", "16", "-c", "1", corrupt=True)
    assert proc.returncode == 1
    run = parse_swapper(proc.stdout)
    assert run.mismatches == {0: 1}
    assert len(run.mismatch_lines) == 1
    assert run.mismatch_lines[0].startswith("mismatch proc 0 round 0 page 8 offset 1365 kind ")
    failure, kind = check_swapper(run, proc.returncode, strict=False)
    assert kind == "data" and failure is not None and "1 pages read back" in failure


def test_the_program_refuses_bad_arguments() -> None:
    proc = run_program("-p", "0")
    assert proc.returncode == 1
    assert "swapper-fail: PROCS must be a number in 1..64, not 0" in proc.stdout
