"""`zskit b4-check patch|series`: validate as one of b4 review's check commands.

b4 (0.16, `review-perpatch-check-cmd`, `review-series-check-cmd`) runs the command
in the top of the reviewer's git tree with one RFC 2822 message on standard input
(a patch, or the series' cover letter or first patch) and reads a JSON array
`[{"tool", "status": "pass|warn|fail", "summary", "url", "details"}]` from
standard output; output that is not such JSON, or none with a non-zero exit, it
shows as a failure. Here every answer is such an array, one object per check
(apply, build, checkpatch, suite, zram, zswap, cost), bad input included, and
the exit status is 1 when any of them failed.

A per-patch check needs the patches before its own. They come from the thread
b4 keeps for a tracked series (`B4_TRACKING_FILE`: its `series.thread-blob` is a
blob of the tree b4 runs in), else from zskit's store of the messages earlier
calls were given (b4 checks a series' patches in order). With the thread, the
first call validates the whole series and the others read its results, kept
per message-id and per configuration in the cache.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import json
import os
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..paths import cache_dir
from ..progress import Progress, StageError
from . import validate
from .config import Config
from .validate.series import NUMBERING, revision_of

TOOL = "zskit"
CHECKS = (*validate.CHECKS, "cost")
STATUS = {"pass": "pass", "warn": "warn", "fail": "fail", "error": "fail", "skip": "pass"}
RANK = {"pass": 0, "warn": 1, "fail": 2}
COST_WARN = 1.05  # instructions per call above the base's by more than this warn


@dataclass(frozen=True)
class Mail:
    """One message as b4 gives it."""

    raw: bytes
    subject: str
    message_id: str
    root: str  # the thread's first message-id (References), or its own
    revision: int
    numbering: tuple[int, int] | None
    has_diff: bool

    @property
    def number(self) -> int:
        return self.numbering[0] if self.numbering else 1

    @property
    def total(self) -> int:
        return self.numbering[1] if self.numbering else 1


def result(
    check: str, status: str, summary: str, details: str = "", url: str = ""
) -> dict[str, str]:
    return {
        "tool": f"{TOOL}-{check}" if check else TOOL,
        "status": status,
        "summary": summary,
        "url": url,
        "details": details,
    }


def refused(why: str) -> list[dict[str, str]]:
    """The answer to input zskit cannot check: one failed result saying why."""
    return [result("", "fail", why.splitlines()[0], why)]


def parse_mail(raw: bytes) -> Mail:
    if not raw.strip():
        raise StageError("standard input is empty: b4 pipes one message (a patch or a cover)")
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    subject = " ".join(str(msg.get("Subject") or "").split())
    message_id = str(msg.get("Message-ID") or "").strip().strip("<>")
    if not subject or not message_id:
        raise StageError(
            "standard input is not a mail of a series: it has no Subject: or no Message-ID: "
            "header (b4 pipes the message as it came from the list)"
        )
    references = str(msg.get("References") or msg.get("In-Reply-To") or "").split()
    root = references[0].strip("<>") if references else message_id
    try:
        body = msg.get_body(preferencelist=("plain",))
        text = body.get_content() if body is not None else ""
    except (LookupError, ValueError):  # a charset or transfer encoding Python lacks
        text = raw.decode(errors="replace")
    numbering = None
    if m := NUMBERING.search(subject):
        numbering = (int(m[1]), int(m[2]))
    has_diff = "\ndiff --git " in "\n" + text or "\n--- a/" in "\n" + text
    return Mail(raw, subject, message_id, root, revision_of(subject), numbering, has_diff)


def thread_mails() -> list[bytes]:
    """The messages of the thread b4 tracks for this series, when it gave us one."""
    path = os.environ.get("B4_TRACKING_FILE")
    if not path:
        return []
    try:
        tracking = json.loads(Path(path).read_text())
        blob = tracking.get("series", {}).get("thread-blob", "")
    except (OSError, ValueError, AttributeError):
        return []
    if not blob:
        return []
    proc = subprocess.run(["git", "cat-file", "blob", blob], capture_output=True)
    if proc.returncode != 0:
        return []
    return split_mbox(proc.stdout)


def split_mbox(data: bytes) -> list[bytes]:
    """An mbox's messages (lines `From ` start each one)."""
    chunks = (b"\n" + data).split(b"\nFrom ")[1:]
    return [c.split(b"\n", 1)[1] for c in chunks if b"\n" in c and c.split(b"\n", 1)[1].strip()]


