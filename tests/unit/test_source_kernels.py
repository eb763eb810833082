"""Source-built kernels without building one: fragments, variants, toolchain checks.

Fragment merging and its loud failures (conflicts, options that do not
survive olddefconfig, with their unmet dependencies) on a small Kconfig
written here, the variant plumbing, the toolchain checks and the shutdown
command. tests/guest/test_source_kernels.py builds and boots them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

import pytest

from pyharness.commands import config, matrix
from pyharness.kernel import arch, fragments, source, toolchain
from pyharness.kernel.api import api_for, tabled
from pyharness.kernel.fragments import FragmentError, Setting
from pyharness.kernel.identity import DISTRO, KernelId
from pyharness.kernel.manifest import Kernel
from pyharness.kernel.provision import SOURCES, source_for
from pyharness.kernel.source import (
    VARIANT_FRAGMENTS,
    SourceBuiltKernel,
    SourceTree,
    Toolchain,
    _rehome,
    host_toolchain,
)
from pyharness.kmod import render
from pyharness.paths import CONFIGS
from pyharness.progress import CommandError, Progress, StageError


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_fragments_merge_in_order() -> None:
    paths = [CONFIGS / name for name in VARIANT_FRAGMENTS["debug"]]
    merged = fragments.merge(paths)
    assert merged["ZSMALLOC"].value == "m"
    assert merged["ZSMALLOC_STAT"].origin.startswith("base.config:")
    assert merged["SLUB_TINY"].value == "n"  # `# CONFIG_SLUB_TINY is not set`
    assert merged["KASAN"].origin.startswith("debug.config:")
    assert "CONFIG_KASAN=y\n" in fragments.text(merged)
    assert "# CONFIG_SLUB_TINY is not set\n" in fragments.text(merged)
    assert fragments.overrides(merged) == []


def test_a_declared_override_replaces_the_base_and_says_so(tmp_path: Path) -> None:
    base = write(tmp_path, "base.config", "CONFIG_A=y\nCONFIG_B=y\n")
    variant = write(
        tmp_path,
        "off.config",
        "# zskit: overrides base.config\n# CONFIG_A is not set\nCONFIG_B=y\n",
    )
    merged = fragments.merge([base, variant])
    assert merged["A"].value == "n" and merged["A"].replaces == fragments.Setting(
        "A", "y", "base.config:1"
    )
    assert merged["B"].origin == "base.config:2"  # agreeing: no override
    assert fragments.overrides(merged) == ["off.config:2 overrides base.config:1: CONFIG_A y -> n"]
    # Without the declaration, or against a fragment it does not name, it is a conflict.
    undeclared = write(tmp_path, "plain.config", "# CONFIG_A is not set\n")
    with pytest.raises(fragments.FragmentError, match="declare `# zskit: overrides"):
        fragments.merge([base, undeclared])
    other = write(tmp_path, "other.config", "# zskit: overrides x.config\n# CONFIG_A is not set\n")
    with pytest.raises(fragments.FragmentError, match="CONFIG_A: base.config:1 sets y"):
        fragments.merge([base, other])


def test_nocompaction_turns_off_what_the_base_turns_on() -> None:
    merged = fragments.merge([CONFIGS / n for n in VARIANT_FRAGMENTS["nocompaction"]])
    assert merged["COMPACTION"].value == "n" and merged["MIGRATION"].value == "n"
    assert [line.split(": ", 1)[1] for line in fragments.overrides(merged)] == [
        "CONFIG_COMPACTION y -> n",
        "CONFIG_MIGRATION y -> n",
    ]


@pytest.mark.parametrize("variant", sorted(VARIANT_FRAGMENTS))
def test_the_shipped_fragments_do_not_conflict(variant: str) -> None:
    paths = [CONFIGS / name for name in VARIANT_FRAGMENTS[variant]]
    merged = fragments.merge(paths)
    for name in ("MODULES", "MODULE_UNLOAD", "PVH", "SERIAL_8250_CONSOLE", "DEVTMPFS"):
        assert merged[name].value == "y", name
    zsmalloc = "y" if variant in source.ZSMALLOC_BUILTIN_VARIANTS else "m"
    assert (merged["ZRAM"].value, merged["ZSMALLOC"].value) == ("m", zsmalloc)
    assert source.SourceBuiltKernel("6.12", variant).zsmalloc_builtin is (zsmalloc == "y")


def test_the_zswap_variant_builds_zsmalloc_and_zswap_in_and_says_so() -> None:
    merged = fragments.merge([CONFIGS / n for n in VARIANT_FRAGMENTS["zswap"]])
    assert (merged["ZSWAP"].value, merged["BLK_DEV_RAM"].value) == ("y", "m")
    assert [line.split(": ", 1)[1] for line in fragments.overrides(merged)] == [
        "CONFIG_ZSMALLOC m -> y"
    ]


@pytest.mark.parametrize("variant", sorted(VARIANT_FRAGMENTS))
@pytest.mark.parametrize("machine", ["arm64", "arm64-16k"])
def test_another_machine_s_fragments_follow_the_variant_s(variant: str, machine: str) -> None:
    kernel = source.SourceBuiltKernel("6.12", variant, target=arch.TARGETS[machine])
    names = [p.name for p in kernel.fragments()]
    assert names == [*VARIANT_FRAGMENTS[variant], *source.MACHINE_FRAGMENTS[machine]]
    merged = fragments.merge(kernel.fragments())
    # x86's boot gives way to arm64's, the virtio console and channel are built in.
    assert {merged[n].value for n in ("ACPI", "PVH", "HYPERVISOR_GUEST", "KERNEL_GZIP")} <= {"n"}
    assert all(merged[n].value == "y" for n in ("SERIAL_AMBA_PL011_CONSOLE", "VIRTIO_CONSOLE"))
    assert ("ARM64_16K_PAGES" in merged) == (machine == "arm64-16k")
    zsmalloc = "y" if variant in source.ZSMALLOC_BUILTIN_VARIANTS else "m"
    assert (merged["ZRAM"].value, merged["ZSMALLOC"].value) == ("m", zsmalloc)


def test_source_built_kernels_of_other_machines() -> None:
    kernel = source_for(KernelId("6.12", "minimal", arch="arm64-16k"))
    assert isinstance(kernel, source.SourceBuiltKernel) and kernel.target.name == "arm64-16k"
    with pytest.raises(StageError, match="i386 kernels are Debian's packages only so far"):
        source_for(KernelId("6.1", "minimal", arch="i386"))
    with pytest.raises(StageError, match="no linux-source-7.2 in the host's Debian suites"):
        source_for(KernelId("7.2", "minimal", arch="arm64"))


def test_minimal_and_debug_together_conflict_naming_both() -> None:
    paths = [CONFIGS / n for n in ("base.config", "minimal.config", "debug.config")]
    with pytest.raises(FragmentError) as e:
        fragments.merge(paths)
    message = str(e.value)
    assert re.search(r"CONFIG_KASAN: minimal\.config:\d+ sets n, debug\.config:\d+ sets y", message)
    assert "CONFIG_PROVE_LOCKING" in message and "CONFIG_DEBUG_VM" in message


def test_a_conflict_names_both_fragments_and_lines(tmp_path: Path) -> None:
    one = write(tmp_path, "one.config", "# comment\nCONFIG_A=y\nCONFIG_B=m\n")
    two = write(tmp_path, "two.config", "CONFIG_B=m\n\n# CONFIG_A is not set\n")
    with pytest.raises(
        FragmentError, match=r"CONFIG_A: one\.config:2 sets y, two\.config:3 sets n"
    ):
        fragments.merge([one, two])
    assert fragments.merge([one, one])["B"].origin == "one.config:3"  # agreeing is fine


def test_a_line_that_is_no_setting_is_an_error(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.config", "CONFIG_A=y\nKASAN=y\n")
    with pytest.raises(FragmentError, match=r"bad\.config:2: not a config line: 'KASAN=y'"):
        fragments.merge([bad])
    with pytest.raises(FragmentError, match="cannot read config fragment"):
        fragments.merge([tmp_path / "missing.config"])


def test_absent_counts_as_n() -> None:
    wanted = {"A": Setting("A", "n", "f:1"), "B": Setting("B", "y", "f:2")}
    config_text = "CONFIG_B=y\n"
    assert fragments.unmet(wanted, fragments.read_config(config_text)) == []
    config_text = "# CONFIG_B is not set\nCONFIG_A=y\n"
    assert [s.name for s in fragments.unmet(wanted, fragments.read_config(config_text))] == [
        "A",
        "B",
    ]


# A small Kconfig with what the kernel's uses: `modules` (6.1's spelling, which
# kconfiglib 14.1 does not know), dependencies, a select, a hidden option, a choice.
KCONFIG = """\
config MODULES
	bool "Modules"
	modules

