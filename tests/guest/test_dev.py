"""`zskit dev` driven as a developer drives it, on Debian's 6.1 with our allocator: the
first verdict, a template that does not build (the guest stays up), the mend (PASS, in
the same guest), a planted bug (FAIL with the divergence), a planted crash (reported;
the next edit boots afresh), then Ctrl-C: no QEMU remains. And a module the guest
will not unload: the session says so and boots afresh.

The templates are a copy ($ZSKIT_TEMPLATES), so the edits never touch kmod/.
"""

from __future__ import annotations

import io
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyharness.commands import config, dev, run
from pyharness.paths import REPO
from pyharness.progress import Progress
from tests.guest.test_run import qemu_running

pytestmark = pytest.mark.qemu

TEMPLATE = "zsmalloc.c.j2"
NOT_C = "this is not C;\n"
# The first part of a read that spans two pages loses its last byte.
SHORT_READ = (
    "offset_in_page(pos),\n\t\t\t\t chunk);",
    "offset_in_page(pos),\n\t\t\t\t chunk == len ? chunk : chunk - 1);",
)
CRASH = ("\tif (unlikely(!size))\n", "\tBUG_ON(size > 3000);\n\tif (unlikely(!size))\n")
VERDICT_SECONDS = 300  # a boot, a build and a suite, under TCG


class Dev:
    """A `zskit dev` process and the lines it prints."""

    def __init__(self, templates: Path, results: Path) -> None:
        env = {
            **os.environ,
            "ZSKIT_TEMPLATES": str(templates),
            "KCONFIG_CONFIG": str(results.parent / "absent.config"),
            "PYTHONUNBUFFERED": "1",
        }
        argv = [sys.executable, "-m", "pyharness.commands.cli", "dev", "--allocator", "own"]
        self.proc = subprocess.Popen(
            [*argv, "--no-probes", "--results-dir", str(results)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.lines: list[str] = []
        self._partial = ""  # read, not yet a whole line

    def until(self, pattern: str) -> str:
        """The next line that matches; fails at the deadline or when the process ends."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + VERDICT_SECONDS
        while time.monotonic() < deadline:
            while "\n" in self._partial:
                line, self._partial = self._partial.split("\n", 1)
                self.lines.append(line + "\n")
                if re.search(pattern, line):
                    return line
            ready, _, _ = select.select([fd], [], [], 1.0)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                self._partial += chunk.decode(errors="replace")
        pytest.fail(f"no line matching {pattern!r}; zskit dev printed:\n{''.join(self.lines)}")

    def stop(self) -> int:
        """Ctrl-C; its exit status, once what it printed last is read."""
        self.proc.send_signal(signal.SIGINT)
        try:
            rc = self.proc.wait(timeout=60)
        finally:
            self.proc.kill()
        assert self.proc.stdout is not None
        while chunk := os.read(self.proc.stdout.fileno(), 65536):
            self._partial += chunk.decode(errors="replace")
        self.lines += self._partial.splitlines(keepends=True)
        return rc


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"the edit no longer applies to {path.name}: {old!r}"
    path.write_text(text.replace(old, new))


def test_a_dev_session_from_first_verdict_to_ctrl_c(tmp_path: Path) -> None:
    templates = tmp_path / "kmod"
    shutil.copytree(REPO / "kmod", templates)
    template = templates / TEMPLATE
    good = template.read_text()
    results = tmp_path / "dev"
    dev = Dev(templates, results)
    try:
        assert "first verdict" in dev.until(r"^(PASS|FAIL)")
        assert dev.lines[-1].startswith("PASS"), "".join(dev.lines)

        template.write_text(NOT_C + good)
        failed = dev.until(r"build failed")
        assert "the guest keeps its last modules: no verdict" in failed
        dev.until(r"^\s+zsmalloc\.c:\d+:\d+: ")  # the compiler's message, at file:line

        template.write_text(good)
        mended = dev.until(r"^(PASS|FAIL)")
        assert mended.startswith("PASS") and "edit to verdict" in mended and "reload" in mended
        assert "boot " not in mended  # the same guest

        edit(template, *SHORT_READ)
        caught = dev.until(r"^(PASS|FAIL)")
        assert caught.startswith("FAIL") and "(data)" in caught, caught

        template.write_text(good)
        assert dev.until(r"^(PASS|FAIL)").startswith("PASS")

        edit(template, *CRASH)
        crashed = dev.until(r"^(PASS|FAIL)")
        assert crashed.startswith("FAIL") and "(crash)" in crashed, crashed
        assert "kernel BUG" in crashed or "invalid opcode" in crashed, crashed

        template.write_text(good)
        again = dev.until(r"^(PASS|FAIL)")
        assert again.startswith("PASS") and "boot " in again  # a fresh guest
    finally:
        rc = dev.stop()
    assert rc == 130
    assert "stopped after 6 verdicts, 2 boots" in "".join(dev.lines)
    consoles = sorted(results.glob("boot-*/console.log"))
    assert len(consoles) == 2
    assert not any(qemu_running(str(c)) for c in consoles)
    assert (results / "verdict-3" / "results.json").is_file()


def test_a_module_that_does_not_unload_is_said_and_the_guest_booted_afresh(
    default_config: config.Config, tmp_path: Path
) -> None:
    cfg = default_config.with_overrides(allocator="own", workload_probes="never")
    out = io.StringIO()
    session = dev.Session(out, tmp_path)
    try:
        prepared = run.prepare(cfg, Progress())
        session.verdict(cfg, Progress(), prepared, None, fresh=True)
        assert session.guest is not None
        # An open file of its debugfs holds zstest: rmmod refuses it.
        session.guest.run("sleep 1000 < /sys/kernel/debug/zstest/ctl &")
        session.verdict(cfg, Progress(), prepared, time.time(), fresh=False)
    finally:
        session.close()
    text = out.getvalue()
    assert "`rmmod zstest` failed" in text and "booting afresh" in text, text
    assert session.boots == 2 and text.count("PASS") == 2, text
    assert not any(qemu_running(str(c)) for c in tmp_path.glob("boot-*/console.log"))
