"""Every decision of the reference model must show in what validate's suite checks.

Each mutant of tests/unit/mutants.py changes one decision of the model; the real model
plays the kernel, and the checker's own functions compare the mutant with it over the
suite workload. An observable mutant that survives means the suite never provokes that
decision: grow the workload's probes (pyharness/check/workload.py). A mutant listed as
unobservable must survive, so its reason stays true.
"""

from __future__ import annotations

import errno

import pytest

from pyharness.check import workload
from pyharness.check.driver import VERBS
from pyharness.check.workload import Workload

from . import mutants
from .mutants import MUTANTS, TARGETS, Mutant, kernel_answers, suite_batches, verdict

CASES = [(m, t) for m in MUTANTS for t in m.targets]
OBSERVABLE = [
    pytest.param(
        (m, t),
        marks=[pytest.mark.xfail(strict=True, reason=m.not_provoked_why)]
        if t in m.not_provoked
        else [],
        id=f"{m.name}@{t}",
    )
    for m, t in CASES
    if m.unobservable is None
]
EQUIVALENT = [(m, t) for m, t in CASES if m.unobservable is not None]
# The suite before the probes (6.1: 3148 commands) plus at most this many.
PROBE_BUDGET = 4000


def case_id(case: tuple[Mutant, str]) -> str:
    return f"{case[0].name}@{case[1]}"


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_the_real_model_agrees_with_itself(target: str) -> None:
    # The harness itself: an unedited copy of the model must not diverge.
    same = Mutant("unedited", "-", "-", (target,))
    assert verdict(same, target).divergence is None


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_the_suite_succeeds_on_the_real_model(target: str) -> None:
    # Every command succeeds but the refusals the probes ask for on purpose: `where` of an
    # object that spans pages, `lookup` of what is no object size.
    answers = kernel_answers(target)
    failures = [f for r in answers.results for f in r.failures]
    asked = {"where", "lookup"}
    assert [f for f in failures if f.verb not in asked or f.errno != -errno.EINVAL] == []
    assert any(f.verb == "where" for f in failures)


def test_mutant_names_are_unique_and_targets_known() -> None:
    names = [m.name for m in MUTANTS]
    assert len(names) == len(set(names))
    assert all(t in TARGETS for m in MUTANTS for t in m.targets)
    assert all(m.edits or m.policy_change for m in MUTANTS)


@pytest.mark.parametrize("case", OBSERVABLE)
def test_mutant_is_killed(case: tuple[Mutant, str]) -> None:
    mutant, target = case
    got = verdict(mutant, target)
    assert got.killed, (
        f"model mutant {mutant.name} ({mutant.decision}: {mutant.change}) survives "
        f"validate's suite on {target}: {got.commands} commands never tell it apart"
    )


@pytest.mark.parametrize("case", EQUIVALENT, ids=case_id)
def test_unobservable_mutant_survives(case: tuple[Mutant, str]) -> None:
    mutant, target = case
    got = verdict(mutant, target)
    assert not got.killed, (
        f"{mutant.name} is killed on {target} ({got.divergence}): drop its reason"
    )


# ------------------------------------------------------------------------ the probes


def test_probes_are_deterministic_from_the_seed() -> None:
    assert Workload(seed=1, batch_ops=1000).probes() == Workload(seed=1, batch_ops=1000).probes()
    assert Workload(seed=1, batch_ops=1000).probes() != Workload(seed=2, batch_ops=1000).probes()


def test_probes_speak_the_existing_protocol() -> None:
    for lookups in (False, True):
        lines = [
            line for b in Workload(seed=1, batch_ops=1, lookups=lookups).probes() for line in b
        ]
        verbs = {line.split()[0] for line in lines}
        assert verbs <= set(VERBS) - {"stress", "bench", "create", "destroy", "use"}
        assert ("lookup" in verbs) == lookups
        assert all(len(line.encode()) < 128 for line in lines)


def test_probes_end_with_stats_and_leave_the_pool_empty() -> None:
    answers = kernel_answers("6.1")
    probes = Workload(seed=mutants.SEED_FOR_TESTS, batch_ops=1000).probes()
    assert all(b[-1] == "stats" for b in probes)
    assert len(answers.batches) > len(probes)
    pages = [v for k, v in answers.results[-1].values if k == "pages"]
    assert pages == ["0"]
    raws = [v for k, v in answers.results[-1].values if k == "raw"]
    assert raws == ["-22", "-22", "0", "-22"]  # 6.1: size 0 and oversize are -EINVAL


def test_probe_ids_are_fresh() -> None:
    w = Workload(seed=1, batch_ops=1000)
    batches = w.suite(600)
    ids = [int(line.split()[1]) for b in batches for line in b if line.startswith("alloc ")]
    assert len(ids) == len(set(ids))
    assert max(ids) < workload.CHURN_BASE


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_the_probes_cost_a_bounded_number_of_commands(target: str) -> None:
    api = TARGETS[target].api
    before = Workload(seed=1, batch_ops=1000, partial_writes=api.map_object).batches(6000)
    after = suite_batches(api)
    assert after[: len(before)] == before
    added = sum(map(len, after)) - sum(map(len, before))
    assert 0 < added <= PROBE_BUDGET
