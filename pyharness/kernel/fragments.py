"""Kernel config fragments, merged loudly (the way kunit_tool's kunit_config does it).

A fragment (`qemu/configs/*.config`) holds `CONFIG_X=value` and
`# CONFIG_X is not set` lines. A variant's fragments merge into one request;
two fragments asking different values of one option is an error naming
both, unless the later one declares that it overrides the earlier
(`# zskit: overrides base.config`): a variant such as `nocompaction` turns
off what the base turns on, and each option it changes is said aloud
(`Setting.replaces`) when the kernel is configured. Kbuild then applies the
request (tinyconfig, the request appended, olddefconfig), and every
requested option must come out with its value (an option that is absent
counts as "n", as in kunit). When one does not, the
error lists each such option with what stands in its way: its unmet
dependencies, a missing prompt, or what selects it, read with kconfiglib
from the kernel's own Kconfig (srctree set to the source tree). kconfiglib
evaluates the Kconfig's $(shell,...) macros with the host's tools, so
compiler-dependent options are explained as the host's compiler sees them.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import kconfiglib

from ..progress import StageError

SET_LINE = re.compile(r"^CONFIG_(\w+)=(.*)$")
UNSET_LINE = re.compile(r"^# CONFIG_(\w+) is not set$")
OVERRIDES_LINE = re.compile(r"^# zskit: overrides (.+)$")


class FragmentError(StageError):
    """A fragment cannot be read or merged, or the kernel's config does not honour it."""


@dataclass(frozen=True)
class Setting:
    name: str  # without CONFIG_
    value: str  # "y", "m", "n", or the text after "=" (strings keep their quotes)
    origin: str  # "base.config:12"
    replaces: Setting | None = None  # what a declared override changed

    def line(self) -> str:
        if self.value == "n":
            return f"# CONFIG_{self.name} is not set"
        return f"CONFIG_{self.name}={self.value}"


def parse(text: str, origin: str) -> list[Setting]:
    """The settings of one fragment; any other non-comment line is an error."""
    settings = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        where = f"{origin}:{number}"
        if m := UNSET_LINE.match(line):
            settings.append(Setting(m[1], "n", where))
        elif m := SET_LINE.match(line):
            settings.append(Setting(m[1], m[2], where))
        elif line and not line.startswith("#"):
            raise FragmentError(
                f"{where}: not a config line: {raw!r} (write CONFIG_X=value or "
                "`# CONFIG_X is not set`)"
            )
    return settings


def overridden(text: str) -> set[str]:
    """The fragments (file names) that a fragment declares it may override."""
    names: set[str] = set()
    for line in text.splitlines():
        if m := OVERRIDES_LINE.match(line.strip()):
            names.update(n.strip() for n in m[1].split(","))
    return names


def merge(paths: Sequence[Path]) -> dict[str, Setting]:
    """One request from several fragments, in order; conflicting values are an error
    unless the later fragment declares it overrides the earlier one."""
    merged: dict[str, Setting] = {}
    conflicts = []
    for path in paths:
        try:
            text = path.read_text()
        except OSError as e:
            raise FragmentError(f"cannot read config fragment {path}: {e.strerror}") from e
        may_override = overridden(text)
        for setting in parse(text, path.name):
            seen = merged.get(setting.name)
            if seen is None:
                merged[setting.name] = setting
            elif seen.value == setting.value:
                continue
            elif seen.origin.rsplit(":", 1)[0] in may_override:
                merged[setting.name] = dataclasses.replace(setting, replaces=seen)
            else:
                conflicts.append(
                    f"CONFIG_{setting.name}: {seen.origin} sets {seen.value}, "
                    f"{setting.origin} sets {setting.value}"
                )
    if conflicts:
        raise FragmentError(
            "config fragments conflict (make them agree, move the option to one "
            "fragment, or declare `# zskit: overrides NAME.config` in the later one):\n  "
            + "\n  ".join(conflicts)
        )
    return merged


def overrides(settings: Mapping[str, Setting]) -> list[str]:
    """One line per option a fragment changed by a declared override."""
    return [
        f"{s.origin} overrides {s.replaces.origin}: CONFIG_{s.name} {s.replaces.value} -> {s.value}"
        for s in settings.values()
        if s.replaces is not None
    ]


def text(settings: Mapping[str, Setting]) -> str:
    """The merged request as config lines, each with where it came from."""
    return "".join(f"{s.line()}\n" for s in settings.values())


def read_config(text: str) -> dict[str, str]:
    """A .config's values ("n" for `is not set`)."""
    values = {}
    for line in text.splitlines():
        if m := UNSET_LINE.match(line):
            values[m[1]] = "n"
        elif m := SET_LINE.match(line):
            values[m[1]] = m[2]
    return values


def unmet(settings: Mapping[str, Setting], config: Mapping[str, str]) -> list[Setting]:
    """The requested settings the final .config does not have."""
    return [s for s in settings.values() if config.get(s.name, "n") != s.value]


