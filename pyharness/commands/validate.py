"""Reviewer patch validation: a zsmalloc series, patch by patch, on each kernel.

`zskit validate SERIES...` reads a series (files from `git format-patch`, an
mbox, or a directory of them), applies it with `git am` onto pristine files
of the kernel's own linux-source package and checks every cumulative state
(base+1, base+1+2, ...):

  apply       git am; rejected hunks are quoted with file and hunk
  build       zsmalloc.ko (and zstest.ko) against the patched mm/zsmalloc.c and
              include/linux/zsmalloc.h; compiler warnings the base lacks fail it
  checkpatch  the kernel's scripts/checkpatch.pl on the patch itself
  load        the modules load in the guest
  suite       run.run: the default workload checked against the model (results,
              class table, data), with crash triage
  perf        pool pages and time of a fixed workload against the base, every
              variant measured in one boot (density and speed ratios)
  zram        when the series reaches zram (its files, or a header it includes) and
              the kernel has CONFIG_ZRAM=m: the patched zram.ko round-trips data on
              the patched zsmalloc.ko in the suite's boot (clients.py)
  zswap       the same rule for mm/zswap.c: compiled against a kernel with
              CONFIG_ZSWAP=y, never run (it is part of vmlinux)

Kernels (`Target`): Debian's where zsmalloc is a module (6.1), else the
source-built minimal kernel of the series (6.12, 7.2); --variant picks
minimal or debug for all. A source-built kernel's own unpacked source tree
is the pristine tree.

Where things live:
  <cache>/validate/<series>/<version>/  members.txt (the source tarball's listing)
      and tree/ (pristine files taken from linux-source-<series>, never modified)
  build/validate/<series>/              warm Kbuild dirs (base/, step/) and built
      modules by content (objs/)
  build/results/validate-<stamp>/       report.md, results.json, summary.txt,
      patches/ and a directory per kernel and patch

Patches are applied in a temporary git repository, deleted as soon as every
patched state has been read into memory, so nothing half-patched outlives a
run and every run starts from the pristine files.
"""

from __future__ import annotations

import concurrent.futures
import email
import email.policy
import hashlib
import json
import os
import posixpath
import re
import shutil
import statistics
import subprocess
import tarfile
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..guest import clients, initramfs, qemu
from ..guest.zstest import CTL, ZsTest, parse_result
from ..kernel.api import api_for
from ..kernel.identity import DISTRO, KernelId
from ..kernel.manifest import Kernel
from ..kernel.provision import provision, source_for
from ..kmod import build, render
from ..kmod.checkpatch import StyleReport, checkpatch
from ..locking import locked
from ..paths import BUILD, RESULTS, cache_dir
from ..progress import Progress, StageError
from ..report import Case, RunResult, new_results_dir
from . import run
from .config import Config

SOURCE = "mm/zsmalloc.c"
HEADER = "include/linux/zsmalloc.h"
BUILT = (SOURCE, HEADER)  # built on every kernel; see Plan for the rest
# Taken on the first pass over the source tarball, so most series need no second pass.
PREFETCH = ("mm/", "include/linux/", "drivers/block/zram/", "Documentation/mm/")
PATCH_SUFFIXES = (".patch", ".diff", ".mbox", ".mbx", ".eml")
WORK = BUILD / "validate"
OBJS_KEPT = 200  # built states kept by content (about 100 KiB each)

# The fixed workload of the density and speed comparison: churn leaves the same
# live set for any allocator that accepts the same sizes; then compaction. The
# pool is destroyed at the end, so the batch can run again on the same modules.
PERF_LINES = (
    "create perf",
    "churn 20251125 20000 1073741824 8192",
    "stats",
    "compact",
    "stats",
    "destroy perf",
)
PERF_FILE = "/tmp/zskit-perf"
PERF_ROUNDS = 2  # loads of each variant, each between two loads of the base
PERF_REPEATS = 2  # runs of the workload per load; the best counts
_NOW = "$(head -n 3 /proc/timer_list | sed -n 's/^now at \\([0-9]*\\) nsecs$/\\1/p')"
# Timed in the guest (/proc/timer_list has nanoseconds; busybox date has not).
PERF_COMMAND = (
    f"t0={_NOW}; dd if={PERF_FILE} of={CTL} bs=4M 2>/dev/null; t1={_NOW}; "
    f'echo "elapsed $((${{t1:-0}} - ${{t0:-0}}))"; cat {CTL}'
)
# Suite failures that say nothing against measuring the modules' density and speed.
MODEL_KINDS = ("class-stats", "command-result", "values", "pages", "huge_class_size", "compacted")

DIFF_GIT = re.compile(r'^diff --git "?a/(.+?)"? "?b/(.+?)"?$')
HUNK = re.compile(r"^@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@")
NUMBERING = re.compile(r"\[[^\]]*?(\d+)/(\d+)\s*\]")
BASE_COMMIT = re.compile(r"^base-commit: *([0-9a-f]{7,40})\s*$", re.M)


class ValidateError(StageError):
    """The input cannot be validated (not a patch, another tree, unknown base...)."""


# ---------------------------------------------------------------------------
# The series: mails parsed as git am parses them


@dataclass(frozen=True)
class FileChange:
    path: str  # the path after the patch (before it, for a deletion)
    old_path: str | None  # the path before the patch; None for a new file
    status: str  # modified, added, deleted, renamed
    old_blob: str | None  # abbreviated blob id of the pre-image (`index` line)
    hunks: int


@dataclass(frozen=True)
class Patch:
    number: int  # position in the series, from 1
    subject: str  # as git am records it, [PATCH n/m] removed
    raw_subject: str
    author: str  # "Name <email>"
    date: str
    message_id: str
    origin: str  # the file (and message) it came from
    mail: bytes
    files: tuple[FileChange, ...]
    numbering: tuple[int, int] | None  # [PATCH n/m]

    @property
    def slug(self) -> str:
        words = re.sub(r"[^A-Za-z0-9]+", "-", self.subject).strip("-")[:52].rstrip("-")
        return f"{self.number:04d}-{words or 'patch'}"

    def touched(self) -> list[str]:
        """Every path the patch reads or writes."""
        paths = [f.path for f in self.files] + [f.old_path for f in self.files if f.old_path]
        return list(dict.fromkeys(paths))


@dataclass(frozen=True)
class Series:
    patches: tuple[Patch, ...]
    cover: str | None = None  # subject of the cover letter
    base_commit: str | None = None  # `base-commit:` of git format-patch --base
    notes: tuple[str, ...] = ()

    @property
    def title(self) -> str:
        return self.cover or self.patches[0].subject


def _git_env() -> dict[str, str]:
    """git without the user's configuration (signing, am.threeWay...), in the C locale."""
    env = dict(os.environ)
    env.update(
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
        GIT_COMMITTER_NAME="zskit",
        GIT_COMMITTER_EMAIL="zskit@localhost",
        LC_ALL="C",
    )
    return env


