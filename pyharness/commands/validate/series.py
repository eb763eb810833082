"""Reading a series: mails parsed as git am parses them (files, an mbox, a directory)."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import os
import re
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ...progress import StageError

PATCH_SUFFIXES = (".patch", ".diff", ".mbox", ".mbx", ".eml")
DIFF_GIT = re.compile(r'^diff --git "?a/(.+?)"? "?b/(.+?)"?$')
HUNK = re.compile(r"^@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@")
NUMBERING = re.compile(r"\[[^\]]*?(\d+)/(\d+)\s*\]")
BASE_COMMIT = re.compile(r"^base-commit: *([0-9a-f]{7,40})\s*$", re.M)
# git format-patch --base: patches the series needs in its base that are not upstream yet.
PREREQUISITE = re.compile(r"^prerequisite-patch-id: *([0-9a-f]{40})\s*$", re.M)


class ValidateError(StageError):
    """The input cannot be validated (not a patch, another tree, unknown base...)."""


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
    prerequisites: tuple[str, ...] = ()  # `prerequisite-patch-id:` lines, in order

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


def git(
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


@dataclass
class _Header:
    """A file's header while the diff is read: what becomes its FileChange."""

    old: str | None
    new: str | None
    status: str = "modified"
    blob: str | None = None
    hunks: int = 0


