"""Which kernel series Debian's archive carries, asked of the archive itself.

A private apt configuration in the cache (its own sources, lists and package
cache; the host's apt state is never read or written) indexes every suite the
archive serves: the host's release with its security updates and backports,
and stable, stable-backports, testing, unstable and experimental, found by
their aliases and indexed by the codenames the aliases' Release files name
(a mirror may serve an alias older than its codename), so the set follows
Debian's releases without a change here. A
`linux-source-X.Y` package names a series; `apt-cache madison` gives each
suite's versions of it. The index is refreshed when it is a day old (or with
--refresh); without a network an existing index is used, and its age said.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from debian.debian_support import Version

from ..locking import locked
from ..paths import cache_dir, lock_file
from ..progress import Progress, StageError
from .toolchain import archive_for, fetching, host_codename, host_sources, security_uri

ALIASES = ("stable", "stable-backports", "testing", "unstable", "experimental")
MAX_AGE = 24 * 3600.0  # seconds before the index is fetched again
SOURCE = re.compile(r"^linux-source-(\d+\.\d+)$")


@dataclass(frozen=True)
class Offer:
    """One version of a series' source package in one suite."""

    series: str
    version: str
    suite: str


def suites(codename: str | None, aliases: dict[str, str] | None = None) -> list[str]:
    """The suites to index: the host's own release first, then Debian's aliases, each
    replaced by its codename once `aliases` (alias -> codename) is known."""
    own = [codename, f"{codename}-security", f"{codename}-backports"] if codename else []
    named = [(aliases or {}).get(a, a) for a in ALIASES]
    return list(dict.fromkeys([*own, *named]))


def sources_list(names: list[str], uri: str, security: str | None) -> str:
    """The index's sources.list: every suite on the host's Debian archive (security updates
    on the host's security archive, when it has one)."""
    lines = []
    for suite in names:
        base = security if suite.endswith("-security") else uri
        if base:
            lines.append(f"deb {base} {suite} main")
    return "\n".join(lines) + "\n"


def codename_of(release: str) -> str | None:
    """The `Codename:` of a Release (or InRelease) file."""
    m = re.search(r"^Codename: *(\S+)$", release, re.M)
    return m[1] if m else None


def parse_madison(text: str) -> list[Offer]:
    """`apt-cache madison` lines (`pkg | version | uri suite/component arch Packages`)."""
    offers = []
    for line in text.splitlines():
        fields = [f.strip() for f in line.split("|")]
        if len(fields) != 3 or not (m := SOURCE.match(fields[0])):
            continue
        where = fields[2].split()
        if len(where) >= 2:
            offers.append(Offer(m[1], fields[1], where[1].split("/")[0]))
    return offers


@dataclass(frozen=True)
class ArchiveIndex:
    """The private apt state under `<cache>/archive/`."""

    top: Path

    @classmethod
    def in_cache(cls) -> ArchiveIndex:
        return cls(cache_dir() / "archive")

    def _options(self) -> list[str]:
        return [
            "-o", f"Dir::State::Lists={self.top / 'lists'}",
            "-o", f"Dir::Etc::SourceList={self.top / 'sources.list'}",
            "-o", "Dir::Etc::SourceParts=/nonexistent",
            "-o", f"Dir::Cache={self.top / 'cache'}",
            "-o", "Acquire::Languages=none",
            # sid's Release file may be past its Valid-Until; the index only lists versions.
            "-o", "Acquire::Check-Valid-Until=false",
        ]  # fmt: skip

    def age(self) -> float | None:
        """Seconds since the last successful update, or None when there is none."""
        stamp = self.top / "updated"
        return time.time() - stamp.stat().st_mtime if stamp.exists() else None

    def update(self, p: Progress) -> None:
        """Fetch the suites' package lists into the index: the aliases first, to learn their
        codenames, then the codenames (apt drops the lists of suites no longer listed)."""
        sources = host_sources()
        codename = host_codename()
        uri = archive_for(codename or "", sources, codename).uri
        security = security_uri(sources)
        (self.top / "lists" / "partial").mkdir(parents=True, exist_ok=True)
        (self.top / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        self._fetch(suites(codename), uri, security, p)
        aliases = {}
        for alias in ALIASES:
            for release in (self.top / "lists").glob(f"*_dists_{alias}_*Release"):
                if (name := codename_of(release.read_text(errors="replace"))) and alias != (
                    "experimental"  # its codename (rc-buggy) is only an alias of it
                ):
                    aliases[alias] = name
        self._fetch(suites(codename, aliases), uri, security, p)
        (self.top / "updated").touch()

    def _fetch(self, names: list[str], uri: str, security: str | None, p: Progress) -> None:
        (self.top / "sources.list").write_text(sources_list(names, uri, security))
        # As root, apt drops to its _apt user, which could not write to the cache.
        sandbox = ["-o", "APT::Sandbox::User=root"] if os.geteuid() == 0 else []
        what = f"indexing the kernels of {uri} ({', '.join(names)})"
        p.say(what)
        with fetching(what):
            p.run(["apt-get", "-q", *self._options(), *sandbox, "update"], what=what)

    def offers(self, p: Progress) -> list[Offer]:
        """Every linux-source-X.Y version the indexed suites carry (none without an index).

        Read once per update into offers.json: apt-cache takes seconds over these lists,
        and a run of a series outside the table asks on every start."""
        if self.age() is None:
            return []
        saved = self.top / "offers.json"
        if saved.exists() and saved.stat().st_mtime >= (self.top / "updated").stat().st_mtime:
            try:
                return [Offer(**o) for o in json.loads(saved.read_text())]
            except (ValueError, TypeError):
                pass  # rewritten below
        cmd = ["apt-cache", *self._options()]
        names = p.run([*cmd, "pkgnames", "linux-source-"], what="listing linux-source packages")
        wanted = sorted(n for n in names.split() if SOURCE.match(n))
        found = (
            parse_madison(p.run([*cmd, "madison", *wanted], what="reading their versions"))
            if wanted
            else []
        )
        tmp = saved.with_suffix(".tmp")
        tmp.write_text(json.dumps([asdict(o) for o in found]) + "\n")
        tmp.replace(saved)
        return found


def newest_suite(offers: list[Offer], series: str) -> str | None:
    """The suite with the newest version of a series; experimental only when no other has it."""
    mine = [o for o in offers if o.series == series]
    settled = [o for o in mine if o.suite != "experimental"] or mine
    return max(settled, key=lambda o: Version(o.version)).suite if settled else None


def archive_offers(p: Progress, refresh: bool = False) -> tuple[list[Offer], str]:
    """The archive's kernel source versions, and a note on how fresh the index is."""
    index = ArchiveIndex.in_cache()
    with locked(lock_file("archive")):
        age = index.age()
        note = "" if age is None else f"index from {age / 3600:.1f} h ago"
        if refresh or age is None or age > MAX_AGE:
            try:
                index.update(p)
                note = "index fetched now"
            except StageError as e:
                if age is None:
                    raise
                note += f" (refreshing it failed: {str(e).splitlines()[0]})"
        return index.offers(p), note
