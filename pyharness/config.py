"""The toolkit's configuration: the repository's `Kconfig`, read with kconfiglib.

Options live in Kconfig (so `make menuconfig` and defconfig-style presets
work), values come from `.config` when it exists and from the Kconfig
defaults otherwise. The rest of the harness only sees the typed `Config`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import kconfiglib

from .progress import StageError

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Config:
    kernel: str
    allocator: str
    accel: str
    memory_mb: int
    cpus: int
    boot_timeout: int
    command_timeout: int
    workload_ops: int
    workload_batch: int
    workload_seed: int
    workload_churn_percent: int

    def with_overrides(self, **changes: object) -> Config:
        """A copy with command-line overrides (None values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def _choice(kconf: kconfiglib.Kconfig, name: str) -> str:
    sel = kconf.named_choices[name].selection
    assert sel is not None, f"choice {name} has no default"
    return sel.name.removeprefix(name + "_").lower()


def load(kconfig: Path = REPO / "Kconfig", dotconfig: Path | None = None) -> Config:
    """Read Kconfig and, when present, `.config` (or the file named by $KCONFIG_CONFIG)."""
    if dotconfig is None:
        dotconfig = Path(os.environ.get("KCONFIG_CONFIG", REPO / ".config"))
    try:
        kconf = kconfiglib.Kconfig(str(kconfig), warn_to_stderr=False)
    except kconfiglib.KconfigError as e:
        raise StageError(f"cannot parse {kconfig}: {e}") from e
    kconf.warn_assign_undef = True  # a misspelt option in .config is an error
    if dotconfig.exists():
        kconf.load_config(str(dotconfig))

    def num(name: str) -> int:
        return int(kconf.syms[name].str_value)

    config = Config(
        kernel=kconf.syms["KERNEL"].str_value,
        allocator=_choice(kconf, "ALLOCATOR"),
        accel=_choice(kconf, "QEMU_ACCEL"),
        memory_mb=num("QEMU_MEMORY_MB"),
        cpus=num("QEMU_CPUS"),
        boot_timeout=num("QEMU_BOOT_TIMEOUT"),
        command_timeout=num("QEMU_COMMAND_TIMEOUT"),
        workload_ops=num("WORKLOAD_OPS"),
        workload_batch=num("WORKLOAD_BATCH"),
        workload_seed=num("WORKLOAD_SEED"),
        workload_churn_percent=num("WORKLOAD_CHURN_PERCENT"),
    )
    # kconfiglib reports an out-of-range value only once it is read, so check last.
    if kconf.warnings:
        found = "; ".join(w.replace("\n", " ") for w in kconf.warnings)
        raise StageError(f"{dotconfig}: {found}; fix it with `make menuconfig`")
    return config
