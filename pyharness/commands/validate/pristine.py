"""Pristine sources: files of the kernel's linux-source package, in the cache, or the whole
unpacked tree a source-built kernel was built from."""

from __future__ import annotations

import os
import posixpath
import subprocess
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ...kernel.manifest import Kernel
from ...locking import locked
from ...paths import cache_dir
from ...progress import Progress, StageError

SOURCE = "mm/zsmalloc.c"
HEADER = "include/linux/zsmalloc.h"
BUILT = (SOURCE, HEADER)  # built on every kernel; see Plan for the rest
# Taken on the first pass over the source tarball, so most series need no second pass.
PREFETCH = ("mm/", "include/linux/", "drivers/block/zram/", "Documentation/mm/")


@dataclass(frozen=True)
class SourceTree:
    """Pristine files of one linux-source package and the full listing of its tarball."""

    label: str  # "linux-source-6.1 6.1.192-2"
    root: Path  # extracted files, at their paths in the kernel tree
    members: frozenset[str]  # every file ("mm/zsmalloc.c") and directory ("mm/") of the tarball

    def has_file(self, path: str) -> bool:
        return path in self.members

    def has_dir_of(self, path: str) -> bool:
        parent = posixpath.dirname(path)
        return not parent or parent + "/" in self.members


def _source_deb(kernel: Kernel, top: Path, p: Progress) -> Path:
    """The linux-source .deb provisioning kept, or a fresh download of that version."""
    pattern = f"linux-source-{kernel.series}_*.deb"
    debs = cache_dir() / "debian" / kernel.series / "debs" / kernel.package_version
    for directory in (debs, top):
        if found := sorted(directory.glob(pattern)):
            return found[0]
    top.mkdir(parents=True, exist_ok=True)
    p.say(f"downloading linux-source-{kernel.series} {kernel.package_version}")
    apt_opts = ["-o", "APT::Sandbox::User=root"] if os.geteuid() == 0 else []
    p.run(
        [
            "apt-get",
            *apt_opts,
            "download",
            f"linux-source-{kernel.series}={kernel.package_version}",
        ],
        cwd=top,
        what="downloading the kernel source package",
        stream=True,
    )
    if found := sorted(top.glob(pattern)):
        return found[0]
    raise StageError(f"apt-get download left no {pattern} in {top}")


def _scan_source(
    deb: Path, series: str, exact: set[str], prefixes: tuple[str, ...], dest: Path
) -> list[str]:
    """One pass over the source tarball: its listing, and the wanted files written to dest."""
    top = f"linux-source-{series}/"
    names: list[str] = []
    dpkg = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    assert dpkg.stdout is not None
    inner = subprocess.Popen(
        ["tar", "-xOf", "-", f"./usr/src/linux-source-{series}.tar.xz"],
        stdin=dpkg.stdout,
        stdout=subprocess.PIPE,
    )
    dpkg.stdout.close()
    assert inner.stdout is not None
    try:
        with tarfile.open(fileobj=inner.stdout, mode="r|xz") as tar:
            for member in tar:
                name = member.name.removeprefix(top)
                if not name or name == member.name:
                    continue
                names.append(name.rstrip("/") + "/" if member.isdir() else name)
                if member.isfile() and (name in exact or name.startswith(prefixes)):
                    data = tar.extractfile(member)
                    assert data is not None
                    target = dest / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    part = target.with_name(target.name + ".part")
                    part.write_bytes(data.read())
                    part.replace(target)  # a file in the tree is always whole
    except (tarfile.TarError, EOFError, OSError) as e:
        raise StageError(
            f"cannot read the source tarball in {deb}: {e}; delete it and retry"
        ) from e
    finally:
        inner.stdout.close()
        for proc in (inner, dpkg):
            if proc.wait() != 0 and not names:
                raise StageError(f"cannot unpack {deb} (exit {proc.returncode})")
    return names


def source_tree(kernel: Kernel, wanted: Iterable[str], p: Progress) -> SourceTree:
    """Pristine files of the kernel's source: the wanted ones (and BUILT) at least."""
    cache = cache_dir()
    top = cache / "validate" / kernel.series / kernel.package_version
    listing, tree = top / "members.txt", top / "tree"
    label = f"linux-source-{kernel.series} {kernel.package_version}"
    with locked(cache / "locks" / f"validate-source-{kernel.series}.lock"):
        members = frozenset(listing.read_text().splitlines()) if listing.exists() else None
        want = set(wanted) | set(BUILT)
        missing = {
            w for w in want if not (tree / w).is_file() and (members is None or w in members)
        }
        if members is None or missing:
            deb = _source_deb(kernel, top, p)
            what = f"{len(missing)} file(s)" + (" and the listing" if members is None else "")
            p.say(f"taking {what} from {deb.name} (one pass over its tarball, 10-20 s)")
            prefixes = PREFETCH if members is None else ()
            names = _scan_source(deb, kernel.series, missing, prefixes, tree)
            if members is None:
                tmp = listing.with_suffix(".part")
                tmp.write_text("\n".join(names) + "\n")
                tmp.replace(listing)
                members = frozenset(names)
    for path in BUILT:
        if not (tree / path).is_file():
            raise StageError(f"{label} has no {path}; is it a kernel source package?")
    return SourceTree(label, tree, members)


def full_tree(kernel: Kernel) -> SourceTree:
    """The whole unpacked linux-source tree a source-built kernel was built from (read only)."""
    root = kernel.source
    members: set[str] = set()
    for dirpath, _, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        if prefix:
            members.add(prefix)
        members.update(prefix + f for f in filenames)
    label = f"linux-source-{kernel.series} {kernel.package_version}"
    for path in BUILT:
        if path not in members:
            raise StageError(f"{label} at {root} has no {path}; delete it and retry")
    return SourceTree(label, root, frozenset(members))
