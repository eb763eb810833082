"""Compare what the guest did with what the reference model predicts.

`DriverModel` predicts the zstest driver's answer to every command: its own
argument checks first (they never reach the allocator), then the allocator
model for what does, and the value lines (`s KEY VALUE`) that stats,
compact and lookup print. It also tracks every live object's bytes as
segments of known pattern seeds, so verification results are predicted,
including the bytes a write-only mapping of a spanning object leaves
undefined. After each batch the checker compares all of it, and the
`classes` table read from debugfs. The first divergence ends the run and
names its kind.
"""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass, field

from ..guest.zstest import BatchResult
from ..kernel.api import KernelApi
from ..kmod.render import PROTOCOL_VERSION
from ..model import ClassStats, Handle, Policy, PoolModel
from ..model.kmalloc import KmallocPool
from ..model.pattern import pattern, pattern_seed, xorshift32

MAX_LINE = 128
MAX_ARGS = 6
MAX_CHURN = 1 << 20
MAX_BENCH = 1 << 18
MAX_LOCK_MS = 1000
U32_MAX = 0xFFFFFFFF
U64_MAX = 0xFFFFFFFFFFFFFFFF
NAME = re.compile(r"[A-Za-z0-9_-]{1,31}")
# What a verb runs on: nothing, the current pool (zsmalloc or kmalloc), a zsmalloc pool.
NONE, POOL, ZS_POOL = "none", "pool", "zs-pool"
# verb -> (argument count including the verb, what it runs on): the driver's zt_verbs
VERBS = {
    "version": (1, NONE),
    "create": (2, NONE),
    "kcreate": (2, NONE),
    "use": (2, NONE),
    "destroy": (2, NONE),
    "alloc": (3, POOL),
    "write": (3, ZS_POOL),
    "verify": (3, ZS_POOL),
    "pwrite": (6, ZS_POOL),
    "pverify": (6, ZS_POOL),
    "free": (2, POOL),
    "churn": (5, ZS_POOL),
    "compact": (1, ZS_POOL),
    "stress": (5, ZS_POOL),
    "mapcompact": (6, ZS_POOL),
    "lockfree": (3, ZS_POOL),
    "where": (2, ZS_POOL),
    "faults": (2, NONE),
    "bench": (3, NONE),
    "lookup": (2, ZS_POOL),
    "raw": (2, ZS_POOL),
    "reset": (1, POOL),
    "stats": (1, POOL),
    "compressor": (2, NONE),
}
ALG = re.compile(r"[a-z0-9-]{1,31}")
MODES = ("rw", "ro", "wo", "sg")  # the driver's zt_modes
# The verbs that change which pool is current or make the model give up (`unmodelled`):
# after a batch without them, the pool whose classes are checked is known unmodelled.
POOL_CHANGING = frozenset(
    {"create", "kcreate", "use", "destroy", "stress", "mapcompact", "lockfree"}
)
UNKNOWN = None  # a verify whose outcome the model cannot know (undefined bytes)
ANY = "*"  # a value line whose value the model cannot know (bench timings)
BENCH_TIMES = ("alloc", "write", "read", "free")

Segment = tuple[int, int, int | None]  # [start, end) holds the pattern of seed, or None


class PageRef(str):
    """The value a `where`'s page number must stand for: a page of a model zspage. A str,
    so value lists stay strings; its text names the page, so equal refs are equal strings."""

    pool: int  # the driver model's serial of the pool
    zspage: int
    chain_page: int  # which page of the zspage's chain

    def __new__(cls, pool: int, zspage: int, chain_page: int) -> PageRef:
        ref = super().__new__(cls, f"page {chain_page} of zspage {zspage} of pool {pool}")
        ref.pool, ref.zspage, ref.chain_page = pool, zspage, chain_page
        return ref


@dataclass
class _Object:
    handle: Handle
    size: int
    segments: list[Segment]
    written: bool = False
    whole: bool = False  # the driver's flag: holds the whole-object pattern of `seed`
    seed: int = 0

    def store(self, start: int, end: int, seed: int | None) -> None:
        kept: list[Segment] = []
        for a, b, s in self.segments:
            if a < start:
                kept.append((a, min(b, start), s))
            if b > end:
                kept.append((max(a, end), b, s))
        kept.append((start, end, seed))
        self.segments = sorted(kept)

    def matches(self, oid: int, seed: int, start: int, end: int) -> bool | None:
        """Whether bytes [start, end) hold the pattern of seed; None if any is undefined."""
        want: bytes | None = None
        for a, b, s in self.segments:
            lo, hi = max(a, start), min(b, end)
            if lo >= hi or s == seed:
                continue
            if s is None:
                return None
            want = want if want is not None else pattern(oid, seed, self.size)
            if pattern(oid, s, self.size, lo, hi) != want[lo:hi]:
                return False
        return True


