"""`zskit dev`: one warm guest for an editing session, a verdict on every edit.

It boots once, runs the suite, then watches what the run builds from: the templates
(kmod/, or $ZSKIT_TEMPLATES), the .config, and on a tree its mm/zsmalloc.c and every
header of the tree the allocator's last build read. An edit of a template or of
mm/zsmalloc.c renders and builds the modules again, unloads the old ones, sends the
new ones over the fast channel, loads them and runs the suite; one line gives the
verdict and the time from the edit. A change of anything else (.config, a header)
provisions again, as a run does, and boots afresh when the kernel changed. The guest
is booted afresh too after a crash or a timeout (reported as a run reports them), when
a module does not unload, and on every edit where it has no fast channel to carry the
modules. A failed build keeps the guest and its last modules, and gives no verdict.

The guest is this command's: QEMU dies with it, Ctrl-C included. Each verdict has its
results directory (results.json, batches.txt) under the session's, each boot its
console and session logs.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from ..guest import qemu
from ..guest.channel import UPLOADS
from ..guest.modules import ModuleError, load_modules, unload_modules
from ..guest.triage import find_crash
from ..guest.zstest import ZsTest
from ..kmod import build
from ..paths import REPO, templates_dir
from ..progress import Progress, StageError
from ..report import RunResult, new_results_dir, new_run
from .config import Config
from .run import Prepared, boot, check_batches, default_batches, prepare, prepare_modules, recorded

POLL_SECONDS = 0.1  # between looks at the watched files
Stamp = tuple[int, int] | None  # a file's mtime_ns and size; None: absent


def _stamp(path: Path) -> Stamp:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


@dataclass(frozen=True)
class Watch:
    """The files a verdict is built from, and their stamps when its round began."""

    module_inputs: frozenset[Path]  # an edit of these rebuilds only the modules
    stamps: dict[Path, Stamp]

    @classmethod
    def of(cls, config: Config, prepared: Prepared | None) -> Watch:
        module_inputs = {p for p in templates_dir().rglob("*") if p.is_file()}
        others = {Path(os.environ.get("KCONFIG_CONFIG", REPO / ".config"))}
        if config.tree is not None:
            module_inputs.add(config.tree / "mm" / "zsmalloc.c")
            if prepared is not None:
                kdir = prepared.kernel.kdir
                for name in prepared.sources.modules:
                    found = build.dependencies(prepared.sources.directory, name, kdir)
                    others.update(p for p in found if p.is_relative_to(config.tree))
        return cls(frozenset(module_inputs), {p: _stamp(p) for p in module_inputs | others})

    def since(self, earlier: Watch) -> Watch:
        """This watch with the stamps `earlier` took: an edit made during the round's
        build is a change still to act on."""
        stamps = {p: earlier.stamps.get(p, s) for p, s in self.stamps.items()}
        return Watch(self.module_inputs, stamps)

    def changed(self) -> list[Path]:
        return sorted(p for p, stamp in self.stamps.items() if _stamp(p) != stamp)

    def wait(self) -> list[Path]:
        """Block until a watched file changes; the changed files, once writes settle."""
        while not self.changed():
            time.sleep(POLL_SECONDS)
        time.sleep(POLL_SECONDS)  # an editor's save may be more than one write
        return self.changed()


def edit_time(paths: list[Path]) -> float:
    """When the newest of the changed files was written (now, for deleted ones)."""
    times = [s[0] / 1e9 for p in paths if (s := _stamp(p)) is not None]
    return max(times) if times else time.time()


@dataclass
class Session:
    """The warm guest, what it has loaded, and where the session's results go."""

    out: TextIO
    directory: Path
    guest: qemu.Guest | None = None
    transcript: TextIO | None = None  # the guest's shell session, open while it runs
    prepared: Prepared | None = None  # what the guest runs
    loaded: list[str] = field(default_factory=list)  # guest paths, in load order
    boots: int = 0
    verdicts: int = 0

    def say(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def close(self) -> None:
        if self.guest is not None:
            self.guest.close()
            self.guest = None
        if self.transcript is not None:
            self.transcript.close()
            self.transcript = None

    def _boot(self, config: Config, p: Progress, prepared: Prepared) -> qemu.Guest:
        self.close()
        self.boots += 1
        logs = self.directory / f"boot-{self.boots}"
        logs.mkdir(parents=True, exist_ok=True)
        self.transcript = (logs / "session.log").open("w")
        self.guest = boot(config, p, prepared, logs / "console.log", self.transcript)
        self.loaded = list(prepared.image.modules)
        if self.guest.data_channel is None:
            self.say("zskit dev: this guest has no fast channel: every edit boots afresh")
        return self.guest

    def _reload(self, p: Progress, prepared: Prepared) -> qemu.Guest | None:
        """The warm guest with the new modules in place of the old; None: boot afresh."""
        guest = self.guest
        if guest is None or guest.child is None or guest.data_channel is None:
            return None
        with p.stage("reload"):
            try:
                unload_modules(guest, self.loaded)
            except ModuleError as e:
                self.say(f"zskit dev: `{e.command}` failed ({e.output.strip()}): booting afresh")
                return None
            self.loaded = []
            paths = []
            for ko in prepared.built.modules:
                guest.data_channel.send_file(ko.name, ko.read_bytes())
                paths.append(f"{UPLOADS}/{ko.name}")
            try:
                load_modules(guest, paths)
            except ModuleError:
                unload_modules(guest, paths, check=False)  # no half-loaded set stays
                raise
            self.loaded = paths
        return guest

    def verdict(
        self, config: Config, p: Progress, prepared: Prepared, since: float | None, fresh: bool
    ) -> RunResult:
        """The new modules in a guest (warm unless `fresh`), the suite, and its verdict."""
        self.verdicts += 1
        directory = self.directory / f"verdict-{self.verdicts}"
        result = new_run(config.kernel_id, config.allocator, directory=directory)
        with recorded(result, p, "test"):
            guest = None if fresh else self._reload(p, prepared)
            guest = guest or self._boot(config, p, prepared)
            with p.stage("test"):
                fast = guest.data_channel is not None
                result.info["channel"] = "virtio-serial" if fast else "serial shell"
                check_batches(
                    ZsTest(guest),
                    default_batches(config, prepared.api, fast),
                    prepared.api,
                    result,
                    p,
                    prepared.sources.classes_file,
                    prepared.sources.policy,
                )
                crash = find_crash(guest.console_text())  # printed while no command waited
                if crash is not None:
                    raise qemu.GuestError("crash", crash.headline() + "\n" + crash.excerpt, crash)
        if self.guest is not None and self.guest.child is None:
            self.close()  # QEMU was killed with the failure: the next edit boots afresh
        self.prepared = prepared
        self.say(verdict_line(config, result, since))
        return result


def verdict_line(config: Config, result: RunResult, since: float | None) -> str:
    """PASS or FAIL, the time from the edit, and where it went."""
    took = f"edit to verdict {time.time() - since:.2f} s" if since else "first verdict"
    split = ", ".join(f"{k} {v:.2f} s" for k, v in result.timings.items() if k != "total")
    target = f"Linux {config.kernel_id.label} / {config.allocator}"
    case = result.first_failure
    if case is None:
        ops = result.info.get("operations", 0)
        return f"PASS: {target}: {ops} operations agree with the model ({took}: {split})"
    first = (case.failure or "").strip().splitlines()[0]
    return (
        f"FAIL: {target}: {case.name} ({case.kind}): {first} ({took}: {split})\n"
        f"  the whole report: {result.directory}/results.json"
    )


def _kernel(prepared: Prepared) -> tuple[str, Stamp]:
    return prepared.kernel.release, _stamp(prepared.kernel.boot_image)


def dev(
    make_config: Callable[[], Config],
    verbose: bool = False,
    results_dir: Path | None = None,
    refresh: bool = False,
    out: TextIO = sys.stdout,
) -> int:
    """The session, until interrupted (130). `make_config` reads the configuration as it
    is now (the .config, and the command line's choices over it); `refresh` refetches
    the kernel at the start."""
    # Ctrl-C ends the session even when it was started with SIGINT ignored, as a
    # shell without job control starts a background job (`make test &`).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    directory = results_dir or new_results_dir("dev")
    directory.mkdir(parents=True, exist_ok=True)
    session = Session(out, directory)
    session.say(f"zskit dev: results under {directory}; Ctrl-C ends the session")
    since: float | None = None
    provision_too = True  # at the start, and after a change of more than the modules' sources
    config = make_config()
    try:
        while True:
            p = Progress(verbose=verbose)
            started = Watch.of(config, session.prepared)
            try:
                if provision_too:
                    config = make_config()
                    prepared = prepare(config, p, refresh and session.prepared is None)
                else:
                    assert session.prepared is not None
                    prepared = prepare_modules(config, session.prepared.kernel, p)
            except StageError as e:
                kept = " (the guest keeps its last modules: no verdict)" if session.guest else ""
                session.say(f"zskit dev: {p.failed_stage or 'setup'} failed{kept}: {e}")
            else:
                old = session.prepared
                fresh = old is None or _kernel(old) != _kernel(prepared)
                session.verdict(config, p, prepared, since, fresh)
            watch = Watch.of(config, session.prepared).since(started)
            changed = watch.wait()
            since = edit_time(changed)
            provision_too = session.prepared is None or any(
                path not in watch.module_inputs for path in changed
            )
            shown = ", ".join(str(path) for path in changed[:3])
            session.say(f"zskit dev: changed: {shown}{' ...' if len(changed) > 3 else ''}")
    except KeyboardInterrupt:
        session.say(f"zskit dev: stopped after {session.verdicts} verdicts, {session.boots} boots")
        return 130
    finally:
        session.close()
