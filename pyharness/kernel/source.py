"""Kernels built from Debian's linux-source-X: the variants of VARIANT_FRAGMENTS.

A `SourceBuiltKernel` is a `KernelSource` like the distribution kernels, so
the rest of the harness does not care where a kernel came from. Its steps:

1. the variant's fragments (`qemu/configs/`) are merged, loudly (fragments.py);
2. the toolchain: for 6.1 the host's gcc (bookworm's gcc-12, the compiler
   Debian builds 6.1 with); for 6.12 and 7.2 the suite's toolchain root
   (toolchain.py) with the kernel's build dependencies added, and the
   compiler Debian's own kernel names in CONFIG_CC_VERSION_TEXT;
3. the whole linux-source-X tree, unpacked once per source version into
   `<cache>/src/<series>/<version>/` and shared by every variant;
4. `make tinyconfig`, the request appended, `make olddefconfig`, then every
   requested option checked (fragments.check);
5. `make vmlinux modules` (QEMU boots the ELF vmlinux through PVH, so no
   bzImage is compressed; a KASAN kernel cannot, see `_extra_targets`, and
   boots its bzImage) and `modules_install` into a staging directory.

The build tree (`O=`) is what later module builds use as their Kbuild
directory. A finished kernel lives in `<cache>/built/<series>-<variant>-<key>`,
where the key hashes the source version, the merged request and the
toolchain: a change of any of them is a new build, and an unchanged one is
reused. It is built in `<name>.tmp` and renamed when complete; `kernel.json`
in it names everything, as for the distribution kernels.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..locking import locked
from ..paths import CONFIGS
from ..progress import CommandError, Progress, StageError
from . import fragments, toolchain
from .arch import HOST, Target
from .debian import DebianSuiteKernel
from .foreign import require_host_packages
from .fragments import Setting
from .manifest import Kernel, cached, config_value
from .toolchain import apt_show

VARIANT_FRAGMENTS = {
    "minimal": ("base.config", "minimal.config"),
    "debug": ("base.config", "debug.config"),
    "kcsan": ("base.config", "kcsan.config"),
    "nocompaction": ("base.config", "nocompaction.config"),
    "zswap": ("base.config", "zswap.config"),
}
# The variants whose fragments build zsmalloc into the kernel (CONFIG_ZSMALLOC=y).
ZSMALLOC_BUILTIN_VARIANTS = ("zswap",)
# What another machine adds after the variant's fragments (its boot, console, page size).
MACHINE_FRAGMENTS = {
    "arm64": ("arm64.config",),
    "arm64-16k": ("arm64.config", "arm64-16k.config"),
    "ppc64el": ("ppc64el.config",),
}
# Bump when the way a kernel is built changes: every cached build is then redone.
RECIPE = 1
# What a kernel build needs in a toolchain root besides the compiler and make,
# which the kernel's headers package already brought. binutils: sid's gcc brings
# only x86_64-linux-gnu-ld and friends, and Kbuild calls `ld`. No depmod: the
# guest loads modules by path, and modules_install only warns without it.
ROOT_BUILD_PACKAGES = ("binutils", "flex", "bison", "bc", "libelf-dev", "libc6-dev")
# The host's (6.1): program -> the Debian package that provides it.
HOST_BUILD_TOOLS = {"gcc": "gcc", "make": "make", "flex": "flex", "bison": "bison", "bc": "bc"}
HOST_HEADERS = {Path("/usr/include/gelf.h"): "libelf-dev"}  # objtool links libelf
# Kbuild run from `make test` must not inherit the outer make's jobserver.
# KCONFIG_CONFIG names zskit's own .config (a matrix hands it to its entries), and Kbuild
# reads the same variable as the kernel's: left in, syncconfig would rewrite the build's
# include/config/auto.conf from zskit's options.
MAKE_ENV_DROP = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "KCONFIG_CONFIG")
HEARTBEAT = 20.0  # seconds between "still building" lines when output is not streamed


@dataclass(frozen=True)
class Toolchain:
    """Where the kernel is built: the host, or a suite's root (commands chrooted there)."""

    ident: str  # the compiler's version text: part of the cache key
    make_vars: tuple[str, ...]  # e.g. CC=x86_64-linux-gnu-gcc-14, for every make
    root: toolchain.Root | None = None
    target: Target = HOST  # the machine it builds for (ARCH=, a cross compiler)

    def run(
        self,
        argv: Sequence[str | Path],
        progress: Progress,
        *,
        what: str,
        binds: Sequence[Path] = (),
        heartbeat: float | None = None,
    ) -> str:
        words = [str(a) for a in argv]
        if self.root is None:
            env = {k: v for k, v in os.environ.items() if k not in MAKE_ENV_DROP}
            return progress.run(
                words, env=env, what=what, stream=progress.verbose, heartbeat=heartbeat
            )
        return self.root.run(
            words, progress, what=what, binds=binds, stream=progress.verbose, heartbeat=heartbeat
        )


