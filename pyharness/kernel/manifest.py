"""A provisioned kernel: what every later stage needs of it, as paths in the cache.

Every way of getting a kernel (Debian's packages, a source build) ends in a
`Kernel`, saved as `kernel.json` last: its presence means the cache entry is
complete, and a warm cache needs no network.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from ..progress import Progress
from . import toolchain
from .arch import TARGETS, Target
from .identity import HOST_ARCH


@dataclass(frozen=True)
class Kernel:
    """A provisioned kernel: everything later stages need, as paths in the cache."""

    series: str
    release: str  # `uname -r` of the guest, e.g. 6.1.0-56-amd64
    package_version: str  # Debian version of the packages, e.g. 6.1.192-2
    vmlinuz: Path
    boot_image: Path  # what QEMU's -kernel gets: vmlinux for a PVH boot, else vmlinuz
    kdir: Path  # make -C KDIR M=... builds modules for this kernel
    modules: Path | None  # the image's /lib/modules/<release>; None when not unpacked
    source: Path  # root of the extracted SOURCE_MEMBERS (the whole tree when source-built)
    # A root (see toolchain.py) to run Kbuild in (kdir inside it, or bound there); None: the host's.
    toolchain: Path | None = None
    variant: str = "distro"  # "distro": Debian's packages; "minimal", "debug": source.py
    make_vars: tuple[str, ...] = ()  # for every make against kdir, e.g. CC=x86_64-linux-gnu-gcc-14
    arch: str = HOST_ARCH  # the machine it runs on: a name of arch.TARGETS (arm64-16k)

    def save(self, path: Path) -> None:
        data = {
            k: v if v is None or isinstance(v, tuple) else str(v) for k, v in asdict(self).items()
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Kernel | None:
        """The manifest's kernel, or None when there is none, or it is from an older zskit
        or damaged."""
        try:
            data = json.loads(path.read_text())

            def optional(key: str) -> Path | None:
                return Path(data[key]) if data.get(key) else None

            return cls(
                series=data["series"],
                release=data["release"],
                package_version=data["package_version"],
                vmlinuz=Path(data["vmlinuz"]),
                boot_image=Path(data["boot_image"]),
                kdir=Path(data["kdir"]),
                modules=optional("modules"),
                source=Path(data["source"]),
                toolchain=optional("toolchain"),
                variant=data.get("variant", "distro"),
                make_vars=tuple(data.get("make_vars", ())),
                arch=data.get("arch", HOST_ARCH),
            )
        except (OSError, KeyError, ValueError, TypeError):
            return None

    def is_complete(self) -> bool:
        files = [self.vmlinuz, self.boot_image, self.kdir / "Makefile", self.source]
        if self.toolchain is not None:
            files.append(self.toolchain / toolchain.STAMP)
        return all(p.exists() for p in files)

    @property
    def channel_built_in(self) -> bool:
        """Whether the fast channel's drivers are in vmlinux (a tree's kernel), not modules."""
        return self.config("VIRTIO_PCI") == "y" and self.config("VIRTIO_CONSOLE") == "y"

    @property
    def target(self) -> Target:
        return TARGETS[self.arch]

    def config(self, option: str) -> str | None:
        """The value of CONFIG_<option> in the kernel's .config ("y", "m", ...), or None."""
        return config_value(self.kdir / ".config", option)

    @property
    def full_acpi(self) -> bool:
        """ACPI with what its interpreter needs: the firmware's tables (DSDT) reach PCI
        config space, so without PCI (zskit's source-built kernels) they fail to load."""
        return self.config("ACPI") == "y" and self.config("PCI") == "y"

    @property
    def shutdown_command(self) -> str:
        """How the guest leaves: `poweroff -f` needs a working ACPI interpreter; without it
        `reboot -f` resets the machine, which QEMU's -no-reboot turns into an exit."""
        return "poweroff -f" if self.full_acpi else "reboot -f"

    @property
    def boot_args(self) -> tuple[str, ...]:
        """Kernel arguments this kernel needs: kmemleak off (it slows a TCG boot by about
        a third, and under fault injection its own allocations fail and it disables
        itself, so it cannot vouch for a scenario either)."""
        return ("kmemleak=off",) if self.config("DEBUG_KMEMLEAK") == "y" else ()


class KernelSource(Protocol):
    """Where kernels of one series come from (read-only fields: sources are frozen)."""

    @property
    def series(self) -> str: ...

    # Debian's config has CONFIG_ZSMALLOC=y: the allocator is part of vmlinux, so
    # zsmalloc.ko cannot be replaced (modpost: every zs_* "exported twice").
    @property
    def zsmalloc_builtin(self) -> bool: ...

    def provision(self, cache: Path, progress: Progress, refresh: bool = False) -> Kernel: ...


def cached(manifest: Path, progress: Progress) -> Kernel | None:
    """The complete kernel a manifest describes, or None."""
    kernel = Kernel.load(manifest) if manifest.exists() else None
    if kernel is None or not kernel.is_complete():
        return None
    progress.say(f"Linux {kernel.release} ({kernel.package_version}) from the cache")
    return kernel


def config_value(config: Path, option: str) -> str | None:
    """CONFIG_<option>'s value in a .config, unquoted; None when unset or unreadable."""
    try:
        text = config.read_text()
    except OSError:
        return None
    m = re.search(rf"^CONFIG_{re.escape(option)}=(.*)$", text, re.M)
    return m[1].strip('"') if m else None


def config_values(config: Path) -> dict[str, str]:
    """Every CONFIG_<option>=value of a .config, unquoted (empty when unreadable)."""
    try:
        lines = config.read_text().splitlines()
    except OSError:
        return {}
    pairs = (line.split("=", 1) for line in lines if line.startswith("CONFIG_") and "=" in line)
    return {k: v.strip('"') for k, v in pairs}
