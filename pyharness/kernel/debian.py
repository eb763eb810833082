"""Debian's distribution kernels, provisioned into the cache and never installed on the host.

- 6.1 (bookworm, the host's own release): the packages are fetched with
  the host's apt as plain .deb files and unpacked into the cache. The
  headers package includes its common part through an absolute
  `/usr/src/...` path, which is rewritten to the cache so Kbuild works
  there with the host's gcc-12.
- 6.12 (trixie) and 7.2 (sid): their Kbuild flags need the suite's own gcc,
  so the headers are installed into a toolchain root of that suite (see
  `toolchain.py`), whose apt also resolves the ABI and fetches the image
  and the source.

Under TCG, QEMU boots the ELF vmlinux unpacked from the bzImage through its
PVH entry (`pvh_vmlinux`), saving the guest's own decompression.
"""

from __future__ import annotations

import lzma
import re
import shutil
import struct
import subprocess
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from ..locking import locked
from ..model import PAGE_SIZES
from ..progress import Progress, StageError
from . import toolchain
from .arch import Target, page_size_of
from .foreign import ForeignApt, require_host_packages, unpack
from .manifest import Kernel, cached, config_value, config_values
from .toolchain import apt_show

# Files taken from linux-source-X: the upstream allocator, its header, and checkpatch.
SOURCE_MEMBERS = (
    "mm/zsmalloc.c",
    "include/linux/zsmalloc.h",
    "scripts/checkpatch.pl",
    "scripts/spelling.txt",
    "scripts/const_structs.checkpatch",
)


@dataclass(frozen=True)
class DebianDistroKernel:
    """A Debian distribution kernel whose suite is in the host's apt sources."""

    series: str  # "6.1"
    abi_prefix: str  # "6.1.0": linux-image-<abi_prefix>-<N>-<flavour>-unsigned
    flavour: str = "amd64"
    zsmalloc_builtin: bool = False

    def _resolve(self, progress: Progress) -> tuple[str, str]:
        """(release, package version): the newest ABI built from the same source as linux-source."""
        src_pkg = f"linux-source-{self.series}"
        src_version = apt_show([src_pkg], progress).get(src_pkg)
        if src_version is None:
            raise StageError(
                f"apt does not know {src_pkg}: the host's apt lists lack it. Run `sudo apt-get "
                f"update`; if it is still unknown, the host's apt sources serve no Linux "
                f"{self.series} (6.1 comes from Debian bookworm's sources)"
            )
        pattern = rf"^linux-image-{re.escape(self.abi_prefix)}-[0-9]+-{self.flavour}-unsigned$"
        found = subprocess.run(
            ["apt-cache", "search", "--names-only", pattern], capture_output=True, text=True
        ).stdout.split()
        images = [n for n in found if re.fullmatch(pattern.strip("^$"), n)]
        versions = apt_show(images, progress)

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
            toolchain.host_apt_get(
                ["download", *(f"{p}={version}" for p in missing)],
                progress,
                what=f"downloading {', '.join(missing)} ({version})",
                cwd=debs,
            )
        debs_of = [next(debs.glob(f"{pkg}_*.deb")) for pkg in packages]
        root = _assemble(top, release, self.series, debs_of, progress)
        vmlinuz = root / "boot" / f"vmlinuz-{release}"
        vmlinux = vmlinuz.with_name(f"vmlinux-{release}")
        kernel = Kernel(
            series=self.series,
            release=release,
            package_version=version,
            vmlinuz=vmlinuz,
            boot_image=vmlinux if vmlinux.exists() else vmlinuz,
            kdir=root / "usr/src" / f"linux-headers-{release}",
            modules=root / "lib/modules" / release,
            source=root / "usr/src" / f"linux-source-{self.series}",
        )
        if not kernel.is_complete():
            raise StageError(f"the packages of {release} lack expected files; rerun with --refresh")
        kernel.save(manifest)
        return kernel


