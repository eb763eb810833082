"""Targets beyond 6.1, Debian trixie's 6.12 and sid's 7.2, without network or root.

The parsers of the host's apt sources, the choice of archive, the ABI
resolution, the boot image unpacking, and the refusals that must come before
any provisioning.
"""

from __future__ import annotations

import gzip
import json
import lzma
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from pyharness.commands import config, run
from pyharness.kernel import toolchain
from pyharness.kernel.api import api_for
from pyharness.kernel.debian import DebianSuiteKernel, headers_package, pvh_vmlinux
from pyharness.kernel.identity import KernelId
from pyharness.kernel.manifest import Kernel
from pyharness.kernel.provision import source_for
from pyharness.kmod import render
from pyharness.progress import Progress, StageError

DEB822 = """\
# The main archive
Types: deb deb-src
URIs: http://archive.example.org/debian/
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
# a comment inside a stanza
URIs: http://security.example.org/debian-security
Suites: bookworm-security
Components: main
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mQINBGKXXXX=
 -----END PGP PUBLIC KEY BLOCK-----

Types: deb
URIs: http://disabled.example.org/debian
Suites: trixie
Components: main
Enabled: no
"""


ONE_LINE = """\
# comment line
deb http://archive.example.org/debian bookworm main contrib
deb [arch=amd64 signed-by=/etc/apt/keyrings/d.gpg] http://mirror.example.net/debian sid main  # x
deb-src http://archive.example.org/debian bookworm main

deb cdrom:[Debian GNU/Linux 12]/ bookworm main
"""


def test_deb822_parser() -> None:
    main, security, disabled = toolchain.parse_deb822_sources(DEB822)
    assert main.types == ("deb", "deb-src")
    assert main.uris == ("http://archive.example.org/debian/",)
    assert main.suites == ("bookworm", "bookworm-updates")
    assert main.components == ("main", "contrib")
    assert main.signed_by == "/usr/share/keyrings/debian-archive-keyring.gpg"
    assert main.enabled
    assert security.suites == ("bookworm-security",)
    assert security.signed_by is not None and "BEGIN PGP" in security.signed_by
    assert not disabled.enabled


def test_one_line_parser() -> None:
    entries = toolchain.parse_one_line_sources(ONE_LINE)
    assert [(e.types, e.uris, e.suites) for e in entries[:3]] == [
        (("deb",), ("http://archive.example.org/debian",), ("bookworm",)),
        (("deb",), ("http://mirror.example.net/debian",), ("sid",)),
        (("deb-src",), ("http://archive.example.org/debian",), ("bookworm",)),
    ]
    assert entries[0].components == ("main", "contrib")
    assert entries[1].signed_by == "/etc/apt/keyrings/d.gpg"
    assert entries[1].components == ("main",)  # the comment is not a component


def test_only_network_or_file_archives_are_chosen() -> None:
    cdrom = toolchain.parse_one_line_sources("deb cdrom:[Debian GNU/Linux 12]/ bookworm main\n")
    with pytest.raises(StageError, match="no Debian archive for trixie"):
        toolchain.archive_for("trixie", cdrom, "bookworm")


def test_archive_prefers_an_entry_that_lists_the_suite() -> None:
    sources = toolchain.parse_one_line_sources(ONE_LINE)
    archive = toolchain.archive_for("sid", sources, "bookworm")
    assert archive.uri == "http://mirror.example.net/debian"
    assert archive.keyring == Path("/etc/apt/keyrings/d.gpg")


def test_archive_falls_back_to_the_hosts_own_release() -> None:
    sources = toolchain.parse_deb822_sources(DEB822)
    # trixie is only in a disabled entry; the host's bookworm archive serves it.
    archive = toolchain.archive_for("trixie", sources, "bookworm")
    assert archive.uri == "http://archive.example.org/debian"  # no trailing slash
    assert archive.keyring == Path("/usr/share/keyrings/debian-archive-keyring.gpg")


def test_security_archive_is_never_chosen() -> None:
    security = toolchain.parse_deb822_sources(DEB822)[1:2]
    with pytest.raises(StageError, match=r"no Debian archive for sid.*sources\.list"):
        toolchain.archive_for("sid", security, "bookworm")


def test_host_sources_reads_both_formats(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text(ONE_LINE)
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEB822)
    (tmp_path / "sources.list.d" / "old.list.disabled").write_text("deb http://x.example/ sid main")
    entries = toolchain.host_sources(tmp_path)
    assert len(entries) == len(toolchain.parse_one_line_sources(ONE_LINE)) + 3
    assert not any("x.example" in e.uris[0] for e in entries)


