"""Pristine sources: files of the kernel's linux-source package, in the cache, the whole
unpacked tree a source-built kernel was built from, or a user's tree (--tree) at the base
the series is applied on (read from its .git, never from or into its working files)."""

from __future__ import annotations

import os
import posixpath
import subprocess
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ...kernel import tree as kernel_tree
from ...kernel.manifest import Kernel
from ...locking import locked
from ...paths import cache_dir
from ...progress import Progress, StageError
from .series import ValidateError

SOURCE = "mm/zsmalloc.c"
HEADER = "include/linux/zsmalloc.h"
BUILT = (SOURCE, HEADER)  # built on every kernel; see Plan for the rest
# Taken on the first pass over the source tarball, so most series need no second pass.
PREFETCH = ("mm/", "include/linux/", "drivers/block/zram/", "Documentation/mm/")


@dataclass(frozen=True)
class SourceTree:
    """Pristine files of one linux-source package and the full listing of its tarball."""

    label: str  # "linux-source-6.1 6.1.192-2", "tree /src/linux at 1a2b3c4d5e6f (HEAD)"
    root: Path  # extracted files, at their paths in the kernel tree
    members: frozenset[str]  # every file ("mm/zsmalloc.c") and directory ("mm/") of the tarball
    # What to do when the series' first patch expects other files than these.
    remedy: str = (
        "Rebase the series onto the kernel's source, or validate it on the kernel it was "
        "made for (--kernel)"
    )

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


def _members(files: Iterable[str]) -> frozenset[str]:
    """Files and every directory above them ("mm/"), as a tarball lists them."""
    members: set[str] = set()
    for name in files:
        members.add(name)
        parts = name.split("/")[:-1]
        members.update("/".join(parts[: n + 1]) + "/" for n in range(len(parts)))
    return frozenset(members)


@dataclass(frozen=True)
class TreeBase:
    """The commit of a user's tree a series is applied on, and why that one."""

    tree: Path
    commit: str | None  # None: a plain directory (no git), its files as they are
    how: str  # "HEAD", "--base v6.1", "the series' base-commit"
    named: str | None = None  # the series' base-commit, as it names it
    notes: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        if self.commit is None:
            return f"tree {self.tree} (its files; not a git checkout)"
        return f"tree {self.tree} at {self.commit[:12]} ({self.how})"

    @property
    def remedy(self) -> str:
        if self.named is None:
            return (
                "The series carries no base-commit: rebase it onto the tree, or pass the "
                "commit it was made on with --base REV"
            )
        if self.commit is not None and self.commit.startswith(self.named):
            return "Rebase the series onto that commit's files"
        return (
            f"The series names base-commit {self.named}, which was not tried: fetch that commit "
            "into the tree (zskit then takes it), pass --base REV, or rebase the series"
        )


def tree_base(tree: Path, requested: str | None, named: str | None) -> TreeBase:
    """The base of a series on a user's tree: `--base REV` if given, else the series'
    `base-commit:` when the tree has that commit, else HEAD. Only read-only git commands."""
    if not kernel_tree.is_checkout(tree):
        if requested is not None:
            raise ValidateError(
                f"--base {requested}: {tree} is not a git checkout, so it has no commits to "
                "pick from; leave --base out to apply the series on its files as they are"
            )
        notes: tuple[str, ...] = ()
        if named is not None:
            notes = (
                f"the series names base-commit {named}; {tree} is not a git checkout, so the "
                "series is applied on its files as they are",
            )
        return TreeBase(tree, None, "its files", named, notes)
    if requested is not None:
        commit = kernel_tree.commit_of(tree, requested)
        if commit is None:
            raise ValidateError(
                f"--base {requested}: no such commit in {tree} (git rev-parse found none); "
                "name a commit, tag or branch of that tree"
            )
        notes = ()
        if named is not None and not commit.startswith(named):
            notes = (
                f"the series names base-commit {named}; it is applied on --base {requested} "
                f"({commit[:12]}) as asked",
            )
        return TreeBase(tree, commit, f"--base {requested}", named, notes)
    if named is not None:
        commit = kernel_tree.commit_of(tree, named)
        if commit is not None:
            return TreeBase(
                tree,
                commit,
                "the series' base-commit",
                named,
                (f"the series names base-commit {named}: applied on it ({commit[:12]})",),
            )
    head = kernel_tree.commit_of(tree, "HEAD")
    if head is None:
        raise ValidateError(
            f"{tree} is a git repository without a commit: commit the tree (or pass "
            "--base REV) so the series has a base to apply on"
        )
    notes = ()
    if named is not None:
        notes = (
            f"the series names base-commit {named}, which {tree} does not have; "
            f"applied on HEAD ({head[:12]}) instead",
        )
    return TreeBase(tree, head, "HEAD", named, notes)


TREE_PREFETCH = ("mm/", "drivers/block/zram/")  # what the plan reads (includes, zram, zswap)


def tree_source(base: TreeBase, wanted: Iterable[str], dest: Path) -> SourceTree:
    """The files of a user's tree at `base` that validation needs, copied into `dest` (a
    throwaway directory): BUILT, `wanted` and the plan's directories. A plain directory
    is read in place (apply copies from it, never into it)."""
    if base.commit is None:
        walked = []
        for dirpath, dirs, filenames in os.walk(base.tree):
            dirs[:] = [d for d in dirs if d != ".git"]
            rel = os.path.relpath(dirpath, base.tree)
            prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            walked += [prefix + f for f in filenames]
        found = SourceTree(base.label, base.tree, _members(walked), base.remedy)
    else:
        files = kernel_tree.files_at(base.tree, base.commit)
        members = _members(files)
        want = set(wanted) | set(BUILT)
        take = sorted(f for f in files if f in want or f.startswith(TREE_PREFETCH))
        for path, data in kernel_tree.blobs_at(base.tree, base.commit, take).items():
            target = dest / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        found = SourceTree(base.label, dest, members, base.remedy)
    for path in BUILT:
        if not found.has_file(path):
            raise ValidateError(f"{base.label} has no {path}; is it a kernel tree with zsmalloc?")
    return found