def host_toolchain(progress: Progress) -> Toolchain:
    """The host's gcc, after checking every build tool is installed."""
    missing = sorted(
        {pkg for prog, pkg in HOST_BUILD_TOOLS.items() if shutil.which(prog) is None}
        | {pkg for path, pkg in HOST_HEADERS.items() if not path.exists()}
    )
    if missing:
        raise StageError(
            f"building a kernel on the host needs {', '.join(missing)}: "
            f"`apt-get install {' '.join(missing)}` (or `make setup`)"
        )
    version = progress.run(["gcc", "--version"], what="asking gcc its version")
    return Toolchain(ident=f"host {version.splitlines()[0]}", make_vars=())


def cross_toolchain(target: Target, progress: Progress) -> Toolchain:
    """The host's cross gcc for another machine (Debian's crossbuild-essential-<arch>)."""
    host_toolchain(progress)  # make, flex, bison, bc, libelf for the host tools
    require_host_packages(target.host_packages, f"a {target.name} kernel", progress)
    cc = f"{target.triplet}-gcc"
    version = progress.run([cc, "--version"], what=f"asking {cc} its version")
    return Toolchain(
        ident=f"host {version.splitlines()[0]}", make_vars=target.make_vars, target=target
    )


def root_toolchain(
    distro: DebianSuiteKernel, cache: Path, progress: Progress, refresh: bool
) -> Toolchain:
    """The suite's root, with the kernel's build dependencies, and the compiler Debian used."""

    def packages(root: toolchain.Root) -> list[str]:
        return distro.root_packages(root, progress)

    try:
        root = toolchain.ensure_root(
            distro.suite, cache, progress, packages, refresh=refresh, extra=ROOT_BUILD_PACKAGES
        )
    except CommandError as e:
        raise StageError(
            f"the {distro.suite} toolchain root (debootstrap, the kernel's headers and the "
            f"build tools {', '.join(ROOT_BUILD_PACKAGES)}) failed: {e}\nCheck that the "
            f"host's apt sources reach a Debian archive serving {distro.suite}, then retry "
            f"with --refresh (or delete {cache / 'roots' / distro.suite})"
        ) from e
    # Debian's own kernel of the series names its compiler; build with the same one.
    configs = sorted(root.path.glob(f"usr/src/linux-headers-{distro.series}.*-amd64/.config"))
    text = config_value(configs[-1], "CC_VERSION_TEXT") if configs else None
    if not text:
        raise StageError(
            f"the {distro.suite} root at {root.path} has no linux-headers-{distro.series}.* "
            "to name its compiler; rerun with --refresh to rebuild it"
        )
    cc = text.split()[0]  # "x86_64-linux-gnu-gcc-14 (Debian 14.2.0-19) 14.2.0"
    if not root.host_path(f"/usr/bin/{cc}").exists():
        raise StageError(f"{cc} is missing from the {distro.suite} root; rerun with --refresh")
    make_vars = (f"CC={cc}", f"HOSTCC={cc}")
    return Toolchain(ident=f"{distro.suite} {text}", make_vars=make_vars, root=root)