def store_dir(root: str, revision: int) -> Path:
    key = hashlib.sha256(f"{root} v{revision}".encode()).hexdigest()[:16]
    return cache_dir() / "b4-check" / "series" / key


def remember(mail: Mail) -> None:
    """Keep a patch for later calls on the same series (same thread, same revision)."""
    directory = store_dir(mail.root, mail.revision)
    directory.mkdir(parents=True, exist_ok=True)
    name = hashlib.sha256(mail.message_id.encode()).hexdigest()[:16]
    tmp = directory / f".{name}.tmp"
    tmp.write_bytes(mail.raw)
    tmp.replace(directory / f"{name}.eml")


def known_patches(mail: Mail) -> dict[int, Mail]:
    """The series' patches at hand for `mail`'s thread and revision, by number."""
    found: dict[int, Mail] = {}
    stored = store_dir(mail.root, mail.revision)
    sources = [*thread_mails(), *(p.read_bytes() for p in sorted(stored.glob("*.eml")))]
    for raw in sources:
        try:
            other = parse_mail(raw)
        except StageError:
            continue
        if other.subject.lower().startswith("re:"):
            continue  # a reply, even one that quotes the diff
        if other.has_diff and other.revision == mail.revision and other.total == mail.total:
            found.setdefault(other.number, other)
    if mail.has_diff:
        found[mail.number] = mail
    return found


def config_key(config: Config, kernels: Sequence[str], trees: Sequence[Path], perf: bool) -> str:
    what = [config.kernel, config.variant, *kernels, *(str(t.resolve()) for t in trees), str(perf)]
    return hashlib.sha256("\0".join(what).encode()).hexdigest()[:12]


def results_path(message_id: str, key: str) -> Path:
    name = hashlib.sha256(f"{message_id}\0{key}".encode()).hexdigest()[:24]
    return cache_dir() / "b4-check" / "results" / f"{name}.json"


def _worst(statuses: Sequence[str]) -> str:
    return max(statuses, key=lambda s: RANK[s], default="pass")


def _cost(step: validate.Step) -> tuple[str, str, str]:
    """(status, summary, details) of a step's instruction counts and density."""
    if step.cost is None:
        return "pass", f"not counted: {step.cost_note or step.perf_note or 'not measured'}", ""
    ratios = step.cost.ratios()
    worse = [f"{k} {r:.3f}" for k, r in ratios.items() if r > COST_WARN]
    details = "\n".join(
        f"{k}: {step.cost.base_per_call[k]:.1f} -> {n:.1f} instructions per call"
        for k, n in step.cost.per_call.items()
        if k in ratios
    )
    if step.perf is not None:
        details += f"\npool pages {step.perf.base_pages} -> {step.perf.pages}"
    summary = f"instructions {step.cost.ratio:.4f} of the base's"
    if worse:
        return "warn", summary + f"; more than {COST_WARN - 1:.0%} up: {', '.join(worse)}", details
    return "pass", summary, details


def step_results(v: validate.Validation, number: int) -> list[dict[str, str]]:
    """One object per check for patch `number`, each kernel's outcome in its details."""
    out = []
    url = (v.directory / "report.md").resolve().as_uri()
    for check in CHECKS:
        statuses, lines, summaries = [], [], []
        for k in v.kernels:
            step = k.steps[number - 1]
            if check == "cost":
                status, summary, details = _cost(step)
            else:
                c = step.checks[check]
                status = STATUS[c.status]
                summary = (
                    c.summary if c.status != "error" else f"error (not the patch's): {c.summary}"
                )
                details = "\n".join(c.details)
            statuses.append(status)
            summaries.append((RANK[status], f"{k.kernel.label}: {summary}"))
            lines += [f"{k.kernel.label}: {status}: {summary}", *details.splitlines()]
        worst = _worst(statuses)
        summary = max(summaries)[1] if summaries else "no kernel"
        out.append(result(check, worst, summary, "\n".join(lines), url))
    return out


