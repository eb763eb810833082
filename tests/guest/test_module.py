"""`zskit run --module` on Debian's 6.1 kernel: test modules of our own, built against the
allocator under test and judged by their kernel log.

Each module is written here as text, into a temporary directory that stands for the
user's: the build must never write there. A module whose init tests zsmalloc passes on
both allocators; one that WARNs, one whose init fails, one that hangs and one that does
not compile each fail with what explains it.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from pyharness.commands import config
from pyharness.commands.external import ModuleOptions, run_module
from pyharness.progress import Progress
from pyharness.report import RunResult

pytestmark = pytest.mark.qemu

# Allocates objects of many sizes, writes each through a mapping, reads every one back,
# frees them all and destroys the pool; the 6.1 API (zs_map_object with modes).
ZS_PROBE = """\
// SPDX-License-Identifier: GPL-2.0
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/err.h>
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/zsmalloc.h>

static unsigned int nr_objs = 200;
module_param(nr_objs, uint, 0444);
MODULE_PARM_DESC(nr_objs, "objects to allocate (default 200)");

static size_t obj_size(unsigned int i)
{
	return 24 + (i * 37) % 3000;
}

static int __init zs_probe_init(void)
{
	unsigned long *handles;
	unsigned long peak;
	struct zs_pool *pool;
	unsigned int i, bad = 0;
	int err = 0;
	u8 *buf;

	handles = kcalloc(nr_objs, sizeof(*handles), GFP_KERNEL);
	if (!handles)
		return -ENOMEM;
	pool = zs_create_pool("zs_probe");
	if (!pool) {
		kfree(handles);
		return -ENOMEM;
	}
	for (i = 0; i < nr_objs; i++) {
		handles[i] = zs_malloc(pool, obj_size(i), GFP_KERNEL);
		if (IS_ERR_VALUE(handles[i]) || !handles[i]) {
			handles[i] = 0;
			err = -ENOMEM;
			break;
		}
		buf = zs_map_object(pool, handles[i], ZS_MM_WO);
		memset(buf, i & 0xff, obj_size(i));
		zs_unmap_object(pool, handles[i]);
	}
	peak = zs_get_total_pages(pool);
	for (i = 0; i < nr_objs && handles[i]; i++) {
		buf = zs_map_object(pool, handles[i], ZS_MM_RO);
		if (buf[0] != (u8)i || buf[obj_size(i) - 1] != (u8)i)
			bad++;
		zs_unmap_object(pool, handles[i]);
	}
	for (i = 0; i < nr_objs && handles[i]; i++)
		zs_free(pool, handles[i]);
	pr_info("objects %u, corrupt %u, peak pages %lu, pages after free %lu\\n",
		nr_objs, bad, peak, zs_get_total_pages(pool));
	zs_destroy_pool(pool);
	kfree(handles);
	if (!err && bad)
		err = -EIO;
	return err;
}

static void __exit zs_probe_exit(void)
{
	pr_info("unloaded\\n");
}

