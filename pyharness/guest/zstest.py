"""The zstest batch protocol, host side: send a batch, parse its result strictly.

A batch is written to the guest as a file (heredoc chunks small enough for
the serial line's tty buffer) and handed to the driver in a single write(),
because the driver treats each write() as one batch. The result format is
documented in kmod/zstest.c.j2; anything else in it is a protocol error.

Where the guest has the fast channel (channel.py: a virtio-serial port and
an agent on it), batches, results and `classes` reads go there instead, and
the same bytes are parsed the same way. Otherwise the serial shell carries
them: it is slow, and each shell command costs a round trip, so a batch
takes two (its file, then the write and the read of the result) and a
`classes` read sends only the rows that changed since the pool's last read:
the guest keeps a copy of what it printed, the host the same text, and the
host's copy, patched, is parsed exactly as a full read would be.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..kmod.render import PROTOCOL_VERSION
from ..model import ClassStats
from ..progress import StageError
from .qemu import Guest

ZSTEST_DIR = "/sys/kernel/debug/zstest"
CTL = f"{ZSTEST_DIR}/ctl"
CLASSES_DIR = "/sys/kernel/debug/zsmalloc"  # POOL/classes: upstream's statistics
BATCH_FILE = "/tmp/zskit-batch"
DD_ERRORS = "/tmp/zskit-dd"
CLASSES_SEEN = "/tmp/zskit-classes"  # + the pool's name: the table last printed
# The guest's half of a `classes` read: the row count, then each row (numbered from 1)
# that differs from its copy of the last one printed (none: {forget} removes it).
CLASSES_DIFF = (
    "seen={seen}.{pool}; {forget}cat {dir}/{pool}/classes > $seen.new"
    " && wc -l < $seen.new && {{ test -f $seen || : > $seen; }} && awk"
    " 'FILENAME == ARGV[1] {{ old[FNR] = $0; next }} !(FNR in old) || old[FNR] != $0"
    ' {{ print FNR ":" $0 }}\' $seen $seen.new && mv $seen.new $seen'
)
CHANGED_ROW = re.compile(r"^(\d+):(.*)$")
CHUNK_BYTES = 3000  # well below the 4 KiB canonical-mode line discipline buffer
MAX_BATCH_BYTES = 4 << 20  # ZT_MAX_BATCH in the driver

ERROR_LINE = re.compile(r"^e (\d+) (\S+) (-\d+) (.*)$")
VALUE_LINE = re.compile(r"^s (\S+) (\S+)$")
END_LINE = re.compile(r"^end (\d+) (\d+)( truncated)?$")


class ProtocolError(StageError):
    """The guest answered something the protocol does not allow."""


@dataclass(frozen=True)
class CommandFailure:
    line: int  # 1-based line of the batch
    verb: str
    errno: int  # negative, as the kernel returns it
    reason: str


@dataclass(frozen=True)
class BatchResult:
    commands: int
    failures: tuple[CommandFailure, ...]
    values: tuple[tuple[str, str], ...]  # `s KEY VALUE` lines in order

    def value(self, key: str) -> str:
        found = [v for k, v in self.values if k == key]
        if len(found) != 1:
            raise ProtocolError(f"expected one `s {key}` line in the result, got {len(found)}")
        return found[0]


def parse_result(text: str) -> BatchResult:
    lines = [line for line in text.replace("\r", "").split("\n") if line]
    if not lines:
        raise ProtocolError("empty result from zstest")
    failures: list[CommandFailure] = []
    values: list[tuple[str, str]] = []
    for line in lines[:-1]:
        if m := ERROR_LINE.match(line):
            failures.append(CommandFailure(int(m[1]), m[2], int(m[3]), m[4]))
        elif m := VALUE_LINE.match(line):
            values.append((m[1], m[2]))
        else:
            raise ProtocolError(f"unexpected line in zstest result: {line!r}")
    end = END_LINE.match(lines[-1])
    if end is None:
        raise ProtocolError(f"zstest result does not end with an end line: {lines[-1]!r}")
    for f in failures:
        if not 1 <= f.line <= int(end[1]):
            raise ProtocolError(f"failure on line {f.line} of a {end[1]}-command batch")
    if end[3]:
        raise ProtocolError("zstest truncated its result: send smaller batches")
    if int(end[2]) != len(failures):
        raise ProtocolError(f"end line counts {end[2]} failures but {len(failures)} are listed")
    return BatchResult(int(end[1]), tuple(failures), tuple(values))


CLASSES_61_HEADER = (
    "class size almost_full almost_empty obj_allocated obj_used pages_used "
    "pages_per_zspage freeable"
).split()
# 6.12 and later: one column per fullness group 1..11 instead of the two 6.1 groups.
RATIO_COLUMNS = "10% 20% 30% 40% 50% 60% 70% 80% 90% 99% 100%".split()
CLASSES_RATIO_HEADER = [
    "class",
    "size",
    *RATIO_COLUMNS,
    *"obj_allocated obj_used pages_used pages_per_zspage freeable".split(),
]


def parse_classes(text: str) -> list[ClassStats]:
    """Rows of upstream's debugfs `classes` file, in the 6.1 or the 6.12+ format."""
    lines = [line.split() for line in text.replace("\r", "").split("\n") if line.strip()]
    header = lines[0] if lines else []
    if header not in (CLASSES_61_HEADER, CLASSES_RATIO_HEADER):
        raise ProtocolError(f"unexpected `classes` header: {' '.join(header) or 'empty'}")
    ratio = header == CLASSES_RATIO_HEADER
    rows: list[ClassStats] = []
    for fields in lines[1:]:
        if fields[0] == "Total":
            continue
        if len(fields) != len(header) or not all(f.isdigit() for f in fields):
            raise ProtocolError(f"malformed `classes` row: {' '.join(fields)}")
        n = [int(f) for f in fields]
        groups = n[2:-5]
        tail = n[-5:]
        rows.append(
            ClassStats(
                index=n[0],
                size=n[1],
                almost_full=0 if ratio else groups[0],
                almost_empty=0 if ratio else groups[1],
                obj_allocated=tail[0],
                obj_used=tail[1],
                pages_used=tail[2],
                pages_per_zspage=tail[3],
                freeable=tail[4],
                inuse_ratio=tuple(groups) if ratio else None,
            )
        )
    return rows