config A
	bool "A"

config C
	bool "C"
	depends on A

config B
	tristate "B"
	depends on C && A

config HIDDEN
	bool

config SEL
	bool "selects FORCED"
	select FORCED

config FORCED
	bool "forced"

config TRANSITIONAL_OLD
	bool
	transitional

config D
	bool "D, with 7.x's conditional dependency"
	depends on A if SEL # a comment with if in it

choice
	prompt "pick one"
	default P1

config P1
	bool "p1"

config P2
	bool "p2"
	depends on A

endchoice
"""


def olddefconfig(tmp_path: Path, request: str) -> Path:
    """What Kbuild's olddefconfig does, done by kconfiglib on the small Kconfig."""
    (tmp_path / "Kconfig").write_text(KCONFIG)
    (tmp_path / "request.config").write_text(request)
    kconf = fragments._KernelKconfig(str(tmp_path / "Kconfig"), warn=False)
    kconf.load_config(str(tmp_path / "request.config"))
    kconf.write_config(str(tmp_path / ".config"))
    return tmp_path / ".config"


def test_unmet_options_are_listed_with_their_dependencies(tmp_path: Path) -> None:
    base = write(tmp_path, "base.config", "CONFIG_MODULES=y\nCONFIG_B=m\nCONFIG_SEL=y\n")
    extra = write(
        tmp_path,
        "extra.config",
        "CONFIG_HIDDEN=y\n# CONFIG_FORCED is not set\nCONFIG_NOPE=y\nCONFIG_P2=y\nCONFIG_D=y\n",
    )
    settings = fragments.merge([base, extra])
    dotconfig = olddefconfig(tmp_path, fragments.text(settings))
    env = {"srctree": str(tmp_path)}
    with pytest.raises(FragmentError) as e:
        fragments.check(settings, dotconfig, tmp_path / "Kconfig", env, "Linux test")
    message = str(e.value)
    assert "Linux test: 6 requested option(s) did not survive olddefconfig" in message
    lines = {m[1]: m[0] for m in re.finditer(r"CONFIG_(\w+)=.*", message)}
    assert lines["B"] == (
        "CONFIG_B=m (base.config:2): got absent; unmet dependencies: C && A (now C=n; A=n)"
    )
    assert "CONFIG_HIDDEN=y (extra.config:1): got absent; no prompt" in lines["HIDDEN"]
    assert "CONFIG_FORCED=n (extra.config:2): got y; selected by SEL" in lines["FORCED"]
    assert "CONFIG_NOPE=y (extra.config:3): got absent; no such option" in lines["NOPE"]
    assert lines["P2"] == (
        "CONFIG_P2=y (extra.config:4): got absent; unmet dependencies: A (now A=n); "
        "its choice selected P1"
    )
    assert lines["D"] == (
        "CONFIG_D=y (extra.config:5): got absent; unmet dependencies: A || !SEL (now A=n, SEL=y)"
    )
    assert "CONFIG_MODULES" not in lines and "CONFIG_SEL" not in lines
    assert "Fix the fragment" in message


