"""`zskit run --module`: arguments, the copy and Kbuild of the user's module, the guest's
steps and the verdict (no QEMU, no kernel)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

import pytest

from pyharness.commands import cli
from pyharness.commands.external import ModuleOptions, check_options, verdict
from pyharness.guest.external import (
    END,
    START,
    LoadOutcome,
    errno_of,
    find_report,
    load_external,
    module_log,
)
from pyharness.guest.qemu import Guest, GuestError
from pyharness.kmod import external
from pyharness.progress import StageError

MODULE_C = """\
// SPDX-License-Identifier: GPL-2.0
#include <linux/module.h>

static int __init probe_init(void)
{
	return 0;
}
module_init(probe_init);
MODULE_LICENSE("GPL");
"""


def write(path: Path, text: str = MODULE_C) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def tree(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under root: its bytes and modification time."""
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# The module the user names


def test_a_c_file_is_a_module_named_after_it(tmp_path: Path) -> None:
    source = external.check_source(write(tmp_path / "zs_probe.c"))
    assert source.is_file and source.name == "zs_probe" and source.path.is_absolute()


def test_a_directory_needs_its_own_kbuild_or_makefile(tmp_path: Path) -> None:
    write(tmp_path / "mod" / "a.c")
    with pytest.raises(StageError, match="neither a Kbuild nor a Makefile"):
        external.check_source(tmp_path / "mod")
    write(tmp_path / "mod" / "Makefile", "obj-m += a.o\n")
    source = external.check_source(tmp_path / "mod")
    assert not source.is_file and source.name == "mod"
    write(tmp_path / "other" / "Kbuild", "obj-m := b.o\n")
    assert external.check_source(tmp_path / "other").name == "other"


def test_a_missing_file_or_another_kind_of_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StageError, match="no such file or directory"):
        external.check_source(tmp_path / "absent.c")
    for name in ("probe.ko", "probe.h", "probe.patch"):
        with pytest.raises(StageError, match="not a C file"):
            external.check_source(write(tmp_path / name))


def test_a_file_name_that_cannot_name_a_module_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StageError, match="cannot name a kernel module"):
        external.check_source(write(tmp_path / "1probe.c"))
    with pytest.raises(StageError, match="cannot name a kernel module"):
        external.check_source(write(tmp_path / "my probe.c"))


def test_the_names_of_zskits_own_modules_are_taken(tmp_path: Path) -> None:
    for name in ("zsmalloc", "zstest", "zsk"):
        with pytest.raises(StageError, match="has the name of a module zskit loads"):
            check_options(ModuleOptions(write(tmp_path / f"{name}.c")))


def test_module_args_are_insmods_parameters() -> None:
    assert external.parse_module_args(None) == ()
    assert external.parse_module_args("") == ()
    assert external.parse_module_args("num_threads=2 num_ops=100") == (
        "num_threads=2",
        "num_ops=100",
    )
    assert external.parse_module_args("name='a b' verbose") == ("name=a b", "verbose")
    with pytest.raises(StageError, match="not a module parameter"):
        external.parse_module_args("=3")
    with pytest.raises(StageError, match="not a module parameter"):
        external.parse_module_args("num-threads=2")
    with pytest.raises(StageError, match="--module-args"):
        external.parse_module_args("name='unclosed")


# Kbuild and the copy


def test_a_single_file_gets_a_generated_kbuild(tmp_path: Path) -> None:
    assert "\nobj-m := zs_probe.o\n" in external.generated_kbuild("zs_probe")
    user = tmp_path / "user"
    c_file = write(user / "zs_probe.c")
    write(user / "zs_probe.o", "a product of another build")
    before = tree(user)
    dest = tmp_path / "build"
    files = external.stage(external.check_source(c_file), dest)
    assert sorted(p.name for p in files) == ["Kbuild", "zs_probe.c"]
    assert (dest / "Kbuild").read_text() == external.generated_kbuild("zs_probe")
    assert (dest / "zs_probe.c").read_text() == MODULE_C
    assert not (dest / "zs_probe.o").exists()
    assert tree(user) == before  # nothing written next to the user's file


