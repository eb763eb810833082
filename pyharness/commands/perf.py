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

import dataclasses
import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..check.counts import PHASES, Loaded, attribute, parse_sections, read_dumps
from ..check.driver import BENCH_TIMES, DriverModel, check_commands
from ..guest import qemu
from ..guest.modules import load_modules, unload_modules
from ..guest.plugin import counting_plugin
from ..guest.zstest import ZsTest
from ..kmod.elf import module_code
from ..progress import Progress, StageError
from . import run
from .config import Config

BENCH_N = 20000  # objects per bench: about 0.5 s per load under TCG
BENCH_SEED = 20251125
BENCH_REPEATS = 5  # bench runs per load (about 0.1 s each); the fastest counts
COUNT_N = 2000  # objects per counted bench: counts are exact, a small bench suffices
# Counted benches per load. The first warms up: an instruction that faults on a first
# touch runs, and is counted, twice. Of the others, the fewest instructions of each
# phase count: what disturbs a run only adds to it (a timer's reschedule taken in the
# allocator's preempt_enable() runs a few more of its instructions), and at least two
# runs must agree on that fewest.
COUNT_REPEATS = 4
PROACTIVENESS = "/proc/sys/vm/compaction_proactiveness"


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


def bench_lines(n: int = BENCH_N, repeats: int = BENCH_REPEATS) -> list[str]:
    return [f"bench {n} {BENCH_SEED}"] * repeats


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


# Two-sided 95% critical values of Student's t by degrees of freedom (1..30); 1.96 above.
T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
       2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
       2.060, 2.056, 2.052, 2.048, 2.045, 2.042)  # fmt: skip


