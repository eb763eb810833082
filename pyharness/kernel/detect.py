"""A kernel's zsmalloc API facts, read from its own sources and headers.

api.py's `APIS` table was written by hand, one entry per series; a kernel
outside it (a backport, a newer series, a patched tree) had no facts. Here
every `KernelApi` field but the series is derived from the files the kernel
ships: include/linux/zsmalloc.h and mm/zsmalloc.c (in `Kernel.source`),
scripts/checkpatch.pl, and the full include/ tree its modules build against.
Where a file shows something zskit cannot place (a prototype of an unknown
form, a missing function), a `StageError` names it as `file:line` and says
what to do: a wrong guess would render C that does not build, or a model
that disagrees with the guest for no reason a reader could find.

The parsing functions take file texts and paths, so tests feed them
snippets; `api_of` composes them for a provisioned kernel.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from ..model import (
    EINVAL,
    ENOMEM,
    ENOSPC,
    ChainRule,
    FullnessScheme,
    Policy,
    known_policies,
    policy,
)
from ..progress import StageError
from .api import KernelApi
from .identity import series_key
from .manifest import Kernel, config_value, config_values

T = TypeVar("T")

# --- C text ------------------------------------------------------------------------------


def strip_comments(text: str) -> str:
    """`text` with C comments and the insides of string and char literals blanked.

    Offsets and newlines are kept, so a match in the result has the line it has
    in the file, and nothing a comment or a message string says is taken for code.
    """
    out = list(text)
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end < 0 else end + 2
            for j in range(i, end):
                if out[j] != "\n":
                    out[j] = " "
            i = end
        elif text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            for j in range(i, end):
                out[j] = " "
            i = end
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                if text[j] == "\\" and j + 1 < n:
                    out[j] = " "
                    j += 1
                out[j] = " " if text[j] != "\n" else "\n"
                j += 1
            i = j + 1
        else:
            i += 1
    return "".join(out)


_DEFINE = re.compile(r"^[ \t]*#[ \t]*define[ \t]+(\w+)\b(?!\()((?:[^\n]*\\\n)*[^\n]*)", re.M)
_DIRECTIVE = re.compile(r"^[ \t]*#(?:[^\n]*\\\n)*[^\n]*", re.M)


def code_of(text: str) -> str:
    """What the compiler parses: comments and preprocessor directives blanked,
    backslash-newlines spliced, offsets and line numbers kept."""
    code = strip_comments(text)
    code = _DIRECTIVE.sub(lambda m: re.sub(r"[^\n]", " ", m[0]), code)
    return code.replace("\\\n", " \n")


def line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


@dataclass(frozen=True)
class Define:
    """One `#define NAME value` of a file (object-like macros only)."""

    name: str
    value: str
    path: Path
    line: int

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def defines(text: str, path: Path) -> dict[str, list[Define]]:
    """The object-like macros a file defines, by name (a name under #ifdef may have several)."""
    found: dict[str, list[Define]] = {}
    code = strip_comments(text)
    for m in _DEFINE.finditer(code):
        value = " ".join(m[2].replace("\\\n", " ").split())
        found.setdefault(m[1], []).append(Define(m[1], value, path, line_of(code, m.start(1))))
    return found


def defines_macro(text: str, name: str) -> bool:
    """Whether a file #defines `name`, as an object-like or a function-like macro."""
    pattern = rf"^[ \t]*#[ \t]*define[ \t]+{re.escape(name)}\b"
    return re.search(pattern, strip_comments(text), re.M) is not None


def balanced(code: str, start: int, open_: str = "(", close: str = ")") -> int:
    """The offset just past the bracket that closes the one at `start`, or -1."""
    depth = 0
    for i in range(start, len(code)):
        if code[i] == open_:
            depth += 1
        elif code[i] == close:
            depth -= 1
            if depth == 0:
                return i + 1
    return -1


# --- prototypes --------------------------------------------------------------------------

_TYPE_WORDS = {
    "void",
    "char",
    "short",
    "int",
    "long",
    "signed",
    "unsigned",
    "bool",
    "_Bool",
    "float",
    "double",
    "const",
    "volatile",
}
_TAGS = {"struct", "enum", "union"}
# Words before a function's type that do not change the type a caller sees.
_SPECIFIERS = {"extern", "static", "inline", "__always_inline", "__must_check", "noinline"}
_NOT_A_TYPE = {"return", "if", "while", "for", "switch", "case", "else", "do", "goto", "sizeof"}
_ATTRIBUTE = re.compile(r"\b__\w+\s*\([^()]*(?:\([^()]*\)[^()]*)*\)")
_TOKEN = re.compile(r"\.\.\.|[A-Za-z_]\w*|\*|\[[^\]]*\]|\S")


def normal_type(text: str, named: bool) -> str:
    """A C type in one spelling: words split by one space, a parameter's name dropped
    (when `named`), and a top-level `const` of a non-pointer dropped (it does not
    change the prototype: `const int nid` and `int nid` declare the same function)."""
    tokens = _TOKEN.findall(text)
    if (
        named
        and len(tokens) >= 2
        and re.fullmatch(r"[A-Za-z_]\w*", tokens[-1])
        and tokens[-1] not in _TYPE_WORDS
        and tokens[-2] not in _TAGS
    ):
        tokens = tokens[:-1]
    if "*" not in tokens:
        tokens = [t for t in tokens if t != "const"]
    return " ".join(tokens)


def split_params(text: str) -> list[str]:
    """A parameter list split at its top-level commas."""
    params: list[str] = []
    current: list[str] = []
    depth = 0
    for c in text:
        if c in "([":
            depth += 1
        elif c in ")]":
            depth -= 1
        if c == "," and depth == 0:
            params.append("".join(current))
            current = []
        else:
            current.append(c)
    params.append("".join(current))
    return [p.strip() for p in params]


@dataclass(frozen=True)
class Form:
    """A function's type as a caller sees it: return type and parameter types."""

    returns: str
    params: tuple[str, ...]

    def spelled(self, name: str) -> str:
        return f"{self.returns} {name}({', '.join(self.params) or 'void'})".replace("* ", "*")


@dataclass(frozen=True)
class Prototype:
    """One declaration or definition of a function, where it is."""

    name: str
    form: Form
    path: Path
    line: int
    defines: bool  # a definition (a body follows), not only a declaration
    body_start: int = -1  # offset of the body's `{` in the file, for definitions

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    def __str__(self) -> str:
        return self.form.spelled(self.name)


def prototypes(text: str, name: str, path: Path) -> list[Prototype]:
    """Every declaration and definition of function `name` in a C file.

    A call (`x = name(...)`, `return name(...)`, `name(...);` in a body) is
    none: a declaration has a type before the name. Prototypes may span lines.
    """
    code = code_of(text)
    found = []
    for m in re.finditer(rf"\b{re.escape(name)}\s*\(", code):
        boundary = max(code.rfind(c, 0, m.start()) for c in ";{}")
        prefix = _ATTRIBUTE.sub(" ", code[boundary + 1 : m.start()])
        words = _TOKEN.findall(prefix)
        if not words or any(w in _NOT_A_TYPE for w in words):
            continue
        if not all(re.fullmatch(r"[A-Za-z_]\w*|\*", w) for w in words):
            continue
        words = [w for w in words if w not in _SPECIFIERS]
        open_ = m.end() - 1
        close = balanced(code, open_)
        if not words or close < 0:
            continue
        params = split_params(code[open_ + 1 : close - 1])
        types = tuple(normal_type(p, named=True) for p in params)
        if types in ((), ("",), ("void",)):
            types = ()
        after = re.match(r"\s*(?:__\w+\s*)*([;{])", code[close:])
        is_definition = after is not None and after[1] == "{"
        body = close + after.start(1) if after is not None and is_definition else -1
        found.append(
            Prototype(
                name,
                Form(normal_type(" ".join(words), named=False), types),
                path,
                line_of(code, m.start()),
                is_definition,
                body,
            )
        )
    return found


def prototype(text: str, name: str, path: Path) -> Prototype | None:
    """The one form of function `name` in a file, or None when it is not declared.

    A header may declare a function twice (a real one and a stub under #else);
    two different forms are refused: zskit cannot tell which one the build sees.
    """
    found = prototypes(text, name, path)
    forms = {p.form for p in found}
    if len(forms) > 1:
        seen = "; ".join(f"`{p}` at {p.where}" for p in found)
        raise StageError(
            f"{name} has {len(forms)} different forms: {seen}. zskit cannot tell which one "
            "the build sees; report this kernel (with the file) to zskit's maintainers"
        )
    return found[0] if found else None


def declares(text: str, name: str) -> bool:
    """Whether a file declares or defines a function `name` (any form)."""
    return bool(prototypes(text, name, Path("-")))


def placed(proto: Prototype, known: Mapping[Form, T]) -> T:
    """What a prototype of a known form means; an unknown form is refused with its place."""
    try:
        return known[proto.form]
    except KeyError:
        forms = " or ".join(f"`{f.spelled(proto.name)}`" for f in known)
        raise StageError(
            f"{proto.where}: {proto.name} is declared as `{proto}`; zskit knows {forms}. "
            "The kmod templates and pyharness/kernel/detect.py need to learn this form "
            "before zskit can build for this kernel; until then use a kernel zskit knows"
        ) from None


# --- include/linux/zsmalloc.h ------------------------------------------------------------

POOL = "struct zs_pool *"
# The forms of the API the kmod templates call (kmod/zsmalloc.h.j2 repeats them).
MALLOC_FORMS = {
    Form("unsigned long", (POOL, "size_t", "gfp_t")): False,
    Form("unsigned long", (POOL, "size_t", "gfp_t", "int")): True,
}
MAP_FORMS = {Form("void *", (POOL, "unsigned long", "enum zs_mapmode")): True}
UNMAP_FORMS = {Form("void", (POOL, "unsigned long")): True}
LOOKUP_FORMS = {Form("unsigned int", (POOL, "unsigned int")): True}
# Without zs_map_object the templates read and write through these (7.2's API).
OBJ_API = {
    "zs_obj_read_begin": Form("void *", (POOL, "unsigned long", "size_t", "void *")),
    "zs_obj_read_end": Form("void", (POOL, "unsigned long", "size_t", "void *")),
    "zs_obj_read_sg_begin": Form("void", (POOL, "unsigned long", "struct scatterlist *", "size_t")),
    "zs_obj_read_sg_end": Form("void", (POOL, "unsigned long")),
    "zs_obj_write": Form("void", (POOL, "unsigned long", "void *", "size_t")),
}


def malloc_nid(header: str, path: Path) -> bool:
    """Whether zs_malloc takes a node id: its prototype's 4th parameter (7.2)."""
    proto = prototype(header, "zs_malloc", path)
    if proto is None:
        raise StageError(
            f"{path}: no zs_malloc is declared in it; zskit needs the zsmalloc.h of the "
            "kernel it builds for (provision the kernel again with --refresh)"
        )
    return placed(proto, MALLOC_FORMS)


def map_object(header: str, path: Path) -> bool:
    """Whether objects are reached through zs_map_object/zs_unmap_object (6.1, 6.12);
    without them the header must have the zs_obj_* read/write API (7.2)."""
    mapping = prototype(header, "zs_map_object", path)
    unmapping = prototype(header, "zs_unmap_object", path)
    if mapping is not None and unmapping is not None:
        return placed(mapping, MAP_FORMS) and placed(unmapping, UNMAP_FORMS)
    if mapping is not None or unmapping is not None:
        one = mapping or unmapping
        assert one is not None
        other = "zs_unmap_object" if mapping is not None else "zs_map_object"
        raise StageError(
            f"{one.where}: {one.name} is declared but {other} is not; zskit uses both or "
            "neither. Report this kernel's zsmalloc.h to zskit's maintainers"
        )
    missing = []
    for name, form in OBJ_API.items():
        proto = prototype(header, name, path)
        if proto is None:
            missing.append(name)
        else:
            placed(proto, {form: True})
    if missing:
        raise StageError(
            f"{path}: declares neither zs_map_object nor all of the zs_obj_* API (missing: "
            f"{', '.join(missing)}); zskit cannot read or write objects on this kernel. Teach "
            "the kmod templates and pyharness/kernel/detect.py its API, or use a kernel zskit "
            "knows"
        )
    return False


def lookup_class_index(header: str, path: Path) -> bool:
    """Whether zs_lookup_class_index is declared (6.12+)."""
    proto = prototype(header, "zs_lookup_class_index", path)
    return proto is not None and placed(proto, LOOKUP_FORMS)


# --- mm/zsmalloc.c -----------------------------------------------------------------------


def zs_malloc_definition(source: str, path: Path) -> Prototype:
    """The definition of zs_malloc (the function with a body) in mm/zsmalloc.c."""
    found = [p for p in prototypes(source, "zs_malloc", path) if p.defines]
    if len(found) != 1:
        places = ", ".join(p.where for p in found) or "none"
        raise StageError(
            f"{path}: expected one definition of zs_malloc, found {len(found)} ({places}); "
            "zskit needs the kernel's own mm/zsmalloc.c (provision it again with --refresh)"
        )
    return found[0]


# The size test: `size > ZS_MAX_ALLOC_SIZE` (or the limit on the left).
_OVERSIZE = re.compile(r"[<>]=?\s*ZS_MAX_ALLOC_SIZE\b|\bZS_MAX_ALLOC_SIZE\s*[<>]")
_ERR_RETURN = re.compile(
    r"\s*\{?\s*return\s*\(\s*unsigned\s+long\s*\)\s*ERR_PTR\s*\(\s*-\s*(E[A-Z0-9]+)\s*\)\s*;"
)


def oversize_errno(source: str, path: Path) -> str:
    """The errno zs_malloc returns for a size above ZS_MAX_ALLOC_SIZE, from its body:
    the `if (... size > ZS_MAX_ALLOC_SIZE ...) return (unsigned long)ERR_PTR(-E...);`
    (EINVAL on 6.1, where it shares the test with size 0; ENOSPC on 6.12 and 7.2).

    ZS_MAX_ALLOC_SIZE must be PAGE_SIZE: the model refuses sizes above PAGE_SIZE.
    """
    limit = defines(source, path).get("ZS_MAX_ALLOC_SIZE", [])
    if [d.value for d in limit] != ["PAGE_SIZE"]:
        seen = "; ".join(f"`{d.value}` at {d.where}" for d in limit) or "no definition"
        raise StageError(
            f"{path}: ZS_MAX_ALLOC_SIZE is {seen}, not PAGE_SIZE; the model's size limit "
            "is PAGE_SIZE. Teach pyharness/model/policy.py this kernel's limit first"
        )
    definition = zs_malloc_definition(source, path)
    code = code_of(source)
    end = balanced(code, definition.body_start, "{", "}")
    errnos: dict[str, int] = {}
    for m in re.finditer(r"\bif\s*\(", code[definition.body_start : end]):
        open_ = definition.body_start + m.end() - 1
        close = balanced(code, open_)
        condition = code[open_:close]
        returned = _ERR_RETURN.match(code, close)
        if returned and _OVERSIZE.search(condition):
            errnos.setdefault(returned[1], line_of(code, open_))
    if len(errnos) != 1:
        seen = ", ".join(f"-{e} at {path}:{line}" for e, line in errnos.items()) or "none"
        raise StageError(
            f"{definition.where}: zs_malloc should return one ERR_PTR(-E...) for a size above "
            f"ZS_MAX_ALLOC_SIZE; found {seen}. zskit cannot tell what an oversized "
            "allocation returns: report this kernel's mm/zsmalloc.c to zskit's maintainers"
        )
    return next(iter(errnos))


def enum_members(text: str, tag: str, path: Path) -> tuple[list[str], int] | None:
    """The enumerators of `enum tag { ... }` in a C file and its line, or None."""
    code = code_of(text)
    m = re.search(rf"\benum\s+{re.escape(tag)}\s*\{{", code)
    if m is None:
        return None
    end = balanced(code, m.end() - 1, "{", "}")
    body = code[m.end() : end - 1]
    names = (item.split("=")[0].strip() for item in split_params(body))
    return [name for name in names if re.fullmatch(r"\w+", name)], line_of(code, m.start())


def fullness(source: str, path: Path) -> FullnessScheme:
    """The fullness groups of mm/zsmalloc.c's `enum fullness_group`: 6.1's quarters
    (ZS_ALMOST_EMPTY, ZS_ALMOST_FULL) or the 10% in-use ratios (ZS_INUSE_RATIO_*, 6.3+)."""
    found = enum_members(source, "fullness_group", path)
    if found is None:
        raise StageError(
            f"{path}: no `enum fullness_group`; zskit cannot tell how this zsmalloc groups "
            "zspages. Report this kernel's mm/zsmalloc.c to zskit's maintainers"
        )
    members, line = found
    quarters = {"ZS_EMPTY", "ZS_ALMOST_EMPTY", "ZS_ALMOST_FULL", "ZS_FULL"} <= set(members)
    ratio = {"ZS_INUSE_RATIO_0", "ZS_INUSE_RATIO_99", "ZS_INUSE_RATIO_100"} <= set(members)
    if quarters == ratio:
        raise StageError(
            f"{path}:{line}: enum fullness_group has {', '.join(members)}: neither 6.1's "
            "quarters nor the 10% in-use ratios alone. Teach pyharness/model/policy.py this "
            "scheme first"
        )
    return FullnessScheme.QUARTERS if quarters else FullnessScheme.INUSE_RATIO


CHAIN_FUNCTIONS = {
    "get_pages_per_zspage": ChainRule.USEDPC,
    "calculate_zspage_chain_size": ChainRule.MIN_WASTE,
}


def chain_rule(source: str, path: Path) -> ChainRule:
    """How a class's pages per zspage are chosen: the function zs_create_pool calls."""
    found = {
        rule: p
        for name, rule in CHAIN_FUNCTIONS.items()
        for p in prototypes(source, name, path)
        if p.defines
    }
    if len(found) != 1:
        seen = ", ".join(f"{p.name} at {p.where}" for p in found.values()) or "neither"
        raise StageError(
            f"{path}: expected one of {' or '.join(CHAIN_FUNCTIONS)} defined, found {seen}; "
            "zskit cannot tell how many pages a zspage takes. Report this kernel's "
            "mm/zsmalloc.c to zskit's maintainers"
        )
    return next(iter(found))


def evaluate(expr: str, macros: Mapping[str, str], where: str) -> int:
    """An integer macro expression (`(_AC(1, UL) << ZS_MAX_ZSPAGE_ORDER)`), evaluated."""
    for _ in range(8):
        expanded = re.sub(r"\b_AC\s*\(\s*([^,()]+?)\s*,\s*\w+\s*\)", r"(\1)", expr)
        expanded = re.sub(r"\b[A-Z_][A-Z0-9_]*\b", lambda m: macros.get(m[0], m[0]), expanded)
        if expanded == expr:
            break
        expr = expanded
    expr = re.sub(r"\b(\d+)[uUlL]+\b", r"\1", expr)

    def value(node: ast.AST) -> int:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.LShift | ast.Add | ast.Mult):
            left, right = value(node.left), value(node.right)
            if isinstance(node.op, ast.LShift):
                return left << right
            return left + right if isinstance(node.op, ast.Add) else left * right
        raise ValueError

    try:
        return value(ast.parse(expr.strip(), mode="eval").body)
    except (SyntaxError, ValueError):
        raise StageError(
            f"{where}: cannot evaluate `{expr}`; report this kernel's mm/zsmalloc.c to "
            "zskit's maintainers"
        ) from None