def series_results(per_patch: Sequence[Sequence[dict[str, str]]]) -> list[dict[str, str]]:
    """One object per check over the whole series: the worst patch, every patch in details."""
    out = []
    total = len(per_patch)
    for i, check in enumerate(CHECKS):
        rows = [(n, r[i]) for n, r in enumerate(per_patch, 1)]
        worst = _worst([r["status"] for _, r in rows])
        n, first = next((n, r) for n, r in rows if r["status"] == worst)
        details = "\n".join(f"[{m}/{total}] {r['status']}: {r['summary']}" for m, r in rows)
        out.append(result(check, worst, f"[{n}/{total}] {first['summary']}", details, first["url"]))
    return out


def _saved(mails: Sequence[Mail], key: str) -> list[list[dict[str, str]]] | None:
    """The results of every one of these patches from earlier calls, or None."""
    paths = [results_path(m.message_id, key) for m in mails]
    if not all(p.exists() for p in paths):
        return None
    return [json.loads(p.read_text()) for p in paths]


def check(
    mode: str,
    raw: bytes,
    config: Config,
    p: Progress,
    kernels: Sequence[str] = (),
    trees: Sequence[Path] = (),
    variant: str | None = None,
    perf: bool = True,
) -> list[dict[str, str]]:
    """The JSON array b4 reads for one message, `mode` patch or series."""
    try:
        mail = parse_mail(raw)
    except StageError as e:
        return refused(str(e))
    key = config_key(config, kernels, trees, perf)
    if mode == "patch":
        if not mail.has_diff:
            return refused(f"{mail.subject!r} holds no diff: a per-patch check takes a patch")
        remember(mail)
        saved = results_path(mail.message_id, key)
        if saved.exists():
            p.say(f"{mail.subject}: validated before, with its series")
            return json.loads(saved.read_text())
    patches = known_patches(mail)
    last = mail.number if mode == "patch" else mail.total
    missing = [n for n in range(1, last + 1) if n not in patches]
    if mode == "series" and not patches:
        return refused(
            f"{mail.subject!r} is a cover letter without its series: b4 gives the thread of a "
            "tracked series (b4 review track) through B4_TRACKING_FILE; or run the per-patch "
            "check on the patches first"
        )
    if mode == "series" and not missing:
        saved_all = _saved([patches[n] for n in range(1, last + 1)], key)
        if saved_all is not None:
            p.say(f"{mail.subject}: every patch validated before")
            return series_results(saved_all)
    if missing:
        return refused(
            f"v{mail.revision} of this series lacks patch(es) {', '.join(map(str, missing))} "
            f"of {mail.total}: the thread b4 tracks (B4_TRACKING_FILE) or earlier per-patch "
            "checks bring them"
        )
    # With the whole series at hand, validate it once: later patches read their results.
    upto = mail.total if all(n in patches for n in range(1, mail.total + 1)) else last
    with tempfile.TemporaryDirectory(prefix="zskit-b4-") as tmp:
        for n in range(1, upto + 1):
            (Path(tmp) / f"{n:04d}.patch").write_bytes(patches[n].raw)
        try:
            v = validate.validate(
                config,
                [Path(tmp)],
                p,
                kernel_names=kernels,
                perf_rounds=validate.PERF_ROUNDS if perf else 0,
                variant=variant,
                trees=trees,
            )
        except StageError as e:
            return refused(f"{mail.subject}: {e}")
    per_patch = [step_results(v, n) for n in range(1, upto + 1)]
    for n, answer in enumerate(per_patch, 1):
        path = results_path(patches[n].message_id, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_path = path.with_suffix(".tmp")
        tmp_path.write_text(json.dumps(answer, indent=2) + "\n")
        tmp_path.replace(path)
    return per_patch[mail.number - 1] if mode == "patch" else series_results(per_patch)


def exit_status(results: Sequence[dict[str, str]]) -> int:
    return 1 if any(r["status"] == "fail" for r in results) else 0
