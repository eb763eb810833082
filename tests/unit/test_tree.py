"""`--tree DIR` without building a kernel: what a tree is, its identity, its build directory.

The checks of a tree and their messages (bad input), the identity that keeps two
trees apart, the incremental build directory driven by a Kbuild stand-in, the
git description read without writing, and the command line.
tests/guest/test_tree.py builds and boots a real tree.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pyharness import report
from pyharness.commands import cli, config
from pyharness.kernel import tree as tree_mod
from pyharness.kernel.debian import DebianSuiteKernel
from pyharness.kernel.fragments import FragmentError
from pyharness.kernel.identity import KernelId, tree_tag
from pyharness.kernel.manifest import Kernel
from pyharness.kernel.provision import source_for, with_build
from pyharness.kernel.source import SourceBuiltKernel, Toolchain
from pyharness.kernel.tree import TreeError, TreeKernel, describe, tree_kernel_id, tree_series
from pyharness.locking import locked
from pyharness.progress import Progress, StageError
from tests.unit.test_source_kernels import FakeMake, write


def fake_tree(path: Path, version: str = "6", patchlevel: str = "1") -> Path:
    """The files tree_series() looks at: a top Makefile, Kconfig, mm/zsmalloc.c."""
    (path / "mm").mkdir(parents=True)
    (path / "Makefile").write_text(
        f"# SPDX\nVERSION = {version}\nPATCHLEVEL = {patchlevel}\nSUBLEVEL = 192\n"
    )
    (path / "Kconfig").write_text('mainmenu "Linux"\n')
    (path / "mm" / "zsmalloc.c").write_text("/* zsmalloc */\n")
    return path


def test_a_tree_names_its_series(tmp_path: Path) -> None:
    assert tree_series(fake_tree(tmp_path / "linux")) == "6.1"
    assert tree_series(fake_tree(tmp_path / "next", "7", "2")) == "7.2"


def test_a_path_with_spaces_or_colons_is_refused_with_the_reason(tmp_path: Path) -> None:
    # Kbuild's top Makefile stops on it, and objtool builds from the physical path.
    for name in ("my trees/linux", "trees:next/linux"):
        tree = fake_tree(tmp_path / name)
        with pytest.raises(TreeError) as e:
            tree_kernel_id(tree)
        assert "has a space or a colon in its path" in str(e.value)
        assert "move or rename the tree, or bind-mount it" in str(e.value)


def test_a_tree_tag_is_a_word_whatever_the_name(tmp_path: Path) -> None:
    tag = tree_tag(tmp_path / "linux: next")
    assert tag.startswith("tree-linux_next-") and " " not in tag and ":" not in tag


@pytest.mark.parametrize(
    ("make", "message"),
    [
        ("missing", "does not exist; pass the top directory of a Linux source tree"),
        ("file", "is not a directory"),
        ("empty", "is not a kernel tree (no top Makefile with VERSION and PATCHLEVEL"),
        ("no-kconfig", "or no Kconfig"),
        ("old", "is Linux 5.15, older than 6.1"),
        ("no-zsmalloc", "has no mm/zsmalloc.c"),
        (".config", "holds in-tree build output (.config)"),
        ("include/config", "holds in-tree build output (include/config)"),
        ("vmlinux", "run `make mrproper` in it"),
    ],
)
def test_bad_trees_are_refused_with_the_remedy(tmp_path: Path, make: str, message: str) -> None:
    path = tmp_path / "linux"
    if make == "file":
        path.write_text("")
    elif make == "empty":
        path.mkdir()
    elif make != "missing":
        fake_tree(
            path, patchlevel="15" if make == "old" else "1", version="5" if make == "old" else "6"
        )
        if make == "no-kconfig":
            (path / "Kconfig").unlink()
        elif make == "no-zsmalloc":
            (path / "mm" / "zsmalloc.c").unlink()
        elif make == "include/config":
            (path / "include" / "config").mkdir(parents=True)
        elif make in (".config", "vmlinux"):
            (path / make).write_text("")
    with pytest.raises(TreeError) as e:
        tree_kernel_id(path)
    assert message in str(e.value)
    if make in (".config", "include/config", "vmlinux"):
        assert "or point zskit at a clean checkout" in str(e.value)


def test_two_trees_never_share_a_name(tmp_path: Path) -> None:
    a = tree_kernel_id(fake_tree(tmp_path / "a" / "linux"))
    b = tree_kernel_id(fake_tree(tmp_path / "b" / "linux"))
    assert a.slug != b.slug and a.lock != b.lock
    assert a.name("upstream") != b.name("upstream")
    assert a.slug.startswith("6.1-minimal-tree-linux-")
    assert tree_tag(tmp_path / "a" / "linux") == tree_tag(tmp_path / "a" / "linux")  # stable
    assert a.label == f"6.1 (minimal, tree {tmp_path / 'a' / 'linux'})"
    assert KernelId("6.1").slug == "6.1"  # kernels without a tree are named as before


def test_a_tree_defaults_to_minimal_takes_debug_and_refuses_distro(tmp_path: Path) -> None:
    tree = fake_tree(tmp_path / "linux")
    assert tree_kernel_id(tree).variant == "minimal"
    assert tree_kernel_id(tree, "debug").variant == "debug"
    with pytest.raises(TreeError, match="--variant distro means Debian's packaged kernel"):
        tree_kernel_id(tree, "distro")


def test_the_config_names_the_tree(tmp_path: Path, default_config: config.Config) -> None:
    tree = fake_tree(tmp_path / "linux")
    cfg = default_config.with_tree(tree)
    assert (cfg.kernel, cfg.variant, cfg.tree) == ("6.1", "minimal", tree)
    assert cfg.kernel_id == KernelId("6.1", "minimal", tree=tree)
    debug = dataclasses.replace(default_config, variant="debug").with_tree(tree)
    assert debug.variant == "debug"  # VARIANT=debug in .config holds for a tree too
    assert isinstance(source_for(cfg.kernel_id), TreeKernel)


def test_tree_and_kernel_exclude_each_other() -> None:
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["run", "--tree", "/x", "--kernel", "6.1"])
    for command in ("run", "provision"):
        args = cli.parser().parse_args([command, "--tree", "/x"])
        assert args.tree == "/x"
    assert cli.parser().parse_args(["replay", "--tree", "/x", "f"]).tree == "/x"


def test_render_takes_tree_and_the_old_spelling() -> None:
    assert cli.parser().parse_args(["render", "--tree", "/x"]).tree == "/x"
    assert cli.parser().parse_args(["render", "--kernel-tree", "/x"]).tree == "/x"


def test_a_bad_tree_on_the_command_line_exits_non_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KCONFIG_CONFIG", "/nonexistent")
    assert cli.main(["provision", "--tree", str(tmp_path / "nothing")]) == 1
    assert "does not exist" in capsys.readouterr().err
    tree = fake_tree(tmp_path / "linux")
    assert cli.main(["run", "--tree", str(tree), "--variant", "distro"]) == 1
    assert "a tree is built with the fragments" in capsys.readouterr().err


# --- the build directory, with a Kbuild stand-in -------------------------------------


@dataclasses.dataclass(frozen=True)
class CountingMake(FakeMake):
    """FakeMake that records every make; the tree build calls it again and again."""

    calls: list[list[str]] = dataclasses.field(default_factory=list)

    def run(self, argv, progress, *, what, binds=(), heartbeat=None) -> str:
        words = [str(a) for a in argv]
        self.calls.append(words)
        out = Path(next(a for a in words if a.startswith("O="))[2:])
        if "vmlinux" in words and (out / "vmlinux").exists() and not self.fail:
            return ""  # Kbuild: nothing to do
        if "modules_install" in words:
            return ""
        return super().run(argv, progress, what=what, binds=binds, heartbeat=heartbeat)


def tree_kernel(tmp_path: Path, name: str = "linux") -> TreeKernel:
    tree = fake_tree(tmp_path / name)
    fragment = write(tmp_path, "f.config", "CONFIG_64BIT=y\n")
    return TreeKernel(tree.resolve(), "6.1", "minimal", fragment_files=(fragment,))


def provision_with(
    kernel: TreeKernel, tools: FakeMake, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> Kernel:
    monkeypatch.setattr(TreeKernel, "toolchain", lambda self, cache, progress, refresh: tools)
    return tree_mod.TreeKernel._build(  # the unit conftest refuses provision() itself
        kernel,
        kernel.build_dir(cache, tools),
        tools,
        tree_mod.fragments.merge(kernel.fragments()),
        Progress(),
        refresh=False,
    )


def test_a_tree_is_configured_once_then_built_incrementally(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kernel = tree_kernel(tmp_path)
    tools = CountingMake(ident="host gcc", make_vars=(), fail=False)
    cache = tmp_path / "cache"
    first = provision_with(kernel, tools, cache, monkeypatch)
    dest = kernel.build_dir(cache, tools)
    assert dest.parent == cache / "trees" and dest.name.startswith("6.1-minimal-tree-linux-")
    assert first.kdir == dest / "build" and first.source == kernel.tree
    assert Kernel.load(dest / "kernel.json") == first
    assert any("tinyconfig" in c for c in tools.calls)
    tools.calls.clear()
    again = provision_with(kernel, tools, cache, monkeypatch)
    assert again == first
    made = [c[-1] for c in tools.calls]
    assert "tinyconfig" not in made and "olddefconfig" not in made
    assert any("vmlinux" in c for c in tools.calls)  # Kbuild decides what changed
    assert all(c[2] == str(kernel.tree) for c in tools.calls)  # make -C the tree itself


def test_a_tree_build_dir_is_keyed_by_path_config_and_toolchain(tmp_path: Path) -> None:
    a, b = tree_kernel(tmp_path / "a"), tree_kernel(tmp_path / "b")
    gcc = FakeMake(ident="host gcc 12", make_vars=())
    cache = tmp_path / "cache"
    assert a.build_dir(cache, gcc) != b.build_dir(cache, gcc)
    assert a.build_dir(cache, gcc) == a.build_dir(cache, gcc)
    assert a.build_dir(cache, gcc) != a.build_dir(cache, dataclasses.replace(gcc, ident="gcc 14"))
    debug = dataclasses.replace(a, variant="debug", fragment_files=())
    assert a.build_dir(cache, gcc) != debug.build_dir(cache, gcc)


def test_a_failed_tree_build_keeps_the_directory_and_no_kernel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kernel = tree_kernel(tmp_path)
    cache = tmp_path / "cache"
    good = CountingMake(ident="host gcc", make_vars=(), fail=False)
    provision_with(kernel, good, cache, monkeypatch)
    dest = kernel.build_dir(cache, good)
    (dest / "build" / "vmlinux").unlink()  # the edit needs a relink, which fails
    bad = CountingMake(ident="host gcc", make_vars=(), fail=True)
    with pytest.raises(StageError) as e:
        provision_with(kernel, bad, cache, monkeypatch)
    message = str(e.value)
    assert "mm/zsmalloc.c:12:5: error: 'x' undeclared" in message
    assert f"{dest} is kept, and the next run continues the build" in message
    assert not (dest / "kernel.json").exists()  # the stale kernel is gone
    assert (dest / "build" / ".config").exists()


def test_a_tree_builds_with_its_series_toolchain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    root = FakeMake(ident="a suite's gcc", make_vars=())
    asked: list[str] = []

    def root_toolchain(distro: DebianSuiteKernel, *args: object) -> FakeMake:
        asked.append(distro.suite)
        return root

    monkeypatch.setattr(tree_mod, "root_toolchain", root_toolchain)
    for series, suite in (("6.12", "trixie"), ("7.2", "sid")):
        version, patchlevel = series.split(".")
        kernel = source_for(tree_kernel_id(fake_tree(tmp_path / series, version, patchlevel)))
        assert isinstance(kernel, TreeKernel) and kernel.distro is not None
        assert kernel.distro.suite == suite
        assert kernel.toolchain(cache, Progress()) is root
        assert asked[-1] == suite
    # A series without a root of its own builds with the host's gcc when that is new
    # enough for the tree (its scripts/min-tool-version.sh), and is refused otherwise.
    other = TreeKernel(fake_tree(tmp_path / "6.15", "6", "15"), "6.15")
    minimum = other.tree / "scripts" / "min-tool-version.sh"
    minimum.parent.mkdir()
    minimum.write_text('case "$1" in\nbinutils)\n\techo 2.25.0\n\t;;\ngcc)\n\techo 8.1.0\n')
    assert tree_mod.min_gcc(other.tree) == (8, 1, 0)
    assert other.toolchain(cache, Progress()).ident.startswith("host gcc")
    minimum.write_text(minimum.read_text().replace("8.1.0", "99.0"))
    with pytest.raises(TreeError, match=r"needs gcc 99.0 or later .*pass --cc"):
        other.toolchain(cache, Progress())


def test_a_held_lock_says_so_before_waiting(tmp_path: Path) -> None:
    lock = tmp_path / "locks" / "tree.lock"
    said = threading.Event()
    entered = threading.Event()

    def second() -> None:
        with locked(lock, waiting=said.set):
            entered.set()

    with locked(lock):  # the first zskit holds it
        waiter = threading.Thread(target=second)
        waiter.start()
        assert said.wait(10)  # told before it waits
        assert not entered.is_set()
    waiter.join(10)
    assert entered.is_set()  # then it got the lock
    quiet: list[str] = []
    with locked(lock, waiting=lambda: quiet.append("waiting")):
        pass
    assert quiet == []  # a free lock: no message


def test_a_tree_is_held_for_a_whole_command_and_a_second_zskit_waits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZSKIT_CACHE", str(tmp_path / "cache"))
    tree = fake_tree(tmp_path / "linux").resolve()
    second = (
        "import sys\nfrom pathlib import Path\nfrom pyharness.kernel.tree import holding\n"
        "from pyharness.progress import Progress\n"
        "with holding(Path(sys.argv[1]), Progress(out=sys.stdout)):\n    print('got it')\n"
    )
    with tree_mod.holding(tree, Progress()):
        with tree_mod.holding(tree, Progress()):  # taken again inside: already held
            pass
        proc = subprocess.Popen(
            [sys.executable, "-c", second, str(tree)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        said = proc.stdout.readline()
        assert f"waiting for another zskit working on {tree}" in said
        assert proc.poll() is None  # it waits while the first holds the tree
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and out.strip() == "got it"
    with tree_mod.holding(None, Progress()):  # no tree, no lock
        pass


def test_a_tree_runs_results_name_the_tree_in_the_kernel_identity(tmp_path: Path) -> None:
    tree = fake_tree(tmp_path / "linux").resolve()
    run = report.new_run(tree_kernel_id(tree), "upstream", directory=tmp_path / "r")
    run.info.update({"tree": str(tree), "tree_commit": "ab" * 20, "tree_dirty": True})
    run.write()
    doc = json.loads((tmp_path / "r" / "results.json").read_text())
    assert doc["kernel_identity"] == {
        "series": "6.1",
        "variant": "minimal",
        "arch": "x86_64",
        "page_size": "4k",
        "name": f"6.1-minimal-{tree_tag(tree)}",
        "tree": {"path": str(tree), "commit": "ab" * 20, "dirty": True},
    }
    loaded = report.RunResult.load(tmp_path / "r")
    assert loaded is not None and loaded.kernel_id == tree_kernel_id(tree)
    assert loaded.name == f"6.1-upstream-minimal-{tree_tag(tree)}"  # its matrix entry
    plain = report.new_run(KernelId("6.1"), "own", directory=tmp_path / "p")
    plain.write()
    doc = json.loads((tmp_path / "p" / "results.json").read_text())
    assert doc["kernel_identity"]["tree"] is None and plain.name == "6.1-own-distro"


def test_render_reads_the_trees_own_api_and_refuses_its_own_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = fake_tree(tmp_path / "linux")
    (tree / "mm" / "zsmalloc.c").write_text(
        "/*\n * Generated by zskit from kmod/zsmalloc.c.j2\n */\n"
    )
    assert cli.main(["render", "--tree", str(tree)]) == 1
    err = capsys.readouterr().err
    assert "is zskit's own allocator already" in err and "git checkout mm/zsmalloc.c" in err
    (tree / "mm" / "zsmalloc.c").write_text("/* not a zsmalloc zskit can read */\n")
    assert cli.main(["render", "--tree", str(tree)]) == 1  # detected, not the table's
    assert "has no include/linux/zsmalloc.h, scripts/checkpatch.pl" in capsys.readouterr().err


# --- what a run names -------------------------------------------------------------


def git(tree: Path, *args: str) -> None:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
        "GIT_CONFIG_GLOBAL": os.devnull,
    }
    subprocess.run(["git", "-C", str(tree), *args], env=env, check=True, capture_output=True)


def test_describe_names_commit_and_dirty_without_writing(tmp_path: Path) -> None:
    tree = fake_tree(tmp_path / "linux")
    assert describe(tree) == {"tree": str(tree)}  # a plain directory: only its path
    git(tree, "init", "-q")
    git(tree, "add", "-A")
    git(tree, "commit", "-q", "-m", "base")
    head = subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert describe(tree) == {"tree": str(tree), "tree_commit": head, "tree_dirty": False}
    zsmalloc = tree / "mm" / "zsmalloc.c"
    new = zsmalloc.with_name(".new")
    new.write_text("/* zsmalloc, edited */\n")
    new.replace(zsmalloc)
    index = tree / ".git" / "index"
    before = index.stat().st_mtime_ns
    assert describe(tree)["tree_dirty"] is True
    assert index.stat().st_mtime_ns == before  # GIT_OPTIONAL_LOCKS=0: no index refresh
    assert not (tree / ".git" / "index.lock").exists()


# --- --config-fragment and --cc -------------------------------------------------------


def test_a_users_fragment_is_merged_loudly_and_keys_the_build(tmp_path: Path) -> None:
    tree = fake_tree(tmp_path / "linux").resolve()
    plain = source_for(tree_kernel_id(tree))
    extra = write(tmp_path, "extra.config", "CONFIG_DEBUG_INFO_NONE=y\nCONFIG_SMP=y\n")
    said = io.StringIO()
    merged = with_build(plain, [extra], p=Progress(out=said))
    assert isinstance(plain, TreeKernel) and isinstance(merged, TreeKernel)
    assert merged.fragments() == [*plain.fragments(), extra]
    assert "config fragment extra.config:1: CONFIG_DEBUG_INFO_NONE=y" in said.getvalue()
    assert "1 setting(s) as the variant's" in said.getvalue()  # CONFIG_SMP, base.config's
    gcc = FakeMake(ident="host gcc 12", make_vars=())
    cache = tmp_path / "cache"
    assert merged.build_dir(cache, gcc) != plain.build_dir(cache, gcc)
    other = write(tmp_path, "other.config", "CONFIG_DEBUG_INFO_NONE=n\n")
    differs = with_build(plain, [other])
    assert isinstance(differs, TreeKernel)
    assert differs.build_dir(cache, gcc) != merged.build_dir(cache, gcc)
    # The key is the merged configuration, not the file's name.
    (tmp_path / "elsewhere").mkdir()
    same = write(tmp_path / "elsewhere", "x.config", extra.read_text())
    again = with_build(plain, [same])
    assert isinstance(again, TreeKernel)
    assert again.build_dir(cache, gcc) == merged.build_dir(cache, gcc)
    assert with_build(plain) is plain


def test_a_fragment_that_disagrees_with_the_variant_names_both_files(tmp_path: Path) -> None:
    tree = fake_tree(tmp_path / "linux").resolve()
    bad = write(tmp_path, "mine.config", "CONFIG_ZSMALLOC=y\n")
    with pytest.raises(FragmentError) as refused:
        with_build(source_for(tree_kernel_id(tree)), [bad])
    said = str(refused.value)
    assert "disagrees with the minimal variant's fragments" in said
    assert "CONFIG_ZSMALLOC: base.config:" in said and "sets m, mine.config:1 sets y" in said


def test_fragments_and_cc_are_refused_where_zskit_builds_nothing(tmp_path: Path) -> None:
    extra = write(tmp_path, "extra.config", "CONFIG_SMP=y\n")
    with pytest.raises(StageError, match="Debian's packaged Linux 6.1 is built already"):
        with_build(source_for(KernelId("6.1")), [extra])
    with pytest.raises(StageError, match="--cc picks the compiler of a tree's build"):
        with_build(source_for(KernelId("6.1", "minimal")), cc="clang")
    built = with_build(source_for(KernelId("6.1", "minimal")), [extra])
    assert isinstance(built, SourceBuiltKernel) and built.fragments()[-1] == extra


def test_cc_or_the_environment_picks_a_trees_compiler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = fake_tree(tmp_path / "linux").resolve()
    kernel = with_build(source_for(tree_kernel_id(tree)), cc="gcc")
    assert isinstance(kernel, TreeKernel)
    tools = kernel.toolchain(tmp_path / "cache", Progress())
    assert tools.make_vars == ("CC=gcc",) and tools.ident.startswith("cc gcc: gcc")
    monkeypatch.setenv("CC", "no-such-cc-1")
    plain = source_for(tree_kernel_id(tree))
    assert isinstance(plain, TreeKernel)
    with pytest.raises(TreeError, match="'no-such-cc-1' \\(or \\$CC\\): no such compiler"):
        plain.toolchain(tmp_path / "cache", Progress())


def test_bad_fragments_on_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = fake_tree(tmp_path / "linux")
    argv = ["provision", "--tree", str(tree), "--config-fragment", str(tmp_path / "none")]
    assert cli.main(argv) == 1
    assert "--config-fragment " + str(tmp_path / "none") + ": no such file" in (
        capsys.readouterr().err
    )
    extra = write(tmp_path, "extra.config", "CONFIG_SMP=y\n")
    assert cli.main(["provision", "--kernel", "6.1", "--config-fragment", str(extra)]) == 1
    assert "use them with --tree DIR or --variant minimal|debug" in capsys.readouterr().err


def test_zskits_kconfig_config_never_reaches_kbuild(monkeypatch: pytest.MonkeyPatch) -> None:
    # A matrix hands its preset to the entries as KCONFIG_CONFIG, which Kbuild reads as the
    # kernel's .config: a tree's `make` must not see it (it rewrote auto.conf from it).
    monkeypatch.setenv("KCONFIG_CONFIG", "/tmp/zskit-preset.config")
    tools = Toolchain(ident="host", make_vars=())
    out = tools.run(["sh", "-c", "echo ${KCONFIG_CONFIG:-unset}"], Progress(), what="env")
    assert out.strip() == "unset"