def max_pages(source: str, path: Path) -> int | None:
    """ZS_MAX_PAGES_PER_ZSPAGE: a fixed number of pages (6.1: 1 << ZS_MAX_ZSPAGE_ORDER),
    or None when it is CONFIG_ZSMALLOC_CHAIN_SIZE (6.12+; the .config has the number)."""
    macros = defines(source, path)
    found = macros.get("ZS_MAX_PAGES_PER_ZSPAGE", [])
    if len(found) != 1:
        seen = ", ".join(d.where for d in found) or "none"
        raise StageError(
            f"{path}: expected one #define ZS_MAX_PAGES_PER_ZSPAGE, found {seen}; report "
            "this kernel's mm/zsmalloc.c to zskit's maintainers"
        )
    if "CONFIG_ZSMALLOC_CHAIN_SIZE" in found[0].value:
        return None
    single = {name: ds[0].value for name, ds in macros.items() if len(ds) == 1}
    return evaluate(found[0].value, single, found[0].where)


@dataclass(frozen=True)
class AllocatorRules:
    """What mm/zsmalloc.c decides that a model policy has to agree with."""

    fullness: FullnessScheme
    chain_rule: ChainRule
    max_pages: int | None  # fixed pages per zspage; None: CONFIG_ZSMALLOC_CHAIN_SIZE
    oversize_errno: str
    path: Path


