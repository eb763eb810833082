"""zskit validate without a kernel: series parsing, bad input, plans, verdicts, reports.

Every series here is written by the test on a small made-up tree.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pyharness.commands import cli, config, perf, validate
from pyharness.commands.validate import SourceTree, ValidateError
from pyharness.guest import clients
from pyharness.kernel.identity import KernelId
from pyharness.kernel.manifest import Kernel
from pyharness.progress import Progress

AUTHOR = "Jane Dev <jane@example.org>"


GIT_ENV = {
    **os.environ,
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "Jane Dev",
    "GIT_AUTHOR_EMAIL": "jane@example.org",
    "GIT_COMMITTER_NAME": "Jane Dev",
    "GIT_COMMITTER_EMAIL": "jane@example.org",
}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, env=GIT_ENV, check=True, capture_output=True, text=True
    ).stdout


@dataclass
class Edit:
    """One commit: text replacements (each must match once) in files of the tree."""

    subject: str
    changes: list[tuple[str, str, str]] = field(default_factory=list)  # (path, old, new)
    body: str = "Make the code easier to read; no functional change."


def make_series(
    root: Path,
    edits: list[Edit],
    out: Path,
    files: tuple[str, ...] = validate.BUILT,
    cover: bool = False,
    hidden: Edit | None = None,
    version: int = 1,
    thread: bool = False,
) -> Path:
    """git format-patch of the edits on top of `files` from root; `hidden` is committed first
    and left out of the series (a series made on another base); `version`: its vN;
    `thread`: with Message-ID, In-Reply-To and References, as sent to a list."""
    repo = out.with_name(out.name + "-repo")
    for path in files:
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / path, repo / path)
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "base")
    for edit in ([hidden] if hidden else []) + edits:
        for path, old, new in edit.changes:
            target = repo / path
            target.parent.mkdir(parents=True, exist_ok=True)
            text = target.read_text() if target.exists() else ""
            assert text.count(old) == 1, f"{edit.subject}: {old!r} is not once in {path}"
            target.write_text(text.replace(old, new))
        git(repo, "add", "-A")
        message = f"{edit.subject}\n\n{edit.body}\n\nSigned-off-by: {AUTHOR}\n"
        git(repo, "commit", "-q", "-m", message)
    since = f"HEAD~{len(edits)}"
    extra = ["--cover-letter"] if cover else []
    extra += [f"-v{version}"] if version > 1 else []
    extra += ["--thread"] if thread else []
    git(repo, "format-patch", "-q", *extra, f"--base={since}", "-o", str(out), since)
    return out


def mbox(directory: Path, dest: Path) -> Path:
    dest.write_bytes(b"".join(p.read_bytes() for p in sorted(directory.glob("*.patch"))))
    return dest


TOY = {
    "mm/zsmalloc.c": "".join(f"static int line{n}(void) {{ return {n}; }}\n" for n in range(40)),
    "include/linux/zsmalloc.h": "#ifndef _ZS_H\n#define _ZS_H\n/* a header */\n#endif\n",
    "mm/zswap.c": '#include <linux/zpool.h>\n#include "swap.h"\nint zswap_enabled;\n',
    "mm/swap.h": "/* swap */\n",
    "mm/zpdesc.h": "/* zpdesc */\n",
    "include/linux/zpool.h": "/* zpool */\n",
    "drivers/block/zram/zram_drv.c": '#include <linux/zsmalloc.h>\n#include "zram_drv.h"\n',
    "drivers/block/zram/zram_drv.h": "/* zram */\n",
    "drivers/block/zram/Makefile": "obj-$(CONFIG_ZRAM) += zram.o\n",
    "Documentation/mm/zsmalloc.rst": "zsmalloc\n========\n",
}


@pytest.fixture
def toy(tmp_path: Path) -> SourceTree:
    root = tmp_path / "tree"
    members: set[str] = set()
    for path, text in TOY.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
        members.add(path)
        parts = path.split("/")
        members |= {"/".join(parts[:n]) + "/" for n in range(1, len(parts))}
    return SourceTree("toy-source 1.0", root, frozenset(members))


RENAME = Edit("mm/zsmalloc: rename line3", [("mm/zsmalloc.c", "line3(void)", "third_line(void)")])


HEADER_EDIT = Edit(
    "zsmalloc: say what the header is", [(validate.HEADER, "/* a header */", "/* the API */")]
)


ZSWAP_EDIT = Edit("mm/zswap: rename", [("mm/zswap.c", "int zswap_enabled;", "int zswap_on;")])


def tree_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest.update(path.as_posix().encode() + path.read_bytes())
    return digest.hexdigest()


def test_a_format_patch_file(toy: SourceTree, tmp_path: Path) -> None:
    (patch,) = sorted(make_series(toy.root, [RENAME], tmp_path / "s").glob("*.patch"))
    series = validate.read_series([patch])
    (p,) = series.patches
    assert (p.number, p.subject, p.author) == (1, RENAME.subject, AUTHOR)
    assert p.raw_subject == f"[PATCH] {RENAME.subject}"
    (change,) = p.files
    assert (change.path, change.old_path, change.status, change.hunks) == (
        "mm/zsmalloc.c",
        "mm/zsmalloc.c",
        "modified",
        1,
    )
    blob = git(toy.root.parent, "hash-object", str(toy.root / "mm/zsmalloc.c")).strip()
    assert change.old_blob and blob.startswith(change.old_blob)
    assert series.base_commit and series.cover is None


def test_an_mbox_with_a_cover_letter(toy: SourceTree, tmp_path: Path) -> None:
    edits = [RENAME, HEADER_EDIT, ZSWAP_EDIT]
    files = (*validate.BUILT, "mm/zswap.c")
    directory = make_series(toy.root, edits, tmp_path / "s", files=files, cover=True)
    series = validate.read_series([mbox(directory, tmp_path / "series.mbox")])
    assert [p.subject for p in series.patches] == [e.subject for e in edits]
    assert [p.numbering for p in series.patches] == [(1, 3), (2, 3), (3, 3)]
    assert series.cover is None  # git format-patch's placeholder subject
    assert series.title == RENAME.subject
    assert series.base_commit is not None
    assert [p.files[0].path for p in series.patches] == [
        "mm/zsmalloc.c",
        validate.HEADER,
        "mm/zswap.c",
    ]
    assert all("(message" in p.origin for p in series.patches)


def test_a_directory_of_patches(toy: SourceTree, tmp_path: Path) -> None:
    edits = [RENAME, HEADER_EDIT]
    directory = make_series(toy.root, edits, tmp_path / "s", cover=True)
    (directory / "notes.txt").write_text("not a patch, and not read")
    cover = directory / "0000-cover-letter.patch"
    cover.write_text(cover.read_text().replace("*** SUBJECT HERE ***", "zsmalloc: tidy up"))
    series = validate.read_series([directory])
    assert [p.subject for p in series.patches] == [e.subject for e in edits]
    assert series.cover == series.title == "zsmalloc: tidy up"


def revisions(toy: SourceTree, tmp: Path, complete: tuple[bool, ...]) -> Path:
    """One mbox of v1 (one patch), v2, v3... (two patches each), each complete or missing
    its last patch."""
    data = b""
    for v, whole in enumerate(complete, 1):
        edits = [RENAME] if v == 1 else [RENAME, HEADER_EDIT]
        directory = make_series(toy.root, edits, tmp / f"v{v}", cover=v > 1, version=v)
        patches = sorted(directory.glob("*.patch"))
        data += b"".join(p.read_bytes() for p in (patches if whole else patches[:-1]))
    path = tmp / "thread.mbox"
    path.write_bytes(data)
    return path


def test_the_newest_complete_revision_is_taken_and_said(toy: SourceTree, tmp_path: Path) -> None:
    path = revisions(toy, tmp_path, (True, True, False))
    series = validate.read_series([path])
    assert [p.raw_subject for p in series.patches] == [
        f"[PATCH v2 1/2] {RENAME.subject}",
        f"[PATCH v2 2/2] {HEADER_EDIT.subject}",
    ]
    assert [p.number for p in series.patches] == [1, 2]
    assert (
        "the input holds v1, v2, v3: validating v2 (the newest complete: v3 lacks 2; "
        "--revision N for another)" in series.notes
    )
    (only,) = validate.read_series([path], revision=1).patches
    assert only.raw_subject == f"[PATCH] {RENAME.subject}"
    third = validate.read_series([path], revision=3)
    assert len(third.patches) == 1 and "v3 lacks patch(es) 2" in "; ".join(third.notes)
    with pytest.raises(validate.ValidateError, match=r"no patch of v4 \(it holds v1, v2, v3\)"):
        validate.read_series([path], revision=4)


def test_a_series_whose_revisions_are_all_incomplete_is_refused(
    toy: SourceTree, tmp_path: Path
) -> None:
    path = revisions(toy, tmp_path, (False, False, False))  # v2 and v3 each lack 2/2
    with pytest.raises(validate.ValidateError, match="no revision of the series is complete"):
        validate.read_series([path])


def test_a_reply_in_an_mbox_is_skipped(toy: SourceTree, tmp_path: Path) -> None:
    directory = make_series(toy.root, [RENAME], tmp_path / "s")
    reply = (
        b"From jane@example.org Mon Sep 17 00:00:00 2001\nFrom: Rev Iewer <r@example.org>\n"
        b"Subject: Re: [PATCH] mm/zsmalloc: rename line3\n\nLooks good.\n"
    )
    path = mbox(directory, tmp_path / "thread.mbox")
    path.write_bytes(path.read_bytes() + reply)
    series = validate.read_series([path])
    assert len(series.patches) == 1
    assert any("a reply" in note for note in series.notes)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"\n\n", "is empty"),
        (b"int main(void) { return 0; }\n", "is not a patch"),
        (b"--- a/mm/zsmalloc.c\n+++ b/mm/zsmalloc.c\n@@ -1 +1 @@\n-a\n+b\n", "bare diff"),
        (b"From: A <a@b.c>\nSubject: [PATCH] words\n\nno diff here\n", "holds no diff"),
        (
            b"From: A <a@b.c>\nSubject: [PATCH 0/2] cover\n\nthe cover letter\n",
            "only a cover letter",
        ),
    ],
)
def test_bad_input_is_refused(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "input.patch"
    path.write_bytes(content)
    with pytest.raises(ValidateError, match=message):
        validate.read_series([path])


def test_bad_paths_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidateError, match="no such file"):
        validate.read_series([tmp_path / "missing.mbox"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValidateError, match="holds no patches"):
        validate.read_series([tmp_path / "empty"])


def test_parse_diff_kinds() -> None:
    text = "\n".join(
        [
            "diff --git a/mm/new.c b/mm/new.c",
            "new file mode 100644",
            "index 0000000..1111111",
            "--- /dev/null",
            "+++ b/mm/new.c",
            "@@ -0,0 +1,2 @@",
            "+int x;",
            "+int y;",
            "diff --git a/mm/old.c b/mm/old.c",
            "deleted file mode 100644",
            "index 2222222..0000000",
            "--- a/mm/old.c",
            "+++ /dev/null",
            "@@ -1 +0,0 @@",
            "-int z;",
            "diff --git a/mm/a.c b/mm/b.c",
            "similarity index 90%",
            "rename from mm/a.c",
            "rename to mm/b.c",
            "index 3333333..4444444 100644",
            "--- a/mm/a.c",
            "+++ b/mm/b.c",
            "@@ -1,3 +1,3 @@",
            " int a;",
            "--- removed line that looks like a header",
            "+++ added line that looks like a header",
            " int c;",
            "--- plain/mm/zswap.c\t2024-01-01 00:00:00",
            "+++ plain/mm/zswap.c\t2024-01-01 00:00:00",
            "@@ -1 +1 @@",
            "-a",
            "+b",
        ]
    )
    changes = validate.parse_diff(text)
    assert [(c.path, c.old_path, c.status, c.old_blob, c.hunks) for c in changes] == [
        ("mm/new.c", None, "added", None, 1),
        ("mm/old.c", "mm/old.c", "deleted", "2222222", 1),
        ("mm/b.c", "mm/a.c", "renamed", "3333333", 1),
        ("mm/zswap.c", "mm/zswap.c", "modified", None, 1),
    ]


def test_unsafe_paths_are_refused() -> None:
    text = "diff --git a/../etc/x b/../etc/x\n--- a/../etc/x\n+++ b/../etc/x\n@@ -1 +1 @@\n-a\n+b\n"
    with pytest.raises(ValidateError, match="unsafe path"):
        validate.parse_diff(text)


def apply(
    series: validate.Series, tree: SourceTree, tmp: Path, keep: tuple[str, ...] = ()
) -> validate.AppliedSeries:
    mails = []
    for patch in series.patches:
        mails.append(tmp / f"{patch.slug}.patch")
        mails[-1].write_bytes(patch.mail)
    return validate.apply_series(series, tree, mails, tmp / "repo", keep=keep)


def test_a_series_applies_patch_by_patch(toy: SourceTree, tmp_path: Path) -> None:
    before = tree_hash(toy.root)
    series = validate.read_series([make_series(toy.root, [RENAME, HEADER_EDIT], tmp_path / "s")])
    applied = apply(series, toy, tmp_path)
    one, two = applied.steps
    assert one.ok and two.ok
    assert b"third_line(void)" in (one.content(validate.SOURCE) or b"")
    assert b"/* a header */" in (one.content(validate.HEADER) or b"")
    assert b"/* the API */" in (two.content(validate.HEADER) or b"")
    assert applied.base_blobs["mm/zsmalloc.c"].startswith("matches")
    assert tree_hash(toy.root) == before, "the pristine tree was modified"


def test_a_rejected_hunk_is_quoted_and_the_series_stops(toy: SourceTree, tmp_path: Path) -> None:
    directory = make_series(toy.root, [RENAME, HEADER_EDIT], tmp_path / "s")
    first = sorted(directory.glob("*.patch"))[0]
    # The context no longer matches, but the pre-image is still the tree's own.
    first.write_text(first.read_text().replace(" static int line4(void)", " static int line4(int)"))
    applied = apply(validate.read_series([directory]), toy, tmp_path)
    (step,) = applied.steps
    assert not step.ok
    assert step.rejects[0].startswith("mm/zsmalloc.c: hunk #1 rejected (expected at line")
    assert "-static int line3(void)" in step.rejects[0]


def test_a_patch_for_another_tree_is_refused(toy: SourceTree, tmp_path: Path) -> None:
    other = tmp_path / "other"
    (other / "src").mkdir(parents=True)
    (other / "src" / "main.py").write_text("print('hello')\n")
    edit = Edit("fix greeting", [("src/main.py", "hello", "world")])
    directory = make_series(other, [edit], tmp_path / "s", files=("src/main.py",))
    before = tree_hash(toy.root)
    with pytest.raises(ValidateError, match="not for the Linux kernel tree.*src/main.py"):
        apply(validate.read_series([directory]), toy, tmp_path)
    assert tree_hash(toy.root) == before


def test_a_diff_made_one_level_up_gets_a_hint(toy: SourceTree, tmp_path: Path) -> None:
    directory = make_series(toy.root, [RENAME], tmp_path / "s")
    (patch,) = directory.glob("*.patch")
    patch.write_text(patch.read_text().replace("mm/zsmalloc.c", "linux/mm/zsmalloc.c"))
    with pytest.raises(ValidateError, match="mm/zsmalloc.c exists: was the diff made 1"):
        apply(validate.read_series([directory]), toy, tmp_path)


def test_a_series_on_an_unknown_base_is_refused(toy: SourceTree, tmp_path: Path) -> None:
    # Made on a tree where line3 was already changed: neither its blob nor its context match.
    hidden = Edit("local change", [("mm/zsmalloc.c", "{ return 3; }", "{ return 303; }")])
    edit = Edit("mm/zsmalloc: line3 returns more", [("mm/zsmalloc.c", "return 303;", "return 4;")])
    directory = make_series(toy.root, [edit], tmp_path / "s", hidden=hidden)
    with pytest.raises(ValidateError, match="base is unknown.*expects mm/zsmalloc.c at blob"):
        apply(validate.read_series([directory]), toy, tmp_path)


def patch(number: int, subject: str, *paths: str) -> validate.Patch:
    files = tuple(validate.FileChange(p, p, "modified", None, 1) for p in paths)
    return validate.Patch(
        number, subject, f"[PATCH] {subject}", AUTHOR, "", "", "x", b"", files, None
    )


def test_files_zskit_does_not_build_are_named() -> None:
    note = validate.not_built_note(patch(1, "s", validate.SOURCE, "mm/zswap.c"))
    assert note is not None
    assert note.startswith("not built by zskit: mm/zswap.c (zsmalloc's users zram and zswap are")
    note = validate.not_built_note(patch(1, "s", "Documentation/mm/zsmalloc.rst"))
    assert note is not None
    assert note.startswith("not built by zskit: Documentation/mm/zsmalloc.rst (zskit builds")
    assert validate.not_built_note(patch(1, "s", *validate.BUILT)) is None


def toy_kernel(tmp: Path, config_text: str) -> Kernel:
    """A Kernel record whose build tree holds only a .config: what make_plan reads of it."""
    kdir = tmp / "kdir"
    kdir.mkdir(exist_ok=True)
    (kdir / ".config").write_text(config_text)
    image = tmp / "vmlinux"
    return Kernel("6.1", "6.1.0-toy", "1.0", image, image, kdir, None, tmp)


@pytest.mark.parametrize(
    ("edits", "config_text", "zram", "zswap"),
    [
        ([RENAME], "CONFIG_ZRAM=m\nCONFIG_ZSWAP=y\n", False, False),
        # zram includes zsmalloc.h: a header change builds and runs it
        ([HEADER_EDIT], "CONFIG_ZRAM=m\nCONFIG_ZSWAP=y\n", True, False),
        ([ZSWAP_EDIT], "CONFIG_ZRAM=m\nCONFIG_ZSWAP=y\n", False, True),
        # a built-in zram cannot be replaced by the patched one
        ([HEADER_EDIT], "CONFIG_ZRAM=y\n", False, False),
    ],
)
def test_the_plan_builds_the_users_a_series_reaches(
    toy: SourceTree,
    tmp_path: Path,
    edits: list[Edit],
    config_text: str,
    zram: bool,
    zswap: bool,
) -> None:
    files = (*validate.BUILT, "mm/zswap.c")
    series = validate.read_series([make_series(toy.root, edits, tmp_path / "s", files=files)])
    kernel = toy_kernel(tmp_path, config_text)
    zswap_kernel = kernel if "ZSWAP=y" in config_text else None
    plan = validate.make_plan(series, toy, kernel, "6.1", zswap_kernel, "no zswap here")
    assert plan.sources == (validate.SOURCE,)  # mm/zpdesc.h is not included by this zsmalloc.c
    assert validate.HEADER in plan.overlay
    assert bool(plan.zram) == zram, plan.zram_why
    assert bool(plan.zswap) == zswap, plan.zswap_why
    if zram:
        assert plan.zram == (
            "drivers/block/zram/Makefile",
            "drivers/block/zram/zram_drv.c",
            "drivers/block/zram/zram_drv.h",
        )
    elif "ZRAM=y" in config_text:
        assert "CONFIG_ZRAM=y, so zram cannot be loaded" in plan.zram_why
    else:
        assert plan.zram_why.startswith("not run: the series touches neither zram")
    if zswap:
        assert plan.zswap == ("mm/zswap.c", "mm/swap.h", "mm/zpdesc.h")
    # Every built file is kept in each applied state.
    applied = apply(series, toy, tmp_path, keep=plan.paths)
    assert {p for p, _ in applied.base} >= set(plan.paths)


def test_zram_accounting_is_checked() -> None:
    pages = clients.PAGES * 4096
    left = (clients.PAGES - clients.DISCARDED) * 4096

    def stat(orig: int, compr: int, used: int, huge: int) -> dict[str, int]:
        return clients.parse_mm_stat(
            f"{orig} {compr} {used} 0 {used} {clients.ZERO_PAGES} 0 {huge} 0"
        )

    good = {
        "written": stat(pages, 400000, 520000, 40),
        "discarded": stat(left, 200000, 300000, 39),
        "compacted": stat(left, 200000, 280000, 39),
    }
    assert clients.check_accounting(good, 4096) == []
    lost = dict(good, written=stat(pages - 4096, 400000, 520000, 40))
    assert clients.check_accounting(lost, 4096) == [
        f"orig_data_size after the written step is {pages - 4096}, expected {pages}"
    ]
    small = dict(good, written=stat(pages, 400000, 300000, 40))
    assert "zsmalloc holds less than zram stored" in clients.check_accounting(small, 4096)[0]
    assert clients.check_accounting({"written": good["written"]}, 4096) == [
        "mm_stat missing (have written)"
    ]
    with pytest.raises(ValueError, match="mm_stat has 3 fields"):
        clients.parse_mm_stat("1 2 3")


def test_new_warnings_ignore_moved_lines() -> None:
    base = ["zsmalloc.c:100:5: warning: unused variable 'x' [-Wunused-variable]"]
    step = [
        "zsmalloc.c:102:5: warning: unused variable 'x' [-Wunused-variable]",
        "zsmalloc.c:200:1: warning: no previous prototype for 'f' [-Wmissing-prototypes]",
    ]
    assert validate.new_warnings(base, step) == [step[1]]
    assert validate.new_warnings(base, base) == []


def test_kernels_with_zsmalloc_built_in_validate_on_the_source_built_kernel() -> None:
    found = validate.targets(["6.1", "6.12", "7.2", "6.12"], None)
    assert [(t.kernel.series, t.kernel.variant, t.chosen) for t in found] == [
        ("6.1", "distro", False),
        ("6.12", "minimal", False),
        ("7.2", "minimal", False),
    ]
    assert [t.kernel.slug for t in found] == ["6.1", "6.12-minimal", "7.2-minimal"]
    debug = validate.targets(["6.1", "7.2"], "debug")
    assert [(t.kernel.slug, t.chosen) for t in debug] == [("6.1-debug", True), ("7.2-debug", True)]


@pytest.mark.parametrize("series", ["6.12", "7.2"])
def test_debians_kernels_with_zsmalloc_built_in_are_refused(
    series: str, default_config: config.Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ValidateError, match="built in.*--variant minimal"):
        validate.validate(
            default_config, [tmp_path], Progress(), kernel_names=[series], variant="distro"
        )
    code = cli.main(["validate", "--kernel", series, "--variant", "distro", str(tmp_path)])
    assert code == 1
    assert "source-built kernel of the series, which has CONFIG_ZSMALLOC=m" in (
        capsys.readouterr().err
    )


def test_unknown_kernels_and_variants_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["validate", "--kernel", "5.10", str(tmp_path)]) == 1
    assert "unknown kernel '5.10'; known kernels: 6.1, 6.12, 7.2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["validate", "--variant", "tiny", str(tmp_path)])
    assert "invalid choice: 'tiny'" in capsys.readouterr().err


def test_cli_reports_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "series.mbox"
    empty.write_text("")
    assert cli.main(["validate", str(empty)]) == 1
    assert "is empty" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_speed_is_compared_with_the_neighbouring_base_loads() -> None:
    # The host slows down halfway: the variant is as fast as the base next to it.
    def load(name: str, ns: int, pages: int) -> perf.Bench:
        return perf.Bench(name, 0, pages, 9, {"alloc": ns})

    timeline = [
        load("base", 1000, 10),
        load("p01", 1000, 10),
        load("base", 1000, 10),
        load("p02", 2200, 11),
        load("base", 2000, 10),
        load("p02", 2200, 11),
        load("base", 2000, 10),
    ]
    ratios = perf.paired_ratios(timeline, "base")
    assert ratios["p01"] == [1.0]
    assert [round(r, 3) for r in ratios["p02"]] == [round(2.2 / 1.5, 3), 1.1]
    assert perf.base_drift(timeline, "base") == 1.0  # the base went from 1.0 to 2.0 µs


def test_failures_are_attributed_to_the_patch_that_brings_them() -> None:
    def step(n: int, suite: str) -> validate.Step:
        checks = {name: validate.Check("pass", "ok") for name in validate.CHECKS}
        checks["suite"] = validate.Check(suite, f"suite {suite}")
        return validate.Step(n, checks)

    steps = [step(1, "pass"), step(2, "fail"), step(3, "fail"), step(4, "skip"), step(5, "fail")]
    result = validate.KernelResult(KernelId("6.1"), "r", "v", "src", {}, [], steps)
    # No base run is needed: patch 1 passed. (The context is used only for one.)
    validate.attribute(None, result, None)  # type: ignore[arg-type]
    said = [s.checks["suite"].summary for s in steps]
    assert said[1] == "suite fail; patch 1 passed, so this patch brings the failure"
    assert said[2] == "suite fail; failing since patch 2"
    assert said[4] == (
        "suite fail; patch 1 is the last that passed (then patches 2 failed, 3 failed, 4 not run)"
    )


def test_the_report_says_what_happened(tmp_path: Path) -> None:
    series = validate.Series((patch(1, "mm/zsmalloc: x"), patch(2, "mm/zsmalloc: y")), "the cover")

    def checks(zram: str) -> dict[str, validate.Check]:
        found = {name: validate.Check("pass", f"{name} ok") for name in validate.CHECKS}
        found["zram"] = validate.Check(zram, f"zram {zram}")
        found["zswap"] = validate.Check("skip", "not compiled: untouched")
        return found

    good = validate.Step(
        1,
        checks("pass"),
        perf=validate.Perf(100, 100, 90, 90, 500, 500, 1.0, 2),
        cost=validate.Cost({"alloc": 250.0, "free": 100.0}, {"alloc": 200.0, "free": 100.0}, 5, 4),
    )
    bad = validate.Step(2, checks("skip"))
    bad.checks["apply"] = validate.Check(
        "fail", "does not apply: mm/zsmalloc.c: hunk #2 rejected", details=["@@ -1 +1 @@", "-a"]
    )
    k = validate.KernelResult(
        KernelId("6.1"), "6.1.0-56-amd64", "6.1.192-2", "src", {}, [], [good, bad]
    )
    steps = [validate.Step(1, checks("pass")), validate.Step(2, checks("fail"))]
    minimal = validate.KernelResult(
        KernelId("6.12", "minimal"), "6.12.117-zskit-minimal", "6.12.117-1", "src", {}, [], steps
    )
    minimal.clients = ["zram: built and run", "zswap: not compiled: untouched"]
    v = validate.Validation(tmp_path, series, [k, minimal], seconds=12.0)
    assert not v.passed
    assert v.verdict(1) == (
        "PASS",
        "6.1: apply ok; build ok; checkpatch ok; load ok; suite ok; zram pass; "
        "6.12 (minimal): apply ok; build ok; checkpatch ok; load ok; suite ok; zram pass",
    )
    assert v.verdict(2) == ("FAIL", "on 6.1: does not apply: mm/zsmalloc.c: hunk #2 rejected")
    validate.write(v)
    report = (tmp_path / "report.md").read_text()
    assert (
        "| # | patch | kernel | variant | apply | build | checkpatch | load | suite | zram |"
        in (report)
    )
    assert (
        "| 2 | mm/zsmalloc: y | 6.1 | distro | FAIL | ok | ok | ok | ok | - | - | - | - | - "
        "| FAIL |" in (report)
    )
    assert (
        "| 1 | mm/zsmalloc: x | 6.1 | distro | ok | ok | ok | ok | ok | ok | - | 1.000 | 1.000 "
        "| 1.250 | PASS |" in report
    )
    assert (
        "- instructions 1.2500 of the base's: alloc 200.0 -> 250.0 (1.250), "
        "free 100.0 -> 100.0 (1.000)" in report
    )
    assert "| 2 | mm/zsmalloc: y | 6.12 | minimal | ok | ok | ok | ok | ok | FAIL | - |" in report
    assert "**[2/2] mm/zsmalloc: y**: **FAIL**: on 6.1: does not apply" in report
    assert "Linux 6.12 (minimal) (6.12.117-zskit-minimal, built from linux-source-6.12" in report
    assert "On 6.12 (minimal), zram: built and run." in report
    assert "```\n@@ -1 +1 @@\n-a\n```" in report
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["verdict"] == "fail"
    assert [(k["kernel"], k["variant"], k["name"]) for k in doc["kernels"]] == [
        ("6.1", "distro", "6.1"),
        ("6.12", "minimal", "6.12-minimal"),
    ]
    assert doc["kernels"][0]["steps"][0]["perf"]["density"] == 1.0
    assert doc["kernels"][0]["steps"][0]["cost"]["ratios"] == {"alloc": 1.25, "free": 1.0}
    assert doc["kernels"][1]["steps"][1]["checks"]["zram"]["status"] == "fail"
    summary = (tmp_path / "summary.txt").read_text()
    assert "1/2 PASS: mm/zsmalloc: x" in summary
    assert "6.12 (minimal): zswap: not compiled: untouched" in summary


# --tree: the base a series is applied on, and the files read from the tree's .git.


@pytest.fixture
def toy_repo(toy: SourceTree, tmp_path: Path) -> tuple[Path, str, str]:
    """A git checkout of the toy tree: the first commit, then line3 changed on top."""
    repo = tmp_path / "linux"
    shutil.copytree(toy.root, repo)
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "first")
    first = git(repo, "rev-parse", "HEAD").strip()
    source = repo / validate.SOURCE
    source.write_text(source.read_text().replace("{ return 3; }", "{ return 303; }"))
    git(repo, "commit", "-q", "-am", "line3 returns more")
    return repo, first, git(repo, "rev-parse", "HEAD").strip()


def everything_hash(root: Path) -> str:
    """The tree's files and its .git, with their mtimes: any write shows here."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        digest.update(f"{path}:{st.st_size}:{st.st_mtime_ns}".encode())
    return digest.hexdigest()


