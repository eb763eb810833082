"""Build the rendered modules with Kbuild against the provisioned kernel.

`make -C KDIR M=DIR modules` with the kernel's own flags, on the host or,
when the kernel needs its own compiler, chrooted in its toolchain root with
DIR bind-mounted at the same path (so Kbuild's dependency files stay valid
across builds). Compiler warnings are collected and shown; a failed build raises with each error as
file:line and the compiler's message, not a wall of make output.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..kernel.manifest import Kernel
from ..kernel.toolchain import Root
from ..locking import locked
from ..progress import CommandError, Progress, StageError
from .render import RenderedSources

# gcc: "path/file.c:12:5: warning: text [-Wflag]"
DIAGNOSTIC = re.compile(
    r"^(?P<loc>[^\s:]+:\d+(?::\d+)?): (?:fatal )?(?P<kind>warning|error): (?P<msg>.*)$"
)
# modpost and ld report problems without a source location.
LINK_ERROR = re.compile(r"^(ERROR|WARNING): modpost: .*$")
STAMP = ".zskit-build.json"  # the last build's make arguments, inputs and warnings


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
    names = [line.partition(":=")[2] for line in text.splitlines() if line.startswith("source_")]
    names += [line for line in text.splitlines() if line.startswith("  ")]
    found: list[Path] = []
    for line in names:
        name = line.strip().removesuffix("\\").strip()
        if name and "$(wildcard" not in name:
            found.append(_relative_to(Path(name), directory, kdir))
    return found


def _relative_to(path: Path, directory: Path, kdir: Path) -> Path:
    # Kbuild runs in KDIR, or from 6.13 in the module's directory: a relative name is
    # the module's own file when there is one.
    if path.is_absolute():
        return path
    return directory / path if (directory / path).exists() else kdir / path


def _inputs(
    kernel: Kernel, sources: RenderedSources, extra_symbols: Sequence[Path]
) -> dict[str, list[str]] | None:
    """What the build of each module read, as host paths: its dependencies (those of a
    toolchain root under the root), the Kbuild file, the symbol tables. None when Kbuild
    left no dependency list of a module to read."""
    root = Root(kernel.toolchain, suite="") if kernel.toolchain is not None else None
    own = (sources.directory, kernel.kdir, kernel.source)
    common = [sources.directory / "Kbuild", kernel.kdir / "Module.symvers", *extra_symbols]
    found: dict[str, list[str]] = {}
    for name in sources.modules:
        deps = dependencies(sources.directory, name, kernel.kdir)
        if not deps:
            return None
        if root is not None:
            deps = [
                d if any(d.is_relative_to(o) for o in own) else root.host_path(PurePosixPath(d))
                for d in deps
            ]
        found[name] = sorted({str(d) for d in (*common, *deps)})
    return found


def _stamp_key(args: Sequence[str], kernel: Kernel) -> str:
    return hashlib.sha256(
        "\0".join((*args, str(kernel.kdir), str(kernel.toolchain))).encode()
    ).hexdigest()


def _up_to_date(stamp: Path, key: str, directory: Path) -> tuple[str, ...] | None:
    """The last build's warnings when nothing a module's build read is newer than the
    module (make's own rule, without make's 1.4 s of looking); None: build."""
    try:
        data = json.loads(stamp.read_text())
        if data["key"] != key:
            return None
        for name, inputs in data["inputs"].items():
            built = (directory / f"{name}.ko").stat().st_mtime_ns
            if any(Path(p).stat().st_mtime_ns > built for p in inputs):
                return None
        return tuple(data["warnings"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


@contextmanager
def building(directory: Path, progress: Progress) -> Iterator[None]:
    """Hold a build directory from its render to the image made of its modules: another
    zskit of the same target (other choices of ours, say) waits, so that neither boots
    modules the other rendered."""
    with locked(
        directory.with_name(directory.name + ".lock"),
        lambda: progress.say(f"waiting for another zskit building in {directory}"),
    ):
        yield


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
    args = [f"M={sources.directory}", f"-j{jobs}", *kernel.make_vars, *extra, *targets]
    modules = tuple(sources.directory / f"{name}.ko" for name in sources.modules)
    stamp, key = sources.directory / STAMP, _stamp_key(args, kernel)
    modules_only = tuple(targets) == ("modules",)
    if modules_only and (warnings := _up_to_date(stamp, key, sources.directory)) is not None:
        progress.detail(f"{sources.directory}: nothing changed since its last build")
        for w in warnings:
            progress.say(f"warning: {w}")
        return BuildResult(modules=modules, warnings=warnings)
    stamp.unlink(missing_ok=True)
    try:
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
    for ko in modules:
        if not ko.exists():
            raise StageError(f"make succeeded but {ko} is missing; see the output with -v")
    inputs = _inputs(kernel, sources, extra_symbols) if modules_only else None
    if inputs is not None:
        stamp.write_text(json.dumps({"key": key, "inputs": inputs, "warnings": warnings}))
    return BuildResult(modules=modules, warnings=warnings)
