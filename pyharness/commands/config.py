"""The toolkit's configuration: the repository's `Kconfig`, read with kconfiglib.

Options live in Kconfig (so `make menuconfig` and defconfig-style presets
work), values come from `.config` when it exists and from the Kconfig
defaults otherwise. The rest of the harness only sees the typed `Config`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kconfiglib

from ..kernel.arch import TARGETS
from ..kernel.identity import DISTRO, HOST_ARCH, KernelId, series_key
from ..kernel.provision import known_series
from ..kernel.tree import tree_kernel_id
from ..kmod.own import KERNEL, OwnAllocator
from ..paths import KCONFIG, REPO
from ..progress import StageError


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
    # The decision probes after the workload (Workload.suite): "auto" where the fast channel
    # carries them, "always", or "never".
    workload_probes: str
    variant: str = "distro"  # where the kernel comes from: distro, minimal, debug
    own: OwnAllocator = OwnAllocator()  # the choices of the own allocator
    baseline: bool = False  # own allocator: the kernel's zsmalloc checked in the same boot
    # `make qemu-matrix`: the kernels ("6.1"), trees, allocators and variants ("distro")
    # chosen by the MATRIX_* options; pyharness.matrix turns them into entries.
    matrix_kernels: tuple[str, ...] = ()
    matrix_trees: tuple[Path, ...] = ()
    matrix_allocators: tuple[str, ...] = ()
    matrix_variants: tuple[str, ...] = ()
    matrix_machines: tuple[str, ...] = (HOST_ARCH,)
    # `--tree DIR`: the kernel is built from the user's tree (absolute); `kernel` is its series.
    tree: Path | None = None
    # --config-fragment FILE...: merged after the variant's fragments (built kernels only);
    # --cc: a tree's compiler.
    config_fragments: tuple[Path, ...] = ()
    cc: str | None = None
    # --transport: "auto" takes the fast channel where the guest has it; "serial" keeps
    # batches on the serial shell (what `zskit bench loop` measures the channel against).
    transport: str = "auto"
    # The machine: a name of kernel/arch.py's TARGETS (x86_64, arm64-16k).
    arch: str = HOST_ARCH

    @property
    def fast_channel(self) -> bool:
        return self.transport == "auto"

    @property
    def kernel_id(self) -> KernelId:
        return KernelId(self.kernel, self.variant, arch=self.arch, tree=self.tree)

    def with_tree(self, tree: Path, variant: str | None = None) -> Config:
        """A copy whose kernel is built from `tree` (checked now, before any work).

        The variant is the one asked for, else the configured one unless that is
        Debian's packages ("distro"), which a tree is not: then "minimal".
        """
        if variant is None and self.variant != DISTRO:
            variant = self.variant
        kernel = tree_kernel_id(tree, variant)
        return dataclasses.replace(
            self, kernel=kernel.series, variant=kernel.variant, tree=kernel.tree
        )

    def with_overrides(self, **changes: Any) -> Config:
        """A copy with command-line overrides (None values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def _choice(kconf: kconfiglib.Kconfig, name: str) -> str:
    sel = kconf.named_choices[name].selection
    assert sel is not None, f"choice {name} has no default"
    return sel.name.removeprefix(name + "_").lower()


def _chosen(kconf: kconfiglib.Kconfig, prefix: str) -> tuple[str, ...]:
    """The bools named PREFIX<x> that are set, as x: MATRIX_VARIANT_DEBUG -> "debug"."""
    found = []
    for sym in kconf.unique_defined_syms:
        if sym.name.startswith(prefix) and sym.orig_type == kconfiglib.BOOL and sym.tri_value:
            found.append(sym.name.removeprefix(prefix).lower())
    return tuple(found)


def _class_delta(choice: str) -> int:
    """OWN_CLASS_DELTA: bytes, or 0 for the kernel's own spacing."""
    return 0 if choice == KERNEL else int(choice)


def matrix_machines(value: str) -> tuple[str, ...]:
    """MATRIX_MACHINES as target names; empty means x86_64 only."""
    words = tuple(dict.fromkeys(value.split())) or (HOST_ARCH,)
    bad = [w for w in words if w not in TARGETS]
    if bad:
        raise StageError(
            f"MATRIX_MACHINES={value!r}: {', '.join(map(repr, bad))} is not a machine zskit "
            f"knows ({', '.join(TARGETS)}); fix it in `make menuconfig`"
        )
    return words


NO_KERNELS = "none"  # MATRIX_KERNELS of a matrix of trees only
SERIES = re.compile(r"\d+\.\d+")


def matrix_kernels(value: str) -> tuple[str, ...]:
    """MATRIX_KERNELS as series: empty means every series zskit describes (provision.py)."""
    words = value.split()
    if not words:
        return known_series()
    if words == [NO_KERNELS]:
        return ()
    bad = [w for w in words if not SERIES.fullmatch(w)]
    if bad:
        raise StageError(
            f"MATRIX_KERNELS={value!r}: {', '.join(map(repr, bad))} is not a kernel series "
            f'(like 6.1); name series separated by spaces ("6.1 6.12 7.2"), leave it empty '
            f'for every series zskit describes, or write "{NO_KERNELS}" for trees only'
        )
    return tuple(dict.fromkeys(words))


# The per-series booleans of .config files older than MATRIX_KERNELS, and their defaults.
LEGACY_KERNELS = ("6.1", "6.12", "7.2")
LEGACY = re.compile(
    r"^(?:CONFIG_MATRIX_KERNEL_(\w+)=(\w+)|# CONFIG_MATRIX_KERNEL_(\w+) is not set)[ \t]*\n?",
    re.M,
)


def migrate(text: str) -> tuple[str, str | None]:
    """An old .config's MATRIX_KERNEL_<series> booleans as MATRIX_KERNELS, and what was
    done (None: nothing to migrate). A series left out of the old file had its default, y;
    a MATRIX_KERNELS already in the file wins over the booleans."""
    chosen = dict.fromkeys(LEGACY_KERNELS, True)
    found = False
    for m in LEGACY.finditer(text):
        found = True
        name = (m[1] or m[3]).replace("_", ".")
        chosen[name] = m[2] == "y"
    if not found:
        return text, None
    rest = LEGACY.sub("", text)
    kernels = " ".join(sorted((k for k, on in chosen.items() if on), key=series_key))
    if re.search(r"^CONFIG_MATRIX_KERNELS=", rest, re.M):
        return rest, "dropped the old MATRIX_KERNEL_* lines (MATRIX_KERNELS is set)"
    value = kernels or NO_KERNELS
    rest = rest + ("" if rest.endswith("\n") or not rest else "\n")
    return rest + f'CONFIG_MATRIX_KERNELS="{value}"\n', (
        f'the old MATRIX_KERNEL_* booleans are MATRIX_KERNELS="{value}"'
    )


def migrate_file(path: Path) -> str | None:
    """Rewrite an old .config in the new form (what `make olddefconfig` runs first)."""
    if not path.is_file():
        return None
    text, done = migrate(path.read_text())
    if done is not None:
        tmp = path.with_name(path.name + ".migrating")
        tmp.write_text(text)
        tmp.replace(path)
    return done


@functools.cache
def int_range(symbol: str, kconfig: Path = KCONFIG) -> tuple[int, int]:
    """The range Kconfig declares for an int option: the command line's bounds too."""
    kconf = kconfiglib.Kconfig(str(kconfig), warn_to_stderr=False)
    ((low, high, _cond),) = kconf.syms[symbol].ranges
    return int(low.str_value), int(high.str_value)


def load(kconfig: Path = KCONFIG, dotconfig: Path | None = None) -> Config:
    """Read Kconfig and, when present, `.config` (or the file named by $KCONFIG_CONFIG)."""
    if dotconfig is None:
        dotconfig = Path(os.environ.get("KCONFIG_CONFIG", REPO / ".config"))
    try:
        kconf = kconfiglib.Kconfig(str(kconfig), warn_to_stderr=False)
    except kconfiglib.KconfigError as e:
        raise StageError(f"cannot parse {kconfig}: {e}") from e
    kconf.warn_assign_undef = True  # a misspelt option in .config is an error
    if dotconfig.exists():
        text, migrated = migrate(dotconfig.read_text())
        if migrated is None:
            kconf.load_config(str(dotconfig))
        else:
            print(
                f"zskit: {dotconfig}: {migrated} (read so; `make olddefconfig` rewrites it)",
                file=sys.stderr,
            )
            with tempfile.TemporaryDirectory(prefix="zskit-config-") as tmp:
                (Path(tmp) / "config").write_text(text)
                kconf.load_config(str(Path(tmp) / "config"))

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
        workload_probes="auto" if kconf.syms["WORKLOAD_PROBES"].tri_value == 2 else "never",
        variant=_choice(kconf, "VARIANT"),
        arch=_choice(kconf, "ARCH").replace("arm64_16k", "arm64-16k"),
        baseline=kconf.syms["RUN_BASELINE"].tri_value == 2,
        own=OwnAllocator(
            max_pages=num("OWN_MAX_PAGES"),
            class_delta=_class_delta(_choice(kconf, "OWN_CLASS_DELTA")),
            fullness=_choice(kconf, "OWN_FULLNESS"),
            chain_rule=_choice(kconf, "OWN_CHAIN").replace("_", "-"),
            stats=kconf.syms["OWN_STATS"].tri_value == 2,
            migration=kconf.syms["OWN_MIGRATION"].tri_value == 2,
        ),
        matrix_kernels=matrix_kernels(kconf.syms["MATRIX_KERNELS"].str_value),
        matrix_trees=tuple(
            Path(t).expanduser() for t in kconf.syms["MATRIX_TREES"].str_value.split()
        ),
        matrix_allocators=_chosen(kconf, "MATRIX_ALLOCATOR_"),
        matrix_variants=_chosen(kconf, "MATRIX_VARIANT_"),
        matrix_machines=matrix_machines(kconf.syms["MATRIX_MACHINES"].str_value),
    )
    # kconfiglib reports an out-of-range value only once it is read, so check last.
    if kconf.warnings:
        found = "; ".join(w.replace("\n", " ") for w in kconf.warnings)
        raise StageError(f"{dotconfig}: {found}; fix it with `make menuconfig`")
    return config


def main(argv: list[str] | None = None) -> int:
    """`python -m pyharness.commands.config migrate [FILE]`: an old .config in the new form."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] != "migrate" or len(args) > 2:
        print("usage: python -m pyharness.commands.config migrate [FILE]", file=sys.stderr)
        return 2
    path = Path(args[1] if len(args) > 1 else os.environ.get("KCONFIG_CONFIG", REPO / ".config"))
    done = migrate_file(path)
    if done is not None:
        print(f"zskit: {path}: {done}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