def allocator_rules(source: str, path: Path) -> AllocatorRules:
    return AllocatorRules(
        fullness=fullness(source, path),
        chain_rule=chain_rule(source, path),
        max_pages=max_pages(source, path),
        oversize_errno=oversize_errno(source, path),
        path=path,
    )


ERRNOS = {"EINVAL": EINVAL, "ENOMEM": ENOMEM, "ENOSPC": ENOSPC}


def policy_differences(p: Policy, rules: AllocatorRules) -> list[str]:
    """How a model policy differs from what the source does (empty: it models it)."""
    diffs = []
    if p.fullness is not rules.fullness:
        diffs.append(f"fullness {p.fullness.value}, the source {rules.fullness.value}")
    if p.chain_rule is not rules.chain_rule:
        diffs.append(f"chain rule {p.chain_rule.value}, the source {rules.chain_rule.value}")
    if rules.max_pages is not None and p.max_pages_per_zspage != rules.max_pages:
        diffs.append(f"{p.max_pages_per_zspage} pages per zspage, the source {rules.max_pages}")
    if p.oversize_error != -ERRNOS.get(rules.oversize_errno, 0):
        diffs.append(f"oversize error {p.oversize_error}, the source -{rules.oversize_errno}")
    return diffs


def model_policy(series: str, rules: AllocatorRules, chain_size: int | None) -> str:
    """The model policy of the kernel's upstream zsmalloc: the series' own policy when
    the model has one and its rules are the source's; for a series with no policy of
    its own yet (a kernel newer than zskit), the newest policy whose rules match.

    The rules compared are those the source shows plainly: fullness groups, chain
    rule and length, and the oversize errno (6.1 is the quarters scheme with fixed
    4-page zspages). A policy that disagrees is refused, never used.
    """
    kernels = [name for name in known_policies() if re.fullmatch(r"\d+(?:\.\d+)+", name)]
    differences: dict[str, list[str]] = {}
    for name in kernels:
        try:
            candidate = policy(name, chain_size=chain_size if rules.max_pages is None else None)
        except ValueError as e:
            differences[name] = [str(e)]
            continue
        differences[name] = policy_differences(candidate, rules)
    matching = sorted((n for n, d in differences.items() if not d), key=series_key)
    if series in differences and not differences[series]:
        return series
    if series not in differences and matching:
        return matching[-1]
    why = "; ".join(differences.get(series, [])) if series in differences else "no policy"
    raise StageError(
        f"{rules.path}: Linux {series}'s zsmalloc is modelled by no policy of "
        f"pyharness/model/policy.py (policy {series}: {why}; policies matching the source: "
        f"{', '.join(matching) or 'none'}). Add or fix the policy for this kernel first"
    )


