"""A kernel module's code as its ELF file lays it out: the executable sections and the
functions in them, what instruction counts are attributed with (check/counts.py).

Only ELF64 little-endian relocatable files (x86_64 modules) are read; the guest tells
where each section was loaded (/sys/module/NAME/sections/).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from ..progress import StageError

SHF_EXECINSTR = 0x4
SHT_SYMTAB = 2
STT_FUNC = 2


@dataclass(frozen=True)
class Function:
    name: str
    section: str
    offset: int  # from the section's start
    size: int


@dataclass(frozen=True)
class ModuleCode:
    """The executable sections (name -> size) and functions of one .ko."""

    sections: dict[str, int]
    functions: tuple[Function, ...]


def _header(data: bytes, path: Path) -> tuple[int, int, int, int]:
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise StageError(f"{path}: not a 64-bit little-endian ELF file")
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    return shoff, shentsize, shnum, shstrndx


def module_code(path: Path) -> ModuleCode:
    data = path.read_bytes()
    shoff, shentsize, shnum, shstrndx = _header(data, path)
    # (name offset, type, flags, file offset, size, link) of each section
    headers = [
        struct.unpack_from("<IIQQQQI", data, shoff + i * shentsize)[:7] for i in range(shnum)
    ]
    _, _, _, _, names_at, _, _ = headers[shstrndx]

    def string(table: int, at: int) -> str:
        start = table + at
        return data[start : data.index(b"\0", start)].decode()

    names = [string(names_at, h[0]) for h in headers]
    executable = {names[i]: h[5] for i, h in enumerate(headers) if h[2] & SHF_EXECINSTR}
    functions = []
    for h in headers:
        if h[1] != SHT_SYMTAB:
            continue
        strtab = headers[h[6]][4]
        for at in range(h[4], h[4] + h[5], 24):
            name, info, _, shndx, value, size = struct.unpack_from("<IBBHQQ", data, at)
            if info & 0xF == STT_FUNC and 0 < shndx < shnum and names[shndx] in executable:
                functions.append(Function(string(strtab, name), names[shndx], value, size))
    return ModuleCode(executable, tuple(sorted(functions, key=lambda f: (f.section, f.offset))))
