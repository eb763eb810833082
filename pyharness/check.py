"""Compare what the guest did with what the reference model predicts.

`DriverModel` predicts the zstest driver's answer to every command: its own
argument checks first (they never reach the allocator), then the allocator
model for what does. After each batch the checker compares each command's
result, the pool's total pages, the huge class size and every row of the
`classes` table. The first divergence ends the run and names its kind.
"""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass, field

from .guest import BatchResult
from .model import ClassStats, Placement, Policy, PoolModel, huge_class_size
from .pattern import pattern

PAGE_SIZE = 4096
MAX_LINE = 128
U32_MAX = 0xFFFFFFFF
U64_MAX = 0xFFFFFFFFFFFFFFFF
NAME = re.compile(r"^[A-Za-z0-9_-]{1,31}$")
ARGC = {
    "version": 1,
    "create": 2,
    "use": 2,
    "destroy": 2,
    "alloc": 3,
    "write": 3,
    "verify": 3,
    "free": 2,
    "reset": 1,
    "stats": 1,
}
POOL_VERBS = {"alloc", "write", "verify", "free", "reset", "stats"}


@dataclass
class _Object:
    where: Placement
    size: int
    seed: int | None = None  # None until written


@dataclass
class _Pool:
    model: PoolModel
    objects: dict[int, _Object] = field(default_factory=dict)


def kstrtou32(text: str) -> int:
    """The kernel's kstrtou32(text, 10): the value, or a negative errno.

    Leading "+" allowed; digits are consumed first and a u64 overflow wins
    over trailing junk; then one trailing newline may follow; then the value
    must fit in 32 bits.
    """
    body = text[1:] if text.startswith("+") else text
    digits = len(body) - len(body.lstrip("0123456789"))
    if digits and int(body[:digits]) > U64_MAX:
        return -errno.ERANGE
    rest = body[digits:]
    if not digits or rest not in ("", "\n"):
        return -errno.EINVAL
    value = int(body[:digits])
    return value if value <= U32_MAX else -errno.ERANGE


@dataclass
class DriverModel:
    """What zstest answers, command by command: 0 or a negative errno."""

    policy: Policy
    pools: dict[str, _Pool] = field(default_factory=dict)
    current: str | None = None

    def run(self, line: str) -> int:
        if len(line.encode()) >= MAX_LINE:
            return -errno.E2BIG
        argv = [arg for arg in re.split(r"[ \t]", line) if arg]
        if not argv:
            return 0
        if len(argv) > 4:
            return -errno.E2BIG
        verb = argv[0]
        if verb not in ARGC or len(argv) != ARGC[verb]:
            return -errno.EINVAL
        if verb in ("create", "use", "destroy"):
            return self._pool_verb(verb, argv[1])
        if verb == "version":
            return 0
        if self.current is None:
            return -errno.ENOENT
        pool = self.pools[self.current]
        nums: list[int] = []
        for arg in argv[1:]:
            value = kstrtou32(arg)
            if value < 0:
                return value
            nums.append(value)
        return getattr(self, f"_{verb}")(pool, *nums)

    def _pool_verb(self, verb: str, name: str) -> int:
        if not NAME.match(name):
            return -errno.EINVAL
        if verb == "create":
            if name in self.pools:
                return -errno.EEXIST
            self.pools[name] = _Pool(PoolModel(self.policy))
            self.current = name
            return 0
        if name not in self.pools:
            return -errno.ENOENT
        if verb == "use":
            self.current = name
        else:
            del self.pools[name]
            if self.current == name:
                self.current = None
        return 0

    def _alloc(self, pool: _Pool, oid: int, size: int) -> int:
        if size == 0 or size > PAGE_SIZE:
            return -errno.EINVAL
        if oid in pool.objects:
            return -errno.EEXIST
        where = pool.model.alloc(size)
        if isinstance(where, int):
            return where
        pool.objects[oid] = _Object(where, size)
        return 0

    def _write(self, pool: _Pool, oid: int, seed: int) -> int:
        if oid not in pool.objects:
            return -errno.ENOENT
        pool.objects[oid].seed = seed
        return 0

    def _verify(self, pool: _Pool, oid: int, seed: int) -> int:
        obj = pool.objects.get(oid)
        if obj is None:
            return -errno.ENOENT
        if obj.seed is None:
            return -errno.ENODATA
        if obj.seed == seed:
            return 0
        # Another seed may give the same bytes (short objects, seed collisions).
        same = pattern(oid, seed, obj.size) == pattern(oid, obj.seed, obj.size)
        return 0 if same else -errno.EIO

    def _free(self, pool: _Pool, oid: int) -> int:
        obj = pool.objects.pop(oid, None)
        if obj is None:
            return -errno.ENOENT
        pool.model.free(obj.where)
        return 0

    def _reset(self, pool: _Pool) -> int:
        for obj in pool.objects.values():
            pool.model.free(obj.where)
        pool.objects.clear()
        return 0

    def _stats(self, pool: _Pool) -> int:
        return 0

    def model(self, pool: str) -> PoolModel:
        return self.pools[pool].model


