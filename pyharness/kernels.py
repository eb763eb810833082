"""Where a target kernel comes from: provisioned into the cache, ready to build against and boot.

A `KernelSource` turns a series name ("6.1") into a `Kernel`: a bootable
image, a Kbuild directory for out-of-tree modules, and the parts of the
matching kernel source the harness needs (mm/zsmalloc.c, checkpatch).
New targets (other Debian suites, source-built kernels) plug in by adding
a `KernelSource` to `SOURCES`.

Debian distribution kernels are fetched with apt as plain .deb files and
unpacked into the cache, never installed on the host. The headers package
includes its common part through an absolute `/usr/src/...` path, which is
rewritten to the cache so Kbuild works there. A finished provision writes
`kernel.json` last; its presence means the cache entry is complete, and a
warm cache needs no network.
"""

from __future__ import annotations

import json
import lzma
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from .progress import Progress, StageError

# Files taken from linux-source-X: the upstream allocator, its header, and checkpatch.
SOURCE_MEMBERS = (
    "mm/zsmalloc.c",
    "include/linux/zsmalloc.h",
    "scripts/checkpatch.pl",
    "scripts/spelling.txt",
    "scripts/const_structs.checkpatch",
)


def cache_dir() -> Path:
    """$ZSKIT_CACHE, else $XDG_CACHE_HOME/zskit, else ~/.cache/zskit."""
    if env := os.environ.get("ZSKIT_CACHE"):
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "zskit"


@dataclass(frozen=True)
class Kernel:
    """A provisioned kernel: everything later stages need, as paths in the cache."""

    series: str
    release: str  # `uname -r` of the guest, e.g. 6.1.0-56-amd64
    package_version: str  # Debian version of the packages, e.g. 6.1.192-2
    vmlinuz: Path
    boot_image: Path  # what QEMU's -kernel gets: vmlinux for a PVH boot, else vmlinuz
    kdir: Path  # make -C KDIR M=... builds modules for this kernel
    modules: Path  # the image's /lib/modules/<release>
    source: Path  # root of the extracted SOURCE_MEMBERS

    def save(self, path: Path) -> None:
        data = {k: str(v) for k, v in asdict(self).items()}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Kernel | None:
        """The manifest's kernel, or None when it is from an older zskit or damaged."""
        try:
            data = json.loads(path.read_text())
            paths = {
                k: Path(data[k]) for k in ("vmlinuz", "boot_image", "kdir", "modules", "source")
            }
            return cls(
                series=data["series"],
                release=data["release"],
                package_version=data["package_version"],
                **paths,
            )
        except (KeyError, ValueError):
            return None

    def is_complete(self) -> bool:
        files = (self.vmlinuz, self.boot_image, self.kdir / "Makefile", self.source)
        return all(p.exists() for p in files)


class KernelSource(Protocol):
    series: str

    def provision(self, cache: Path, progress: Progress, refresh: bool = False) -> Kernel: ...


def _apt_show(names: list[str], progress: Progress) -> dict[str, str]:
    """Candidate version of each package apt knows (unknown names are left out)."""
    if not names:
        return {}
    proc = subprocess.run(
        ["apt-cache", "show", "--no-all-versions", *names],
        capture_output=True,
        text=True,
    )
    progress.detail(f"$ apt-cache show --no-all-versions {' '.join(names)}")
    versions: dict[str, str] = {}
    for para in proc.stdout.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in para.splitlines() if ": " in line and line[0] != " "
        )
        if "Package" in fields and "Version" in fields:
            versions[fields["Package"]] = fields["Version"]
    return versions


