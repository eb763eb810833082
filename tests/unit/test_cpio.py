"""Tests for pyharness.cpio: round trips, GNU cpio interoperability, determinism, errors."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyharness.guest import cpio
from pyharness.guest.cpio import Archive, CpioError, Entry, archive_from_entries, read_archive

CPIO = shutil.which("cpio")
needs_cpio = pytest.mark.skipif(
    CPIO is None,
    reason="GNU cpio not found on PATH; install it (Debian/Ubuntu: apt-get install cpio)",
)

HEADER_LEN = 110


# --------------------------------------------------------------------------- helpers


def sample_archive() -> Archive:
    """A small initramfs-like tree exercising every member type."""
    a = Archive()
    a.add_file("init", b"#!/bin/sh\nexec /bin/busybox sh\n", 0o755)
    a.add_file("bin/busybox", bytes(range(256)) * 3 + b"tail", 0o755)
    a.add_symlink("bin/sh", "busybox")
    a.add_symlink("sbin/poweroff", "/bin/busybox")
    a.add_dir("proc", 0o555)
    a.add_dir("tmp", 0o1777)
    a.add_dir("etc")
    a.add_file("etc/empty", b"")
    a.add_file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n", 0o600)
    a.add_file("lib/modules/6.9.0/kernel/mm/zsmalloc.ko", b"\x7fELF" + b"\0" * 61, 0o640)
    a.add_chardev("dev/console", 5, 1)
    a.add_chardev("dev/null", 1, 3, 0o666)
    return a


def parse_headers(data: bytes) -> list[tuple[dict[str, int], str]]:
    """Independent, minimal header walker used to check the on-disk layout."""
    names = (
        "ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check"
    ).split()
    out = []
    off = 0
    while True:
        assert data[off : off + 6] == b"070701"
        fields = {n: int(data[off + 6 + 8 * i : off + 14 + 8 * i], 16) for i, n in enumerate(names)}
        name = data[off + HEADER_LEN : off + HEADER_LEN + fields["namesize"] - 1].decode()
        out.append((fields, name))
        off += HEADER_LEN + fields["namesize"]
        assert off % 4 == 0 or data[off : off + (-off % 4)] == b"\0" * (-off % 4)
        off += -off % 4
        off += fields["filesize"] + (-fields["filesize"] % 4)
        if name == "TRAILER!!!":
            return out


# ------------------------------------------------------------ hypothesis strategies

component = st.text(alphabet=st.sampled_from("abcXYZ019-_.~ é"), min_size=1, max_size=6).filter(
    lambda s: s not in (".", "..")
)


@st.composite
def trees(draw: st.DrawFn) -> list[tuple[str, str, object, int]]:
    """Consistent member specs: (kind, path, payload, perm); no path is below a non-dir."""
    paths = draw(st.lists(st.lists(component, min_size=1, max_size=4).map("/".join), max_size=12))
    paths = [p for p in dict.fromkeys(paths) if p != "TRAILER!!!"]
    parents = {"/".join(p.split("/")[:i]) for p in paths for i in range(1, p.count("/") + 1)}
    specs: list[tuple[str, str, object, int]] = []
    for path in paths:
        if path in parents:
            kind = "dir"
        else:
            kind = draw(st.sampled_from(["file", "file", "dir", "symlink", "chardev"]))
        perm = draw(st.sampled_from([0o600, 0o640, 0o644, 0o700, 0o755]))
        if kind == "file":
            payload: object = draw(st.binary(max_size=70))
        elif kind == "symlink":
            payload = draw(st.text(alphabet="abc/._é", min_size=1, max_size=12))
        elif kind == "chardev":
            payload = (draw(st.integers(0, 4095)), draw(st.integers(0, 2**20 - 1)))
        else:
            payload = None
        specs.append((kind, path, payload, perm))
    return specs


def build(specs: list[tuple[str, str, object, int]]) -> Archive:
    a = Archive()
    for kind, path, payload, perm in specs:
        if kind == "file":
            assert isinstance(payload, bytes)
            a.add_file(path, payload, perm)
        elif kind == "dir":
            a.add_dir(path, perm)
        elif kind == "symlink":
            assert isinstance(payload, str)
            a.add_symlink(path, payload)
        else:
            assert isinstance(payload, tuple)
            a.add_chardev(path, payload[0], payload[1], perm)
    return a


# ------------------------------------------------------------------- round trips


def test_round_trip_sample() -> None:
    a = sample_archive()
    entries = read_archive(a.to_bytes())
    assert entries == a.entries()
    by_path = {e.path: e for e in entries}
    assert by_path["bin/sh"] == Entry("bin/sh", stat.S_IFLNK | 0o777, b"busybox")
    assert by_path["dev/console"] == Entry("dev/console", stat.S_IFCHR | 0o600, b"", 5, 1)
    assert by_path["tmp"].mode == stat.S_IFDIR | 0o1777
    assert by_path["proc"].mode == stat.S_IFDIR | 0o555
    assert by_path["etc/empty"] == Entry("etc/empty", stat.S_IFREG | 0o644)
    # Implicit parents.
    for d in ("bin", "sbin", "dev", "lib", "lib/modules", "lib/modules/6.9.0/kernel/mm"):
        assert by_path[d] == Entry(d, stat.S_IFDIR | 0o755)


def test_empty_archive() -> None:
    data = Archive().to_bytes()
    assert len(data) == 512
    assert read_archive(data) == []


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(trees())
def test_round_trip_property(specs: list[tuple[str, str, object, int]]) -> None:
    a = build(specs)
    data = a.to_bytes()
    entries = read_archive(data)
    assert entries == a.entries()
    # Every explicitly added member is present, with exactly what was added.
    by_path = {e.path: e for e in entries}
    for kind, path, payload, perm in specs:
        e = by_path[path]
        if kind == "file":
            assert e == Entry(path, stat.S_IFREG | perm, payload)  # type: ignore[arg-type]
        elif kind == "dir":
            assert e == Entry(path, stat.S_IFDIR | perm)
        elif kind == "symlink":
            assert isinstance(payload, str)
            assert e == Entry(path, stat.S_IFLNK | 0o777, payload.encode())
        else:
            assert e == Entry(path, stat.S_IFCHR | perm, b"", *payload)  # type: ignore[misc]
    # Re-packing what we read yields the same bytes.
    assert archive_from_entries(entries).to_bytes() == data


def test_layout() -> None:
    a = sample_archive()
    data = a.to_bytes()
    assert len(data) % 512 == 0
    headers = parse_headers(data)
    assert [n for _, n in headers][-1] == "TRAILER!!!"
    assert [n for _, n in headers][:-1] == [e.path for e in a.entries()]
    for ino, (f, name) in enumerate(headers[:-1], start=1):
        assert f["ino"] == ino
        assert f["uid"] == f["gid"] == f["mtime"] == 0
        assert f["devmajor"] == f["devminor"] == f["check"] == 0
        assert f["nlink"] == (2 if stat.S_ISDIR(f["mode"]) else 1)
        assert f["namesize"] == len(name.encode()) + 1
    trailer = headers[-1][0]
    assert trailer["filesize"] == trailer["mode"] == 0 and trailer["namesize"] == 11
    # Parents precede children, and subtrees are contiguous.
    names = [n for _, n in headers[:-1]]
    for i, n in enumerate(names):
        if "/" in n:
            assert n.rsplit("/", 1)[0] in names[:i]
    b = Archive()
    for p in ("a-b", "a/b", "a"):
        b.add_dir(p)
    assert [e.path for e in b.entries()] == ["a", "a/b", "a-b"]


def test_explicit_dir_overrides_implicit_either_order() -> None:
    a1 = Archive()
    a1.add_file("x/y/z", b"1")
    a1.add_dir("x/y", 0o700)
    a2 = Archive()
    a2.add_dir("x/y", 0o700)
    a2.add_file("x/y/z", b"1")
    assert a1.to_bytes() == a2.to_bytes()
    assert {e.path: e.mode for e in a1.entries()}["x/y"] == stat.S_IFDIR | 0o700
    # The overriding mode is now explicit: a different mode is a conflict.
    with pytest.raises(ValueError, match="x/y"):
        a1.add_dir("x/y", 0o755)


def test_identical_re_add_is_a_no_op() -> None:
    a = sample_archive()
    before = a.to_bytes()
    a.add_file("init", b"#!/bin/sh\nexec /bin/busybox sh\n", 0o755)
    a.add_symlink("bin/sh", "busybox")
    a.add_dir("bin")
    a.add_chardev("dev/console", 5, 1)
    assert a.to_bytes() == before


# ------------------------------------------------------------------ determinism


def test_determinism_reversed_order() -> None:
    calls = [
        lambda a: a.add_file("lib/modules/x.ko", b"ko", 0o644),
        lambda a: a.add_dir("lib", 0o755),
        lambda a: a.add_symlink("bin/sh", "busybox"),
        lambda a: a.add_file("bin/busybox", b"bb", 0o755),
        lambda a: a.add_chardev("dev/console", 5, 1),
        lambda a: a.add_dir("lib/modules", 0o700),
    ]
    a1, a2 = Archive(), Archive()
    for c in calls:
        c(a1)
    for c in reversed(calls):
        c(a2)
    assert a1.to_bytes() == a2.to_bytes()


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(trees(), st.randoms(use_true_random=False))
def test_determinism_property(specs: list[tuple[str, str, object, int]], rnd: object) -> None:
    shuffled = list(specs)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert build(specs).to_bytes() == build(shuffled).to_bytes()


# -------------------------------------------------------------- GNU cpio interop


def run_cpio(args: list[str], data: bytes, cwd: Path) -> str:
    assert CPIO is not None
    proc = subprocess.run(
        [CPIO, *args], input=data, cwd=cwd, capture_output=True, check=False, timeout=60
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout.decode()


@needs_cpio
def test_gnu_cpio_lists_members(tmp_path: Path) -> None:
    a = sample_archive()
    listed = run_cpio(["-t", "--quiet"], a.to_bytes(), tmp_path).splitlines()
    assert listed == [e.path for e in a.entries()]
    verbose = run_cpio(["-tv", "--quiet"], a.to_bytes(), tmp_path)
    line = next(ln for ln in verbose.splitlines() if ln.endswith("dev/console"))
    assert line.startswith("crw-------")
    assert "5,   1" in line or "5, 1" in line
    line = next(ln for ln in verbose.splitlines() if "bin/sh" in ln)
    assert line.startswith("lrwxrwxrwx") and line.endswith("bin/sh -> busybox")


def check_extracted(a: Archive, root: Path) -> None:
    for e in a.entries():
        p = root / e.path
        st_ = os.lstat(p)
        assert stat.S_IFMT(st_.st_mode) == stat.S_IFMT(e.mode), e.path
        if stat.S_ISLNK(e.mode):
            assert os.readlink(p) == e.data.decode(), e.path
            continue
        assert stat.S_IMODE(st_.st_mode) == stat.S_IMODE(e.mode), e.path
        if stat.S_ISREG(e.mode):
            assert p.read_bytes() == e.data, e.path
        elif stat.S_ISCHR(e.mode):
            assert (os.major(st_.st_rdev), os.minor(st_.st_rdev)) == (e.rdev_major, e.rdev_minor)


def extract(a: Archive, root: Path) -> None:
    root.mkdir()
    run_cpio(
        ["-i", "-d", "--quiet", "--no-absolute-filenames", "--preserve-modification-time"],
        a.to_bytes(),
        root,
    )


def can_mknod(tmp_path: Path) -> bool:
    try:
        os.mknod(tmp_path / "probe", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except OSError:
        return False
    os.unlink(tmp_path / "probe")
    return True


@needs_cpio
def test_gnu_cpio_extracts(tmp_path: Path) -> None:
    a = sample_archive()
    if not can_mknod(tmp_path):
        # Unprivileged: rebuild the sample without device nodes, which cpio cannot create.
        a = archive_from_entries(e for e in a.entries() if not stat.S_ISCHR(e.mode))
    extract(a, tmp_path / "root")
    check_extracted(a, tmp_path / "root")
    extracted = sorted(
        str(p.relative_to(tmp_path / "root")) for p in (tmp_path / "root").rglob("*")
    )
    assert extracted == sorted(e.path for e in a.entries())


@needs_cpio
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(trees())
def test_gnu_cpio_extracts_property(
    tmp_path_factory: pytest.TempPathFactory, specs: list[tuple[str, str, object, int]]
) -> None:
    # Directories without owner write/exec would stop unprivileged extraction of their
    # children, and device nodes need CAP_MKNOD; keep the property about content.
    specs = [s for s in specs if s[0] != "chardev"]
    specs = [(k, p, d, perm | 0o700 if k == "dir" else perm) for k, p, d, perm in specs]
    a = build(specs)
    root = tmp_path_factory.mktemp("x") / "root"
    extract(a, root)
    check_extracted(a, root)


# ------------------------------------------------------------------ build errors


def test_duplicate_path_with_different_content() -> None:
    a = Archive()
    a.add_file("etc/hostname", b"a")
    with pytest.raises(ValueError, match="etc/hostname"):
        a.add_file("etc/hostname", b"b")
    with pytest.raises(ValueError, match="etc/hostname"):
        a.add_file("etc/hostname", b"a", 0o600)
    with pytest.raises(ValueError, match="etc/hostname"):
        a.add_symlink("etc/hostname", "a")
    with pytest.raises(ValueError, match="etc/hostname"):
        a.add_dir("etc/hostname")


def test_type_conflicts_with_implicit_dirs() -> None:
    a = Archive()
    a.add_file("lib/modules/x.ko", b"")
    with pytest.raises(ValueError, match="lib/modules"):
        a.add_file("lib/modules", b"")
    a.add_file("bin/busybox", b"")
    with pytest.raises(ValueError, match="bin/busybox"):
        a.add_file("bin/busybox/oops", b"")


def test_failed_add_leaves_archive_unchanged() -> None:
    a = Archive()
    a.add_file("f", b"1")
    before = a.to_bytes()
    with pytest.raises(ValueError):
        a.add_file("f", b"2")
    with pytest.raises(ValueError):
        a.add_file("f/x/y", b"")  # parent "f" is a file; must not create "f/x" either
    with pytest.raises(ValueError):
        a.add_file("new/a/../b", b"")
    assert a.to_bytes() == before


@pytest.mark.parametrize(
    "path",
    ["", "/abs", "a//b", "a/", "..", "a/../b", "a/..", "./a", "a/./b", "a\0b", "TRAILER!!!"],
)
def test_bad_paths_rejected(path: str) -> None:
    a = Archive()
    with pytest.raises(ValueError):
        a.add_file(path, b"")
    with pytest.raises(ValueError):
        a.add_dir(path)
    assert a.entries() == []


@pytest.mark.parametrize("mode", [-1, 0o10000, stat.S_IFREG | 0o644])
def test_bad_modes_rejected(mode: int) -> None:
    with pytest.raises(ValueError, match="mode"):
        Archive().add_file("f", b"", mode)


def test_bad_symlink_and_device_rejected() -> None:
    a = Archive()
    with pytest.raises(ValueError):
        a.add_symlink("l", "")
    with pytest.raises(ValueError):
        a.add_chardev("c", -1, 0)
    with pytest.raises(ValueError):
        a.add_chardev("c", 0, 2**32)


def test_oversize_file_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    assert cpio.MAX_FILE_SIZE == 2**32 - 1
    # Allocating 4 GiB in a unit test is not reasonable; shrink the limit instead.
    monkeypatch.setattr(cpio, "MAX_FILE_SIZE", 8)
    a = Archive()
    a.add_file("ok", b"x" * 8)
    with pytest.raises(ValueError, match="big"):
        a.add_file("big", b"x" * 9)
    with pytest.raises(ValueError, match="link"):
        a.add_symlink("link", "y" * 9)


def test_header_field_overflow_rejected() -> None:
    with pytest.raises(ValueError, match="filesize"):
        cpio._header(ino=1, mode=0, nlink=1, filesize=2**32, rdevmajor=0, rdevminor=0, namesize=2)


# ------------------------------------------------------------------ write()


def test_write_atomic(tmp_path: Path) -> None:
    dest = tmp_path / "initramfs.cpio"
    dest.write_bytes(b"old garbage")
    a = sample_archive()
    a.write(dest)
    assert dest.read_bytes() == a.to_bytes()
    assert stat.S_IMODE(dest.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["initramfs.cpio"]
    a.write(dest)  # rewriting identical content is fine too
    assert dest.read_bytes() == a.to_bytes()


def test_write_failure_leaves_no_temp(tmp_path: Path) -> None:
    dest = tmp_path / "is-a-dir"
    (dest / "child").mkdir(parents=True)
    with pytest.raises(OSError):
        sample_archive().write(dest)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["is-a-dir"]


# ------------------------------------------------------------ malformed archives


def good() -> bytes:
    a = Archive()
    a.add_file("abc", b"hello")  # 5 bytes: exercises data padding
    return a.to_bytes()


def patch(data: bytes, off: int, new: bytes) -> bytes:
    return data[:off] + new + data[off + len(new) :]


def field_off(index: int, member_off: int = 0) -> int:
    return member_off + 6 + 8 * index


def test_truncated_archives() -> None:
    data = good()
    trailer_end = len(data.rstrip(b"\0"))
    # The trailer name ends in "!!!\0"; rstrip took its NUL (and the zero padding) off.
    trailer_end += 1
    for n in range(trailer_end):
        with pytest.raises(CpioError):
            read_archive(data[:n])
    with pytest.raises(CpioError, match="truncated"):
        read_archive(data[: HEADER_LEN - 1])
    with pytest.raises(CpioError, match="truncated"):
        read_archive(data[: HEADER_LEN + 4])
    # The final 512-byte padding is optional.
    trailer_padded = trailer_end + (-trailer_end % 4)
    assert read_archive(data[:trailer_padded]) == read_archive(data)


def test_empty_input() -> None:
    with pytest.raises(CpioError, match="TRAILER"):
        read_archive(b"")
    with pytest.raises(CpioError, match="TRAILER"):
        read_archive(b"\0" * 512)


def test_bad_magic() -> None:
    with pytest.raises(CpioError, match="magic"):
        read_archive(patch(good(), 0, b"070707"))
    with pytest.raises(CpioError, match="crc"):
        read_archive(patch(good(), 0, b"070702"))
    with pytest.raises(CpioError, match="magic"):
        read_archive(b"\x1f\x8b" + good()[2:])  # gzip-compressed input, say


def test_nonzero_check_field() -> None:
    with pytest.raises(CpioError, match="check"):
        read_archive(patch(good(), field_off(12), b"00000001"))


def test_non_hex_field() -> None:
    with pytest.raises(CpioError, match="filesize"):
        read_archive(patch(good(), field_off(6), b"0000000G"))
    with pytest.raises(CpioError, match="mode"):
        read_archive(patch(good(), field_off(1), b"+0000000"))


def test_bad_padding() -> None:
    data = good()
    # Header + "abc\0" is 114 bytes, padded to 116; data "hello" is then padded 5 -> 8.
    data_start = HEADER_LEN + 4 + 2
    with pytest.raises(CpioError, match="name padding"):
        read_archive(patch(data, HEADER_LEN + 4, b"\x01"))
    with pytest.raises(CpioError, match="data padding"):
        read_archive(patch(data, data_start + 5, b"\x01"))
    a = Archive()
    a.add_file("ab", b"")  # 110 + 3 = 113 -> 3 bytes of name padding
    with pytest.raises(CpioError, match="name padding"):
        read_archive(patch(a.to_bytes(), HEADER_LEN + 3, b"x"))


def test_missing_or_bad_trailer() -> None:
    data = good()
    first_member_len = HEADER_LEN + 4 + 2 + 8
    with pytest.raises(CpioError, match="TRAILER"):
        read_archive(data[:first_member_len])
    with pytest.raises(CpioError, match="TRAILER"):
        read_archive(data[:first_member_len] + b"\0" * 400)
    with pytest.raises(CpioError, match="after TRAILER"):
        read_archive(data + b"junk")
    with pytest.raises(CpioError, match="after TRAILER"):
        read_archive(data + data)  # concatenated archives are deliberately rejected


def test_bad_names() -> None:
    data = good()
    with pytest.raises(CpioError, match="namesize"):
        read_archive(patch(data, field_off(11), b"00000000"))
    with pytest.raises(CpioError, match="NUL"):
        read_archive(patch(data, HEADER_LEN + 3, b"d"))
    with pytest.raises(CpioError, match="NUL"):
        read_archive(patch(data, HEADER_LEN + 1, b"\0"))


def test_bad_mode_and_dir_with_data() -> None:
    data = good()
    with pytest.raises(CpioError, match="file type"):
        read_archive(patch(data, field_off(1), b"000001A4"))
    with pytest.raises(CpioError, match="directory"):
        read_archive(patch(data, field_off(1), b"%08X" % (stat.S_IFDIR | 0o755)))


@settings(max_examples=300)
@given(st.data())
def test_corruption_only_raises_cpio_error(data: st.DataObject) -> None:
    raw = bytearray(sample_archive().to_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    try:
        read_archive(bytes(raw[:cut]))
    except CpioError:
        pass


@given(st.binary(max_size=300))
def test_random_bytes_only_raise_cpio_error(raw: bytes) -> None:
    try:
        read_archive(b"070701" + raw)
    except CpioError:
        pass
