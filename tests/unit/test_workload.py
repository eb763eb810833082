"""Tests for pyharness.workload: deterministic zstest batches generated from a seed."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyharness.check import workload
from pyharness.check.driver import DriverModel, check_commands
from pyharness.check.workload import Workload
from pyharness.guest.zstest import MAX_BATCH_BYTES, BatchResult
from pyharness.kernel.api import KernelApi, api_for

# The defaults of the repository's Kconfig: WORKLOAD_OPS, WORKLOAD_BATCH, WORKLOAD_SEED.
OPS, BATCH, SEED = 6000, 1000, 1
MAX_WORKLOAD_BATCH = 100000  # the Kconfig range of WORKLOAD_BATCH
API61 = api_for("6.1")
MAX_CHURN = 1 << 20  # ZT_MAX_CHURN
U32 = 0xFFFFFFFF
MODES = ("rw", "ro", "wo")


def make(
    seed: int = SEED, batch_ops: int = BATCH, ops: int = OPS, partial_writes: bool = True
) -> list[list[str]]:
    return Workload(seed=seed, batch_ops=batch_ops, partial_writes=partial_writes).batches(ops)


DEFAULT = make()


def ops_of(line: str) -> int:
    """Operations a line stands for: a churn line its N steps, any other line one."""
    return int(line.split()[2]) if line.startswith("churn ") else 1


def walk(batches: list[list[str]]) -> None:
    """Replay the batches, asserting the id and argument discipline command by command."""
    live: dict[int, tuple[int, int]] = {}  # id -> (size, seed of the whole-object pattern)
    ever: set[int] = set()
    for number, batch in enumerate(batches):
        where = f"batch {number}"
        for k, line in enumerate(batch):
            verb, *args = line.split(" ")
            if verb != "create":
                numbers = args[:4] if verb in ("pwrite", "pverify") else args
                assert all(a.isdigit() and int(a) <= U32 for a in numbers), line
            if verb == "alloc":
                oid, size = int(args[0]), int(args[1])
                assert oid not in ever, f"{where}: id {oid} reused"
                assert oid < workload.CHURN_BASE, f"{where}: id {oid} among churn's ids"
                assert 1 <= size <= 4096
                live[oid] = (size, -1)
                ever.add(oid)
            elif verb == "write":
                oid = int(args[0])
                assert oid in live, f"{where}: write of dead id {oid}"
                live[oid] = (live[oid][0], int(args[1]))
            elif verb == "verify":
                oid = int(args[0])
                assert oid in live, f"{where}: verify of dead id {oid}"
                assert live[oid][1] == int(args[1]), f"{where}: verify with a wrong seed"
            elif verb == "free":
                oid = int(args[0])
                assert oid in live, f"{where}: free of dead id {oid}"
                del live[oid]
            elif verb == "pwrite":
                check_partial_group(batch[k : k + 4], live)
                live[int(args[0])] = (live[int(args[0])][0], -1)  # until the group's write
            elif verb == "pverify":
                if batch[k - 1].startswith("pwrite "):
                    continue  # checked with its group
                # A read-only partial check (kernels without mapping modes).
                oid, seed, off, length = map(int, args[:4])
                assert args[4] in ("ro", "sg"), f"{where}: {line}"
                assert oid in live and live[oid][1] == seed, f"{where}: {line}"
                assert off + length <= live[oid][0], f"{where}: {line}"
            elif verb == "churn":
                seed, n, base, span = map(int, args)
                assert len(args) == 4
                assert 1 <= n <= MAX_CHURN
                assert base == workload.CHURN_BASE
                assert span in (64, 512, 4096)
                assert base + span - 1 <= U32  # no wrap into the workload's ids
            elif verb == "reset":
                assert number == len(batches) - 1, f"{where}: reset before the last batch"
                live.clear()
            else:
                assert line in (f"create {workload.POOL}", "stats", "compact"), line
    assert live == {}


def check_partial_group(group: list[str], live: dict[int, tuple[int, int]]) -> None:
    """pwrite ID S OFF LEN rw|wo; pverify ID S OFF LEN ro|rw; write ID R; verify ID R."""
    assert len(group) == 4, group
    pwrite, pverify, write, verify = (line.split() for line in group)
    oid, seed, off, length = map(int, pwrite[1:5])
    assert oid in live, f"pwrite of dead id {oid}"
    size = live[oid][0]
    assert pwrite[0] == "pwrite" and pwrite[5] in ("rw", "wo")
    assert length >= 1 and off + length <= size, f"range {off}+{length} outside {size} bytes"
    assert pverify[0] == "pverify" and pverify[1:5] == pwrite[1:5]
    assert pverify[5] in ("ro", "rw")
    assert write[0] == "write" and write[1] == str(oid)
    assert verify == ["verify", str(oid), write[2]]
    assert seed <= U32


# ------------------------------------------------------------------------ determinism


def test_same_seed_same_batches() -> None:
    assert make() == DEFAULT
    assert make(seed=7, batch_ops=50, ops=500) == make(seed=7, batch_ops=50, ops=500)


def test_different_seeds_differ() -> None:
    assert make(seed=2) != DEFAULT
    assert make(seed=7, batch_ops=50, ops=500) != make(seed=8, batch_ops=50, ops=500)


def test_a_workload_object_is_used_once() -> None:
    w = Workload(seed=SEED, batch_ops=BATCH)
    assert w.batches(OPS) == DEFAULT
    assert w.live == {}  # drained by the last batch


# ------------------------------------------------------------------------ structure


def test_first_batch_creates_the_pool() -> None:
    assert DEFAULT[0] == [f"create {workload.POOL}"]
    assert workload.POOL == "zt0"
    assert sum(line.startswith("create ") for batch in DEFAULT for line in batch) == 1


def test_another_pool_name() -> None:
    batches = Workload(seed=SEED, batch_ops=BATCH, pool="other").batches(500)
    assert batches[0] == ["create other"]
    assert not any("zt0" in line for b in batches for line in b)


def test_every_later_batch_ends_with_stats() -> None:
    assert len(DEFAULT) > 2
    for batch in DEFAULT[1:]:
        assert batch[-1] == "stats"
        assert "stats" not in batch[:-1]


def test_batch_sizes() -> None:
    middle = DEFAULT[1:-1]
    counted = []
    for batch in middle:
        # Compactions and the verifies after them are extra; everything else is counted.
        body = batch[: batch.index("compact")] if "compact" in batch else batch[:-1]
        counted.append(sum(ops_of(line) for line in body))
    # About `ops` operations in batches of `batch_ops`: each batch fills what is left of
    # its budget, and its last group (a partial write is 4 lines) may overshoot by 3.
    done = 0
    for c in counted:
        budget = min(BATCH, OPS - done)
        assert budget <= c <= budget + 3
        done += c
    assert OPS <= done <= OPS + 3
    for batch in DEFAULT:
        assert sum(len(line) + 1 for line in batch) <= MAX_BATCH_BYTES
        assert all(len(line.encode()) < 128 for line in batch)
        assert all(len(line.split()) <= 6 for line in batch)


def test_batches_fit_the_driver_at_the_largest_batch_setting() -> None:
    batches = make(batch_ops=MAX_WORKLOAD_BATCH, ops=3 * MAX_WORKLOAD_BATCH)
    assert max(sum(len(line) + 1 for line in b) for b in batches) <= MAX_BATCH_BYTES


def test_id_discipline_and_argument_forms() -> None:
    walk(DEFAULT)


def test_the_default_workload_uses_every_kind_of_line() -> None:
    verbs = {line.split()[0] for b in DEFAULT for line in b}
    assert verbs == {
        "create",
        "alloc",
        "write",
        "verify",
        "pwrite",
        "pverify",
        "free",
        "churn",
        "compact",
        "reset",
        "stats",
    }
    pwrite_modes = {line.split()[5] for b in DEFAULT for line in b if line.startswith("pwrite ")}
    pverify_modes = {line.split()[5] for b in DEFAULT for line in b if line.startswith("pverify ")}
    assert pwrite_modes == {"rw", "wo"}
    assert pverify_modes == {"ro", "rw"}


def test_churn_lines() -> None:
    churns = [(n, line) for n, b in enumerate(DEFAULT) for line in b if line.startswith("churn ")]
    assert churns
    for number, line in churns:
        batch = DEFAULT[number]
        assert sum(x.startswith("churn ") for x in batch) == 1
        assert 1 <= ops_of(line) <= BATCH // 2  # at most half of a batch's operations
    assert not any(line.startswith("churn ") for line in DEFAULT[-1])
    # Small batches have no churn (too few operations to share).
    assert not any(line.startswith("churn ") for b in make(batch_ops=199) for line in b)


def test_partial_write_groups() -> None:
    groups = 0
    for batch in DEFAULT:
        for k, line in enumerate(batch):
            if line.startswith("pwrite "):
                groups += 1
                assert batch[k + 1].startswith("pverify ")
    assert groups > 10
    assert groups == sum(line.startswith("pverify ") for b in DEFAULT for line in b)


def test_no_partial_writes_where_the_kernel_has_no_modes() -> None:
    batches = make(partial_writes=False)
    assert batches != DEFAULT
    assert not any(line.startswith("pwrite ") for b in batches for line in b)
    # Partial reads remain, through zs_obj_read_begin and the scatterlist API.
    modes = {line.split()[5] for b in batches for line in b if line.startswith("pverify ")}
    assert modes == {"ro", "sg"}
    walk(batches)


def test_compactions_are_followed_by_verifies() -> None:
    compacting = [b for b in DEFAULT[1:-1] if "compact" in b]
    assert compacting
    for batch in compacting:
        after = batch[batch.index("compact") + 1 : -1]
        assert 1 <= len(after) <= 20
        assert all(line.startswith("verify ") for line in after)
        assert batch.count("compact") == 1


def test_sizes_cover_small_large_and_full_pages() -> None:
    sizes = [int(line.split()[2]) for b in DEFAULT for line in b if line.startswith("alloc ")]
    assert min(sizes) >= 1
    assert max(sizes) == 4096
    assert any(s <= 512 for s in sizes)
    assert any(512 < s < 4096 for s in sizes)


def test_final_batch_drains_every_live_id() -> None:
    live: dict[int, int] = {}
    for batch in DEFAULT[:-1]:
        for line in batch:
            verb, *args = line.split()
            if verb == "write":
                live[int(args[0])] = int(args[1])
            elif verb == "free":
                del live[int(args[0])]
    assert live, "the workload should leave objects live before the drain"
    drain = DEFAULT[-1]
    assert drain[-3:] == ["reset", "compact", "stats"]
    verifies = drain[:-3]
    assert sorted(verifies) == sorted(f"verify {oid} {seed}" for oid, seed in live.items())


# ------------------------------------------------------------------------ the model's view


def predictions(batches: list[list[str]], api: KernelApi = API61) -> tuple[DriverModel, list]:
    """Every batch through a DriverModel: (the model, per batch its results and values)."""
    driver = DriverModel(api)
    out = []
    for batch in batches:
        driver.values = []
        results = [driver.run(line) for line in batch]
        out.append((results, list(driver.values)))
    return driver, out


def test_every_command_of_the_default_workload_succeeds() -> None:
    driver, out = predictions(DEFAULT)
    for number, (results, _) in enumerate(out):
        bad = [(line, r) for line, r in zip(DEFAULT[number], results, strict=True) if r != 0]
        assert bad == [], f"batch {number}"  # 0 exactly: no errno and no UNKNOWN
    assert driver.model(workload.POOL).total_pages() == 0
    assert driver.live(workload.POOL) == {}


def test_value_lines_of_the_default_workload() -> None:
    _, out = predictions(DEFAULT)
    assert out[0][1] == []
    for number, (_, values) in enumerate(out[1:], start=1):
        compacts = DEFAULT[number].count("compact")
        keys = [k for k, _ in values]
        assert keys == ["compacted"] * compacts + ["pages", "huge_class_size", "pages_compacted"]
        assert dict(values)["huge_class_size"] == "3257"
    final = dict(out[-1][1])
    assert final["pages"] == "0"
    assert final["compacted"] == "0"  # nothing left to compact after reset
    pages = [int(dict(v)["pages"]) for _, v in out[1:-1]]
    assert max(pages) > 50  # the pool does grow
    compacted = [int(dict(v)["pages_compacted"]) for _, v in out[1:]]
    assert compacted == sorted(compacted)  # a running total
    assert compacted[-1] > 0  # some compaction freed pages


def test_partial_writes_include_the_spanning_wo_hazard() -> None:
    # A wo pwrite of a spanning object is where bytes become undefined; the group's pverify
    # reads only the written range and the whole write restores the object.
    driver = DriverModel(API61)
    hazards = 0
    for line in (line for b in DEFAULT for line in b):
        if line.startswith("pwrite ") and line.endswith(" wo"):
            obj = driver.live(workload.POOL)[int(line.split()[1])]
            hazards += driver.model(workload.POOL).spans(obj.handle)
        assert driver.run(line) == 0, line
    assert hazards > 0


def test_check_commands_sees_no_divergence_for_a_clean_run() -> None:
    _, out = predictions(DEFAULT)
    driver = DriverModel(API61)
    for number, (batch, (_, values)) in enumerate(zip(DEFAULT, out, strict=True)):
        result = BatchResult(commands=len(batch), failures=(), values=tuple(values))
        assert check_commands(number, batch, result, driver) == []
    assert driver.model(workload.POOL).total_pages() == 0


def test_check_commands_notices_a_changed_value() -> None:
    _, out = predictions(DEFAULT)
    driver = DriverModel(API61)
    for number, (batch, (_, values)) in enumerate(zip(DEFAULT[:2], out, strict=False)):
        if number == 1:
            values = [("pages", "1") if k == "pages" else (k, v) for k, v in values]
        result = BatchResult(commands=len(batch), failures=(), values=tuple(values))
        found = check_commands(number, batch, result, driver)
        assert [d.kind for d in found] == ([] if number == 0 else ["pages"])


def test_a_workload_without_partial_writes_runs_on_7_2() -> None:
    batches = make(partial_writes=False, ops=3000)
    driver, out = predictions(batches, api_for("7.2"))
    assert {r for results, _ in out for r in results} == {0}
    assert dict(out[-1][1])["pages"] == "0"
    assert dict(out[-1][1])["huge_class_size"] == "3625"


def test_partial_writes_are_refused_without_mapping_modes() -> None:
    # Why run.default_batches turns them off on such kernels.
    nomap = dataclasses.replace(API61, map_object=False)
    _, out = predictions(DEFAULT, nomap)
    results = [r for results, _ in out for r in results]
    lines = [line for b in DEFAULT for line in b]
    refused = {line.split()[0] for line, r in zip(lines, results, strict=True) if r != 0}
    assert refused == {"pwrite", "pverify"}


@pytest.mark.parametrize("ops", [0, 1, 2, 3])
def test_tiny_workloads(ops: int) -> None:
    batches = make(ops=ops, batch_ops=2)
    assert batches[0] == [f"create {workload.POOL}"]
    assert batches[-1][-1] == "stats"
    walk(batches)
    driver, out = predictions(batches)
    assert {r for results, _ in out for r in results} == {0}
    assert dict(out[-1][1])["pages"] == "0"


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**31 - 1),
    batch_ops=st.integers(min_value=1, max_value=400),
    ops=st.integers(min_value=0, max_value=800),
    partial_writes=st.booleans(),
)
def test_any_seed_is_well_formed(seed: int, batch_ops: int, ops: int, partial_writes: bool) -> None:
    batches = make(seed=seed, batch_ops=batch_ops, ops=ops, partial_writes=partial_writes)
    walk(batches)
    api = API61 if partial_writes else dataclasses.replace(API61, map_object=False)
    driver, out = predictions(batches, api)
    assert {r for results, _ in out for r in results} == {0}
    assert dict(out[-1][1])["pages"] == "0"
    assert driver.live(workload.POOL) == {}
