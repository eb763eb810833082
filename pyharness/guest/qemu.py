"""Boot a kernel under QEMU and drive a shell on its serial console.

Every wait has a deadline. When a deadline passes, or the guest crashes,
QEMU is killed and the error carries the kind of failure and the last
console lines. QEMU never outlives the harness: it is killed in `close()`
(Ctrl-C included) and, should the harness itself be killed, by the
parent-death signal set in the child before exec.

The guest has two serial ports. The first is the kernel console, written by
QEMU straight to a file: kernel messages can never interleave with command
output, and the log survives whatever happens to the harness. The second
carries a shell, driven with pexpect over QEMU's stdio: /init prints a
ready marker there and starts the shell; the harness turns echo off and
reads each command's exit status from a marker line carrying a per-boot
nonce, so output can never be mistaken for it.
"""

from __future__ import annotations

import ctypes
import dataclasses
import importlib.resources
import json
import re
import secrets
import shlex
import signal
import subprocess
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TextIO

import pexpect

from ..paths import QEMU_DIR
from ..progress import Progress, StageError
from .triage import Crash, clean_lines, find_crash


class DataChannel(Protocol):
    """A way for bulk data past the shell (channel.FastChannel, the virtio-serial port)."""

    send_seconds: float  # of the last request

    def request(
        self, header: str, body: bytes = b"", timeout: float | None = None, fatal: bool = True
    ) -> tuple[bytes | None, int]:
        """The answer's bytes, or None and the errno the guest reported."""
        ...

    def send(
        self, header: str, body: bytes = b"", timeout: float | None = None, fatal: bool = True
    ) -> object:
        """A request's first half: what `receive` takes to read its answer, in order."""
        ...

    def receive(self, wait: object) -> tuple[bytes | None, int]: ...

    def send_file(self, name: str, data: bytes) -> None:
        """Put a file in the guest's upload directory."""
        ...

    def close(self) -> None: ...


PR_SET_PDEATHSIG = 1
# KCSAN off at boot (armed for the modules under test once they load), and a watchpoint
# every 500 accesses instead of its default 4000: in the same 20 s the scenarios set 6x
# as many (map-vs-compact + free-storm on 6.1: 454,776 against 73,900), on fewer operations.
# No panic on a report: one of a known race of unmodified zsmalloc (triage.KNOWN_RACES)
# must not end the run; triage fails it on every other report (and WARN) it reads.
KCSAN_ARGS = ("kcsan.early_enable=0", "kcsan.skip_watch=500", "panic_on_warn=0")
HEREDOC_END = "ZSKIT_EOF"  # ends every file the harness writes through the shell


def guest_script(name: str) -> str:
    """The text of scripts/<name>, a shell script of this package that runs in the guest."""
    return (importlib.resources.files("pyharness.guest") / "scripts" / name).read_text()


def script_command(path: str, env: Mapping[str, object], args: tuple[str, ...] = ()) -> str:
    """`K=V ... sh PATH ARGS 2>&1`: a guest script run with its parameters (values quoted)."""
    assigns = [f"{k}={shlex.quote(str(v))}" for k, v in env.items()]
    return " ".join([*assigns, "sh", path, *map(shlex.quote, args), "2>&1"])


def parse_cpu_list(text: str) -> int:
    """How many CPUs a sysfs CPU list names ("0-1,3" -> 3)."""
    count = 0
    for part in text.split(","):
        first, _, last = part.partition("-")
        count += int(last or first) - int(first) + 1
    return count


@dataclass(frozen=True)
class Profile:
    binary: str
    args: tuple[str, ...]  # "{console}" stands for the kernel console's log file
    shell_tty: str  # the guest's name of the shell's serial port
    tcg_cpu: str
    kvm_cpu: str
    kernel_args: tuple[str, ...]
    tcg_kernel_args: tuple[str, ...] = ()  # added under TCG only
    channel_args: tuple[str, ...] = ()  # "{channel}" stands for the fast channel's socket
    min_memory_mb: int = 0  # the least a guest of this machine is given

    @classmethod
    def load(cls, name: str = "x86_64") -> Profile:
        path = QEMU_DIR / f"{name}.toml"
        if not path.exists():
            known = ", ".join(p.stem for p in QEMU_DIR.glob("*.toml"))
            raise StageError(f"no QEMU profile {name!r} in {QEMU_DIR} (known: {known})")
        data = tomllib.loads(path.read_text())
        return cls(
            binary=data["binary"],
            args=tuple(data["args"]),
            shell_tty=data["shell_tty"],
            tcg_cpu=data["tcg_cpu"],
            kvm_cpu=data["kvm_cpu"],
            kernel_args=tuple(data["kernel_args"]),
            tcg_kernel_args=tuple(data.get("tcg_kernel_args", ())),
            channel_args=tuple(data.get("channel_args", ())),
            min_memory_mb=int(data.get("min_memory_mb", 0)),
        )


