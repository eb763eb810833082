"""Deterministic workloads: zstest command batches generated from a seed.

The default workload mixes allocations of every size class (small sizes
weighted, as compressed pages are), writes, verifies and frees, so that
zspages fill, drain and are freed again. Each batch ends with `stats`; the
last batches verify every live object and then free all of them, so the
pool must end empty.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

POOL = "zt0"
PAGE_SIZE = 4096


@dataclass
class Workload:
    seed: int
    batch_ops: int
    pool: str = POOL
    live: dict[int, int] = field(default_factory=dict)  # id -> seed written
    next_id: int = 1

    def _size(self, rng: random.Random) -> int:
        roll = rng.random()
        if roll < 0.55:
            return rng.randint(1, 512)
        if roll < 0.95:
            return rng.randint(513, PAGE_SIZE - 1)
        return PAGE_SIZE

    def _op(self, rng: random.Random, target_live: int) -> list[str]:
        if not self.live or (len(self.live) < target_live and rng.random() < 0.6):
            oid, self.next_id = self.next_id, self.next_id + 1
            data_seed = rng.getrandbits(32)
            self.live[oid] = data_seed
            return [f"alloc {oid} {self._size(rng)}", f"write {oid} {data_seed}"]
        oid = rng.choice(list(self.live))
        if rng.random() < 0.3:
            return [f"verify {oid} {self.live[oid]}"]
        data_seed = self.live.pop(oid)
        return [f"verify {oid} {data_seed}", f"free {oid}"]

    def batches(self, ops: int) -> list[list[str]]:
        """About `ops` commands in batches of about `batch_ops`, then a full drain."""
        rng = random.Random(self.seed)
        out: list[list[str]] = [[f"create {self.pool}"]]
        done = 0
        while done < ops:
            batch: list[str] = []
            # The live set swells and shrinks, so zspages both fill and empty.
            target = rng.choice((50, 400, 1500))
            while len(batch) < self.batch_ops and done + len(batch) < ops:
                batch += self._op(rng, target)
            done += len(batch)
            out.append([*batch, "stats"])
        drain = [f"verify {oid} {s}" for oid, s in self.live.items()]
        drain += [f"free {oid}" for oid in self.live]
        self.live.clear()
        out.append([*drain, "stats"])
        return out