def _git(
    cwd: Path, *args: str, check: bool = True, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    try:
        proc = subprocess.run(
            ["git", *args], cwd=cwd, env=_git_env(), input=stdin, capture_output=True
        )
    except FileNotFoundError:
        raise StageError("git is not installed; `apt-get install git`") from None
    if check and proc.returncode != 0:
        err = (proc.stderr or proc.stdout).decode(errors="replace").strip()
        raise StageError(f"git {args[0]} failed in {cwd}: {err}")
    return proc


def _diff_path(text: str) -> str | None:
    """The path of a ---/+++ line without its first component (-p1); None for /dev/null."""
    path = text.split("\t")[0].strip().strip('"')
    if path == "/dev/null":
        return None
    return path.split("/", 1)[1] if "/" in path else path


def parse_diff(text: str) -> tuple[FileChange, ...]:
    """The files a patch changes, from git's extended headers or plain ---/+++ pairs.

    Hunks are consumed by their line counts, so a removed line that starts
    with "-- " is never taken for a file header.
    """
    found: list[dict[str, object]] = []
    lines = text.splitlines()
    header = False  # between `diff --git` and the first hunk
    i = 0
    while i < len(lines):
        line = lines[i]
        hunk = HUNK.match(line)
        if m := DIFF_GIT.match(line):
            found.append({"old": m[1], "new": m[2], "status": "modified", "blob": None, "hunks": 0})
            header = True
        elif line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            old, new = _diff_path(line[4:]), _diff_path(lines[i + 1][4:])
            if not header:  # a plain diff (diff -u), no git header before it
                found.append({"old": old, "new": new, "status": "modified", "blob": None})
                found[-1]["hunks"] = 0
            current = found[-1]
            if old is None:
                current.update(status="added", old=None)
            elif new is None:
                current.update(status="deleted", new=old)
            header = False
            i += 2
            continue
        elif hunk and found:
            found[-1]["hunks"] = int(str(found[-1]["hunks"])) + 1
            header = False
            old_left, new_left = int(hunk[1] or 1), int(hunk[2] or 1)
            i += 1
            while i < len(lines) and (old_left > 0 or new_left > 0):
                kind = lines[i][:1]
                if kind in (" ", ""):
                    old_left, new_left = old_left - 1, new_left - 1
                elif kind == "-":
                    old_left -= 1
                elif kind == "+":
                    new_left -= 1
                elif kind != "\\":
                    break
                i += 1
            continue
        elif header and found:
            current = found[-1]
            if line.startswith("index "):
                current["blob"] = line.split()[1].split("..")[0]
            elif line.startswith("new file mode"):
                current.update(status="added", old=None)
            elif line.startswith("deleted file mode"):
                current["status"] = "deleted"
            elif line.startswith("rename from "):
                current["status"] = "renamed"
        i += 1
    changes: list[FileChange] = []
    for c in found:
        old, new = c["old"], c["new"]
        path = str(new if new is not None else old)
        for p in (path, old):
            if p is not None and (str(p).startswith("/") or ".." in str(p).split("/")):
                raise ValidateError(f"the patch names an unsafe path {p!r}")
        blob = c["blob"]
        changes.append(
            FileChange(
                path=path,
                old_path=None if old is None else str(old),
                status=str(c["status"]),
                old_blob=None if blob is None or set(str(blob)) == {"0"} else str(blob),
                hunks=int(str(c["hunks"])),
            )
        )
    return tuple(changes)


def _input_files(inputs: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for path in inputs:
        if path.is_dir():
            found = sorted(
                f for f in path.iterdir() if f.is_file() and f.suffix.lower() in PATCH_SUFFIXES
            )
            if not found:
                raise ValidateError(
                    f"{path} holds no patches (looked for {', '.join(PATCH_SUFFIXES)}); "
                    "write them with `git format-patch -o DIR`"
                )
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise ValidateError(f"{path}: no such file or directory")
    if not files:
        raise ValidateError("no input: name patch files, an mbox or a directory of patches")
    return files


def _split(path: Path, tmp: Path) -> list[bytes]:
    """The messages of a file, as git am splits them (a lone mail without a From line too)."""
    data = path.read_bytes()
    if not data.strip():
        raise ValidateError(f"{path} is empty: an mbox of a series holds at least one patch")
    out = Path(tempfile.mkdtemp(prefix="split-", dir=tmp))
    proc = _git(tmp, "mailsplit", "-b", f"-o{out}", str(path.resolve()), check=False)
    if proc.returncode != 0:
        why = proc.stderr.decode(errors="replace").strip().splitlines()
        raise ValidateError(
            f"{path} is neither a patch nor an mbox (git mailsplit: {why[0] if why else 'failed'})"
        )
    return [f.read_bytes() for f in sorted(out.iterdir())]


def _mailinfo(mail: bytes, origin: str, tmp: Path) -> tuple[dict[str, str], str, str]:
    """(Author/Email/Subject/Date, message, diff) of one mail, by git mailinfo."""
    msg, diff = tmp / "msg", tmp / "diff"
    proc = _git(tmp, "mailinfo", str(msg), str(diff), stdin=mail, check=False)
    if proc.returncode != 0:
        why = proc.stderr.decode(errors="replace").strip()
        raise ValidateError(
            f"{origin} is not a mail git am can read: {why or 'git mailinfo failed'}"
        )
    info: dict[str, str] = {}
    for line in proc.stdout.decode(errors="replace").splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            info[key] = value.strip()
    return info, msg.read_text(errors="replace"), diff.read_text(errors="replace")


def read_series(inputs: Sequence[Path]) -> Series:
    """Every patch of the inputs, in order; a cover letter and replies are set aside."""
    patches: list[Patch] = []
    notes: list[str] = []
    cover: str | None = None
    base: str | None = None
    with tempfile.TemporaryDirectory(prefix="zskit-mail-") as tmpdir:
        tmp = Path(tmpdir)
        for path in _input_files(inputs):
            mails = _split(path, tmp)
            for n, mail in enumerate(mails, 1):
                origin = str(path) if len(mails) == 1 else f"{path} (message {n})"
                info, message, diff = _mailinfo(mail, origin, tmp)
                headers = email.message_from_bytes(mail, policy=email.policy.default)
                raw_subject = " ".join(str(headers.get("Subject") or "").split())
                subject = info.get("Subject") or raw_subject
                numbering = None
                if m := NUMBERING.search(raw_subject):
                    numbering = (int(m[1]), int(m[2]))
                if found := BASE_COMMIT.search(message + diff):
                    base = base or found[1]
                if not diff.strip():
                    if numbering and numbering[0] == 0:
                        # git format-patch's placeholder, when nobody wrote a cover letter
                        cover = None if "*** SUBJECT HERE ***" in subject else subject
                    elif raw_subject.lower().startswith("re:"):
                        notes.append(f"skipped {origin}: a reply ({raw_subject!r}), not a patch")
                    else:
                        named = f" ({raw_subject!r})" if raw_subject else ""
                        raise ValidateError(f"{origin}{named} is not a patch: it holds no diff")
                    continue
                changes = parse_diff(diff)
                if not changes:
                    raise ValidateError(f"{origin} is not a patch: no file header in its diff")
                if not info.get("Email"):
                    raise ValidateError(
                        f"{origin} is a bare diff without mail headers (From:, Subject:), which "
                        "git am needs for the author and subject: write the series with "
                        "`git format-patch`"
                    )
                author = f"{info.get('Author') or info['Email']} <{info['Email']}>"
                patches.append(
                    Patch(
                        number=len(patches) + 1,
                        subject=subject,
                        raw_subject=raw_subject,
                        author=author,
                        date=info.get("Date", ""),
                        message_id=str(headers.get("Message-ID") or "").strip("<> "),
                        origin=origin,
                        mail=mail,
                        files=changes,
                        numbering=numbering,
                    )
                )
    if not patches:
        what = "only a cover letter" if cover else "no patch"
        raise ValidateError(f"{', '.join(map(str, inputs))} holds {what}: nothing to validate")
    numbers = [p.numbering[0] for p in patches if p.numbering]
    if numbers and numbers != sorted(numbers):
        notes.append(
            f"the [PATCH n/m] numbers are out of order ({', '.join(map(str, numbers))}); "
            "patches are applied in file order, as git am does"
        )
    return Series(tuple(patches), cover, base, tuple(notes))


# ---------------------------------------------------------------------------
# Pristine sources: files of the kernel's linux-source package, in the cache


@dataclass(frozen=True)
class SourceTree:
    """Pristine files of one linux-source package and the full listing of its tarball."""

    label: str  # "linux-source-6.1 6.1.192-2"
    root: Path  # extracted files, at their paths in the kernel tree
    members: frozenset[str]  # every file ("mm/zsmalloc.c") and directory ("mm/") of the tarball

    def has_file(self, path: str) -> bool:
        return path in self.members

    def has_dir_of(self, path: str) -> bool:
        parent = posixpath.dirname(path)
        return not parent or parent + "/" in self.members


def _source_deb(kernel: Kernel, top: Path, p: Progress) -> Path:
    """The linux-source .deb provisioning kept, or a fresh download of that version."""
    pattern = f"linux-source-{kernel.series}_*.deb"
    debs = cache_dir() / "debian" / kernel.series / "debs" / kernel.package_version
    for directory in (debs, top):
        if found := sorted(directory.glob(pattern)):
            return found[0]
    top.mkdir(parents=True, exist_ok=True)
    p.say(f"downloading linux-source-{kernel.series} {kernel.package_version}")
    apt_opts = ["-o", "APT::Sandbox::User=root"] if os.geteuid() == 0 else []
    p.run(
        [
            "apt-get",
            *apt_opts,
            "download",
            f"linux-source-{kernel.series}={kernel.package_version}",
        ],
        cwd=top,
        what="downloading the kernel source package",
        stream=True,
    )
    if found := sorted(top.glob(pattern)):
        return found[0]
    raise StageError(f"apt-get download left no {pattern} in {top}")


def _scan_source(
    deb: Path, series: str, exact: set[str], prefixes: tuple[str, ...], dest: Path
) -> list[str]:
    """One pass over the source tarball: its listing, and the wanted files written to dest."""
    top = f"linux-source-{series}/"
    names: list[str] = []
    dpkg = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    assert dpkg.stdout is not None
    inner = subprocess.Popen(
        ["tar", "-xOf", "-", f"./usr/src/linux-source-{series}.tar.xz"],
        stdin=dpkg.stdout,
        stdout=subprocess.PIPE,
    )
    dpkg.stdout.close()
    assert inner.stdout is not None
    try:
        with tarfile.open(fileobj=inner.stdout, mode="r|xz") as tar:
            for member in tar:
                name = member.name.removeprefix(top)
                if not name or name == member.name:
                    continue
                names.append(name.rstrip("/") + "/" if member.isdir() else name)
                if member.isfile() and (name in exact or name.startswith(prefixes)):
                    data = tar.extractfile(member)
                    assert data is not None
                    target = dest / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    part = target.with_name(target.name + ".part")
                    part.write_bytes(data.read())
                    part.replace(target)  # a file in the tree is always whole
    except (tarfile.TarError, EOFError, OSError) as e:
        raise StageError(
            f"cannot read the source tarball in {deb}: {e}; delete it and retry"
        ) from e
    finally:
        inner.stdout.close()
        for proc in (inner, dpkg):
            if proc.wait() != 0 and not names:
                raise StageError(f"cannot unpack {deb} (exit {proc.returncode})")
    return names


def source_tree(kernel: Kernel, wanted: Iterable[str], p: Progress) -> SourceTree:
    """Pristine files of the kernel's source: the wanted ones (and BUILT) at least."""
    cache = cache_dir()
    top = cache / "validate" / kernel.series / kernel.package_version
    listing, tree = top / "members.txt", top / "tree"
    label = f"linux-source-{kernel.series} {kernel.package_version}"
    with locked(cache / "locks" / f"validate-source-{kernel.series}.lock"):
        members = frozenset(listing.read_text().splitlines()) if listing.exists() else None
        want = set(wanted) | set(BUILT)
        missing = {
            w for w in want if not (tree / w).is_file() and (members is None or w in members)
        }
        if members is None or missing:
            deb = _source_deb(kernel, top, p)
            what = f"{len(missing)} file(s)" + (" and the listing" if members is None else "")
            p.say(f"taking {what} from {deb.name} (one pass over its tarball, 10-20 s)")
            prefixes = PREFETCH if members is None else ()
            names = _scan_source(deb, kernel.series, missing, prefixes, tree)
            if members is None:
                tmp = listing.with_suffix(".part")
                tmp.write_text("\n".join(names) + "\n")
                tmp.replace(listing)
                members = frozenset(names)
    for path in BUILT:
        if not (tree / path).is_file():
            raise StageError(f"{label} has no {path}; is it a kernel source package?")
    return SourceTree(label, tree, members)


# ---------------------------------------------------------------------------
# Applying: git am in a temporary repository holding the pristine files


@dataclass(frozen=True)
class Applied:
    """One patch on one kernel, applied on top of the earlier ones (or not)."""

    ok: bool
    rejects: tuple[str, ...] = ()  # quoted: file, hunk, its text
    contents: tuple[tuple[str, bytes | None], ...] = ()  # kept files after it; None: deleted

    def content(self, path: str) -> bytes | None:
        return dict(self.contents)[path]


@dataclass(frozen=True)
class AppliedSeries:
    tree: SourceTree
    base: tuple[tuple[str, bytes | None], ...]  # the kept files, pristine
    steps: tuple[Applied, ...]  # up to and including the first patch that does not apply
    base_blobs: dict[str, str]  # path -> how the series' first pre-image compares


def check_tree(series: Series, tree: SourceTree) -> None:
    """Refuse a series whose paths are not in the kernel tree (a patch for another project)."""
    bad: list[str] = []
    for patch in series.patches:
        for change in patch.files:
            if change.old_path is not None and not tree.has_file(change.old_path):
                bad.append(f"{change.old_path} (patch {patch.number}, {patch.origin})")
            elif change.old_path is None and not tree.has_dir_of(change.path):
                bad.append(f"{change.path} (a new file in a directory the kernel lacks)")
    if not bad:
        return
    hint = ""
    first = bad[0].split(" ")[0]
    parts = first.split("/")
    for n in range(1, len(parts)):
        if tree.has_file("/".join(parts[n:])):
            hint = (
                f"; {'/'.join(parts[n:])} exists: was the diff made {n} directory level(s) "
                "above the kernel's top directory?"
            )
            break
    raise ValidateError(
        f"the series is not for the Linux kernel tree: {tree.label} has no "
        + ", ".join(bad[:5])
        + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        + hint
        + ". Paths must be relative to the kernel's top directory, as git format-patch writes them"
    )


def _rejects(repo: Path, patch: Path) -> tuple[list[str], set[str]]:
    """Quotes of the hunks that do not apply, and the files they are in (git apply --reject)."""
    proc = _git(repo, "apply", "--reject", "--verbose", str(patch), check=False)
    output = (proc.stdout + proc.stderr).decode(errors="replace")
    numbers: dict[str, list[int]] = {}
    current = ""
    quotes: list[str] = []
    failed: set[str] = set()
    for line in output.splitlines():
        if m := re.match(r"^(?:Checking|Applying) patch (\S+?)(?:\.\.\.| with)", line):
            current = m[1]
        elif m := re.match(r"^Rejected hunk #(\d+)\.", line):
            numbers.setdefault(current, []).append(int(m[1]))
        elif m := re.match(r"^error: (\S+): (.*)$", line):
            if m[2] != "patch does not apply":
                failed.add(m[1])
                quotes.append(f"{m[1]}: {m[2]}")
    for rej in sorted(repo.rglob("*.rej")):
        path = rej.relative_to(repo).as_posix().removesuffix(".rej")
        failed.add(path)
        hunks = re.split(r"(?m)^(?=@@ )", rej.read_text(errors="replace"))[1:]
        for n, hunk in enumerate(hunks):
            number = numbers.get(path, [])[n] if n < len(numbers.get(path, [])) else n + 1
            body = hunk.rstrip("\n").splitlines()
            shown = body[:16] + ([f"... ({len(body) - 16} more lines)"] if len(body) > 16 else [])
            where = re.match(r"@@ -(\d+)", body[0])
            at = f" (expected at line {where[1]})" if where else ""
            quotes.append(f"{path}: hunk #{number} rejected{at}:\n" + "\n".join(shown))
    if not quotes:
        quotes = [line for line in output.splitlines() if line.startswith("error:")] or [
            output.strip() or "git am refused the patch"
        ]
    return quotes, failed


def _snapshot(repo: Path, paths: Iterable[str]) -> tuple[tuple[str, bytes | None], ...]:
    return tuple(
        (p, (repo / p).read_bytes() if (repo / p).is_file() else None) for p in sorted(paths)
    )


def apply_series(
    series: Series,
    tree: SourceTree,
    mails: Sequence[Path],
    repo: Path,
    keep: Iterable[str] = (),
) -> AppliedSeries:
    """git am each patch onto the pristine files in a new repository at `repo`.

    Every state keeps BUILT, the files the series touches and `keep` (what the
    kernel's Plan builds). Stops at the first patch that does not apply. A first
    patch that fails on a file whose pre-image (its `index` line) is not the
    kernel's is a series for another base: an error, not a verdict.
    """
    check_tree(series, tree)
    paths = {p for patch in series.patches for p in patch.touched()} | set(BUILT) | set(keep)
    repo.mkdir(parents=True)
    for path in sorted(paths):
        if tree.has_file(path) and (tree.root / path).is_file():
            (repo / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(tree.root / path, repo / path)
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    ident = ("-c", "user.name=zskit", "-c", "user.email=zskit@localhost")
    _git(repo, *ident, "commit", "-q", "-m", f"{tree.label} (pristine)")
    blobs = {}
    for line in _git(repo, "ls-tree", "-r", "HEAD").stdout.decode().splitlines():
        meta, path = line.split("\t", 1)
        blobs[path] = meta.split()[2]
    first: dict[str, tuple[int, str | None]] = {}  # path -> (patch, pre-image blob) at first touch
    for patch in series.patches:
        for change in patch.files:
            if change.old_path is not None:
                first.setdefault(change.old_path, (patch.number, change.old_blob))
    base_blobs: dict[str, str] = {}
    for path, (_, blob) in sorted(first.items()):
        have = blobs.get(path, "")
        if blob is None:
            base_blobs[path] = "no index line in the patch"
        elif have.startswith(blob):
            base_blobs[path] = f"matches ({blob})"
        else:
            base_blobs[path] = (
                f"differs: the series starts from {blob}, the package has {have[:12]}"
            )
    base = _snapshot(repo, paths)
    steps: list[Applied] = []
    for patch, mail in zip(series.patches, mails, strict=True):
        proc = _git(repo, "am", "--quiet", str(mail), check=False)
        if proc.returncode == 0:
            steps.append(Applied(True, (), _snapshot(repo, paths)))
            continue
        _git(repo, "am", "--abort", check=False)
        quotes, failed = _rejects(repo, mail)
        _git(repo, "reset", "-q", "--hard")
        _git(repo, "clean", "-fdqx")
        foreign = [
            path
            for path in sorted(failed)
            if first.get(path, (0, None))[0] == patch.number
            and base_blobs.get(path, "").startswith("differs")
        ]
        if foreign:
            path = foreign[0]
            based = f" (base-commit: {series.base_commit})" if series.base_commit else ""
            raise ValidateError(
                f"the series' base is unknown: patch {patch.number} ({patch.subject!r}) expects "
                f"{path} at blob {first[path][1]}, {tree.label} has {blobs.get(path, '?')[:12]}, "
                f"and it does not apply there{based}. Rebase the series onto the kernel's source, "
                "or validate it on the kernel it was made for (--kernel)"
            )
        steps.append(Applied(False, tuple(quotes)))
        break
    return AppliedSeries(tree, base, tuple(steps), base_blobs)


# ---------------------------------------------------------------------------
# Building: zsmalloc.ko and zstest.ko (and zram.ko, zswap.o) against the patched sources


@dataclass(frozen=True)
class Plan:
    """What each state of the series is built into on one kernel, by tree path.

    zsmalloc.c and its mm/ headers go into the modules' Kbuild directory; files
    under include/ (zsmalloc.h at least) into an include/ there that comes before
    the kernel's own; zram's directory into zram/ of the same Kbuild directory
    (so modpost takes zs_* from the zsmalloc.ko beside it); zswap.c and mm/'s
    headers into a directory of their own, compiled against a kernel with
    CONFIG_ZSWAP=y. A user of zsmalloc is built when the series touches it or a
    header its sources include.
    """

    sources: tuple[str, ...]  # zsmalloc.c and the mm/ headers it includes
    overlay: tuple[str, ...]  # include/... files
    zram: tuple[str, ...] = ()  # drivers/block/zram/ files; () when zram is not built
    zswap: tuple[str, ...] = ()  # mm/zswap.c and mm/*.h; () when zswap is not compiled
    zram_why: str = ""  # why zram is not built (said in its check)
    zswap_why: str = ""
    zswap_kernel: Kernel | None = None  # the kernel zswap.o is compiled against

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.sources, *self.overlay, *self.zram, *self.zswap)))


