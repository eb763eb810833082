"""The guest's shell scripts (pyharness/guest/scripts/*.sh): package data, valid shell."""

from __future__ import annotations

import importlib.resources
import subprocess

import pytest

from pyharness.guest import clients
from pyharness.guest.qemu import HEREDOC_END, guest_script, script_command

SCRIPTS = sorted(
    p.name
    for p in (importlib.resources.files("pyharness.guest") / "scripts").iterdir()
    if p.name.endswith(".sh")
)


def test_there_are_scripts() -> None:
    assert clients.ZRAM_SCRIPT in SCRIPTS


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_script_is_a_shell_file_that_says_what_it_does(name: str) -> None:
    text = guest_script(name)
    lines = text.splitlines()
    assert lines[0] == "#!/bin/sh" and lines[1].startswith("# "), "a header comment first"
    assert "Usage:" in text
    assert text.endswith("\n") and HEREDOC_END not in text  # it is sent in a heredoc
    # The guest's shell is busybox ash; parse the script with the same one.
    done = subprocess.run(["busybox", "sh", "-n"], input=text, text=True, capture_output=True)
    assert done.returncode == 0, done.stderr


def test_parameters_go_on_the_command_line_quoted() -> None:
    command = script_command("/tmp/zskit-x.sh", {"PAGES": 8, "FILE": "/tmp/a b"}, ("/m/z.ko",))
    assert command == "PAGES=8 FILE='/tmp/a b' sh /tmp/zskit-x.sh /m/z.ko 2>&1"