def test_a_tree_base_is_head_by_default(toy_repo: tuple[Path, str, str]) -> None:
    repo, _, head = toy_repo
    base = validate.tree_base(repo, None, None)
    assert (base.commit, base.how, base.notes) == (head, "HEAD", ())
    assert base.label == f"tree {repo} at {head[:12]} (HEAD)"


def test_base_selects_a_commit_of_the_tree(toy_repo: tuple[Path, str, str], tmp_path: Path) -> None:
    repo, first, head = toy_repo
    base = validate.tree_base(repo, "HEAD~1", "f" * 40)
    assert (base.commit, base.how) == (first, "--base HEAD~1")
    assert "names base-commit ffff" in base.notes[0] and "as asked" in base.notes[0]
    # The named base-commit is taken when the tree has it, and --base wins over it.
    assert validate.tree_base(repo, None, first[:12]).commit == first
    assert validate.tree_base(repo, "HEAD", first).commit == head
    with pytest.raises(ValidateError, match="--base v9.9: no such commit in"):
        validate.tree_base(repo, "v9.9", None)


def test_a_base_commit_the_tree_lacks_falls_back_to_head(
    toy_repo: tuple[Path, str, str],
) -> None:
    repo, _, head = toy_repo
    base = validate.tree_base(repo, None, "1234567890ab")
    assert base.commit == head
    assert "names base-commit 1234567890ab, which" in base.notes[0]
    assert "does not have; applied on HEAD" in base.notes[0]


