"""Tests for pyharness.workload: deterministic zstest batches generated from a seed."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyharness import workload
from pyharness.check import DriverModel, check_commands
from pyharness.guest import MAX_BATCH_BYTES, BatchResult
from pyharness.model import policy
from pyharness.workload import Workload

# The defaults of the repository's Kconfig: WORKLOAD_OPS, WORKLOAD_BATCH, WORKLOAD_SEED.
OPS, BATCH, SEED = 6000, 1000, 1


def make(seed: int = SEED, batch_ops: int = BATCH, ops: int = OPS) -> list[list[str]]:
    return Workload(seed=seed, batch_ops=batch_ops).batches(ops)


DEFAULT = make()


def walk(batches: list[list[str]]) -> None:
    """Replay the batches, asserting the id discipline command by command."""
    live: dict[int, int] = {}  # id -> seed written
    ever: set[int] = set()
    for number, batch in enumerate(batches):
        for line in batch:
            verb, *args = line.split(" ")
            if verb == "alloc":
                oid, size = int(args[0]), int(args[1])
                assert oid not in live, f"batch {number}: id {oid} reused while live"
                assert oid not in ever, f"batch {number}: id {oid} reused"
                assert 1 <= size <= 4096
                live[oid] = -1
                ever.add(oid)
            elif verb == "write":
                oid = int(args[0])
                assert oid in live, f"batch {number}: write of dead id {oid}"
                live[oid] = int(args[1])
            elif verb == "verify":
                oid = int(args[0])
                assert oid in live, f"batch {number}: verify of dead id {oid}"
                assert live[oid] == int(args[1]), f"batch {number}: verify with a wrong seed"
            elif verb == "free":
                oid = int(args[0])
                assert oid in live, f"batch {number}: free of dead id {oid}"
                del live[oid]
            else:
                assert line in (f"create {workload.POOL}", "stats"), line
    assert live == {}


def test_same_seed_same_batches() -> None:
    assert make() == DEFAULT
    assert make(seed=7, batch_ops=50, ops=500) == make(seed=7, batch_ops=50, ops=500)


def test_different_seeds_differ() -> None:
    assert make(seed=2) != DEFAULT
    assert make(seed=7, batch_ops=50, ops=500) != make(seed=8, batch_ops=50, ops=500)


def test_first_batch_creates_the_pool() -> None:
    assert DEFAULT[0] == [f"create {workload.POOL}"]
    assert workload.POOL == "zt0"
    assert sum(line.startswith("create ") for batch in DEFAULT for line in batch) == 1


def test_every_later_batch_ends_with_stats() -> None:
    assert len(DEFAULT) > 2
    for batch in DEFAULT[1:]:
        assert batch[-1] == "stats"
        assert "stats" not in batch[:-1]


def test_batch_sizes() -> None:
    middle = DEFAULT[1:-1]
    # About `ops` commands in batches of about `batch_ops` (an op is one or two lines).
    assert OPS <= sum(len(b) - 1 for b in middle) <= OPS + 1
    for batch in middle:
        assert 1 < len(batch) <= BATCH + 2
    for batch in DEFAULT:
        assert sum(len(line) + 1 for line in batch) <= MAX_BATCH_BYTES
        assert all(len(line.encode()) < 128 for line in batch)


def test_id_discipline_and_sizes() -> None:
    walk(DEFAULT)


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
    verifies = [line for line in drain if line.startswith("verify ")]
    frees = [line for line in drain if line.startswith("free ")]
    assert sorted(verifies) == sorted(f"verify {oid} {seed}" for oid, seed in live.items())
    assert sorted(frees) == sorted(f"free {oid}" for oid in live)
    assert len(drain) == 2 * len(live) + 1
    assert drain[-1] == "stats"


def test_driver_model_accepts_every_command_and_ends_empty() -> None:
    driver = DriverModel(policy("6.1"))
    results = [driver.run(line) for batch in DEFAULT for line in batch]
    assert set(results) == {0}
    assert driver.model(workload.POOL).total_pages() == 0


def test_check_commands_sees_no_divergence_for_a_clean_run() -> None:
    driver = DriverModel(policy("6.1"))
    for number, batch in enumerate(DEFAULT):
        result = BatchResult(commands=len(batch), failures=(), values=())
        assert check_commands(number, batch, result, driver) == []
    assert driver.model(workload.POOL).total_pages() == 0


def test_pool_grows_between_batches() -> None:
    driver = DriverModel(policy("6.1"))
    peak = 0
    for batch in DEFAULT[:-1]:
        for line in batch:
            assert driver.run(line) == 0
        peak = max(peak, driver.model(workload.POOL).total_pages())
    assert peak > 50
    for line in DEFAULT[-1]:
        assert driver.run(line) == 0
    assert driver.model(workload.POOL).total_pages() == 0


@pytest.mark.parametrize("ops", [0, 1, 2, 3])
def test_tiny_workloads(ops: int) -> None:
    batches = make(ops=ops, batch_ops=2)
    assert batches[0] == [f"create {workload.POOL}"]
    assert batches[-1][-1] == "stats"
    walk(batches)
    driver = DriverModel(policy("6.1"))
    assert {driver.run(line) for b in batches for line in b} == {0}
    assert driver.model(workload.POOL).total_pages() == 0


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**31 - 1),
    batch_ops=st.integers(min_value=1, max_value=200),
    ops=st.integers(min_value=0, max_value=600),
)
def test_any_seed_is_well_formed(seed: int, batch_ops: int, ops: int) -> None:
    batches = make(seed=seed, batch_ops=batch_ops, ops=ops)
    walk(batches)
    driver = DriverModel(policy("6.1"))
    assert {driver.run(line) for b in batches for line in b} == {0}
    assert driver.model(workload.POOL).total_pages() == 0