def test_a_directory_is_copied_as_is_without_build_products(tmp_path: Path) -> None:
    user = tmp_path / "mod"
    write(user / "Makefile", "obj-m += a.o\na-y := main.o lib/util.o\n")
    write(user / "main.c")
    write(user / "lib" / "util.c", "int util;\n")
    write(user / "lib" / "util.h", "extern int util;\n")
    for product in ("main.o", "a.ko", "a.mod", "a.mod.c", ".main.o.cmd", "Module.symvers"):
        write(user / product, "stale")
    write(user / "modules.order", "a.ko\n")
    write(user / ".git" / "HEAD", "ref: refs/heads/main\n")
    before = tree(user)
    dest = tmp_path / "build"
    external.stage(external.check_source(user), dest)
    assert sorted(tree(dest)) == ["Makefile", "lib/util.c", "lib/util.h", "main.c"]
    assert tree(user) == before


def test_a_new_copy_keeps_unchanged_files_and_drops_removed_ones(tmp_path: Path) -> None:
    user = tmp_path / "mod"
    write(user / "Kbuild", "obj-m := a.o\n")
    write(user / "a.c")
    write(user / "old.c")
    dest = tmp_path / "build"
    source = external.check_source(user)
    external.stage(source, dest)
    write(dest / "a.o", "built")  # Kbuild's products in the copy stay
    os.utime(dest / "a.c", ns=(1, 1))
    (user / "old.c").unlink()
    external.stage(source, dest)
    assert (dest / "a.c").stat().st_mtime_ns == 1  # unchanged: not rewritten
    assert not (dest / "old.c").exists() and (dest / "a.o").exists()
    write(user / "a.c", MODULE_C + "/* edited */\n")
    external.stage(source, dest)
    assert (dest / "a.c").read_text().endswith("/* edited */\n")


def test_modules_come_in_kbuilds_order(tmp_path: Path) -> None:
    write(tmp_path / "modules.order", "b.ko\na.ko\n")  # 6.1 writes NAME.ko
    assert external.modules_in_order(tmp_path) == (tmp_path / "b.ko", tmp_path / "a.ko")
    write(tmp_path / "modules.order", "sub/c.o\n")  # 6.2 and later write NAME.o
    assert external.modules_in_order(tmp_path) == (tmp_path / "sub" / "c.ko",)
    (tmp_path / "modules.order").unlink()
    write(tmp_path / "z.ko", "")
    write(tmp_path / "y.ko", "")
    assert external.modules_in_order(tmp_path) == (tmp_path / "y.ko", tmp_path / "z.ko")


def test_exports_are_read_from_module_symvers(tmp_path: Path) -> None:
    symvers = write(
        tmp_path / "Module.symvers",
        "0x1\tzs_malloc\t/b/kmod/6.1-own/zsmalloc\tEXPORT_SYMBOL\t\n"
        "0x2\tzs_free\t/b/kmod/6.1-own/zsmalloc\tEXPORT_SYMBOL_GPL\t\n"
        "0x3\tzt_thing\t/b/kmod/6.1-own/zstest\tEXPORT_SYMBOL\t\n"
        "0x4\tzs_builtin\tvmlinux\tEXPORT_SYMBOL\t\n"
        "garbage\n",
    )
    assert external.symvers_exports(symvers, "zsmalloc") == {"zs_malloc", "zs_free"}
    assert external.symvers_exports(symvers, None) == {"zs_builtin"}
    assert external.symvers_exports(tmp_path / "absent", "zsmalloc") == set()


def test_a_module_that_calls_no_allocator_export_is_seen(tmp_path: Path) -> None:
    source = external.check_source(write(tmp_path / "m.c"))
    built = external.BuiltModule(
        source,
        tmp_path,
        (tmp_path / "m.ko", tmp_path / "n.ko", tmp_path / "p.ko"),
        (),
        (),
        exports=frozenset({"zsk_malloc", "zsk_free"}),
        undefined={
            "m": frozenset({"zsk_malloc", "printk"}),
            "n": frozenset({"_printk"}),
            "p": frozenset({"zs_malloc", "zs_free", "_printk"}),
        },
    )
    assert built.allocator_calls("m") == ("zsk_malloc",)
    assert built.allocator_calls("n") == () and built.other_zs_calls("n") == ()
    assert built.allocator_calls("p") == ()
    assert built.other_zs_calls("p") == ("zs_free", "zs_malloc")


def test_a_call_of_another_zsmalloc_api_is_recognised() -> None:
    for error in (
        "t.c:81:34: too many arguments to function ‘zs_malloc’",
        "t.c:105:17: implicit declaration of function 'zs_obj_write'",
    ):
        assert external.API_MISMATCH.search(error)
    assert not external.API_MISMATCH.search("t.c:6:16: ‘x’ undeclared")


