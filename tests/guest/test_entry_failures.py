"""How a matrix entry fails: a message naming what is missing and what to do, the rest go on.

Each failure is a real one, produced cheaply: a kernel series Debian's apt
does not know, a debootstrap that knows no such suite, an option the real
7.2 Kconfig cannot satisfy (read with kconfiglib from the cached tree), and
a whole `zskit matrix` run offline (`unshare -n`, root) on a cold cache
whose apt knows no package: every entry fails in provisioning with its own
reason, and the merged results list them all. (An unknown kernel in the
matrix: test_matrix.py's test_failing_entries_do_not_stop_the_matrix.)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pyharness.kernel import fragments, toolchain
from pyharness.kernel.debian import DebianDistroKernel
from pyharness.kernel.fragments import FragmentError
from pyharness.kernel.source import SourceTree, Toolchain, _kconfig_env, _recorded
from pyharness.paths import CONFIGS, REPO, cache_dir
from pyharness.progress import Progress, StageError
from tests.guest.test_offline import WHY_NOT


def test_a_series_the_archive_lacks_names_the_package(tmp_path: Path) -> None:
    source = DebianDistroKernel(series="5.99", abi_prefix="5.99.0")
    with pytest.raises(StageError) as e:
        source.provision(tmp_path / "cache", Progress())
    message = str(e.value)
    assert message.startswith("apt does not know linux-source-5.99: the host's apt lists lack it")
    assert "Run `sudo apt-get update`" in message
    assert "serve no Linux 5.99" in message


@pytest.mark.skipif(os.geteuid() != 0, reason="toolchain roots need root (debootstrap, chroot)")
def test_a_root_debootstrap_cannot_build_says_so(tmp_path: Path) -> None:
    with pytest.raises(StageError) as e:
        toolchain.ensure_root("nonesuch", tmp_path, Progress(), lambda root: ["make"])
    message = str(e.value)
    assert message.startswith("debootstrap knows no suite 'nonesuch'")
    assert "a newer debootstrap" in message and "install it and rerun" in message
    assert not (tmp_path / "roots" / "nonesuch").exists()


def _tree(series: str) -> SourceTree:
    cache = cache_dir()
    tree = _recorded(cache / "src" / series / "source.json")
    if tree is None:
        pytest.skip(
            f"linux-source-{series} is not unpacked in {cache}; `zskit provision --kernel "
            f"{series} --variant minimal` unpacks it"
        )
    return tree


def test_an_option_the_real_72_kconfig_cannot_satisfy(tmp_path: Path) -> None:
    tree = _tree("7.2")
    bad = tmp_path / "bad.config"
    bad.write_text("CONFIG_KASAN_SW_TAGS=y\nCONFIG_NO_SUCH_OPTION=y\n")  # arm64's KASAN
    settings = fragments.merge([CONFIGS / "base.config", bad])
    env = _kconfig_env(tree.path, Toolchain("host", ()))
    # olddefconfig, as kconfiglib does it, on the request: what Kbuild would leave.
    (tmp_path / "request").write_text(fragments.text(settings))
    with fragments._environment(env):
        kconf = fragments._KernelKconfig(str(tree.path / "Kconfig"), warn=False)
        kconf.load_config(str(tmp_path / "request"))
        kconf.write_config(str(tmp_path / ".config"))
    with pytest.raises(FragmentError) as e:
        fragments.check(settings, tmp_path / ".config", tree.path / "Kconfig", env, "Linux 7.2")
    message = str(e.value)
    assert message.startswith("Linux 7.2: 2 requested option(s) did not survive olddefconfig")
    lines = {m[1]: m[0] for m in re.finditer(r"CONFIG_(\w+)=y \(bad\.config.*", message)}
    assert set(lines) == {"KASAN_SW_TAGS", "NO_SUCH_OPTION"}  # base.config itself is met
    assert "unmet dependencies: HAVE_ARCH_KASAN_SW_TAGS" in lines["KASAN_SW_TAGS"]
    assert "(now HAVE_ARCH_KASAN_SW_TAGS=n" in lines["KASAN_SW_TAGS"]
    assert "no such option in this kernel's Kconfig" in lines["NO_SUCH_OPTION"]
    assert message.endswith("add what the option depends on, or drop the option")


WHY_NOT_OFFLINE = WHY_NOT  # `unshare -n` is what cuts the network here too


@pytest.mark.skipif(WHY_NOT_OFFLINE is not None, reason=WHY_NOT_OFFLINE or "")
def test_a_matrix_of_failing_entries_reports_each(tmp_path: Path) -> None:
    # apt with no sources: every package is missing from the archive it knows.
    apt = tmp_path / "apt"
    for d in ("sources.list.d", "lists/partial", "cache/archives/partial"):
        (apt / d).mkdir(parents=True)
    (apt / "apt.conf").write_text(
        'Dir::Etc::sourcelist "/dev/null";\n'
        f'Dir::Etc::sourceparts "{apt / "sources.list.d"}";\n'
        f'Dir::State::lists "{apt / "lists"}";\nDir::Cache "{apt / "cache"}";\n'
    )
    preset = tmp_path / "failing.config"
    preset.write_text(
        "# CONFIG_MATRIX_KERNEL_6_12 is not set\n# CONFIG_MATRIX_ALLOCATOR_OWN is not set\n"
        "CONFIG_MATRIX_VARIANT_MINIMAL=y\n"
    )
    env = {
        **os.environ,
        "ZSKIT_CACHE": str(tmp_path / "cache"),
        "APT_CONFIG": str(apt / "apt.conf"),
    }
    out = subprocess.run(
        [
            "unshare",
            "-n",
            sys.executable,
            "-m",
            "pyharness.commands.cli",
            "matrix",
            "--config",
            str(preset),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert "4 entries: 0 passed, 4 failed" in out.stdout
    merged = Path(re.search(r"^merged results: (\S+)", out.stdout, re.M)[1])  # type: ignore[index]
    nodes = json.loads((merged / "kernelci.json").read_text())
    errors = {n["name"]: n["data"]["error_msg"] for n in nodes if n["kind"] == "job"}
    assert sorted(errors) == [
        "6.1-upstream-distro",
        "6.1-upstream-minimal",
        "7.2-builtin-distro",
        "7.2-upstream-minimal",
    ]
    # A package the archive lacks, for Debian's kernel and for a source build...
    assert "apt does not know linux-source-6.1" in errors["6.1-upstream-distro"]
    assert "Run `sudo apt-get update`" in errors["6.1-upstream-distro"]
    assert (
        "linux-source-6.1 is not in the host's apt lists; run `apt-get update`"
        in (errors["6.1-upstream-minimal"])
    )
    # ...and a toolchain root that cannot be built (here: no network to fetch it from).
    for name in ("7.2-builtin-distro", "7.2-upstream-minimal"):
        assert "building the sid toolchain root (debootstrap): the Debian archive" in errors[name]
        assert "needs the network once: connect this machine" in errors[name]
    for name in errors:
        assert (merged / name / "results.json").is_file()  # each entry reported on its own
        assert errors[name].startswith("provision: ")
