"""`zskit bench loop`: the inner loop's figures, each over the fast channel and over the
serial shell side by side in one run, so the ratio is measured on this machine.

Each figure is the wall time of the zskit command a developer types, started as its
own process: a warm `zskit run` of the default target (`make qemu-test`: both suites),
`zskit dev`'s edit-to-verdict after an edit of kmod/zsmalloc.c.j2 (a copy of the
templates) and of a tree's mm/zsmalloc.c (the test tree `make test` leaves in the cache,
restored after), and a million checked operations at the default churn share and at
98%. Results: bench.json and a table (bench.md) in build/results/bench-loop-<stamp>/.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ...paths import REPO, cache_dir
from ...progress import Progress, StageError
from ...report import new_results_dir

TRANSPORTS = ("auto", "serial")
TARGETS = {"qemu-test": 6.0, "dev-template": 3.0, "dev-tree": 3.0, "1M-default": 30.0}
TARGETS["1M-churn98"] = 15.0
MILLION = ["--no-baseline", "--ops", "1000000"]
EDIT_MARK = "/* zskit bench: an edit */\n"
VERDICT = re.compile(r"^(PASS|FAIL).*edit to verdict ([\d.]+) s")
DEADLINE = 900.0  # any one command, under TCG


@dataclass
class Figure:
    name: str
    transport: str
    seconds: list[float]  # each repeat
    verdicts: list[str]  # PASS or FAIL of each repeat

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def _zskit(args: Sequence[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    """Wall seconds of one `zskit` command, and its verdict (PASS or FAIL)."""
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pyharness.commands.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    seconds = time.monotonic() - start
    verdict = "PASS" if proc.returncode == 0 else "FAIL"
    if proc.returncode not in (0, 1):
        raise StageError(f"zskit {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return seconds, verdict


def _edits(dev_args: Sequence[str], edited: Path, repeats: int, env: dict[str, str]) -> Figure:
    """`zskit dev` started, then `repeats` edits of one file: each one's edit-to-verdict."""
    transport = dev_args[dev_args.index("--transport") + 1]
    name = "dev-template" if edited.suffix == ".j2" else "dev-tree"
    original = edited.read_text()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyharness.commands.cli", "dev", *dev_args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    fd, pending = proc.stdout.fileno(), ""

    def verdict_line() -> str:
        nonlocal pending
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            while "\n" in pending:
                line, pending = pending.split("\n", 1)
                if line.startswith(("PASS", "FAIL")):
                    return line
            if select.select([fd], [], [], 1.0)[0]:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                pending += chunk.decode(errors="replace")
        raise StageError(f"zskit dev {' '.join(dev_args)} gave no verdict")

    figure = Figure(name, transport, [], [])
    try:
        verdict_line()  # the first, after the boot
        for n in range(repeats):
            edited.write_text(original + EDIT_MARK * (n + 1))
            line = verdict_line()
            m = VERDICT.match(line)
            if m is None:
                raise StageError(f"zskit dev: a verdict without its time: {line}")
            figure.seconds.append(float(m[2]))
            figure.verdicts.append(m[1])
    finally:
        edited.write_text(original)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        finally:
            proc.kill()
    return figure


def loop(p: Progress, repeats: int = 3, million: bool = True) -> Path:
    """Every figure, fast channel and serial shell in turn; the results directory."""
    directory = new_results_dir("bench-loop")
    templates = directory / "kmod"
    shutil.copytree(REPO / "kmod", templates)
    env = {**os.environ, "ZSKIT_TEMPLATES": str(templates)}
    tree = cache_dir() / "test-trees" / "linux-6.1"
    figures: list[Figure] = []
    notes: list[str] = []
    _zskit(["run"], env)  # warms the build; its time is not a figure
    for transport in TRANSPORTS:
        p.say(f"warm `zskit run` ({transport}), {repeats} times")
        runs = [_zskit(["run", "--transport", transport], env) for _ in range(repeats)]
        figures.append(Figure("qemu-test", transport, *map(list, zip(*runs, strict=True))))
    for transport in TRANSPORTS:
        p.say(f"`zskit dev` after edits of zsmalloc.c.j2 ({transport})")
        dev = ["--allocator", "own", "--transport", transport]
        figures.append(_edits(dev, templates / "zsmalloc.c.j2", repeats, env))
    if (tree / "mm" / "zsmalloc.c").is_file():
        for transport in TRANSPORTS:
            p.say(f"`zskit dev --tree {tree}` after edits of mm/zsmalloc.c ({transport})")
            dev = ["--tree", str(tree), "--allocator", "upstream", "--transport", transport]
            figures.append(_edits(dev, tree / "mm" / "zsmalloc.c", repeats, env))
    else:
        notes.append(f"dev-tree: no test tree at {tree} (`make test` makes it)")
    if million:
        _zskit(["run", "--no-baseline", "--ops", "100"], env)  # the edits' rebuild, not timed
        for name, churn in (("1M-default", None), ("1M-churn98", "98")):
            for transport in TRANSPORTS:
                p.say(f"{name} ({transport})")
                args = ["run", *MILLION, "--transport", transport]
                args += ["--churn", churn] if churn else []
                seconds, verdict = _zskit(args, env)
                figures.append(Figure(name, transport, [seconds], [verdict]))
    _write(directory, figures, notes)
    return directory


def _write(directory: Path, figures: list[Figure], notes: list[str]) -> None:
    doc = {
        "figures": [{**asdict(f), "median": round(f.median, 2)} for f in figures],
        "targets": TARGETS,
        "notes": notes,
    }
    (directory / "bench.json").write_text(json.dumps(doc, indent=2) + "\n")
    (directory / "bench.md").write_text(table(figures) + "".join(f"\n{n}" for n in notes) + "\n")


def table(figures: list[Figure]) -> str:
    """Per figure: the fast channel's median, the serial shell's, their ratio, the target."""
    by = {(f.name, f.transport): f for f in figures}
    rows = [
        "| figure | fast channel (s) | serial shell (s) | serial / fast | target (s) | verdicts |",
        "|---|---|---|---|---|---|",
    ]
    for name, target in TARGETS.items():
        fast, serial = by.get((name, "auto")), by.get((name, "serial"))
        if fast is None or serial is None:
            continue
        verdicts = ", ".join(sorted(set(fast.verdicts + serial.verdicts)))
        ratio = serial.median / fast.median
        rows.append(
            f"| {name} | {fast.median:.2f} | {serial.median:.2f} | {ratio:.1f}x | {target:g} "
            f"| {verdicts} |"
        )
    return "\n".join(rows) + "\n"