def _assemble(top: Path, release: str, series: str, debs: list[Path], progress: Progress) -> Path:
    """Unpack a kernel's packages into top/root-<release> (complete or not at all): the
    source's SOURCE_MEMBERS only, the headers' Makefile pointed at the cache, and the ELF
    kernel for a PVH boot (x86) unpacked beside the image."""
    root = top / f"root-{release}"
    tmp = top / f"root-{release}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    progress.say(f"unpacking into {root}")
    for deb in debs:
        unpack(deb, tmp, progress)
    src_top = f"linux-source-{series}"
    tarball = tmp / "usr/src" / f"{src_top}.tar.xz"
    progress.say(f"extracting {', '.join(SOURCE_MEMBERS[:2])} and checkpatch from {tarball.name}")
    progress.run(
        [
            "tar",
            "-xJf",
            tarball,
            "-C",
            tmp / "usr/src",
            *(f"{src_top}/{m}" for m in SOURCE_MEMBERS),
        ],
        what="extracting linux-source",
    )
    tarball.unlink()
    # The headers Makefile includes the common part by absolute path.
    kdir_rel = Path("usr/src") / f"linux-headers-{release}"
    makefile = tmp / kdir_rel / "Makefile"
    makefile.write_text(makefile.read_text().replace("/usr/src/", f"{root}/usr/src/"))
    pvh_vmlinux(tmp / "boot" / f"vmlinuz-{release}", tmp / kdir_rel / ".config")
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    return root


def _bzimage_payload(data: bytes) -> bytes | None:
    """The compressed kernel inside a bzImage, located by its setup header (boot protocol 2.08+)."""
    if len(data) < 0x250 or data[0x202:0x206] != b"HdrS":
        return None
    setup_sects = data[0x1F1] or 4  # 0 means 4, for very old loaders
    offset, length = struct.unpack_from("<II", data, 0x248)  # payload_offset, payload_length
    start = (setup_sects + 1) * 512 + offset
    payload = data[start : start + length]
    return payload if len(payload) == length and length > 4 else None


def _decompress(payload: bytes, compression: str) -> bytes | None:
    """The ELF vmlinux from a bzImage payload, or None when this host cannot unpack it."""
    # Kbuild appends the uncompressed size (le32) to the compressed stream.
    (size,) = struct.unpack("<I", payload[-4:])
    try:
        if compression == "XZ":
            elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload)
        elif compression == "GZIP":
            elf = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(payload)
        elif compression == "ZSTD" and shutil.which("zstd"):
            proc = subprocess.run(["zstd", "-dcq"], input=payload[:-4], capture_output=True)
            elf = proc.stdout if proc.returncode == 0 else b""
        else:
            return None
    except (lzma.LZMAError, zlib.error):
        return None
    return elf if elf.startswith(b"\x7fELF") and len(elf) == size else None


def pvh_vmlinux(vmlinuz: Path, config: Path) -> Path | None:
    """Unpack the ELF kernel from a bzImage, for QEMU's direct PVH boot.

    Under TCG, decompressing the bzImage in the guest costs about 3 s of a
    6 s boot; QEMU boots an ELF vmlinux with a PVH entry note directly.
    Debian compresses 6.1 with XZ and 6.12/7.2 with ZSTD (unpacked with the
    `zstd` command). None means: boot the bzImage instead (slower, still works).
    """
    settings = config.read_text()
    m = re.search(r"^CONFIG_KERNEL_(\w+)=y$", settings, re.M)
    if "CONFIG_PVH=y" not in settings or m is None:
        return None
    payload = _bzimage_payload(vmlinuz.read_bytes())
    elf = _decompress(payload, m[1]) if payload else None
    if elf is None:
        return None
    dest = vmlinuz.with_name(vmlinuz.name.replace("vmlinuz", "vmlinux"))
    dest.write_bytes(elf)
    return dest


def _version_key(text: str) -> tuple[tuple[int, str], ...]:
    """Orders '6.12.117+deb13' after '6.12.99+deb13' (numbers compared as numbers)."""
    return tuple((int(p), "") if p.isdigit() else (-1, p) for p in re.findall(r"\d+|\D+", text))


def headers_package(series: str, flavour: str) -> str:
    """A regular expression for the headers package of a series' kernel of one flavour:
    `linux-headers-7.3.4+deb13-amd64`, not the `-rt-amd64` or `-cloud-amd64` flavours."""
    abi = rf"{re.escape(series)}\.[0-9][^\s,()-]*"
    return rf"linux-headers-{abi}-{re.escape(flavour)}"