def test_the_files_at_the_base_come_from_git_and_the_tree_is_untouched(
    toy_repo: tuple[Path, str, str], tmp_path: Path
) -> None:
    repo, _, _ = toy_repo
    source_file = repo / validate.SOURCE
    source_file.write_text(source_file.read_text().replace("line20", "line_twenty"))  # dirty
    before = everything_hash(repo)
    # Made on the working state (line3 returns 303): not the files of the commit before.
    series = validate.read_series([make_series(repo, [RENAME], tmp_path / "s")])
    old = validate.tree_source(
        validate.tree_base(repo, "HEAD~1", None), validate.BUILT, tmp_path / "old"
    )
    assert old.root == tmp_path / "old" and old.has_dir_of("mm/new.c")
    assert "{ return 3; }" in (old.root / validate.SOURCE).read_text()
    assert (old.root / "drivers/block/zram/zram_drv.c").is_file()  # what the plan reads
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.raises(ValidateError, match="does not apply there"):
        apply(series, old, tmp_path / "a")
    # On HEAD it applies: the dirty edit is not in HEAD's files, and not in the context.
    head = validate.tree_source(validate.tree_base(repo, None, None), (), tmp_path / "head")
    assert "line_twenty" not in (head.root / validate.SOURCE).read_text()
    (step,) = apply(series, head, tmp_path / "b").steps
    assert step.ok and b"third_line(void)" in (step.content(validate.SOURCE) or b"")
    assert everything_hash(repo) == before