def _includes(text: bytes) -> list[str]:
    """Tree paths a C file includes: <x> as include/x, "x" as a sibling (dir left to the caller)."""
    found = [f"include/{m.decode()}" for m in re.findall(rb"^#include <([\w./-]+)>", text, re.M)]
    return found + [m.decode() for m in re.findall(rb'^#include "([\w.-]+)"', text, re.M)]


def _uses(tree: SourceTree, files: Sequence[str], changed: set[str]) -> str | None:
    """The first changed path among the files and the headers they include, or None."""
    for path in files:
        if path in changed:
            return path
        if not path.endswith((".c", ".h")) or not (tree.root / path).is_file():
            continue
        for inc in _includes((tree.root / path).read_bytes()):
            full = (
                inc if inc.startswith("include/") else posixpath.join(posixpath.dirname(path), inc)
            )
            if full in changed:
                return full
    return None


def make_plan(
    series: Series,
    tree: SourceTree,
    kernel: Kernel,
    label: str,
    zswap_kernel: Kernel | None,
    zswap_missing: str = "",
) -> Plan:
    """The Plan of a series on a kernel (`label` names it in the reasons given)."""
    touched = {p for patch in series.patches for p in patch.touched()}
    local = [
        f"mm/{inc}"
        for inc in _includes((tree.root / SOURCE).read_bytes())
        if not inc.startswith("include/") and tree.has_file(f"mm/{inc}")
    ]
    sources = (SOURCE, *local)
    overlay = tuple(sorted({HEADER} | {p for p in touched if p.startswith("include/")}))
    zram_tree = clients.zram_files(tree.members) + sorted(
        p for p in touched if p.startswith(clients.ZRAM_DIR)
    )
    zram_tree = list(dict.fromkeys(zram_tree))
    zram: tuple[str, ...] = ()
    why = _uses(tree, zram_tree, touched)
    if why is None:
        zram_why = "not run: the series touches neither zram nor a header it includes"
    elif kernel.config("ZRAM") != "m":
        zram_why = (
            f"not run: {why} is changed, but Linux {label} has CONFIG_ZRAM="
            f"{kernel.config('ZRAM') or 'n'}, so zram cannot be loaded from the patched tree"
        )
    else:
        zram, zram_why = tuple(zram_tree), ""
    zswap_files = [clients.ZSWAP]
    zswap: tuple[str, ...] = ()
    why = _uses(tree, zswap_files, touched) if tree.has_file(clients.ZSWAP) else None
    if why is None:
        zswap_why = "not compiled: the series touches neither mm/zswap.c nor a header it includes"
    elif zswap_kernel is None:
        zswap_why = f"not compiled: {why} is changed, but {zswap_missing}"
    else:
        mm = clients.mm_headers(tree.members) + sorted(
            p for p in touched if re.fullmatch(r"mm/[\w.-]+\.h", p)
        )
        zswap = tuple(dict.fromkeys([clients.ZSWAP, *mm]))
        zswap_why = ""
    return Plan(sources, overlay, zram, zswap, zram_why, zswap_why, zswap_kernel if zswap else None)


