"""What the user sees while a run goes on: stage lines, timings, and commands.

Every stage reports through one `Progress` object, so `-v` (commands and the
full console) and the per-stage timing table are handled in one place.
External commands run through `Progress.run`, which shows them in verbose
mode and turns a failure into a `StageError` that quotes the output.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO


class StageError(RuntimeError):
    """A stage failed in a way the user can act on; the message says how."""


class CommandError(StageError):
    """An external command failed; `output` holds all it printed."""

    def __init__(self, message: str, output: str) -> None:
        super().__init__(message)
        self.output = output


@dataclass
class Progress:
    verbose: bool = False
    out: TextIO = field(default_factory=lambda: sys.stderr)
    timings: dict[str, float] = field(default_factory=dict)
    completed: list[str] = field(default_factory=list)  # stages that ended without error
    failed_stage: str | None = None
    _stage: str = "zskit"

    def say(self, msg: str) -> None:
        # One write per line: the matrix's threads share stderr, and print() writes the
        # text and its newline separately, so their lines ran together.
        self.out.write(f"[{self._stage}] {msg}\n")
        self.out.flush()

    def detail(self, msg: str) -> None:
        """Shown only with -v."""
        if self.verbose:
            self.say(msg)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a stage; timings accumulate when a stage runs more than once."""
        outer, self._stage = self._stage, name
        start = time.monotonic()
        try:
            yield
        except BaseException:
            self.failed_stage = self.failed_stage or name
            raise
        else:
            if name not in self.completed:
                self.completed.append(name)
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.monotonic() - start
            self._stage = outer

    def run(
        self,
        cmd: Sequence[str | Path],
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        what: str,
        stream: bool = False,
        heartbeat: float | None = None,
    ) -> str:
        """Run a command, return its combined output, raise CommandError on failure.

        With `stream`, output lines are echoed as they come (long builds and
        downloads show progress); otherwise only with -v. With `heartbeat`, a
        quiet command says every that many seconds that it is still going,
        with its latest line (a kernel build prints thousands).
        """
        argv = [str(c) for c in cmd]
        self.detail("$ " + shlex.join(argv))
        try:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=dict(env) if env is not None else None,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
            )
        except FileNotFoundError as e:
            raise StageError(
                f"{what}: {argv[0]} is not installed; run `make setup` (or `make qemu-test`, "
                "which installs what it needs)"
            ) from e
        lines: list[str] = []
        assert proc.stdout is not None
        start = last_beat = time.monotonic()
        for line in proc.stdout:
            lines.append(line)
            if stream or self.verbose:
                print("    " + line.rstrip("\n"), file=self.out, flush=True)
            elif heartbeat is not None and time.monotonic() - last_beat >= heartbeat:
                last_beat = time.monotonic()
                self.say(
                    f"{what}: {last_beat - start:.0f} s, {len(lines)} lines; {line.strip()[:100]}"
                )
        rc = proc.wait()
        output = "".join(lines)
        if rc != 0:
            tail = "".join(lines[-25:]).rstrip()
            raise CommandError(f"{what} failed (exit {rc}): {shlex.join(argv)}\n{tail}", output)
        return output

    def summary(self) -> str:
        parts = [f"{name} {secs:.1f}s" for name, secs in self.timings.items()]
        return "timings: " + ", ".join(parts)