@dataclass(frozen=True)
class BootSpec:
    kernel: Path
    initrd: Path
    console_log: Path  # QEMU writes the kernel console here
    accel: str  # "tcg" or "kvm"
    memory_mb: int
    cpus: int
    extra_kernel_args: tuple[str, ...] = ()
    # A KCSAN kernel: booted with KCSAN off, armed for the modules under test
    # (modules.load_modules).
    kcsan: bool = False
    # The guest command that ends the run (Kernel.shutdown_command): `poweroff -f` needs
    # ACPI; `reboot -f` works everywhere, as the profile's -no-reboot makes a reset an exit.
    shutdown: str = "poweroff -f"
    # The Unix socket of the fast channel's port (guest/channel.py); None: no port. Short:
    # a socket's path has at most 107 bytes.
    channel_socket: Path | None = None
    # The counting plugin (guest/plugin.py) and the file it writes its dumps to; TCG only.
    counter: tuple[Path, Path] | None = None

    def argv(self, profile: Profile) -> list[str]:
        cpu = profile.kvm_cpu if self.accel == "kvm" else profile.tcg_cpu
        kcsan = KCSAN_ARGS if self.kcsan else ()
        tcg = profile.tcg_kernel_args if self.accel == "tcg" else ()
        append = " ".join((*profile.kernel_args, *tcg, *kcsan, *self.extra_kernel_args))
        console = str(self.console_log).replace(",", ",,")  # QEMU's option escaping
        channel = str(self.channel_socket).replace(",", ",,")
        port = profile.channel_args if self.channel_socket is not None else ()
        plugin: tuple[str, ...] = ()
        if self.counter is not None and self.accel == "tcg":
            so, out = (str(path).replace(",", ",,") for path in self.counter)
            plugin = ("-plugin", f"file={so},out={out}")
        return [
            profile.binary,
            *(arg.replace("{console}", console) for arg in profile.args),
            *(arg.replace("{channel}", channel) for arg in port),
            *plugin,
            "-accel",
            self.accel,
            "-cpu",
            cpu,
            "-m",
            str(self.memory_mb),
            "-smp",
            str(self.cpus),
            "-kernel",
            str(self.kernel),
            "-initrd",
            str(self.initrd),
            "-append",
            append,
        ]