@dataclass(frozen=True)
class Built:
    ok: bool
    key: str  # hash of everything built; equal keys are equal modules
    modules: tuple[Path, ...] = ()  # zsmalloc.ko, zstest.ko[, zram.ko] (debug info stripped)
    warnings: tuple[str, ...] = ()
    error: str | None = None
    seconds: float = 0.0
    cached: bool = False
    sources: tuple[Path, ...] = ()  # the files built, as saved in the results
    zswap: str = ""  # "": not compiled; "ok"; else the compile errors of zswap.o

    def module(self, name: str) -> Path | None:
        return next((m for m in self.modules if m.name == f"{name}.ko"), None)


def warning_key(warning: str) -> str:
    """A warning without its line and column, which a patch moves."""
    return re.sub(r"^([^:\s]+):\d+(?::\d+)?:", r"\1:", warning)


def new_warnings(base: Sequence[str], step: Sequence[str]) -> list[str]:
    """The step's warnings that the base does not have (as many times)."""
    left = Counter(warning_key(w) for w in base)
    found: list[str] = []
    for w in dict.fromkeys(step):
        if left[warning_key(w)] > 0:
            left[warning_key(w)] -= 1
        else:
            found.append(w)
    return found


def _strip(src: Path, dest: Path) -> None:
    """A module without debug info: a tenth of the size in the initramfs, same code."""
    if shutil.which("strip"):
        proc = subprocess.run(["strip", "--strip-debug", "-o", str(dest), str(src)])
        if proc.returncode == 0:
            return
    shutil.copy2(src, dest)


SOURCE_FILES = re.compile(r"(\.[ch]|/Makefile|/Kbuild|/Kconfig)$")


def _sync(directory: Path, files: dict[Path, bytes], managed: Sequence[Path]) -> None:
    """Write the files whose content changed (the others keep their mtime: Kbuild stays
    warm) and delete sources a previous state left in the managed subdirectories."""
    for path, data in files.items():
        if not (path.exists() and path.read_bytes() == data):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    for sub in managed:
        if not sub.is_dir():
            continue
        for old in sub.rglob("*"):
            if old.is_file() and old not in files and SOURCE_FILES.search(old.as_posix()):
                old.unlink()


class Builder:
    """Builds the base and each step in warm Kbuild directories; modules are kept by content."""

    def __init__(
        self,
        kernel: Kernel,
        rendered: render.RenderedSources,
        work: Path,
        plan: Plan,
        pristine: dict[str, bytes | None],
    ) -> None:
        self.kernel = kernel
        self.work = work
        self.plan = plan
        self.pristine = pristine
        self.zstest = (rendered.directory / "zstest.c").read_bytes()
        self.kbuild = (rendered.directory / "Kbuild").read_bytes()

    def key(self, contents: dict[str, bytes | None]) -> str:
        digest = hashlib.sha256(self.kernel.release.encode() + str(self.kernel.kdir).encode())
        if self.plan.zswap_kernel is not None:
            digest.update(str(self.plan.zswap_kernel.kdir).encode())
        for part in (self.zstest, self.kbuild):
            digest.update(hashlib.sha256(part).digest())
        for path in self.plan.paths:
            data = contents.get(path)
            digest.update(path.encode() + b"\0")
            digest.update(hashlib.sha256(data if data is not None else b"\0deleted").digest())
        return digest.hexdigest()[:20]

    def _overlay(self, directory: Path, contents: dict[str, bytes | None]) -> dict[Path, bytes]:
        return {
            directory / path: data
            for path in self.plan.overlay
            if (data := contents.get(path)) is not None
        }

    def _flags(self, directory: Path) -> bytes:
        # NOSTDINC_FLAGS comes before the kernel's own -I in Kbuild's command line: the
        # patched headers are seen instead of the kernel's.
        inc = directory / "include"
        return f"NOSTDINC_FLAGS += -I{inc} -I{inc / 'uapi'}\n".encode()

    def _compose(self, directory: Path, contents: dict[str, bytes | None]) -> tuple[str, ...]:
        """The rendered driver and Kbuild, the patched sources; the module names."""
        kbuild = self.kbuild + self._flags(directory)
        modules = ["zsmalloc", "zstest"]
        if self.plan.zram:
            kbuild += b"obj-m += zram/\n"
            modules.append(clients.ZRAM_MODULE)
        files = {directory / "zstest.c": self.zstest, directory / "Kbuild": kbuild}
        for path in self.plan.sources:
            if (data := contents.get(path)) is not None:
                files[directory / posixpath.basename(path)] = data
        files.update(self._overlay(directory, contents))
        for path in self.plan.zram:
            if (data := contents.get(path)) is not None:
                files[directory / "zram" / posixpath.basename(path)] = data
        _sync(directory, files, [directory / "include", directory / "zram"])
        return tuple(modules)

    def _changed(self, contents: dict[str, bytes | None], paths: Iterable[str]) -> bool:
        return any(contents.get(p) != self.pristine.get(p) for p in paths)

    def _zswap(self, name: str, contents: dict[str, bytes | None], log: Progress) -> Built:
        """zswap.o compiled against the plan's zswap kernel (only errors and warnings count)."""
        kernel = self.plan.zswap_kernel
        assert kernel is not None
        directory = self.work / f"{name}-zswap"
        files = {directory / "Kbuild": b"obj-y += zswap.o\n" + self._flags(directory)}
        for path in self.plan.zswap:
            if (data := contents.get(path)) is not None:
                files[directory / posixpath.basename(path)] = data
        files.update(self._overlay(directory, contents))
        directory.mkdir(parents=True, exist_ok=True)
        _sync(directory, files, [directory / "include"])
        (directory / "zswap.o").unlink(missing_ok=True)
        sources = render.RenderedSources(directory, tuple(files), ())
        try:
            result = build.build(kernel, sources, log, targets=("zswap.o",))
        except StageError as e:
            return Built(False, "", error=str(e).removeprefix("build failed:\n").strip())
        return Built(True, "", warnings=result.warnings)

    def build(self, name: str, contents: dict[str, bytes | None], out: Path) -> Built:
        """Build one state; `out` receives the sources and the build log."""
        start = time.monotonic()
        key = self.key(contents)
        saved = out / "sources"
        saved.mkdir(parents=True, exist_ok=True)
        sources = []
        for path in self.plan.paths:
            data = contents.get(path)
            if data is not None:
                (saved / path).parent.mkdir(parents=True, exist_ok=True)
                (saved / path).write_bytes(data)
                sources.append(saved / path)
        for fname, data in (("zstest.c", self.zstest), ("Kbuild", self.kbuild)):
            (saved / fname).write_bytes(data)
            sources.append(saved / fname)
        store = self.work / "objs" / key
        if (store / "build.json").exists():
            doc = json.loads((store / "build.json").read_text())
            modules = tuple(store / f for f in doc.get("modules", []))
            if modules and all(m.exists() for m in modules):
                (store / "build.json").touch()  # recently used: kept by prune()
                warnings = tuple(doc["warnings"])
                seconds = time.monotonic() - start
                return Built(
                    True,
                    key,
                    modules,
                    warnings,
                    None,
                    seconds,
                    True,
                    tuple(sources),
                    doc.get("zswap", ""),
                )
        deleted = [p for p in BUILT if contents.get(p) is None]
        if deleted:
            error = f"the patch deletes {', '.join(deleted)}, which zskit builds"
            return Built(False, key, error=error, sources=tuple(sources))
        directory = self.work / name
        names = self._compose(directory, contents)
        # Kbuild prints a file's warnings only when it compiles it: compile what may differ.
        (directory / "zsmalloc.o").unlink(missing_ok=True)
        headers = self._changed(contents, self.plan.overlay)
        if name == "base" or headers:
            (directory / "zstest.o").unlink(missing_ok=True)
        if name == "base" or headers or self._changed(contents, self.plan.zram):
            for obj in (directory / "zram").glob("*.o"):
                obj.unlink()
        rendered = render.RenderedSources(directory, (), names)
        with (out / "build.log").open("w") as log:
            progress = Progress(out=log)
            try:
                result = build.build(self.kernel, rendered, progress)
            except StageError as e:
                log.write(f"{e}\n")
                message = str(e).removeprefix("build failed:\n").strip()
                return Built(False, key, error=message, seconds=time.monotonic() - start)
            warnings = list(result.warnings)
            zswap = ""
            if self.plan.zswap:
                compiled = self._zswap(name, contents, progress)
                zswap = "ok" if compiled.ok else compiled.error or "failed"
                warnings += compiled.warnings
                if not compiled.ok:
                    log.write(f"zswap.o: {zswap}\n")
        part = store.with_name(f"{key}.part-{os.getpid()}")
        shutil.rmtree(part, ignore_errors=True)
        part.mkdir(parents=True)
        for ko in result.modules:
            _strip(ko, part / ko.name)
        doc = {"modules": [ko.name for ko in result.modules], "warnings": warnings, "zswap": zswap}
        (part / "build.json").write_text(json.dumps(doc) + "\n")
        shutil.rmtree(store, ignore_errors=True)
        part.rename(store)
        modules = tuple(store / ko.name for ko in result.modules)
        seconds = time.monotonic() - start
        return Built(
            True, key, modules, tuple(warnings), None, seconds, False, tuple(sources), zswap
        )

    def prune(self, keep: int = OBJS_KEPT) -> None:
        """Forget all but the most recently used built states."""
        stores = sorted(
            (d for d in (self.work / "objs").glob("*") if (d / "build.json").exists()),
            key=lambda d: (d / "build.json").stat().st_mtime,
            reverse=True,
        )
        for old in stores[keep:]:
            shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------
# Results of the checks


@dataclass
class Check:
    status: str  # pass, warn, fail, error (not the patch's doing), skip
    summary: str  # one line
    cell: str = ""  # the table's short form
    details: list[str] = field(default_factory=list)  # quoted lines

    def __post_init__(self) -> None:
        default = {"pass": "ok", "warn": "warn", "fail": "FAIL", "error": "ERROR"}
        self.cell = self.cell or default.get(self.status, "-")


@dataclass
class Perf:
    pages: int  # after the fixed workload
    base_pages: int
    pages_compacted: int  # after its compaction
    base_pages_compacted: int
    seconds: float  # the median of the loads' best times
    base_seconds: float
    speed: float  # the median of time / time of the base runs next to it
    pairs: int  # how many such comparisons

    @property
    def density(self) -> float:
        return self.pages / self.base_pages if self.base_pages else float("nan")


