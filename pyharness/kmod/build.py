"""Build the rendered modules with Kbuild against the provisioned kernel.

`make -C KDIR M=DIR modules` with the kernel's own flags, on the host or,
when the kernel needs its own compiler, chrooted in its toolchain root with
DIR bind-mounted at the same path (so Kbuild's dependency files stay valid
across builds). Compiler warnings are collected and shown; a failed build raises with each error as
file:line and the compiler's message, not a wall of make output.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..kernel.manifest import Kernel
from ..kernel.toolchain import Root
from ..progress import CommandError, Progress, StageError
from .render import RenderedSources

# gcc: "path/file.c:12:5: warning: text [-Wflag]"
DIAGNOSTIC = re.compile(
    r"^(?P<loc>[^\s:]+:\d+(?::\d+)?): (?:fatal )?(?P<kind>warning|error): (?P<msg>.*)$"
)
# modpost and ld report problems without a source location.
LINK_ERROR = re.compile(r"^(ERROR|WARNING): modpost: .*$")


@dataclass(frozen=True)
class BuildResult:
    modules: tuple[Path, ...]  # .ko files in load order
    warnings: tuple[str, ...]


def diagnostics(output: str, kind: str) -> list[str]:
    """'file:line:col: message' for each compiler diagnostic of this kind, plus modpost's."""
    found: list[str] = []
    for line in output.splitlines():
        m = DIAGNOSTIC.match(line.strip())
        if m and m["kind"] == kind:
            found.append(f"{os.path.basename(m['loc'])}: {m['msg']}")
        elif LINK_ERROR.match(line.strip()) and line.startswith(kind.upper()):
            found.append(line.strip())
    return found


def dependencies(directory: Path, module: str, kdir: Path) -> list[Path]:
    """The files Kbuild's last build of `module` read (its .o.cmd), as host paths:
    the source and every header; an absent .cmd (never built) gives none."""
    cmd = directory / f".{module}.o.cmd"
    try:
        text = cmd.read_text(errors="replace")
    except OSError:
        return []
    found: list[Path] = []
    for line in text.splitlines():
        if line.startswith("source_"):
            found.append(Path(line.partition(":=")[2].strip()))
        elif line.startswith("  ") and "$(wildcard" not in line:
            name = line.strip().removesuffix("\\").strip()
            if name:
                found.append(Path(name) if name.startswith("/") else kdir / name)
    return found


def build(
    kernel: Kernel,
    sources: RenderedSources,
    progress: Progress,
    targets: Sequence[str] = ("modules",),
    extra_symbols: Sequence[Path] = (),  # Module.symvers of modules built elsewhere
) -> BuildResult:
    """Kbuild's `targets` in the sources' directory (an object file: a compile check).

    `extra_symbols` (KBUILD_EXTRA_SYMBOLS) resolves the exports of modules built in other
    directories, such as the allocator an external test module links against."""
    jobs = str(os.cpu_count() or 1)
    what = "building the modules" if tuple(targets) == ("modules",) else f"building {targets[0]}"
    extra = [f"KBUILD_EXTRA_SYMBOLS={' '.join(map(str, extra_symbols))}"] if extra_symbols else []
    try:
        args = [f"M={sources.directory}", f"-j{jobs}", *kernel.make_vars, *extra, *targets]
        if kernel.toolchain is None:
            output = progress.run(
                ["make", "-C", kernel.kdir, *args], what=what, stream=progress.verbose
            )
        else:
            root = Root(kernel.toolchain, suite=kernel.toolchain.name)
            binds = [sources.directory, *(path.parent for path in extra_symbols)]
            if kernel.kdir.is_relative_to(root.path):  # a distro kernel's headers package
                kdir = root.inside_path(kernel.kdir)
            else:  # a source-built tree in the cache: it and its source, at their own paths
                kdir = PurePosixPath(kernel.kdir)
                binds += [kernel.kdir, kernel.source]
            cmd: list[str | PurePosixPath] = ["make", "-C", kdir, *args]
            output = root.run(cmd, progress, what=what, binds=binds, stream=progress.verbose)
    except CommandError as e:
        errors = diagnostics(e.output, "error")
        if errors:
            raise StageError("build failed:\n  " + "\n  ".join(errors)) from None
        raise
    warnings = tuple(diagnostics(output, "warning"))
    for w in warnings:
        progress.say(f"warning: {w}")
    modules = tuple(sources.directory / f"{name}.ko" for name in sources.modules)
    for ko in modules:
        if not ko.exists():
            raise StageError(f"make succeeded but {ko} is missing; see the output with -v")
    return BuildResult(modules=modules, warnings=warnings)