def test_host_codename(tmp_path: Path) -> None:
    (tmp_path / "os-release").write_text('NAME="Debian"\nVERSION_CODENAME=bookworm\n')
    assert toolchain.host_codename(tmp_path / "os-release") == "bookworm"
    assert toolchain.host_codename(tmp_path / "missing") is None


class FakeRoot:
    """Answers like a root's apt-cache, from a dict of package -> fields."""

    def __init__(self, packages: dict[str, dict[str, str]]) -> None:
        self.packages = packages

    def package_fields(self, names: list[str], progress: Progress) -> dict[str, dict[str, str]]:
        return {n: self.packages[n] for n in names if n in self.packages}

    def package_versions(self, names: list[str], progress: Progress) -> dict[str, str]:
        return {n: f["Version"] for n, f in self.package_fields(names, progress).items()}

    def search(self, pattern: str, progress: Progress) -> list[str]:
        return [n for n in self.packages if re.search(pattern, n)]


SID = {
    "linux-source-7.2": {"Version": "7.2.13-1"},
    "linux-headers-amd64": {
        "Version": "7.2.13-1",
        "Depends": "linux-base-amd64 (= 7.2.13-1), linux-headers-7.2.13+deb14-amd64 (= 7.2.13-1)",
    },
    "linux-headers-7.2.13+deb14-amd64": {"Version": "7.2.13-1"},
    "linux-headers-7.2.13+deb14-cloud-amd64": {"Version": "7.2.13-1"},
    "linux-binary-unsigned-7.2.13+deb14-amd64": {"Version": "7.2.13-1"},
}


def test_abi_from_the_headers_metapackage() -> None:
    target = DebianSuiteKernel(series="7.2", suite="sid")
    root = FakeRoot(SID)
    assert target._resolve(root, Progress()) == ("7.2.13+deb14-amd64", "7.2.13-1")  # type: ignore[arg-type]
    image = target._image_package(root, "7.2.13+deb14-amd64", "7.2.13-1", Progress())  # type: ignore[arg-type]
    assert image == "linux-binary-unsigned-7.2.13+deb14-amd64"


def test_abi_when_the_metapackage_moved_to_another_series() -> None:
    packages = {
        "linux-source-6.12": {"Version": "6.12.117-1"},
        "linux-headers-amd64": {"Version": "6.13.2-1", "Depends": "linux-headers-6.13.2-amd64"},
        "linux-headers-6.12.107+deb13-amd64": {"Version": "6.12.107-1"},
        "linux-headers-6.12.117+deb13-amd64": {"Version": "6.12.117-1"},
        "linux-image-6.12.117+deb13-amd64-unsigned": {"Version": "6.12.117-1"},
    }
    target = DebianSuiteKernel(series="6.12", suite="trixie")
    root = FakeRoot(packages)
    release, version = target._resolve(root, Progress())  # type: ignore[arg-type]
    assert (release, version) == ("6.12.117+deb13-amd64", "6.12.117-1")
    image = target._image_package(root, release, version, Progress())  # type: ignore[arg-type]
    assert image == "linux-image-6.12.117+deb13-amd64-unsigned"


def test_abi_errors_say_what_to_do() -> None:
    target = DebianSuiteKernel(series="7.2", suite="sid")
    gone = {k: v for k, v in SID.items() if k != "linux-source-7.2"}
    with pytest.raises(StageError, match="sid has no linux-source-7.2.*--refresh"):
        target._resolve(FakeRoot(gone), Progress())  # type: ignore[arg-type]
    skew = {**SID, "linux-source-7.2": {"Version": "7.2.14-1"}}
    with pytest.raises(StageError, match="at version 7.2.14-1"):
        target._resolve(FakeRoot(skew), Progress())  # type: ignore[arg-type]


def bzimage(payload: bytes) -> bytes:
    """A minimal bzImage: setup header with payload_offset/length, then the payload."""
    setup_sects = 2
    head = bytearray((setup_sects + 1) * 512)
    head[0x1F1] = setup_sects
    head[0x202:0x206] = b"HdrS"
    struct.pack_into("<II", head, 0x248, 64, len(payload))
    return bytes(head) + b"\xfd7zXZ\x00 decoy" + bytes(52) + payload + b"trailing code"


ELF = b"\x7fELF" + bytes(range(256)) * 40