@dataclass(frozen=True)
class Divergence:
    kind: str  # command-result, data, total-pages, huge-class-size, class-stats
    batch: int
    detail: str

    def __str__(self) -> str:
        return f"batch {self.batch}: {self.kind}: {self.detail}"


def _errno_name(err: int) -> str:
    return "ok" if err == 0 else f"-{errno.errorcode.get(-err, str(-err))}"


def check_commands(
    batch_no: int, lines: list[str], result: BatchResult, driver: DriverModel
) -> list[Divergence]:
    """Run the batch through the driver model and compare every command's result."""
    actual = {f.line: f for f in result.failures}
    found: list[Divergence] = []
    if result.commands != len(lines):
        found.append(
            Divergence("protocol", batch_no, f"{result.commands} commands ran, sent {len(lines)}")
        )
    for number, line in enumerate(lines, start=1):
        expected = driver.run(line)
        got = actual.get(number)
        got_errno = got.errno if got else 0
        if got_errno == expected:
            continue
        kind = "data" if line.startswith("verify") and got_errno == -errno.EIO else "command-result"
        why = f" ({got.reason})" if got else ""
        found.append(
            Divergence(
                kind,
                batch_no,
                f"line {number} `{line}`: expected {_errno_name(expected)}, "
                f"got {_errno_name(got_errno)}{why}",
            )
        )
    return found


def check_state(
    batch_no: int,
    result: BatchResult,
    rows: list[ClassStats],
    model: PoolModel,
) -> list[Divergence]:
    """Compare total pages, huge class size and the classes table with the model."""
    found: list[Divergence] = []
    pages = int(result.value("pages"))
    if pages != model.total_pages():
        found.append(
            Divergence("total-pages", batch_no, f"guest {pages} pages, model {model.total_pages()}")
        )
    huge = int(result.value("huge_class_size"))
    if huge != huge_class_size(model.policy):
        found.append(
            Divergence(
                "huge-class-size",
                batch_no,
                f"guest {huge}, model {huge_class_size(model.policy)}",
            )
        )
    expected = {row.index: row for row in model.class_stats()}
    got = {row.index: row for row in rows}
    if sorted(expected) != sorted(got):
        found.append(
            Divergence(
                "class-stats",
                batch_no,
                f"class indexes differ: guest has {len(got)} classes, model {len(expected)}; "
                f"only in guest {sorted(set(got) - set(expected))[:10]}, "
                f"only in model {sorted(set(expected) - set(got))[:10]}",
            )
        )
        return found
    for index, want in expected.items():
        if got[index] != want:
            diffs = [
                f"{name} guest {getattr(got[index], name)} model {getattr(want, name)}"
                for name in want.__dataclass_fields__
                if getattr(got[index], name) != getattr(want, name)
            ]
            found.append(
                Divergence(
                    "class-stats",
                    batch_no,
                    f"class {index} (size {want.size}): " + ", ".join(diffs),
                )
            )
    return found
