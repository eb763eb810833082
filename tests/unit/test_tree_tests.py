"""Finding a tree's own tests (kernel/tree_tests.py) and putting them in the image."""

from __future__ import annotations

from pathlib import Path

from pyharness.guest import tree_tests as guest_tests
from pyharness.kernel import tree_tests

MAKEFILE = """\
# SPDX-License-Identifier: GPL-2.0
all:

TEST_PROGS := zram.sh
TEST_FILES := zram01.sh zram02.sh \\
	zram_lib.sh
TEST_FILES += $(OUTPUT)/generated
EXTRA_CLEAN := err.log

include ../lib.mk
"""


def selftest_dir(tree: Path, name: str = "zram", settings: str | None = None) -> Path:
    directory = tree / "tools/testing/selftests" / name
    directory.mkdir(parents=True)
    (directory / "Makefile").write_text(MAKEFILE)
    for f in ("zram.sh", "zram01.sh", "zram02.sh", "zram_lib.sh"):
        (directory / f).write_text(f"#!/bin/bash\necho {f}\n")
    if settings is not None:
        (directory / "settings").write_text(settings)
    return directory


def test_a_kselftest_makefile_gives_programs_files_and_the_timeout(tmp_path: Path) -> None:
    selftest_dir(tmp_path, settings="timeout=90\n")
    (found,) = tree_tests.kselftests(tmp_path)
    assert found.name == "zram" and found.programs == ("zram.sh",)
    assert found.files == ("zram.sh", "zram01.sh", "zram02.sh", "zram_lib.sh")
    assert found.timeout == 90 and found.unbuilt == ()


def test_without_settings_the_timeout_is_kselftests_and_compiled_programs_are_listed(
    tmp_path: Path,
) -> None:
    directory = selftest_dir(tmp_path, name="zsmalloc")
    (directory / "Makefile").write_text("TEST_GEN_PROGS := zs_stress\nTEST_PROGS := zram.sh\n")
    (found,) = tree_tests.kselftests(tmp_path)
    assert found.timeout == tree_tests.DEFAULT_TIMEOUT
    assert found.unbuilt == ("zs_stress",) and found.programs == ("zram.sh",)


def test_a_tree_without_them_has_none(tmp_path: Path) -> None:
    assert not tree_tests.find_tree_tests(tmp_path, None)


def ko(path: Path, depends: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x7fELF junk\0license=GPL\0depends=" + depends.encode() + b"\0name=x\0")


def test_kunit_modules_are_those_of_zsmalloc_and_zram_that_depend_on_kunit(
    tmp_path: Path,
) -> None:
    modules = tmp_path / "lib/modules/6.1.0"
    ko(modules / "kernel/mm/zsmalloc.ko", "")
    ko(modules / "kernel/mm/zsmalloc_kunit.ko", "kunit,zsmalloc")
    ko(modules / "kernel/drivers/block/zram/zram.ko", "zsmalloc")
    ko(modules / "kernel/lib/list-test.ko", "kunit")
    ko(modules / tree_tests.KUNIT_MODULE, "")
    order = [
        "kernel/mm/zsmalloc.ko",
        "kernel/mm/zsmalloc_kunit.ko",
        "kernel/drivers/block/zram/zram.ko",
        "kernel/lib/list-test.ko",
    ]
    (modules / "modules.order").write_text("\n".join(order) + "\n")
    found = tree_tests.find_tree_tests(tmp_path, modules)
    assert found.kunit == (modules / "kernel/mm/zsmalloc_kunit.ko",)
    assert found.kunit_core == modules / tree_tests.KUNIT_MODULE
    executables, files = guest_tests.image_files(found)
    assert executables == {}
    assert sorted(files) == [
        f"{guest_tests.KUNIT_DIR}/kunit.ko",
        f"{guest_tests.KUNIT_DIR}/zsmalloc_kunit.ko",
    ]


def test_kselftest_files_and_the_shims_go_into_the_image(tmp_path: Path) -> None:
    selftest_dir(tmp_path)
    executables, files = guest_tests.image_files(tree_tests.find_tree_tests(tmp_path, None))
    assert files == {}
    assert executables[f"{guest_tests.SELFTESTS_DIR}/zram/zram01.sh"].startswith(b"#!/bin/bash")
    assert set(guest_tests.SHIMS) <= set(executables)
