"""The package's imports run one way: each layer builds only on the layers before it.

The order, lowest first, and why each layer sits where it does:

- paths, locking, progress: small shared modules (where files live, the
  cache lock, what the user sees);
- model: what the model predicts; pure Python that knows no kernel;
- kernel: where a kernel comes from, its identity and its API facts;
- report: a run's results on disk, named after the kernel's identity;
- kmod: what is built for a kernel (the templates read its API facts; our
  allocator's choices also build its model policy);
- guest: how the guest is driven (it speaks the protocol the driver is
  rendered with);
- check: the model against the guest's answers;
- commands: the user-facing commands, which compose everything.

A module may import its own package and any layer before its own, never a
later one; no import circle exists among modules, even inside a package; a
pyharness import sits at the top of its module (an import inside a function
is how a circle hides); and no module uses another's private `_names`.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pyharness

LAYERS = (
    "paths",
    "locking",
    "progress",
    "model",
    "kernel",
    "report",
    "kmod",
    "guest",
    "check",
    "commands",
)
ROOT = Path(pyharness.__file__).parent


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. pyharness.kmod.render
    target: str  # the imported module, e.g. pyharness.kernel.api
    names: tuple[str, ...]  # what `from target import ...` takes
    line: int
    top_level: bool


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts).removesuffix(".__init__")


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def layer(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def imports_of(module: str) -> list[Import]:
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    top = set(map(id, tree.body))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = tuple(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            target, names = node.names[0].name, ()
        else:
            continue
        if not target.startswith("pyharness"):
            continue
        # `from pkg import mod` imports the module pkg.mod.
        for name in names:
            if f"{target}.{name}" in MODULES:
                found.append(Import(module, f"{target}.{name}", (), node.lineno, id(node) in top))
        rest = tuple(n for n in names if f"{target}.{n}" not in MODULES)
        if rest or not names:
            found.append(Import(module, target, rest, node.lineno, id(node) in top))
    return found


ALL = [i for m in MODULES for i in imports_of(m)]


def test_every_module_sits_in_a_declared_layer() -> None:
    unknown = sorted({layer(m) for m in MODULES} - {"", *LAYERS})
    assert not unknown, f"packages outside LAYERS: {unknown}; place them in the order"


def test_imports_run_one_way() -> None:
    later = [
        f"{i.module}:{i.line} (layer {layer(i.module)}) imports {i.target} (layer "
        f"{layer(i.target)})"
        for i in ALL
        if layer(i.module)
        and layer(i.target)
        and LAYERS.index(layer(i.target)) > LAYERS.index(layer(i.module))
    ]
    assert not later


def test_pyharness_imports_are_at_the_top_of_a_module() -> None:
    inside = [f"{i.module}:{i.line} imports {i.target}" for i in ALL if not i.top_level]
    assert not inside


def test_no_private_name_crosses_a_module() -> None:
    taken = [
        f"{i.module}:{i.line} takes {n} from {i.target}"
        for i in ALL
        for n in i.names
        if n.startswith("_")
    ]
    assert not taken


def test_no_private_attribute_of_another_module_is_used() -> None:
    found = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        # Names bound to pyharness modules by `from ... import module`.
        bound = {
            name
            for imp in imports_of(module)
            if not imp.names
            for name in [imp.target.rpartition(".")[2]]
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in bound
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                found.append(f"{module}:{node.lineno} {node.value.id}.{node.attr}")
    assert not found


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def module_edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for imp in ALL:
        # A package's __init__ re-exports its modules: importing it is not a circle
        # for the modules inside it.
        if imp.target in MODULES and not imp.module.startswith(imp.target + "."):
            edges[imp.module].add(imp.target)
    return edges


def test_no_import_circle() -> None:
    assert circles(module_edges()) == []


def test_the_circle_check_finds_a_circle() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