class GuestError(StageError):
    """The guest failed: crashed, timed out or exited. `kind` names which."""

    def __init__(self, kind: str, message: str, crash: Crash | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.crash = crash


def _how_ended(child: pexpect.spawn) -> str:
    # -no-reboot turns a reset (a triple fault, say) into a plain exit with status 0.
    if child.signalstatus is not None:
        return f"killed by signal {child.signalstatus} ({signal.Signals(child.signalstatus).name})"
    if child.exitstatus == 0:
        return "exit status 0: the guest reset or powered off"
    return f"exit status {child.exitstatus}"


def _spawn(argv: list[str]) -> pexpect.spawn:
    try:
        child = pexpect.spawn(
            argv[0],
            argv[1:],
            encoding="utf-8",
            codec_errors="replace",
            echo=False,
            preexec_fn=_die_with_parent,
            dimensions=(24, 250),
        )
    except pexpect.ExceptionPexpect as e:
        raise StageError(f"cannot start {argv[0]}: {e}; run `make setup`") from e
    child.delaybeforesend = None
    return child


def _die_with_parent() -> None:
    # Runs in the child before exec: QEMU gets SIGKILL when the harness dies.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class Guest:
    """A running QEMU guest with a shell on a serial port; use as a context manager."""

    spec: BootSpec
    profile: Profile
    transcript: TextIO  # the shell session, as it arrives
    progress: Progress
    command_timeout: float
    child: pexpect.spawn | None = None
    nonce: str = field(default_factory=lambda: secrets.token_hex(6))
    session: list[str] = field(default_factory=list)
    boot_seconds: float = 0.0
    init_started: bool = False  # /init printed its ready marker
    ended: str = ""  # how QEMU ended by itself ("exit status 0", "signal 9"); "" while running
    # Batches and results go here when the guest has the port (channel.open_channel).
    data_channel: DataChannel | None = None
    on_close: list[Callable[[], None]] = field(default_factory=list)  # once QEMU is gone
    _unread: str = ""  # shell output that arrived after the last match
    _console_seen: int = 0  # bytes of the kernel console already shown and triaged

    def __enter__(self) -> Guest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _record(self, text: str) -> None:
        self.session.append(text)
        self.transcript.write(text)
        self.transcript.flush()
        if self.progress.verbose:
            self.progress.out.write(text)

    def console_text(self) -> str:
        """The kernel console so far."""
        try:
            return self.spec.console_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _new_console(self) -> str:
        """Kernel console text not seen before; shown as it comes with -v."""
        text = self.console_text()
        new, self._console_seen = text[self._console_seen :], len(text)
        if new and self.progress.verbose:
            self.progress.out.write(new)
        return new

    def tail(self, n: int = 20) -> str:
        def last(text: str) -> str:
            return "\n".join([ln for ln in clean_lines(text) if ln.strip()][-n:])

        return (
            f"kernel console:\n{last(self.console_text())}\nshell:\n{last(''.join(self.session))}"
        )

    def close(self) -> None:
        if self.data_channel is not None:
            self.data_channel.close()
            self.data_channel = None
        if self.child is not None:
            gone = not self.child.isalive()
            if not gone:
                self.child.terminate(force=True)
            self.child.close(force=True)
            if gone:
                self.ended = _how_ended(self.child)
            self.child = None
        while self.on_close:
            self.on_close.pop()()

    def _failure(self, kind: str, what: str) -> GuestError:
        """Kill QEMU and describe why the guest is gone; a crash report wins."""
        self.close()
        crash = find_crash(self.console_text())
        if crash is not None:
            return GuestError("crash", f"{crash.headline()} ({what})\n{crash.excerpt}", crash)
        ended = f" ({self.ended})" if kind == "exited" and self.ended else ""
        return GuestError(kind, f"{what}{ended}; last console lines:\n{self.tail()}")

    def failure(self, kind: str, what: str) -> GuestError:
        """The error that ends the run, QEMU killed (for waits outside the shell)."""
        return self._failure(kind, what)

    def watch(self, what: str) -> None:
        """Fail the run if QEMU has exited or the kernel has crashed: a wait on another
        channel than the shell calls this between its reads."""
        assert self.child is not None, "guest is not booted"
        if find_crash(self._new_console()) is not None:
            raise self._failure("crash", f"during {what}")
        if not self.child.isalive():
            raise self._failure("exited", f"{what}: QEMU exited")

    def _wait(
        self, pattern: str | re.Pattern[str], timeout: float, what: str
    ) -> re.Match[str] | None:
        """Read shell output until the pattern matches (the match) or time runs out (None)."""
        assert self.child is not None
        deadline = time.monotonic() + timeout
        buffer, self._unread = self._unread, ""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        while True:
            m = regex.search(buffer)
            if m:
                self._unread = buffer[m.end() :]
                return m
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._unread = buffer
                return None
            try:
                chunk = self.child.read_nonblocking(size=65536, timeout=min(remaining, 0.5))
            except pexpect.TIMEOUT:
                self._new_console()
                continue
            except pexpect.EOF:
                raise self._failure("exited", f"{what}: QEMU exited") from None
            self._record(chunk)
            buffer += chunk

    def _expect(self, pattern: str | re.Pattern[str], timeout: float, what: str) -> re.Match[str]:
        """Like _wait, but a deadline kills QEMU and fails the run."""
        m = self._wait(pattern, timeout, what)
        if m is None:
            raise self._failure("timeout", f"{what}: no answer within {timeout:.0f} s, QEMU killed")
        return m

    def boot(self, ready_marker: str, timeout: float) -> None:
        argv = self.spec.argv(self.profile)
        self.progress.detail("$ " + subprocess.list2cmdline(argv))
        start = time.monotonic()
        try:
            self.child = _spawn(argv)
            self._expect(re.escape(ready_marker), timeout, "booting to /init")
            self.init_started = True
            self._new_console()
            # Knock until the shell answers, in case input arrived before it read
            # its terminal. It expands $((..)), so an echo of the line cannot match.
            deadline = time.monotonic() + timeout
            answer = re.escape(f"{self.nonce}-42")
            while True:
                self.child.sendline(f"echo {self.nonce}-$((40+2))")
                if self._wait(answer, 0.5, "starting the guest shell"):
                    break
                if time.monotonic() > deadline:
                    raise self._failure("timeout", "the guest shell does not answer; QEMU killed")
        except BaseException:
            self.close()
            raise
        self.boot_seconds = time.monotonic() - start

    def run_status(self, command: str, timeout: float | None = None) -> tuple[int, str]:
        """Run one shell command in the guest; return its exit status and output (CR-free)."""
        assert self.child is not None, "guest is not booted"
        marker = re.compile(rf"{self.nonce}:(\d+):end\r*\n")
        # On its own line, so a command ending in a heredoc terminator still works.
        self.child.sendline(f"{command}\nprintf '\\n{self.nonce}:%d:end\\n' $?")
        m = self._expect(marker, timeout or self.command_timeout, f"guest command `{command}`")
        text = m.string[: m.start()].replace("\r\n", "\n").replace("\r", "")
        # The marker's leading newline is ours, not the command's.
        output = text.removesuffix("\n").removeprefix("\n")
        if find_crash(self._new_console()) is not None:
            raise self._failure("crash", f"during `{command}`")
        return int(m.group(1)), output

    def check_cpus(self) -> int:
        """The guest's online CPU count, which must be the count QEMU was asked for: a
        concurrency check on fewer CPUs than it says would pass for the wrong reason."""
        online = parse_cpu_list(self.run("cat /sys/devices/system/cpu/online").strip())
        if online != self.spec.cpus:
            raise GuestError(
                "cpus",
                f"the guest has {online} CPU(s) online but QEMU was asked for "
                f"{self.spec.cpus} (-smp): the kernel did not find the others (under the "
                "PVH entry it needs CONFIG_ACPI for the firmware's CPU table); rebuild the "
                "kernel with ACPI, or set QEMU_CPUS to what it brings up",
            )
        return online

    def run(self, command: str, timeout: float | None = None) -> str:
        """Run one shell command in the guest; a non-zero exit status is an error."""
        rc, output = self.run_status(command, timeout)
        if rc != 0:
            raise GuestError("command", f"guest command `{command}` exited {rc}:\n{output}")
        return output

    def send_script(self, name: str) -> str:
        """Write the guest script scripts/<name> to /tmp/zskit-<name> (a heredoc through the
        shell, as the guest has no other way in once booted); return its guest path."""
        text = guest_script(name)
        if f"\n{HEREDOC_END}\n" in f"\n{text}" or not text.endswith("\n"):
            raise StageError(f"scripts/{name} must end with a newline and not hold {HEREDOC_END}")
        path = f"/tmp/zskit-{name}"
        self.run(f"cat > {path} <<'{HEREDOC_END}'\n{text}{HEREDOC_END}")
        return path

    def poweroff(self, timeout: float = 30) -> None:
        """Power the guest off (or reset it, see BootSpec.shutdown) and wait for QEMU to exit."""
        assert self.child is not None
        self.child.sendline(self.spec.shutdown)
        try:
            self._expect(re.compile(r"(?!)"), timeout, f"shutting down (`{self.spec.shutdown}`)")
        except GuestError as e:
            if e.kind != "exited":
                raise
        self.close()


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def kvm_works(
    profile: Profile, spec: BootSpec, cache: Path, progress: Progress, timeout: float = 8.0
) -> bool:
    """Whether KVM really runs a guest here: boot the kernel with KVM for a few seconds.

    `/dev/kvm` can exist where nested KVM hangs or aborts QEMU, so its presence
    proves nothing. The answer is cached per host boot.
    """
    if not Path("/dev/kvm").exists():
        return False
    record = cache / "kvm-probe.json"
    boot_id = _boot_id()
    if record.exists():
        saved = json.loads(record.read_text())
        if saved.get("boot_id") == boot_id:
            return bool(saved["works"])
    cache.mkdir(parents=True, exist_ok=True)
    probe = dataclasses.replace(
        spec,
        accel="kvm",
        cpus=1,
        console_log=cache / "kvm-probe.log",
        extra_kernel_args=("rdinit=/nonexistent",),
    )
    probe.console_log.unlink(missing_ok=True)
    progress.say(f"probing KVM (at most {timeout:.0f} s)")
    output = _run_bounded(probe.argv(profile), timeout)
    if probe.console_log.exists():
        output += probe.console_log.read_text(errors="replace")
    # Without its init the kernel panics at once: reaching that point proves KVM runs.
    works = "Kernel panic" in output or "Run /nonexistent" in output
    progress.say("KVM works" if works else "KVM does not work here; using TCG")
    record.write_text(json.dumps({"boot_id": boot_id, "works": works}) + "\n")
    return works


def _run_bounded(argv: list[str], timeout: float) -> str:
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        return proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        out = e.stdout or b""
        return out.decode(errors="replace") if isinstance(out, bytes) else out
