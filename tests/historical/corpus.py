"""Real zsmalloc and zram bugs that upstream fixed (2019-2026), and benign upstream changes.

Each entry names the fix (subject, date, commit where found, a public source), says what the
bug broke and where its code lives (6.1, 7.2), and re-introduces it as a few text replacements
of the pristine file of a kernel zskit runs. `patch()` turns the replacements into a
`git format-patch` mail (a diff of the pristine file against the replaced one), which
`zskit validate` takes as a one-patch series. No upstream code is committed: only the short
strings each replacement needs to find its place.

Where a bug's original code is gone from both kernels, the entry plants the same failure at
the place that does its job in the kernel's code ("re-expressed"), and says so.

`variant` is the kernel variant whose instruments should see the bug, and `scenario` the
workload that should provoke it ("suite": the default workload validate runs today). The
runner skips an entry whose variant zskit cannot build yet, and says which it needs.

This module uses only the standard library: the runner loads it by path.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

ZSMALLOC = "mm/zsmalloc.c"
ZRAM = "drivers/block/zram/zram_drv.c"

# What can catch a bug, as the runner reports it.
CHECKS = ("model", "data", "leak", "KASAN", "KCSAN", "lockdep", "WARN", "crash", "build", "zram")


@dataclass(frozen=True)
class Replacement:
    old: str  # found exactly `count` times in the pristine file
    new: str
    path: str = ZSMALLOC
    count: int = 1


@dataclass(frozen=True)
class Entry:
    name: str
    subject: str  # the upstream fix's subject (benign: the change's own)
    date: str  # of the fix (author date, or the posting's)
    commit: str  # mainline commit id where found; else what identifies it
    source: str  # where it was read (lore/LKML archive, a git web page)
    broke: str  # what the bug broke (benign: what the change does)
    series: str  # the kernel whose pristine source is edited
    variant: str  # distro, minimal, debug, kcsan or nocompaction
    scenario: str  # "suite" (today's default workload) or the scenario that should provoke it
    replacements: tuple[Replacement, ...]
    catches: frozenset[str] = frozenset()  # the checks that should report it (empty: benign)
    code_in: str = ""  # where the buggy (or fixed) code is found: 6.1, 7.2, both
    note: str = ""
    scenario_seconds: int | None = None  # the scenario's deadline, where not its default
    benign: bool = False

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r.path for r in self.replacements))


def _r(old: str, new: str, path: str = ZSMALLOC, count: int = 1) -> Replacement:
    return Replacement(old, new, path, count)


ENTRIES: tuple[Entry, ...] = (
    # --- 6.1 -----------------------------------------------------------------------------
    Entry(
        name="compacted-pages-accounting",
        subject="zsmalloc: account the number of compacted pages correctly",
        date="2021-02-02",
        commit="2395928158059b8f9858365fce7713ce7fef62e4",
        source="https://lkml.kernel.org/r/20210202122235.26885-1-wu-yan@tcl.com "
        "(stable backport quoted in github.com/whatawurst/android_kernel_sony_msm8998/pull/70)",
        broke="zs_compact() returned the pool's running total of compacted pages instead of "
        "the pages this call freed (and added to it racily), so zram's compaction and the "
        "shrinker reported wrong numbers; Fixes: 860c707dca15",
        series="6.1",
        variant="distro",
        scenario="suite",
        replacements=(
            _r(
                "\tatomic_set(&pool->compaction_in_progress, 0);\n\n\treturn pages_freed;",
                "\tatomic_set(&pool->compaction_in_progress, 0);\n\n"
                "\treturn atomic_long_read(&pool->stats.pages_compacted);",
            ),
        ),
        catches=frozenset({"model"}),
        code_in="6.1 has the fix (pages_freed kept locally); 7.2 likewise",
    ),
    Entry(
        name="async-free-vs-migration",
        subject="zsmalloc: fix races between asynchronous zspage free and page migration",
        date="2022-05-09",
        commit="2505a981114dcb715f8977b8433f7540854851d8",
        source="https://lkml.kernel.org/r/20220509024703.243847-1-sultan@kerneltoast.com "
        "(git.proxmox.com mirror_ubuntu-kernels commit 2505a981114d)",
        broke="the deferred-free worker locked a zspage's pages without migrate_read_lock(): "
        "it could lock a page that had migrated off the zspage, follow a torn next-page "
        "pointer, or miss pages (use-after-free, crash); Fixes: 77ff465799c6",
        series="6.1",
        variant="debug",
        scenario="deferred-free",
        replacements=(
            # lock_zspage() without the migrate lock, as before the fix.
            _r(
                "static void lock_zspage(struct zspage *zspage)\n{",
                "#define migrate_read_lock(z)\t((void)(z))\n"
                "#define migrate_read_unlock(z)\t((void)(z))\n"
                "static void lock_zspage(struct zspage *zspage)\n{",
            ),
            _r(
                "}\n\nstatic void migrate_lock_init(struct zspage *zspage)\n{",
                "}\n#undef migrate_read_lock\n#undef migrate_read_unlock\n\n"
                "static void migrate_lock_init(struct zspage *zspage)\n{",
            ),
        ),
        catches=frozenset({"KASAN", "crash"}),
        code_in="6.1 (lock_zspage under migrate_read_lock); 7.2 (the same under zspage_read_lock)",
    ),
    Entry(
        name="isolated-vs-fullness-lost-update",
        subject="zsmalloc: fix races between modifications of fullness and isolated",
        date="2023-07-21",
        commit="4b5d1e47b69426c0f7491d97d73ad0152d02d437 (id from the stable backports; "
        "not read in the archive)",
        source="https://lore.kernel.org/linux-mm/ (Andrew Yang, 2023-07); the 6.1.192 source "
        "carries its backport (inc/dec_zspage_isolation under pool->lock)",
        broke="zspage->isolated and zspage->fullness share a word of bitfields; isolation "
        "counted it under the page lock while fullness changed under the pool lock, so one "
        "update was lost: a zspage never freed, or VM_BUG_ON in dec_zspage_isolation; "
        "Fixes: c4549b871102",
        series="6.1",
        variant="kcsan",
        scenario="free-storm",
        scenario_seconds=60,  # its stress step: a page isolated while frees go on in its zspage
        replacements=(
            _r(
                "\tspin_lock(&pool->lock);\n\tinc_zspage_isolation(zspage);\n"
                "\tspin_unlock(&pool->lock);",
                "\tinc_zspage_isolation(zspage);",
            ),
            _r(
                "\tspin_lock(&pool->lock);\n\tdec_zspage_isolation(zspage);\n"
                "\tspin_unlock(&pool->lock);",
                "\tdec_zspage_isolation(zspage);",
            ),
        ),
        catches=frozenset({"KCSAN", "leak", "WARN"}),
        code_in="6.1 (isolated still counted); 7.2 has no isolated field (removed 2024)",
    ),
    Entry(
        name="migrated-zspage-zone-stats",
        subject="mm/zsmalloc.c: fix the migrated zspage statistics",
        date="2020-01-30",
        commit="ac8f05da5174c560de122c499ce5dfb5d0dfbee5 (id from memory of the stable "
        "backports; not read in the archive)",
        source="LKML, Chanho Min, 2020-01 (Fixes: 48b4800a1c6a 'zsmalloc: page migration "
        "support'); the 6.1 and 7.2 sources carry the fix",
        broke="a zspage page migrated to another zone left NR_ZSPAGES counted in the old "
        "zone: /proc/zoneinfo and vmstat's nr_zspages drift per zone",
        series="6.1",
        variant="distro",
        scenario="zone-migration",
        replacements=(
            _r(
                "\tif (page_zone(newpage) != page_zone(page)) {\n"
                "\t\tdec_zone_page_state(page, NR_ZSPAGES);\n"
                "\t\tinc_zone_page_state(newpage, NR_ZSPAGES);\n\t}\n",
                "",
            ),
        ),
        catches=frozenset({"leak"}),
        code_in="both (the zone check in zs_page_migrate)",
        note="zone-migration moves the pool out of ZONE_MOVABLE by offlining memory (Debian's "
        "6.1 has memory hot-remove; the source-built kernels do not)",
    ),
    Entry(
        name="build-without-compaction",
        subject="mm/zsmalloc.c: fix build when CONFIG_COMPACTION=n",
        date="2019-08-30",
        commit="441e254cd40dc03beec3c650ce6ce6074bc6517f (id from memory; not read in the archive)",
        source="akpm's mm tree, 2019-08 (Fixes: 701d678599d0 'mm/zsmalloc.c: fix race "
        "condition in zs_destroy_pool')",
        broke="zs_destroy_pool() called a migration helper that exists only with "
        "CONFIG_COMPACTION=y: the kernel did not build without compaction",
        series="6.1",
        variant="nocompaction",
        scenario="suite",
        replacements=(
            # 6.1's helper is zs_flush_migration(); its !CONFIG_COMPACTION stub goes.
            _r(
                "#else\nstatic inline void zs_flush_migration(struct zs_pool *pool) { }\n#endif",
                "#endif",
            ),
        ),
        catches=frozenset({"build"}),
        code_in="6.1 (zs_flush_migration and its stub); 7.2 the same",
        note="re-expressed: 6.1's helper is zs_flush_migration(), 2019's was "
        "zs_unregister_migration()",
    ),
    Entry(
        name="empty-zspage-never-freed",
        subject="mm/zsmalloc.c: migration can leave pages in ZS_EMPTY indefinitely",
        date="2019-08-24",
        commit="1a87aa03597efa9641e92875b883c94c7f872ccb (id from memory; not read in the archive)",
        source="http://lkml.kernel.org/r/20190809181751.219326-1-henryburns@google.com "
        "(Henry Burns; Fixes: 48b4800a1c6a)",
        broke="a zspage emptied while its pages were locked by migration was never handed to "
        "the deferred-free worker: its pages stayed allocated (a leak the pool's page count "
        "shows)",
        series="6.1",
        variant="debug",
        scenario="deferred-free",
        replacements=(
            # `if (0)` keeps kick_deferred_free() referenced: no unused-function warning.
            _r(
                "\t\tkick_deferred_free(pool);\n\t\treturn;",
                "\t\tif (0)\n\t\t\tkick_deferred_free(pool);\n\t\treturn;",
            ),
        ),
        catches=frozenset({"leak"}),
        code_in="the 2019 code is gone from both; 6.1 and 7.2 defer through "
        "kick_deferred_free() in free_zspage()",
        note="re-expressed: free_zspage()'s failed trylock no longer kicks the deferred free",
    ),
    Entry(
        name="destroy-pool-before-deferred-free",
        subject="mm/zsmalloc.c: fix race condition in zs_destroy_pool",
        date="2019-08-24",
        commit="701d678599d0c1623aaf4139c03eea260a75b027",
        source="http://lkml.kernel.org/r/20190809181751.219326-2-henryburns@google.com "
        "(review.shift-gmbh.com mainline mirror, commit 701d678599d0)",
        broke="zs_destroy_pool() could free the pool while a migration still queued the "
        "deferred free of a zspage: use-after-free of the pool, leaked pages; "
        "Fixes: 48b4800a1c6a",
        series="6.1",
        variant="debug",
        scenario="deferred-free",
        replacements=(
            _r(
                "\tzs_unregister_shrinker(pool);\n\tzs_flush_migration(pool);",
                "\tzs_unregister_shrinker(pool);\n\tif (0)\n\t\tzs_flush_migration(pool);",
            ),
        ),
        catches=frozenset({"KASAN", "WARN", "crash"}),
        code_in="the isolated-count wait of 2019 is gone from both; 6.1 and 7.2 flush the "
        "deferred-free work in zs_destroy_pool()",
        note="re-expressed: the flush of pending deferred frees is skipped",
    ),
    Entry(
        name="zram-backing-dev-show-race",
        subject="zram: fix race between backing_dev_show and backing_dev_store",
        date="2019-10-18",
        commit="f7daefe4231e57381d92c2e2ad905a899c28e402",
        source="stable@vger.kernel.org, 2019-10-27 (Chenwandun; the original commit quoted "
        "in Greg KH's backport mail)",
        broke="backing_dev_show() read zram->backing_dev before taking init_lock: a "
        "concurrent backing_dev_store() made it dereference a NULL file (oops in d_path)",
        series="6.1",
        variant="kcsan",
        scenario="zram-sysfs-race",
        replacements=(
            _r(
                "\tdown_read(&zram->init_lock);\n\tfile = zram->backing_dev;\n",
                "\tfile = zram->backing_dev;\n\tdown_read(&zram->init_lock);\n",
                ZRAM,
            ),
        ),
        catches=frozenset({"KCSAN", "crash"}),
        code_in="6.1 zram_drv.c (fixed); 7.2 likewise",
    ),
    Entry(
        name="zram-writeback-returns-zero",
        subject="zram: fix writeback_store returning zero in most situations",
        date="2020-04-14",
        commit="(mainline id not found; posted as "
        "CAKuMfTUPzPjuNk+T_GQMCKoB9ssh2arr6xRiu6VODwwB0PMdZw@mail.gmail.com)",
        source="linux-kernel, Justin Gottula, 2020-04-14 (follows 3b82a051c101 'zram: fix "
        "error return codes not being returned in writeback_store')",
        broke="writing to /sys/block/zramN/writeback returned 0 bytes written on success, so "
        "userspace retried the write forever",
        series="6.1",
        variant="distro",
        scenario="suite",
        replacements=(
            _r(
                "release_init_lock:\n\tup_read(&zram->init_lock);\n\n\treturn ret;",
                "release_init_lock:\n\tup_read(&zram->init_lock);\n\n\treturn ret > 0 ? 0 : ret;",
                ZRAM,
            ),
        ),
        catches=frozenset({"zram"}),
        code_in="6.1 zram_drv.c (fixed: ret = len); 7.2 likewise",
        note="validate's zram round trip writes every page back to a ramdisk (brd.ko)",
    ),
    # --- 7.2 -----------------------------------------------------------------------------
    Entry(
        name="zs-obj-write-size-underflow",
        subject="zsmalloc: don't underflow size calculation in zs_obj_write()",
        date="2025-05-04",
        commit="02f5bf89f0b0a50f821425932a3590eeb9f193ac",
        source="https://lore.kernel.org/linux-mm/20250504110650.2783619-1-senozhatsky@chromium.org",
        broke="zs_obj_write() decided that an object spans two pages from class->size; in a "
        "merged class a smaller object near the page end fits one page, and "
        "mem_len - sizes[0] underflowed: a huge memcpy (crash, memory corruption); "
        "Fixes: 44f76413496e",
        series="7.2",
        variant="minimal",
        scenario="page-ends",
        replacements=(
            _r(
                "\tif (off + mem_len <= PAGE_SIZE) {\n"
                "\t\t/* this object is contained entirely within a page */\n"
                "\t\tvoid *dst = kmap_local_zpdesc(zpdesc);",
                "\tif (off + class->size - ZS_HANDLE_SIZE <= PAGE_SIZE) {\n"
                "\t\t/* this object is contained entirely within a page */\n"
                "\t\tvoid *dst = kmap_local_zpdesc(zpdesc);",
            ),
        ),
        catches=frozenset({"crash", "KASAN", "data"}),
        code_in="7.2 only (zs_obj_write() appeared in 6.16; 6.1 has zs_map_object)",
    ),
    Entry(
        name="compaction-stale-src-zspage",
        subject="zsmalloc: reset compaction source zspage pointer after putback_zspage()",
        date="2023-04-17",
        commit="(mainline id not found; posted 2023-04-17 with the compaction rework)",
        source="linux-mm, Sergey Senozhatsky, 2023-04-17 (patch mail stored in the code "
        "corpus: 'zsmalloc: reset compaction source zspage pointer after putback_zspage()')",
        broke="after the source zspage was put back (and freed when empty) __zs_compact() "
        "kept the pointer; when the loop ended before isolating a new source it put back "
        "the freed zspage: use-after-free",
        series="7.2",
        variant="debug",
        scenario="suite",
        replacements=(_r("\t\tsrc_zspage = NULL;\n", ""),),
        catches=frozenset({"KASAN", "crash"}),
        code_in="7.2 (the 6.4 compaction loop); 6.1's older loop reassigns the pointer",
    ),
    Entry(
        name="write-lock-stub-without-compaction",
        subject="mm/zsmalloc: fix migrate_write_lock() when !CONFIG_COMPACTION",
        date="2024-02-20",
        commit="(mainline id not read; mm tree ids 14ff8a8066db, 568b567f78ac, ... in "
        "linux-next merges)",
        source="https://lore.kernel.org/r/20240219-b4-szmalloc-migrate-v1-1-34cd49c6545b@bytedance.com",
        broke="without CONFIG_COMPACTION the migrate write lock was an empty stub, but "
        "zs_compact() still moves objects (from the shrinker): a mapped object could be "
        "moved under its reader (data corruption)",
        series="7.2",
        variant="nocompaction",
        scenario="map-vs-compact",
        replacements=(
            _r(
                "\tif (zsl->cnt == ZS_PAGE_UNLOCKED) {",
                "\tif (zsl->cnt == ZS_PAGE_UNLOCKED || !IS_ENABLED(CONFIG_COMPACTION)) {",
            ),
        ),
        catches=frozenset({"KCSAN", "data"}),
        code_in="6.1 ships it: migrate_write_lock() and friends are empty stubs with "
        "!CONFIG_COMPACTION (Debian's 6.1 has compaction, so only a nocompaction kernel "
        "sees it); 7.2's zspage lock is always real",
        note="re-expressed on 7.2: the writer's trylock ignores readers without compaction",
    ),
    # --- benign: these must pass -----------------------------------------------------------
    Entry(
        name="benign-remove-unused-isolated",
        subject="mm/zsmalloc: remove unused zspage->isolated",
        date="2024-02-20",
        commit="(mainline id not read; mm tree ids ea94308a9ddd, 4ad63e163264, ...)",
        source="https://lore.kernel.org/r/"
        "20240219-b4-szmalloc-migrate-v1-0-34cd49c6545b@bytedance.com (patch 3/3)",
        broke="nothing: nobody reads zspage->isolated, so its counting goes (the field stays "
        "in 6.1's struct to keep the layout)",
        series="6.1",
        variant="distro",
        scenario="suite",
        replacements=(
            _r(
                "\tspin_lock(&pool->lock);\n\tinc_zspage_isolation(zspage);\n"
                "\tspin_unlock(&pool->lock);\n",
                "",
            ),
            _r(
                "\tspin_lock(&pool->lock);\n\tdec_zspage_isolation(zspage);\n"
                "\tspin_unlock(&pool->lock);\n",
                "",
            ),
            _r("\tdec_zspage_isolation(zspage);\n\t/*\n", "\t/*\n"),
            _r(
                "/* Number of isolated subpage for *page migration* in this zspage */\n"
                "static void inc_zspage_isolation(struct zspage *zspage)\n{\n"
                "\tzspage->isolated++;\n}\n\n"
                "static void dec_zspage_isolation(struct zspage *zspage)\n{\n"
                "\tVM_BUG_ON(zspage->isolated == 0);\n\tzspage->isolated--;\n}\n\n",
                "",
            ),
        ),
        code_in="6.1 counts isolated; 7.2 has no field",
        benign=True,
    ),
    Entry(
        name="benign-remove-get-zspage-mapping",
        subject="mm/zsmalloc: remove get_zspage_mapping()",
        date="2024-02-20",
        commit="(mainline id not read; in Chengming Zhou's 2024-02 zsmalloc cleanup series)",
        source="linux-mm 2024-02, shortlog of the mm pull for 6.9 ('mm/zsmalloc: remove "
        "get_zspage_mapping()')",
        broke="nothing: the callers read zspage->class and zspage->fullness directly",
        series="6.1",
        variant="distro",
        scenario="suite",
        replacements=(
            _r(
                "\tget_zspage_mapping(zspage, &class_idx, &currfg);\n",
                "\tclass_idx = zspage->class;\n\tcurrfg = zspage->fullness;\n",
            ),
            _r(
                "\tget_zspage_mapping(zspage, &class_idx, &fg);\n",
                "\tclass_idx = zspage->class;\n\tfg = zspage->fullness;\n",
            ),
            _r(
                "\t\tget_zspage_mapping(zspage, &class_idx, &fullness);\n",
                "\t\tclass_idx = zspage->class;\n\t\tfullness = zspage->fullness;\n",
            ),
            _r(
                "static void get_zspage_mapping(struct zspage *zspage,\n"
                "\t\t\t\tunsigned int *class_idx,\n"
                "\t\t\t\tenum fullness_group *fullness)\n{\n"
                "\tBUG_ON(zspage->magic != ZSPAGE_MAGIC);\n\n"
                "\t*fullness = zspage->fullness;\n\t*class_idx = zspage->class;\n}\n\n",
                "",
            ),
        ),
        code_in="6.1 has get_zspage_mapping(); 7.2 has not",
        note="upstream also dropped the BUG_ON on the zspage magic; so does this",
        benign=True,
    ),
    Entry(
        name="benign-comment-trade-off",
        subject="zsmalloc: comment fix 'trader-off' -> 'trade-off'",
        date="(between 6.1 and 7.2)",
        commit="(not identified; 7.2's mm/zsmalloc.c reads 'trade-off here:')",
        source="the 6.1.192 and 7.2.13 linux-source packages compared",
        broke="nothing: a comment",
        series="6.1",
        variant="distro",
        scenario="suite",
        replacements=(_r(" * trader-off here:\n", " * trade-off here:\n"),),
        code_in="6.1 has the typo; 7.2 the fixed comment",
        benign=True,
    ),
)


def by_name(name: str) -> Entry:
    for entry in ENTRIES:
        if entry.name == name:
            return entry
    raise KeyError(name)


def apply(entry: Entry, text: str, path: str) -> str:
    """The file's text with the entry's replacements for it; each must match as counted."""
    for r in entry.replacements:
        if r.path != path:
            continue
        found = text.count(r.old)
        if found != r.count:
            raise ValueError(
                f"{entry.name}: a replacement for {path} matches {found} time(s), "
                f"not {r.count}: {r.old.splitlines()[0]!r}"
            )
        text = text.replace(r.old, r.new)
    return text


def _git(cwd: Path, *args: str) -> str:
    env = dict(os.environ)
    env.update(
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME="zskit historical corpus",
        GIT_AUTHOR_EMAIL="zskit@localhost",
        GIT_COMMITTER_NAME="zskit historical corpus",
        GIT_COMMITTER_EMAIL="zskit@localhost",
        GIT_AUTHOR_DATE="2026-01-01T00:00:00Z",
        GIT_COMMITTER_DATE="2026-01-01T00:00:00Z",
        LC_ALL="C",
    )
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def patch(entry: Entry, pristine: Path, out: Path) -> Path:
    """Write the entry as a one-patch `git format-patch` mail against the pristine tree."""
    what = "Re-applies" if entry.benign else "Re-introduces the bug fixed by"
    paragraphs = [
        f'{what} "{entry.subject}" ({entry.date}; {entry.commit}).',
        entry.broke[:1].upper() + entry.broke[1:] + ".",
        "Planted at test time by the zskit historical corpus; not for merging.",
    ]
    body = "\n\n".join(textwrap.fill(t, 72, break_on_hyphens=False) for t in paragraphs)
    body += "\n\nSigned-off-by: zskit historical corpus <zskit@localhost>\n"
    with tempfile.TemporaryDirectory(prefix="zskit-historical-") as tmpdir:
        repo = Path(tmpdir)
        _git(repo, "init", "-q")
        for path in entry.paths:
            (repo / path).parent.mkdir(parents=True, exist_ok=True)
            (repo / path).write_text((pristine / path).read_text())
        _git(repo, "add", "-A", "-f")
        _git(repo, "commit", "-q", "-m", "pristine")
        for path in entry.paths:
            (repo / path).write_text(apply(entry, (pristine / path).read_text(), path))
        title = f"historical: {entry.name}"
        _git(repo, "commit", "-q", "-a", "-m", f"{title}\n\n{body}")
        mail = _git(repo, "format-patch", "-1", "--stdout", "HEAD")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(mail)
    return out