# One load of a variant in the perf boot: (variant, best seconds, pages, after compaction).
Sample = tuple[str, float, int, int]


def paired_ratios(timeline: Sequence[Sample]) -> dict[str, list[float]]:
    """Each variant's time over the mean of the base's loads right before and after it.

    The host's speed drifts over seconds (other guests, builds); neighbours in
    time share most of that drift, so their ratio keeps little of it.
    """
    ratios: dict[str, list[float]] = {}
    for i, (name, seconds, _, _) in enumerate(timeline):
        if name == "base":
            continue
        near = [
            timeline[j][1]
            for j in (i - 1, i + 1)
            if 0 <= j < len(timeline) and timeline[j][0] == "base"
        ]
        if near:
            ratios.setdefault(name, []).append(seconds / statistics.mean(near))
    return ratios


def base_drift(timeline: Sequence[Sample]) -> float:
    """The largest change between neighbouring loads of the base: the noise of a speed ratio
    (the same code measured twice; under TCG on a busy host it is tens of percent)."""
    times = [t for name, t, _, _ in timeline if name == "base"]
    return max((abs(b / a - 1) for a, b in zip(times, times[1:], strict=False)), default=0.0)


CHECKS = ("apply", "build", "checkpatch", "load", "suite", "zram", "zswap")
# zram: the patched zram.ko round-trips data on the patched zsmalloc in the suite's boot;
# zswap: the patched mm/zswap.c compiles (zswap is in vmlinux: never run).


@dataclass
class Step:
    """One patch on one kernel: its cumulative state's checks."""

    patch: int
    checks: dict[str, Check]
    perf: Perf | None = None
    perf_note: str = ""
    notes: list[str] = field(default_factory=list)
    directory: str = ""  # relative to the validation's directory
    built: Built | None = None
    suite_kind: str | None = None  # the suite's failure kind

    @property
    def verdict(self) -> str:
        statuses = [c.status for c in self.checks.values()]
        if "fail" in statuses:
            return "FAIL"
        if "error" in statuses:
            return "ERROR"
        if self.checks["apply"].status == "skip":
            return "NOT TESTED"
        return "PASS (warnings)" if "warn" in statuses else "PASS"

    @property
    def passed(self) -> bool:
        return self.verdict.startswith("PASS")

    def reason(self) -> str:
        """Why the verdict is what it is, in one sentence."""
        bad = [c.summary for c in self.checks.values() if c.status in ("fail", "error")]
        if bad:
            return "; ".join(bad)
        if self.verdict == "NOT TESTED":
            return self.checks["apply"].summary
        said = [c.summary for c in self.checks.values() if c.status in ("pass", "warn")]
        return "; ".join(said)


@dataclass
class KernelResult:
    kernel: KernelId
    release: str
    package_version: str
    source: str  # the pristine tree's label
    base_blobs: dict[str, str]
    base_warnings: list[str]
    steps: list[Step]
    perf_note: str = ""
    perf_noise: float = 0.0  # the base's own spread of times: speed nearer 1 is no change
    base_suite: str | None = None  # the base's suite verdict, when it was run
    seconds: float = 0.0
    clients: list[str] = field(default_factory=list)  # what of zram and zswap ran, and why


@dataclass
class Validation:
    directory: Path
    series: Series
    kernels: list[KernelResult]
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(s.passed for k in self.kernels for s in k.steps)

    def verdict(self, number: int) -> tuple[str, str]:
        """The patch's verdict over every kernel, and why."""
        steps = [(k, k.steps[number - 1]) for k in self.kernels]
        for wanted in ("FAIL", "ERROR", "NOT TESTED"):
            for k, s in steps:
                if s.verdict == wanted:
                    return wanted, f"on {k.kernel.label}: {s.reason()}"
        verdict = "PASS (warnings)" if any(s.verdict != "PASS" for _, s in steps) else "PASS"
        return verdict, "; ".join(f"{k.kernel.label}: {s.reason()}" for k, s in steps)


# ---------------------------------------------------------------------------
# The checks of one kernel


@dataclass(frozen=True)
class Target:
    """A kernel to validate on, and whether its variant was asked for."""

    kernel: KernelId
    chosen: bool = True  # the variant was asked for, not picked because distro cannot


def targets(names: Sequence[str], variant: str | None) -> list[Target]:
    """The kernels to validate on; refused, before anything slow, when one cannot be.

    Without a variant, a kernel whose Debian build has zsmalloc as a module (6.1)
    is Debian's, and one with zsmalloc built in (6.12, 7.2) is the source-built
    minimal kernel of the series (CONFIG_ZSMALLOC=m): only there can a patched
    zsmalloc.c be loaded as zsmalloc.ko.
    """
    found: list[Target] = []
    for name in dict.fromkeys(names):
        distro = source_for(KernelId(name))  # an unknown series is refused here
        api_for(name)
        if variant is None:
            picked = "minimal" if distro.zsmalloc_builtin else DISTRO
            found.append(Target(KernelId(name, picked), False))
            continue
        source_for(KernelId(name, variant))
        if variant == DISTRO and distro.zsmalloc_builtin:
            raise ValidateError(
                f"cannot validate zsmalloc patches on Debian's Linux {name}: it has zsmalloc "
                "built in (CONFIG_ZSMALLOC=y), so a patched mm/zsmalloc.c cannot be loaded as "
                "zsmalloc.ko next to it (modpost refuses a second export of every zs_*). "
                f"Use the source-built kernel of the series, which has CONFIG_ZSMALLOC=m: "
                f"--variant minimal (or debug), or leave --variant out"
            )
        found.append(Target(KernelId(name, variant)))
    return found


def not_built_note(patch: Patch, plan: Plan | None = None) -> str | None:
    """What the patch touches that zskit applies but neither builds nor compiles, said plainly."""
    built = set(plan.paths) if plan else set(BUILT)
    not_built = [f for f in patch.touched() if f not in built]
    if not not_built:
        return None
    users = [f for f in not_built if f.startswith(clients.ZRAM_DIR) or f == clients.ZSWAP]
    why = (
        "zsmalloc's users zram and zswap are built only where the kernel allows; " if users else ""
    )
    return (
        f"not built by zskit: {', '.join(not_built)} ({why}zskit builds {SOURCE}, "
        "the headers it and its users include, and zram and zswap when they are exercised; "
        "the rest comes from the kernel's build tree)"
    )


def _checkpatch(kernel: Kernel, mail: Path, out: Path) -> Check:
    try:
        report: StyleReport = checkpatch(kernel, mail, strict=False, patch=True)
    except StageError as e:
        return Check("error", f"checkpatch.pl did not run: {e}")
    findings = [f.replace(f"{mail}:", "patch line ", 1) for f in report.findings]
    out.write_text("\n".join(findings) + ("\n" if findings else ""))
    counts = f"{report.errors} errors, {report.warnings} warnings"
    if report.errors:
        return Check(
            "fail", f"checkpatch: {counts}", f"{report.errors}E {report.warnings}W", findings
        )
    if report.warnings:
        return Check("warn", f"checkpatch: {counts}", f"{report.warnings}W", findings)
    return Check("pass", "checkpatch clean")


def _build_check(built: Built, base: Built) -> Check:
    if not built.ok:
        error = built.error or "failed"
        lines = error.splitlines()
        return Check("fail", f"does not build: {lines[0].strip()}", details=lines)
    new = new_warnings(base.warnings, built.warnings)
    if new:
        return Check(
            "fail",
            f"builds with {len(new)} new compiler warning(s): {new[0]}",
            f"{len(new)} warn",
            new,
        )
    return Check("pass", "builds without new warnings")


def _suite_checks(result: RunResult) -> tuple[Check, Check, Check | None, str | None]:
    """(load, suite, zram or None when it did not run, failure kind) from a run of the suite."""
    zram_case = next((c for c in result.cases if c.name == "zram"), None)
    zram: Check | None = None
    if zram_case is not None:
        info = result.info.get("zram")
        summary = str(info.get("summary")) if isinstance(info, dict) else "zram round trip"
        details = [str(d) for d in info.get("details", [])] if isinstance(info, dict) else []
        if zram_case.failure is None:
            zram = Check("pass", summary)
        else:
            zram = Check("fail", summary, details=details or zram_case.failure.splitlines())
    failure = next((c for c in result.cases if c.failure is not None and c.name != "zram"), None)
    if failure is None:
        batches = sum(1 for c in result.cases if c.name.startswith("batch-"))
        ops = result.info.get("operations", 0)
        summary = f"suite passes ({ops} operations in {batches} batches agree with the model)"
        return Check("pass", "loads"), Check("pass", summary), zram, None
    text = failure.failure or failure.name
    lines = text.splitlines()
    first = lines[0].removeprefix(f"{failure.name}: ")
    kind = failure.kind or "error"
    if failure.name == "boot":
        if "insmod" in text:
            load = Check("fail", f"the module does not load ({kind}): {first}", details=lines[:30])
        else:
            load = Check("error", f"the guest did not boot ({kind}): {first}", details=lines[:30])
        return load, Check("skip", "suite not run: nothing loaded"), zram, kind
    if failure.name not in ("test",) and not failure.name.startswith("batch-"):
        load = Check("skip", f"not known: {failure.name} failed")
        return load, Check("error", f"{failure.name} failed: {first}"), zram, kind
    what = {
        "data": "data corrupted",
        "crash": "kernel crash",
        "timeout": "the guest hung",
        "protocol": "the driver broke its protocol",
        "exited": "QEMU exited",
        "command": "a guest command failed",
    }.get(kind, "the model disagrees")
    summary = f"suite fails, {what} ({kind}): {first}"
    if kind in MODEL_KINDS:
        summary += (
            " (if the patch changes the allocator's rules on purpose, pyharness/model.py must "
            "learn them)"
        )
    return Check("pass", "loads"), Check("fail", summary, details=lines[:30]), zram, kind


@dataclass
class _Context:
    config: Config
    kernel: Kernel
    directory: Path  # this kernel's results
    tmp: Path
    p: Progress
    label: str  # the kernel as the progress lines name it (KernelId.label)


