"""Scenarios that make bugs happen: concurrency, pressure, faults, edge placements.

A scenario runs in the booted guest after the run's workload (`zskit run
--scenario NAME`), bounded by an operation count and a deadline, and says on
how many CPUs it ran. Where the model can predict the outcome, a scenario's
batches go through the run's checker (`Context.check`); where it cannot
(threads, injected faults), it checks what must hold anyway: data verified
after every step, errors of the kind the fault allows, and the pool back to
zero pages with nothing leaked once everything is freed.

Each scenario module registers itself in SCENARIOS; `needs` names the kernel
options it requires, so a kernel without them gets a clear refusal before
anything runs.
"""

from __future__ import annotations

# Each scenario module registers itself in SCENARIOS when imported.
from . import (
    deferred,
    fault,
    free_storm,
    lifecycle,
    map_compact,
    page_ends,
    pressure,
    zone_migration,
    zram_swap,
    zram_sysfs,
)
from .base import (
    SCENARIOS,
    Context,
    Outcome,
    Params,
    Scenario,
    ScenarioError,
    find,
    missing_options,
    params_for,
)

__all__ = [
    "SCENARIOS",
    "Context",
    "Outcome",
    "Params",
    "Scenario",
    "ScenarioError",
    "deferred",
    "fault",
    "find",
    "free_storm",
    "lifecycle",
    "map_compact",
    "missing_options",
    "page_ends",
    "params_for",
    "pressure",
    "zone_migration",
    "zram_swap",
    "zram_sysfs",
]
