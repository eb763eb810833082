"""The fast channel on Debian's 6.1: batches over the virtio-serial port, the same bytes as
over the serial shell, the agent's refusal, a hang and a crash while the host waits on
the port, and the fallback to the shell where the guest has no port."""

from __future__ import annotations

import dataclasses
import io
import json

import pytest

from pyharness.commands import config, run
from pyharness.guest import initramfs, qemu
from pyharness.guest.qemu import Guest
from pyharness.guest.zstest import MAX_BATCH_BYTES, ZsTest
from pyharness.paths import BUILD
from pyharness.progress import Progress
from tests.guest.test_run import qemu_running

pytestmark = pytest.mark.qemu

LINES = ["alloc 1 100", "write 1 7", "alloc 2 3000", "verify 1 7", "stats"]
KILL_AGENT = "kill -9 $(pidof zskit-agent)"
STRESS_30_S = "stress 30 1 7 1000"  # one batch that runs for 30 s
E2BIG = 7


def test_the_distribution_kernel_has_the_channel(guest: Guest) -> None:
    assert guest.data_channel is not None


def test_both_ways_carry_the_same_bytes(guest: Guest, zstest: ZsTest) -> None:
    channel = guest.data_channel
    answers = []
    try:
        for pool in ("fast", "shell"):
            answers.append((zstest.batch([f"create {pool}", *LINES]), zstest.classes(pool)))
            zstest.batch([f"destroy {pool}"])
            guest.data_channel = None
    finally:
        guest.data_channel = channel
    (fast, fast_rows), (shell, shell_rows) = answers
    assert fast == shell and fast.values
    assert fast_rows == shell_rows and any(r.obj_used for r in fast_rows)


def test_the_driver_refuses_an_oversized_batch_and_the_channel_goes_on(
    guest: Guest, zstest: ZsTest
) -> None:
    assert guest.data_channel is not None
    data = b"stats\n" * (MAX_BATCH_BYTES // 6 + 1)
    assert guest.data_channel.request(f"b {len(data)}", data, timeout=60) == (None, E2BIG)
    assert zstest.batch(["version"]).value("version")


def test_a_batch_past_its_deadline_kills_qemu(default_config: config.Config) -> None:
    cfg = default_config.with_overrides(command_timeout=8)
    options = run.RunOptions(batches=[["create zt0"], [STRESS_30_S]])
    result = run.run(cfg, Progress(), options)
    failure = result.first_failure
    assert failure is not None and failure.kind == "timeout", failure
    assert "fast channel request" in (failure.failure or "")
    assert "no answer within 8 s (zskit-agent busy or gone), QEMU killed" in (failure.failure or "")
    assert not qemu_running(str(result.console_log()))


def test_a_crash_while_the_host_waits_on_the_port_is_triaged(
    default_config: config.Config,
) -> None:
    cfg = default_config.with_overrides(command_timeout=60)
    options = run.RunOptions(
        inject="(sleep 1; echo c > /proc/sysrq-trigger) &",
        batches=[["create zt0"], [STRESS_30_S]],
    )
    result = run.run(cfg, Progress(), options)
    failure = result.first_failure
    assert failure is not None and failure.kind == "crash", failure
    assert "sysrq triggered crash" in (failure.failure or "")
    assert not qemu_running(str(result.console_log()))


def test_an_agent_that_is_gone_is_a_timeout_not_a_hang(default_config: config.Config) -> None:
    # The guest's end of the port stays open, so only the deadline can tell.
    cfg = default_config.with_overrides(command_timeout=8)
    result = run.run(cfg, Progress(), run.RunOptions(inject=KILL_AGENT))
    failure = result.first_failure
    assert failure is not None and failure.kind == "timeout", failure
    assert "(zskit-agent busy or gone)" in (failure.failure or "")
    assert not qemu_running(str(result.console_log()))


def test_without_the_drivers_the_run_says_so_and_keeps_to_the_shell(
    default_config: config.Config,
) -> None:
    # The same kernel, its virtio modules left out of the image: no port.
    said = io.StringIO()
    p = Progress(out=said)
    prepared = run.prepare(default_config, p)
    image = initramfs.build_initramfs(
        prepared.built.modules,
        BUILD / "initramfs-test-no-channel.cpio",
        shell_tty=qemu.Profile.load().shell_tty,
    )
    result = run.run(default_config, p, prepared=dataclasses.replace(prepared, image=image))
    assert result.passed, result.first_failure
    assert said.getvalue().count("no fast channel (the guest has no virtio-serial port") == 1
    assert json.loads((result.directory / "results.json").read_text())["channel"] == "serial shell"