def test_a_series_for_a_different_tree_names_both_bases(
    toy_repo: tuple[Path, str, str], tmp_path: Path
) -> None:
    repo, _, head = toy_repo
    hidden = Edit("elsewhere", [("mm/zsmalloc.c", "{ return 5; }", "{ return 505; }")])
    edit = Edit("mm/zsmalloc: line5", [("mm/zsmalloc.c", "return 505;", "return 6;")])
    series = validate.read_series([make_series(repo, [edit], tmp_path / "s", hidden=hidden)])
    assert series.base_commit is not None
    base = validate.tree_base(repo, None, series.base_commit)
    source = validate.tree_source(base, validate.BUILT, tmp_path / "files")
    with pytest.raises(ValidateError) as refused:
        apply(series, source, tmp_path)
    said = str(refused.value)
    assert f"tree {repo} at {head[:12]} (HEAD)" in said
    assert f"base-commit: {series.base_commit}" in said
    assert f"The series names base-commit {series.base_commit}, which was not tried" in said


def test_a_plain_directory_is_its_files(toy: SourceTree, tmp_path: Path) -> None:
    base = validate.tree_base(toy.root, None, "abcdef1")
    assert base.commit is None and "not a git checkout" in base.notes[0]
    source = validate.tree_source(base, (), tmp_path / "unused")
    assert source.root == toy.root and source.has_file(validate.SOURCE)
    with pytest.raises(ValidateError, match="--base HEAD: .* is not a git checkout"):
        validate.tree_base(toy.root, "HEAD", None)