@dataclass
class _Pool:
    model: PoolModel
    serial: int
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


def keeps_pool(lines: list[str]) -> bool:
    """Whether after these lines `current` and `unmodelled` are still what they were."""
    # Asked of every batch of a run: a line whose verb is one of them holds its name.
    text = "\n".join(lines)
    if not any(verb in text for verb in POOL_CHANGING):
        return True
    for line in lines:
        argv = [arg for arg in re.split(r"[ \t]", line) if arg]
        if argv and argv[0] in POOL_CHANGING:
            return False
    return True


@dataclass
class DriverModel:
    """What zstest answers, command by command: 0, a negative errno, or UNKNOWN."""

    api: KernelApi
    # The allocator's model; None: the kernel's upstream zsmalloc.
    policy: Policy | None = None
    pools: dict[str, _Pool] = field(default_factory=dict)
    slabs: dict[str, KmallocPool] = field(default_factory=dict)  # kcreate's pools
    current: str | None = None
    values: list[tuple[str, str]] = field(default_factory=list)  # `s` lines so far
    # The guest's page numbers (`where`) and the model pages they were matched with.
    page_refs: dict[str, PageRef] = field(default_factory=dict)
    page_numbers: dict[PageRef, str] = field(default_factory=dict)
    pools_created: int = 0
    # Set by a `stress` line: threads ran concurrently, so the pool's state is no
    # longer a function of the commands; its own checks (test_stress) apply instead.
    unmodelled: bool = False

    @property
    def page_size(self) -> int:
        """The guest's PAGE_SIZE, which bounds zstest's sizes (its random ones too)."""
        return self.api.geometry.page_size

    def run(self, line: str) -> int | None:
        if len(line.encode()) >= MAX_LINE:
            return -errno.E2BIG
        if "\0" in line:
            return -errno.EINVAL
        argv = [arg for arg in re.split(r"[ \t]", line) if arg]
        if not argv:
            return 0
        if len(argv) > MAX_ARGS:
            return -errno.E2BIG
        verb = argv[0]
        if verb not in VERBS or len(argv) != VERBS[verb][0]:
            return -errno.EINVAL
        if verb in ("create", "kcreate", "use", "destroy"):
            return self._pool_verb(verb, argv[1])
        if verb == "compressor":  # assumed present: the bench checks its answer itself
            if not self.api.acomp:
                return -errno.EOPNOTSUPP
            return 0 if ALG.fullmatch(argv[1]) else -errno.EINVAL
        if verb == "version":
            self.values.append(("version", str(PROTOCOL_VERSION)))
            return 0
        if verb == "faults":  # a fault window: scenarios.fault checks what follows it
            on = kstrtou32(argv[1])
            return on if on < 0 else (0 if on <= 1 else -errno.EINVAL)
        if verb == "bench":  # on a private pool: no current pool needed
            counts = [kstrtou32(arg) for arg in argv[1:]]
            bad = next((n for n in counts if n < 0), None)
            return bad if bad is not None else self._bench(*counts)
        if self.current is None:
            return -errno.ENOENT
        if self.current in self.slabs:
            return self._slab_verb(self.slabs[self.current], verb, argv[1:])
        pool = self.pools[self.current]
        nums: list[int] = []
        for arg in argv[1:]:
            if verb in ("pwrite", "pverify") and len(nums) == 4:
                break  # MODE is a word
            value = kstrtou32(arg)
            if value < 0:
                return value
            nums.append(value)
        if verb in ("pwrite", "pverify"):
            oid, seed, off, length = nums  # VERBS fixed the count
            return self._range(pool, verb == "pwrite", oid, seed, off, length, argv[5])
        handler = getattr(self, f"_{verb}")
        result: int | None = handler(pool, *nums)
        return result

    def _pool_verb(self, verb: str, name: str) -> int:
        if not NAME.fullmatch(name):
            return -errno.EINVAL
        exists = name in self.pools or name in self.slabs
        if verb in ("create", "kcreate"):
            if exists:
                return -errno.EEXIST
            if verb == "kcreate":
                self.slabs[name] = KmallocPool(self.page_size)
            else:
                pol = self.policy or self.api.upstream_policy()
                self.pools_created += 1
                self.pools[name] = _Pool(PoolModel(pol), self.pools_created)
            self.current = name
            return 0
        if not exists:
            return -errno.ENOENT
        if verb == "use":
            self.current = name
        else:
            self.pools.pop(name, None)
            self.slabs.pop(name, None)
            if self.current == name:
                self.current = None
        return 0

    def _slab_verb(self, slab: KmallocPool, verb: str, args: list[str]) -> int:
        """A verb on a kmalloc pool: alloc, free, reset and stats; EOPNOTSUPP otherwise."""
        if VERBS[verb][1] == ZS_POOL:
            return -errno.EOPNOTSUPP
        nums = [kstrtou32(arg) for arg in args]
        bad = next((n for n in nums if n < 0), None)
        if bad is not None:
            return bad
        if verb == "alloc":
            oid, size = nums
            if size == 0 or size > self.page_size:
                return -errno.EINVAL
            if oid in slab.slots:
                return -errno.EEXIST
            slab.alloc(oid, size)
        elif verb == "free":
            if nums[0] not in slab.slots:
                return -errno.ENOENT
            slab.free(nums[0])
        elif verb == "reset":
            slab.reset()
        else:
            self.values += [("objects", str(len(slab.slots))), ("slot_bytes", str(slab.slot_bytes))]
        return 0

    def _alloc(self, pool: _Pool, oid: int, size: int) -> int:
        if size == 0 or size > self.page_size:
            return -errno.EINVAL
        if oid in pool.objects:
            return -errno.EEXIST
        handle = pool.model.alloc(size)
        if isinstance(handle, int):
            return handle
        pool.objects[oid] = _Object(handle, size, [(0, size, None)])
        return 0

    def _write(self, pool: _Pool, oid: int, seed: int) -> int:
        obj = pool.objects.get(oid)
        if obj is None:
            return -errno.ENOENT
        obj.segments = [(0, obj.size, seed)]
        obj.written = obj.whole = True
        obj.seed = seed
        return 0

    def _verify(self, pool: _Pool, oid: int, seed: int, start: int = 0, end: int = 0) -> int | None:
        obj = pool.objects.get(oid)
        if obj is None:
            return -errno.ENOENT
        if not obj.written:
            return -errno.ENODATA
        same = obj.matches(oid, seed, start, end or obj.size)
        return UNKNOWN if same is None else 0 if same else -errno.EIO

    def _range(
        self, pool: _Pool, write: bool, oid: int, seed: int, off: int, length: int, mode: str
    ) -> int | None:
        if mode not in MODES or mode in (("ro", "sg") if write else ("wo",)):
            return -errno.EINVAL
        if self.api.map_object and mode == "sg":
            return -errno.EOPNOTSUPP  # the scatterlist API came with 7.2's read API
        if not self.api.map_object and (write or mode == "rw"):
            return -errno.EOPNOTSUPP
        obj = pool.objects.get(oid)
        if obj is None:
            return -errno.ENOENT
        if not length or off + length > obj.size:
            return -errno.EINVAL
        if not write:
            return self._verify(pool, oid, seed, off, off + length)
        if mode == "wo" and pool.model.spans(obj.handle):
            # A spanning WO mapping copies the whole per-CPU buffer back.
            obj.store(0, obj.size, None)
        obj.store(off, off + length, seed)
        obj.written, obj.whole = True, False
        return 0

    def _free(self, pool: _Pool, oid: int) -> int:
        obj = pool.objects.pop(oid, None)
        if obj is None:
            return -errno.ENOENT
        pool.model.free(obj.handle)
        return 0

    def _churn(self, pool: _Pool, seed: int, n: int, base: int, span: int) -> int | None:
        """The driver's zt_cmd_churn, step by step (see its comment)."""
        if not span or n > MAX_CHURN:
            return -errno.EINVAL
        state = pattern_seed(base, seed, n)
        objects = pool.objects
        page_size = self.page_size
        for _ in range(n):
            state = xorshift32(state)
            oid = (base + state % span) & U32_MAX
            obj = objects.get(oid)
            if obj is not None:
                err: int | None = 0
                if state >> 28 == 0 and obj.whole:
                    err = self._verify(pool, oid, obj.seed)
                if err == 0:
                    err = self._free(pool, oid)
            else:
                state = xorshift32(state)
                size = 1 + (state % 512 if state >> 31 else state % page_size)
                err = self._alloc(pool, oid, size)
                state = xorshift32(state)
                if err == 0:
                    err = self._write(pool, oid, state)
            if err != 0:
                return err
        return 0

    def _stress(self, pool: _Pool, secs: int, threads: int, seed: int, base: int) -> int | None:
        if not 1 <= secs <= 60 or not 1 <= threads <= 8 or base + threads * 256 > U32_MAX:
            return -errno.EINVAL
        self.unmodelled = True
        return UNKNOWN

    def _mapcompact(
        self, pool: _Pool, secs: int, threads: int, seed: int, base: int, ops: int
    ) -> int | None:
        if ops < threads:
            return -errno.EINVAL
        return self._stress(pool, secs, threads, seed, base)  # same bounds, unmodelled

    def _lockfree(self, pool: _Pool, oid: int, ms: int) -> int | None:
        """A free whose zspage release may be deferred, and refused for a spanning object:
        the pages that follow are the allocator's timing, not the model's."""
        if ms > MAX_LOCK_MS:
            return -errno.EINVAL
        if oid not in pool.objects:
            return -errno.ENOENT
        self._free(pool, oid)
        self.unmodelled = True
        return UNKNOWN

    def _where(self, pool: _Pool, oid: int) -> int:
        """The page and in-page offset a read mapping of the object points at."""
        obj = pool.objects.get(oid)
        if obj is None:
            return -errno.ENOENT
        mapped = pool.model.mapped(obj.handle)
        if mapped is None:
            return -errno.EINVAL
        zspage, chain_page, offset = mapped
        ref = PageRef(pool.serial, zspage, chain_page)
        self.values += [("page", ref), ("offset", str(offset))]
        return 0

    def matches_value(self, want: tuple[str, str], got: tuple[str, str]) -> bool:
        """Whether a guest's value line is the one predicted. A page number stands for the
        model page it was first matched with while that zspage lives; it contradicts the
        model only when both it and the predicted page are already matched elsewhere (a
        page that migration moved gets a new number, and a freed one is reused)."""
        key, value = want
        if key != got[0]:
            return False
        if not isinstance(value, PageRef):
            return value in (ANY, got[1])
        number = got[1]
        known = self.page_refs.get(number)
        if known == value:
            return True
        mine = self.page_numbers.get(value)
        if known is not None and mine is not None and mine != number and self._lives(known):
            return False
        if known is not None:
            del self.page_numbers[known]
        if mine is not None:
            del self.page_refs[mine]
        self.page_refs[number], self.page_numbers[value] = value, number
        return True

    def _lives(self, ref: PageRef) -> bool:
        return any(
            p.serial == ref.pool and p.model.has_zspage(ref.zspage) for p in self.pools.values()
        )

    def _bench(self, n: int, seed: int) -> int:
        """The driver's zt_cmd_bench on a fresh pool: its pages; its timings are ANY."""
        if not 1 <= n <= MAX_BENCH:
            return -errno.EINVAL
        model = PoolModel(self.policy or self.api.upstream_policy())
        state = pattern_seed(0, seed, n)
        handles: list[Handle] = []
        for _ in range(n):
            state = xorshift32(state)
            handle = model.alloc(1 + (state % 512 if state >> 31 else state % self.page_size))
            assert not isinstance(handle, int), "sizes 1..PAGE_SIZE always allocate"
            handles.append(handle)
        full = model.total_pages()
        for handle in handles[1::2]:
            model.free(handle)
        model.compact()
        self.values += [
            ("bench_pages_full", str(full)),
            ("bench_pages_half", str(model.total_pages())),
        ]
        self.values += [(f"bench_{what}_ns", ANY) for what in BENCH_TIMES]
        return 0

    def _compact(self, pool: _Pool) -> int:
        self.values.append(("compacted", str(pool.model.compact())))
        return 0

    def _lookup(self, pool: _Pool, size: int) -> int:
        if not self.api.lookup_class_index:
            return -errno.EOPNOTSUPP
        if size > self.page_size:
            return -errno.EINVAL  # past the class table on 6.12+, so never asked
        self.values.append(("class_index", str(pool.model.lookup_class_index(size))))
        return 0

    def _raw(self, pool: _Pool, size: int) -> int:
        """zs_malloc(SIZE) unchecked, then zs_free of whatever it returned."""
        got = pool.model.alloc(size)
        if isinstance(got, int):
            self.values.append(("raw", str(got)))
        else:
            pool.model.free(got)
            self.values.append(("raw", "0"))
        return 0

    def _reset(self, pool: _Pool) -> int:
        for obj in pool.objects.values():
            pool.model.free(obj.handle)
        pool.objects.clear()
        return 0

    def _stats(self, pool: _Pool) -> int:
        m = pool.model
        self.values += [
            ("pages", str(m.total_pages())),
            ("huge_class_size", str(m.huge_class_size())),
            ("pages_compacted", str(m.pages_compacted)),
        ]
        return 0

    def model(self, pool: str) -> PoolModel:
        return self.pools[pool].model

    def live(self, pool: str) -> dict[int, _Object]:
        return self.pools[pool].objects