# The guest's steps


class FakeGuest:
    """Answers each command; `answers` maps a command's start to (status, output)."""

    def __init__(self, answers: dict[str, tuple[int, str]] | None = None) -> None:
        self.commands: list[str] = []
        self.answers = answers or {}
        self.timeouts: list[float | None] = []

    def run_status(self, command: str, timeout: float | None = None) -> tuple[int, str]:
        self.commands.append(command)
        self.timeouts.append(timeout)
        for start, answer in self.answers.items():
            if command.startswith(start):
                if isinstance(answer, GuestError):
                    raise answer
                return answer
        return 0, ""

    def run(self, command: str, timeout: float | None = None) -> str:
        return self.run_status(command, timeout)[1]


def test_a_module_is_inserted_given_time_and_unloaded() -> None:
    fake = FakeGuest()
    outcome = load_external(cast(Guest, fake), "/m/t.ko", ("a=1", "s=x y"), 30, 0)
    assert outcome.inserted and outcome.unloaded and outcome.error is None
    assert fake.commands == [
        "echo 8 > /proc/sys/kernel/printk",
        f"echo '{START} t' > /dev/kmsg",
        "insmod /m/t.ko a=1 's=x y'",
        "test -d /sys/module/t",
        "rmmod t",
        f"echo '{END} t' > /dev/kmsg",
    ]
    assert fake.timeouts[2] == 30


def test_a_failed_insmod_gives_its_errno_and_no_rmmod() -> None:
    message = "insmod: can't insert '/m/t.ko': Cannot allocate memory"
    fake = FakeGuest({"insmod": (1, message)})
    outcome = load_external(cast(Guest, fake), "/m/t.ko", (), 30, 0)
    assert outcome.rc == 1 and outcome.errno == "ENOMEM" and outcome.unloaded is None
    assert not any(c.startswith("rmmod") for c in fake.commands)


def test_a_module_that_unloaded_itself_is_not_removed() -> None:
    fake = FakeGuest({"test -d": (1, "")})
    outcome = load_external(cast(Guest, fake), "/m/t.ko", (), 30, 0)
    assert outcome.inserted and outcome.unloaded is None
    assert not any(c.startswith("rmmod") for c in fake.commands)


def test_a_guest_that_dies_ends_the_steps_with_its_error() -> None:
    error = GuestError("timeout", "no answer within 30 s, QEMU killed")
    fake = FakeGuest({"insmod": error})  # type: ignore[dict-item]
    outcome = load_external(cast(Guest, fake), "/m/t.ko", (), 30, 0)
    assert outcome.error is error and outcome.step == "insmod" and outcome.rc is None


def test_errno_comes_from_insmods_message() -> None:
    assert errno_of("insmod: can't insert 'x.ko': No such device") == "ENODEV"
    assert errno_of("insmod: can't insert 'x.ko': Invalid argument\n") == "EINVAL"
    assert errno_of("insmod: can't insert 'x.ko': Unknown symbol in module") is None
    assert errno_of("") is None


CONSOLE = f"""\
[    1.000000] boot message
[    3.000000] {START} t\r
[    3.100000] t: running test with step size: 1
[    3.200000] t: all read() completed in 12 us

[    3.300000] {END} t
[    4.000000] after
"""


def test_the_modules_output_is_the_log_between_the_markers() -> None:
    assert module_log(CONSOLE) == (
        "[    3.100000] t: running test with step size: 1\n"
        "[    3.200000] t: all read() completed in 12 us"
    )
    assert module_log("no markers\n") == ""
    unfinished = CONSOLE.split(END)[0].rsplit("\n", 1)[0]  # the guest died before the end
    assert module_log(unfinished).endswith("completed in 12 us")
    second = f"[    5.0] {START} u\n[    5.1] u: hello\n[    5.2] {END} u\n"
    assert module_log(CONSOLE + second).endswith("completed in 12 us\n[    5.1] u: hello")


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("WARNING: possible circular locking dependency detected", "lockdep"),
        ("WARNING: possible recursive locking detected", "lockdep"),
        ("WARNING: inconsistent lock state", "lockdep"),
        ("WARNING: suspicious RCU usage", "lockdep"),
        ("BUG: KCSAN: data-race in zs_free / zs_malloc", "kcsan"),
        ("rcu: INFO: rcu_sched detected stalls on CPUs/tasks:", "rcu-stall"),
        ("rcu: INFO: rcu_preempt self-detected stall on CPU", "rcu-stall"),
        ("BUG: KASAN: slab-use-after-free in zs_destroy_pool+0x10/0x90", "kasan"),
        ("WARNING: CPU: 0 PID: 95 at t.c:9 t_init+0x26/0x1000 [t]", "warning"),
        ("Oops: 0000 [#1] PREEMPT SMP", "oops"),
    ],
)
def test_reports_that_fail_a_module_run(line: str, kind: str) -> None:
    report = find_report(f"[    1.0] ok\n[    2.5] {line}\n[    2.6] more\n")
    assert report is not None and report.kind == kind and report.line == 2
    assert report.excerpt.splitlines()[0].endswith(line)


