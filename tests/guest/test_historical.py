"""A fast subset of the historical-bug corpus, through `zskit selftest historical`.

Two planted upstream bugs and one benign upstream change, all on Debian's 6.1 kernel (the
fastest: no source-built kernel needed): the zs_compact() accounting bug, which the model
catches; zram's writeback return value, a zram series whose patched zram.ko the zram round
trip's writeback to a ramdisk catches; and a comment fix, which must pass. The whole corpus runs
outside `make test` (tests/historical, ZSKIT_HISTORICAL=1). Each entry is a `zskit validate`
of a one-patch series: 105 s warm for the three (250 s with the host at load 12).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pyharness.commands import config, selftest
from pyharness.progress import Progress

pytestmark = pytest.mark.qemu

# entry -> the check that must catch it; None: a benign change, which must pass.
SUBSET: dict[str, str | None] = {
    "compacted-pages-accounting": "model",
    "zram-writeback-returns-zero": "zram",
    "benign-comment-trade-off": None,
}


def test_a_subset_of_the_corpus(default_config: config.Config, tmp_path: Path) -> None:
    score, directory = selftest.historical(
        default_config, Progress(), only=list(SUBSET), results_dir=tmp_path
    )
    assert (directory / "results.json").is_file()
    for outcome in score.outcomes:
        want = SUBSET[outcome.name]
        if want is None:
            assert outcome.status == "pass", f"{outcome.name}: {outcome.cell}: {outcome.why}"
        else:
            assert outcome.status == "caught", f"{outcome.name} went unnoticed: {outcome.why}"
            assert outcome.by == want, f"{outcome.name}: caught by {outcome.by}: {outcome.why}"
    lines = score.lines()
    assert lines[0].startswith("caught ") and lines[1] == "false alarms 0 of 1"
