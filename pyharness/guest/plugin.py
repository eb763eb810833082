"""The instruction-counting TCG plugin (qemu/plugins/zscount.c), built for the QEMU that runs.

Debian ships QEMU with plugin support but neither a plugin nor the API header
(debian/not-installed drops qemu-plugin.h). The header is taken from Debian's
source package of the installed QEMU: a private apt configuration in the cache
with deb-src lines for the host's release reads it, only the orig tarball's
header is unpacked (no Debian patch may touch it: checked), and the plugin is
compiled against it with the host's gcc. The result is cached per QEMU source
version and plugin source, built in a temporary directory and renamed into
place, so a failed build leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from ..kernel.toolchain import archive_for, fetching, host_codename, host_sources, security_uri
from ..locking import locked
from ..paths import QEMU_DIR, cache_dir, lock_file
from ..progress import Progress, StageError

SOURCE = QEMU_DIR / "plugins" / "zscount.c"
HEADER = "include/qemu/qemu-plugin.h"


def qemu_source_version(binary: str) -> tuple[str, str]:
    """(source package, version) of the Debian package that installed `binary`."""
    path = shutil.which(binary)
    if path is None:
        raise StageError(f"{binary} is not installed: run `make setup`")
    owner = subprocess.run(["dpkg-query", "-S", os.path.realpath(path)], capture_output=True)
    if owner.returncode != 0:
        raise StageError(f"{path} does not come from a Debian package: no plugin header for it")
    package = owner.stdout.decode().split(":", 1)[0]
    fields = subprocess.run(
        ["dpkg-query", "-W", "-f", "${source:Package} ${source:Version}", package],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return fields[0], fields[1]


def _apt_options(top: Path) -> list[str]:
    return [
        "-o", f"Dir::State::Lists={top / 'lists'}",
        "-o", f"Dir::Etc::SourceList={top / 'sources.list'}",
        "-o", "Dir::Etc::SourceParts=/nonexistent",
        "-o", f"Dir::Cache={top / 'cache'}",
        "-o", "Acquire::Languages=none",
        *(["-o", "APT::Sandbox::User=root"] if os.geteuid() == 0 else []),
    ]  # fmt: skip


def _sources_list() -> str:
    """deb-src lines for the host's release, its updates and its security updates: the
    installed QEMU's source is in one of them."""
    sources, codename = host_sources(), host_codename()
    if codename is None:
        raise StageError("the host's Debian release is unknown (/etc/os-release): no QEMU source")
    uri = archive_for(codename, sources, codename).uri
    lines = [f"deb-src {uri} {codename} main", f"deb-src {uri} {codename}-updates main"]
    if security := security_uri(sources):
        lines.append(f"deb-src {security} {codename}-security main")
    return "\n".join(lines) + "\n"


def plugin_header(package: str, version: str, p: Progress) -> Path:
    """qemu-plugin.h of that source package version, fetched once into the cache."""
    top = cache_dir() / "qemu-source"
    header = top / f"{package}-{version.replace(':', '_')}" / "qemu-plugin.h"
    if header.exists():
        return header
    top.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=top, prefix=".fetching-") as tmp:
        found = _fetch_header(package, version, top, Path(tmp), p)
        header.parent.mkdir(exist_ok=True)
        found.rename(header)
    return header


def _fetch_header(package: str, version: str, top: Path, into: Path, p: Progress) -> Path:
    """qemu-plugin.h of that source package version, unpacked into `into`."""
    (top / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (top / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    (top / "sources.list").write_text(_sources_list())
    what = f"fetching the source of {package} {version} for its plugin header"
    p.say(what)
    with fetching(what):
        p.run(["apt-get", "-q", *_apt_options(top), "update"], what=what)
        p.run(
            ["apt-get", "-q", *_apt_options(top), "source", "--download-only",
             f"{package}={version}"],
            cwd=into,
            what=what,
        )  # fmt: skip
    origs = sorted(into.glob("*.orig.tar.*"))
    debian = sorted(into.glob("*.debian.tar.*"))
    if not origs or not debian:
        raise StageError(f"{what}: apt fetched no orig and debian tarballs into {into}")
    with tarfile.open(debian[0]) as t:
        for member in t:
            if member.name.startswith("debian/patches/") and member.isfile():
                patch = t.extractfile(member)
                if patch is not None and f"b/{HEADER}".encode() in patch.read():
                    raise StageError(
                        f"{member.name} of {package} {version} patches {HEADER}: the orig "
                        "tarball's header is not the one QEMU was built with"
                    )
    with tarfile.open(origs[0]) as t:
        found = next((m for m in t if m.name.endswith("/" + HEADER)), None)
        if found is None:
            raise StageError(f"{origs[0].name} has no {HEADER}")
        data = t.extractfile(found)
        assert data is not None
        header = into / "qemu-plugin.h"
        header.write_bytes(data.read())
    return header


def counting_plugin(binary: str, p: Progress) -> Path:
    """The plugin's shared object for this QEMU, built once into the cache."""
    package, version = qemu_source_version(binary)
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    home = cache_dir() / "plugins" / f"{package}-{version.replace(':', '_')}-{digest}"
    plugin = home / "zscount.so"
    with locked(lock_file("plugin")):
        if plugin.exists():
            return plugin
        home.parent.mkdir(parents=True, exist_ok=True)
        header = plugin_header(package, version, p)
        with tempfile.TemporaryDirectory(dir=home.parent, prefix=".building-") as tmp:
            work = Path(tmp)
            built = work / "zscount.so"
            cmd = ["gcc", "-O2", "-Wall", "-Werror", "-Wno-unused-parameter", "-shared",
                   "-fPIC", f"-I{header.parent}", str(SOURCE), "-o", str(built)]  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise StageError(
                    f"building the counting plugin against {package} {version}'s header "
                    f"failed:\n{proc.stderr.strip()}"
                )
            record = {"qemu": f"{package} {version}", "source": SOURCE.name, "sha256": digest}
            (work / "plugin.json").write_text(json.dumps(record, indent=2) + "\n")
            final = work / "done"
            final.mkdir()
            for name in ("zscount.so", "plugin.json"):
                (work / name).rename(final / name)
            final.rename(home)
    return plugin
