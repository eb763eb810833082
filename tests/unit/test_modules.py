"""The guest's module helper: insmod in order, rmmod by module name in reverse (no QEMU)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from pyharness.guest.modules import (
    KCSAN_ARM,
    KCSAN_CONTROL,
    ModuleError,
    load_modules,
    module_name,
    unload_modules,
)
from pyharness.guest.qemu import Guest


class FakeGuest:
    """Records each command; the ones in `failing` exit 1."""

    def __init__(self, *failing: str) -> None:
        self.commands: list[str] = []
        self.spec = SimpleNamespace(kcsan=False)
        self.failing = set(failing)

    def run_status(self, command: str, timeout: float | None = None) -> tuple[int, str]:
        self.commands.append(command)
        return (1, f"{command}: no") if command in self.failing else (0, "")


def test_module_names_come_from_the_file_name() -> None:
    assert module_name("/lib/modules/zskit/own/zsmalloc.ko") == "zsmalloc"
    assert module_name("/lib/modules/zskit/distro/zram.ko.xz") == "zram"
    assert module_name("/x/lz4-compress.ko") == "lz4_compress"
    assert module_name("zstest") == "zstest"


def test_load_in_order_unload_in_reverse() -> None:
    fake = FakeGuest()
    guest = cast(Guest, fake)
    paths = ["/m/own/zsmalloc.ko", "/m/zstest.ko"]
    load_modules(guest, paths)
    unload_modules(guest, paths)
    assert fake.commands == [
        "insmod /m/own/zsmalloc.ko",
        "insmod /m/zstest.ko",
        "rmmod zstest",
        "rmmod zsmalloc",
    ]


def test_a_failed_load_names_its_command_and_stops() -> None:
    fake = FakeGuest("insmod /m/a.ko")
    with pytest.raises(ModuleError, match="insmod /m/a.ko") as caught:
        load_modules(cast(Guest, fake), ["/m/a.ko", "/m/b.ko"])
    assert caught.value.kind == "command" and caught.value.command == "insmod /m/a.ko"
    assert str(caught.value).startswith("guest command `insmod /m/a.ko` exited 1:")
    assert fake.commands == ["insmod /m/a.ko"]


def test_unchecked_unload_tries_everything_in_one_command() -> None:
    fake = FakeGuest()
    unload_modules(cast(Guest, fake), ["/m/dep.ko", "/m/zram.ko"], check=False)
    assert fake.commands == ["rmmod zram 2>/dev/null; rmmod dep 2>/dev/null; true"]
    unload_modules(cast(Guest, fake), [], check=False)
    assert len(fake.commands) == 1


def test_a_kcsan_guest_arms_the_report_filter_after_loading() -> None:
    fake = FakeGuest()
    fake.spec.kcsan = True
    load_modules(cast(Guest, fake), ["/m/zsmalloc.ko", "/m/zstest.ko"])
    assert fake.commands == ["insmod /m/zsmalloc.ko", "insmod /m/zstest.ko", KCSAN_ARM]
    load_modules(cast(Guest, fake), [])
    assert len(fake.commands) == 3  # nothing loaded, nothing to arm


@pytest.mark.skipif(shutil.which("busybox") is None, reason="needs busybox (busybox-static)")
def test_the_kcsan_filter_lists_the_text_symbols_of_modules_only(tmp_path: Path) -> None:
    kallsyms = tmp_path / "kallsyms"
    kallsyms.write_text(
        "ffffffff81000000 T _stext\n"
        "ffffffffa0000000 t zs_map_object\t[zsmalloc]\n"
        "ffffffffa0000100 T zs_malloc\t[zsmalloc]\n"
        "ffffffffa0001000 d pool_list\t[zstest]\n"
        "ffffffffa0002000 t zstest_write\t[zstest]\n"
    )
    control = tmp_path / "control"
    script = KCSAN_ARM.replace("/proc/kallsyms", str(kallsyms)).replace(KCSAN_CONTROL, str(control))
    # The guest's shell is busybox's: run the command as it would, writes appended.
    script = script.replace(f"> {control}", f">> {control}")
    subprocess.run(["busybox", "sh", "-c", script], check=True)
    assert control.read_text().split("\n") == [
        "!zs_map_object",
        "!zs_malloc",
        "!zstest_write",
        "whitelist",
        "on",
        "",
    ]