def extra_targets(settings: dict[str, Setting]) -> list[str]:
    """["bzImage"] for a KASAN or KCSAN kernel, which cannot boot through PVH; else nothing.

    (A KCSAN vmlinux given to QEMU through PVH exits before its first console line
    too; the cause was not traced further.)

    The PVH entry (xen_prepare_pvh) runs before KASAN's shadow exists, and
    its hypervisor_cpuid_base() calls memcmp, which KASAN instruments: the
    first shadow access faults and QEMU exits without a console line. 6.1
    calls memcmp outright; 6.12 and 7.2 build the entry uninstrumented and
    write __builtin_memcmp, which gcc-14 still compiles to that call.
    """
    sanitized = [settings.get(name) for name in ("KASAN", "KCSAN")]
    return ["bzImage"] if any(s is not None and s.value == "y" for s in sanitized) else []


@dataclass(frozen=True)
class Kbuild:
    """make in one source tree with `O=` one output directory, with one toolchain.

    What a kernel built from linux-source-X (here) and one built from the user's own
    tree (tree.py) have in common: the configuration from fragments, checked, and the
    build whose failure names the compiler's errors.
    """

    srctree: Path  # make -C here
    out: Path  # O=
    tools: Toolchain
    what: str  # "Linux 6.1 (minimal)", as messages name the kernel
    binds: tuple[Path, ...] = ()  # host directories a toolchain root needs to see

    def make(self, progress: Progress, *targets: str, heartbeat: float | None = None) -> str:
        argv: list[str | Path] = ["make", "-C", self.srctree, f"O={self.out}"]
        if not self.tools.target.cross:  # a cross toolchain's make_vars say ARCH=
            argv.append(f"ARCH={self.tools.target.kbuild_arch}")
        argv += [*self.tools.make_vars, *targets]
        return self.tools.run(
            argv,
            progress,
            what=f"make {' '.join(targets)} for {self.what}",
            binds=self.binds,
            heartbeat=heartbeat,
        )

    def configure(
        self, settings: dict[str, Setting], files: Sequence[Path], progress: Progress
    ) -> None:
        """tinyconfig, the merged request appended, olddefconfig, every option checked."""
        names = ", ".join(p.name for p in files)
        progress.say(f"configuring {self.what}: tinyconfig + {names}")
        for line in fragments.overrides(settings):
            progress.say(line)
        self.make(progress, "tinyconfig")
        with (self.out / ".config").open("a") as f:  # later lines override tinyconfig's
            f.write("\n# zskit: the merged fragments\n" + fragments.text(settings))
        olddef = self.make(progress, "olddefconfig")
        self.check(settings, notes=_warnings(olddef))

    def check(self, settings: dict[str, Setting], notes: str = "") -> None:
        """Every requested option is in the .config (a rebuild may have rerun Kconfig)."""
        fragments.check(
            settings,
            self.out / ".config",
            self.srctree / "Kconfig",
            _kconfig_env(self.srctree, self.tools),
            f"{self.what} from {self.srctree}",
            notes=notes,
        )

    def build(self, targets: Sequence[str], staging: Path, progress: Progress, kept: str) -> str:
        """make the targets, then modules_install into `staging`; the kernel's release.

        A failure names the compiler's error lines (file:line: message) and ends with
        `kept`: what to do, and what is left for inspection.
        """
        jobs = os.cpu_count() or 1
        progress.say(f"building {self.what} with {self.tools.ident} (make -j{jobs})")
        try:
            self.make(progress, f"-j{jobs}", *targets, heartbeat=HEARTBEAT)
        except CommandError as e:
            errors = [
                line.strip()
                for line in e.output.splitlines()
                if " error: " in line or line.startswith(("make", "ERROR"))  # incl. fatal error
            ]
            raise StageError(
                f"building {self.what} failed in {self.out}:\n  "
                + "\n  ".join(errors[:20] or e.output.splitlines()[-20:])
                + f"\nThe whole log: rerun with -v. {kept}"
            ) from None
        self.make(progress, f"INSTALL_MOD_PATH={staging}", "modules_install")
        return (self.out / "include/config/kernel.release").read_text().strip()