# --- scripts/checkpatch.pl and the include/ tree -----------------------------------------


def checkpatch_asks_typed_alloc(checkpatch: str) -> bool:
    """Whether checkpatch.pl suggests kzalloc_obj (a "Prefer kzalloc_obj" warning, 7.2):
    rendered C must then use it to stay checkpatch-clean."""
    code = "\n".join(line for line in checkpatch.splitlines() if not line.lstrip().startswith("#"))
    return '"kzalloc_obj"' in code


# What the templates call when typed_alloc is on.
TYPED_ALLOC_MACROS = ("kzalloc_obj", "kvzalloc_objs")


def typed_alloc(checkpatch: str, checkpatch_path: Path, slab: str, slab_path: Path) -> bool:
    """kzalloc_obj() and friends: used when the kernel's checkpatch asks for them,
    which needs <linux/slab.h> to define them (6.12's Debian slab.h has them, but its
    checkpatch does not ask, so rendered code keeps plain kzalloc there)."""
    if not checkpatch_asks_typed_alloc(checkpatch):
        return False
    missing = [name for name in TYPED_ALLOC_MACROS if not defines_macro(slab, name)]
    if missing:
        raise StageError(
            f"{checkpatch_path} asks for kzalloc_obj, but {slab_path} does not define "
            f"{', '.join(missing)}: the kernel's checkpatch and headers disagree; use the "
            "checkpatch.pl and headers of one kernel release (provision again with --refresh)"
        )
    return True


