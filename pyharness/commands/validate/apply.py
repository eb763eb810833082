"""Applying: git am in a temporary repository holding the pristine files."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .pristine import BUILT, SourceTree
from .series import Series, ValidateError, git


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
    proc = git(repo, "apply", "--reject", "--verbose", str(patch), check=False)
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
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    ident = ("-c", "user.name=zskit", "-c", "user.email=zskit@localhost")
    git(repo, *ident, "commit", "-q", "-m", f"{tree.label} (pristine)")
    blobs = {}
    for line in git(repo, "ls-tree", "-r", "HEAD").stdout.decode().splitlines():
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
        proc = git(repo, "am", "--quiet", str(mail), check=False)
        if proc.returncode == 0:
            steps.append(Applied(True, (), _snapshot(repo, paths)))
            continue
        git(repo, "am", "--abort", check=False)
        quotes, failed = _rejects(repo, mail)
        git(repo, "reset", "-q", "--hard")
        git(repo, "clean", "-fdqx")
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
                f"and it does not apply there{based}. {tree.remedy}"
            )
        steps.append(Applied(False, tuple(quotes)))
        break
    return AppliedSeries(tree, base, tuple(steps), base_blobs)