@dataclass(frozen=True)
class SourceTree:
    version: str  # Debian version of linux-source-X
    path: Path  # the unpacked tree


@dataclass(frozen=True)
class SourceBuiltKernel:
    """A kernel of one series, built from Debian's linux-source-X with a variant's config."""

    series: str
    variant: str  # "minimal" or "debug"
    # The distribution kernel of the same series: its suite's root is the toolchain
    # (None for 6.1: the host's gcc-12) and its archive has the source.
    distro: DebianSuiteKernel | None = None
    # The config fragments merged onto tinyconfig, in order; default: the variant's.
    fragment_files: tuple[Path, ...] = ()
    # The machine: another than x86_64 is cross-built with the host's gcc and the source
    # of the host's suites (6.1, and 6.12 from bookworm-security).
    target: Target = HOST

    @property
    def zsmalloc_builtin(self) -> bool:
        return self.variant in ZSMALLOC_BUILTIN_VARIANTS

    def fragments(self) -> list[Path]:
        if self.fragment_files:
            return list(self.fragment_files)
        names = [*VARIANT_FRAGMENTS[self.variant], *MACHINE_FRAGMENTS.get(self.target.name, ())]
        return [CONFIGS / name for name in names]

    def provision(self, cache: Path, progress: Progress, refresh: bool = False) -> Kernel:
        settings = fragments.merge(self.fragments())  # a conflict stops before any work
        if self.target.cross:
            tools = cross_toolchain(self.target, progress)
        elif self.distro is None:
            tools = host_toolchain(progress)
        else:
            tools = root_toolchain(self.distro, cache, progress, refresh)
        tree = self._source(cache, tools, progress, refresh)
        request = fragments.text(settings)
        targets = self._extra_targets(settings)
        recipe: list[object] = [RECIPE, self.series, tree.version, tools.ident, targets, request]
        machine = ""
        if self.target.cross:
            recipe.append(self.target.name)
            machine = f"-{self.target.name}"
        key = hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:12]
        name = f"{self.series}-{self.variant}{machine}-{key}"
        top = cache / "built"
        if kernel := cached(top / name / "kernel.json", progress):
            return kernel
        with locked(cache / "locks" / f"built-{name}.lock"):
            if kernel := cached(top / name / "kernel.json", progress):
                return kernel
            return self._build(top / name, tree, tools, settings, progress)

    def _extra_targets(self, settings: dict[str, Setting]) -> list[str]:
        if self.target.kbuild_arch == "arm64":
            return ["Image"]  # what QEMU's virt machine boots
        if self.target.srcarch != "x86":
            return []  # pseries boots the ELF vmlinux
        return extra_targets(settings)

    # --- the source tree ------------------------------------------------------

    def _source(
        self, cache: Path, tools: Toolchain, progress: Progress, refresh: bool
    ) -> SourceTree:
        """The unpacked linux-source-X: the one recorded in the cache, else the archive's."""
        top = cache / "src" / self.series
        # A cross build takes the host's suites' source (6.12: bookworm-security's), which
        # another machine's record keeps apart from the x86_64 build's (trixie's).
        cross = self.target.cross
        record = top / (f"source-{self.target.name}.json" if cross else "source.json")
        with locked(cache / "locks" / f"src-{self.series}.lock"):
            if not refresh and (tree := _recorded(record)):
                return tree
            version = self._source_version(tools, progress)
            path = top / version / f"linux-source-{self.series}"
            if not (path / "Makefile").exists():
                self._unpack(cache, top / version, version, tools, progress)
            record.write_text(json.dumps({"version": version, "path": str(path)}) + "\n")
            return SourceTree(version, path)

    def _source_version(self, tools: Toolchain, progress: Progress) -> str:
        pkg = f"linux-source-{self.series}"
        if tools.root is None:
            found = apt_show([pkg], progress)
        else:
            found = tools.root.package_versions([pkg], progress)
        if pkg not in found:
            where = "host's" if tools.root is None else f"{tools.root.suite} root's"
            where = f"the {where} apt lists"
            raise StageError(
                f"{pkg} is not in {where}; run `apt-get update` (or --refresh) and retry"
            )
        return found[pkg]

    def _unpack(
        self, cache: Path, dest: Path, version: str, tools: Toolchain, progress: Progress
    ) -> None:
        pkg = f"linux-source-{self.series}"
        debs = cache / "src" / self.series / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        deb = debs / f"{pkg}_{version}_all.deb"
        # The distribution 6.1's provisioning keeps the same package.
        kept = cache / "debian" / self.series / "debs" / version / deb.name
        if not deb.exists() and kept.exists():
            try:
                os.link(kept, deb)  # no second copy of 140 MB
            except OSError:
                shutil.copyfile(kept, deb)
        if not deb.exists():
            progress.say(f"downloading {pkg} ({version})")
            if tools.root is None:
                toolchain.host_apt_get(
                    ["download", f"{pkg}={version}"],
                    progress,
                    what=f"downloading {pkg} ({version})",
                    cwd=debs,
                )
            else:
                inside = tools.root.host_path(f"/var/tmp/zskit-{pkg}")
                shutil.rmtree(inside, ignore_errors=True)
                inside.mkdir(parents=True)
                try:
                    tools.root.apt_get(
                        ["download", f"{pkg}={version}"],
                        progress,
                        what=f"downloading {pkg}",
                        cwd=str(tools.root.inside_path(inside)),
                    )
                    (got,) = inside.glob(f"{pkg}_*.deb")
                    shutil.move(got, deb)
                finally:
                    shutil.rmtree(inside, ignore_errors=True)
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        progress.say(f"unpacking {deb.name} into {dest}")
        # The package holds one tarball; stream it out rather than writing it to disk.
        script = 'dpkg-deb --fsys-tarfile "$1" | tar -xO "./usr/src/$2.tar.xz" | tar -xJ -C "$3"'
        progress.run(["sh", "-ec", script, "unpack", deb, pkg, tmp], what=f"unpacking {deb.name}")
        if not (tmp / pkg / "Makefile").exists():
            raise StageError(f"{deb} holds no {pkg} tree; delete it and retry")
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)

    # --- configure and build --------------------------------------------------

    def _build(
        self,
        dest: Path,
        tree: SourceTree,
        tools: Toolchain,
        settings: dict[str, Setting],
        progress: Progress,
    ) -> Kernel:
        what = f"Linux {self.series} ({self.variant})"
        tmp = dest.with_name(dest.name + ".tmp")
        toolchain.remove_tree(tmp)
        out = tmp / "build"
        out.mkdir(parents=True)
        kbuild = Kbuild(tree.path, out, tools, what, binds=(tree.path, tmp))
        (tmp / "request.config").write_text(fragments.text(settings))
        kbuild.configure(settings, self.fragments(), progress)
        # QEMU boots vmlinux through its PVH note: nothing to compress, no decompressor.
        image = {"bzImage": "arch/x86/boot/bzImage", "Image": "arch/arm64/boot/Image"}.get(
            next(iter(self._extra_targets(settings)), ""), "vmlinux"
        )
        release = kbuild.build(
            ["vmlinux", "modules", *self._extra_targets(settings)],
            tmp / "staging",
            progress,
            kept=f"A fragment change (qemu/configs/) or another toolchain may be needed; "
            f"{tmp} is kept for inspection",
        )
        announce(release, self.variant, out, progress)
        toolchain.remove_tree(dest)
        tmp.rename(dest)
        _rehome(dest / "build" / "Makefile", tmp, dest)
        kernel = built_kernel(
            self.series, self.variant, tree.version, dest, tree.path, tools, release, image
        )
        if not kernel.is_complete():
            raise StageError(f"the build of {what} in {dest} lacks vmlinux; delete it and retry")
        kernel.save(dest / "kernel.json")
        # Builds of this kernel and variant under an older key (another source version,
        # fragment or compiler), and failed builds kept for inspection: replaced by this one.
        for old in dest.parent.glob(f"{self.series}-{self.variant}-*"):
            if old.is_dir() and old != dest:
                toolchain.remove_tree(old)
        return kernel


