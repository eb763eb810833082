"""Static userspace programs of the guest image, our own C, built on the host.

Each `NAME.c` here is compiled with `gcc -static -O2` into a binary that
needs nothing of the guest but its kernel (the initramfs has no libc), and
cached in the build directory under the hash of its source and flags, so
an unchanged program is never rebuilt. The initramfs puts each at
/bin/zskit-NAME (`guest_path`).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import shutil
import subprocess
from pathlib import Path

from ...paths import BUILD
from ...progress import StageError

CC = "gcc"
CFLAGS = ("-static", "-O2", "-s", "-Wall", "-Wextra", "-Werror")
PROGRAMS = ("agent", "pageout", "swapper", "sysfs")  # every program of the guest image


def guest_path(name: str) -> str:
    """Where the program of `name` is in the guest."""
    return f"/bin/zskit-{name}"


def source(name: str) -> str:
    return (importlib.resources.files(__name__) / f"{name}.c").read_text()


def build_program(name: str, cc: str = CC, out_dir: Path = BUILD / "programs") -> Path:
    """The static binary of programs/NAME.c, built once per source, compiler and flags
    (`cc` is a cross compiler for another machine's guest, e.g. aarch64-linux-gnu-gcc)."""
    text = source(name)
    key = hashlib.sha256("\0".join((text, cc, *CFLAGS)).encode()).hexdigest()[:16]
    binary = out_dir / f"{name}-{key}"
    if binary.exists():
        return binary
    if shutil.which(cc) is None:
        raise StageError(f"{cc} is missing: the guest's {name} is built on the host (`make setup`)")
    out_dir.mkdir(parents=True, exist_ok=True)
    src = out_dir / f"{name}-{key}.c"
    src.write_text(text)
    tmp = binary.with_suffix(".tmp")
    proc = subprocess.run(
        [cc, *CFLAGS, "-o", str(tmp), str(src)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        hint = " (a static link needs libc6-dev: `make setup`)" if "-lc" in proc.stderr else ""
        raise StageError(f"building the guest program {name} failed{hint}:\n{proc.stderr[-3000:]}")
    tmp.rename(binary)
    return binary