def _zram_after(guest: qemu.Guest, result: RunResult, p: Progress) -> None:
    """The zram round trip, in the suite's boot after its workload: a case of its own."""
    start = time.monotonic()
    got = clients.zram_round_trip(guest, f"/{initramfs.MODULE_DIR}/zram.ko")
    failure = None if got.ok else got.summary + "".join(f"\n{d}" for d in got.details)
    result.cases.append(Case("zram", time.monotonic() - start, failure, got.kind))
    result.info["zram"] = {"summary": got.summary, "details": got.details, "mm_stat": got.mm_stat}
    p.say(got.summary)


def _run_suite(ctx: _Context, built: Built, out: Path) -> RunResult:
    """The default suite on these modules, through run.run (its own results directory);
    then, with a zram.ko, the zram round trip in the same boot."""
    image = initramfs.build_initramfs(
        built.modules, ctx.tmp / f"{out.parent.name}.cpio", qemu.Profile.load().shell_tty
    )
    allocator = [m for m in built.modules if m.name in ("zsmalloc.ko", "zstest.ko")]
    # zram.ko is in the image, loaded by the round trip, not at boot.
    image = initramfs.Initramfs(
        image.path, tuple(f"/{initramfs.MODULE_DIR}/{m.name}" for m in allocator)
    )
    sources = render.RenderedSources(out.parent / "sources", built.sources, ("zsmalloc", "zstest"))
    prepared = run.Prepared(
        ctx.kernel, sources, build.BuildResult(tuple(allocator), built.warnings), image
    )
    after = _zram_after if built.module("zram") else None
    with (out.parent / "zskit.log").open("w") as log:
        progress = Progress(verbose=ctx.p.verbose, out=ctx.p.out if ctx.p.verbose else log)
        options = run.RunOptions(results_dir=out, after=after)
        return run.run(ctx.config, progress, options, prepared=prepared)


def _perf(
    ctx: _Context, variants: dict[str, Built], rounds: int
) -> tuple[list[Sample], dict[str, str]]:
    """The fixed workload on every variant in one boot: its loads in order, and errors."""
    out = ctx.directory / "perf"
    out.mkdir(parents=True, exist_ok=True)
    staged = ctx.tmp / "perf-modules"
    staged.mkdir(exist_ok=True)
    files: list[Path] = []
    for name, built in variants.items():
        for ko in built.modules:
            if ko.name not in ("zsmalloc.ko", "zstest.ko"):
                continue
            files.append(staged / f"{name}-{ko.name}")
            shutil.copy2(ko, files[-1])
    shell_tty = qemu.Profile.load().shell_tty
    image = initramfs.build_initramfs(files, ctx.tmp / "perf.cpio", shell_tty)
    # Nothing loads at boot: each measurement loads its own pair and unloads it.
    image = initramfs.Initramfs(image.path, ())
    any_built = next(iter(variants.values()))
    prepared = run.Prepared(
        ctx.kernel,
        render.RenderedSources(staged, (), ()),
        build.BuildResult(any_built.modules, ()),
        image,
    )
    timeline: list[Sample] = []
    errors: dict[str, str] = {}
    with (out / "zskit.log").open("w") as log, (out / "session.log").open("w") as transcript:
        progress = Progress(verbose=ctx.p.verbose, out=ctx.p.out if ctx.p.verbose else log)
        try:
            with run.boot(ctx.config, progress, prepared, out / "console.log", transcript) as g:
                others = [name for name in variants if name != "base"]
                _perf_rounds(g, others, rounds, timeline, errors)
                if g.child is not None:
                    g.poweroff()
        except StageError as e:  # no boot, or a crash outside a measurement
            for name in variants:
                errors.setdefault(name, f"not measured: {str(e).splitlines()[0]}")
        finally:
            doc = {"workload": PERF_LINES, "timeline": timeline, "errors": errors}
            (out / "perf.json").write_text(json.dumps(doc, indent=2) + "\n")
    return timeline, errors


def _perf_rounds(
    guest: qemu.Guest,
    variants: list[str],
    rounds: int,
    timeline: list[Sample],
    errors: dict[str, str],
) -> None:
    """Loads in the order base, v1, base, v2, ..., base; reversed in odd rounds."""
    ZsTest(guest).upload(PERF_LINES, dest=PERF_FILE)
    for r in range(rounds):
        order = variants if r % 2 == 0 else variants[::-1]
        for name in ["base", *(x for v in order for x in (v, "base"))]:
            if name in errors:
                continue
            try:
                timeline.append(_measure(guest, name, PERF_REPEATS))
            except StageError as e:
                kind = getattr(e, "kind", "error")
                errors[name] = f"{kind}: {str(e).splitlines()[0]}"
                if guest.child is None or name == "base":  # nothing left to compare with
                    for other in ["base", *variants]:
                        errors.setdefault(other, f"not measured: the run of {name} failed")
                    return
                guest.run_status("rmmod zstest; rmmod zsmalloc")


def _measure(guest: qemu.Guest, name: str, repeats: int) -> Sample:
    """Load a variant's modules, run the fixed workload `repeats` times, unload them."""
    prefix = f"/{initramfs.MODULE_DIR}/{name}"
    guest.run(f"insmod {prefix}-zsmalloc.ko && insmod {prefix}-zstest.ko")
    runs = []
    for _ in range(repeats):
        start = time.monotonic()
        output = guest.run(PERF_COMMAND)
        host = time.monotonic() - start
        lines = output.splitlines()
        elapsed = next((ln.split()[1] for ln in lines if ln.startswith("elapsed ")), "0")
        result = parse_result("\n".join(ln for ln in lines if not ln.startswith("elapsed ")))
        if result.failures:
            f = result.failures[0]
            raise StageError(f"the fixed workload failed: {f.verb} {f.errno} {f.reason}")
        pages = [int(v) for k, v in result.values if k == "pages"]
        seconds = int(elapsed) / 1e9 if elapsed.isdigit() and int(elapsed) > 0 else host
        runs.append((name, seconds, pages[0], pages[-1]))
    guest.run("rmmod zstest && rmmod zsmalloc")
    return min(runs, key=lambda sample: sample[1])


def _validate_on(
    ctx: _Context,
    target: Target,
    series: Series,
    applied: AppliedSeries,
    plan: Plan,
    mails: Sequence[Path],
    perf_rounds: int,
) -> KernelResult:
    started = time.monotonic()
    kernel, directory, p = ctx.kernel, ctx.directory, ctx.p
    directory.mkdir(parents=True, exist_ok=True)
    work = WORK / target.kernel.slug
    work.mkdir(parents=True, exist_ok=True)
    result = KernelResult(
        kernel=target.kernel,
        release=kernel.release,
        package_version=kernel.package_version,
        source=applied.tree.label,
        base_blobs=applied.base_blobs,
        base_warnings=[],
        steps=[],
        clients=_clients_said(plan, ctx.label),
    )
    base_contents = dict(applied.base)
    # Runs on one kernel share the warm build directories: one at a time.
    with (
        locked(work / "validate.lock"),
        concurrent.futures.ThreadPoolExecutor(1) as builds,
        concurrent.futures.ThreadPoolExecutor(1) as styles,
    ):
        with p.stage("build"):
            rendered = render.render(kernel, api_for(kernel.series), "upstream", work / "rendered")
            builder = Builder(kernel, rendered, work, plan, base_contents)
            base = builder.build("base", base_contents, directory / "base")
            if not base.ok:
                raise StageError(
                    f"the unpatched {applied.tree.label} does not build on Linux {ctx.label}:\n"
                    f"{base.error}"
                )
            if plan.zswap and base.zswap != "ok":
                raise StageError(
                    f"the unpatched mm/zswap.c of {applied.tree.label} does not compile "
                    f"against Linux {plan.zswap_kernel.release if plan.zswap_kernel else '?'}:"
                    f"\n{base.zswap}"
                )
        result.base_warnings = list(base.warnings)
        outs = [directory / f"{i:02d}" for i in range(1, len(series.patches) + 1)]
        for out in outs:
            out.mkdir(exist_ok=True)
        styles_f = [
            styles.submit(_checkpatch, kernel, mail, out / "checkpatch.txt")
            for mail, out in zip(mails, outs, strict=True)
        ]
        # Builds run ahead of the boots, on the host's spare core.
        builds_f: dict[int, concurrent.futures.Future[Built]] = {}
        previous = ""
        for i, app in enumerate(applied.steps, 1):
            if not app.ok:
                break
            contents = dict(app.contents)
            key = builder.key(contents)
            if key != previous:  # an unchanged state is carried over, not rebuilt
                builds_f[i] = builds.submit(builder.build, "step", contents, outs[i - 1])
            previous = key
        try:
            for i, patch in enumerate(series.patches, 1):
                step = Step(i, {}, directory=f"{target.kernel.slug}/{i:02d}")
                result.steps.append(step)
                if note := not_built_note(patch, plan):
                    step.notes.append(note)
                step.checks["checkpatch"] = styles_f[i - 1].result()
                _check_step(ctx, step, applied, builds_f.get(i), result, base, plan)
                step.checks = {name: step.checks[name] for name in CHECKS}
        finally:
            for f in [*builds_f.values(), *styles_f]:
                f.cancel()
            builds.shutdown()
            builder.prune()
        _attribute(ctx, result, base)
        if perf_rounds > 0:
            with p.stage("perf"):
                _perf_steps(ctx, result, base, perf_rounds)
        else:
            result.perf_note = "density and speed not measured (--no-perf)"
    result.seconds = time.monotonic() - started
    return result


def _clients_said(plan: Plan, label: str) -> list[str]:
    """What the report says of zram and zswap on this kernel."""
    said = []
    if plan.zram:
        said.append(
            f"zram: the patched drivers/block/zram/ is built as zram.ko with each state's "
            f"zsmalloc.ko and round-trips data through /dev/zram0 in the suite's boot on "
            f"Linux {label}"
        )
    else:
        said.append(f"zram: {plan.zram_why}")
    if plan.zswap and plan.zswap_kernel is not None:
        z = plan.zswap_kernel
        said.append(
            f"zswap: mm/zswap.c is compiled only (zswap.o against Linux {z.release}, Debian's "
            f"{z.package_version} configuration with CONFIG_ZSWAP=y); it is part of vmlinux, "
            "so it is neither loaded nor run"
        )
    else:
        said.append(f"zswap: {plan.zswap_why}")
    return said