def test_a_log_that_only_mentions_a_warning_is_clean() -> None:
    assert find_report("[ 1.0] t: no WARNING: here\n[ 1.1] t: 0 lockdep reports\n") is None


# The verdict


def outcome(**changes: object) -> LoadOutcome:
    base = LoadOutcome("t", "insmod /m/t.ko", step="done", rc=0, unloaded=True)
    for key, value in changes.items():
        setattr(base, key, value)
    return base


def test_a_clean_load_passes() -> None:
    assert verdict(outcome(), CONSOLE, 30) is None


def test_a_failed_insmod_fails_with_errno_and_the_log() -> None:
    failed = verdict(outcome(rc=1, errno="ENODEV", shell_output="insmod: ..."), CONSOLE, 30)
    assert failed is not None
    kind, message = failed
    assert kind == "insmod" and "insmod t failed: ENODEV" in message
    assert "running test with step size: 1" in message


def test_a_hang_fails_with_the_deadline() -> None:
    error = GuestError("timeout", "no answer")
    failed = verdict(outcome(rc=None, step="insmod", error=error), CONSOLE, 12)
    assert failed is not None and failed[0] == "timeout"
    assert "did not return within 12 s (module_init hangs?); QEMU killed" in failed[1]
    failed = verdict(outcome(step="rmmod", error=error), CONSOLE, 12)
    assert failed is not None and "module_exit hangs?" in failed[1]


def test_a_report_in_the_log_fails_a_module_that_loaded() -> None:
    console = CONSOLE.replace("after", "WARNING: possible recursive locking detected")
    failed = verdict(outcome(), console, 30)
    assert failed is not None and failed[0] == "lockdep"
    assert "possible recursive locking detected" in failed[1]


# The command line: every error before any kernel is provisioned


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = cli.main(["run", *args])
    return rc, capsys.readouterr().err


@pytest.mark.usefixtures("isolated")
def test_cli_refuses_bad_modules_before_provisioning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path / "nokbuild" / "a.c")
    cases = {
        str(tmp_path / "absent.c"): "no such file or directory",
        str(write(tmp_path / "notes.txt")): "not a C file",
        str(tmp_path / "nokbuild"): "neither a Kbuild nor a Makefile",
        str(write(tmp_path / "zsmalloc.c")): "has the name of a module zskit loads",
    }
    for path, message in cases.items():
        rc, err = run_cli(["--module", path], capsys)
        assert rc == 1 and message in err, err
    assert not (tmp_path / "cache").exists()  # nothing was provisioned


@pytest.mark.usefixtures("isolated")
def test_cli_refuses_options_that_do_not_go_with_a_module(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    module = str(write(tmp_path / "probe.c"))
    cases = [
        (["--module-args", "a=1"], "--module-args: only with --module"),
        (["--settle", "1"], "--settle: only with --module"),
        (["--module", module, "--ops", "10"], "drop --ops"),
        (["--module", module, "--baseline"], "drop --baseline"),
        (["--module", module, "--scenario", "page-ends"], "drop --scenario"),
        (["--module", module, "--module-args", "=1"], "not a module parameter"),
        (["--module", module, "--module-timeout", "0"], "positive number of seconds"),
        (["--module", module, "--settle", "-1"], "--settle takes 0..600"),
        (["--memory", "1024"], "--memory: only with --module"),
    ]
    for args, message in cases:
        rc, err = run_cli(args, capsys)
        assert rc == 1 and message in err, (args, err)
    assert not (tmp_path / "cache").exists()


def test_run_help_shows_the_module_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    text = capsys.readouterr().out
    options = ("--module FILE.c|DIR", "--module-args", "--module-timeout", "--settle", "--memory")
    for option in options:
        assert option in text
