"""Whole runs on the 6.1 kernel: the default workload passes, a crash and a hang fail it,
a guest gone or hung before /init is booted once more.

Each test boots its own guest through `run.run`, exactly as `make qemu-test`
does, and checks the verdict and the files the run leaves behind.
"""

from __future__ import annotations

import io
import json
import subprocess
import time
from pathlib import Path

import pytest

from pyharness.commands import config, run
from pyharness.guest.modules import unload_modules
from pyharness.guest.qemu import GuestError
from pyharness.progress import Progress

pytestmark = pytest.mark.qemu


def qemu_running(path: str) -> bool:
    """Whether a QEMU process that uses this (unique) console log still exists."""
    return subprocess.run(["pgrep", "-f", path], capture_output=True).returncode == 0


def test_default_workload_passes(default_config: config.Config) -> None:
    result = run.run(default_config, Progress())
    assert result.passed, result.first_failure
    doc = json.loads((result.directory / "results.json").read_text())
    assert doc["verdict"] == "pass"
    assert doc["operations"] >= default_config.workload_ops
    for stage in ("provision", "render", "build", "initramfs", "boot", "test"):
        assert stage in doc["timings"]
    for name in ("console.log", "session.log", "dmesg.log", "junit.xml", "batches.txt"):
        assert (result.directory / name).stat().st_size > 0, name
    assert (result.directory / "sources" / "zstest.c").exists()
    assert (result.directory / "sources" / "zsmalloc.c").exists()
    assert b'failures="0"' in (result.directory / "junit.xml").read_bytes()
    assert not qemu_running(str(result.console_log()))


def test_kernel_crash_is_reported(default_config: config.Config) -> None:
    # Test-only trigger: the kernel's own sysrq crash, after the modules load.
    result = run.run(
        default_config, Progress(), run.RunOptions(inject="echo c > /proc/sysrq-trigger")
    )
    failure = result.first_failure
    assert failure is not None and failure.kind == "crash"
    assert "Kernel panic - not syncing: sysrq triggered crash" in (failure.failure or "")
    doc = json.loads((result.directory / "results.json").read_text())
    assert doc["verdict"] == "fail" and doc["failure"]["kind"] == "crash"
    assert "sysrq triggered crash" in result.console_log().read_text()
    assert b"<failure" in (result.directory / "junit.xml").read_bytes()
    assert not qemu_running(str(result.console_log()))


def test_hung_guest_is_killed_at_its_deadline(default_config: config.Config) -> None:
    cfg = default_config.with_overrides(command_timeout=8)
    start = time.monotonic()
    result = run.run(cfg, Progress(), run.RunOptions(inject="sleep 100000"))
    elapsed = time.monotonic() - start
    failure = result.first_failure
    assert failure is not None and failure.kind == "timeout", failure
    assert "no answer within 8 s" in (failure.failure or "")
    assert elapsed < cfg.boot_timeout  # killed at the command's deadline, not later
    assert not qemu_running(str(result.console_log()))
    assert json.loads((result.directory / "results.json").read_text())["verdict"] == "fail"


def test_a_guest_gone_before_init_is_booted_once_more_then_reported(
    default_config: config.Config, prepared: run.Prepared, tmp_path: Path
) -> None:
    # busybox as the first program, told to power off: QEMU exits before /init, silently.
    early_exit = ("rdinit=/bin/busybox", "--", "poweroff", "-f")
    out = io.StringIO()
    with (tmp_path / "session.log").open("w") as transcript, pytest.raises(GuestError) as e:
        run.boot(
            default_config,
            Progress(out=out),
            prepared,
            tmp_path / "console.log",
            transcript,
            early_exit,
        )
    assert e.value.kind == "exited"
    assert "booting to /init: QEMU exited (exit status 0: the guest reset or powered off)" in str(
        e.value
    )
    assert out.getvalue().count("booting Linux") == 2
    assert (
        "the guest exited (exit status 0: the guest reset or powered off) before /init with "
        "no kernel report: booting again" in out.getvalue()
    )
    assert (tmp_path / "console-first-boot.log").exists()
    assert not qemu_running(str(tmp_path / "console.log"))


def test_a_guest_hung_before_init_is_booted_once_more_then_reported(
    default_config: config.Config, prepared: run.Prepared, tmp_path: Path
) -> None:
    # busybox as the first program, told to sleep: no ready marker, no kernel report.
    hang = ("rdinit=/bin/busybox", "--", "sleep", "100000")
    cfg = default_config.with_overrides(boot_timeout=15)
    out = io.StringIO()
    with (tmp_path / "session.log").open("w") as transcript, pytest.raises(GuestError) as e:
        run.boot(cfg, Progress(out=out), prepared, tmp_path / "console.log", transcript, hang)
    assert e.value.kind == "timeout"
    assert "booting to /init: no answer within 15 s, QEMU killed" in str(e.value)
    assert out.getvalue().count("booting Linux") == 2
    assert "the guest hung before /init with no kernel report: booting again" in out.getvalue()
    assert (tmp_path / "console-first-boot.log").stat().st_size > 0
    assert not qemu_running(str(tmp_path / "console.log"))


def test_a_qemu_that_says_why_it_cannot_start_is_not_booted_again(
    default_config: config.Config, prepared: run.Prepared, tmp_path: Path
) -> None:
    # A petabyte of guest memory: QEMU refuses it with a message before the kernel starts.
    cfg = default_config.with_overrides(memory_mb=1 << 30)
    out = io.StringIO()
    with (tmp_path / "session.log").open("w") as transcript, pytest.raises(GuestError) as e:
        run.boot(cfg, Progress(out=out), prepared, tmp_path / "console.log", transcript)
    assert e.value.kind == "exited"
    assert "qemu-system-x86_64: " in str(e.value)  # QEMU's own words, in the failure
    assert out.getvalue().count("booting Linux") == 1
    assert not qemu_running(str(tmp_path / "console.log"))


def test_a_module_held_for_a_moment_is_unloaded_once_free(
    default_config: config.Config, prepared: run.Prepared, tmp_path: Path
) -> None:
    # An open debugfs file of zstest holds the module for two seconds, as deferred work
    # may (zswap releases a pool's zpool from a work item): rmmod waits for it.
    with (tmp_path / "session.log").open("w") as transcript:
        with run.boot(
            default_config, Progress(), prepared, tmp_path / "console.log", transcript
        ) as guest:
            guest.run("(sleep 2 < /sys/kernel/debug/zstest/ctl) > /dev/null 2>&1 &")
            guest.run("sleep 0.3")
            unload_modules(guest, prepared.image.modules)
            assert "zstest" not in guest.run("cat /proc/modules")