@dataclass(frozen=True)
class DebianSuiteKernel:
    """The distribution kernel of a Debian suite other than the host's, built in its own root.

    The root (toolchain.py) holds the suite's gcc and the kernel's headers
    at their usual paths; its apt resolves the ABI (the `linux-headers-<flavour>`
    metapackage names the suite's kernel, checked against `linux-source-<series>`)
    and fetches the unsigned image and the source. The image and the few
    source files the harness needs go to the cache, next to the manifest.
    """

    series: str  # "6.12"
    suite: str  # "trixie": the suite whose distribution kernel this is
    flavour: str = "amd64"
    zsmalloc_builtin: bool = True

    def _resolve(self, root: toolchain.Root, progress: Progress) -> tuple[str, str]:
        """(release, package version) of the suite's kernel of this series, from the root's apt."""
        src_pkg = f"linux-source-{self.series}"
        meta = f"linux-headers-{self.flavour}"
        fields = root.package_fields([src_pkg, meta], progress)
        if src_pkg not in fields:
            raise StageError(
                f"{self.suite} has no {src_pkg}: its kernel is no longer Linux {self.series}. "
                f"Run with --refresh if the root's apt lists are old; otherwise this target "
                f"needs another suite (kernel/provision.py)"
            )
        version = fields[src_pkg]["Version"]
        headers = headers_package(self.series, self.flavour)
        # The metapackage depends on the headers of the suite's current kernel.
        names = re.findall(rf"\b{headers}\b", fields.get(meta, {}).get("Depends", ""))
        if not names:  # the metapackage moved to another series: any headers of this one
            names = root.search(rf"^{headers}$", progress)
        versions = root.package_versions(names, progress)
        matching = [n for n in names if versions.get(n) == version]
        if not matching:
            raise StageError(
                f"no linux-headers-{self.series}.*-{self.flavour} at version {version} (the "
                f"version of {src_pkg}) in {self.suite}; the archive may be mid-update: retry "
                "later with --refresh"
            )
        newest = max(matching, key=_version_key)
        return newest.removeprefix("linux-headers-"), version

    def _image_package(self, root: toolchain.Root, release: str, version: str, p: Progress) -> str:
        # trixie ships the unsigned image as linux-image-<release>-unsigned; sid
        # splits it into linux-binary-unsigned-<release> plus a modules package.
        names = [f"linux-image-{release}-unsigned", f"linux-binary-unsigned-{release}"]
        versions = root.package_versions(names, p)
        for name in names:
            if versions.get(name) == version:
                return name
        raise StageError(
            f"no unsigned image of Linux {release} at version {version} in {self.suite} "
            f"(looked for {' and '.join(names)}); retry with --refresh"
        )

    def provision(self, cache: Path, progress: Progress, refresh: bool = False) -> Kernel:
        top = cache / "debian" / self.series
        if not refresh and (kernel := cached(top / "kernel.json", progress)):
            return kernel
        toolchain.require_root(f"provisioning Linux {self.series}")
        with locked(top / "provision.lock"):
            # Another zskit may have provisioned it while this one waited for the lock.
            if not refresh and (kernel := cached(top / "kernel.json", progress)):
                return kernel
            return self._provision(cache, top, progress, refresh)

    def root_packages(self, root: toolchain.Root, progress: Progress) -> list[str]:
        """What the suite's root must hold for this kernel: its headers (and so its gcc)."""
        return [f"linux-headers-{self._resolve(root, progress)[0]}"]

    def _provision(self, cache: Path, top: Path, progress: Progress, refresh: bool) -> Kernel:
        def headers(root: toolchain.Root) -> list[str]:
            return self.root_packages(root, progress)

        # binutils: gcc calls `as` and `ld`, which a suite's gcc does not always bring
        # (trixie-backports' 7.3 headers do not).
        root = toolchain.ensure_root(
            self.suite, cache, progress, headers, refresh=refresh, extra=("binutils",)
        )
        release, version = self._resolve(root, progress)
        kdir = root.host_path(f"/usr/src/linux-headers-{release}")
        if not (kdir / "Makefile").exists():
            raise StageError(
                f"the {self.suite} root at {root.path} lacks the headers of Linux {release}; "
                "rerun with --refresh to rebuild it"
            )
        built = {"y": True, "m": False}.get(config_value(kdir / ".config", "ZSMALLOC") or "")
        if built is not self.zsmalloc_builtin:
            raise StageError(
                f"Linux {release} does not configure zsmalloc as kernel/provision.py says "
                f"(zsmalloc_builtin={self.zsmalloc_builtin}); fix that entry"
            )
        image_pkg = self._image_package(root, release, version, progress)
        src_pkg = f"linux-source-{self.series}"
        dest, tmp = top / release, top / f"{release}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "boot").mkdir(parents=True)
        downloads = root.host_path(f"/var/tmp/zskit-{release}")
        shutil.rmtree(downloads, ignore_errors=True)
        downloads.mkdir(parents=True)
        try:
            progress.say(f"downloading {image_pkg} and {src_pkg} ({version}) from {self.suite}")
            root.apt_get(
                ["download", f"{image_pkg}={version}", f"{src_pkg}={version}"],
                progress,
                what="downloading the kernel image and source",
                cwd=str(root.inside_path(downloads)),
            )
            (image_deb,) = downloads.glob(f"{image_pkg}_*.deb")
            (source_deb,) = downloads.glob(f"{src_pkg}_*.deb")
            vmlinuz = tmp / "boot" / f"vmlinuz-{release}"
            _extract_vmlinuz(image_deb, vmlinuz)
            _extract_source(source_deb, src_pkg, tmp, progress)
        finally:
            shutil.rmtree(downloads, ignore_errors=True)
        vmlinux = pvh_vmlinux(vmlinuz, kdir / ".config")
        if vmlinux is None:
            progress.say("no PVH image could be unpacked (is `zstd` installed?); booting vmlinuz")
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
        kernel = Kernel(
            series=self.series,
            release=release,
            package_version=version,
            vmlinuz=dest / "boot" / vmlinuz.name,
            boot_image=dest / "boot" / (vmlinux or vmlinuz).name,
            kdir=kdir,
            modules=None,  # zsmalloc is in vmlinux; no module of the image is needed
            source=dest / src_pkg,
            toolchain=root.path,
        )
        if not kernel.is_complete():
            raise StageError(f"the packages of {release} lack expected files; rerun with --refresh")
        kernel.save(top / "kernel.json")
        for old in top.iterdir():  # the kernels of earlier ABIs, replaced by this one
            if old.is_dir() and old != dest:
                shutil.rmtree(old)
        return kernel


