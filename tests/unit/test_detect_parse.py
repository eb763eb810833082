"""detect.py's parsers on small snippets: each fact's rule, and each refusal's file:line.

The snippets are cut from (or shaped like) the headers and sources of 6.1, 6.12
and 7.2; tests/guest/test_detect.py checks the same rules on the real files.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pyharness.kernel import detect
from pyharness.kernel.manifest import Kernel
from pyharness.model import ChainRule, FullnessScheme
from pyharness.progress import StageError

H = Path("include/linux/zsmalloc.h")
C = Path("mm/zsmalloc.c")

HEADER_61 = """\
/* zs_malloc(struct zs_pool *pool) in a comment is no declaration */
#include <linux/types.h>

struct zs_pool;

unsigned long zs_malloc(struct zs_pool *pool, size_t size, gfp_t flags);
void zs_free(struct zs_pool *pool, unsigned long obj);

void *zs_map_object(struct zs_pool *pool, unsigned long handle,
			enum zs_mapmode mm);
void zs_unmap_object(struct zs_pool *pool, unsigned long handle);
"""

HEADER_72 = """\
unsigned long zs_malloc(struct zs_pool *pool, size_t size, gfp_t flags,
			const int nid);
unsigned int zs_lookup_class_index(struct zs_pool *pool, unsigned int size);
void *zs_obj_read_begin(struct zs_pool *pool, unsigned long handle,
			size_t mem_len, void *local_copy);
void zs_obj_read_end(struct zs_pool *pool, unsigned long handle,
		size_t mem_len, void *handle_mem);
void zs_obj_read_sg_begin(struct zs_pool *pool, unsigned long handle,
			struct scatterlist *sg, size_t mem_len);
void zs_obj_read_sg_end(struct zs_pool *pool, unsigned long handle);
void zs_obj_write(struct zs_pool *pool, unsigned long handle,
		void *handle_mem, size_t mem_len);
"""


def test_comments_and_strings_are_blanked_with_lines_kept() -> None:
    text = 'a /* x\ny */ b // z\nc "q(" d\n'
    out = detect.strip_comments(text)
    assert out.splitlines() == ["a     ", "     b     ", 'c "  " d']
    assert len(out) == len(text)


def test_directives_are_blanked_with_their_continuations() -> None:
    code = detect.code_of("#define X(a) \\\n\tzs_malloc(a)\nint y;\n")
    lines = code.split("\n")
    assert not lines[0].strip() and not lines[1].strip() and lines[2] == "int y;"
    assert len(code) == len("#define X(a) \\\n\tzs_malloc(a)\nint y;\n")


def test_prototype_spanning_lines_and_continuations() -> None:
    text = "int a;\nunsigned long zs_malloc(struct zs_pool *pool, \\\n size_t size,\n gfp_t f);\n"
    proto = detect.prototype(text, "zs_malloc", H)
    assert proto is not None and proto.line == 2 and not proto.defines
    assert proto.form == detect.Form("unsigned long", ("struct zs_pool *", "size_t", "gfp_t"))
    assert str(proto) == "unsigned long zs_malloc(struct zs_pool *, size_t, gfp_t)"


def test_names_and_top_level_const_do_not_change_a_form() -> None:
    assert detect.normal_type("const int nid", named=True) == "int"
    assert detect.normal_type("int", named=True) == "int"
    assert detect.normal_type("unsigned long", named=True) == "unsigned long"
    assert detect.normal_type("struct zs_pool *", named=True) == "struct zs_pool *"
    assert detect.normal_type("const char *fmt", named=True) == "const char *"
    assert detect.normal_type("enum zs_mapmode mm", named=True) == "enum zs_mapmode"


def test_calls_are_not_declarations() -> None:
    body = """\
