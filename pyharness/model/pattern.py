"""The data pattern zstest writes into an object: a function of (id, seed, size).

It mirrors zt_pattern_seed(), zt_pattern_next() and zt_fill() in
kmod/zstest.c.j2: byte i of the object is byte i % 4 (little endian) of the
(i // 4 + 1)-th xorshift32 step. The host knows every live object's bytes
without reading them back.
"""

from __future__ import annotations

import struct

MASK = 0xFFFFFFFF


def pattern_seed(oid: int, seed: int, size: int) -> int:
    x = ((oid * 0x9E3779B1) ^ (seed * 0x85EBCA6B) ^ (size * 0xC2B2AE35)) & MASK
    return x or 0x6D2B79F5


def xorshift32(x: int) -> int:
    x ^= (x << 13) & MASK
    x ^= x >> 17
    return x ^ ((x << 5) & MASK)


def pattern(oid: int, seed: int, size: int, start: int = 0, end: int | None = None) -> bytes:
    """Bytes [start, end) of the pattern of object `oid` of `size` bytes."""
    end = size if end is None else end
    x = pattern_seed(oid, seed, size)
    words = []
    for _ in range((end + 3) // 4):
        x = xorshift32(x)
        words.append(x)
    return struct.pack(f"<{len(words)}I", *words)[start:end]
