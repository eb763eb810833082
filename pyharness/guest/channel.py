"""The fast channel: zstest batches and results over a virtio-serial port.

QEMU gives the guest a virtio-serial port (`zskit.data`) whose other end is a Unix
socket of the host; in the guest, the static program zskit-agent (programs/agent.c),
started by /init, reads requests from the port and answers them, one process for the
whole run. The serial shell stays for control and the kernel console for triage: while
the host waits for an answer it watches the console and the deadline, so a crash or a
deadline ends the wait as it ends a shell command.

The guest needs virtio_pci and virtio_console: Debian's kernels have them as modules,
which the initramfs carries (CHANNEL_MODULES) and /init loads. Without them there is
no port, and `open_channel` says why; the caller then keeps to the shell.
"""

from __future__ import annotations

import select
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from .programs import guest_path
from .qemu import Guest, GuestError

PORT_NAME = "zskit.data"
# Under the image's /lib/modules/<release>, in load order; a missing one is built in.
CHANNEL_MODULES = (
    "kernel/drivers/virtio/virtio_ring.ko",
    "kernel/drivers/virtio/virtio.ko",
    "kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
    "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
    "kernel/drivers/virtio/virtio_pci.ko",
    "kernel/drivers/char/virtio_console.ko",
)
CHANNEL_DRIVERS = ("/virtio_pci.ko", "/virtio_console.ko")  # without them, no port
CHANNEL_MODULE_DIR = "lib/modules/zskit/channel"  # /init loads every module here, by name
AGENT = guest_path("agent")
UPLOADS = "/lib/modules/zskit/dev"  # where the agent writes the files it is sent
CONNECT_SECONDS = 5.0


class ChannelError(GuestError):
    """The agent broke the framing or went away: the run cannot go on over the channel."""

    def __init__(self, message: str) -> None:
        super().__init__("channel", message)


@dataclass(frozen=True)
class Wait:
    """One request's wait: what it is, when it ends, and whether its end kills QEMU."""

    what: str
    seconds: float
    deadline: float
    fatal: bool


class FastChannel:
    """The host's end of the agent's port."""

    def __init__(self, sock: socket.socket, guest: Guest) -> None:
        self.sock = sock
        self.guest = guest
        self._pending = b""
        self.send_seconds = 0.0  # of the last request: the rest of it was the guest's

    def close(self) -> None:
        self.sock.close()

    def request(
        self, header: str, body: bytes = b"", timeout: float | None = None, fatal: bool = True
    ) -> tuple[bytes | None, int]:
        """Send one request; wait for its answer while watching the guest: what the agent
        read, or None and the errno it failed with. At the deadline QEMU is killed and the
        run fails, as for a shell command, unless not `fatal`."""
        return self.receive(self.send(header, body, timeout, fatal))

    def send(
        self, header: str, body: bytes = b"", timeout: float | None = None, fatal: bool = True
    ) -> Wait:
        """The first half of a request: its answer is the next `receive` of this wait (the
        agent answers in order, so waits are received in the order they were sent)."""
        seconds = timeout or self.guest.command_timeout
        sent = time.monotonic()
        wait = Wait(f"fast channel request `{header}`", seconds, sent + seconds, fatal)
        self.sock.setblocking(True)
        try:
            self.sock.sendall(f"{header}\n".encode() + body)
        except OSError as e:
            self._gone(wait.what, e)
        self.send_seconds = time.monotonic() - sent
        return wait

    def receive(self, wait: object) -> tuple[bytes | None, int]:
        """The answer to a request `send` sent."""
        assert isinstance(wait, Wait), wait
        head = self._read_line(wait)
        kind, _, value = head.partition(" ")
        if kind == "x" and value.isdigit():
            return None, int(value)
        if kind != "r" or not value.isdigit():
            raise ChannelError(f"{wait.what}: the agent answered {head!r}")
        return self._read_exactly(int(value), wait), 0

    def send_file(self, name: str, data: bytes) -> None:
        """Put a file at UPLOADS/name in the guest (the agent replaces it only once whole)."""
        _, err = self.request(f"f {name} {len(data)}", data)
        if err:
            raise ChannelError(f"the agent could not write {UPLOADS}/{name}: errno {err}")

    def _fill(self, wait: Wait) -> None:
        remaining = wait.deadline - time.monotonic()
        if remaining <= 0:
            late = f"{wait.what}: no answer within {wait.seconds:.0f} s (zskit-agent busy or gone)"
            if not wait.fatal:
                raise ChannelError(late)
            raise self.guest.failure("timeout", f"{late}, QEMU killed")
        ready, _, _ = select.select([self.sock], [], [], min(remaining, 0.25))
        if not ready:
            self.guest.watch(wait.what)
            return
        try:
            chunk = self.sock.recv(1 << 20)
        except OSError as e:
            self._gone(wait.what, e)
        if not chunk:
            self._gone(wait.what, None)
        self._pending += chunk

    def _gone(self, what: str, error: OSError | None) -> NoReturn:
        """QEMU drops the socket when the guest closes the port: a crash, or the agent's
        end; the crash report wins."""
        self.guest.watch(what)
        why = f" ({error})" if error else ""
        raise ChannelError(
            f"{what}: the guest closed the fast channel{why}, so its agent is gone; "
            "the console log may say why"
        )

    def _read_line(self, wait: Wait) -> str:
        while b"\n" not in self._pending:
            if len(self._pending) > 128:
                raise ChannelError(f"{wait.what}: no answer header in {self._pending[:64]!r}")
            self._fill(wait)
        line, _, self._pending = self._pending.partition(b"\n")
        return line.decode(errors="replace")

    def _read_exactly(self, size: int, wait: Wait) -> bytes:
        while len(self._pending) < size:
            self._fill(wait)
        data, self._pending = self._pending[:size], self._pending[size:]
        return data


def open_channel(guest: Guest, socket_path: Path) -> tuple[FastChannel | None, str]:
    """Connect to the port's socket and ask the agent (/init started it) whether it is
    there: the channel, or None and why."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(socket_path))
    except OSError as e:
        sock.close()
        return None, f"QEMU's end of the port ({socket_path}) does not answer: {e}"
    if guest.run_status(f"pidof {AGENT.rsplit('/', 1)[1]}")[0] != 0:
        sock.close()
        return None, "the guest has no virtio-serial port (no virtio_pci or virtio_console)"
    channel = FastChannel(sock, guest)
    try:
        channel.request("p", timeout=CONNECT_SECONDS, fatal=False)
    except ChannelError as e:
        channel.close()
        return None, f"the agent does not answer on the port: {e}"
    return channel, ""
