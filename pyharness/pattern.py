"""The data pattern zstest writes into an object: a function of (id, seed, length).

It mirrors zt_pattern_seed() and zt_pattern_next() in kmod/zstest.c.j2
(xorshift32, the top byte of each step), so the host knows every live
object's bytes without reading them back.
"""

from __future__ import annotations

MASK = 0xFFFFFFFF


def pattern_seed(oid: int, seed: int, length: int) -> int:
    x = ((oid * 0x9E3779B1) ^ (seed * 0x85EBCA6B) ^ (length * 0xC2B2AE35)) & MASK
    return x or 0x6D2B79F5


def pattern(oid: int, seed: int, length: int) -> bytes:
    x = pattern_seed(oid, seed, length)
    out = bytearray(length)
    for i in range(length):
        x ^= (x << 13) & MASK
        x ^= x >> 17
        x ^= (x << 5) & MASK
        out[i] = x >> 24
    return bytes(out)