@dataclass(frozen=True)
class Divergence:
    kind: str  # command-result, data, values, class-stats, protocol
    batch: int
    detail: str

    def __str__(self) -> str:
        return f"batch {self.batch}: {self.kind}: {self.detail}"


def _errno_name(err: int | None) -> str:
    if err is UNKNOWN:
        return "ok or -EIO (undefined bytes)"
    return "ok" if err == 0 else f"-{errno.errorcode.get(-err, str(-err))}"


def check_commands(
    batch_no: int, lines: list[str], result: BatchResult, driver: DriverModel
) -> list[Divergence]:
    """Run the batch through the driver model; compare every command's result and value."""
    actual = {f.line: f for f in result.failures}
    found: list[Divergence] = []
    if result.commands != len(lines):
        found.append(
            Divergence("protocol", batch_no, f"{result.commands} commands ran, sent {len(lines)}")
        )
    driver.values = []
    for number, line in enumerate(lines, start=1):
        expected = driver.run(line)
        got = actual.get(number)
        got_errno = got.errno if got else 0
        if got_errno == expected or (expected is UNKNOWN and got_errno in (0, -errno.EIO)):
            continue
        data = line.split()[0] in ("verify", "pverify", "churn") and got_errno == -errno.EIO
        why = f" ({got.reason})" if got else ""
        found.append(
            Divergence(
                "data" if data else "command-result",
                batch_no,
                f"line {number} `{line}`: expected {_errno_name(expected)}, "
                f"got {_errno_name(got_errno)}{why}",
            )
        )
    agree = len(result.values) == len(driver.values) and all(
        map(driver.matches_value, driver.values, result.values)
    )
    if not agree and not driver.unmodelled:
        for (key, want), got_value in zip(driver.values, result.values, strict=False):
            if not driver.matches_value((key, want), got_value):
                found.append(
                    Divergence(
                        key if got_value[0] == key else "values",
                        batch_no,
                        f"guest {got_value[0]} {got_value[1]}, model {key} {want}",
                    )
                )
                break
        else:
            found.append(
                Divergence(
                    "values",
                    batch_no,
                    f"guest printed {len(result.values)} values, model {len(driver.values)}",
                )
            )
    return found


def check_classes(batch_no: int, rows: list[ClassStats], model: PoolModel) -> list[Divergence]:
    """Compare the `classes` table with the model, row by row and field by field."""
    found: list[Divergence] = []
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


def check_geometry(rows: list[ClassStats], model: PoolModel) -> Divergence | None:
    """The first class whose index, size or pages per zspage differ between a fresh pool's
    `classes` table and the model: then the model does not describe this zsmalloc, and
    every later divergence would only repeat that."""
    want = [(c.index, c.size, c.pages_per_zspage) for c in model.classes]
    got = [(r.index, r.size, r.pages_per_zspage) for r in rows]
    for number, (w, g) in enumerate(zip(want, got, strict=False)):
        if w != g:
            return Divergence(
                "model",
                0,
                f"the model does not describe this zsmalloc: row {number} of the classes table "
                f"is class {g[0]} of size {g[1]} with {g[2]} pages per zspage, the model's "
                f"class {w[0]} of size {w[1]} with {w[2]}",
            )
    if len(want) != len(got):
        return Divergence(
            "model",
            0,
            f"the model does not describe this zsmalloc: the classes table has {len(got)} "
            f"classes, the model {len(want)}",
        )
    return None