def unaligned_header(include: Path) -> str:
    """Where put/get_unaligned_* come from: <linux/unaligned.h> (6.12+), else
    <asm/unaligned.h>, which asm-generic/unaligned.h provides (6.1)."""
    if (include / "linux" / "unaligned.h").is_file():
        return "linux/unaligned.h"
    if (include / "asm-generic" / "unaligned.h").is_file():
        return "asm/unaligned.h"
    raise StageError(
        f"{include}: neither linux/unaligned.h nor asm-generic/unaligned.h; is this the "
        "kernel's full include/ tree? Provision the kernel again with --refresh"
    )


def shrinker_alloc(shrinker: str) -> bool:
    """shrinker_alloc() (6.7+) instead of a struct shrinker the module embeds."""
    return declares(shrinker, "shrinker_alloc")


def movable_ops(migrate: str) -> bool:
    """Whether a module may make its pages movable with __SetPageMovable (gone in 7.2)."""
    return declares(migrate, "__SetPageMovable")


def zpool_driver(zpool_h: str | None) -> bool:
    """Whether include/linux/zpool.h has the driver interface our allocator registers with
    (6.1's: create() given zpool_ops, total_size() in bytes); later kernels changed it,
    and 6.18 removed zpool."""
    if zpool_h is None:
        return False
    flat = " ".join(zpool_h.split())
    return "const struct zpool_ops *ops," in flat and "u64 (*total_size)(void *pool);" in flat