def test_prerequisite_patch_ids_are_read(toy: SourceTree, tmp_path: Path) -> None:
    (patch,) = sorted(make_series(toy.root, [RENAME], tmp_path / "s").glob("*.patch"))
    pid = "ab" * 20
    patch.write_text(
        patch.read_text().replace("base-commit:", f"prerequisite-patch-id: {pid}\nbase-commit:")
    )
    series = validate.read_series([patch])
    assert series.prerequisites == (pid,)
    assert any("prerequisite-patch-id: abababababab" in note for note in series.notes)


def test_base_without_a_tree_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["validate", "--base", "HEAD", str(tmp_path)]) == 1
    assert "--base REV names a commit of a tree: it goes with --tree DIR" in capsys.readouterr().err
    assert cli.main(["validate", "--tree", str(tmp_path / "none"), str(tmp_path)]) == 1
    assert "does not exist" in capsys.readouterr().err


# report.txt: plain text for a reply, the cost in LKP's layout, Tested-by only on all-pass.


def passing(n: int, **kw: object) -> validate.Step:
    found = {name: validate.Check("pass", f"{name} ok") for name in validate.CHECKS}
    found["zram"] = validate.Check("skip", "not run: the series does not reach zram")
    return validate.Step(n, found, **kw)  # type: ignore[arg-type]


