"""A tree's own tests (kernel/tree_tests.py finds them) in the guest: kselftest, KUnit.

The initramfs carries them: each kselftest directory's files at
SELFTESTS_DIR/<name>/, the KUnit modules (and kunit.ko) at KUNIT_DIR. Two small
shims let kselftest's scripts run on busybox: `/bin/bash` hands a script to
busybox's ash (they start with #!/bin/bash but use nothing ash lacks), and
`mkfs.ext2` is busybox's mke2fs (the zram scripts fall back to ext2 when the
guest has no mkfs.ext4; the tree's kernel has ext2, see qemu/configs/tree.config).

kselftests run through scripts/kselftest.sh, which prints kselftest's TAP;
zram's scripts need the zram module, so it is loaded for them and unloaded
after. A KUnit module runs its suites when it is loaded and prints KTAP into
the kernel log: what the log gained during its insmod is its document.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ..kernel.tree_tests import Kselftest, TreeTests
from . import qemu
from .initramfs import KERNEL_ZRAM, MODULE_DIR
from .modules import load_modules, module_name, unload_modules

SELFTESTS_DIR = "/zskit/selftests"
KUNIT_DIR = f"/{MODULE_DIR}/tree"
# busybox's mke2fs does not ask the device its logical block size as e2fsprogs' does,
# and ext2 refuses blocks smaller than it (zram's are 4096).
MKFS_EXT2 = b"""#!/bin/sh
for dev; do :; done
size=$(cat "/sys/class/block/${dev##*/}/queue/logical_block_size" 2>/dev/null || echo 1024)
[ "$size" -ge 1024 ] || size=1024
exec mke2fs -b "$size" "$@"
"""
SHIMS = {
    "/bin/bash": b'#!/bin/sh\n# kselftest scripts ask for bash: ash runs them\nexec sh "$@"\n',
    "/usr/sbin/mkfs.ext2": MKFS_EXT2,
}
SLACK = 30  # seconds of a kselftest directory's deadline beyond its programs' timeouts


def image_files(tests: TreeTests) -> tuple[dict[str, bytes], dict[str, Path]]:
    """What the initramfs needs for `tests`: executable files by content (the kselftest
    directories and the shims), and module files by host path (KUnit)."""
    executables: dict[str, bytes] = {}
    for test in tests.kselftests:
        for name in test.files:
            executables[f"{SELFTESTS_DIR}/{test.name}/{name}"] = (
                test.directory / name
            ).read_bytes()
    if tests.kselftests:
        executables.update(SHIMS)
    modules = {kunit_path(ko): ko for ko in tests.kunit}
    if tests.kunit and tests.kunit_core is not None:
        modules[kunit_path(tests.kunit_core)] = tests.kunit_core
    return executables, modules


def kunit_path(ko: Path) -> str:
    return f"{KUNIT_DIR}/{ko.name}"


def run_kselftest(guest: qemu.Guest, test: Kselftest) -> str:
    """The TAP output of one kselftest directory's programs (zram loaded for them)."""
    zram = test.name == "zram" and guest.run_status(f"test -f {KERNEL_ZRAM}")[0] == 0
    if zram:
        load_modules(guest, [KERNEL_ZRAM])
    try:
        script = guest.send_script("kselftest.sh")
        env: Mapping[str, object] = {
            "DIR": f"{SELFTESTS_DIR}/{test.name}",
            "NAME": test.name,
            "TIMEOUT": test.timeout,
        }
        command = qemu.script_command(script, env, test.programs)
        _, output = guest.run_status(command, timeout=len(test.programs) * test.timeout + SLACK)
        return output
    finally:
        if zram and guest.child is not None:
            unload_modules(guest, [KERNEL_ZRAM], check=False)


def run_kunit(guest: qemu.Guest, tests: TreeTests) -> dict[str, str]:
    """Each KUnit module's KTAP (what the kernel log gained while it loaded), by name;
    kunit.ko is loaded first and every module unloaded after."""
    core = [kunit_path(tests.kunit_core)] if tests.kunit_core is not None else []
    documents: dict[str, str] = {}
    load_modules(guest, core)
    try:
        for ko in tests.kunit:
            before = int(guest.run("dmesg | wc -l").strip())
            path = kunit_path(ko)
            rc, output = guest.run_status(f"insmod {path}", timeout=600)
            log = guest.run(f"dmesg | tail -n +{before + 1}")
            documents[module_name(path)] = log if rc == 0 else f"{log}\ninsmod: {output}"
            if rc == 0:
                unload_modules(guest, [path], check=False)
    finally:
        if guest.child is not None:
            unload_modules(guest, core, check=False)
    return documents
