"""The one density and speed harness: the driver's `bench` verb on each loaded allocator.

`bench N SEED` allocates N objects of a seeded size mix on a private pool, writes,
reads and frees them, timing each phase in the kernel with ktime (ns per object),
and reports the pool's pages after the writes and after freeing half and
compacting. The timing leaves out the serial line and the guest's shell, the
noisiest part of a time taken around a command; the pages are exact. compare
runs it on ours and the baseline, validate on the base and each patched state,
each load between loads of the one it is compared with.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from ..check.driver import BENCH_TIMES, DriverModel, check_commands
from ..guest.zstest import ZsTest
from ..progress import StageError

BENCH_N = 20000  # objects per bench: about 0.5 s per load under TCG
BENCH_SEED = 20251125
BENCH_REPEATS = 5  # bench runs per load (about 0.1 s each); the fastest counts


@dataclass
class Bench:
    """One load's `bench` runs: pages (exact) and the fastest ns per object of each phase."""

    allocator: str
    load: int  # its place in the boot's sequence of loads
    pages_full: int
    pages_half: int
    ns: dict[str, int]

    @property
    def total_ns(self) -> int:
        return sum(self.ns.values())


def bench_lines(n: int = BENCH_N) -> list[str]:
    return [f"bench {n} {BENCH_SEED}"] * BENCH_REPEATS


def bench(
    zstest: ZsTest, name: str, load: int, n: int = BENCH_N, model: DriverModel | None = None
) -> tuple[Bench, list[str]]:
    """`bench` BENCH_REPEATS times on the loaded allocator; with a model, its pages checked."""
    lines = bench_lines(n)
    answer = zstest.batch(lines)
    if answer.failures:
        f = answer.failures[0]
        raise StageError(f"bench on {name} failed: {f.errno} {f.reason}")
    problems = [str(d) for d in check_commands(load, lines, answer, model)] if model else []
    width = 2 + len(BENCH_TIMES)  # the two page counts, then a time per phase
    runs = [answer.values[i : i + width] for i in range(0, len(answer.values), width)]
    first = dict(runs[0])
    ns = {what: min(int(dict(r)[f"bench_{what}_ns"]) for r in runs) for what in BENCH_TIMES}
    pages_full, pages_half = int(first["bench_pages_full"]), int(first["bench_pages_half"])
    return Bench(name, load, pages_full, pages_half, ns), problems


def paired_ratios(timeline: Sequence[Bench], base: str) -> dict[str, list[float]]:
    """Each other allocator's time over the mean of the base's loads right before and after it.

    The host's speed drifts over seconds (other guests, builds); neighbours in
    time share most of that drift, so their ratio keeps little of it.
    """
    ratios: dict[str, list[float]] = {}
    for i, run in enumerate(timeline):
        if run.allocator == base:
            continue
        near = [
            timeline[j].total_ns
            for j in (i - 1, i + 1)
            if 0 <= j < len(timeline) and timeline[j].allocator == base
        ]
        if near:
            ratios.setdefault(run.allocator, []).append(run.total_ns / statistics.mean(near))
    return ratios


def base_drift(timeline: Sequence[Bench], base: str) -> float:
    """The largest change between neighbouring loads of the base: the noise of a speed ratio
    (the same code measured twice; under TCG on a busy host it is tens of percent)."""
    times = [run.total_ns for run in timeline if run.allocator == base]
    return max((abs(b / a - 1) for a, b in zip(times, times[1:], strict=False)), default=0.0)