def test_a_satisfied_request_passes(tmp_path: Path) -> None:
    request = write(
        tmp_path, "ok.config", "CONFIG_A=y\nCONFIG_C=y\nCONFIG_P2=y\n# CONFIG_B is not set\n"
    )
    settings = fragments.merge([request])
    dotconfig = olddefconfig(tmp_path, fragments.text(settings))
    fragments.check(settings, dotconfig, tmp_path / "Kconfig", {"srctree": str(tmp_path)}, "t")


def test_an_unreadable_kconfig_still_names_the_missing_options(tmp_path: Path) -> None:
    settings = {"X": Setting("X", "y", "f.config:1")}
    dotconfig = write(tmp_path, ".config", "# CONFIG_X is not set\n")
    (tmp_path / "Kconfig").write_text("config X\n\tbool 'x'\n\tfrobnicate\n")
    with pytest.raises(FragmentError) as e:
        fragments.check(settings, dotconfig, tmp_path / "Kconfig", {"srctree": str(tmp_path)}, "t")
    assert "CONFIG_X=y (f.config:1): got n; unknown (kconfiglib could not read" in str(e.value)


def test_kconfiglib_environment_is_restored(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("srctree", raising=False)
    olddefconfig(tmp_path, "")
    settings = {"A": Setting("A", "y", "f:1")}
    with pytest.raises(FragmentError):
        fragments.check(
            settings, tmp_path / ".config", tmp_path / "Kconfig", {"srctree": str(tmp_path)}, "t"
        )
    assert "srctree" not in os.environ


def test_variants_have_source_built_kernels() -> None:
    for variant in ("minimal", "debug"):
        for series in ("6.1", "6.12", "7.2"):
            source = source_for(KernelId(series, variant))
            assert isinstance(source, SourceBuiltKernel)
            assert not source.zsmalloc_builtin  # base.config: CONFIG_ZSMALLOC=m
    root_61 = source_for(KernelId("6.1", "minimal"))
    assert isinstance(root_61, SourceBuiltKernel) and root_61.distro is None  # the host's gcc-12
    root_612 = source_for(KernelId("6.12", "debug"))
    assert isinstance(root_612, SourceBuiltKernel) and root_612.distro is not None
    assert root_612.distro.suite == "trixie"
    assert source_for(KernelId("6.1")) is SOURCES[DISTRO]["6.1"]


def test_unknown_variant_and_kernel_say_what_is_known() -> None:
    with pytest.raises(StageError, match="unknown variant 'fast'; known variants: distro"):
        source_for(KernelId("6.1", "fast"))
    with pytest.raises(StageError, match=r"unknown kernel '5\.10'; known kernels: 6\.1, 6\.12"):
        source_for(KernelId("5.10", "minimal"))


@pytest.mark.parametrize("series", ["6.1", "6.12", "7.2"])
def test_upstream_runs_on_every_source_built_kernel(series: str) -> None:
    source = source_for(KernelId(series, "minimal"))
    render.check_allocator(source, "upstream")
    with pytest.raises(StageError, match="has it as a module"):
        render.check_allocator(source, "builtin")


def test_variant_option_and_its_default(tmp_path: Path) -> None:
    assert config.load(dotconfig=tmp_path / "absent").variant == "distro"
    (tmp_path / "debug.config").write_text("CONFIG_VARIANT_DEBUG=y\n")
    assert config.load(dotconfig=tmp_path / "debug.config").variant == "debug"


def test_missing_host_tools_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    real = source.shutil.which
    monkeypatch.setattr(source.shutil, "which", lambda p: None if p in ("flex", "bc") else real(p))
    with pytest.raises(StageError, match=r"needs bc, flex: `apt-get install bc flex`"):
        host_toolchain(Progress())


def test_a_root_gets_missing_build_packages(tmp_path: Path, monkeypatch) -> None:
    root_dir = tmp_path / "roots" / "trixie"
    root_dir.mkdir(parents=True)
    stamp = {"suite": "trixie", "packages": ["make", "linux-headers-6.12.1-amd64"]}
    (root_dir / toolchain.STAMP).write_text(json.dumps(stamp))
    calls: list[list[str]] = []
    monkeypatch.setattr(
        toolchain.Root, "apt_get", lambda self, args, p, what, cwd="/": calls.append(list(args))
    )
    root = toolchain.ensure_root(
        "trixie", tmp_path, Progress(), lambda r: ["never asked"], extra=("flex", "make", "bc")
    )
    assert root.path == root_dir
    assert calls == [["install", "flex", "bc"], ["clean"]]
    assert json.loads((root_dir / toolchain.STAMP).read_text())["packages"] == [
        "make",
        "linux-headers-6.12.1-amd64",
        "flex",
        "bc",
    ]
    calls.clear()
    toolchain.ensure_root("trixie", tmp_path, Progress(), lambda r: [], extra=("flex",))
    assert calls == []  # nothing missing: no apt at all


@dataclasses.dataclass(frozen=True)
class FakeMake(Toolchain):
    """Kbuild stand-in: tinyconfig writes a .config and 7.x's O= Makefile, olddefconfig
    keeps what is there, and `vmlinux` either fails like a compiler error or succeeds."""

    fail: bool = True

    def run(self, argv, progress, *, what, binds=(), heartbeat=None) -> str:
        out = Path(next(a for a in map(str, argv) if a.startswith("O="))[2:])
        if "tinyconfig" in argv:
            (out / ".config").write_text("CONFIG_64BIT=y\n")
            (out / "Makefile").write_text(f"export KBUILD_OUTPUT = {out}\n")
        if "vmlinux" in argv:
            if self.fail:
                output = "  CC      mm/zsmalloc.o\nmm/zsmalloc.c:12:5: error: 'x' undeclared\n"
                raise CommandError(f"{what} failed (exit 2)", output)
            (out / "vmlinux").write_bytes(b"\x7fELF")
            (out / "include/config").mkdir(parents=True)
            (out / "include/config/kernel.release").write_text("6.1.1-zskit-minimal\n")
        return ""


def test_a_finished_build_replaces_older_ones(tmp_path: Path) -> None:
    fragment = write(tmp_path, "f.config", "CONFIG_64BIT=y\n")
    source = SourceBuiltKernel("6.1", "minimal", fragment_files=(fragment,))
    tree = SourceTree("6.1.1-1", tmp_path / "src")
    tree.path.mkdir()
    built = tmp_path / "built"
    (built / "6.1-minimal-old" / "build").mkdir(parents=True)  # an older key
    (built / "6.1-debug-other").mkdir()  # another variant: kept
    dest = built / "6.1-minimal-new"
    tools = FakeMake(ident="host gcc", make_vars=(), fail=False)
    kernel = source._build(dest, tree, tools, fragments.merge([fragment]), Progress())
    assert kernel.release == "6.1.1-zskit-minimal" and kernel.variant == "minimal"
    assert kernel.boot_image == dest / "build" / "vmlinux"
    assert Kernel.load(dest / "kernel.json") == kernel
    assert (dest / "build" / "Makefile").read_text() == f"export KBUILD_OUTPUT = {dest}/build\n"
    assert sorted(p.name for p in built.iterdir()) == ["6.1-debug-other", "6.1-minimal-new"]


def test_a_build_failure_names_the_error_and_keeps_the_tree(tmp_path: Path) -> None:
    fragment = write(tmp_path, "f.config", "CONFIG_64BIT=y\n")
    source = SourceBuiltKernel("6.1", "minimal", fragment_files=(fragment,))
    tree = SourceTree("6.1.1-1", tmp_path / "src")
    tools = FakeMake(ident="host gcc", make_vars=())
    dest = tmp_path / "built" / "6.1-minimal-abc"
    settings = fragments.merge([fragment])
    with pytest.raises(StageError) as e:
        source._build(dest, tree, tools, settings, Progress())
    message = str(e.value)
    assert "building Linux 6.1 (minimal) failed" in message
    assert "mm/zsmalloc.c:12:5: error: 'x' undeclared" in message
    assert f"{dest}.tmp is kept for inspection" in message
    assert not dest.exists()  # nothing half-built under the final name


def kernel_with(tmp_path: Path, config_text: str) -> Kernel:
    kdir = tmp_path / "kdir"
    kdir.mkdir(exist_ok=True)
    (kdir / ".config").write_text(config_text)
    path = tmp_path / "x"
    return Kernel("6.1", "6.1.0", "6.1.1-1", path, path, kdir, None, path)


def test_shutdown_needs_a_working_acpi_for_poweroff(tmp_path: Path) -> None:
    distro = kernel_with(tmp_path, "CONFIG_ACPI=y\nCONFIG_PCI=y\n")
    assert (distro.shutdown_command, distro.boot_args) == ("poweroff -f", ())
    # zskit's source-built kernels: ACPI for the CPU table, no PCI for the interpreter.
    built = kernel_with(tmp_path, "CONFIG_ACPI=y\n# CONFIG_PCI is not set\n")
    assert built.shutdown_command == "reboot -f"
    tiny = kernel_with(tmp_path, "# CONFIG_ACPI is not set\n")
    assert tiny.shutdown_command == "reboot -f"
    debug = kernel_with(tmp_path, "CONFIG_DEBUG_KMEMLEAK=y\n")
    assert debug.boot_args == ("kmemleak=off",)


def test_the_chain_size_comes_from_the_kernels_config(tmp_path: Path) -> None:
    kernel = kernel_with(tmp_path, "CONFIG_ZSMALLOC_CHAIN_SIZE=16\n")
    kernel = Kernel(**{**kernel.__dict__, "series": "6.12"})
    assert tabled(kernel).chain_size == 16
    assert tabled(kernel_with(tmp_path, "CONFIG_ZSMALLOC=m\n")).chain_size is None


def test_a_source_built_manifest_round_trips(tmp_path: Path) -> None:
    kernel = Kernel(
        series="6.12",
        release="6.12.117",
        package_version="6.12.117-1",
        vmlinuz=tmp_path / "build/vmlinux",
        boot_image=tmp_path / "build/vmlinux",
        kdir=tmp_path / "build",
        modules=tmp_path / "staging/lib/modules/6.12.117",
        source=tmp_path / "src",
        toolchain=tmp_path / "roots/trixie",
        variant="debug",
        make_vars=("CC=x86_64-linux-gnu-gcc-14", "HOSTCC=x86_64-linux-gnu-gcc-14"),
    )
    kernel.save(tmp_path / "kernel.json")
    assert Kernel.load(tmp_path / "kernel.json") == kernel


def test_matrix_has_source_built_entries() -> None:
    names = {e.name for e in matrix.known_entries()}
    assert {"6.1-upstream-minimal", "6.12-upstream-debug", "7.2-upstream-minimal"} <= names
    assert not any(n.endswith(("-builtin-minimal", "-builtin-debug")) for n in names)


def test_upstream_takes_the_headers_zsmalloc_includes(tmp_path: Path) -> None:
    # 7.x's mm/zsmalloc.c includes "zpdesc.h" from mm/: a source-built tree has it.
    kernel = kernel_with(tmp_path, "CONFIG_ZSMALLOC=m\n")
    mm = tmp_path / "src" / "mm"
    mm.mkdir(parents=True)
    (mm / "zsmalloc.c").write_text('#include <linux/mm.h>\n#include "zpdesc.h"\nint x;\n')
    (mm / "zpdesc.h").write_text("/* zpdesc */\n")
    kernel = Kernel(**{**kernel.__dict__, "series": "7.2", "source": tmp_path / "src"})
    out = render.render(kernel, api_for("7.2"), "upstream", tmp_path / "out")
    assert (out.directory / "zpdesc.h").read_text() == "/* zpdesc */\n"
    assert out.directory / "zpdesc.h" in out.files
    (mm / "zpdesc.h").unlink()
    with pytest.raises(StageError, match=r"includes zpdesc\.h, which is not in"):
        render.render(kernel, api_for("7.2"), "upstream", tmp_path / "out")


def test_the_renamed_build_tree_names_itself(tmp_path: Path) -> None:
    # 7.x's O= Makefile exports its own path; module builds go through it.
    tmp, dest = tmp_path / "7.2-minimal-k.tmp", tmp_path / "7.2-minimal-k"
    makefile = tmp_path / "Makefile"
    makefile.write_text(
        f"export KBUILD_OUTPUT = {tmp}/build\ninclude /src/linux-source-7.2/Makefile\n"
    )
    _rehome(makefile, tmp, dest)
    assert makefile.read_text().splitlines()[0] == f"export KBUILD_OUTPUT = {dest}/build"


def test_a_kasan_kernel_boots_its_bzimage() -> None:
    def targets(series: str, variant: str) -> list[str]:
        source = source_for(KernelId(series, variant))
        assert isinstance(source, SourceBuiltKernel)
        return source._extra_targets(fragments.merge(source.fragments()))

    # The PVH entry calls the instrumented memcmp before KASAN's shadow exists.
    for series in ("6.1", "6.12", "7.2"):
        assert targets(series, "debug") == ["bzImage"]
        assert targets(series, "minimal") == []
