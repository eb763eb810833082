"""Deterministic workloads: zstest command batches generated from a seed.

The default workload mixes allocations of every size class (small sizes
weighted, as compressed pages are), whole and partial writes through each
mapping mode, verifies, frees, bulk `churn` lines (the driver runs their
pseudo-random steps itself, so large workloads cost little transfer) and
compactions followed by verifies, so zspages fill, drain, move and are
freed. Each batch ends with `stats`. The last batch verifies every object
the workload still holds, then frees everything: the pool must end empty.

`suite` adds, after that drain, what random traffic rarely provokes (see
`probes`): zspages left at many fragmentation states and compacted, small
allocations whose zspage depends on list order, frees that empty zspages in
different orders, zs_malloc's own refusals and, where the kernel has it,
zs_lookup_class_index at every class boundary. Each probe's batches are
small, so the `classes` table is checked after every step; `where` after
the allocations between compactions checks which zspage and slot each took.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

POOL = "zt0"
CHURN_BASE = 1 << 30  # churn's ids, apart from the workload's own
# Object sizes of the probes, as bands for 4 KiB pages (scaled with the page size): small
# sizes give classes of many objects per zspage (list order inside one fullness group),
# large ones classes of a few (every free moves a zspage between groups).
PROBE_BANDS_4K = ((100, 400), (400, 1000), (1000, 2000), (2000, 3000), (3000, 3600))
PROBE_ROUNDS = 4
FINE_ROUNDS = 6  # rounds of single steps, each a batch of its own
FINE_STEPS = 40
# What each step of a probe round does in every class it holds.
PROBE_STEPS = ("compact", "alloc", "compact", "free", "alloc", "compact", "free alloc", "compact")


@dataclass
class Workload:
    seed: int
    batch_ops: int
    pool: str = POOL
    partial_writes: bool = True  # the kernel has zs_map_object modes
    churn_percent: int = 50  # share of operations done by churn lines (bulk, cheap to send)
    lookups: bool = False  # the kernel has zs_lookup_class_index
    page_size: int = 4096  # the guest's PAGE_SIZE
    live: dict[int, tuple[int, int]] = field(default_factory=dict)  # id -> (size, seed)
    next_id: int = 1

    @property
    def bands(self) -> tuple[tuple[int, int], ...]:
        scale = self.page_size // 4096
        return tuple((lo * scale, hi * scale) for lo, hi in PROBE_BANDS_4K)

    def _size(self, rng: random.Random) -> int:
        roll = rng.random()
        if roll < 0.55:
            return rng.randint(1, 512)
        if roll < 0.95:
            return rng.randint(513, self.page_size - 1)
        return self.page_size

    def _new(self, rng: random.Random) -> list[str]:
        oid, self.next_id = self.next_id, self.next_id + 1
        size, data_seed = self._size(rng), rng.getrandbits(32)
        self.live[oid] = (size, data_seed)
        return [f"alloc {oid} {size}", f"write {oid} {data_seed}"]

    def _partial(self, rng: random.Random) -> list[str]:
        """Overwrite a range in some mode, check it, then restore the whole object.

        Without mapping modes (7.2) only reads are partial: a range is checked
        through zs_obj_read_begin or the scatterlist API.
        """
        oid = rng.choice(list(self.live))
        size, current = self.live[oid]
        off = rng.randrange(size)
        length = rng.randint(1, size - off)
        if not self.partial_writes:
            return [f"pverify {oid} {current} {off} {length} {rng.choice(('ro', 'sg'))}"]
        other, mode = rng.getrandbits(32), rng.choice(("rw", "wo"))
        restore = rng.getrandbits(32)
        self.live[oid] = (size, restore)
        return [
            f"pwrite {oid} {other} {off} {length} {mode}",
            f"pverify {oid} {other} {off} {length} {rng.choice(('ro', 'rw'))}",
            f"write {oid} {restore}",
            f"verify {oid} {restore}",
        ]

    def _op(self, rng: random.Random, target_live: int) -> list[str]:
        if not self.live or (len(self.live) < target_live and rng.random() < 0.6):
            return self._new(rng)
        roll = rng.random()
        if roll < 0.06:
            return self._partial(rng)
        oid = rng.choice(list(self.live))
        if roll < 0.3:
            return [f"verify {oid} {self.live[oid][1]}"]
        _, data_seed = self.live.pop(oid)
        return [f"verify {oid} {data_seed}", f"free {oid}"]

    def batches(self, ops: int) -> list[list[str]]:
        """About `ops` operations in batches of about `batch_ops`, then a full drain.

        A churn line counts as its N steps; other lines as one operation each.
        """
        rng = random.Random(self.seed)
        out: list[list[str]] = [[f"create {self.pool}"]]
        done = 0
        while done < ops:
            batch: list[str] = []
            count = 0
            # The live set swells and shrinks, so zspages both fill and empty.
            target = rng.choice((50, 400, 1500))
            budget = min(self.batch_ops, ops - done)
            share = budget * self.churn_percent // 100
            churn = share if budget >= 200 else 0
            if churn:
                span = rng.choice((64, 512, 4096))
                batch.append(f"churn {rng.getrandbits(32)} {churn} {CHURN_BASE} {span}")
                count += churn
            while count < budget:
                lines = self._op(rng, target)
                batch += lines
                count += len(lines)
            if rng.random() < 0.5:
                batch.append("compact")
                sample = rng.sample(list(self.live), min(20, len(self.live)))
                batch += [f"verify {oid} {self.live[oid][1]}" for oid in sample]
            done += count
            out.append([*batch, "stats"])
        drain = [f"verify {oid} {s}" for oid, (_, s) in self.live.items()]
        self.live.clear()
        out.append([*drain, "reset", "compact", "stats"])
        return out

    def suite(self, ops: int) -> list[list[str]]:
        """What a run checks: `batches(ops)`, then the probes on the emptied pool."""
        return self.batches(ops) + self.probes()

    def _alloc_ids(self, size: int, n: int) -> list[int]:
        first = self.next_id
        self.next_id += n
        return list(range(first, first + n))

    def probes(self, rounds: int | None = None) -> list[list[str]]:
        """Batches that make each of the allocator's decisions show in what it reports.

        A round fills a few classes with several zspages each, frees a share of every
        zspage's worth of objects (from none to all, in a shuffled order), then alternates
        small allocations, frees and compactions, each its own batch ending in `stats`, and
        drains the classes in a random order. The objects are never written: only the
        allocator's bookkeeping is probed. Deterministic from the seed.
        """
        rng = random.Random(f"probes {self.seed}")
        out: list[list[str]] = []
        for _ in range(PROBE_ROUNDS if rounds is None else rounds):
            out += self._probe_round(rng)
        for _ in range(FINE_ROUNDS):
            out += self._fine_round(rng)
        # zs_malloc's refusals, only visible through `raw`; its largest valid size, and
        # where a huge object sits (no handle header).
        page = self.page_size
        checks = ["raw 0", f"raw {page + 1}", f"raw {page}", f"raw {1 << 31}"]
        huge = self._alloc_ids(page, 1)[0]
        checks += [f"alloc {huge} {page}", f"where {huge}", f"free {huge}"]
        if self.lookups:
            # Sizes past PAGE_SIZE are refused by zstest: the kernel's lookup checks none.
            sizes = {0, 1, page, page + 1, (1 << 31) - 8, (1 << 32) - 1}
            # Both sides of half the class boundaries (PAGE_SIZE >> 8 apart; sizes include
            # an 8-byte header).
            delta = page >> 8
            sizes |= {
                b + d for b in range(8, page, delta) for d in (0, 1) if b % (4 * delta) < 2 * delta
            }
            checks += [f"lookup {size}" for size in sorted(sizes)]
        out.append([*checks, "stats"])
        return out

    def _fine_round(self, rng: random.Random) -> list[list[str]]:
        """One small and one large class, a few zspages each, then single steps: one or two
        allocations or frees per class and now and then a compaction, each step checked."""
        small = rng.randint(*self.bands[0])
        large = rng.randint(*rng.choice(self.bands[2:]))
        held = {
            size: self._alloc_ids(size, rng.randint(1, 3) * min(24, 4 * self.page_size // size))
            for size in (small, large)
        }
        out = [[*(f"alloc {oid} {size}" for size, ids in held.items() for oid in ids), "stats"]]
        for _ in range(FINE_STEPS):
            lines: list[str] = []
            for size, ids in held.items():
                for _ in range(rng.randint(1, 2)):
                    if ids and rng.random() < 0.5:
                        lines.append(f"free {ids.pop(rng.randrange(len(ids)))}")
                    else:
                        oid = self._alloc_ids(size, 1)[0]
                        ids.append(oid)
                        lines.append(f"alloc {oid} {size}")
            if rng.random() < 0.35:
                lines.append("compact")
            out.append([*lines, "stats"])
        drain = [f"free {oid}" for ids in held.values() for oid in ids]
        out.append([*drain, "compact", "stats"])
        return out

    def _probe_round(self, rng: random.Random) -> list[list[str]]:
        out: list[list[str]] = []
        held: dict[int, list[int]] = {}  # size -> live ids, oldest first
        per: dict[int, int] = {}  # size -> about one zspage's objects
        for lo, hi in rng.sample(self.bands, 3):
            size = rng.randint(lo, hi)
            per[size] = max(2, min(24, 4 * self.page_size // size))
            held[size] = []
        fill: list[str] = []
        for size, ids in held.items():
            ids += self._alloc_ids(size, per[size] * rng.randint(3, 6))
            fill += [f"alloc {oid} {size}" for oid in ids]
        out.append([*fill, "stats"])
        # Fragment: each zspage's worth of objects keeps a different share.
        frees: list[int] = []
        for size, ids in held.items():
            n = per[size]
            for start in range(0, len(ids), n):
                block = ids[start : start + n]
                keep = rng.choice((0.0, 0.1, 0.3, 0.5, 0.75, 0.9, 1.0))
                frees += rng.sample(block, len(block) - round(keep * len(block)))
        rng.shuffle(frees)
        out.append([*(f"free {oid}" for oid in frees), "stats"])
        gone = set(frees)
        for size in held:
            held[size] = [oid for oid in held[size] if oid not in gone]
        # Compactions at each state these steps leave, allocations that go where list
        # order sends them, and frees that show where compaction moved objects.
        for step in PROBE_STEPS:
            lines: list[str] = []
            for size, ids in held.items():
                if "free" in step and ids:
                    for oid in rng.sample(ids, min(len(ids), rng.randint(1, per[size]))):
                        ids.remove(oid)
                        lines.append(f"free {oid}")
                if "alloc" in step:
                    new = self._alloc_ids(size, rng.randint(1, max(1, per[size] // 2)))
                    for oid in new:
                        lines += [f"alloc {oid} {size}", f"where {oid}"]
                    ids += new
            if "compact" in step:
                lines.append("compact")
            out.append([*lines, "stats"])
        # Drain in two steps, in a random order of classes and of objects.
        for half in (0, 1):
            lines = []
            for size in rng.sample(list(held), len(held)):
                ids = held[size]
                rng.shuffle(ids)
                cut = len(ids) // 2 if half == 0 else len(ids)
                lines += [f"free {oid}" for oid in ids[:cut]]
                held[size] = ids[cut:]
            out.append([*lines, "compact", "stats"])
        return out
