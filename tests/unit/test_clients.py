"""The zram round trip's host side (clients.run_zram, zram_round_trip), on a fake guest.

The script itself runs in tests/guest/test_validate.py and tests/guest/test_compare.py.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

from pyharness.guest import clients
from pyharness.guest.qemu import Guest

GOOD = [
    "set pages 192",
    "mm_stat written 786432 400000 520000 0 520000 8 0 40 0",
    "mm_stat discarded 393216 200000 300000 0 520000 8 0 20 0",
    "mm_stat compacted 393216 200000 280000 0 520000 8 5 20 0",
    "zram-ok",
]


class FakeGuest:
    """Answers the script with `output`; commands in `failing` exit 1; `brd`: the image has
    the ramdisk module."""

    def __init__(
        self, output: list[str], rc: int = 0, failing: tuple[str, ...] = (), brd: bool = False
    ) -> None:
        self.output, self.rc, self.failing, self.brd = output, rc, failing, brd
        self.commands: list[str] = []
        self.spec = SimpleNamespace(kcsan=False)

    def send_script(self, name: str) -> str:
        assert name == clients.ZRAM_SCRIPT
        return f"/tmp/zskit-{name}"

    def run_status(self, command: str, timeout: float | None = None) -> tuple[int, str]:
        self.commands.append(command)
        if command in self.failing:
            return 1, f"{command}: failed"
        if "sh /tmp/zskit-zram.sh" in command:
            return self.rc, "\n".join(self.output)
        if command == f"test -e {clients.KERNEL_BRD}":
            return (0 if self.brd else 1), ""
        return 0, ""


def test_the_round_trip_discards_every_other_chunk_but_the_zero_pages() -> None:
    assert clients.DISCARDED == clients.discarded_pages(clients.PAGES) == clients.PAGES // 2
    # The zero pages come first, in chunk 0, which is kept: same_pages stays ZERO_PAGES.
    assert clients.ZERO_PAGES <= clients.CHUNK_PAGES
    # A set that does not end on a whole pair of chunks: 1183 pages, 73 chunks discarded.
    assert clients.discarded_pages(1183) == 73 * clients.CHUNK_PAGES


def test_a_good_run_loads_runs_and_unloads() -> None:
    fake = FakeGuest(GOOD)
    got = clients.zram_round_trip(cast(Guest, fake), "/m/zram.ko", 4096, ["/m/dep.ko"])
    assert got.ok, got.summary
    assert got.summary.startswith(
        f"zram round trip: {clients.PAGES} pages written, read back identical"
    )
    assert "compacted (5 pages freed)" in got.summary
    assert fake.commands[1:3] == ["insmod /m/dep.ko", "insmod /m/zram.ko"]
    assert fake.commands[3].startswith(
        "DATA=pages FILE=/tmp/zskit-pages DISKSIZE=8M CHUNK_PAGES=8 "
    )
    assert "BACKING" not in fake.commands[3]
    assert fake.commands[3].endswith(" sh /tmp/zskit-zram.sh 2>&1")
    assert fake.commands[4:] == ["rmmod zram", "rmmod dep"]
    assert "written back" not in got.summary


WRITEBACK = ["bd_stat        0        0       36", "mm_stat writeback 786432 0 0 0 0 8 0 0 0"]


def test_with_a_ramdisk_every_page_is_written_back_there() -> None:
    fake = FakeGuest([*GOOD[:-1], *WRITEBACK, "zram-ok"], brd=True)
    got = clients.zram_round_trip(cast(Guest, fake), "/m/zram.ko", 4096)
    assert got.ok, got.summary
    assert got.summary.endswith("; 36 pages written back to /dev/ram0, read back identical")
    assert fake.commands[1:3] == [f"insmod {clients.KERNEL_BRD}", "insmod /m/zram.ko"]
    assert " BACKING=/dev/ram0 " in fake.commands[3]
    assert fake.commands[4:] == ["rmmod zram", "rmmod brd"]
    none = FakeGuest([*GOOD[:-1], "bd_stat 0 0 0", WRITEBACK[1], "zram-ok"], brd=True)
    got = clients.zram_round_trip(cast(Guest, none), "/m/zram.ko", 4096)
    assert (got.ok, got.kind) == (False, "accounting")
    assert "the writeback to /dev/ram0 wrote no page" in got.summary


def test_a_failed_step_is_data_or_command_and_zram_is_unloaded() -> None:
    bad = FakeGuest([*GOOD[:2], "zram-fail: read back after discard and compaction differs"], 1)
    got = clients.zram_round_trip(cast(Guest, bad), "/m/zram.ko", 4096)
    assert not got.ok and got.kind == "data"
    assert got.summary == ("zram round trip fails: read back after discard and compaction differs")
    assert bad.commands[-1] == "rmmod zram 2>/dev/null; true"
    loads = FakeGuest(GOOD, failing=("insmod /m/zram.ko",))
    got = clients.zram_round_trip(cast(Guest, loads), "/m/zram.ko", 4096)
    assert (got.ok, got.kind, got.summary) == (
        False,
        "command",
        "zram round trip fails: insmod /m/zram.ko",
    )
    assert not any("zram.sh" in c for c in loads.commands)
    unloads = FakeGuest(GOOD, failing=("rmmod zram",))
    run = clients.run_zram(cast(Guest, unloads), ["/m/zram.ko"], clients.PAGES_SET, 4096)
    assert not run.ok and run.failed == "rmmod zram" and run.pages == 192


def test_an_unreadable_mm_stat_is_a_protocol_error() -> None:
    fake = FakeGuest(["set pages 192", "mm_stat written 1 2 3", "zram-ok"])
    got = clients.zram_round_trip(cast(Guest, fake), "/m/zram.ko", 4096)
    assert (got.ok, got.kind) == (False, "protocol")
    assert "mm_stat has 3 fields" in got.summary
