"""`--tree DIR` in a guest: a kernel built from a developer's own tree, and the suite on it.

The fixture tree is the cached linux-source-6.1 (the source-built 6.1 minimal
kernel's tree) hard-linked (`cp -al`), made a git checkout and committed. Files
of it are only ever replaced by a rename, never edited in place: that would
change the cache's copy. The tree sits at a fixed place in the cache, so its
build directory (<cache>/trees/) is built once (~5-8 min on 2 cores) and later
sessions only catch up; every session restores the tree to its commit with
fresh files, so Kbuild sees what a session changed as new.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pyharness.commands import cli, config, run, validate
from pyharness.kernel.identity import KernelId, tree_tag
from pyharness.kernel.manifest import Kernel
from pyharness.kernel.provision import DEBIAN_SUITES, provision
from pyharness.kernel.source import SourceBuiltKernel, root_toolchain
from pyharness.kernel.tree import tree_kernel_id
from pyharness.paths import cache_dir
from pyharness.progress import Progress, StageError
from tests.guest.test_bug_injection import BUGS
from tests.guest.test_validate import GOOD
from tests.unit.test_validate import Edit, make_series, mbox

pytestmark = pytest.mark.qemu

# A fixed author and date: the fixture's commit is the same in every session.
GIT_ENV = {
    "GIT_AUTHOR_NAME": "zskit test",
    "GIT_AUTHOR_EMAIL": "zskit@example.invalid",
    "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
    "GIT_COMMITTER_NAME": "zskit test",
    "GIT_COMMITTER_EMAIL": "zskit@example.invalid",
    "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}
BUG = "class-size-off-by-one-step"  # the planted change a dirty tree runs


def git(tree: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(tree), *args],
        env={**os.environ, **GIT_ENV},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def replace_file(path: Path, text: str) -> None:
    """Write `path` anew and rename it over: a hard-linked original stays as it was."""
    tmp = path.with_name(f".{path.name}.test")
    tmp.write_text(text)
    tmp.replace(path)


def restore(tree: Path) -> None:
    """Every changed tracked file back from the commit, as new files (fresh mtimes)."""
    changed = [line[3:] for line in git(tree, "status", "--porcelain").splitlines()]
    for name in changed:
        (tree / name).unlink(missing_ok=True)  # checkout then writes a new file
    if changed:
        git(tree, "checkout", "--", *changed)


def make_tree(pristine: Path, tree: Path) -> None:
    """A git checkout of `pristine` at `tree`: hard links, `git add -A -f`, one commit."""
    shutil.rmtree(tree, ignore_errors=True)
    tree.parent.mkdir(parents=True, exist_ok=True)
    tmp = tree.with_name(tree.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run(["cp", "-al", str(pristine), str(tmp)], check=True)
    git(tmp, "init", "-q")
    # Debian's linux-source .gitignore ignores everything at the top level: -f adds it.
    git(tmp, "add", "-A", "-f")
    git(tmp, "commit", "-q", "-m", "linux-source-6.1, as the fixture of tests/guest/test_tree.py")
    tmp.rename(tree)


def listing(tree: Path) -> dict[str, tuple[int, int]]:
    """Every path in the tree (but .git) with its size and mtime: a write shows here."""
    found = {}
    for top, dirs, files in os.walk(tree):
        dirs[:] = [d for d in dirs if not (top == str(tree) and d == ".git")]
        for name in dirs + files:
            st = os.lstat(os.path.join(top, name))
            found[os.path.relpath(os.path.join(top, name), tree)] = (st.st_size, st.st_mtime_ns)
    return found


@pytest.fixture(scope="session")
def tree() -> Iterator[Path]:
    """The fixture tree, at its commit, with every file a session changed made new."""
    path = cache_dir() / "test-trees" / "linux-6.1"
    if not (path / ".git").is_dir():  # the pristine source is needed only to make it
        make_tree(provision(KernelId("6.1", "minimal"), Progress()).source, path)
    restore(path)
    # The tested file is always new: a previous session's edit, restored with an
    # older mtime, would otherwise look older than its object.
    zsmalloc = path / "mm" / "zsmalloc.c"
    replace_file(zsmalloc, zsmalloc.read_text())
    yield path
    restore(path)


@pytest.fixture(scope="session")
def built(tree: Path) -> tuple[Kernel, float]:
    """The tree's kernel (built here the first time: minutes), and how long it took."""
    start = time.monotonic()
    kernel = provision(tree_kernel_id(tree), Progress())
    seconds = time.monotonic() - start
    print(f"\nprovision of the fixture tree: {seconds:.1f} s")
    return kernel, seconds