def compress(kind: str, data: bytes) -> bytes:
    if kind == "XZ":
        packed = lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32)
    elif kind == "GZIP":
        packed = gzip.compress(data)
    else:
        packed = subprocess.run(["zstd", "-c", "-q"], input=data, capture_output=True).stdout
    return packed + struct.pack("<I", len(data))  # Kbuild's size_append


@pytest.mark.parametrize("kind", ["XZ", "GZIP", "ZSTD"])
def test_pvh_image_is_unpacked(tmp_path: Path, kind: str) -> None:
    if kind == "ZSTD" and not shutil.which("zstd"):
        pytest.skip("the zstd command is not installed")
    vmlinuz = tmp_path / "vmlinuz-7.2.13+deb14-amd64"
    vmlinuz.write_bytes(bzimage(compress(kind, ELF)))
    cfg = tmp_path / ".config"
    cfg.write_text(f"CONFIG_PVH=y\nCONFIG_KERNEL_{kind}=y\n")
    vmlinux = pvh_vmlinux(vmlinuz, cfg)
    assert vmlinux == tmp_path / "vmlinux-7.2.13+deb14-amd64"
    assert vmlinux.read_bytes() == ELF


def test_no_pvh_image_without_pvh_or_with_a_wrong_size(tmp_path: Path) -> None:
    vmlinuz = tmp_path / "vmlinuz"
    cfg = tmp_path / ".config"
    vmlinuz.write_bytes(bzimage(compress("XZ", ELF)))
    cfg.write_text("# CONFIG_PVH is not set\nCONFIG_KERNEL_XZ=y\n")
    assert pvh_vmlinux(vmlinuz, cfg) is None
    cfg.write_text("CONFIG_PVH=y\nCONFIG_KERNEL_XZ=y\n")
    vmlinuz.write_bytes(bzimage(compress("XZ", ELF)[:-4] + struct.pack("<I", 5)))
    assert pvh_vmlinux(vmlinuz, cfg) is None
    cfg.write_text("CONFIG_PVH=y\nCONFIG_KERNEL_LZ4=y\n")  # a compression we do not unpack
    assert pvh_vmlinux(vmlinuz, cfg) is None


def test_a_61_manifest_without_toolchain_still_loads(tmp_path: Path) -> None:
    top = "/cache/debian/6.1/root-6.1.0-56-amd64"
    manifest = tmp_path / "kernel.json"
    manifest.write_text(
        json.dumps(
            {
                "series": "6.1",
                "release": "6.1.0-56-amd64",
                "package_version": "6.1.192-2",
                "vmlinuz": f"{top}/boot/vmlinuz-6.1.0-56-amd64",
                "boot_image": f"{top}/boot/vmlinux-6.1.0-56-amd64",
                "kdir": f"{top}/usr/src/linux-headers-6.1.0-56-amd64",
                "modules": f"{top}/lib/modules/6.1.0-56-amd64",
                "source": f"{top}/usr/src/linux-source-6.1",
            }
        )
    )
    kernel = Kernel.load(manifest)
    assert kernel is not None and kernel.toolchain is None
    assert kernel.modules == Path(f"{top}/lib/modules/6.1.0-56-amd64")


def test_manifest_round_trip_with_a_toolchain(tmp_path: Path) -> None:
    kernel = Kernel(
        series="7.2",
        release="7.2.13+deb14-amd64",
        package_version="7.2.13-1",
        vmlinuz=tmp_path / "boot/vmlinuz",
        boot_image=tmp_path / "boot/vmlinux",
        kdir=tmp_path / "roots/sid/usr/src/linux-headers-7.2.13+deb14-amd64",
        modules=None,
        source=tmp_path / "linux-source-7.2",
        toolchain=tmp_path / "roots/sid",
    )
    kernel.save(tmp_path / "kernel.json")
    assert Kernel.load(tmp_path / "kernel.json") == kernel


def test_unknown_kernel_names_the_known_ones() -> None:
    with pytest.raises(
        StageError, match=r"unknown kernel '5\.10'; known kernels: 6\.1, 6\.12, 7\.2"
    ):
        source_for(KernelId("5.10"))


