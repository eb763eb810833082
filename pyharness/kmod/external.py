"""An external test module (the user's C), built against the allocator under test.

`zskit run --module FILE.c|DIR` takes a module zskit did not write, such as the zsmalloc
maintainer's zsmalloc_test, whose module_init runs a whole test and prints its results.
The user's files are only read: a single .c file is copied into a build directory with a
generated Kbuild (`obj-m := NAME.o`); a directory (with its own Kbuild or Makefile) is
copied as it is, without build products. Kbuild runs on the copy against the kernel, with
the allocator's Module.symvers as KBUILD_EXTRA_SYMBOLS, so the module's `zs_*` calls
resolve to the zsmalloc.ko zskit loads rather than to a module it never sees. After the
build, the module's undefined symbols say whether it links against the allocator at all.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..kernel.manifest import Kernel
from ..progress import CommandError, Progress, StageError
from . import build
from .render import RenderedSources

# What Kbuild accepts as a module name (it becomes a C identifier with - as _).
MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
# A module parameter as insmod takes it: name=value, or a bare name (a bool set to true).
MODULE_ARG = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*(=.*)?$")
KBUILD_FILES = ("Kbuild", "Makefile")
# gcc's words for a call that does not fit the kernel's zsmalloc.h (quotes per locale).
API_MISMATCH = re.compile(
    r"(implicit declaration of function|too (many|few) arguments to function) [‘'`\"]zs_"
)
# Build products in a user's directory that a copy must not carry (they may belong to
# another kernel, and a copied .o newer than its .c would look up to date to make).
PRODUCT_SUFFIXES = (".o", ".ko", ".mod", ".mod.c", ".a", ".order", ".symvers", ".cmd", ".d")
PRODUCT_DIRS = (".git", ".tmp_versions")


@dataclass(frozen=True)
class ModuleSource:
    """The user's module: one .c file or a directory with its own Kbuild/Makefile."""

    path: Path  # absolute
    name: str  # the module's name for a file; the directory's name for a directory

    @property
    def is_file(self) -> bool:
        return self.path.suffix == ".c"


@dataclass(frozen=True)
class BuiltModule:
    source: ModuleSource
    directory: Path  # the build copy
    modules: tuple[Path, ...]  # the .ko files, in Kbuild's order (modules.order)
    warnings: tuple[str, ...]
    files: tuple[Path, ...]  # the source files built (for the results' sources/)
    exports: frozenset[str]  # what the allocator under test exports
    undefined: dict[str, frozenset[str]]  # per module name, the symbols it imports

    def allocator_calls(self, name: str) -> tuple[str, ...]:
        """The allocator's exports the module calls (none: it does not test the allocator)."""
        return tuple(sorted(self.undefined.get(name, frozenset()) & self.exports))

    def other_zs_calls(self, name: str) -> tuple[str, ...]:
        """zs_* names it calls that the allocator under test does not export (they resolve
        to another zsmalloc, such as the kernel's built-in one beside our prefixed one)."""
        return tuple(
            sorted(
                s
                for s in self.undefined.get(name, ())
                if s.startswith("zs_") and s not in self.exports
            )
        )


def check_source(path: Path, reserved: Sequence[str] = ()) -> ModuleSource:
    """The module the user named, checked before any kernel is provisioned.

    `reserved` names modules zskit itself loads (zsmalloc, zstest): a test module of the
    same name could never be inserted beside them."""
    if not path.exists():
        raise StageError(f"--module {path}: no such file or directory")
    path = path.resolve()
    if path.is_dir():
        if not any((path / name).is_file() for name in KBUILD_FILES):
            raise StageError(
                f"--module {path}: the directory has neither a Kbuild nor a Makefile; "
                "give the module's .c file instead (zskit writes its Kbuild), or add a "
                "Kbuild with `obj-m := NAME.o`"
            )
        return ModuleSource(path, path.name)
    if path.suffix != ".c":
        raise StageError(
            f"--module {path}: not a C file; give a module's .c file or a directory "
            "with a Kbuild or Makefile"
        )
    name = path.stem
    if not MODULE_NAME.match(name):
        raise StageError(
            f"--module {path}: {name!r} cannot name a kernel module (letters, digits, _ "
            "and -, not starting with a digit); rename the file"
        )
    check_name(name, reserved, path)
    return ModuleSource(path, name)


def check_name(name: str, reserved: Sequence[str], path: Path) -> None:
    canonical = name.replace("-", "_")
    if canonical in {r.replace("-", "_") for r in reserved}:
        raise StageError(
            f"--module {path}: module {name!r} has the name of a module zskit loads "
            f"({', '.join(reserved)}); rename it"
        )


def parse_module_args(text: str | None) -> tuple[str, ...]:
    """--module-args "a=1 b='x y'" as insmod's arguments; a bad one is a clear error."""
    if not text:
        return ()
    try:
        args = tuple(shlex.split(text))
    except ValueError as e:
        raise StageError(f"--module-args {text!r}: {e}") from None
    for arg in args:
        if not MODULE_ARG.match(arg):
            raise StageError(
                f"--module-args: {arg!r} is not a module parameter; write NAME=VALUE "
                '(e.g. --module-args "num_threads=2 num_ops=1000")'
            )
    return args