def significant(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether the means of two samples differ at 95% confidence (Welch's t-test), as
    ministat would claim a difference; samples of one value each can claim nothing."""
    if len(a) < 2 or len(b) < 2:
        return False
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    diff = abs(statistics.mean(a) - statistics.mean(b))
    if va + vb == 0:
        return diff > 0
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    critical = T95[int(df) - 1] if int(df) <= len(T95) else 1.96
    return diff / (va + vb) ** 0.5 > critical


def paired_ratios(timeline: Sequence[Bench], base: str) -> dict[str, list[float]]:
    """Each other allocator's time over the mean of the base's loads right before and after it.

    The host's speed drifts over seconds (other guests, builds); neighbours in
    time share most of that drift, so their ratio keeps little of it.
    """
    ratios: dict[str, list[float]] = {}
    for i, load in enumerate(timeline):
        if load.allocator == base:
            continue
        near = [
            timeline[j].total_ns
            for j in (i - 1, i + 1)
            if 0 <= j < len(timeline) and timeline[j].allocator == base
        ]
        if near:
            ratios.setdefault(load.allocator, []).append(load.total_ns / statistics.mean(near))
    return ratios


def base_drift(timeline: Sequence[Bench], base: str) -> float:
    """The largest change between neighbouring loads of the base: the noise of a speed ratio
    (the same code measured twice; under TCG on a busy host it is tens of percent)."""
    times = [run.total_ns for run in timeline if run.allocator == base]
    return max((abs(b / a - 1) for a, b in zip(times, times[1:], strict=False)), default=0.0)


@dataclass
class Instructions:
    """A load's counted benches: the allocator's instructions per call of each phase (the
    fewest of the benches after the first), each bench's counts, and where they went."""

    allocator: str
    per_call: dict[str, float]
    totals: dict[str, int]  # the fewest of each phase over `runs`
    calls: dict[str, int]
    functions: dict[str, dict[str, int]]
    runs: list[dict[str, int]]  # each counted bench's instructions per phase of `calls`

    @property
    def repeatable(self) -> bool:
        """At least two benches ran exactly the fewest instructions (`totals`) of every
        phase."""
        return sum(r == self.totals for r in self.runs) >= 2

    @property
    def disturbed(self) -> int:
        """How many benches ran more than the fewest in some phase."""
        return sum(r != self.totals for r in self.runs)


def bench_calls(n: int, map_api: bool) -> dict[str, int]:
    """How often one `bench N` calls the allocator in each phase (zt_cmd_bench): every
    object is read twice over (all, then the even ones after compaction)."""
    reads = n + (n + 1) // 2
    calls = {"alloc": n, "free": n, "write_begin": n, "write_end": n if map_api else 0}
    calls |= {"read_begin": reads, "read_end": reads, "compact": 1, "create": 1, "destroy": 1}
    return {phase: c for phase in PHASES if (c := calls.get(phase, 0))}


def count(
    zstest: ZsTest,
    counted: Path,  # the counting plugin's output file
    name: str,
    module: str,  # the allocator's module name in the guest
    ko: Path,  # and its file on the host
    map_api: bool,
    n: int = COUNT_N,
) -> Instructions:
    """Counted benches on the loaded allocator (the guest booted with the plugin)."""
    # kcompactd's proactive compaction would migrate the allocator's pages in the middle
    # of a bench, its instructions counted in the phase of the moment.
    zstest.guest.run(f"echo 0 > {PROACTIVENESS} 2>/dev/null; true")
    before = len(read_dumps(counted.read_text()))
    answer = zstest.batch(bench_lines(n, COUNT_REPEATS))
    if answer.failures:
        f = answer.failures[0]
        raise StageError(f"counted bench on {name} failed: {f.errno} {f.reason}")
    listing = zstest.guest.run(
        f"for f in /sys/module/{module}/sections/.*text*; do echo $f $(cat $f); done"
    )
    loaded = Loaded(module_code(ko), parse_sections(listing))
    dumps = read_dumps(counted.read_text())[before:]
    if len(dumps) != COUNT_REPEATS:
        raise StageError(
            f"the counting plugin wrote {len(dumps)} dumps for {COUNT_REPEATS} benches on "
            f"{name}: is zstest's marker code in this build? ({counted})"
        )
    runs = [attribute(d, loaded) for d in dumps[1:]]
    calls = bench_calls(n, map_api)
    fewest = {k: min(r.phases.get(k, 0) for r in runs) for k in calls}
    # Where they went: a bench that ran the fewest, the least disturbed.
    where = min(runs, key=lambda r: sum(r.phases.get(k, 0) for k in calls))
    return Instructions(
        allocator=name,
        per_call={k: fewest[k] / c for k, c in calls.items()},
        totals=fewest,
        calls=calls,
        functions=where.functions,
        runs=[{k: r.phases.get(k, 0) for k in calls} for r in runs],
    )


@dataclass(frozen=True)
class Load:
    """An allocator to count: its modules' guest paths in load order, their names in the
    guest (for rmmod: a file's name may not be its module's), its allocator module's
    name and its file on the host."""

    name: str
    modules: Sequence[str]
    names: Sequence[str]
    module: str
    ko: Path


def counted_boot(
    config: Config,
    p: Progress,
    prepared: run.Prepared,  # its image loads nothing at boot
    out: Path,
    loads: Sequence[Load],
    map_api: bool,
) -> tuple[dict[str, Instructions], str]:
    """The counted bench on each load in turn, in one boot with the counting plugin (TCG):
    the instructions per call by load, and how they were counted or why they were not.
    The plugin's counts and the boot's logs are kept in `out`."""
    profile = prepared.kernel.target.profile
    if profile != "x86_64":
        return {}, f"not counted: zstest's phase markers exist on x86_64 only, not {profile}"
    try:
        plugin = counting_plugin(qemu.Profile.load(profile).binary, p)
    except StageError as e:
        return {}, f"not counted: the counting plugin is not available: {str(e).splitlines()[0]}"
    out.mkdir(parents=True, exist_ok=True)
    counts = out / "counts.txt"
    found: dict[str, Instructions] = {}
    with (out / "session.log").open("w") as transcript:
        try:
            with run.boot(
                config.with_overrides(accel="tcg"),
                p,
                prepared,
                out / "console.log",
                transcript,
                counter=(plugin, counts),
            ) as guest:
                for load in loads:
                    load_modules(guest, load.modules)
                    found[load.name] = count(
                        ZsTest(guest), counts, load.name, load.module, load.ko, map_api
                    )
                    unload_modules(guest, load.names)
                guest.poweroff()
        except StageError as e:
            return found, f"counting failed: {str(e).splitlines()[0]} (logs in {out})"
        finally:
            doc = {name: dataclasses.asdict(i) for name, i in found.items()}
            (out / "cost.json").write_text(json.dumps(doc, indent=2) + "\n")
    note = (
        "counted under TCG by zskit's QEMU plugin in each allocator module's own code, per "
        f"call of each phase of bench {COUNT_N}"
    )
    note += f", the fewest of {COUNT_REPEATS - 1} runs after a warm-up (a disturbance only adds)"
    unstable = [name for name, i in found.items() if not i.repeatable]
    if unstable:
        note += f"; no two runs of {', '.join(unstable)} agree: its counts are not exact"
    disturbed = sum(i.disturbed for i in found.values())
    if disturbed:
        note += f"; {disturbed} run(s) disturbed, left out"
    return found, note
