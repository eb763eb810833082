"""Small objects in merged classes at page ends, through every map, read and write API.

A merged class serves sizes from just above the previous class up to its
own slot size. Its smallest object in a slot that crosses a page boundary
may itself end before that boundary: the case the 2025 zs_obj_write size
underflow got wrong (the split into two pages was computed from the slot,
not from the object). For every merged class this allocates the class's
smallest and largest sizes until one zspage is full, and on each object
whose slot spans a page writes and reads the whole object and the bytes
around the page end in every mode the kernel has. The model knows every
placement, so the batches go through the run's checker.
"""

from __future__ import annotations

from ...kernel.api import KernelApi
from ...model import Handle, Policy, PoolModel, SizeClass
from .base import Context, Outcome, Params, Scenario, register

POOL = "sc-page-ends"
BASE_ID = 1 << 20


def size_ranges(model: PoolModel) -> dict[int, tuple[int, int]]:
    """Each class's (smallest, largest) request size (zs_malloc's size; the class adds
    its handle header), by class index, huge classes included."""
    ranges: dict[int, tuple[int, int]] = {}
    for size in range(1, model.policy.page_size + 1):
        index = model.class_of(size).index
        ranges[index] = (ranges.get(index, (size, size))[0], size)
    return ranges


def merged_classes(model: PoolModel) -> list[tuple[int, int, SizeClass]]:
    """(smallest, largest request size, class) of each non-huge class that serves more
    than one class step of sizes."""
    by_index = {c.index: c for c in model.classes}
    step = model.policy.class_delta
    return [
        (smallest, largest, by_index[index])
        for index, (smallest, largest) in sorted(size_ranges(model).items())
        if not by_index[index].huge and largest - smallest >= step
    ]


def _range_lines(api: KernelApi, oid: int, seed: int, off: int, length: int) -> list[str]:
    """Partial writes and reads of [off, off+length) in every mode the kernel has.

    A write-only mapping of a spanning object leaves the rest of it undefined (the
    model knows), so the caller writes the whole object again afterwards."""
    if api.map_object:
        return [
            f"pwrite {oid} {seed} {off} {length} rw",
            f"pverify {oid} {seed} {off} {length} rw",
            f"pverify {oid} {seed} {off} {length} ro",
            f"pwrite {oid} {seed} {off} {length} wo",
            f"pverify {oid} {seed} {off} {length} ro",
        ]
    return [f"pverify {oid} {seed} {off} {length} {mode}" for mode in ("ro", "sg")]


def batches(api: KernelApi, pol: Policy, operations: int) -> list[list[str]]:
    """One batch per merged class (within `operations` lines), each ending with a drain."""
    planner = PoolModel(pol)
    page = pol.page_size
    out: list[list[str]] = [[f"create {POOL}"]]
    oid = BASE_ID
    budget = operations
    for smallest, largest, cls in merged_classes(planner):
        if budget <= 0:
            break
        lines: list[str] = []
        ids: list[int] = []
        for n in range(cls.objs_per_zspage):
            size = smallest if n % 2 == 0 else largest
            handle = planner.alloc(size)
            assert isinstance(handle, Handle)
            seed = oid & 0xFFFFFFFF
            lines += [f"alloc {oid} {size}", f"write {oid} {seed}", f"verify {oid} {seed}"]
            start, _ = planner.slot(handle)
            if planner.spans(handle):
                # The bytes up to the page end, and across it where the object does.
                head = page - start
                if size <= head:
                    lines += _range_lines(api, oid, seed, max(0, size - 8), min(8, size))
                else:
                    lines += _range_lines(api, oid, seed, head - 1, 2)
                    lines += _range_lines(api, oid, seed, 0, size)
                lines += [f"write {oid} {seed}", f"verify {oid} {seed}"]
            ids.append(oid)
            oid += 1
        for i in ids:
            lines.append(f"verify {i} {i & 0xFFFFFFFF}")
            lines.append(f"free {i}")
        lines += ["compact", "stats"]
        for _ in ids:
            planner.free(planner.live_handles()[0])
        budget -= len(lines)
        out.append(lines)
    out.append([f"destroy {POOL}"])
    return out


def run(ctx: Context, params: Params) -> Outcome:
    pol = ctx.policy or ctx.api.upstream_policy()
    plan = batches(ctx.api, pol, params.operations)
    classes = len(plan) - 2
    commands = sum(len(b) for b in plan)
    failure = ctx.check(plan)
    counts: dict[str, object] = {"merged_classes": classes, "commands": commands, "cpus": 1}
    return Outcome(failure, "model", counts)


SCENARIO = register(
    Scenario(
        name="page-ends",
        kind="page-ends",
        summary="smallest and largest objects of every merged class at page ends, every "
        "map/read/write API, checked against the model",
        run=run,
        operations=20_000,
        seconds=60,
        unit="commands",
    )
)