def _check_step(
    ctx: _Context,
    step: Step,
    applied: AppliedSeries,
    future: concurrent.futures.Future[Built] | None,
    result: KernelResult,
    base: Built,
    plan: Plan,
) -> None:
    """Fill a step's apply, build, load, suite, zram and zswap checks."""
    i = step.patch
    app = applied.steps[i - 1] if i <= len(applied.steps) else None
    runs = ("build", "load", "suite", "zram", "zswap")
    if app is None:
        why = f"not tested: patch {len(applied.steps)} does not apply"
        for name in ("apply", *runs):
            step.checks[name] = Check("skip", why)
        return
    if not app.ok:
        first = app.rejects[0].splitlines()[0]
        step.checks["apply"] = Check("fail", f"does not apply: {first}", details=list(app.rejects))
        for name in runs:
            step.checks[name] = Check("skip", "not built: the patch does not apply")
        return
    step.checks["apply"] = Check("pass", "applies")
    if future is None:  # nothing built differs from the previous patch's state
        prev = result.steps[i - 2]
        for name in runs:
            c = prev.checks[name]
            step.checks[name] = Check(c.status, c.summary, c.cell, list(c.details))
        step.built, step.suite_kind = prev.built, prev.suite_kind
        step.notes.append(
            f"no built file changes: build, load, suite, zram and zswap are those of patch {i - 1}"
        )
        return
    with ctx.p.stage("build"):
        try:
            built = future.result()
        except (StageError, OSError) as e:
            step.checks["build"] = Check("error", f"the build could not run: {e}")
            built = None
    step.checks["zram"] = Check("skip", plan.zram_why or "not run: no zram.ko was built")
    step.checks["zswap"] = _zswap_check(built, plan)
    if built is None:
        for name in ("load", "suite"):
            step.checks[name] = Check("skip", "not run: no build")
        return
    step.built = built
    step.checks["build"] = _build_check(built, base)
    how = "cached" if built.cached else f"{built.seconds:.1f} s"
    ctx.p.say(f"{ctx.label} #{i}: {step.checks['build'].summary} ({how})")
    if not built.ok:
        for name in ("load", "suite"):
            step.checks[name] = Check("skip", "not run: the build failed")
        if plan.zram:
            step.checks["zram"] = Check("skip", "not run: the build failed")
        return
    with ctx.p.stage("suite"):
        ctx.p.say(f"{ctx.label} #{i}: booting the suite ({step.directory}/suite)")
        run_result = _run_suite(ctx, built, ctx.directory / f"{i:02d}" / "suite")
    load, suite, zram, kind = _suite_checks(run_result)
    step.checks["load"], step.checks["suite"] = load, suite
    if zram is not None:
        step.checks["zram"] = zram
    elif plan.zram:
        step.checks["zram"] = Check("skip", "not run: the suite's boot ended before it")
    step.suite_kind = kind
    ctx.p.say(f"{ctx.label} #{i}: {suite.summary}")


def _zswap_check(built: Built | None, plan: Plan) -> Check:
    if not plan.zswap or plan.zswap_kernel is None:
        return Check("skip", plan.zswap_why)
    if built is None or not built.ok:
        return Check("skip", "not compiled: the modules' build failed first")
    against = f"against Linux {plan.zswap_kernel.release} (CONFIG_ZSWAP=y)"
    if built.zswap == "ok":
        return Check("pass", f"mm/zswap.c compiles {against}; not run (zswap is in vmlinux)", "cc")
    lines = built.zswap.splitlines()
    return Check("fail", f"mm/zswap.c does not compile {against}: {lines[0]}", details=lines)


def _attribute(ctx: _Context, result: KernelResult, base: Built) -> None:
    """Say which patch brought each suite failure; the base runs only when nothing before
    the first failure passed."""
    base_passes: bool | None = None
    for step in result.steps:
        suite = step.checks["suite"]
        if suite.status != "fail":
            continue
        before = result.steps[: step.patch - 1]
        passed = [s.patch for s in before if s.checks["suite"].status == "pass"]
        last = passed[-1] if passed else 0
        between = before[last:]  # the patches after the last that passed
        if not passed and base_passes is None:
            with ctx.p.stage("suite"):
                ctx.p.say(f"{ctx.label}: running the base's suite, to compare")
                base_run = _run_suite(ctx, base, ctx.directory / "base" / "suite")
            _, base_suite, _, kind = _suite_checks(base_run)
            result.base_suite = base_suite.summary
            base_passes = kind is None
        if not passed and not base_passes:
            suite.summary += "; the base fails the suite too: not this series' doing"
        elif not between:
            since = f"patch {last}" if last else "the base"
            suite.summary += f"; {since} passed, so this patch brings the failure"
        elif all(s.checks["suite"].status == "fail" for s in between):
            suite.summary += f"; failing since patch {between[0].patch}"
        else:
            since = f"patch {last}" if last else "the base"
            after = ", ".join(
                f"{s.patch} {'failed' if s.checks['suite'].status == 'fail' else 'not run'}"
                for s in between
            )
            suite.summary += f"; {since} is the last that passed (then patches {after})"


def _perf_steps(ctx: _Context, result: KernelResult, base: Built, rounds: int) -> None:
    """Density and speed of every measurable step against the base, in one boot."""
    variants: dict[str, Built] = {"base": base}
    keys: dict[str, str] = {base.key: "base"}
    for step in result.steps:
        built = step.built
        if built is None or not built.ok or step.checks["suite"].status not in ("pass", "fail"):
            continue
        if step.suite_kind is not None and step.suite_kind not in MODEL_KINDS:
            step.perf_note = f"not measured: the suite found {step.suite_kind}"
            continue
        if built.key not in keys:
            keys[built.key] = f"p{step.patch:02d}"
            variants[keys[built.key]] = built
    if len(variants) == 1:
        result.perf_note = "nothing to measure"
        for step in result.steps:
            if step.built is not None and step.built.key == base.key:
                step.perf_note = "the same modules as the base"
        return
    ctx.p.say(
        f"{ctx.label}: density and speed of {len(variants) - 1} variant(s) against the "
        f"base, {rounds} round(s) in one boot"
    )
    timeline, errors = _perf(ctx, variants, rounds)
    if "base" in errors:
        result.perf_note = f"not measured: {errors['base']}"
        return
    base_runs = [sample for sample in timeline if sample[0] == "base"]
    ratios = paired_ratios(timeline)
    result.perf_noise = base_drift(timeline)
    result.perf_note = (
        f"one boot; {rounds} load(s) of each variant, each between two loads of the base "
        f"({PERF_REPEATS} runs per load, the best counts); speed is the median ratio to those "
        f"neighbours; neighbouring base loads differ by up to {result.perf_noise:.0%}, so "
        f"speed nearer 1 than that is noise; workload: {' / '.join(PERF_LINES[1:-1])}"
    )
    for step in result.steps:
        if step.built is None or step.perf_note:
            continue
        name = keys.get(step.built.key)
        if name is None:
            continue
        runs = [sample for sample in timeline if sample[0] == name]
        if name in errors or not runs or (name != "base" and name not in ratios):
            step.perf_note = f"not measured: {errors.get(name, 'no data')}"
            continue
        step.perf = Perf(
            pages=runs[0][2],
            base_pages=base_runs[0][2],
            pages_compacted=runs[0][3],
            base_pages_compacted=base_runs[0][3],
            seconds=statistics.median(s[1] for s in runs),
            base_seconds=statistics.median(s[1] for s in base_runs),
            speed=statistics.median(ratios[name]) if name != "base" else 1.0,
            pairs=len(ratios.get(name, [])),
        )


# ---------------------------------------------------------------------------
# The whole validation


def _results_dir(root: Path = RESULTS) -> Path:
    return new_results_dir("validate", root)


def full_tree(kernel: Kernel) -> SourceTree:
    """The whole unpacked linux-source tree a source-built kernel was built from (read only)."""
    root = kernel.source
    members: set[str] = set()
    for dirpath, _, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        if prefix:
            members.add(prefix)
        members.update(prefix + f for f in filenames)
    label = f"linux-source-{kernel.series} {kernel.package_version}"
    for path in BUILT:
        if path not in members:
            raise StageError(f"{label} at {root} has no {path}; delete it and retry")
    return SourceTree(label, root, frozenset(members))


def _provision(target: Target, p: Progress) -> Kernel:
    kernel = target.kernel
    if kernel.variant != DISTRO:
        why = "" if target.chosen else " (Debian's has zsmalloc built in)"
        p.say(f"Linux {kernel.series}: the source-built {kernel.variant} kernel{why}")
    return provision(kernel, p)


def _zswap_kernel(kernel: Kernel, p: Progress) -> tuple[Kernel | None, str]:
    """A kernel of the series with CONFIG_ZSWAP=y to compile zswap.o against, or why none."""
    if kernel.config("ZSWAP") == "y":
        return kernel, ""
    try:
        distro = provision(KernelId(kernel.series), p)
    except StageError as e:
        first = str(e).splitlines()[0]
        return None, f"Debian's Linux {kernel.series}, which has zswap, is not at hand: {first}"
    if distro.config("ZSWAP") != "y":
        return None, (
            f"neither Linux {kernel.release} nor Debian's {distro.release} has CONFIG_ZSWAP=y"
        )
    p.say(
        f"Linux {kernel.release} has no zswap: mm/zswap.c is compiled against Debian's "
        f"{distro.release} instead"
    )
    return distro, ""


