"""`zskit b4-check` on input it must refuse, answered as b4 reads answers: a JSON array
with a failed result saying why (no kernel is needed to refuse)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pyharness.commands import b4check
from pyharness.commands.config import Config
from pyharness.commands.validate import SourceTree
from pyharness.progress import Progress
from tests.unit.test_validate import HEADER_EDIT, RENAME, make_series, toy  # noqa: F401

KEYS = {"tool", "status", "summary", "url", "details"}


def answer(mode: str, raw: bytes, config: Config) -> list[dict[str, str]]:
    results = b4check.check(mode, raw, config, Progress())
    json.dumps(results)  # what b4 parses
    assert results and all(set(r) == KEYS for r in results), results
    return results


@pytest.mark.usefixtures("isolated")
@pytest.mark.parametrize(
    ("raw", "said"),
    [
        (b"", "standard input is empty"),
        (b"just some words\n", "no Subject: or no Message-ID:"),
        (b"Subject: hello\n\nno message id\n", "no Subject: or no Message-ID:"),
    ],
)
def test_what_is_not_a_mail_is_refused(raw: bytes, said: str, default_config: Config) -> None:
    for mode in ("patch", "series"):
        (r,) = answer(mode, raw, default_config)
        assert r["status"] == "fail" and said in r["summary"], r


@pytest.mark.usefixtures("isolated")
def test_a_cover_letter_is_no_patch_and_no_series_alone(
    toy: SourceTree,  # noqa: F811
    tmp_path: Path,
    default_config: Config,
) -> None:
    series = make_series(toy.root, [RENAME, HEADER_EDIT], tmp_path / "s", cover=True, thread=True)
    cover, first, second = sorted(series.glob("*.patch"))
    (r,) = answer("patch", cover.read_bytes(), default_config)
    assert r["status"] == "fail" and "holds no diff: a per-patch check takes" in r["summary"]
    (r,) = answer("series", cover.read_bytes(), default_config)
    assert r["status"] == "fail" and "a cover letter without its series" in r["summary"]
    # Patch 2 before patch 1 was ever given, and no thread from b4: it cannot be applied.
    (r,) = answer("patch", second.read_bytes(), default_config)
    assert r["status"] == "fail" and "lacks patch(es) 1 of 2" in r["summary"], r
    # Only patch 2 reached the store, so the series still lacks one.
    (r,) = answer("series", cover.read_bytes(), default_config)
    assert r["status"] == "fail" and "lacks patch(es) 1 of 2" in r["summary"], r


@pytest.mark.usefixtures("isolated")
def test_the_command_answers_json_on_stdout_and_fails_with_status_1(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pyharness.commands.cli", "b4-check", "patch"],
        input=b"not a mail",
        capture_output=True,
    )
    assert proc.returncode == 1, proc.stderr
    (r,) = json.loads(proc.stdout)
    assert r["tool"] == "zskit" and r["status"] == "fail"