def _extract_vmlinuz(deb: Path, dest: Path) -> None:
    """Copy the kernel image out of an image package, without unpacking its modules."""
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", deb], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for member in tar:
                # trixie: boot/vmlinuz-<release>; sid: usr/lib/modules/<release>/vmlinuz.unsigned
                if member.isfile() and Path(member.name).name.startswith("vmlinuz"):
                    image = tar.extractfile(member)
                    assert image is not None
                    dest.write_bytes(image.read())
                    return
    finally:
        proc.kill()
        proc.wait()
    raise StageError(f"{deb.name} holds no vmlinuz; rerun with --refresh")


def _extract_source(deb: Path, src_pkg: str, dest: Path, progress: Progress) -> None:
    """SOURCE_MEMBERS from the source package's tarball, into dest/<src_pkg>/."""
    scratch = dest / "deb"
    unpack(deb, scratch, progress)
    tarball = scratch / "usr/src" / f"{src_pkg}.tar.xz"
    progress.say(f"extracting {', '.join(SOURCE_MEMBERS[:2])} and checkpatch from {tarball.name}")
    progress.run(
        ["tar", "-xJf", tarball, "-C", dest, *(f"{src_pkg}/{m}" for m in SOURCE_MEMBERS)],
        what=f"extracting {src_pkg}",
    )
    shutil.rmtree(scratch)