module_init(zs_probe_init);
module_exit(zs_probe_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("zskit test: allocate, map, verify and free through zsmalloc");
"""

ZS_WARN = """\
// SPDX-License-Identifier: GPL-2.0
#include <linux/module.h>
#include <linux/zsmalloc.h>

static int __init zs_warn_init(void)
{
	struct zs_pool *pool = zs_create_pool("zs_warn");

	WARN(pool, "zs_warn: a warning planted by the test\\n");
	zs_destroy_pool(pool);
	return 0;
}

module_init(zs_warn_init);
MODULE_LICENSE("GPL");
"""

INIT_FAILS = """\
// SPDX-License-Identifier: GPL-2.0
#include <linux/module.h>

static int __init init_fails_init(void)
{
	pr_info("init_fails: refusing to load\\n");
	return -ENODEV;
}

module_init(init_fails_init);
MODULE_LICENSE("GPL");
"""

HANGS = """\
// SPDX-License-Identifier: GPL-2.0
#include <linux/delay.h>
#include <linux/module.h>

static int __init hangs_init(void)
{
	pr_info("hangs: sleeping for an hour\\n");
	ssleep(3600);
	return 0;
}

module_init(hangs_init);
MODULE_LICENSE("GPL");
"""

BROKEN = """\
// SPDX-License-Identifier: GPL-2.0
#include <linux/module.h>

static int __init broken_init(void)
{
	return not_declared_anywhere;
}

module_init(broken_init);
MODULE_LICENSE("GPL");
"""


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def user_file(tmp_path: Path, name: str, text: str) -> Path:
    """The user's module file, alone in a directory of its own."""
    path = tmp_path / "user" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def qemu_running(path: Path) -> bool:
    return subprocess.run(["pgrep", "-f", str(path)], capture_output=True).returncode == 0


def module_run(
    cfg: config.Config, tmp_path: Path, path: Path, **options: Any
) -> tuple[RunResult, dict[str, Any]]:
    before = snapshot(path.parent if path.is_file() else path)
    opts = ModuleOptions(path=path, results_dir=tmp_path / "results", **options)
    result = run_module(cfg, Progress(), opts)
    assert snapshot(path.parent if path.is_file() else path) == before  # the user's files
    assert not qemu_running(result.console_log())
    doc = json.loads((result.directory / "results.json").read_text())
    return result, doc


def test_our_module_passes_on_our_allocator(default_config: config.Config, tmp_path: Path) -> None:
    source = user_file(tmp_path, "zs_probe.c", ZS_PROBE)
    cfg = default_config.with_overrides(allocator="own")
    result, doc = module_run(cfg, tmp_path, source, args=("nr_objs=300",))
    assert result.passed, result.first_failure
    assert doc["verdict"] == "pass" and doc["module_unloaded"] == [True]
    assert doc["module_warnings"] == []
    log = (result.directory / "module.log").read_text()
    assert "zs_probe: objects 300, corrupt 0, peak pages " in log
    assert "pages after free 0" in log and "zs_probe: unloaded" in log
    assert (result.directory / "sources" / "module" / "zs_probe.c").read_text() == ZS_PROBE
    assert (result.directory / "sources" / "module" / "Kbuild").exists()
    names = [c["name"] for c in doc["cases"]]
    assert "build-module" in names and "module-zs_probe" in names


def test_a_module_directory_passes_on_upstream(
    default_config: config.Config, tmp_path: Path
) -> None:
    user = tmp_path / "probe-dir"
    user.mkdir()
    (user / "zs_probe.c").write_text(ZS_PROBE)
    (user / "Makefile").write_text("obj-m += zs_probe.o\n")
    cfg = default_config.with_overrides(allocator="upstream")
    result, doc = module_run(cfg, tmp_path, user)
    assert result.passed, result.first_failure
    log = (result.directory / "module.log").read_text()
    assert "zs_probe: objects 200, corrupt 0" in log
    assert sorted(p.name for p in user.iterdir()) == ["Makefile", "zs_probe.c"]


def test_a_module_that_warns_fails_with_the_excerpt(
    default_config: config.Config, tmp_path: Path
) -> None:
    source = user_file(tmp_path, "zs_warn.c", ZS_WARN)
    result, doc = module_run(default_config, tmp_path, source)
    failure = result.first_failure
    assert failure is not None and failure.name == "module-zs_warn", failure
    assert failure.kind == "crash"  # panic_on_warn
    assert "kernel warning: " in (failure.failure or "")
    assert "zs_warn_init" in (failure.failure or "")
    assert "zs_warn: a warning planted by the test" in (result.directory / "module.log").read_text()
    assert doc["verdict"] == "fail"


def test_a_failing_init_fails_with_its_errno_and_a_warning(
    default_config: config.Config, tmp_path: Path
) -> None:
    source = user_file(tmp_path, "init_fails.c", INIT_FAILS)
    result, doc = module_run(default_config, tmp_path, source)
    failure = result.first_failure
    assert failure is not None and failure.kind == "insmod", failure
    assert "insmod init_fails failed: ENODEV" in (failure.failure or "")
    assert "init_fails: refusing to load" in (failure.failure or "")
    assert doc["module_errno"] == "ENODEV"
    warnings = doc["module_warnings"]
    assert len(warnings) == 1
    assert "does not link against the allocator under test" in warnings[0]


def test_a_module_that_hangs_in_init_is_killed_at_its_deadline(
    default_config: config.Config, tmp_path: Path
) -> None:
    source = user_file(tmp_path, "hangs.c", HANGS)
    start = time.monotonic()
    result, _ = module_run(default_config, tmp_path, source, timeout=8.0)
    elapsed = time.monotonic() - start
    failure = result.first_failure
    assert failure is not None and failure.kind == "timeout", failure
    assert "did not return within 8 s (module_init hangs?); QEMU killed" in (failure.failure or "")
    assert "hangs: sleeping for an hour" in (failure.failure or "")
    assert elapsed < default_config.boot_timeout


def test_a_module_that_does_not_compile_fails_with_file_and_line(
    default_config: config.Config, tmp_path: Path
) -> None:
    source = user_file(tmp_path, "broken.c", BROKEN)
    result, doc = module_run(default_config, tmp_path, source)
    failure = result.first_failure
    assert failure is not None and failure.name == "build-module", failure
    assert "broken.c:6:" in (failure.failure or "")
    assert "not_declared_anywhere" in (failure.failure or "")
    assert "boot" not in doc["timings"]
