"""The bench's corpora: real data, the same on every machine, built from what zskit has.

A corpus is a file of whole pages the guest compresses with the kernel's own
compressor, so the object sizes the allocators see are real. Each is built by
one command (`zskit bench corpus`), cached under <cache>/corpus/, and recorded
in the results with its SHA-256 and where its bytes came from:

- synthetic: pages of known compressibility. Each 128-byte block of page i
  starts with a share of random bytes that steps through 0..100% from page to
  page (i * 37 mod 101 percent) and repeats one line of text in the rest;
  every 16th page is zero-filled, which zram keeps out of zsmalloc.
- text: the files of the kernel's headers tree (C headers, Kconfig, Makefiles,
  scripts), concatenated; passes over them in a new seeded order until the size
  is reached, so that pages of later passes are cut at other offsets.
- binaries: the kernel image's modules (ELF code and data), in path order, .xz
  ones decompressed, then its vmlinux; Debian's 6.12 and 7.2 are provisioned
  without their modules, so there it is the vmlinux alone.
- DIR: the regular files under a directory of the user's, in path order.

Nothing is taken from the host beyond the kernel zskit provisioned for the run:
the package versions in the record pin the bytes.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import random
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from ..kernel.manifest import Kernel
from ..model import PAGE_SIZES
from ..paths import cache_dir
from ..progress import StageError

NAMES = ("synthetic", "text", "binaries")
SEED = 20261202
TEXT_LINE = b"zsmalloc stores compressed pages in zspages of order-0 pages.\n"
ZERO_EVERY = 16
BLOCK = 128  # bytes of the synthetic pages' random-then-text blocks
CHUNK = 1 << 20


@dataclass(frozen=True)
class Corpus:
    name: str
    path: Path  # a file of `pages` whole pages
    pages: int
    page_size: int
    sha256: str
    source: str  # where the bytes came from

    def record(self) -> dict[str, object]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def parse_size(text: str) -> int:
    """Bytes of `256M`, `4K`, `1G` or a plain number."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    scale = units.get(text[-1:].upper(), 1)
    digits = text[:-1] if scale > 1 else text
    if not digits.isdigit() or int(digits) == 0:
        raise StageError(f"--size {text}: give a size such as 256M, 4096K or 1G")
    return int(digits) * scale


def _synthetic(page_size: int) -> Iterator[bytes]:
    rng = random.Random(SEED)
    filler = (TEXT_LINE * (BLOCK // len(TEXT_LINE) + 1))[:BLOCK]
    i = 0
    while True:
        if i % ZERO_EVERY == ZERO_EVERY - 1:
            yield bytes(page_size)
        else:
            # Random and text bytes alternate block by block: after a long random run
            # LZO probes ever more sparsely and would miss the text behind it.
            random_bytes = BLOCK * (i * 37 % 101) // 100
            yield b"".join(
                rng.randbytes(random_bytes) + filler[random_bytes:]
                for _ in range(page_size // BLOCK)
            )
        i += 1


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def _contents(path: Path) -> bytes:
    data = path.read_bytes()
    return lzma.decompress(data) if path.suffix == ".xz" else data


def _text(kernel: Kernel) -> Iterator[bytes]:
    files = _files(kernel.kdir.resolve()) + _files(_common_headers(kernel))
    if not files:
        raise StageError(f"{kernel.kdir}: no files for the text corpus; provision it again")
    rng = random.Random(SEED)
    while True:
        for path in files:
            yield path.read_bytes()
        rng.shuffle(files)


def _common_headers(kernel: Kernel) -> Path:
    """Debian's headers are two trees: the flavour's and the `-common` one it includes."""
    kdir = kernel.kdir.resolve()
    common = kdir.with_name(kdir.name.rsplit("-", 1)[0] + "-common")
    return common if common.is_dir() and common != kdir else kdir


def _binaries(kernel: Kernel) -> Iterator[bytes]:
    total = 0
    if kernel.modules is not None and (kernel.modules / "kernel").is_dir():
        for path in _files(kernel.modules / "kernel"):
            if ".ko" in path.name:
                data = _contents(path)
                total += len(data)
                yield data
    data = kernel.boot_image.read_bytes()
    if data[:4] == b"\x7fELF":
        total += len(data)
        yield data
    raise StageError(
        f"the binaries of Linux {kernel.release} here (its modules, its vmlinux) are "
        f"{total >> 20} MiB, fewer than the size asked: lower --size for this corpus"
    )


def _directory(root: Path) -> Iterator[bytes]:
    files = _files(root)
    if not files:
        raise StageError(f"--corpus {root}: no regular files under it")
    for path in files:
        yield path.read_bytes()
    raise StageError(f"--corpus {root}: its files are smaller than the size asked; lower --size")


def _source(name: str, kernel: Kernel) -> tuple[Iterator[bytes], str]:
    package = f"Linux {kernel.release} ({kernel.package_version or kernel.variant})"
    if name == "synthetic":
        return _synthetic(PAGE_SIZES[kernel.target.page_size]), f"generated, seed {SEED}"
    if name == "text":
        return _text(kernel), f"the headers tree of {package}"
    if name == "binaries":
        return _binaries(kernel), f"the modules and vmlinux of {package}"
    root = Path(name)
    if root.is_dir():
        return _directory(root), f"the files under {root.resolve()}"
    raise StageError(
        f"unknown corpus {name!r}: give one of {', '.join(NAMES)} or a directory of your own"
    )


def build(name: str, size: int, kernel: Kernel) -> Corpus:
    """The corpus of `size` bytes (rounded down to whole pages) for this kernel, built once
    and cached; the cache never holds a half-written one."""
    page_size = PAGE_SIZES[kernel.target.page_size]
    pages = size // page_size
    if pages == 0:
        raise StageError(f"--size {size}: a corpus needs at least one page ({page_size} bytes)")
    key = name if name in NAMES else "dir-" + hashlib.sha256(name.encode()).hexdigest()[:12]
    where = cache_dir() / "corpus" / kernel.release / f"{key}-{pages}x{page_size}"
    record = where.with_suffix(".json")
    if record.exists() and where.exists():
        saved = json.loads(record.read_text())
        return Corpus(**{**saved, "path": where})
    chunks, source = _source(name, kernel)
    where.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=where.parent, prefix=f".{where.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            left = pages * page_size
            for chunk in chunks:
                chunk = chunk[:left]
                out.write(chunk)
                digest.update(chunk)
                left -= len(chunk)
                if not left:
                    break
        os.replace(tmp, where)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    corpus = Corpus(name, where, pages, page_size, digest.hexdigest(), source)
    saved = corpus.record()
    del saved["path"]
    record.write_text(json.dumps(saved, indent=2) + "\n")
    return corpus
