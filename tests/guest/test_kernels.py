"""`zskit kernels` against Debian's real archive: what it carries, runs and caches."""

from __future__ import annotations

import pytest

from pyharness.commands import cli, config, run
from pyharness.kernel.archive import archive_offers
from pyharness.kernel.identity import KernelId, series_key
from pyharness.kernel.provision import SOURCES, provision
from pyharness.progress import Progress


def test_the_archive_lists_the_series_zskit_runs_and_more(
    capsys: pytest.CaptureFixture[str],
) -> None:
    provision(KernelId("6.1"), Progress())  # cached by the other guest tests
    assert cli.main(["kernels", "--refresh"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()[1:] if line[:1].isdigit()}
    for series in ("6.1", "6.12", "7.2"):
        assert f"linux-source-{series}" not in rows[series]
        assert "distro, minimal, debug" in rows[series], rows[series]
    assert "bookworm" in rows["6.1"] and "distro" in rows["6.1"].split("debug", 1)[1]
    # A series outside zskit's table runs from the archive's suite with its newest version.
    known = {series for variant in SOURCES.values() for series in variant}
    for series, row in rows.items():
        assert (" via " in row) == (series not in known), row
    assert "(index fetched now)" in out


def test_a_series_outside_the_table_runs_from_the_archive(default_config: config.Config) -> None:
    """The newest series Debian's archive has beyond zskit's table: provisioned from its
    suite, its API read from its sources, the suite passing on its built-in zsmalloc."""
    offers, _ = archive_offers(Progress())
    known = {series for variant in SOURCES.values() for series in variant}
    beyond = sorted({o.series for o in offers} - known, key=series_key)
    if not beyond:
        pytest.skip("Debian's archive has no kernel series beyond zskit's table today")
    series = beyond[-1]
    cfg = default_config.with_overrides(kernel=series, allocator="builtin")
    result = run.run(cfg, Progress())
    assert result.passed, result.first_failure
    assert isinstance(result.info["operations"], int) and result.info["operations"] > 0