@dataclass(frozen=True)
class DebianDistroKernel:
    """A Debian distribution kernel whose suite is in the host's apt sources."""

    series: str  # "6.1"
    abi_prefix: str  # "6.1.0": linux-image-<abi_prefix>-<N>-<flavour>-unsigned
    flavour: str = "amd64"

    def _resolve(self, progress: Progress) -> tuple[str, str]:
        """(release, package version): the newest ABI built from the same source as linux-source."""
        src_pkg = f"linux-source-{self.series}"
        src_version = _apt_show([src_pkg], progress).get(src_pkg)
        if src_version is None:
            raise StageError(
                f"apt does not know {src_pkg}: the host's apt lists are missing or stale; "
                "run `sudo apt-get update` (Debian bookworm sources are needed for 6.1)"
            )
        pattern = rf"^linux-image-{re.escape(self.abi_prefix)}-[0-9]+-{self.flavour}-unsigned$"
        found = subprocess.run(
            ["apt-cache", "search", "--names-only", pattern], capture_output=True, text=True
        ).stdout.split()
        images = [n for n in found if re.fullmatch(pattern.strip("^$"), n)]
        versions = _apt_show(images, progress)

        def abi(name: str) -> int:
            return int(name.split("-")[3])

        for name in sorted(versions, key=abi, reverse=True):
            if versions[name] == src_version:
                return f"{self.abi_prefix}-{abi(name)}-{self.flavour}", src_version
        raise StageError(
            f"no linux-image-{self.abi_prefix}-N-{self.flavour}-unsigned at version {src_version} "
            f"(the version of {src_pkg}) in the archive; run `sudo apt-get update` and retry"
        )

    def provision(self, cache: Path, progress: Progress, refresh: bool = False) -> Kernel:
        top = cache / "debian" / self.series
        manifest = top / "kernel.json"
        if manifest.exists() and not refresh:
            kernel = Kernel.load(manifest)
            if kernel is not None and kernel.is_complete():
                progress.say(f"Linux {kernel.release} ({kernel.package_version}) from the cache")
                return kernel
        release, version = self._resolve(progress)
        abi = release.removesuffix(f"-{self.flavour}")
        packages = [
            f"linux-image-{release}-unsigned",
            f"linux-headers-{release}",
            f"linux-headers-{abi}-common",
            f"linux-kbuild-{self.series}",
            f"linux-source-{self.series}",
        ]
        debs = top / "debs" / version
        debs.mkdir(parents=True, exist_ok=True)
        missing = [p for p in packages if not list(debs.glob(f"{p}_*.deb"))]
        if missing:
            progress.say(f"downloading {len(missing)} packages of Linux {release} ({version})")
            apt_opts = ["-o", "APT::Sandbox::User=root"] if os.geteuid() == 0 else []
            progress.run(
                ["apt-get", *apt_opts, "download", *(f"{p}={version}" for p in missing)],
                cwd=debs,
                what="downloading kernel packages",
                stream=True,
            )
        root = top / f"root-{release}"
        tmp = top / f"root-{release}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        progress.say(f"unpacking into {root}")
        for pkg in packages:
            (deb,) = debs.glob(f"{pkg}_*.deb")
            progress.run(["dpkg-deb", "-x", deb, tmp], what=f"unpacking {deb.name}")
        tarball = tmp / "usr/src" / f"linux-source-{self.series}.tar.xz"
        src_top = f"linux-source-{self.series}"
        progress.say(
            f"extracting {', '.join(SOURCE_MEMBERS[:2])} and checkpatch from {tarball.name}"
        )
        progress.run(
            ["tar", "-xJf", tarball, "-C", tmp / "usr/src"]
            + [f"{src_top}/{m}" for m in SOURCE_MEMBERS],
            what="extracting linux-source",
        )
        tarball.unlink()
        # The headers Makefile includes the common part by absolute path.
        kdir_rel = Path("usr/src") / f"linux-headers-{release}"
        makefile = tmp / kdir_rel / "Makefile"
        makefile.write_text(makefile.read_text().replace("/usr/src/", f"{root}/usr/src/"))
        vmlinux = _pvh_vmlinux(tmp / "boot" / f"vmlinuz-{release}", tmp / kdir_rel / ".config")
        shutil.rmtree(root, ignore_errors=True)
        tmp.rename(root)
        vmlinuz = root / "boot" / f"vmlinuz-{release}"
        kernel = Kernel(
            series=self.series,
            release=release,
            package_version=version,
            vmlinuz=vmlinuz,
            boot_image=root / "boot" / vmlinux.name if vmlinux else vmlinuz,
            kdir=root / kdir_rel,
            modules=root / "lib/modules" / release,
            source=root / "usr/src" / src_top,
        )
        if not kernel.is_complete():
            raise StageError(f"the packages of {release} lack expected files; rerun with --refresh")
        kernel.save(manifest)
        return kernel


def _pvh_vmlinux(vmlinuz: Path, config: Path) -> Path | None:
    """Unpack the ELF kernel from an XZ bzImage, for QEMU's direct PVH boot.

    Under TCG, decompressing the bzImage in the guest costs about 3 s of a
    6 s boot; QEMU boots an ELF vmlinux with a PVH entry note directly.
    """
    settings = config.read_text()
    if "CONFIG_PVH=y" not in settings or "CONFIG_KERNEL_XZ=y" not in settings:
        return None
    data = vmlinuz.read_bytes()
    start = data.find(b"\xfd7zXZ\x00")
    if start < 0:
        return None
    elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[start:])
    if not elf.startswith(b"\x7fELF"):
        return None
    dest = vmlinuz.with_name(vmlinuz.name.replace("vmlinuz", "vmlinux"))
    dest.write_bytes(elf)
    return dest


SOURCES: dict[str, KernelSource] = {
    "6.1": DebianDistroKernel(series="6.1", abi_prefix="6.1.0"),
}


def source_for(series: str) -> KernelSource:
    try:
        return SOURCES[series]
    except KeyError:
        known = ", ".join(sorted(SOURCES))
        raise StageError(f"unknown kernel {series!r}; known kernels: {known}") from None