@pytest.mark.parametrize("series", ["6.12", "7.2"])
def test_upstream_on_a_builtin_kernel_fails_before_provisioning(
    series: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZSKIT_CACHE", str(tmp_path / "cache"))
    cfg = config.load(dotconfig=Path("/nonexistent")).with_overrides(
        kernel=series, allocator="upstream"
    )
    with pytest.raises(StageError) as e:
        run.prepare(cfg, Progress())
    assert f"Linux {series}: zsmalloc is built into that kernel" in str(e.value)
    assert "--allocator builtin" in str(e.value)
    assert not (tmp_path / "cache").exists()  # nothing was fetched or built


def test_builtin_on_a_modular_kernel_is_refused() -> None:
    with pytest.raises(StageError, match="Linux 6.1 has it as a module.*--allocator upstream"):
        render.check_allocator(source_for(KernelId("6.1")), "builtin")


def fake_kernel(tmp_path: Path, series: str, config_text: str) -> Kernel:
    kdir = tmp_path / "kdir"
    kdir.mkdir()
    (kdir / ".config").write_text(config_text)
    return Kernel(
        series=series,
        release=f"{series}.0+deb-amd64",
        package_version=f"{series}.0-1",
        vmlinuz=tmp_path / "vmlinuz",
        boot_image=tmp_path / "vmlinux",
        kdir=kdir,
        modules=None,
        source=tmp_path / "no-source",  # builtin needs no mm/zsmalloc.c
        toolchain=tmp_path / "root",
    )


@pytest.mark.parametrize("series", ["6.12", "7.2"])
def test_builtin_renders_only_the_driver(tmp_path: Path, series: str) -> None:
    kernel = fake_kernel(tmp_path, series, "CONFIG_ZSMALLOC=y\n# CONFIG_ZSMALLOC_STAT is not set\n")
    out = render.render(kernel, api_for(series), "builtin", tmp_path / "out")
    assert out.modules == ("zstest",)
    assert {p.name for p in out.files} == {"zstest.c", "Kbuild"}
    assert not out.classes_file
    kbuild = (out.directory / "Kbuild").read_text()
    assert "obj-m += zstest.o\n" in kbuild and "zsmalloc" not in kbuild
    text = (out.directory / "zstest.c").read_text()
    assert "#include <linux/unaligned.h>" in text  # moved out of asm/ in 6.12
    if series == "7.2":
        assert "zs_obj_write(" in text and "NUMA_NO_NODE" in text
        assert "zs_map_object" not in text
    else:
        assert "zs_map_object(" in text and "NUMA_NO_NODE" not in text


def test_builtin_with_stat_has_a_classes_file(tmp_path: Path) -> None:
    kernel = fake_kernel(tmp_path, "7.2", "CONFIG_ZSMALLOC=y\nCONFIG_ZSMALLOC_STAT=y\n")
    out = render.render(kernel, api_for("7.2"), "builtin", tmp_path / "out")
    assert out.classes_file


def test_render_checks_the_kernels_own_config(tmp_path: Path) -> None:
    kernel = fake_kernel(tmp_path, "6.12", "CONFIG_ZSMALLOC=y\n")
    with pytest.raises(StageError, match="--allocator builtin"):
        render.render(kernel, api_for("6.12"), "upstream", tmp_path / "out")


def test_api_facts_of_the_new_targets() -> None:
    api612, api72 = api_for("6.12"), api_for("7.2")
    assert (api612.map_object, api612.malloc_nid, api612.lookup_class_index) == (
        True,
        False,
        True,
    )
    assert (api72.map_object, api72.malloc_nid, api72.lookup_class_index) == (False, True, True)
    assert api612.oversize_errno == api72.oversize_errno == "ENOSPC"
    assert (api612.model_policy, api72.model_policy) == ("6.12", "7.2")


def test_commands_in_a_root_need_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(toolchain.os, "geteuid", lambda: 1000)
    root = toolchain.Root(tmp_path, "sid")
    with pytest.raises(StageError, match=r"needs root.*sudo -E"):
        root.run(["true"], Progress(), what="building the modules")


def test_a_mount_inside_a_tree_blocks_its_removal(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "root" / "proc").mkdir(parents=True)
    monkeypatch.setattr(toolchain, "_mounts_under", lambda path: [str(path / "proc")])
    with pytest.raises(StageError, match="umount -R"):
        toolchain.remove_tree(tmp_path / "root")
    assert (tmp_path / "root" / "proc").exists()


def test_the_headers_of_a_series_are_of_its_flavour_only() -> None:
    pattern = re.compile(headers_package("7.3", "amd64"))
    assert pattern.fullmatch("linux-headers-7.3.4+deb13-amd64")
    assert pattern.fullmatch("linux-headers-7.3.4+bpo-amd64")
    assert not pattern.fullmatch("linux-headers-7.3.4+deb13-rt-amd64")
    assert not pattern.fullmatch("linux-headers-7.30.1+deb13-amd64")
    assert not pattern.fullmatch("linux-headers-7.3.4+deb13-cloud-amd64")
