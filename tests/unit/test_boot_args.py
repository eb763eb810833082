"""The QEMU command line a boot gets: kernel arguments by accelerator and kernel kind."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyharness.guest.qemu import BootSpec, Profile, parse_cpu_list


def append(**kwargs: object) -> list[str]:
    spec = BootSpec(Path("k"), Path("i"), Path("c"), **kwargs)  # type: ignore[arg-type]
    argv = spec.argv(Profile.load())
    return argv[argv.index("-append") + 1].split()


def test_tcg_guests_are_told_their_tsc_is_unstable() -> None:
    assert "tsc=unstable" in append(accel="tcg", memory_mb=512, cpus=2)
    assert "tsc=unstable" not in append(accel="kvm", memory_mb=512, cpus=2)


def test_a_kcsan_kernel_boots_with_kcsan_off_and_extra_args_come_last() -> None:
    args = append(
        accel="tcg", memory_mb=512, cpus=2, kcsan=True, extra_kernel_args=("kmemleak=off",)
    )
    assert args[-4:] == [
        "kcsan.early_enable=0",
        "kcsan.skip_watch=500",
        "panic_on_warn=0",
        "kmemleak=off",
    ]
    assert "kcsan.early_enable=0" not in append(accel="tcg", memory_mb=512, cpus=2)


@pytest.mark.parametrize(("text", "count"), [("0", 1), ("0-1", 2), ("0-1,3", 3), ("0,2-5", 5)])
def test_sysfs_cpu_lists_are_counted(text: str, count: int) -> None:
    assert parse_cpu_list(text) == count
