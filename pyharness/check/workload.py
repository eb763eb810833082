"""Deterministic workloads: zstest command batches generated from a seed.

The default workload mixes allocations of every size class (small sizes
weighted, as compressed pages are), whole and partial writes through each
mapping mode, verifies, frees, bulk `churn` lines (the driver runs their
pseudo-random steps itself, so large workloads cost little transfer) and
compactions followed by verifies, so zspages fill, drain, move and are
freed. Each batch ends with `stats`. The last batch verifies every object
the workload still holds, then frees everything: the pool must end empty.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

POOL = "zt0"
PAGE_SIZE = 4096
CHURN_BASE = 1 << 30  # churn's ids, apart from the workload's own


@dataclass
class Workload:
    seed: int
    batch_ops: int
    pool: str = POOL
    partial_writes: bool = True  # the kernel has zs_map_object modes
    churn_percent: int = 50  # share of operations done by churn lines (bulk, cheap to send)
    live: dict[int, tuple[int, int]] = field(default_factory=dict)  # id -> (size, seed)
    next_id: int = 1

    def _size(self, rng: random.Random) -> int:
        roll = rng.random()
        if roll < 0.55:
            return rng.randint(1, 512)
        if roll < 0.95:
            return rng.randint(513, PAGE_SIZE - 1)
        return PAGE_SIZE

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