def announce(release: str, variant: str, out: Path, progress: Progress) -> None:
    chain = config_value(out / ".config", "ZSMALLOC_CHAIN_SIZE")
    progress.say(
        f"built Linux {release} ({variant})" + (f", ZSMALLOC_CHAIN_SIZE={chain}" if chain else "")
    )


def built_kernel(
    series: str,
    variant: str,
    version: str,
    top: Path,
    source: Path,
    tools: Toolchain,
    release: str,
    boots: str,  # the image QEMU boots, in the build tree: vmlinux, arch/x86/boot/bzImage
) -> Kernel:
    """The kernel built in `top`: `build/` the O= tree, `staging/` its installed modules."""
    image = top / "build" / boots
    return Kernel(
        series=series,
        release=release,
        package_version=version,
        vmlinuz=image,
        boot_image=image,
        kdir=top / "build",
        modules=top / "staging" / "lib" / "modules" / release,
        source=source,
        toolchain=tools.root.path if tools.root else None,
        variant=variant,
        make_vars=tools.make_vars,
        arch=tools.target.name,
    )


def _rehome(makefile: Path, old: Path, new: Path) -> None:
    """Point the O= tree's generated Makefile at the tree's final name.

    Kbuild works from its current directory, but since 6.x the Makefile that
    `O=` writes names the tree (`export KBUILD_OUTPUT = ...`), and module builds
    against the tree go through it. (Other files with the old path, objtool's
    .cmd files, only matter to a rebuild of the kernel, which a changed config
    does in a new directory.)
    """
    text = makefile.read_text()
    makefile.write_text(text.replace(f"{old}/", f"{new}/"))