static void f(struct zs_pool *pool)
{
	unsigned long h = zs_malloc(pool, 1, GFP_KERNEL);

	zs_malloc(pool, 2, GFP_KERNEL);
	if (zs_malloc(pool, 3, GFP_KERNEL))
		return;
	return zs_malloc(pool, 4, GFP_KERNEL);
}
EXPORT_SYMBOL_GPL(zs_malloc);
"""
    assert detect.prototypes(body, "zs_malloc", C) == []


def test_attributes_before_a_declaration() -> None:
    assert detect.shrinker_alloc(
        "__printf(2, 3)\nstruct shrinker *shrinker_alloc(unsigned int flags, const char *fmt, ...);"
    )
    assert not detect.shrinker_alloc("struct shrinker {\n\tint seeks;\n};\n")


def test_malloc_nid_from_the_fourth_parameter() -> None:
    assert detect.malloc_nid(HEADER_61, H) is False
    assert detect.malloc_nid(HEADER_72, H) is True


def test_malloc_with_five_parameters_is_refused_with_its_line() -> None:
    text = (
        "\n\nunsigned long zs_malloc(struct zs_pool *pool, size_t size,\n\tgfp_t g, int n, int x);"
    )
    with pytest.raises(StageError, match=r"linux/zsmalloc\.h:3: zs_malloc is declared as") as e:
        detect.malloc_nid(text, H)
    assert "size_t, gfp_t, int, int)" in str(e.value) and "zskit knows" in str(e.value)


def test_no_zs_malloc_is_refused_naming_the_file() -> None:
    with pytest.raises(StageError, match=r"include/linux/zsmalloc\.h: no zs_malloc"):
        detect.malloc_nid("void zs_free(struct zs_pool *pool, unsigned long obj);\n", H)


def test_two_forms_of_one_function_are_refused() -> None:
    text = (
        "#ifdef A\nunsigned long zs_malloc(struct zs_pool *p, size_t s, gfp_t g);\n#else\n"
        "unsigned long zs_malloc(struct zs_pool *p, size_t s, gfp_t g, int nid);\n#endif\n"
    )
    with pytest.raises(StageError, match=r"2 different forms.*zsmalloc\.h:2.*zsmalloc\.h:4"):
        detect.malloc_nid(text, H)


def test_same_form_twice_is_one_function() -> None:
    text = (
        "#ifdef CONFIG_COMPACTION\nvoid __SetPageMovable(struct page *page, const struct "
        "movable_operations *ops);\n#else\nstatic inline void __SetPageMovable(struct page *p,\n"
        "\t\tconst struct movable_operations *o)\n{\n}\n#endif\n"
    )
    assert len(detect.prototypes(text, "__SetPageMovable", Path("migrate.h"))) == 2
    assert detect.prototype(text, "__SetPageMovable", Path("migrate.h")) is not None
    assert detect.movable_ops(text)
    assert not detect.movable_ops("int set_movable_ops(const struct movable_operations *ops);")


def test_map_object_or_the_obj_api() -> None:
    assert detect.map_object(HEADER_61, H) is True
    assert detect.map_object(HEADER_72, H) is False


def test_map_object_with_another_signature_is_refused() -> None:
    text = HEADER_61.replace("enum zs_mapmode mm);", "enum zs_mapmode mm, int x);")
    with pytest.raises(StageError, match=r"zsmalloc\.h:9: zs_map_object is declared as `void \*"):
        detect.map_object(text, H)


def test_map_without_unmap_is_refused() -> None:
    text = HEADER_61.replace("void zs_unmap_object(", "void zs_unmap_objects(")
    with pytest.raises(StageError, match=r"zsmalloc\.h:9: zs_map_object is declared but zs_unmap"):
        detect.map_object(text, H)


def test_neither_mapping_nor_obj_api_is_refused() -> None:
    text = HEADER_72.replace("void zs_obj_read_sg_end(", "void zs_obj_read_sg_finish(")
    with pytest.raises(StageError, match=r"zsmalloc\.h: declares neither.*zs_obj_read_sg_end"):
        detect.map_object(text, H)


def test_obj_write_with_a_const_buffer_is_refused() -> None:
    text = HEADER_72.replace("void *handle_mem, size_t mem_len);", "const void *m, size_t l);")
    with pytest.raises(StageError, match=r"zsmalloc\.h:11: zs_obj_write is declared as"):
        detect.map_object(text, H)


def test_lookup_class_index() -> None:
    assert detect.lookup_class_index(HEADER_72, H) is True
    assert detect.lookup_class_index(HEADER_61, H) is False
    with pytest.raises(StageError, match=r"zsmalloc\.h:1: zs_lookup_class_index"):
        detect.lookup_class_index("int zs_lookup_class_index(struct zs_pool *p, size_t s);", H)


SOURCE_61 = """\
#define ZS_MAX_ZSPAGE_ORDER 2
#define ZS_MAX_PAGES_PER_ZSPAGE (_AC(1, UL) << ZS_MAX_ZSPAGE_ORDER)
#define ZS_MAX_ALLOC_SIZE	PAGE_SIZE

