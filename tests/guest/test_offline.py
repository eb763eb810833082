"""No network: a cold cache says that it needs the network, a warm one runs without it.

Each test runs zskit in a new network namespace (`unshare -n`: no interface
but a down loopback, so no name lookup and no connection succeeds), which
needs root. A cold cache fails at its first fetch, in seconds and without
QEMU: the Debian packages of 6.1, the linux-source of a source-built 6.1,
the sid toolchain root of 7.2. Marked `qemu`: a whole run of the warm 6.1
distribution kernel, offline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pyharness.kernel import toolchain
from pyharness.paths import REPO, cache_dir


def _why_no_unshare() -> str | None:
    if os.geteuid() != 0:
        return "`unshare -n` needs root"
    try:
        probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    except FileNotFoundError:
        return "no unshare command (util-linux)"
    return None if probe.returncode == 0 else f"unshare -n fails here: {probe.stderr.strip()}"


WHY_NOT = _why_no_unshare()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")


def offline_zskit(args: list[str], cache: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ZSKIT_CACHE": str(cache), "KCONFIG_CONFIG": str(cache / "none")}
    return subprocess.run(
        ["unshare", "-n", sys.executable, "-m", "pyharness.commands.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=timeout,
    )


def test_the_namespace_has_no_network() -> None:
    uri = toolchain._archive_uri(None)
    if uri is None:
        pytest.skip("the host's apt sources name no http archive")
    code = f"from pyharness.kernel import toolchain; print(toolchain.unreachable({uri!r}))"
    out = subprocess.run(
        ["unshare", "-n", sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() != "None"  # a reason: the tests below really run offline
    assert toolchain.unreachable("file:/srv/mirror") is None  # a local archive needs no network


@pytest.mark.parametrize(
    ("kernel", "variant", "missing"),
    [
        ("6.1", "distro", "linux-image-6.1.0-"),
        ("6.1", "minimal", "downloading linux-source-6.1 ("),
        ("7.2", "distro", "building the sid toolchain root (debootstrap)"),
    ],
)
def test_a_cold_cache_offline_says_it_needs_the_network(
    tmp_path: Path, kernel: str, variant: str, missing: str
) -> None:
    cache = tmp_path / "cache"
    out = offline_zskit(["provision", "--kernel", kernel, "--variant", variant], cache, timeout=120)
    assert out.returncode == 1, out.stdout + out.stderr
    message = out.stderr.strip().splitlines()[-1]
    assert message.startswith("zskit: ")
    assert missing in message  # what was being fetched
    assert "cannot be reached" in message
    assert f"zskit's cache ({cache}) does not hold this yet" in message
    assert "needs the network once: connect this machine" in message  # what to do
    assert not (cache / "roots" / "sid").exists()  # no half root under the final name


@pytest.mark.qemu
def test_a_warm_entry_runs_offline(tmp_path: Path) -> None:
    cache = cache_dir()  # the real one: the entry must be warm already
    if not (cache / "debian" / "6.1" / "kernel.json").exists():
        pytest.skip(f"6.1 is not in the cache {cache} yet; `zskit run` (online) warms it")
    results = tmp_path / "results"
    out = offline_zskit(
        ["run", "--entry", "6.1-upstream-distro", "--results-dir", str(results)],
        cache,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    assert out.stdout.startswith("PASS: Linux 6.1 / upstream")
    doc = json.loads((results / "results.json").read_text())
    assert doc["verdict"] == "pass" and doc["variant"] == "distro"
    assert "downloading" not in out.stderr
