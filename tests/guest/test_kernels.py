"""`zskit kernels` against Debian's real archive: what it carries, runs and caches."""

from __future__ import annotations

import pytest

from pyharness.commands import cli
from pyharness.kernel.identity import KernelId
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
    # A series of the archive that zskit has no kernel source for is listed as such.
    known = {series for variant in SOURCES.values() for series in variant}
    for series, row in rows.items():
        assert ("not yet" in row) == (series not in known), row
    assert "(index fetched now)" in out
