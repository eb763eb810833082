"""The user's own kernel tree (`--tree DIR`), built with `O=` in the cache, incrementally.

A `TreeKernel` is a `KernelSource` like the others, so the rest of the harness
does not care that the kernel came from a developer's checkout. What sets it apart:

- the tree is the user's: zskit never writes into it (nor into its .git). The
  build runs `make -C TREE O=<cache>/trees/<slug>-<key>/build`, where the key
  hashes the tree's path, the merged config request and the toolchain, but not
  the tree's commit: an edit or a new commit rebuilds only what changed.
- the toolchain is the source-built kernels' of the series: the host's gcc for
  6.1, the series' Debian suite root for 6.12 (trixie) and 7.2 (sid).
- the build directory is persistent, not built aside and renamed as
  source.py's are: it is configured once (tinyconfig + the variant's fragments,
  checked as source.py does), then every provision runs `make vmlinux modules`
  and lets Kbuild decide what to rebuild. `kernel.json` is removed before a
  build and written after a successful one, so a failed build is never taken
  for a kernel, while its directory stays for inspection and the next run
  continues it.
- what Kbuild would refuse is refused first, with the remedy: a tree holding
  in-tree build output (Kbuild then refuses `O=`), and a tree whose path has a
  space or a colon (Kbuild's top Makefile stops on those; a link does not help:
  Kbuild resolves `srctree`, and tools/ such as objtool build from the physical
  working directory, which the link cannot hide).

`describe()` names what was tested: the tree, and for a git checkout its commit and
whether the working state differs ("dirty"), asked with read-only git commands.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..locking import locked
from ..paths import CONFIGS
from ..progress import Progress, StageError
from . import fragments
from .debian import DebianSuiteKernel
from .fragments import Setting
from .identity import DISTRO, TREE_VARIANT, KernelId, series_key
from .manifest import Kernel
from .source import (
    RECIPE,
    VARIANT_FRAGMENTS,
    Kbuild,
    Toolchain,
    announce,
    built_kernel,
    extra_targets,
    host_toolchain,
    root_toolchain,
)

OLDEST = (6, 1)  # the oldest series zskit has API facts and a model for
# What an in-tree build leaves at a tree's top; with any of them Kbuild refuses O=
# ("source tree is not clean").
BUILD_OUTPUT = (".config", "include/config", "arch/x86/include/generated", "vmlinux")
HOST_GCC_SERIES = ("6.1",)  # series built with the host's gcc (bookworm's gcc-12)
# Kbuild stops on a source path with these (its top Makefile: "cannot contain spaces or colons").
NOT_FOR_KBUILD = re.compile(r"[\s:]")


class TreeError(StageError):
    """The directory given with --tree cannot be built as a kernel tree."""


def makefile_series(tree: Path) -> str:
    """The series ("6.1") a kernel tree's top Makefile names, or why it is not a kernel tree
    with a zsmalloc (what rendering our allocator into it needs, too)."""
    if not tree.is_dir():
        what = "does not exist" if not tree.exists() else "is not a directory"
        raise TreeError(f"--tree {tree} {what}; pass the top directory of a Linux source tree")
    makefile = tree / "Makefile"
    try:
        text = makefile.read_text(errors="replace") if makefile.is_file() else ""
    except OSError as e:
        raise TreeError(f"cannot read {makefile}: {e.strerror}") from e
    version = re.search(r"^VERSION = (\d+)$", text, re.M)
    patchlevel = re.search(r"^PATCHLEVEL = (\d+)$", text, re.M)
    if not (version and patchlevel and (tree / "Kconfig").is_file()):
        raise TreeError(
            f"{tree} is not a kernel tree (no top Makefile with VERSION and PATCHLEVEL, or "
            "no Kconfig); pass the top directory of a Linux source tree"
        )
    series = f"{version[1]}.{patchlevel[1]}"
    if not (tree / "mm" / "zsmalloc.c").is_file():
        raise TreeError(
            f"{tree} (Linux {series}) has no mm/zsmalloc.c; zskit tests zsmalloc, so it "
            "needs a tree that has it"
        )
    return series


def tree_series(tree: Path) -> str:
    """The series ("6.1") of a kernel tree zskit can build, or why it cannot, and what to do."""
    series = makefile_series(tree)
    if series_key(series) < OLDEST:
        oldest = ".".join(map(str, OLDEST))
        raise TreeError(
            f"{tree} is Linux {series}, older than {oldest}, the oldest zskit models; "
            f"use a tree of {oldest} or later"
        )
    if NOT_FOR_KBUILD.search(str(tree)):
        raise TreeError(
            f"{str(tree)!r} has a space or a colon in its path, and Kbuild cannot build such a "
            'tree (its top Makefile stops: "source directory cannot contain spaces or '
            'colons"; a symlink does not help, Kbuild resolves it); move or rename the tree, '
            "or bind-mount it at a path without them (`mount --bind`)"
        )
    found = [name for name in BUILD_OUTPUT if (tree / name).exists()]
    if found:
        raise TreeError(
            f"{tree} holds in-tree build output ({', '.join(found)}), and Kbuild refuses to "
            f"build such a tree with O=; run `make mrproper` in it (this deletes its .config: "
            "save it first if you need it), or point zskit at a clean checkout"
        )
    return series


def tree_kernel_id(tree: Path, variant: str | None = None) -> KernelId:
    """The identity of a kernel built from `tree` (checked), with the variant asked for."""
    tree = tree.expanduser().resolve()
    series = tree_series(tree)
    variant = variant or TREE_VARIANT
    check_variant(variant)
    return KernelId(series, variant, tree=tree)


def check_variant(variant: str) -> None:
    """A tree is built with a variant's fragments; "distro" (Debian's packages) is none."""
    if variant == DISTRO:
        raise TreeError(
            "--variant distro means Debian's packaged kernel, which a tree is not; a tree is "
            f"built with the fragments of {' or '.join(VARIANT_FRAGMENTS)} (default "
            f"{TREE_VARIANT})"
        )
    if variant not in VARIANT_FRAGMENTS:
        raise TreeError(f"unknown variant {variant!r}; a tree takes {', '.join(VARIANT_FRAGMENTS)}")


@dataclass(frozen=True)
class TreeKernel:
    """A kernel built from the user's tree with a variant's config, in the cache."""

    tree: Path  # absolute, checked by tree_series()
    series: str
    variant: str = TREE_VARIANT
    fragment_files: tuple[Path, ...] = ()  # default: the variant's
    zsmalloc_builtin: bool = False  # base.config asks CONFIG_ZSMALLOC=m
    # Debian's kernel of the series, whose suite's root builds it; None: the host's gcc (6.1).
    distro: DebianSuiteKernel | None = None

    @classmethod
    def of(cls, kernel: KernelId, suites: Mapping[str, DebianSuiteKernel]) -> TreeKernel:
        """The source of a tree's KernelId, the tree checked again (it may have changed).

        `suites`: Debian's kernel of each series that has its own suite; that suite's
        root is the toolchain of a tree of the series (as for source-built kernels).
        """
        assert kernel.tree is not None
        check_variant(kernel.variant)
        series = tree_series(kernel.tree)
        return cls(kernel.tree, series, kernel.variant, distro=suites.get(series))

    @property
    def kernel_id(self) -> KernelId:
        return KernelId(self.series, self.variant, tree=self.tree)

    def fragments(self) -> list[Path]:
        if self.fragment_files:
            return list(self.fragment_files)
        return [CONFIGS / name for name in VARIANT_FRAGMENTS[self.variant]]

    def toolchain(self, cache: Path, progress: Progress, refresh: bool = False) -> Toolchain:
        """The host's gcc for 6.1, the series' Debian suite root for 6.12 and 7.2 (their
        source-built kernels' toolchains); another series has none zskit can pick yet."""
        if self.series in HOST_GCC_SERIES:
            return host_toolchain(progress)
        if self.distro is not None:
            return root_toolchain(self.distro, cache, progress, refresh)
        raise TreeError(
            f"{self.tree} is Linux {self.series}, and zskit has no toolchain for that series: "
            f"it builds trees of {', '.join(HOST_GCC_SERIES)} with the host's gcc and trees of "
            "a series Debian ships in its own suite (6.12: trixie, 7.2: sid) in that suite's "
            f"root. A {self.series} tree needs a toolchain root for {self.series} (a Debian "
            "suite whose gcc builds it), which --tree does not choose yet"
        )

    def build_dir(self, cache: Path, tools: Toolchain) -> Path:
        """`<cache>/trees/<slug>-<key>`: one per tree path, config request and toolchain."""
        settings = fragments.merge(self.fragments())
        request = fragments.text(settings)
        key = hashlib.sha256(
            json.dumps(
                [RECIPE, str(self.tree), tools.ident, extra_targets(settings), request]
            ).encode()
        ).hexdigest()[:12]
        return cache / "trees" / f"{self.kernel_id.slug}-{key}"

    def provision(self, cache: Path, progress: Progress, refresh: bool = False) -> Kernel:
        """Build (or continue building) the tree's kernel; every call lets Kbuild catch up."""
        settings = fragments.merge(self.fragments())  # a conflict stops before any work
        tools = self.toolchain(cache, progress, refresh)
        dest = self.build_dir(cache, tools)

        def waiting() -> None:
            progress.say(f"waiting for another zskit building {self.tree} (in {dest})")

        with locked(cache / "locks" / f"tree-{dest.name}.lock", waiting=waiting):
            return self._build(dest, tools, settings, progress, refresh)

    def _build(
        self,
        dest: Path,
        tools: Toolchain,
        settings: dict[str, Setting],
        progress: Progress,
        refresh: bool,
    ) -> Kernel:
        what = f"Linux {self.series} ({self.variant}) from {self.tree}"
        manifest = dest / "kernel.json"
        manifest.unlink(missing_ok=True)  # a kernel only once this build succeeded
        out = dest / "build"
        out.mkdir(parents=True, exist_ok=True)
        kbuild = Kbuild(self.tree, out, tools, what, binds=(self.tree, dest))
        configured = dest / "request.config"  # written once the configuration is checked
        if refresh or not (configured.is_file() and (out / ".config").is_file()):
            configured.unlink(missing_ok=True)
            kbuild.configure(settings, self.fragments(), progress)
            configured.write_text(fragments.text(settings))
        else:
            progress.say(f"{what}: configured in {out}; Kbuild rebuilds what changed")
        bzimage = "bzImage" in extra_targets(settings)
        release = kbuild.build(
            ["vmlinux", "modules", *extra_targets(settings)],
            dest / "staging",
            progress,
            kept=f"Fix the tree and rerun: {dest} is kept, and the next run continues the "
            "build where it stopped",
        )
        kbuild.check(settings)  # Kconfig edits in the tree rerun Kconfig during the build
        announce(release, self.variant, out, progress)
        kernel = built_kernel(
            self.series, self.variant, f"tree {self.tree}", dest, self.tree, tools, release, bzimage
        )
        if not kernel.is_complete():
            raise StageError(f"the build of {what} in {dest} lacks vmlinux; rerun to continue it")
        kernel.save(manifest)
        return kernel


# git must not write into the user's tree: no index refresh (`git status` otherwise
# rewrites .git/index when it can), no config, and trust in a tree owned by someone else.
GIT_ENV = {"GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0"}


def read_git(tree: Path, *args: str, stdin: bytes | None = None) -> bytes | None:
    """A read-only git command's output in `tree`, or None when it fails (no git, no repo)."""
    argv = ["git", "-c", f"safe.directory={tree}", "-C", str(tree), *args]
    try:
        done = subprocess.run(
            argv,
            env={**os.environ, **GIT_ENV},
            input=stdin,
            capture_output=True,
            check=False,
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def _git(tree: Path, *args: str) -> str | None:
    out = read_git(tree, *args)
    return None if out is None else out.decode(errors="replace")


def is_checkout(tree: Path) -> bool:
    """Whether `tree` is the top of a git checkout (not a directory inside another one)."""
    top = _git(tree, "rev-parse", "--show-toplevel")
    return top is not None and Path(top.strip()).resolve() == tree.resolve()


def commit_of(tree: Path, rev: str) -> str | None:
    """The full commit id `rev` names in the tree's repository, or None if it has none."""
    out = _git(tree, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}")
    return out.strip() if out else None


def files_at(tree: Path, commit: str) -> list[str]:
    """Every file path of the tree at `commit` (git ls-tree), read from its .git."""
    out = read_git(tree, "ls-tree", "-r", "-z", "--name-only", commit)
    if out is None:
        raise TreeError(f"cannot list the files of {tree} at {commit} (git ls-tree failed)")
    return [name for name in out.decode(errors="surrogateescape").split("\0") if name]


def blobs_at(tree: Path, commit: str, paths: list[str]) -> dict[str, bytes]:
    """The contents of `paths` at `commit` (those that exist there), by one git cat-file."""
    if not paths:
        return {}
    request = "".join(f"{commit}:{path}\n" for path in paths).encode()
    out = read_git(tree, "cat-file", "--batch", stdin=request)
    if out is None:
        raise TreeError(f"cannot read files of {tree} at {commit} (git cat-file failed)")
    found: dict[str, bytes] = {}
    at = 0
    for path in paths:
        end = out.index(b"\n", at)
        header = out[at:end].split()
        at = end + 1
        if len(header) != 3 or header[1] != b"blob":
            continue  # "<rev:path> missing", or a directory or submodule
        size = int(header[2])
        found[path] = out[at : at + size]
        at += size + 1
    return found


def describe(tree: Path) -> dict[str, object]:
    """What a run tested: `tree`, and for a git checkout `tree_commit` and `tree_dirty`.

    Dirty means the working state differs from the commit: a tracked file changed,
    or a file git does not ignore is new. A plain directory (an unpacked tarball) has
    only its path.
    """
    info: dict[str, object] = {"tree": str(tree)}
    if not is_checkout(tree):
        return info  # not a git checkout, or a directory inside another repository
    commit = _git(tree, "rev-parse", "--verify", "HEAD")
    status = _git(tree, "status", "--porcelain", "--untracked-files=normal")
    if commit is None:
        return {**info, "tree_commit": None, "tree_dirty": True}  # a repository, no commit
    info["tree_commit"] = commit.strip()
    info["tree_dirty"] = status is None or bool(status.strip())
    return info