enum fullness_group {
	ZS_EMPTY,
	ZS_ALMOST_EMPTY,
	ZS_ALMOST_FULL,
	ZS_FULL,
	NR_ZS_FULLNESS,
};

static int get_pages_per_zspage(int class_size)
{
	return 1;
}

unsigned long zs_malloc(struct zs_pool *pool, size_t size, gfp_t gfp)
{
	unsigned long handle, obj;

	if (unlikely(!size || size > ZS_MAX_ALLOC_SIZE))
		return (unsigned long)ERR_PTR(-EINVAL);

	handle = cache_alloc_handle(pool, gfp);
	if (!handle)
		return (unsigned long)ERR_PTR(-ENOMEM);
	return handle;
}
EXPORT_SYMBOL_GPL(zs_malloc);
"""

SOURCE_612 = """\
#define ZS_MAX_PAGES_PER_ZSPAGE	(_AC(CONFIG_ZSMALLOC_CHAIN_SIZE, UL))
#define ZS_MAX_ALLOC_SIZE	PAGE_SIZE

enum fullness_group {
	ZS_INUSE_RATIO_0,
	ZS_INUSE_RATIO_10,
	/* NOTE: 8 more fullness groups here */
	ZS_INUSE_RATIO_99       = 10,
	ZS_INUSE_RATIO_100,
	NR_FULLNESS_GROUPS,
};

static int calculate_zspage_chain_size(int class_size)
{
	return 1;
}

