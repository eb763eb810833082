"""Building: zsmalloc.ko and zstest.ko (and zram.ko, zswap.o) against the patched sources,
in warm Kbuild directories, built modules kept by content."""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ...guest import clients
from ...kernel.manifest import Kernel
from ...kmod import build, render
from ...paths import BUILD
from ...progress import Progress, StageError
from .plan import Plan
from .pristine import BUILT

WORK = BUILD / "validate"
OBJS_KEPT = 200  # built states kept by content (about 100 KiB each)


@dataclass(frozen=True)
class Built:
    ok: bool
    key: str  # hash of everything built; equal keys are equal modules
    modules: tuple[Path, ...] = ()  # zsmalloc.ko, zstest.ko[, zram.ko] (debug info stripped)
    warnings: tuple[str, ...] = ()
    error: str | None = None
    seconds: float = 0.0
    cached: bool = False
    sources: tuple[Path, ...] = ()  # the files built, as saved in the results
    zswap: str = ""  # "": not compiled; "ok"; else the compile errors of zswap.o

    def module(self, name: str) -> Path | None:
        return next((m for m in self.modules if m.name == f"{name}.ko"), None)


def warning_key(warning: str) -> str:
    """A warning without its line and column, which a patch moves."""
    return re.sub(r"^([^:\s]+):\d+(?::\d+)?:", r"\1:", warning)


def new_warnings(base: Sequence[str], step: Sequence[str]) -> list[str]:
    """The step's warnings that the base does not have (as many times)."""
    left = Counter(warning_key(w) for w in base)
    found: list[str] = []
    for w in dict.fromkeys(step):
        if left[warning_key(w)] > 0:
            left[warning_key(w)] -= 1
        else:
            found.append(w)
    return found


def _strip(src: Path, dest: Path) -> None:
    """A module without debug info: a tenth of the size in the initramfs, same code."""
    if shutil.which("strip"):
        proc = subprocess.run(["strip", "--strip-debug", "-o", str(dest), str(src)])
        if proc.returncode == 0:
            return
    shutil.copy2(src, dest)


SOURCE_FILES = re.compile(r"(\.[ch]|/Makefile|/Kbuild|/Kconfig)$")


def _sync(directory: Path, files: dict[Path, bytes], managed: Sequence[Path]) -> None:
    """Write the files whose content changed (the others keep their mtime: Kbuild stays
    warm) and delete sources a previous state left in the managed subdirectories."""
    for path, data in files.items():
        if not (path.exists() and path.read_bytes() == data):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    for sub in managed:
        if not sub.is_dir():
            continue
        for old in sub.rglob("*"):
            if old.is_file() and old not in files and SOURCE_FILES.search(old.as_posix()):
                old.unlink()


