"""Source-built kernels in a guest: the "minimal" and "debug" variants of Debian's linux-source-X.

A fragment the real 6.1 tree cannot honour, and whole runs (build the kernel,
boot it, check the default workload) of 6.1 minimal and debug with the
upstream allocator. The first run builds the kernels (minutes each); they are
cached by source version, config and toolchain. `make test` builds and runs
the two 6.1 kernels (11-18 min cold, seconds warm); the 6.12 ones (in the
trixie root) only with ZSKIT_TEST_SOURCE_612=1, the 7.2 ones (in the sid
root) only with ZSKIT_TEST_SOURCE_72=1.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from pyharness.commands import config, run
from pyharness.kernel.fragments import FragmentError
from pyharness.kernel.source import (
    SourceBuiltKernel,
)
from pyharness.paths import CONFIGS, cache_dir
from pyharness.progress import Progress
from tests.unit.test_source_kernels import write


@pytest.mark.qemu
def test_a_fragment_the_61_tree_cannot_honour(tmp_path: Path) -> None:
    # KASAN needs SLUB; 6.1's tinyconfig has SLOB and this fragment keeps it.
    broken = write(tmp_path, "broken.config", "CONFIG_SLOB=y\nCONFIG_KASAN=y\n")
    base = CONFIGS / "base.config"
    no_slub = write(tmp_path, "base.config", base.read_text().replace("CONFIG_SLUB=y", ""))
    source = SourceBuiltKernel("6.1", "broken", fragment_files=(no_slub, broken))
    # The real cache's sources, but the failed build's tree stays in tmp_path.
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache_dir() / "src").mkdir(parents=True, exist_ok=True)
    (cache / "src").symlink_to(cache_dir() / "src")
    with pytest.raises(FragmentError) as e:
        source.provision(cache, Progress())
    message = str(e.value)
    assert "CONFIG_KASAN=y (broken.config:2): got absent; unmet dependencies" in message
    assert "SLUB" in message


def run_variant(
    default_config: config.Config,
    variant: str,
    record_property: Callable[[str, object], None],
    series: str = "6.1",
) -> tuple[Path, dict[str, object]]:
    cfg = default_config.with_overrides(kernel=series, allocator="upstream", variant=variant)
    p = Progress()
    result = run.run(cfg, p)
    assert result.passed, result.first_failure
    doc = json.loads((result.directory / "results.json").read_text())
    # The boot time goes to junit.xml (a property) and, with -s, to the terminal.
    record_property("boot_seconds", doc["boot_seconds"])
    record_property("timings", p.summary())
    print(f"{series} {variant}: boot {doc['boot_seconds']} s; {p.summary()}")
    assert doc["variant"] == variant
    assert str(doc["kernel_release"]).startswith(f"{series}.")
    assert str(doc["kernel_release"]).endswith(f"-zskit-{variant}")
    assert doc["classes_checked"] is True  # CONFIG_ZSMALLOC_STAT in the out-of-tree build
    assert 0 < float(doc["boot_seconds"]) < cfg.boot_timeout
    assert (result.directory / "sources" / "zsmalloc.c").exists()
    return result.directory, doc


# The 6.12 and 7.2 kernels build in their toolchain roots (gcc-14, gcc-16) and take
# longer cold than `make test` should (measured on 2 busy cores: 6.12 minimal 6.5 min,
# debug 9-10 min; 7.2 minimal 10 min, debug longer): each series runs only when
# asked. Warm (built kernels are cached in <cache>/built), a run takes seconds.
GATES = {"6.12": "ZSKIT_TEST_SOURCE_612", "7.2": "ZSKIT_TEST_SOURCE_72"}


# What a debug kernel's dmesg shows (all levels, unlike the console): really that kernel.
CHECKERS = ("KernelAddressSanitizer initialized", "kfence: initialized", "Lock dependency")


def source_built(series: str, variant: str) -> object:
    marks = [pytest.mark.qemu]
    if gate := GATES.get(series):
        marks.append(
            pytest.mark.skipif(
                os.environ.get(gate) != "1",
                reason=f"a cold {series} {variant} kernel builds for 6-15 min on 2 cores; "
                f"{gate}=1 runs it (warm: seconds)",
            )
        )
    return pytest.param(series, variant, marks=marks, id=f"{series}-{variant}")


@pytest.mark.parametrize(
    ("series", "variant"),
    [source_built(s, v) for s in ("6.1", "6.12", "7.2") for v in ("minimal", "debug")],
)
def test_a_source_built_kernel_runs_the_default_workload(
    default_config: config.Config,
    record_property: Callable[[str, object], None],
    series: str,
    variant: str,
) -> None:
    # 6.12 and 7.2 are built chrooted in their roots with Debian's compiler; the
    # model's chain size comes from the built kernel's CONFIG_ZSMALLOC_CHAIN_SIZE.
    directory, doc = run_variant(default_config, variant, record_property, series=series)
    assert directory.name.endswith(f"-{series}-upstream-{variant}")
    if variant == "debug":
        dmesg = (directory / "dmesg.log").read_text(errors="replace")
        for checker in CHECKERS:
            assert checker in dmesg
