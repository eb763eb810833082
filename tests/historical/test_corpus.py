"""The historical-bug corpus: its shape, its patches, and (ZSKIT_HISTORICAL=1) the whole run.

Outside `make test` (pytest's testpaths are tests/unit and tests/guest): run it with
`ZSKIT_HISTORICAL=1 .venv/bin/python -m pytest -q tests/historical`. Without the variable the
whole-corpus run is skipped; the shape and patch tests need no kernel (the patch tests need
the pristine sources in the cache, and skip without them).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from pyharness.commands import config, selftest, validate
from pyharness.commands.validate.results import Check, Step
from pyharness.paths import cache_dir
from pyharness.progress import Progress
from tests.historical import corpus

# Measured on 2026-12-01 (README "Historical-bug score"): the entries caught today, and by what.
CAUGHT_TODAY = {"compacted-pages-accounting": "model"}
PLANNED_VARIANTS = {"distro", "minimal", "debug", "kcsan", "nocompaction", "faultinject"}


def _pristine(series: str) -> Path | None:
    """A pristine tree of the series in the cache: validate's files, else provisioning's."""
    cache = cache_dir()
    for pattern in (f"validate/{series}/*/tree", f"debian/{series}/*/linux-source-{series}"):
        for root in sorted(cache.glob(pattern)):
            if (root / corpus.ZSMALLOC).is_file():
                return root
    return None


def test_the_corpus_has_twelve_bugs_and_three_benign_changes() -> None:
    bugs = [e for e in corpus.ENTRIES if not e.benign]
    benign = [e for e in corpus.ENTRIES if e.benign]
    assert len(bugs) >= 12 and len(benign) >= 3
    assert len({e.name for e in corpus.ENTRIES}) == len(corpus.ENTRIES)
    for e in corpus.ENTRIES:
        assert e.series in ("6.1", "7.2"), e.name
        assert e.variant in PLANNED_VARIANTS, e.name
        assert e.replacements and e.subject and e.date and e.source and e.broke, e.name
        assert e.catches <= set(corpus.CHECKS), e.name
        assert bool(e.catches) != e.benign, f"{e.name}: a bug names its catching checks"
        assert all(r.old != r.new for r in e.replacements), e.name


@pytest.mark.parametrize("entry", corpus.ENTRIES, ids=lambda e: e.name)
def test_each_entry_applies_to_its_pristine_source(entry: corpus.Entry, tmp_path: Path) -> None:
    root = _pristine(entry.series)
    if root is None or not all((root / p).is_file() for p in entry.paths):
        pytest.skip(f"no pristine linux-source-{entry.series} in the cache (zskit provision)")
    mail = corpus.patch(entry, root, tmp_path / f"{entry.name}.patch")
    series = validate.read_series([mail])
    assert len(series.patches) == 1
    assert series.patches[0].touched() == list(entry.paths)


def test_a_replacement_that_no_longer_matches_is_refused() -> None:
    entry = corpus.by_name("compacted-pages-accounting")
    with pytest.raises(ValueError, match="matches 0 time"):
        corpus.apply(entry, "int main(void) { return 0; }\n", corpus.ZSMALLOC)


def _step(**checks: Check) -> Step:
    names = ("apply", "build", "checkpatch", "load", "suite", "zram", "zswap")
    full = {n: checks.get(n, Check("pass", f"{n} ok")) for n in names}
    return Step(1, full)


def test_the_runner_names_the_check_that_caught_a_bug() -> None:
    kasan = Check("fail", "suite fails, kernel crash (crash): kernel kasan: BUG: KASAN: uaf")
    step = _step(suite=kasan)
    step.suite_kind = "crash"
    assert selftest.classify(step) == ("KASAN", kasan.summary)
    model = _step(suite=Check("fail", "suite fails, the model disagrees (compacted): ..."))
    model.suite_kind = "compacted"
    assert selftest.classify(model) is not None
    assert selftest.classify(model)[0] == "model"  # type: ignore[index]
    leak = _step(suite=Check("fail", "suite fails (pages)"))
    leak.suite_kind = "pages"
    assert selftest.classify(leak)[0] == "leak"  # type: ignore[index]
    assert selftest.classify(_step(build=Check("fail", "does not build")))[0] == "build"  # type: ignore[index]
    # A guest that did not boot is no catch; checkpatch is never one (planted edits).
    assert selftest.classify(_step(load=Check("error", "the guest did not boot")))[0] == "error"  # type: ignore[index]
    assert selftest.classify(_step(checkpatch=Check("fail", "checkpatch: 1 errors"))) is None


def test_an_entry_whose_variant_zskit_cannot_build_is_not_run() -> None:
    entry = dataclasses.replace(corpus.ENTRIES[0], variant="faultinject")
    why = selftest.not_run_reason(entry, allow_provision=True)
    assert why is not None and f"needs variant {entry.variant}" in why


def test_the_runner_loads_the_corpus_by_path() -> None:
    module = selftest.load_corpus()
    assert [e.name for e in module.ENTRIES] == [e.name for e in corpus.ENTRIES]


@pytest.mark.qemu
@pytest.mark.skipif(
    os.environ.get("ZSKIT_HISTORICAL") != "1",
    reason="the whole corpus boots a kernel per entry (~15 min warm): set ZSKIT_HISTORICAL=1",
)
def test_the_whole_corpus(default_config: config.Config, tmp_path: Path) -> None:
    score, _ = selftest.historical(default_config, Progress(), results_dir=tmp_path)
    by_name = {o.name: o for o in score.outcomes}
    errors = [f"{o.name}: {o.why}" for o in score.outcomes if o.status == "error"]
    assert not errors, errors
    alarms = [f"{o.name}: {o.cell}: {o.why}" for o in score.outcomes if o.status == "false-alarm"]
    assert not alarms, alarms
    for name, by in CAUGHT_TODAY.items():
        assert by_name[name].status == "caught", f"{name} is no longer caught: {by_name[name].why}"
        assert by_name[name].by == by, f"{name}: caught by {by_name[name].by}, was {by}"