def _recorded(record: Path) -> SourceTree | None:
    try:
        data = json.loads(record.read_text())
        tree = SourceTree(data["version"], Path(data["path"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return tree if (tree.path / "Makefile").exists() else None


def _kconfig_env(srctree: Path, tools: Toolchain) -> dict[str, str]:
    """What the kernel's Kconfig expects in the environment (as the top Makefile exports it)."""
    cc = next((v.split("=", 1)[1] for v in tools.make_vars if v.startswith("CC=")), tools.target.cc)
    if shutil.which(cc) is None:  # the root's compiler: the host's stands in for kconfiglib
        cc = "gcc"
    return {
        "srctree": str(srctree),
        "ARCH": tools.target.kbuild_arch,
        "SRCARCH": tools.target.srcarch,
        "CC": cc,
        "HOSTCC": "gcc",
        "LD": "ld",
        "HOSTCXX": "g++",
        "KERNELVERSION": "zskit",
    }


def _warnings(output: str) -> str:
    """Kconfig's own warnings from olddefconfig, appended to an error when there are any."""
    lines = [ln.strip() for ln in output.splitlines() if "WARNING" in ln or "warning:" in ln]
    lines = [ln for ln in lines if "override: reassigning" not in ln and "changes choice" not in ln]
    return "" if not lines else "olddefconfig said:\n  " + "\n  ".join(lines[:10])