@contextmanager
def _environment(env: Mapping[str, str]) -> Iterator[None]:
    # kconfiglib reads $srctree, $ARCH, $CC... from os.environ while parsing.
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# Kconfig syntax newer than kconfiglib 14.1, rewritten to what it knows: `modules`
# (6.1's spelling of `option modules`), `transitional` (a renamed option's old
# name; it only matters when reading old configs, so it is dropped) and 7.x's
# conditional dependency `depends on X if Y`, which is `depends on (X) || !(Y)`.
_NEWER_SYNTAX = (
    (re.compile(r"^(\s*)modules\s*$", re.M), r"\1option modules"),
    (re.compile(r"^\s*transitional\s*$", re.M), ""),
    (
        re.compile(r"^(\s*)depends on ([^#\n]+?) if ([^#\n]+?)\s*(#.*)?$", re.M),
        r"\1depends on (\2) || !(\3)",
    ),
)


class _KernelKconfig(kconfiglib.Kconfig):
    """kconfiglib reading a kernel's Kconfig, with the newer keywords rewritten."""

    def _open(self, filename: str, mode: str) -> TextIO:
        f: TextIO = super()._open(filename, mode)
        if mode != "r":
            return f
        with f:
            text = f.read()
        for pattern, replacement in _NEWER_SYNTAX:
            text = pattern.sub(replacement, text)
        return io.StringIO(text)


def _items(expr: object) -> str:
    """'A=y, B=n' for the symbols of an expression, as the loaded config has them."""
    syms = sorted(
        (s for s in kconfiglib.expr_items(expr) if isinstance(s, kconfiglib.Symbol)),
        key=lambda s: s.name,
    )
    return ", ".join(f"{s.name}={s.str_value or 'n'}" for s in syms if not s.is_constant)


def _why(kconf: kconfiglib.Kconfig, setting: Setting, actual: str) -> str:
    """What keeps one option from its requested value."""
    sym = kconf.syms.get(setting.name)
    if sym is None or not sym.nodes:
        return "no such option in this kernel's Kconfig (renamed or removed?)"
    reasons = []
    wanted = {"y": 2, "m": 1, "n": 0}.get(setting.value)
    if wanted is not None and sym.orig_type in (kconfiglib.BOOL, kconfiglib.TRISTATE):
        dep = sym.direct_dep
        prompts = [n.prompt for n in sym.nodes if n.prompt]
        if kconfiglib.expr_value(dep) < wanted:
            terms = [
                t
                for t in kconfiglib.split_expr(dep, kconfiglib.AND)
                if kconfiglib.expr_value(t) < wanted
            ]
            shown = " && ".join(kconfiglib.expr_str(t) for t in terms)
            now = "; ".join(_items(t) for t in terms if _items(t))
            reasons.append(f"unmet dependencies: {shown}" + (f" (now {now})" if now else ""))
        elif not prompts:
            reasons.append("no prompt: it is only set when something selects it")
        else:  # a prompt's own condition ("prompt ... if X") beyond the dependencies
            conds = [c for _, c in prompts if c is not kconf.y]
            if conds and all(kconfiglib.expr_value(c) < wanted for c in conds):
                shown = " || ".join(kconfiglib.expr_str(c) for c in conds)
                reasons.append(f"its prompt needs {shown} (now {_items(conds[0]) or 'n'})")
        if wanted == 1 and kconf.modules.tri_value < 1:
            reasons.append("=m needs CONFIG_MODULES=y")
        if kconfiglib.expr_value(sym.rev_dep) > wanted:
            reasons.append(f"selected by {kconfiglib.expr_str(sym.rev_dep)}")
        if wanted and sym.choice is not None and sym.choice.selection is not sym:
            chosen = sym.choice.selection
            reasons.append(f"its choice selected {chosen.name if chosen else 'nothing'}")
    return "; ".join(reasons) or f"no dependency stops it, yet olddefconfig left it {actual}"


def explain(
    missing: Sequence[Setting],
    config: Mapping[str, str],
    dotconfig: Path,
    kconfig: Path,
    env: Mapping[str, str],
) -> str:
    """One line per missing option: requested value, value found, and why (kconfiglib)."""
    try:
        with _environment(env):
            kconf = _KernelKconfig(str(kconfig), warn=False)
            kconf.load_config(str(dotconfig))
    except (kconfiglib.KconfigError, OSError) as e:
        kconf = None
        note = f" (kconfiglib could not read {kconfig}: {str(e).splitlines()[0]})"
    lines = []
    for s in missing:
        actual = config.get(s.name, "absent")
        why = _why(kconf, s, actual) if kconf is not None else "unknown" + note
        lines.append(f"CONFIG_{s.name}={s.value} ({s.origin}): got {actual}; {why}")
    return "\n  ".join(lines)


def check(
    settings: Mapping[str, Setting],
    dotconfig: Path,
    kconfig: Path,
    env: Mapping[str, str],
    what: str,
    notes: str = "",
) -> None:
    """Every requested option is in the .config with its value, or an error says why not."""
    config = read_config(dotconfig.read_text())
    missing = unmet(settings, config)
    if missing:
        raise FragmentError(
            f"{what}: {len(missing)} requested option(s) did not survive olddefconfig "
            f"({dotconfig}):\n  {explain(missing, config, dotconfig, kconfig, env)}\n"
            + (f"{notes}\n" if notes else "")
            + "Fix the fragment (qemu/configs/) for this kernel: add what the option depends "
            "on, or drop the option"
        )