def tree_config(default_config: config.Config, tree: Path, allocator: str) -> config.Config:
    return default_config.with_tree(tree).with_overrides(allocator=allocator)


def results(directory: Path) -> dict[str, object]:
    doc: dict[str, object] = json.loads((directory / "results.json").read_text())
    return doc


def test_the_kernel_is_built_from_the_tree_in_the_cache(
    tree: Path, built: tuple[Kernel, float]
) -> None:
    kernel, _ = built
    assert kernel.source == tree and kernel.variant == "minimal"
    assert kernel.kdir.is_relative_to(cache_dir() / "trees")
    # Kbuild adds "+" for a git tree not at a tagged commit (setlocalversion).
    assert kernel.release.startswith("6.1.") and "-zskit-minimal" in kernel.release
    assert kernel.config("ZSMALLOC") == "m"


def test_a_clean_tree_passes_and_is_left_unchanged(
    tree: Path,
    built: tuple[Kernel, float],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    record_property: Callable[[str, object], None],
) -> None:
    before = listing(tree)
    monkeypatch.setenv("KCONFIG_CONFIG", "/nonexistent")  # the Kconfig defaults
    start = time.monotonic()
    code = cli.main(
        ["run", "--tree", str(tree), "--allocator", "upstream", "--results-dir", str(tmp_path)]
    )
    seconds = time.monotonic() - start
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"PASS: Linux 6.1 (minimal, tree {tree}) / upstream" in out
    doc = results(tmp_path)
    assert doc["tree"] == str(tree)
    assert doc["tree_commit"] == git(tree, "rev-parse", "HEAD").strip()
    assert doc["tree_dirty"] is False
    assert git(tree, "status", "--porcelain") == ""
    assert listing(tree) == before  # nothing new, nothing rewritten
    record_property("warm_run_seconds", round(seconds, 1))
    with capsys.disabled():
        print(f"\nwarm `zskit run --tree` (nothing changed): {seconds:.1f} s")


def test_the_own_allocator_runs_on_the_tree(
    tree: Path, built: tuple[Kernel, float], default_config: config.Config, tmp_path: Path
) -> None:
    cfg = tree_config(default_config, tree, "own")
    result = run.run(cfg, Progress(), run.RunOptions(results_dir=tmp_path))
    assert result.passed, result.first_failure
    assert results(tmp_path)["tree_dirty"] is False