def migrate_sync_no_copy(migrate_mode: str, path: Path) -> bool:
    """Whether enum migrate_mode still has MIGRATE_SYNC_NO_COPY (6.1; gone by 6.12)."""
    found = enum_members(migrate_mode, "migrate_mode", path)
    if found is None:
        raise StageError(
            f"{path}: no `enum migrate_mode`; is this the kernel's include/linux/"
            "migrate_mode.h? Provision the kernel again with --refresh"
        )
    return "MIGRATE_SYNC_NO_COPY" in found[0]


# --- where the files are -----------------------------------------------------------------

MARKER = Path("linux") / "slab.h"  # a file every full include/ tree has


def makefile_includes(kdir: Path) -> list[Path]:
    """The directories of the Makefiles kdir's Makefile includes (Debian's headers
    package: `include /usr/src/linux-headers-<ver>-common/Makefile`)."""
    try:
        text = (kdir / "Makefile").read_text()
    except OSError:
        return []
    found = []
    for m in re.finditer(r"^\s*-?include\s+(\S+)\s*$", text, re.M):
        if "$" not in m[1]:
            target = Path(m[1])
            found.append((target if target.is_absolute() else kdir / target).parent)
    return found


def include_candidates(kernel: Kernel) -> Iterator[Path]:
    """Where the kernel's full include/ tree may be, in the order they are tried."""
    yield kernel.source / "include"  # a source-built kernel: the whole tree
    if (kernel.kdir / "source").exists():  # a build with O=: kdir/source is the tree
        yield (kernel.kdir / "source").resolve() / "include"
    for directory in makefile_includes(kernel.kdir):
        if directory.is_absolute() and kernel.toolchain is not None:
            # Kbuild runs inside the toolchain root, so /usr/src/... is the root's.
            yield kernel.toolchain / directory.relative_to("/") / "include"
        yield directory / "include"
        yield kernel.kdir.parent / directory.name / "include"  # extracted next to kdir