def validate(
    config: Config,
    inputs: Sequence[Path],
    p: Progress,
    kernel_names: Sequence[str] = (),
    results_dir: Path | None = None,
    perf_rounds: int = PERF_ROUNDS,
    variant: str | None = None,
) -> Validation:
    """Validate a series on each kernel; bad input raises ValidateError before any build.

    `variant` (distro, minimal, debug) applies to every kernel; by default, the
    configuration's VARIANT when it is source-built, else Debian's kernel where
    zsmalloc is a module and the source-built minimal kernel where it is built in.
    """
    started = time.monotonic()
    chosen = variant or (config.variant if config.variant != "distro" else None)
    wanted = targets(kernel_names or [config.kernel], chosen)
    with p.stage("parse"):
        series = read_series(inputs)
        p.say(f"{len(series.patches)} patch(es): {series.title}")
        for note in series.notes:
            p.say(note)
    touched = {path for patch in series.patches for path in patch.touched()}
    provisioned: list[tuple[Target, Kernel, AppliedSeries, Plan]] = []
    with tempfile.TemporaryDirectory(prefix="zskit-validate-") as tmpdir:
        tmp = Path(tmpdir)
        mails = []
        (tmp / "patches").mkdir()
        for patch in series.patches:
            mails.append(tmp / "patches" / f"{patch.slug}.patch")
            mails[-1].write_bytes(patch.mail)
        for target in wanted:
            label = target.kernel.label
            with p.stage("provision"):
                kernel = _provision(target, p)
                if target.kernel.variant == DISTRO:
                    tree = source_tree(kernel, touched, p)
                else:
                    tree = full_tree(kernel)
                zswap_kernel, missing = None, ""
                if tree.has_file(clients.ZSWAP) and _uses(tree, [clients.ZSWAP], touched):
                    zswap_kernel, missing = _zswap_kernel(kernel, p)
                plan = make_plan(series, tree, kernel, label, zswap_kernel, missing)
                if any(tree.has_file(f) and not (tree.root / f).is_file() for f in plan.paths):
                    tree = source_tree(kernel, touched | set(plan.paths), p)
            with p.stage("apply"):
                repo = tmp / f"repo-{target.kernel.slug}"
                applied = apply_series(series, tree, mails, repo, keep=plan.paths)
                shutil.rmtree(repo)  # every patched state is in `applied` now
                good = sum(1 for a in applied.steps if a.ok)
                p.say(f"{label}: {good} of {len(series.patches)} patch(es) apply on {tree.label}")
            provisioned.append((target, kernel, applied, plan))
        directory = results_dir or _results_dir()
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "patches").mkdir(exist_ok=True)
        saved = []
        for mail in mails:
            saved.append(directory / "patches" / mail.name)
            shutil.copy2(mail, saved[-1])
    validation = Validation(directory, series, [])
    for target, kernel, applied, plan in provisioned:
        # The suite runs on the kernel provisioned above, whatever .config says.
        cfg = config.with_overrides(
            kernel=kernel.series, allocator="upstream", variant=target.kernel.variant
        )
        with p.stage("validate"), tempfile.TemporaryDirectory(prefix="zskit-validate-") as tmpdir:
            ctx = _Context(
                cfg, kernel, directory / target.kernel.slug, Path(tmpdir), p, target.kernel.label
            )
            validation.kernels.append(
                _validate_on(ctx, target, series, applied, plan, saved, perf_rounds)
            )
    validation.seconds = time.monotonic() - started
    write(validation)
    return validation


# ---------------------------------------------------------------------------
# Reports: the terminal table, Markdown for a review reply, JSON


def _ratio(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.3f}"


def _rows(v: Validation) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for patch in v.series.patches:
        for k in v.kernels:
            s = k.steps[patch.number - 1]
            subject = patch.subject if len(patch.subject) <= 44 else patch.subject[:43] + "…"
            rows.append(
                (
                    str(patch.number),
                    subject,
                    k.kernel.series,
                    k.kernel.variant,
                    *(s.checks[c].cell for c in CHECKS),
                    _ratio(s.perf.density if s.perf else None),
                    _ratio(s.perf.speed if s.perf else None),
                    s.verdict,
                )
            )
    return rows


HEADER_ROW = ("#", "patch", "kernel", "variant", *CHECKS, "density", "speed", "verdict")


def summary(v: Validation) -> str:
    """The terminal table, then a worded verdict per patch."""
    rows = [HEADER_ROW, *_rows(v)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER_ROW))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.append("")
    total = len(v.series.patches)
    for patch in v.series.patches:
        verdict, why = v.verdict(patch.number)
        lines.append(f"{patch.number}/{total} {verdict}: {patch.subject}: {why}")
    lines.append("")
    lines.append("density: pool pages patched/base after a fixed workload (below 1: denser);")
    lines.append("speed: its time patched/base (below 1: faster).")
    for k in v.kernels:
        lines.append(f"{k.kernel.label}: {k.perf_note}")
        lines += [f"{k.kernel.label}: {said}" for said in k.clients]
    failed = sum(1 for p in v.series.patches if not v.verdict(p.number)[0].startswith("PASS"))
    lines.append(
        f"{'PASS' if v.passed else 'FAIL'}: {total - failed} of {total} patch(es) pass "
        f"in {v.seconds:.0f} s"
    )
    return "\n".join(lines)


def _quote(lines: Sequence[str], limit: int = 40) -> list[str]:
    shown = list(lines[:limit]) + (
        [f"... ({len(lines) - limit} more)"] if len(lines) > limit else []
    )
    return ["```", *[ln.replace("```", "'''") for ln in shown], "```"]


def _origin(k: KernelResult) -> str:
    if k.kernel.variant == DISTRO:
        return f"Debian {k.package_version}"
    return (
        f"built from linux-source-{k.kernel.series} {k.package_version} with qemu/configs/ "
        f"base.config + {k.kernel.variant}.config"
    )


def markdown(v: Validation) -> str:
    s = v.series
    out = [f"# zskit validate: {s.title}", ""]
    out.append(
        f"{len(s.patches)} patch(es)"
        + (f", base-commit {s.base_commit}" if s.base_commit else "")
        + "."
    )
    for k in v.kernels:
        blobs = "; ".join(f"{path} {how}" for path, how in k.base_blobs.items())
        out.append(
            f"Linux {k.kernel.label} ({k.release}, {_origin(k)}): applied onto "
            f"{k.source}" + (f" ({blobs})" if blobs else "") + "."
        )
    out += [
        "",
        "Each patch is checked on its cumulative tree (base+1..N): git am, a build of "
        "zsmalloc.ko with compiler warnings compared against the base, checkpatch.pl on "
        "the patch, the modules loading in a QEMU guest, the zskit suite (every result, "
        "the class table and the data checked against a reference model, with crash "
        "triage), zram (where the series changes it or a header it includes: the patched "
        "zram.ko on the patched zsmalloc.ko, data written through /dev/zram0 and read back, "
        "before and after compaction), zswap (the same rule: mm/zswap.c compiled, never "
        "run), and the density and speed of a fixed workload against the base. "
        "A `-` is a check that was not run; the reasons are below.",
        "",
        "| " + " | ".join(HEADER_ROW) + " |",
        "|" + "---|" * len(HEADER_ROW),
    ]
    for row in _rows(v):
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    out += [
        "",
        "density = pool pages patched/base (below 1: denser); "
        "speed = time patched/base (below 1: faster).",
    ]
    for k in v.kernels:
        out.append(f"Measured on {k.kernel.label}: {k.perf_note}.")
        out += [f"On {k.kernel.label}, {said}." for said in k.clients]
    out += ["", "## Verdicts", ""]
    total = len(s.patches)
    for patch in s.patches:
        verdict, why = v.verdict(patch.number)
        out.append(f"- **[{patch.number}/{total}] {patch.subject}**: **{verdict}**: {why}")
    out += ["", "## Details"]
    for patch in s.patches:
        out += ["", f"### [{patch.number}/{total}] {patch.subject}", ""]
        out.append(
            f"From {patch.author}"
            + (f", {patch.date}" if patch.date else "")
            + (f", <{patch.message_id}>" if patch.message_id else "")
        )
        out.append("")
        for k in v.kernels:
            step = k.steps[patch.number - 1]
            out.append(f"On {k.kernel.label}: **{step.verdict}**")
            out.append("")
            for name, check in step.checks.items():
                out.append(f"- {name}: {check.summary}")
                if check.details and check.status in ("fail", "warn", "error"):
                    out += ["", *_quote(check.details), ""]
            if step.perf:
                pf = step.perf
                noise = (
                    f", within the noise of {k.perf_noise:.0%}: no measurable change"
                    if abs(pf.speed - 1) <= k.perf_noise
                    else ""
                )
                out.append(
                    f"- density {pf.density:.3f} ({pf.pages} pages vs {pf.base_pages}; after "
                    f"compaction {pf.pages_compacted} vs {pf.base_pages_compacted}), speed "
                    f"{pf.speed:.3f} ({pf.seconds:.3f} s vs {pf.base_seconds:.3f} s{noise})"
                )
            elif step.perf_note:
                out.append(f"- density and speed: {step.perf_note}")
            for note in step.notes:
                out.append(f"- note: {note}")
    if s.notes:
        out += ["## Notes", "", *[f"- {n}" for n in s.notes], ""]
    out.append(f"Validated by zskit in {v.seconds:.0f} s; logs in `{v.directory}`.")
    return "\n".join(out) + "\n"


def as_json(v: Validation) -> dict[str, object]:
    s = v.series
    patches = [
        {
            "number": p.number,
            "subject": p.subject,
            "raw_subject": p.raw_subject,
            "author": p.author,
            "date": p.date,
            "message_id": p.message_id,
            "origin": p.origin,
            "file": f"patches/{p.slug}.patch",
            "files": [asdict(f) for f in p.files],
            "verdict": v.verdict(p.number)[0],
            "reason": v.verdict(p.number)[1],
        }
        for p in s.patches
    ]
    kernels_doc = []
    for k in v.kernels:
        steps = []
        for step in k.steps:
            perf = None
            if step.perf:
                perf = {**asdict(step.perf), "density": step.perf.density}
            steps.append(
                {
                    "patch": step.patch,
                    "verdict": step.verdict,
                    "checks": {name: asdict(c) for name, c in step.checks.items()},
                    "perf": perf,
                    "perf_note": step.perf_note,
                    "notes": step.notes,
                    "directory": step.directory,
                }
            )
        kernels_doc.append(
            {
                "kernel": k.kernel.series,
                "variant": k.kernel.variant,
                "name": k.kernel.slug,
                "release": k.release,
                "package_version": k.package_version,
                "source": k.source,
                "base_blobs": k.base_blobs,
                "base_warnings": k.base_warnings,
                "base_suite": k.base_suite,
                "perf_note": k.perf_note,
                "perf_noise": round(k.perf_noise, 3),
                "clients": k.clients,
                "same_boot": True,
                "seconds": round(k.seconds, 1),
                "steps": steps,
            }
        )
    return {
        "kind": "zskit-validate",
        "title": s.title,
        "cover": s.cover,
        "base_commit": s.base_commit,
        "notes": list(s.notes),
        "verdict": "pass" if v.passed else "fail",
        "seconds": round(v.seconds, 1),
        "patches": patches,
        "kernels": kernels_doc,
    }


def write(v: Validation) -> None:
    (v.directory / "report.md").write_text(markdown(v))
    (v.directory / "results.json").write_text(json.dumps(as_json(v), indent=2) + "\n")
    (v.directory / "summary.txt").write_text(summary(v) + "\n")
