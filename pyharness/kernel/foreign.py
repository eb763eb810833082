"""Packages of another architecture, and the host packages a cross target needs.

`ForeignApt` is a private apt state in the cache (`<cache>/apt/<arch>/`: its own
sources, lists and package cache; the host's apt state is never read or
written) over the host's own suites (bookworm, -updates, -security), read as
that architecture: its kernels, headers and busybox are downloaded as plain
.deb files, never installed. Its lists are fetched again when a day old.

`require_host_packages` installs what the host needs to build for and boot
a target (a cross gcc, a static libc, the QEMU binary) with apt, as root, or
says what to install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..locking import locked
from ..paths import cache_dir
from ..progress import Progress, StageError
from .toolchain import (
    apt_show,
    archive_for,
    fetching,
    host_codename,
    host_sources,
    security_uri,
)

MAX_AGE = 24 * 3600.0  # seconds before the lists are fetched again


@dataclass(frozen=True)
class ForeignApt:
    debian_arch: str  # arm64, ppc64el, i386

    @property
    def top(self) -> Path:
        return cache_dir() / "apt" / self.debian_arch

    def _options(self) -> list[str]:
        sandbox = ["-o", "APT::Sandbox::User=root"] if os.geteuid() == 0 else []
        return [
            "-o", f"Dir::State::Lists={self.top / 'lists'}",
            "-o", f"Dir::Etc::SourceList={self.top / 'sources.list'}",
            "-o", "Dir::Etc::SourceParts=/nonexistent",
            "-o", f"Dir::Cache={self.top / 'cache'}",
            "-o", "Dir::State::status=/dev/null",
            "-o", f"APT::Architecture={self.debian_arch}",
            "-o", f"APT::Architectures::={self.debian_arch}",
            "-o", "Acquire::Languages=none",
            *sandbox,
        ]  # fmt: skip

    def ready(self, p: Progress, refresh: bool = False) -> ForeignApt:
        """This apt with lists no older than a day (fetched now when older, or asked to)."""
        stamp = self.top / "updated"
        with locked(self.top / "update.lock"):
            age = time.time() - stamp.stat().st_mtime if stamp.exists() else None
            if refresh or age is None or age > MAX_AGE:
                codename = host_codename()
                if codename is None:
                    raise StageError("the host's release has no codename in /etc/os-release")
                sources = host_sources()
                uri = archive_for(codename, sources, codename).uri
                security = security_uri(sources)
                lines = [f"deb {uri} {codename} main", f"deb {uri} {codename}-updates main"]
                if security:
                    lines.append(f"deb {security} {codename}-security main")
                (self.top / "lists" / "partial").mkdir(parents=True, exist_ok=True)
                (self.top / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
                (self.top / "sources.list").write_text("\n".join(lines) + "\n")
                what = f"reading the {self.debian_arch} packages of {codename}"
                p.say(what)
                with fetching(what):
                    p.run(["apt-get", "-q", *self._options(), "update"], what=what)
                stamp.touch()
        return self

    def versions(self, names: Sequence[str], p: Progress) -> dict[str, str]:
        """The candidate version of each package (unknown names are left out)."""
        return apt_show(names, p, self._options())

    def search(self, pattern: str) -> list[str]:
        """Package names matching a regular expression."""
        proc = subprocess.run(
            ["apt-cache", *self._options(), "search", "--names-only", pattern],
            capture_output=True,
            text=True,
        )
        return [line.split(" - ", 1)[0] for line in proc.stdout.splitlines()]

    def download(self, specs: Sequence[str], dest: Path, p: Progress) -> None:
        """`apt-get download` of NAME=VERSION specs into dest."""
        what = f"downloading {', '.join(specs)} ({self.debian_arch})"
        p.say(what)
        with fetching(what):
            p.run(["apt-get", "-q", *self._options(), "download", *specs], what=what, cwd=dest)


def missing_host_packages(names: Sequence[str]) -> list[str]:
    missing = []
    for name in names:
        proc = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", name], capture_output=True, text=True
        )
        if "install ok installed" not in proc.stdout:
            missing.append(name)
    return missing


def require_host_packages(names: Sequence[str], why: str, p: Progress) -> None:
    """Install the host's Debian packages `names` that are missing (as root), else say how."""
    missing = missing_host_packages(names)
    if not missing:
        return
    if os.geteuid() != 0:
        raise StageError(
            f"{why} needs the Debian packages {' '.join(missing)}: run "
            f"`sudo apt-get install {' '.join(missing)}`, or run zskit as root"
        )
    what = f"installing {' '.join(missing)} ({why})"
    p.say(what)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with fetching(what):
        p.run(["apt-get", "install", "-y", "-q", *missing], what=what, env=env)
    still = missing_host_packages(missing)
    if still:
        raise StageError(f"{what}: apt left {' '.join(still)} uninstalled")


def unpack(deb: Path, dest: Path, p: Progress) -> None:
    p.run(["dpkg-deb", "-x", deb, dest], what=f"unpacking {deb.name}")


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def busybox(debian_arch: str, p: Progress) -> Path:
    """A static busybox of that architecture (Debian's busybox-static), cached."""
    top = cache_dir() / "userland" / debian_arch
    binary = top / "busybox"
    if binary.exists():
        return binary
    apt = ForeignApt(debian_arch).ready(p)
    version = apt.versions(["busybox-static"], p).get("busybox-static")
    if version is None:
        raise StageError(f"the host's Debian release has no busybox-static for {debian_arch}")
    with locked(top.parent / f"{debian_arch}.lock"):
        if binary.exists():
            return binary
        scratch = fresh_dir(top.parent / f"{debian_arch}.tmp")
        apt.download([f"busybox-static={version}"], scratch, p)
        (deb,) = scratch.glob("busybox-static_*.deb")
        unpack(deb, scratch / "root", p)
        found = [scratch / "root" / d / "busybox" for d in ("bin", "usr/bin")]
        path = next((f for f in found if f.is_file()), None)
        if path is None:
            raise StageError(f"{deb.name} holds no busybox in /bin or /usr/bin")
        top.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, binary.with_suffix(".tmp"))
        binary.with_suffix(".tmp").rename(binary)
        shutil.rmtree(scratch)
    return binary