def include_dir(kernel: Kernel) -> Path:
    """The kernel's full include/ tree: its source tree's, or the headers package's
    -common directory that kdir's Makefile names (Debian's distribution kernels)."""
    tried = []
    for candidate in include_candidates(kernel):
        if (candidate / MARKER).is_file():
            return candidate
        tried.append(str(candidate))
    raise StageError(
        f"no full include/ tree (with {MARKER}) for Linux {kernel.release}; looked in "
        f"{', '.join(dict.fromkeys(tried))}. Provision the kernel again with --refresh"
    )


@dataclass(frozen=True)
class KernelFiles:
    """The files a kernel's API facts are read from."""

    zsmalloc_c: Path
    zsmalloc_h: Path
    checkpatch: Path
    include: Path  # the full include/ tree the kernel's modules build against

    @classmethod
    def of(cls, kernel: Kernel) -> KernelFiles:
        return cls(
            zsmalloc_c=kernel.source / "mm" / "zsmalloc.c",
            zsmalloc_h=kernel.source / "include" / "linux" / "zsmalloc.h",
            checkpatch=kernel.source / "scripts" / "checkpatch.pl",
            include=include_dir(kernel),
        )


def read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError as e:
        raise StageError(
            f"{path}: cannot read it ({e.strerror}); the kernel's cache entry is incomplete: "
            "provision the kernel again with --refresh"
        ) from None