def generated_kbuild(name: str) -> str:
    """The Kbuild of a module built from the single file NAME.c."""
    return f"# Generated by zskit for an external module built from one file.\nobj-m := {name}.o\n"


def is_product(relative: Path) -> bool:
    """Whether a path in the user's directory is a build product, not a source."""
    if any(part in PRODUCT_DIRS for part in relative.parts[:-1]):
        return True
    name = relative.name
    return name.endswith(PRODUCT_SUFFIXES) or name in PRODUCT_DIRS or name == "modules.order"


def _write_if_changed(path: Path, data: bytes) -> None:
    """Unchanged files keep their time stamps, so Kbuild's rebuild stays incremental."""
    if path.exists() and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def stage(source: ModuleSource, dest: Path) -> tuple[Path, ...]:
    """Copy the module's sources into dest (never the other way); return the files copied.

    A source file no longer in the user's tree is removed from the copy; Kbuild's products
    in the copy stay, so an unchanged module is not rebuilt."""
    dest.mkdir(parents=True, exist_ok=True)
    wanted: dict[Path, bytes] = {}
    if source.is_file:
        wanted[Path(source.path.name)] = source.path.read_bytes()
        wanted[Path("Kbuild")] = generated_kbuild(source.name).encode()
    else:
        for path in sorted(source.path.rglob("*")):
            relative = path.relative_to(source.path)
            if path.is_file() and not is_product(relative):
                wanted[relative] = path.read_bytes()
    for path in sorted(dest.rglob("*")):
        relative = path.relative_to(dest)
        if path.is_file() and not is_product(relative) and relative not in wanted:
            path.unlink()
    for relative, data in wanted.items():
        _write_if_changed(dest / relative, data)
    return tuple(dest / relative for relative in wanted)


def modules_in_order(directory: Path) -> tuple[Path, ...]:
    """The .ko files Kbuild built in directory, in its modules.order (NAME.ko, or NAME.o
    since 6.2), else every .ko found, by name."""
    order = directory / "modules.order"
    found: list[Path] = []
    if order.exists():
        for line in order.read_text().splitlines():
            line = line.strip()
            if line:
                ko = directory / (line[: -len(".o")] + ".ko" if line.endswith(".o") else line)
                found.append(ko)
    if not found:
        found = sorted(directory.rglob("*.ko"))
    return tuple(found)


def symvers_exports(symvers: Path, module: str | None) -> set[str]:
    """Symbols a Module.symvers exports: those of the module named (its last path part),
    or vmlinux's when module is None."""
    exports: set[str] = set()
    if not symvers.exists():
        return exports
    for line in symvers.read_text(errors="replace").splitlines():
        fields = line.split("\t")
        if len(fields) < 3:
            continue
        owner = fields[2].rsplit("/", 1)[-1]
        if (module is None and owner == "vmlinux") or owner == module:
            exports.add(fields[1])
    return exports


def undefined_symbols(ko: Path, progress: Progress) -> set[str]:
    """The symbols a module file leaves to the kernel or other modules (`nm -u`)."""
    try:
        output = progress.run(["nm", "-u", ko], what=f"reading the symbols of {ko.name}")
    except CommandError:
        return set()
    return {line.split()[-1] for line in output.splitlines() if line.split()}


def allocator_exports(kernel: Kernel, sources: RenderedSources) -> set[str]:
    """What the allocator under test exports: the zsmalloc module zskit built (its
    Module.symvers), or the zs_* of vmlinux when the allocator is the built-in one."""
    allocators = [m for m in sources.modules if m != "zstest"]
    if not allocators:
        exports = symvers_exports(kernel.kdir / "Module.symvers", None)
        return {s for s in exports if s.startswith("zs_")}
    symvers = sources.directory / "Module.symvers"
    return set().union(*(symvers_exports(symvers, m) for m in allocators))


def build_module(
    kernel: Kernel,
    allocator: RenderedSources,
    source: ModuleSource,
    dest: Path,
    progress: Progress,
) -> BuiltModule:
    """Copy the module to dest and build it there against the allocator's symbols."""
    files = stage(source, dest)
    symvers = allocator.directory / "Module.symvers"
    extra = [symvers] if symvers.exists() else []
    copy = RenderedSources(dest, files, modules=())
    try:
        result = build.build(kernel, copy, progress, extra_symbols=extra)
    except StageError as e:
        hint = ""
        if API_MISMATCH.search(str(e)):
            hint = (
                f"\n(the module calls a zsmalloc API that Linux {kernel.series} does not have: "
                "its zs_* functions are declared in the kernel's include/linux/zsmalloc.h; "
                "run the module on a kernel of its API, or adapt it)"
            )
        raise StageError(f"{source.path}: {e}{hint}") from None
    modules = modules_in_order(dest)
    missing = [ko for ko in modules if not ko.exists()]
    if not modules or missing:
        raise StageError(
            f"{source.path}: make succeeded but built no module"
            + (f" ({', '.join(str(m) for m in missing)} missing)" if missing else "")
            + "; does its Kbuild set obj-m?"
        )
    reserved = allocator.modules
    for ko in modules:
        check_name(ko.stem, reserved, source.path)
    exports = frozenset(allocator_exports(kernel, allocator))
    undefined = {ko.stem: frozenset(undefined_symbols(ko, progress)) for ko in modules}
    return BuiltModule(source, dest, modules, result.warnings, files, exports, undefined)