def test_a_dirty_edit_is_what_runs_and_rebuilds_only_the_module(
    tree: Path,
    built: tuple[Kernel, float],
    default_config: config.Config,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    record_property: Callable[[str, object], None],
) -> None:
    kernel, _ = built
    vmlinux = kernel.kdir / "vmlinux"
    module = kernel.kdir / "mm" / "zsmalloc.ko"
    linked, module_built = vmlinux.stat().st_mtime_ns, module.stat().st_mtime_ns
    old, new, kinds = BUGS[BUG]
    zsmalloc = tree / "mm" / "zsmalloc.c"
    text = zsmalloc.read_text()
    assert text.count(old) == 1
    replace_file(zsmalloc, text.replace(old, new))
    try:
        p = Progress()
        start = time.monotonic()
        result = run.run(
            tree_config(default_config, tree, "upstream"), p, run.RunOptions(results_dir=tmp_path)
        )
        seconds = time.monotonic() - start
        failure = result.first_failure
        assert failure is not None, "the planted bug in the dirty tree went unnoticed"
        assert failure.kind in kinds, failure.failure
        doc = results(tmp_path)
        assert doc["tree_dirty"] is True
        assert doc["tree_commit"] == git(tree, "rev-parse", "HEAD").strip()
        assert new in (tmp_path / "sources" / "zsmalloc.c").read_text()
        # Kbuild rebuilt the in-tree module and left vmlinux as it was.
        assert vmlinux.stat().st_mtime_ns == linked
        assert module.stat().st_mtime_ns > module_built
    finally:
        restore(tree)
    record_property("run_after_edit_seconds", round(seconds, 1))
    with capsys.disabled():
        print(
            f"\n`zskit run --tree` after editing mm/zsmalloc.c: {seconds:.1f} s "
            f"(provision {p.timings.get('provision', 0):.1f} s; {p.summary()})"
        )


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="a read-only bind mount needs root (as root, chmod a-w stops nothing)",
)
def test_a_read_only_tree_works(tree: Path, built: tuple[Kernel, float], tmp_path: Path) -> None:
    # The tree bound read-only onto itself in a private mount namespace: any write into
    # it, by zskit, Kbuild or git, fails with EROFS (which chmod cannot do for root).
    script = 'mount --bind "$1" "$1"; mount -o remount,bind,ro "$1"; shift; exec "$@"'
    zskit = [sys.executable, "-m", "pyharness.commands.cli"]
    argv = ["run", "--tree", str(tree), "--allocator", "upstream", "--results-dir", str(tmp_path)]
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-ec", script, "ro", str(tree)]
        + zskit
        + argv,
        env={**os.environ, "KCONFIG_CONFIG": "/nonexistent"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASS" in done.stdout
    assert results(tmp_path)["tree_dirty"] is False


def test_a_failed_build_names_the_line_and_the_next_run_continues(
    tree: Path, built: tuple[Kernel, float]
) -> None:
    kernel, _ = built
    zsmalloc = tree / "mm" / "zsmalloc.c"
    text = zsmalloc.read_text()
    replace_file(zsmalloc, text + "\nstatic int zskit_planted = ;\n")
    manifest = kernel.kdir.parent / "kernel.json"
    try:
        with pytest.raises(StageError) as e:
            provision(tree_kernel_id(tree), Progress())
        message = str(e.value)
        line = len(text.splitlines()) + 2
        assert f"mm/zsmalloc.c:{line}:" in message and "error:" in message
        assert f"{kernel.kdir.parent} is kept, and the next run continues" in message
        assert not manifest.exists()  # a failed build is no kernel
    finally:
        restore(tree)
    again = provision(tree_kernel_id(tree), Progress())  # continues where it stopped
    assert again == kernel and manifest.exists()


def test_bad_trees_are_refused_on_the_command_line(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KCONFIG_CONFIG", "/nonexistent")

    def refused(path: Path, message: str) -> None:
        assert cli.main(["provision", "--tree", str(path)]) == 1
        err = capsys.readouterr().err
        assert message in err, err

    refused(tmp_path / "nothing", "does not exist")
    refused(tree / "Makefile", "is not a directory")
    refused(tree / "mm", "is not a kernel tree")
    copy = tmp_path / "with space" / "linux"
    copy.parent.mkdir()
    subprocess.run(["cp", "-al", str(tree), str(copy)], check=True)
    refused(copy, "has a space or a colon in its path")
    plain = copy.rename(tmp_path / "linux")
    (plain / ".config").write_text("CONFIG_64BIT=y\n")  # a new file: the original is untouched
    refused(plain, "holds in-tree build output (.config)")
    (plain / ".config").unlink()
    (plain / "mm" / "zsmalloc.c").unlink()  # the link only
    refused(plain, "has no mm/zsmalloc.c")
    assert (tree / "mm" / "zsmalloc.c").exists()


# Later series build in their suite's root (trixie's gcc-14, sid's gcc-16), cold in
# 7-15 min on 2 cores: gated; ZSKIT_TEST_TREE_612=1 / ZSKIT_TEST_TREE_72=1 run them.
LATER_TREES = [
    pytest.param(
        series,
        marks=pytest.mark.skipif(
            os.environ.get(f"ZSKIT_TEST_TREE_{series.replace('.', '')}") != "1",
            reason=f"a cold {series} tree builds for 7-15 min on 2 cores in its suite's root "
            f"(and downloads linux-source-{series} once); "
            f"ZSKIT_TEST_TREE_{series.replace('.', '')}=1 runs it (warm: seconds)",
        ),
    )
    for series in ("6.12", "7.2")
]


@pytest.mark.parametrize("series", LATER_TREES)
def test_a_later_tree_builds_in_its_suite_root_and_passes(
    default_config: config.Config, tmp_path: Path, series: str
) -> None:
    distro = DEBIAN_SUITES[series]
    p = Progress()
    tools = root_toolchain(distro, cache_dir(), p, refresh=False)
    # Only linux-source unpacked (as the source-built kernels have it), no build.
    pristine = SourceBuiltKernel(series, "minimal", distro=distro)._source(
        cache_dir(), tools, p, refresh=False
    )
    path = cache_dir() / "test-trees" / f"linux-{series}"
    if not (path / ".git").is_dir():
        make_tree(pristine.path, path)
    restore(path)
    cfg = tree_config(default_config, path, "upstream")
    result = run.run(cfg, p, run.RunOptions(results_dir=tmp_path))
    print(f"\n{series} tree: {p.summary()}")
    assert result.passed, result.first_failure
    doc = results(tmp_path)
    assert doc["tree_dirty"] is False and str(doc["kernel_release"]).startswith(f"{series}.")
    assert doc["tree_tests"] == {SELFTEST: "ok"}  # the series' own zram kselftests
    assert git(path, "status", "--porcelain") == ""


# zskit validate --tree: a series applied on the tree's files at a base read from its .git.

SIDE = "zskit-test-side"  # a branch of the fixture beside HEAD, never checked out
TYPO = ("calls must occurs in reverse", "calls must occur in reverse")


def side_commit(tree: Path) -> str:
    """SIDE: HEAD with one comment of zsmalloc.c fixed, made with git's plumbing in a
    temporary index (the fixture's working files and index stay as they are); the same
    commit in every session (fixed author and date)."""
    text = git(tree, "show", f"HEAD:{validate.SOURCE}")
    assert text.count(TYPO[0]) == 1
    env = {**os.environ, **GIT_ENV, "GIT_INDEX_FILE": str(tree / ".git" / "zskit-test-index")}

    def plumb(*args: str, stdin: str | None = None) -> str:
        return subprocess.run(
            ["git", "-C", str(tree), *args],
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    blob = plumb("hash-object", "-w", "--stdin", stdin=text.replace(*TYPO))
    plumb("read-tree", "HEAD")
    plumb("update-index", "--cacheinfo", f"100644,{blob},{validate.SOURCE}")
    commit = plumb("commit-tree", plumb("write-tree"), "-p", "HEAD", "-m", "zsmalloc: a typo")
    Path(env["GIT_INDEX_FILE"]).unlink()
    plumb("update-ref", f"refs/heads/{SIDE}", commit)
    return commit


def side_series(tree: Path, out: Path) -> Path:
    """A one-patch series made on SIDE's files (its context is not in HEAD's)."""
    files = out.with_name(out.name + "-files")
    for path in validate.BUILT:
        (files / path).parent.mkdir(parents=True, exist_ok=True)
        (files / path).write_text(git(tree, "show", f"{SIDE}:{path}"))
    edit = Edit(
        "mm/zsmalloc: say in which order to unmap",
        [(validate.SOURCE, TYPO[1], "calls must occur in the reverse")],
    )
    return make_series(files, [edit], out)


def test_validate_on_the_trees_head(
    tree: Path,
    built: tuple[Kernel, float],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    record_property: Callable[[str, object], None],
) -> None:
    before = listing(tree)
    head = git(tree, "rev-parse", "HEAD").strip()
    series = mbox(make_series(tree, GOOD[:3], tmp_path / "s"), tmp_path / "series.mbox")
    monkeypatch.setenv("KCONFIG_CONFIG", "/nonexistent")
    argv = ["validate", "--tree", str(tree), "--no-perf", str(series)]
    start = time.monotonic()
    code = cli.main([*argv, "--results-dir", str(tmp_path / "results")])
    seconds = time.monotonic() - start
    captured = capsys.readouterr()
    assert code == 0, captured.out + captured.err
    kernels = results(tmp_path / "results")["kernels"]
    assert isinstance(kernels, list) and len(kernels) == 1
    kernel = kernels[0]
    assert kernel["source"] == f"tree {tree} at {head[:12]} (HEAD)"
    assert [s["verdict"][:4] for s in kernel["steps"]] == ["PASS"] * 3
    assert "which" in captured.err and "does not have; applied on HEAD" in captured.err
    assert listing(tree) == before and git(tree, "status", "--porcelain") == ""
    record_property("validate_tree_3_patches_seconds", round(seconds, 1))
    with capsys.disabled():
        print(f"\nwarm `zskit {' '.join(argv)}` (3 patches): {seconds:.1f} s")


def test_validate_with_base_applies_on_that_commit(
    tree: Path,
    built: tuple[Kernel, float],
    default_config: config.Config,
    tmp_path: Path,
) -> None:
    commit = side_commit(tree)
    before = listing(tree)
    series = side_series(tree, tmp_path / "s")
    result = validate.validate(
        default_config,
        [series],
        Progress(),
        results_dir=tmp_path / "results",
        perf_rounds=0,
        trees=[tree],
        base=SIDE,
    )
    assert result.passed, validate.summary(result)
    (kernel,) = result.kernels
    assert kernel.source == f"tree {tree} at {commit[:12]} (--base {SIDE})"
    assert listing(tree) == before


def test_a_series_for_a_different_tree_is_refused(
    tree: Path,
    built: tuple[Kernel, float],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    side_commit(tree)
    series = side_series(tree, tmp_path / "s")  # its base-commit is not in the tree
    head = git(tree, "rev-parse", "HEAD").strip()
    monkeypatch.setenv("KCONFIG_CONFIG", "/nonexistent")
    argv = ["validate", "--tree", str(tree), "--no-perf", str(series)]
    assert cli.main([*argv, "--results-dir", str(tmp_path / "results")]) == 1
    err = capsys.readouterr().err
    assert f"tree {tree} at {head[:12]} (HEAD)" in err
    assert "does not apply there (base-commit: " in err
    assert "fetch that commit into the tree" in err and "--base REV" in err
    assert not (tmp_path / "results").exists()


def test_matrix_tree_entries_take_turns_on_the_tree(
    tree: Path,
    built: tuple[Kernel, float],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Both entries of the tree start at once; the tree's lock makes the second wait (and
    # say so) until the first has built and booted.
    preset = tmp_path / "trees-only.config"
    preset.write_text(
        'CONFIG_MATRIX_KERNELS="none"\n# CONFIG_MATRIX_ALLOCATOR_BUILTIN is not set\n'
    )
    monkeypatch.setenv("KCONFIG_CONFIG", str(preset))
    monkeypatch.chdir(tmp_path)
    argv = ["matrix", "--config", str(preset), "--tree", str(tree), "--jobs", "2"]
    code = cli.main(argv)
    out = capsys.readouterr().out
    assert code == 0, out
    tag = tree_tag(tree)
    names = [f"6.1-own-minimal-{tag}", f"6.1-upstream-minimal-{tag}"]
    merged = Path(out.split("merged results: ")[1].split(" ")[0])
    logs = [(merged / name / "zskit.log").read_text() for name in names]
    assert sum(f"waiting for another zskit working on {tree}" in log for log in logs) == 1
    for name in names:
        identity = results(merged / name)["kernel_identity"]
        assert isinstance(identity, dict) and identity["tree"]["path"] == str(tree)
        assert identity["tree"]["dirty"] is False


@pytest.mark.skipif(
    os.environ.get("ZSKIT_TEST_TREE_FRAGMENT") != "1",
    reason="a config fragment is a new build directory: a cold kernel build of the fixture "
    "tree (5-8 min on 2 cores); tests/unit/test_tree.py proves the merging and the keying; "
    "ZSKIT_TEST_TREE_FRAGMENT=1 runs it (warm afterwards: seconds)",
)
def test_a_config_fragment_builds_its_own_kernel_of_the_tree(
    tree: Path, built: tuple[Kernel, float], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kernel, _ = built
    fragment = tmp_path / "caller.config"
    fragment.write_text("CONFIG_PRINTK_CALLER=y\n")
    monkeypatch.setenv("KCONFIG_CONFIG", "/nonexistent")
    argv = ["run", "--tree", str(tree), "--allocator", "upstream", "--config-fragment"]
    assert cli.main([*argv, str(fragment), "--results-dir", str(tmp_path / "r")]) == 0
    other = provision(tree_kernel_id(tree), Progress(), fragments=[fragment])
    assert other.config("PRINTK_CALLER") == "y" and kernel.config("PRINTK_CALLER") != "y"
    assert other.kdir != kernel.kdir


# The tree's own tests (kernel/tree_tests.py): its zram kselftests, and a KUnit suite an
# edit adds (built alone: trees build with KUNIT_ALL_TESTS=m), its KTAP read from the log.

SELFTEST = "tree-selftests-zram-zram.sh"
RATIO_CHECK = 'if [ "$v" -lt 100 ]; then'  # zram01.sh: fails below a 1:1 ratio

# A KUnit suite of zsmalloc as a developer might add one (6.1's API): one case that
# checks data through a mapping, one that fails when PLANT is defined.
KUNIT_C = """\
// SPDX-License-Identifier: GPL-2.0
#include <kunit/test.h>
#include <linux/zsmalloc.h>
#include <linux/string.h>

static void zs_round_trip(struct kunit *test)
{
	struct zs_pool *pool = zs_create_pool("kunit");
	unsigned long handle;
	char *p;

	KUNIT_ASSERT_NOT_NULL(test, pool);
	handle = zs_malloc(pool, 3000, GFP_KERNEL);
	KUNIT_ASSERT_FALSE(test, IS_ERR_VALUE(handle));
	p = zs_map_object(pool, handle, ZS_MM_WO);
	memset(p, 0x5a, 3000);
	zs_unmap_object(pool, handle);
	p = zs_map_object(pool, handle, ZS_MM_RO);
	KUNIT_EXPECT_EQ(test, p[2999], (char)0x5a);
	zs_unmap_object(pool, handle);
	zs_free(pool, handle);
	KUNIT_EXPECT_EQ(test, zs_get_total_pages(pool), 0UL);
	zs_destroy_pool(pool);
}

static void zs_planted(struct kunit *test)
{
#ifdef PLANT
	KUNIT_EXPECT_EQ(test, 1, 2);
#endif
}

static struct kunit_case zs_cases[] = {
	KUNIT_CASE(zs_round_trip),
	KUNIT_CASE(zs_planted),
	{}
};

static struct kunit_suite zs_suite = {
	.name = "zsmalloc-fixture",
	.test_cases = zs_cases,
};
kunit_test_suite(zs_suite);

MODULE_LICENSE("GPL");
"""
KCONFIG = """
config ZSMALLOC_FIXTURE_KUNIT_TEST
	tristate "KUnit test of zsmalloc (zskit's fixture)" if !KUNIT_ALL_TESTS
	depends on KUNIT && ZSMALLOC
	default KUNIT_ALL_TESTS
"""
MAKE = "obj-$(CONFIG_ZSMALLOC_FIXTURE_KUNIT_TEST) += zsmalloc_fixture_kunit.o\n"


def test_the_trees_zram_selftests_pass_beside_the_checks(
    tree: Path, built: tuple[Kernel, float], default_config: config.Config, tmp_path: Path
) -> None:
    result = run.run(
        tree_config(default_config, tree, "upstream"),
        Progress(),
        run.RunOptions(results_dir=tmp_path),
    )
    assert result.passed, result.first_failure
    assert results(tmp_path)["tree_tests"] == {SELFTEST: "ok"}
    log = (tmp_path / "tree-tests.ktap").read_text()
    assert "# zram01 : [PASS]" in log and "# zram02 : [PASS]" in log


def test_an_edited_selftest_is_what_runs_and_its_printed_fail_fails_the_run(
    tree: Path, built: tuple[Kernel, float], default_config: config.Config, tmp_path: Path
) -> None:
    script = tree / "tools/testing/selftests/zram/zram01.sh"
    text = script.read_text()
    assert text.count(RATIO_CHECK) == 1
    # A ratio of 1000:1 is more than zeros in ext2 give: zram01 prints its FAIL, exits 0.
    replace_file(script, text.replace(RATIO_CHECK, 'if [ "$v" -lt 100000 ]; then'))
    try:
        result = run.run(
            tree_config(default_config, tree, "upstream"),
            Progress(),
            run.RunOptions(results_dir=tmp_path),
        )
    finally:
        restore(tree)
    failure = result.first_failure
    assert failure is not None and failure.name == SELFTEST and failure.kind == "tree-test"
    assert "printed FAIL" in str(failure.failure) and "zram01 : [FAIL]" in str(failure.failure)


def add_kunit_suite(tree: Path, plant: bool) -> Path:
    source = tree / "mm" / "zsmalloc_fixture_kunit.c"
    source.write_text(("#define PLANT\n" if plant else "") + KUNIT_C)
    kconfig, makefile = tree / "mm" / "Kconfig", tree / "mm" / "Makefile"
    replace_file(kconfig, kconfig.read_text() + KCONFIG)
    replace_file(makefile, makefile.read_text() + MAKE)
    return source


def test_a_kunit_suite_added_to_the_tree_is_built_alone_and_its_ktap_read(
    tree: Path, built: tuple[Kernel, float], default_config: config.Config, tmp_path: Path
) -> None:
    kernel, _ = built
    vmlinux = kernel.kdir / "vmlinux"
    linked = vmlinux.stat().st_mtime_ns
    cfg = tree_config(default_config, tree, "upstream")
    source = add_kunit_suite(tree, plant=False)
    try:
        good = run.run(cfg, Progress(), run.RunOptions(results_dir=tmp_path / "good"))
        assert vmlinux.stat().st_mtime_ns == linked  # only the new module was built
        source.write_text("#define PLANT\n" + KUNIT_C)
        bad = run.run(cfg, Progress(), run.RunOptions(results_dir=tmp_path / "bad"))
    finally:
        source.unlink(missing_ok=True)
        restore(tree)
    assert good.passed, good.first_failure
    name = "tree-kunit-zsmalloc_fixture_kunit-zsmalloc-fixture"
    assert results(tmp_path / "good")["tree_tests"] == {SELFTEST: "ok", name: "ok"}
    failure = bad.first_failure
    assert failure is not None and failure.name == name and failure.kind == "tree-test"
    assert "zs_planted: failed" in str(failure.failure)
    assert "Expected 1 == 2" in str(failure.failure)
