"""Hypothesis searches operation sequences against a live 6.1 guest and the model.

Each example builds one batch (allocs, whole and partial writes in every
mapping mode, verifies, frees, compactions, lookups and stats) on a fresh
pool, runs it in the guest and checks it against the model. A divergence is
shrunk by hypothesis to a minimal sequence, saved as a replay file that
`zskit replay FILE` reruns, and reported with that path.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    MultipleResults,
    RuleBasedStateMachine,
    consumes,
    multiple,
    rule,
    run_state_machine_as_test,
)

from pyharness.check.driver import DriverModel, check_classes, check_commands
from pyharness.commands import config, run
from pyharness.guest.zstest import ZsTest
from pyharness.kernel.api import api_for
from pyharness.kmod.own import OwnAllocator
from pyharness.model import class_table, policy
from pyharness.paths import REPO
from pyharness.progress import Progress
from tests.guest.test_bug_injection import with_bug

pytestmark = pytest.mark.qemu

REPLAY = REPO / "build" / "replays" / "stateful.txt"
SEEDS = st.integers(0, 2**32 - 25)
# Any size, and sizes that fill a distinct class's slot exactly (size + 8-byte header) in
# upstream's or the own allocator's table, where an object's last byte ends its slot.
TABLES = (policy("6.1"), OwnAllocator().policy(api_for("6.1")))
EXACT_FIT = sorted({c.size - 8 for p in TABLES for c in class_table(p) if not c.huge})
SIZES = st.one_of(st.integers(1, 4096), st.sampled_from(EXACT_FIT))
_pools = itertools.count()


def save_replay(lines: list[str], path: Path = REPLAY) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# batch 0\n" + "".join(f"{line}\n" for line in lines))
    return path


def machine(
    zstest: ZsTest, replay: Path, new_driver: Callable[[], DriverModel]
) -> type[RuleBasedStateMachine]:
    """A state machine whose examples run as one batch each in the guest behind zstest."""

    class Machine(RuleBasedStateMachine):
        objects = Bundle("objects")

        def __init__(self) -> None:
            super().__init__()
            self.pool = f"hyp{next(_pools)}"
            self.lines = [f"create {self.pool}"]
            self.ids = itertools.count(1)
            self.seeds: dict[int, int] = {}
            self.sizes: dict[int, int] = {}

        def _range(self, oid: int, data: st.DataObject) -> tuple[int, int]:
            # Mostly inside the object, sometimes one byte past its end.
            size = self.sizes[oid]
            off = data.draw(st.integers(0, size), label="off")
            return off, data.draw(st.integers(1, size - off + 1), label="len")

        @rule(target=objects, size=SIZES, count=st.integers(1, 24), seed=SEEDS)
        def alloc(self, size: int, count: int, seed: int) -> MultipleResults[int]:
            # Runs of one size fill a zspage far enough for objects to span pages.
            ids = []
            for n in range(count):
                oid = next(self.ids)
                self.lines += [f"alloc {oid} {size}", f"write {oid} {seed + n}"]
                self.seeds[oid], self.sizes[oid] = seed + n, size
                ids.append(oid)
            return multiple(*ids)

        @rule(oid=objects)
        def verify(self, oid: int) -> None:
            self.lines.append(f"verify {oid} {self.seeds[oid]}")

        @rule()
        def verify_all(self) -> None:
            # Freed ids are verified too: the model predicts -ENOENT for them.
            self.lines += [f"verify {oid} {seed}" for oid, seed in self.seeds.items()]

        @rule(oid=objects, seed=SEEDS, data=st.data(), mode=st.sampled_from(["rw", "wo"]))
        def pwrite(self, oid: int, seed: int, data: st.DataObject, mode: str) -> None:
            off, length = self._range(oid, data)
            self.lines.append(f"pwrite {oid} {seed} {off} {length} {mode}")

        @rule(oid=objects, seed=SEEDS, data=st.data(), mode=st.sampled_from(["ro", "rw"]))
        def pverify(self, oid: int, seed: int, data: st.DataObject, mode: str) -> None:
            off, length = self._range(oid, data)
            self.lines.append(f"pverify {oid} {seed} {off} {length} {mode}")

        @rule(oid=consumes(objects))
        def free(self, oid: int) -> None:
            self.lines.append(f"free {oid}")

        @rule()
        def compact(self) -> None:
            self.lines.append("compact")

        @rule(size=st.integers(0, 5000))
        def lookup(self, size: int) -> None:
            self.lines.append(f"lookup {size}")

        @rule()
        def stats(self) -> None:
            self.lines.append("stats")

        def teardown(self) -> None:
            lines = [*self.lines, "stats"]
            driver = new_driver()
            try:
                result = zstest.batch(lines)
                found = check_commands(0, lines, result, driver)
                if not found:
                    found = check_classes(0, zstest.classes(self.pool), driver.model(self.pool))
            finally:
                zstest.batch([f"destroy {self.pool}"])
            if found:
                path = save_replay(lines, replay)
                raise AssertionError(f"{found[0]} (replay: zskit replay {path})")

    return Machine


# Reproducible in CI: a fixed search, and no example database carried between runs.
SETTINGS = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def test_operation_sequences_agree_with_the_model(
    zstest: ZsTest, new_driver: Callable[[], DriverModel]
) -> None:
    run_state_machine_as_test(machine(zstest, REPLAY, new_driver), settings=SETTINGS)


def test_a_planted_bug_is_shrunk_to_a_replay_that_fails(
    prepared: run.Prepared, default_config: config.Config, tmp_path: Path
) -> None:
    """Against a module that drops a spanning write's last byte, hypothesis must fail,
    shrink, and save a replay; the replay fails on that module and passes on upstream."""
    buggy = with_bug(prepared, "spanning-write-drops-last-byte", tmp_path)
    replay = tmp_path / "replay.txt"
    with (tmp_path / "session.log").open("w") as transcript:
        with run.boot(
            default_config, Progress(), buggy, tmp_path / "console.log", transcript
        ) as guest:
            with pytest.raises(AssertionError, match="replay: zskit replay"):
                upstream = lambda: DriverModel(api_for("6.1"))  # noqa: E731
                run_state_machine_as_test(
                    machine(ZsTest(guest), replay, upstream), settings=SETTINGS
                )
    batches = run.read_replay(replay)
    lines = [line for batch in batches for line in batch]
    # Shrunk: one run of allocations of one size, then verifies; nothing else left.
    assert len({line.split()[2] for line in lines if line.startswith("alloc")}) == 1, lines
    assert not [line for line in lines if line.split()[0] in ("pwrite", "free", "compact")]
    options = run.RunOptions(batches=batches)
    failed = run.run(default_config, Progress(), options, prepared=buggy)
    assert failed.first_failure is not None and failed.first_failure.kind == "data"
    assert run.run(default_config, Progress(), options, prepared=prepared).passed