unsigned long zs_malloc(struct zs_pool *pool, size_t size, gfp_t gfp)
{
	unsigned long handle;

	if (unlikely(!size))
		return (unsigned long)ERR_PTR(-EINVAL);

	if (unlikely(size > ZS_MAX_ALLOC_SIZE))
		return (unsigned long)ERR_PTR(-ENOSPC);

	handle = cache_alloc_handle(pool, gfp);
	if (!handle)
		return (unsigned long)ERR_PTR(-ENOMEM);
	return handle;
}
"""


def test_oversize_errno_from_zs_mallocs_body() -> None:
    assert detect.oversize_errno(SOURCE_61, C) == "EINVAL"
    assert detect.oversize_errno(SOURCE_612, C) == "ENOSPC"


def test_no_oversize_test_is_refused_at_zs_malloc() -> None:
    text = SOURCE_612.replace("size > ZS_MAX_ALLOC_SIZE", "size > 4096")
    with pytest.raises(StageError, match=r"mm/zsmalloc\.c:18: zs_malloc should return one"):
        detect.oversize_errno(text, C)


def test_another_size_limit_is_refused() -> None:
    text = SOURCE_612.replace("ZS_MAX_ALLOC_SIZE\tPAGE_SIZE", "ZS_MAX_ALLOC_SIZE\t(2 * PAGE_SIZE)")
    with pytest.raises(StageError, match=r"ZS_MAX_ALLOC_SIZE is `\(2 \* PAGE_SIZE\)` at .*:2"):
        detect.oversize_errno(text, C)


def test_fullness_chain_rule_and_pages() -> None:
    assert detect.fullness(SOURCE_61, C) is FullnessScheme.QUARTERS
    assert detect.fullness(SOURCE_612, C) is FullnessScheme.INUSE_RATIO
    assert detect.chain_rule(SOURCE_61, C) is ChainRule.USEDPC
    assert detect.chain_rule(SOURCE_612, C) is ChainRule.MIN_WASTE
    assert detect.max_pages(SOURCE_61, C) == 4
    assert detect.max_pages(SOURCE_61.replace("ORDER 2", "ORDER 3"), C) == 8
    assert detect.max_pages(SOURCE_612, C) is None


def test_unknown_fullness_groups_are_refused_with_the_enum_line() -> None:
    text = SOURCE_612.replace("ZS_INUSE_RATIO_99       = 10,", "ZS_INUSE_RATIO_95 = 10,")
    with pytest.raises(StageError, match=r"mm/zsmalloc\.c:4: enum fullness_group has ZS_INUSE"):
        detect.fullness(text, C)


def test_an_unevaluable_chain_length_is_refused() -> None:
    text = SOURCE_61.replace("(_AC(1, UL) << ZS_MAX_ZSPAGE_ORDER)", "(PAGE_SHIFT - 10)")
    with pytest.raises(StageError, match=r"mm/zsmalloc\.c:2: cannot evaluate"):
        detect.max_pages(text, C)


def rules(source: str) -> detect.AllocatorRules:
    return detect.allocator_rules(source, C)


def test_model_policy_of_known_series() -> None:
    assert detect.model_policy("6.1", rules(SOURCE_61), None) == "6.1"
    assert detect.model_policy("6.12", rules(SOURCE_612), 8) == "6.12"
    assert detect.model_policy("7.2", rules(SOURCE_612), 16) == "7.2"


def test_a_series_without_a_policy_gets_the_newest_that_matches() -> None:
    assert detect.model_policy("7.3", rules(SOURCE_612), 8) == "7.2"
    assert detect.model_policy("5.15", rules(SOURCE_61), None) == "6.1"


def test_a_policy_that_disagrees_with_the_source_is_refused() -> None:
    with pytest.raises(StageError, match=r"Linux 6\.1's zsmalloc is modelled by no policy.*"):
        detect.model_policy("6.1", rules(SOURCE_612), 8)
    e2big = SOURCE_612.replace("-ENOSPC", "-E2BIG")
    with pytest.raises(StageError, match=r"policies matching the source: none"):
        detect.model_policy("7.3", rules(e2big), 8)


CHECKPATCH_72 = """\
# check for (kv|k)[mz]alloc that could be kmalloc_obj/kzalloc_obj
			my $newfunc = "kmalloc_obj";
			$newfunc = "kzalloc_obj" if ($oldfunc eq "kzalloc");
"""
SLAB_72 = """\
#define kzalloc_obj(P, ...) \\
	__alloc_objs(kzalloc, default_gfp(__VA_ARGS__), typeof(P), 1)
#define kvzalloc_objs(P, COUNT, ...) \\
	__alloc_objs(kvzalloc, default_gfp(__VA_ARGS__), typeof(P), COUNT)