def patch_rows(seen: list[str], diff: str) -> list[str]:
    """The table the guest read: `seen` (what it printed last) with the changed rows of
    its answer (CLASSES_DIFF) put in, cut to the row count the answer starts with."""
    count, *changed = diff.replace("\r", "").split("\n")
    if not count.strip().isdigit():
        raise ProtocolError(f"`classes` read: expected a row count, got {count!r}")
    rows: list[str | None] = [*seen, *[None] * int(count)][: int(count)]
    for line in filter(None, changed):
        m = CHANGED_ROW.match(line)
        if m is None or not 1 <= int(m.group(1)) <= len(rows):
            raise ProtocolError(f"`classes` read: malformed changed row {line!r}")
        rows[int(m.group(1)) - 1] = m.group(2)
    table = [row for row in rows if row is not None]
    if len(table) != len(rows):
        raise ProtocolError("`classes` read: rows missing from a table the host never had")
    return table


def chunks(lines: Sequence[str], limit: int = CHUNK_BYTES) -> list[str]:
    """Group lines into newline-terminated chunks of at most `limit` bytes."""
    out: list[str] = []
    current: list[str] = []
    size = 0
    for line in lines:
        length = len(line.encode()) + 1
        if size + length > limit and current:
            out.append("\n".join(current) + "\n")
            current, size = [], 0
        current.append(line)
        size += length
    if current:
        out.append("\n".join(current) + "\n")
    return out


