"""Pure-Python writer and strict reader for the Linux initramfs "newc" cpio format.

The kernel unpacks an initramfs from the SVR4 "new ASCII" cpio format (magic ``070701``,
see Documentation/driver-api/early-userspace/buffer-format.rst).  Each member is::

    header (110 ASCII bytes) | name + NUL | pad to 4 | data | pad to 4

The header is the 6-byte magic followed by thirteen 8-digit hexadecimal fields: ino, mode,
uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize (which
counts the trailing NUL) and check (always 0 for ``070701``; ``070702`` would carry a
checksum).  The name padding is computed over header + name, i.e. from the start of the
member.  A member named ``TRAILER!!!`` ends the archive, which is conventionally padded
with zeros to a multiple of 512 bytes.  Symlink targets are stored as the member's data.

We write the archive ourselves instead of shelling out to ``cpio`` so that the output is
byte-for-byte reproducible (no host uids, mtimes or inode numbers leak in) and so that the
harness does not depend on which cpio implementation the host happens to have installed.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "MAGIC",
    "MAX_FILE_SIZE",
    "TRAILER",
    "Archive",
    "archive_from_entries",
    "CpioError",
    "Entry",
    "read_archive",
]

MAGIC = b"070701"
"""Magic of the newc format without checksums, the only one the kernel needs."""

TRAILER = "TRAILER!!!"
"""Name of the sentinel member that terminates every cpio archive."""

MAX_FILE_SIZE = 0xFFFF_FFFF
"""Largest member size representable in the 8-hex-digit ``filesize`` field (4 GiB - 1)."""

_HEADER_LEN = 6 + 13 * 8
_FIELD_NAMES = (
    "ino",
    "mode",
    "uid",
    "gid",
    "nlink",
    "mtime",
    "filesize",
    "devmajor",
    "devminor",
    "rdevmajor",
    "rdevminor",
    "namesize",
    "check",
)
_BLOCK = 512
_FILE_TYPES = frozenset(
    (
        stat.S_IFDIR,
        stat.S_IFREG,
        stat.S_IFLNK,
        stat.S_IFCHR,
        stat.S_IFBLK,
        stat.S_IFIFO,
        stat.S_IFSOCK,
    )
)
_MAX_FIELD = 0xFFFF_FFFF
_PATH_ENCODING = "utf-8"
# surrogateescape lets arbitrary (non-UTF-8) names read from foreign archives survive a
# read/write round trip unchanged instead of failing to decode.
_PATH_ERRORS = "surrogateescape"


class CpioError(ValueError):
    """Raised by :func:`read_archive` when the input is not a well-formed newc archive."""


@dataclass(frozen=True)
class Entry:
    """One archive member, independent of the on-disk header encoding.

    ``mode`` carries the full ``st_mode`` including the file type so that a member is
    self-describing.  For symlinks ``data`` is the link target (that is how cpio stores
    it); directories and device nodes have no data.
    """

    path: str
    mode: int
    data: bytes = b""
    rdev_major: int = 0
    rdev_minor: int = 0


def _pad4(n: int) -> int:
    """Return how many zero bytes bring ``n`` up to the newc 4-byte alignment."""
    return -n % 4


def _split_path(path: str) -> tuple[str, ...]:
    """Validate an archive path and return its components.

    Rejecting ``..``, ``.`` and empty components (which includes absolute paths and
    doubled or trailing slashes) guarantees that every member has exactly one spelling,
    so duplicate detection and sorting are meaningful, and that nothing can escape the
    extraction root.
    """
    if not isinstance(path, str):
        raise TypeError(f"archive path must be str, not {type(path).__name__}")
    if path == "":
        raise ValueError("archive path must not be empty")
    if "\0" in path:
        raise ValueError(f"archive path {path!r} contains a NUL byte")
    parts = tuple(path.split("/"))
    for part in parts:
        if part == "":
            raise ValueError(
                f"archive path {path!r} has an empty component "
                "(no leading, trailing or doubled '/')"
            )
        if part in (".", ".."):
            raise ValueError(f"archive path {path!r} contains a {part!r} component")
    if path == TRAILER:
        raise ValueError(f"archive path {path!r} is reserved for the end-of-archive marker")
    return parts


def _check_perm(path: str, mode: int) -> None:
    """Ensure ``mode`` holds only permission bits; the file type comes from the add_* call."""
    if not isinstance(mode, int) or mode < 0 or mode & ~0o7777:
        raise ValueError(f"{path}: mode {mode!r} must contain only permission bits (0..0o7777)")


def _check_size(path: str, size: int) -> None:
    """Reject members whose size does not fit in the 8-hex-digit ``filesize`` field."""
    if size > MAX_FILE_SIZE:
        raise ValueError(
            f"{path}: {size} bytes exceeds the newc cpio limit of {MAX_FILE_SIZE} bytes"
        )


def _is_dir(entry: Entry) -> bool:
    """Return whether ``entry`` is a directory."""
    return stat.S_ISDIR(entry.mode)


def _sort_key(path: str) -> tuple[bytes, ...]:
    """Order members by path components so that parents always precede their children.

    Comparing encoded components (not the whole string) keeps each directory's subtree
    contiguous, e.g. ``a``, ``a/b``, ``a-b`` rather than ``a``, ``a-b``, ``a/b``.
    """
    return tuple(p.encode(_PATH_ENCODING, _PATH_ERRORS) for p in path.split("/"))


def _header(
    *,
    ino: int,
    mode: int,
    nlink: int,
    filesize: int,
    rdevmajor: int,
    rdevminor: int,
    namesize: int,
) -> bytes:
    """Encode a newc header; uid, gid, mtime, devmajor, devminor and check are always 0."""
    fields = (ino, mode, 0, 0, nlink, 0, filesize, 0, 0, rdevmajor, rdevminor, namesize, 0)
    for name, value in zip(_FIELD_NAMES, fields, strict=True):
        if not 0 <= value <= _MAX_FIELD:
            raise ValueError(f"cpio header field {name}={value} does not fit in 8 hex digits")
    return MAGIC + b"".join(b"%08X" % v for v in fields)


def _member(
    name: bytes, *, ino: int, mode: int, nlink: int, data: bytes, rdev: tuple[int, int]
) -> bytes:
    """Encode one complete, padded member (header, name, data)."""
    namez = name + b"\0"
    head = _header(
        ino=ino,
        mode=mode,
        nlink=nlink,
        filesize=len(data),
        rdevmajor=rdev[0],
        rdevminor=rdev[1],
        namesize=len(namez),
    )
    name_pad = b"\0" * _pad4(len(head) + len(namez))
    return b"".join((head, namez, name_pad, data, b"\0" * _pad4(len(data))))


class Archive:
    """An in-memory set of members that serialises to a reproducible newc archive.

    Members are keyed by path, so insertion order never influences the output.  Parent
    directories are created implicitly (mode 0o755) because the kernel's unpacker does not
    create missing parents and silently drops members whose directory does not exist yet.
    """

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}
        # Directories that exist only because something was added beneath them; an explicit
        # add_dir() may later replace them with a different mode without being a conflict.
        self._implicit: set[str] = set()

    def add_dir(self, path: str, mode: int = 0o755) -> None:
        """Add a directory with permission bits ``mode``."""
        _check_perm(path, mode)
        self._add(Entry(path, stat.S_IFDIR | mode))

    def add_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """Add a regular file with contents ``data`` and permission bits ``mode``."""
        _check_perm(path, mode)
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"{path}: file data must be bytes, not {type(data).__name__}")
        data = bytes(data)
        _check_size(path, len(data))
        self._add(Entry(path, stat.S_IFREG | mode, data))

    def add_symlink(self, path: str, target: str) -> None:
        """Add a symlink; cpio stores the target as the member data (mode is 0o777 as usual)."""
        if not target or "\0" in target:
            raise ValueError(f"{path}: symlink target {target!r} must be non-empty and NUL-free")
        data = target.encode(_PATH_ENCODING, _PATH_ERRORS)
        _check_size(path, len(data))
        self._add(Entry(path, stat.S_IFLNK | 0o777, data))

    def add_chardev(self, path: str, major: int, minor: int, mode: int = 0o600) -> None:
        """Add a character device node, e.g. ``dev/console`` (5, 1) for early init output."""
        _check_perm(path, mode)
        for what, num in (("major", major), ("minor", minor)):
            if not isinstance(num, int) or not 0 <= num <= _MAX_FIELD:
                raise ValueError(f"{path}: device {what} {num!r} out of range")
        self._add(Entry(path, stat.S_IFCHR | mode, b"", major, minor))

    def entries(self) -> list[Entry]:
        """Return all members, implicit directories included, in output order."""
        return [self._entries[p] for p in sorted(self._entries, key=_sort_key)]

    def _add(self, entry: Entry) -> None:
        """Insert ``entry`` after creating its parents; identical re-adds are no-ops.

        All conflicts are detected before anything is modified, so a rejected call leaves
        the archive exactly as it was.
        """
        parts = _split_path(entry.path)
        new_parents: list[str] = []
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            existing = self._entries.get(parent)
            if existing is None:
                new_parents.append(parent)
            elif not stat.S_ISDIR(existing.mode):
                raise ValueError(
                    f"cannot add {entry.path!r}: parent {parent!r} is already a "
                    f"non-directory (mode {existing.mode:o})"
                )
        existing = self._entries.get(entry.path)
        implicit = entry.path in self._implicit
        if existing is not None and existing != entry and not (implicit and _is_dir(entry)):
            if implicit:
                raise ValueError(
                    f"cannot add {entry.path!r} as mode {entry.mode:o}: it is already a "
                    "directory because other members were added beneath it"
                )
            raise ValueError(
                f"duplicate archive path {entry.path!r} with different content "
                f"(existing mode {existing.mode:o}, {len(existing.data)} bytes; "
                f"new mode {entry.mode:o}, {len(entry.data)} bytes)"
            )
        for parent in new_parents:
            self._entries[parent] = Entry(parent, stat.S_IFDIR | 0o755)
            self._implicit.add(parent)
        self._entries[entry.path] = entry
        self._implicit.discard(entry.path)

    def to_bytes(self) -> bytes:
        """Serialise the archive; the result depends only on the set of members.

        Inode numbers are assigned 1, 2, ... in output order, and ownership, mtimes and
        the device of the containing filesystem are zero, so the same content always
        yields the same bytes (and thus a stable hash for build caching).
        """
        chunks: list[bytes] = []
        for ino, entry in enumerate(self.entries(), start=1):
            chunks.append(
                _member(
                    entry.path.encode(_PATH_ENCODING, _PATH_ERRORS),
                    ino=ino,
                    mode=entry.mode,
                    nlink=2 if _is_dir(entry) else 1,
                    data=entry.data,
                    rdev=(entry.rdev_major, entry.rdev_minor),
                )
            )
        chunks.append(
            _member(TRAILER.encode("ascii"), ino=0, mode=0, nlink=1, data=b"", rdev=(0, 0))
        )
        out = b"".join(chunks)
        return out + b"\0" * (-len(out) % _BLOCK)

    def write(self, dest: Path) -> None:
        """Write the archive to ``dest`` atomically.

        The bytes go to a temporary file in the same directory, are fsynced and then
        renamed over ``dest``, so a concurrent QEMU launch or an interrupted build never
        sees a half-written initramfs.
        """
        dest = Path(dest)
        payload = self.to_bytes()
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
            # mkstemp creates 0600; an initramfs is not secret and other tools may read it.
            os.chmod(tmp_name, 0o644)
            os.replace(tmp_name, dest)
        except BaseException:
            try:
                os.unlink(tmp_name)
            except FileNotFoundError:
                pass
            raise


def _parse_header(data: bytes, off: int) -> dict[str, int]:
    """Decode the header at ``off``, raising CpioError on anything non-conforming."""
    magic = data[off : off + 6]
    if (len(data) - off < _HEADER_LEN or magic != MAGIC) and not data[off:].strip(b"\0"):
        # Only zeros (or nothing) left: the archive simply stops without its end marker,
        # which is more useful to report than "bad magic" or a short header.  Checked only
        # on failure so that parsing stays linear in the archive size.
        raise CpioError(f"archive ends at offset {off} without a {TRAILER} entry")
    if len(data) - off < _HEADER_LEN:
        raise CpioError(
            f"truncated archive: header at offset {off} needs {_HEADER_LEN} bytes, "
            f"only {len(data) - off} left"
        )
    if magic != MAGIC:
        hint = " (070702 'crc' format is not supported)" if magic == b"070702" else ""
        raise CpioError(f"bad magic {magic!r} at offset {off}, expected {MAGIC!r}{hint}")
    fields: dict[str, int] = {}
    pos = off + 6
    for name in _FIELD_NAMES:
        raw = data[pos : pos + 8]
        if not all(c in b"0123456789abcdefABCDEF" for c in raw):
            raise CpioError(f"header field {name} at offset {pos} is not 8 hex digits: {raw!r}")
        fields[name] = int(raw, 16)
        pos += 8
    if fields["check"] != 0:
        raise CpioError(
            f"header at offset {off}: check field is {fields['check']:#x}, must be 0 for 070701"
        )
    return fields


def _expect_zeros(data: bytes, start: int, count: int, what: str) -> None:
    """Require ``count`` zero padding bytes at ``start``; non-zero padding means corruption."""
    pad = data[start : start + count]
    if len(pad) != count:
        raise CpioError(f"truncated archive: missing {what} padding at offset {start}")
    if pad.strip(b"\0"):
        raise CpioError(f"non-zero {what} padding at offset {start}: {pad!r}")


def read_archive(data: bytes) -> list[Entry]:
    """Parse a newc archive strictly and return its members (without the trailer).

    Strictness is the point: this reader exists to verify archives we produce, so every
    deviation (wrong magic, non-hex or non-zero check field, bad padding, missing
    ``TRAILER!!!``, trailing garbage) is reported as :class:`CpioError` rather than
    skipped.  Only zero bytes may follow the trailer, so concatenated archives (as used
    for early microcode) are rejected.
    """
    data = bytes(data)
    entries: list[Entry] = []
    off = 0
    while True:
        fields = _parse_header(data, off)
        namesize = fields["namesize"]
        if namesize < 1:
            raise CpioError(f"header at offset {off}: namesize is 0 (must include the NUL)")
        name_start = off + _HEADER_LEN
        name_end = name_start + namesize
        if name_end > len(data):
            raise CpioError(f"truncated archive: name at offset {name_start} runs past the end")
        raw_name = data[name_start:name_end]
        if raw_name[-1:] != b"\0" or b"\0" in raw_name[:-1]:
            raise CpioError(
                f"name at offset {name_start} is not a single NUL-terminated string: {raw_name!r}"
            )
        name = raw_name[:-1].decode(_PATH_ENCODING, _PATH_ERRORS)
        _expect_zeros(data, name_end, _pad4(name_end - off), "name")
        data_start = name_end + _pad4(name_end - off)
        size = fields["filesize"]
        data_end = data_start + size
        if data_end > len(data):
            raise CpioError(
                f"truncated archive: {name!r} declares {size} data bytes at offset "
                f"{data_start}, only {len(data) - data_start} left"
            )
        _expect_zeros(data, data_end, _pad4(size), "data")
        next_off = data_end + _pad4(size)

        if name == TRAILER:
            if data[next_off:].strip(b"\0"):
                raise CpioError(f"unexpected non-zero data after {TRAILER} at offset {next_off}")
            return entries

        mode = fields["mode"]
        if stat.S_IFMT(mode) not in _FILE_TYPES or mode & ~0o177777:
            raise CpioError(f"{name!r}: mode {mode:o} is not a valid file type + permissions")
        if stat.S_ISDIR(mode) and size:
            raise CpioError(f"{name!r}: directory carries {size} data bytes")
        entries.append(
            Entry(
                path=name,
                mode=mode,
                data=data[data_start:data_end],
                rdev_major=fields["rdevmajor"],
                rdev_minor=fields["rdevminor"],
            )
        )
        off = next_off


def archive_from_entries(entries: Iterable[Entry]) -> Archive:
    """Rebuild an :class:`Archive` from members, e.g. to re-pack what read_archive returned."""
    archive = Archive()
    for entry in entries:
        kind = stat.S_IFMT(entry.mode)
        perm = stat.S_IMODE(entry.mode)
        if kind == stat.S_IFDIR:
            archive.add_dir(entry.path, perm)
        elif kind == stat.S_IFREG:
            archive.add_file(entry.path, entry.data, perm)
        elif kind == stat.S_IFLNK:
            archive.add_symlink(entry.path, entry.data.decode(_PATH_ENCODING, _PATH_ERRORS))
        elif kind == stat.S_IFCHR:
            archive.add_chardev(entry.path, entry.rdev_major, entry.rdev_minor, perm)
        else:
            raise ValueError(f"{entry.path}: unsupported file type {kind:o}")
    return archive