def a_validation(tmp_path: Path, second: validate.Step, tester: str | None) -> validate.Validation:
    title = "mm/zsmalloc: a rather long subject that goes on and on past the width of a mail"
    series = validate.Series((patch(1, title), patch(2, "mm/zsmalloc: y")), "the cover")
    perf = validate.Perf(
        100, 100, 90, 90, 500, 520, 0.96, 2, [500.0, 505.0, 498.0], [520.0, 523.0, 518.0]
    )
    cost = validate.Cost({"alloc": 250.0, "free": 100.0}, {"alloc": 200.0, "free": 100.0}, 5, 4)
    first = passing(1, perf=perf, cost=cost)
    k = validate.KernelResult(KernelId("6.1"), "6.1.0-57-amd64", "6.1.192-3", "src", {}, [], [])
    k.steps = [first, second]
    return validate.Validation(tmp_path, series, [k], seconds=3.0, tester=tester)


def test_the_text_report_fits_a_mail_and_says_the_cost(tmp_path: Path) -> None:
    v = a_validation(tmp_path, passing(2), "Jane Doe <jane@example.org>")
    validate.write(v)
    text = (tmp_path / "report.txt").read_text()
    assert max(len(line) for line in text.splitlines()) <= 80, text
    assert "[1/2] mm/zsmalloc: a rather long subject" in text
    assert "Cost of patch 1 on 6.1, against the base:" in text
    assert "        base %stddev   %change      patched %stddev\n" in text
    assert "       200.0            +25.0%        250.0          instructions/alloc" in text
    assert "       100.0              0.0%        100.0          instructions/free" in text
    # 500/505/498 against 520/523/518: a real difference at 95%, with each one's spread.
    assert "         520   ±0.5%     -3.7%          501   ±0.7%  ns/object (wall, TCG)" in text
    assert "6.1 #1 zram: not run: the series does not reach zram" in text
    assert text.rstrip().endswith("Tested-by: Jane Doe <jane@example.org>")


def test_no_tested_by_unless_every_check_passed_and_a_name_is_known(tmp_path: Path) -> None:
    failed = passing(2)
    failed.checks["suite"] = validate.Check("fail", "suite fails: data")
    text = validate.text(a_validation(tmp_path, failed, "Jane Doe <jane@example.org>"), "J <j@x>")
    assert "\nTested-by:" not in text and "Not every check passed" in text
    text = validate.text(a_validation(tmp_path, passing(2), None), None)
    assert "\nTested-by:" not in text
    assert "without a name (git config user.name" in text


def test_a_difference_is_claimed_only_at_95_percent() -> None:
    from pyharness.commands.perf import significant

    assert significant([500.0, 505.0, 498.0], [520.0, 523.0, 518.0])
    assert not significant([500.0, 560.0, 450.0], [520.0, 470.0, 540.0])  # the noise
    assert not significant([500.0], [900.0])  # one run each claims nothing
    assert significant([100.0, 100.0], [101.0, 101.0])  # exact counts: any change