"""


def test_typed_alloc_when_checkpatch_asks() -> None:
    cp, slab = Path("scripts/checkpatch.pl"), Path("include/linux/slab.h")
    assert detect.typed_alloc(CHECKPATCH_72, cp, SLAB_72, slab) is True
    # 6.12: slab.h has the macros, checkpatch does not ask for them.
    assert detect.typed_alloc("# kzalloc_obj in a comment only\n", cp, SLAB_72, slab) is False
    with pytest.raises(StageError, match=r"checkpatch\.pl asks for kzalloc_obj, but .*kvzalloc"):
        detect.typed_alloc(CHECKPATCH_72, cp, SLAB_72.split("#define kvz")[0], slab)


def test_migrate_sync_no_copy() -> None:
    mode = Path("include/linux/migrate_mode.h")
    old = "/* MIGRATE_SYNC_NO_COPY will block */\nenum migrate_mode {\n\tMIGRATE_ASYNC,\n"
    old += "\tMIGRATE_SYNC,\n\tMIGRATE_SYNC_NO_COPY,\n};\n"
    assert detect.migrate_sync_no_copy(old, mode) is True
    new = "/* MIGRATE_SYNC_NO_COPY was here */\nenum migrate_mode {\n\tMIGRATE_ASYNC,\n};\n"
    assert detect.migrate_sync_no_copy(new, mode) is False
    with pytest.raises(StageError, match=r"migrate_mode\.h: no `enum migrate_mode`"):
        detect.migrate_sync_no_copy("", mode)


def test_unaligned_header(tmp_path: Path) -> None:
    (tmp_path / "asm-generic").mkdir()
    (tmp_path / "asm-generic" / "unaligned.h").touch()
    assert detect.unaligned_header(tmp_path) == "asm/unaligned.h"
    (tmp_path / "linux").mkdir()
    (tmp_path / "linux" / "unaligned.h").touch()
    assert detect.unaligned_header(tmp_path) == "linux/unaligned.h"
    with pytest.raises(StageError, match="neither linux/unaligned.h"):
        detect.unaligned_header(tmp_path / "nothing")


def fake_kernel(source: Path, kdir: Path, toolchain: Path | None = None) -> Kernel:
    return Kernel(
        series="6.12",
        release="6.12.0-1-amd64",
        package_version="6.12.0-1",
        vmlinuz=kdir / "vmlinuz",
        boot_image=kdir / "vmlinuz",
        kdir=kdir,
        modules=None,
        source=source,
        toolchain=toolchain,
    )


def full_tree(include: Path) -> Path:
    (include / "linux").mkdir(parents=True)
    (include / "linux" / "slab.h").touch()
    return include


def test_include_dir_of_a_source_tree(tmp_path: Path) -> None:
    tree = tmp_path / "linux-source"
    include = full_tree(tree / "include")
    assert detect.include_dir(fake_kernel(tree, tmp_path / "build")) == include
    # A build with O=: kdir/source points at the tree, kernel.source elsewhere.
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "source").symlink_to(tree)
    kernel = fake_kernel(tmp_path / "partial", tmp_path / "build")
    assert detect.include_dir(kernel) == include


def test_include_dir_of_debian_headers_in_a_root(tmp_path: Path) -> None:
    """6.12/7.2: kdir's Makefile names /usr/src/...-common, a path inside the root."""
    root = tmp_path / "roots" / "trixie"
    src = root / "usr" / "src"
    common = full_tree(src / "linux-headers-6.12.0-1-common" / "include")
    kdir = src / "linux-headers-6.12.0-1-amd64"
    kdir.mkdir(parents=True)
    (kdir / "Makefile").write_text("include /usr/src/linux-headers-6.12.0-1-common/Makefile\n")
    partial = tmp_path / "linux-source-6.12"
    (partial / "include" / "linux").mkdir(parents=True)
    (partial / "include" / "linux" / "zsmalloc.h").touch()
    assert detect.include_dir(fake_kernel(partial, kdir, toolchain=root)) == common
    # Without the root, the -common directory next to kdir.
    assert detect.include_dir(fake_kernel(partial, kdir)) == common


def test_include_dir_of_rewritten_debian_headers(tmp_path: Path) -> None:
    """6.1: the Makefile's path was rewritten to the extracted -common directory."""
    common = full_tree(tmp_path / "elsewhere" / "linux-headers-6.1.0-57-common" / "include")
    kdir = tmp_path / "linux-headers-6.1.0-57-amd64"
    kdir.mkdir()
    (kdir / "Makefile").write_text(f"include {common.parent}/Makefile\n")
    assert detect.include_dir(fake_kernel(tmp_path / "src", kdir)) == common


def test_no_include_dir_is_refused_naming_where_it_looked(tmp_path: Path) -> None:
    kdir = tmp_path / "kdir"
    kdir.mkdir()
    (kdir / "Makefile").write_text("include /usr/src/linux-headers-x-common/Makefile\n")
    with pytest.raises(StageError, match=r"no full include/ tree.*linux-headers-x-common"):
        detect.include_dir(fake_kernel(tmp_path / "src", kdir))


def test_chain_size_from_the_config(tmp_path: Path) -> None:
    config = tmp_path / ".config"
    config.write_text("CONFIG_ZSMALLOC=y\nCONFIG_ZSMALLOC_CHAIN_SIZE=8\n")
    assert detect.chain_size(config) == 8
    config.write_text("CONFIG_ZSMALLOC=m\n")
    assert detect.chain_size(config) is None
    config.write_text('CONFIG_ZSMALLOC_CHAIN_SIZE="x"\n')
    with pytest.raises(StageError, match="is not a number"):
        detect.chain_size(config)