class Builder:
    """Builds the base and each step in warm Kbuild directories; modules are kept by content."""

    def __init__(
        self,
        kernel: Kernel,
        rendered: render.RenderedSources,
        work: Path,
        plan: Plan,
        pristine: dict[str, bytes | None],
    ) -> None:
        self.kernel = kernel
        self.work = work
        self.plan = plan
        self.pristine = pristine
        self.zstest = (rendered.directory / "zstest.c").read_bytes()
        self.kbuild = (rendered.directory / "Kbuild").read_bytes()

    def key(self, contents: dict[str, bytes | None]) -> str:
        digest = hashlib.sha256(self.kernel.release.encode() + str(self.kernel.kdir).encode())
        if self.plan.zswap_kernel is not None:
            digest.update(str(self.plan.zswap_kernel.kdir).encode())
        for part in (self.zstest, self.kbuild):
            digest.update(hashlib.sha256(part).digest())
        for path in self.plan.paths:
            data = contents.get(path)
            digest.update(path.encode() + b"\0")
            digest.update(hashlib.sha256(data if data is not None else b"\0deleted").digest())
        return digest.hexdigest()[:20]

    def _overlay(self, directory: Path, contents: dict[str, bytes | None]) -> dict[Path, bytes]:
        return {
            directory / path: data
            for path in self.plan.overlay
            if (data := contents.get(path)) is not None
        }

    def _flags(self, directory: Path) -> bytes:
        # NOSTDINC_FLAGS comes before the kernel's own -I in Kbuild's command line: the
        # patched headers are seen instead of the kernel's.
        inc = directory / "include"
        return f"NOSTDINC_FLAGS += -I{inc} -I{inc / 'uapi'}\n".encode()

    def _compose(self, directory: Path, contents: dict[str, bytes | None]) -> tuple[str, ...]:
        """The rendered driver and Kbuild, the patched sources; the module names."""
        kbuild = self.kbuild + self._flags(directory)
        modules = ["zsmalloc", "zstest"]
        if self.plan.zram:
            kbuild += b"obj-m += zram/\n"
            modules.append(clients.ZRAM_MODULE)
        files = {directory / "zstest.c": self.zstest, directory / "Kbuild": kbuild}
        for path in self.plan.sources:
            if (data := contents.get(path)) is not None:
                files[directory / posixpath.basename(path)] = data
        files.update(self._overlay(directory, contents))
        for path in self.plan.zram:
            if (data := contents.get(path)) is not None:
                files[directory / "zram" / posixpath.basename(path)] = data
        _sync(directory, files, [directory / "include", directory / "zram"])
        return tuple(modules)

    def _changed(self, contents: dict[str, bytes | None], paths: Iterable[str]) -> bool:
        return any(contents.get(p) != self.pristine.get(p) for p in paths)

    def _zswap(self, name: str, contents: dict[str, bytes | None], log: Progress) -> Built:
        """zswap.o compiled against the plan's zswap kernel (only errors and warnings count)."""
        kernel = self.plan.zswap_kernel
        assert kernel is not None
        directory = self.work / f"{name}-zswap"
        files = {directory / "Kbuild": b"obj-y += zswap.o\n" + self._flags(directory)}
        for path in self.plan.zswap:
            if (data := contents.get(path)) is not None:
                files[directory / posixpath.basename(path)] = data
        files.update(self._overlay(directory, contents))
        directory.mkdir(parents=True, exist_ok=True)
        _sync(directory, files, [directory / "include"])
        (directory / "zswap.o").unlink(missing_ok=True)
        sources = render.RenderedSources(directory, tuple(files), ())
        try:
            result = build.build(kernel, sources, log, targets=("zswap.o",))
        except StageError as e:
            return Built(False, "", error=str(e).removeprefix("build failed:\n").strip())
        return Built(True, "", warnings=result.warnings)

    def build(self, name: str, contents: dict[str, bytes | None], out: Path) -> Built:
        """Build one state; `out` receives the sources and the build log."""
        start = time.monotonic()
        key = self.key(contents)
        saved = out / "sources"
        saved.mkdir(parents=True, exist_ok=True)
        sources = []
        for path in self.plan.paths:
            data = contents.get(path)
            if data is not None:
                (saved / path).parent.mkdir(parents=True, exist_ok=True)
                (saved / path).write_bytes(data)
                sources.append(saved / path)
        for fname, data in (("zstest.c", self.zstest), ("Kbuild", self.kbuild)):
            (saved / fname).write_bytes(data)
            sources.append(saved / fname)
        store = self.work / "objs" / key
        if (store / "build.json").exists():
            doc = json.loads((store / "build.json").read_text())
            modules = tuple(store / f for f in doc.get("modules", []))
            if modules and all(m.exists() for m in modules):
                (store / "build.json").touch()  # recently used: kept by prune()
                recorded = tuple(doc["warnings"])  # by the build that made the modules
                seconds = time.monotonic() - start
                return Built(
                    True,
                    key,
                    modules,
                    recorded,
                    None,
                    seconds,
                    True,
                    tuple(sources),
                    doc.get("zswap", ""),
                )
        deleted = [p for p in BUILT if contents.get(p) is None]
        if deleted:
            error = f"the patch deletes {', '.join(deleted)}, which zskit builds"
            return Built(False, key, error=error, sources=tuple(sources))
        directory = self.work / name
        names = self._compose(directory, contents)
        # Kbuild prints a file's warnings only when it compiles it: compile what may differ.
        (directory / "zsmalloc.o").unlink(missing_ok=True)
        headers = self._changed(contents, self.plan.overlay)
        if name == "base" or headers:
            (directory / "zstest.o").unlink(missing_ok=True)
        if name == "base" or headers or self._changed(contents, self.plan.zram):
            for obj in (directory / "zram").glob("*.o"):
                obj.unlink()
        rendered = render.RenderedSources(directory, (), names)
        with (out / "build.log").open("w") as log:
            progress = Progress(out=log)
            try:
                result = build.build(self.kernel, rendered, progress)
            except StageError as e:
                log.write(f"{e}\n")
                message = str(e).removeprefix("build failed:\n").strip()
                return Built(False, key, error=message, seconds=time.monotonic() - start)
            warnings = list(result.warnings)
            zswap = ""
            if self.plan.zswap:
                compiled = self._zswap(name, contents, progress)
                zswap = "ok" if compiled.ok else compiled.error or "failed"
                warnings += compiled.warnings
                if not compiled.ok:
                    log.write(f"zswap.o: {zswap}\n")
        part = store.with_name(f"{key}.part-{os.getpid()}")
        shutil.rmtree(part, ignore_errors=True)
        part.mkdir(parents=True)
        for ko in result.modules:
            _strip(ko, part / ko.name)
        doc = {"modules": [ko.name for ko in result.modules], "warnings": warnings, "zswap": zswap}
        (part / "build.json").write_text(json.dumps(doc) + "\n")
        shutil.rmtree(store, ignore_errors=True)
        part.rename(store)
        modules = tuple(store / ko.name for ko in result.modules)
        seconds = time.monotonic() - start
        return Built(
            True, key, modules, tuple(warnings), None, seconds, False, tuple(sources), zswap
        )

    def prune(self, keep: int = OBJS_KEPT) -> None:
        """Forget all but the most recently used built states."""
        stores = sorted(
            (d for d in (self.work / "objs").glob("*") if (d / "build.json").exists()),
            key=lambda d: (d / "build.json").stat().st_mtime,
            reverse=True,
        )
        for old in stores[keep:]:
            shutil.rmtree(old, ignore_errors=True)