def parse_diff(text: str) -> tuple[FileChange, ...]:
    """The files a patch changes, from git's extended headers or plain ---/+++ pairs.

    Hunks are consumed by their line counts, so a removed line that starts
    with "-- " is never taken for a file header.
    """
    found: list[_Header] = []
    lines = text.splitlines()
    header = False  # between `diff --git` and the first hunk
    i = 0
    while i < len(lines):
        line = lines[i]
        hunk = HUNK.match(line)
        if m := DIFF_GIT.match(line):
            found.append(_Header(m[1], m[2]))
            header = True
        elif line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            old, new = _diff_path(line[4:]), _diff_path(lines[i + 1][4:])
            if not header:  # a plain diff (diff -u), no git header before it
                found.append(_Header(old, new))
            current = found[-1]
            if old is None:
                current.status, current.old = "added", None
            elif new is None:
                current.status, current.new = "deleted", old
            header = False
            i += 2
            continue
        elif hunk and found:
            found[-1].hunks += 1
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
                current.blob = line.split()[1].split("..")[0]
            elif line.startswith("new file mode"):
                current.status, current.old = "added", None
            elif line.startswith("deleted file mode"):
                current.status = "deleted"
            elif line.startswith("rename from "):
                current.status = "renamed"
        i += 1
    changes: list[FileChange] = []
    for c in found:
        old, new = c.old, c.new
        path = str(new if new is not None else old)
        for p in (path, old):
            if p is not None and (p.startswith("/") or ".." in p.split("/")):
                raise ValidateError(f"the patch names an unsafe path {p!r}")
        blob = c.blob
        changes.append(
            FileChange(
                path=path,
                old_path=old,
                status=c.status,
                old_blob=None if blob is None or set(blob) == {"0"} else blob,
                hunks=c.hunks,
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
    proc = git(tmp, "mailsplit", "-b", f"-o{out}", str(path.resolve()), check=False)
    if proc.returncode != 0:
        why = proc.stderr.decode(errors="replace").strip().splitlines()
        raise ValidateError(
            f"{path} is neither a patch nor an mbox (git mailsplit: {why[0] if why else 'failed'})"
        )
    return [f.read_bytes() for f in sorted(out.iterdir())]


def _mailinfo(mail: bytes, origin: str, tmp: Path) -> tuple[dict[str, str], str, str]:
    """(Author/Email/Subject/Date, message, diff) of one mail, by git mailinfo."""
    msg, diff = tmp / "msg", tmp / "diff"
    proc = git(tmp, "mailinfo", str(msg), str(diff), stdin=mail, check=False)
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


@dataclass(frozen=True)
class _Mail:
    """One parsed message of the input: a patch (its Patch, numbered later), or a cover."""

    revision: int  # the N of [PATCH vN ...], 1 without one
    numbering: tuple[int, int] | None
    patch: Patch | None  # None: a cover letter
    cover: str | None = None


def revision_of(raw_subject: str) -> int:
    """The N of `[PATCH vN n/m]` (`[RFC PATCH v2]`, `[PATCH net-next v3 0/5]`); 1 without."""
    prefix = re.match(r"^\s*(?:re:\s*)?\[([^\]]*)\]", raw_subject, re.I)
    found = re.search(r"(?:^|\s)v(\d+)(?:\s|$)", prefix[1], re.I) if prefix else None
    return int(found[1]) if found else 1


def _missing(mails: Sequence[_Mail]) -> list[int]:
    """The [PATCH n/m] numbers a revision's patches lack (none when unnumbered)."""
    numbered = [m.numbering for m in mails if m.patch is not None and m.numbering]
    if not numbered:
        return []
    total = max(t for _, t in numbered)
    have = {n for n, _ in numbered}
    return [n for n in range(1, total + 1) if n not in have]


def choose_revision(
    mails: Sequence[_Mail], wanted: int | None
) -> tuple[int, list[_Mail], str | None]:
    """The revision to validate: `wanted`, else the newest complete one; and a note saying
    which was taken when the input holds several (or lacks patches of it)."""
    by_revision: dict[int, list[_Mail]] = {}
    for m in mails:
        by_revision.setdefault(m.revision, []).append(m)
    with_patches = sorted(r for r, ms in by_revision.items() if any(m.patch for m in ms))
    names = ", ".join(f"v{r}" for r in with_patches)
    if wanted is not None:
        if wanted not in with_patches:
            raise ValidateError(
                f"the input holds no patch of v{wanted} (it holds {names or 'no patch'})"
            )
        gaps = _missing(by_revision[wanted])
        note = f"validating v{wanted} (--revision), of {names}" if len(with_patches) > 1 else None
        if gaps:
            lacks = ", ".join(map(str, gaps))
            note = (note + "; " if note else "") + f"v{wanted} lacks patch(es) {lacks}"
        return wanted, by_revision[wanted], note
    complete = [r for r in with_patches if not _missing(by_revision[r])]
    if len(with_patches) <= 1:
        chosen = with_patches[0] if with_patches else 1
        gaps = _missing(by_revision.get(chosen, []))
        lacks = ", ".join(map(str, gaps))
        return (
            chosen,
            by_revision.get(chosen, []),
            f"v{chosen} lacks patch(es) {lacks}" if gaps else None,
        )
    if not complete:
        lacking = "; ".join(
            f"v{r} lacks {', '.join(map(str, _missing(by_revision[r])))}" for r in with_patches
        )
        raise ValidateError(
            f"no revision of the series is complete ({lacking}): add the missing patches, "
            "or name one with --revision N to validate what it has"
        )
    chosen, newest = complete[-1], with_patches[-1]
    why = "the newest"
    if chosen != newest:
        why = f"the newest complete: v{newest} lacks " + ", ".join(
            map(str, _missing(by_revision[newest]))
        )
    return (
        chosen,
        by_revision[chosen],
        f"the input holds {names}: validating v{chosen} ({why}; --revision N for another)",
    )


def read_series(inputs: Sequence[Path], revision: int | None = None) -> Series:
    """Every patch of one revision of the inputs, in order (the newest complete revision, or
    `revision`); cover letters and replies are set aside."""
    mails: list[_Mail] = []
    notes: list[str] = []
    base: str | None = None
    prerequisites: list[str] = []
    with tempfile.TemporaryDirectory(prefix="zskit-mail-") as tmpdir:
        tmp = Path(tmpdir)
        for path in _input_files(inputs):
            split = _split(path, tmp)
            for n, mail in enumerate(split, 1):
                origin = str(path) if len(split) == 1 else f"{path} (message {n})"
                info, message, diff = _mailinfo(mail, origin, tmp)
                headers = email.message_from_bytes(mail, policy=email.policy.default)
                raw_subject = " ".join(str(headers.get("Subject") or "").split())
                subject = info.get("Subject") or raw_subject
                numbering = None
                if m := NUMBERING.search(raw_subject):
                    numbering = (int(m[1]), int(m[2]))
                if found := BASE_COMMIT.search(message + diff):
                    base = base or found[1]
                for pid in PREREQUISITE.findall(message + diff):
                    if pid not in prerequisites:
                        prerequisites.append(pid)
                version = revision_of(raw_subject)
                if not diff.strip():
                    if numbering and numbering[0] == 0:
                        # git format-patch's placeholder, when nobody wrote a cover letter
                        cover = None if "*** SUBJECT HERE ***" in subject else subject
                        mails.append(_Mail(version, numbering, None, cover))
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
                patch = Patch(
                    number=0,  # its place in the chosen revision, below
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
                mails.append(_Mail(version, numbering, patch))
    _, kept, note = choose_revision(mails, revision)
    if note:
        notes.append(note)
    chosen = [m.patch for m in kept if m.patch is not None]
    patches = [dataclasses.replace(patch, number=i) for i, patch in enumerate(chosen, 1)]
    cover = next((m.cover for m in kept if m.patch is None and m.cover), None)
    if not patches:
        what = "only a cover letter" if any(m.patch is None for m in mails) else "no patch"
        raise ValidateError(f"{', '.join(map(str, inputs))} holds {what}: nothing to validate")
    numbers = [p.numbering[0] for p in patches if p.numbering]
    if numbers and numbers != sorted(numbers):
        notes.append(
            f"the [PATCH n/m] numbers are out of order ({', '.join(map(str, numbers))}); "
            "patches are applied in file order, as git am does"
        )
    if prerequisites:
        notes.append(
            f"the series names {len(prerequisites)} prerequisite patch(es) "
            f"(prerequisite-patch-id: {', '.join(p[:12] for p in prerequisites)}): zskit does "
            "not apply them, so they must already be in the base"
        )
    return Series(tuple(patches), cover, base, tuple(notes), tuple(prerequisites))
