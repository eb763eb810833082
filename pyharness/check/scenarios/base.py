"""What every scenario is made of: its bounds, its context in the guest, its outcome."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ...guest.qemu import Guest
from ...guest.zstest import ZsTest
from ...kernel.api import KernelApi
from ...model import Policy
from ...progress import Progress, StageError


class ScenarioError(StageError):
    """A scenario cannot run as asked (parameters, kernel options)."""


@dataclass(frozen=True)
class Params:
    """The bounds of one scenario run."""

    operations: int  # at most this many operations (a scenario's own unit, see `unit`)
    seconds: int  # deadline of its longest step in the guest
    cpus: int  # CPUs it spreads over (at most the guest's)
    repeat: int = 1  # rounds, each a fresh pool


@dataclass
class Context:
    guest: Guest
    zstest: ZsTest
    api: KernelApi
    policy: Policy | None  # the allocator's model; None: the kernel's upstream
    config: Callable[[str], str | None]  # the kernel's CONFIG_<option>
    progress: Progress
    # The run's checker for predictable batches: the first divergence's text, or None.
    check: Callable[[list[list[str]]], str | None]


@dataclass
class Outcome:
    failure: str | None = None
    kind: str = "scenario"  # the failure's kind: data, leak, errno, model, cpus...
    counts: dict[str, object] = field(default_factory=dict)  # what it did: ops, compactions


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # map-vs-compact, free-storm, pressure, zram-swap, page-ends, fault, lifecycle
    summary: str
    run: Callable[[Context, Params], Outcome]
    operations: int  # default bound
    seconds: int  # default deadline
    unit: str = "operations"
    needs: Mapping[str, str] = field(default_factory=dict)  # option -> value, e.g. SWAP: y
    boot_args: tuple[str, ...] = ()  # kernel arguments the run adds when it has the scenario
    max_operations: int = 10_000_000


SCENARIOS: dict[str, Scenario] = {}


def register(scenario: Scenario) -> Scenario:
    SCENARIOS[scenario.name] = scenario
    return scenario


def find(name: str) -> Scenario:
    if name not in SCENARIOS:
        raise ScenarioError(
            f"unknown scenario {name!r}; known scenarios: {', '.join(sorted(SCENARIOS))} "
            "(`zskit scenarios` lists them)"
        )
    return SCENARIOS[name]


def params_for(
    scenario: Scenario,
    guest_cpus: int,
    operations: int | None = None,
    seconds: int | None = None,
    cpus: int | None = None,
    repeat: int = 1,
) -> Params:
    """The scenario's bounds, the defaults filled in; out-of-range values are refused."""
    ops = scenario.operations if operations is None else operations
    secs = scenario.seconds if seconds is None else seconds
    want_cpus = guest_cpus if cpus is None else cpus
    if not 1 <= ops <= scenario.max_operations:
        raise ScenarioError(
            f"scenario {scenario.name}: {ops} {scenario.unit} is out of range "
            f"(1..{scenario.max_operations})"
        )
    if not 1 <= secs <= 600:
        raise ScenarioError(f"scenario {scenario.name}: a deadline of {secs} s is out of 1..600")
    if not 1 <= want_cpus <= guest_cpus:
        raise ScenarioError(
            f"scenario {scenario.name}: {want_cpus} CPUs asked, the guest has {guest_cpus} "
            "(raise QEMU_CPUS, or ask for fewer)"
        )
    if repeat < 1:
        raise ScenarioError(f"scenario {scenario.name}: repeat must be at least 1")
    return Params(ops, secs, want_cpus, repeat)


def missing_options(scenario: Scenario, config: Callable[[str], str | None]) -> list[str]:
    """`CONFIG_X=y (kernel has n)` for each option the scenario needs and the kernel lacks."""
    return [
        f"CONFIG_{name}={value} (this kernel has {config(name) or 'n'})"
        for name, value in scenario.needs.items()
        if (config(name) or "n") != value
    ]