class ZsTest:
    """The zstest driver in a booted guest."""

    def __init__(self, guest: Guest) -> None:
        self.guest = guest
        # Where a run's time goes: sending batches, running them, reading `classes`.
        self.seconds = {"transfer": 0.0, "guest": 0.0, "classes": 0.0}
        self._classes_seen: dict[str, list[str]] = {}  # pool -> the rows the guest has

    def _timed(self, what: str, start: float) -> None:
        self.seconds[what] += time.monotonic() - start

    def upload(self, lines: Sequence[str], dest: str = BATCH_FILE) -> None:
        """Write lines into a guest file, chunk by chunk."""
        for number, chunk in enumerate(chunks(lines) or [""]):
            into = ">" if number == 0 else ">>"
            self.guest.run(f"cat {into} {dest} <<'ZSKIT_EOF'\n{chunk}ZSKIT_EOF")

    @property
    def pipelined(self) -> bool:
        """Whether a request may be sent before the answer to the last one is read (the
        fast channel's agent answers in order; the shell runs each request at once)."""
        return self.guest.data_channel is not None

    def batch(self, lines: Sequence[str], timeout: float | None = None) -> BatchResult:
        return self.send_batch(lines, timeout)()

    def send_batch(
        self, lines: Sequence[str], timeout: float | None = None
    ) -> Callable[[], BatchResult]:
        """Send a batch; what this returns reads its result (over the shell the batch has
        run by then). Results are read in the order their batches were sent."""
        if not lines:
            raise ProtocolError("an empty batch makes no write(); send at least one line")
        size = sum(len(line.encode()) + 1 for line in lines)
        if size > MAX_BATCH_BYTES:
            raise StageError(f"batch of {size} bytes exceeds the driver's {MAX_BATCH_BYTES}")
        channel = self.guest.data_channel
        if channel is None:
            result = self._shell_batch(lines, timeout)
            return lambda: result
        data = "".join(f"{line}\n" for line in lines).encode()
        wait = channel.send(f"b {len(data)}", data, timeout)
        self.seconds["transfer"] += channel.send_seconds

        def read() -> BatchResult:
            assert channel is not None
            start = time.monotonic()
            try:
                answer, err = channel.receive(wait)
            finally:
                self._timed("guest", start)  # what the host waited, not what overlapped
            if answer is None:
                raise ProtocolError(
                    f"zstest refused the batch (over its {MAX_BATCH_BYTES >> 20} MiB limit?): "
                    f"write() failed with errno {err}"
                )
            return parse_result(answer.decode(errors="replace"))

        return read

    def _shell_batch(self, lines: Sequence[str], timeout: float | None) -> BatchResult:
        start = time.monotonic()
        self.upload(lines)
        self._timed("transfer", start)
        start = time.monotonic()
        try:
            return self.batch_file(BATCH_FILE, timeout)
        finally:
            self._timed("guest", start)

    def batch_file(self, path: str, timeout: float | None = None) -> BatchResult:
        """Hand a guest file to the driver as one batch (one write())."""
        # One write() for the whole file: bs well above the driver's limit, so a
        # file over it is refused (E2BIG) rather than split into several batches.
        write = f"test -s {path} && dd if={path} of={CTL} bs=64M 2>{DD_ERRORS}"
        command = f"if {write}; then cat {CTL}; else cat {DD_ERRORS}; false; fi"
        rc, out = self.guest.run_status(command, timeout)
        if rc != 0:
            raise ProtocolError(
                f"zstest refused the batch in {path} (empty, or over its "
                f"{MAX_BATCH_BYTES >> 20} MiB limit): {out}"
            )
        return parse_result(out)

    def check_version(self) -> None:
        """Refuse a driver that speaks another protocol version than this harness."""
        answer = self.batch(["version"]).value("version")
        if answer != str(PROTOCOL_VERSION):
            raise ProtocolError(
                f"zstest speaks protocol {answer}, this harness {PROTOCOL_VERSION}: "
                "rebuild the modules (`make qemu-test` renders and builds them)"
            )

    def read_file(self, name: str, timeout: float | None = None) -> str:
        """A file of zstest's debugfs directory (its `pages`), read whole."""
        channel = self.guest.data_channel
        start = time.monotonic()
        try:
            if channel is None:
                rc, text = self.guest.run_status(f"cat {ZSTEST_DIR}/{name}", timeout)
                if rc:
                    raise ProtocolError(f"reading {ZSTEST_DIR}/{name} failed: {text}")
                return text
            answer, err = channel.request(f"d {name}", timeout=timeout)
            if answer is None:
                raise ProtocolError(f"reading {ZSTEST_DIR}/{name} failed with errno {err}")
            return answer.decode(errors="replace")
        finally:
            self._timed("transfer", start)

    def classes(self, pool: str) -> list[ClassStats]:
        return self.send_classes(pool)()

    def send_classes(self, pool: str) -> Callable[[], list[ClassStats]]:
        """Ask for the pool's `classes` table; what this returns reads it (in order with
        the batches, as `send_batch`)."""
        channel = self.guest.data_channel
        if channel is None:
            rows = self._shell_classes(pool)
            return lambda: rows
        wait = channel.send(f"c {pool}")

        def read() -> list[ClassStats]:
            assert channel is not None
            start = time.monotonic()
            try:
                answer, err = channel.receive(wait)
            finally:
                self._timed("classes", start)
            if answer is None:
                raise ProtocolError(f"no `classes` file for pool {pool}: errno {err}")
            return parse_classes(answer.decode(errors="replace"))

        return read

    def _shell_classes(self, pool: str) -> list[ClassStats]:
        start = time.monotonic()
        try:
            seen = self._classes_seen.get(pool, [])
            forget = "" if seen else "rm -f $seen; "
            out = self.guest.run(
                CLASSES_DIFF.format(dir=CLASSES_DIR, pool=pool, seen=CLASSES_SEEN, forget=forget)
            )
            rows = patch_rows(seen, out)
            self._classes_seen[pool] = rows
            return parse_classes("\n".join(rows))
        finally:
            self._timed("classes", start)