@dataclass(frozen=True)
class DebianForeignKernel:
    """A Debian kernel of another architecture, from the host's own suites (foreign.py).

    bookworm carries 6.1 for every target and, in bookworm-security, 6.12 (`+deb12`, the
    arm64-16k flavour among them), all built with gcc-12, so the host's cross gcc-12
    builds modules for them. The headers' host tools come from the amd64 linux-kbuild
    package of the same version, which runs here as it does for the amd64 headers.
    """

    series: str  # "6.1"
    target: Target
    zsmalloc_builtin: bool = False

    def _resolve(self, apt: ForeignApt, p: Progress) -> tuple[str, str, str, str]:
        """(release, ABI, image package, version) of the newest image built from
        linux-source-<series>, of the target's first flavour that has one."""
        src_pkg = f"linux-source-{self.series}"
        version = apt.versions([src_pkg], p).get(src_pkg)
        if version is None:
            raise StageError(
                f"the host's Debian release serves no {src_pkg} for {self.target.debian_arch}; "
                f"zskit boots {self.target.name} kernels of the series the host's suites "
                "carry (6.1 and, from bookworm-security, 6.12)"
            )
        abi = rf"{re.escape(self.series)}\.[0-9]+(?:-[0-9]+|\+deb[0-9]+)"
        for flavour in self.target.flavours:
            # amd64 and arm64 images come signed and -unsigned, the others unsigned only.
            pattern = rf"linux-image-({abi})-{re.escape(flavour)}(-unsigned)?"
            broad = rf"^linux-image-{re.escape(self.series)}\..*-{re.escape(flavour)}"  # ERE
            names = [n for n in apt.search(broad) if re.fullmatch(pattern, n)]
            found = apt.versions(names, p)
            matching = [n for n in names if found.get(n) == version]
            if matching:
                image = max(matching, key=lambda n: (_version_key(n), n.endswith("-unsigned")))
                m = re.fullmatch(pattern, image)
                assert m is not None
                return f"{m[1]}-{flavour}", m[1], image, version
        raise StageError(
            f"no linux-image-{self.series}.*-{'/'.join(self.target.flavours)} at version "
            f"{version} (the version of {src_pkg}) for {self.target.debian_arch}; the archive "
            "may be mid-update: retry later with --refresh"
        )

    def provision(self, cache: Path, progress: Progress, refresh: bool = False) -> Kernel:
        top = cache / "debian" / f"{self.series}-{self.target.name}"
        require_host_packages(self.target.host_packages, f"a {self.target.name} kernel", progress)
        if not refresh and (kernel := cached(top / "kernel.json", progress)):
            return kernel
        with locked(top / "provision.lock"):
            if not refresh and (kernel := cached(top / "kernel.json", progress)):
                return kernel
            return self._provision(top, progress, refresh)

    def _provision(self, top: Path, progress: Progress, refresh: bool) -> Kernel:
        apt = ForeignApt(self.target.debian_arch).ready(progress, refresh)
        release, abi, image_pkg, version = self._resolve(apt, progress)
        foreign = [
            image_pkg,
            f"linux-headers-{release}",
            f"linux-headers-{abi}-common",
            f"linux-source-{self.series}",
        ]
        # The host tools: linux-kbuild-6.1 for 6.1, linux-kbuild-6.12.117+deb12 for 6.12.
        kbuild_names = [f"linux-kbuild-{abi}", f"linux-kbuild-{self.series}"]
        kbuild = next(
            (n for n, v in apt_show(kbuild_names, progress).items() if v == version), None
        )
        if kbuild is None:
            raise StageError(
                f"the host's apt has no {' or '.join(kbuild_names)} at {version}: run "
                "`sudo apt-get update` and retry"
            )
        debs = top / "debs" / version
        debs.mkdir(parents=True, exist_ok=True)
        missing = [n for n in foreign if not list(debs.glob(f"{n}_*.deb"))]
        if missing:
            apt.download([f"{n}={version}" for n in missing], debs, progress)
        if not list(debs.glob(f"{kbuild}_*.deb")):
            toolchain.host_apt_get(
                ["download", f"{kbuild}={version}"],
                progress,
                what=f"downloading {kbuild}",
                cwd=debs,
            )
        packages = [next(debs.glob(f"{n}_*.deb")) for n in (*foreign, kbuild)]
        root = _assemble(top, release, self.series, packages, progress)
        kdir = root / "usr/src" / f"linux-headers-{release}"
        built = {"y": True, "m": False}.get(config_value(kdir / ".config", "ZSMALLOC") or "")
        pages = page_size_of(config_values(kdir / ".config"), self.target.kbuild_arch)
        wrong = ""
        if built is not self.zsmalloc_builtin:
            wrong = (
                f"Linux {release} does not configure zsmalloc as kernel/provision.py says "
                f"(zsmalloc_builtin={self.zsmalloc_builtin}); fix that entry"
            )
        elif pages != PAGE_SIZES[self.target.page_size]:
            wrong = (
                f"Linux {release} has {pages >> 10} KiB pages, not the {self.target.page_size} "
                f"of {self.target.name}: fix its flavours in kernel/arch.py"
            )
        if wrong:
            shutil.rmtree(root)  # not a kernel of this target: nothing of it stays cached
            raise StageError(wrong)
        for old in top.iterdir():  # the kernels of earlier ABIs, replaced by this one
            if old.is_dir() and old.name.startswith("root-") and old != root:
                shutil.rmtree(old)
        # An ELF vmlinux where there is one: ppc64el's image, or the PVH kernel unpacked
        # from i386's bzImage (a second faster to boot); else the vmlinuz (arm64: an Image).
        vmlinux = root / "boot" / f"vmlinux-{release}"
        image = vmlinux if vmlinux.exists() else root / "boot" / f"vmlinuz-{release}"
        kernel = Kernel(
            series=self.series,
            release=release,
            package_version=version,
            vmlinuz=image,
            boot_image=image,
            kdir=kdir,
            modules=root / "lib/modules" / release,
            source=root / "usr/src" / f"linux-source-{self.series}",
            arch=self.target.name,
            make_vars=self.target.make_vars,
        )
        if not kernel.is_complete():
            raise StageError(f"the packages of {release} lack expected files; rerun with --refresh")
        kernel.save(top / "kernel.json")
        return kernel