def chain_size(config: Path) -> int | None:
    """CONFIG_ZSMALLOC_CHAIN_SIZE of a .config (6.12+), as commands/run.py reads it."""
    value = config_value(config, "ZSMALLOC_CHAIN_SIZE")
    if value is None:
        return None
    try:
        return int(value, 0)
    except ValueError:
        raise StageError(
            f"{config}: CONFIG_ZSMALLOC_CHAIN_SIZE={value} is not a number; fix the kernel's "
            ".config"
        ) from None


def api_from(series: str, files: KernelFiles, chain: int | None) -> KernelApi:
    """The KernelApi the files describe; `chain` is the .config's chain size."""
    header = read(files.zsmalloc_h)
    source = read(files.zsmalloc_c)
    nid = malloc_nid(header, files.zsmalloc_h)
    defined = zs_malloc_definition(source, files.zsmalloc_c)
    declared = prototype(header, "zs_malloc", files.zsmalloc_h)
    if declared is not None and defined.form != declared.form:
        raise StageError(
            f"{defined.where}: zs_malloc is defined as `{defined}`, but {declared.where} "
            f"declares `{declared}`; use the mm/zsmalloc.c and zsmalloc.h of one kernel"
        )
    rules = allocator_rules(source, files.zsmalloc_c)
    include = files.include
    return KernelApi(
        series=series,
        map_object=map_object(header, files.zsmalloc_h),
        malloc_nid=nid,
        lookup_class_index=lookup_class_index(header, files.zsmalloc_h),
        model_policy=model_policy(series, rules, chain),
        oversize_errno=rules.oversize_errno,
        unaligned_header=unaligned_header(include),
        typed_alloc=typed_alloc(
            read(files.checkpatch),
            files.checkpatch,
            read(include / "linux" / "slab.h"),
            include / "linux" / "slab.h",
        ),
        chain_size=chain,
        shrinker_alloc=shrinker_alloc(read(include / "linux" / "shrinker.h")),
        ratio_stats=rules.fullness is FullnessScheme.INUSE_RATIO,
        movable_ops=movable_ops(read(include / "linux" / "migrate.h")),
        migrate_sync_no_copy=migrate_sync_no_copy(
            read(include / "linux" / "migrate_mode.h"), include / "linux" / "migrate_mode.h"
        ),
        zpool_driver=zpool_driver(
            read(include / "linux" / "zpool.h")
            if (include / "linux" / "zpool.h").exists()
            else None
        ),
    )


def api_of(kernel: Kernel) -> KernelApi:
    """The zsmalloc API facts of a provisioned kernel, from its own files, with the
    geometry its architecture's config and headers give."""
    files = KernelFiles.of(kernel)
    api = api_from(kernel.series, files, chain_size(kernel.kdir / ".config"))
    target = kernel.target
    arch_include = files.include.parent / "arch" / target.srcarch / "include"
    config = config_values(kernel.kdir / ".config")
    geometry = target.geometry(config, arch_include)
    return dataclasses.replace(
        api,
        geometry=geometry,
        acomp=config.get("CONFIG_CRYPTO_ACOMP2") == "y",
        zpool=config.get("CONFIG_ZPOOL") == "y",
    )
