"""The guest brings up every CPU asked for, or the run says so (a concurrency check on one
CPU would pass for the wrong reason)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyharness.commands import config, run
from pyharness.guest import initramfs, qemu
from pyharness.progress import Progress
from tests.guest.test_source_kernels import source_built

pytestmark = pytest.mark.qemu


def boot_spec(prepared: run.Prepared, tmp_path: Path, cpus: int, *args: str) -> qemu.BootSpec:
    return qemu.BootSpec(
        kernel=prepared.kernel.boot_image,
        initrd=prepared.image.path,
        console_log=tmp_path / "console.log",
        accel="tcg",
        memory_mb=512,
        cpus=cpus,
        shutdown=prepared.kernel.shutdown_command,
        extra_kernel_args=(*prepared.kernel.boot_args, *args),
    )


@pytest.mark.parametrize(
    ("series", "variant"),
    [pytest.param("6.1", "distro", id="6.1-distro"), source_built("6.1", "minimal")],
)
def test_every_asked_cpu_comes_up(
    default_config: config.Config, series: str, variant: str, tmp_path: Path
) -> None:
    cfg = default_config.with_overrides(kernel=series, variant=variant, allocator="upstream")
    prepared = run.prepare(cfg, Progress())
    spec = boot_spec(prepared, tmp_path, 2)
    with (tmp_path / "session.log").open("w") as log:
        guest = qemu.Guest(spec, qemu.Profile.load(), log, Progress(), command_timeout=60)
        with guest:
            guest.boot(initramfs.READY_MARKER, 60)
            assert guest.check_cpus() == 2


def test_a_guest_with_fewer_cpus_than_asked_fails_loudly(
    prepared: run.Prepared, tmp_path: Path
) -> None:
    spec = boot_spec(prepared, tmp_path, 2, "nr_cpus=1")
    with (tmp_path / "session.log").open("w") as log:
        guest = qemu.Guest(spec, qemu.Profile.load(), log, Progress(), command_timeout=60)
        with guest:
            guest.boot(initramfs.READY_MARKER, 60)
            with pytest.raises(
                qemu.GuestError, match="1 CPU\\(s\\) online but QEMU was asked for 2"
            ) as e:
                guest.check_cpus()
            assert e.value.kind == "cpus"
