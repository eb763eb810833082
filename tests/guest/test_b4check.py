"""`zskit b4-check` driven by b4 itself: b4 review's own check runner (b4.review.checks, as
its TUI calls it) pipes each message of a series on the 6.1 kernel's zsmalloc to the
command, in the tree it runs in, and parses what comes back."""

from __future__ import annotations

import email
import email.policy
import json
import sys
from email.message import EmailMessage
from pathlib import Path

import b4.review.checks as b4_checks
import pytest

from pyharness.commands import validate
from pyharness.commands.validate import SourceTree
from pyharness.paths import RESULTS
from tests.guest.test_validate import BUILD_BREAK, GOOD, upstream  # noqa: F401
from tests.unit.test_validate import git, make_series

pytestmark = pytest.mark.qemu

ZSKIT = str(Path(sys.executable).with_name("zskit"))
TOOLS = [f"zskit-{c}" for c in (*validate.CHECKS, "cost")]


def messages(directory: Path, tag: str) -> list[tuple[str, EmailMessage]]:
    """The series as b4 holds it: (message-id, message), cover first; `tag` makes the
    message-ids this test's own."""
    out = []
    for path in sorted(directory.glob("*.patch")):
        raw = path.read_bytes().replace(b"<", f"<{tag}.".encode())
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        out.append((str(msg["Message-ID"]).strip("<>"), msg))
    return out


def test_b4_runs_it_per_patch_and_per_series(
    upstream: SourceTree,  # noqa: F811
    tmp_path: Path,
) -> None:
    series = make_series(
        upstream.root, [GOOD[1], BUILD_BREAK], tmp_path / "s", cover=True, thread=True
    )
    topdir = str(tmp_path / "s-repo")  # the reviewer's tree, where b4 runs the command
    (cover, *patches) = messages(series, tmp_path.name)
    perpatch = f"{ZSKIT} b4-check patch --kernel 6.1 --no-perf"
    found = b4_checks.run_perpatch_checks(patches, [perpatch], topdir)
    first, second = (found[msgid] for msgid, _ in patches)
    assert [r["tool"] for r in first] == TOOLS == [r["tool"] for r in second]
    assert all(r["status"] == "pass" for r in first), first
    build = second[TOOLS.index("zskit-build")]
    assert build["status"] == "fail" and "6.1:" in build["summary"], build
    assert build["url"].startswith("file:///") and build["details"]
    # The series check reads what the per-patch checks found: the build of 2/2 failed.
    series_cmd = f"{ZSKIT} b4-check series --kernel 6.1 --no-perf"
    results = b4_checks.run_series_checks(cover, [series_cmd], topdir)
    by_tool = {r["tool"]: r for r in results}
    assert by_tool["zskit-build"]["status"] == "fail"
    assert by_tool["zskit-build"]["summary"].startswith("[2/2]")
    assert by_tool["zskit-apply"]["status"] == "pass"


def test_a_later_patch_finds_the_earlier_ones_in_the_thread_b4_tracks(
    upstream: SourceTree,  # noqa: F811
    tmp_path: Path,
) -> None:
    series = make_series(upstream.root, [GOOD[1], GOOD[0]], tmp_path / "s", cover=True, thread=True)
    topdir = tmp_path / "s-repo"
    tag = f"{tmp_path.name}.tracked"
    (cover, *patches) = messages(series, tag)
    thread = b"".join(b"From b4 Mon Sep 17 00:00:00 2001\n" + m.as_bytes() for _, m in patches)
    (tmp_path / "thread.mbox").write_bytes(thread)
    blob = git(topdir, "hash-object", "-w", str(tmp_path / "thread.mbox")).strip()
    tracking = tmp_path / "tracking.json"
    tracking.write_text(json.dumps({"series": {"thread-blob": blob, "revision": 1}}))
    env = {"B4_TRACKING_FILE": str(tracking)}
    cmd = f"{ZSKIT} b4-check patch --kernel 6.1 --no-perf"
    # Only patch 2 is checked: patch 1 comes from the thread, and the whole series is
    # validated at once, so that patch 1's check then needs no validation of its own.
    before = set(RESULTS.glob("validate-*"))
    found = b4_checks.run_perpatch_checks(patches[1:], [cmd], str(topdir), extra_env=env)
    (second,) = found.values()
    assert all(r["status"] == "pass" for r in second), second
    found = b4_checks.run_perpatch_checks(patches[:1], [cmd], str(topdir), extra_env=env)
    (first,) = found.values()
    assert all(r["status"] == "pass" for r in first), first
    assert len(set(RESULTS.glob("validate-*")) - before) == 1
