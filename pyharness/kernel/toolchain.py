"""Toolchain roots: a minimal Debian system of one suite, to build modules for its kernels.

Debian's 6.12 and 7.2 kernels are configured for gcc-14 and gcc-16, and
their Kbuild flags (e.g. `-fmin-function-alignment`) are unknown to the
host's gcc-12. A debootstrap'd minbase root of the kernel's own suite with
the kernel's `linux-headers-<release>` package installed brings exactly the
compiler the kernel was built with and a Kbuild tree at the paths its
Makefiles expect (`/usr/src/...`), with nothing to rewrite.

The archive comes from the host's own apt sources, so zskit follows
whatever mirror the host uses. A root is built in `<suite>.tmp` and renamed
when complete: an interrupted build never leaves a half root behind, and a
complete one carries `zskit-root.json` naming what it holds.

Every fetch (debootstrap, apt's downloads, here and in debian.py and
source.py) goes through `fetching`: when one fails and the archive cannot
be reached, the error says that the cache lacks what was being fetched and
that this needs the network once. A warm cache never fetches.

Commands run chrooted inside a private mount namespace (`unshare`): /proc
(objtool needs it) and bind mounts of host directories exist only for that
one command and vanish with it, even when the harness is killed, so no
mount can leak into the host or keep a root from being deleted.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..locking import locked
from ..paths import cache_dir
from ..progress import CommandError, Progress, StageError

STAMP = "zskit-root.json"
DEBOOTSTRAP_SCRIPTS = Path("/usr/share/debootstrap/scripts")
APT_CONF = "etc/apt/apt.conf.d/99zskit"
EXTRA_SOURCES = "etc/apt/sources.list.d/zskit-suite.list"  # a backports or experimental root
# No fsync per unpacked file: a half-built root is thrown away anyway, and
# one sync before the rename makes a complete one durable.
DPKG_CONF = ("etc/dpkg/dpkg.cfg.d/99zskit", "force-unsafe-io\n")
# sid's Release file may be past its Valid-Until on the archive we are given;
# the root only builds modules, so an old-but-signed index is acceptable.
APT_SETTINGS = 'Acquire::Check-Valid-Until "false";\nAPT::Install-Recommends "false";\n'
# A clean environment for commands in the root: host variables such as
# MAKEFLAGS or a virtualenv's PATH must not leak into Kbuild or apt.
ROOT_ENV = (
    "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME=/root",
    "LC_ALL=C.UTF-8",
    "DEBIAN_FRONTEND=noninteractive",
    # trixie's headers depend on the kernel image, whose hooks would build an
    # initramfs nobody boots (about 20 s of a cold root).
    "INITRD=No",
)
# Runs in the new mount namespace: mount /proc and the binds, then chroot.
# Arguments: ROOT BIND... -- COMMAND... It travels in the environment, so
# the command line that -v shows stays readable.
_ENTER = r"""
set -e
root=$1
shift
mount -t proc proc "$root/proc"
while [ "$1" != -- ]; do
	mkdir -p "$root$1"
	mount --bind "$1" "$root$1"
	shift
done
shift
exec chroot "$root" /usr/bin/env -i "$@"
"""


# --- the host's apt sources -------------------------------------------------


@dataclass(frozen=True)
class AptSource:
    """One entry of the host's apt sources (a deb822 stanza or a one-line `deb` entry)."""

    types: tuple[str, ...]  # "deb", "deb-src"
    uris: tuple[str, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str | None = None  # a keyring path (or an inline key, unused here)
    enabled: bool = True


def parse_deb822_sources(text: str) -> list[AptSource]:
    """Entries of a `.sources` file (deb822: stanzas of `Field: value`, blank-line separated)."""
    entries: list[AptSource] = []
    for stanza in re.split(r"\n[ \t]*\n", text):
        fields: dict[str, str] = {}
        key: str | None = None
        for line in stanza.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0] in " \t" and key is not None:
                fields[key] += "\n" + line.strip()  # continuation (e.g. an inline key)
            elif ":" in line:
                name, value = line.split(":", 1)
                key = name.strip().lower()
                fields[key] = value.strip()
        if "types" not in fields or "uris" not in fields:
            continue
        signed_by = fields.get("signed-by")
        entries.append(
            AptSource(
                types=tuple(fields["types"].split()),
                uris=tuple(fields["uris"].split()),
                suites=tuple(fields.get("suites", "").split()),
                components=tuple(fields.get("components", "").split()),
                signed_by=signed_by or None,
                enabled=fields.get("enabled", "yes").lower() not in ("no", "false", "0"),
            )
        )
    return entries


def parse_one_line_sources(text: str) -> list[AptSource]:
    """Entries of a `sources.list` file: `deb [opt=value ...] URI SUITE [COMPONENT...]`."""
    entries: list[AptSource] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        options: dict[str, str] = {}
        if m := re.match(r"^(\S+)\s+\[([^\]]*)\]\s*(.*)$", line):
            kind, opts, rest = m[1], m[2], m[3]
            for opt in opts.split():
                name, _, value = opt.partition("=")
                options[name.lower()] = value
        else:
            kind, _, rest = line.partition(" ")
        words = rest.split()
        if kind not in ("deb", "deb-src") or len(words) < 2:
            continue
        entries.append(
            AptSource(
                types=(kind,),
                uris=(words[0],),
                suites=(words[1],),
                components=tuple(words[2:]),
                signed_by=options.get("signed-by"),
            )
        )
    return entries


def host_sources(etc: Path = Path("/etc/apt")) -> list[AptSource]:
    """Every entry of the host's apt configuration, in apt's reading order."""
    entries: list[AptSource] = []
    main = etc / "sources.list"
    if main.is_file():
        entries += parse_one_line_sources(main.read_text(errors="replace"))
    parts = etc / "sources.list.d"
    for path in sorted(parts.glob("*")) if parts.is_dir() else ():
        if path.suffix == ".list":
            entries += parse_one_line_sources(path.read_text(errors="replace"))
        elif path.suffix == ".sources":
            entries += parse_deb822_sources(path.read_text(errors="replace"))
    return entries


def host_codename(os_release: Path = Path("/etc/os-release")) -> str | None:
    try:
        text = os_release.read_text()
    except OSError:
        return None
    m = re.search(r"^VERSION_CODENAME=\"?([^\"\n]*)\"?$", text, re.M)
    return m[1] if m and m[1] else None


def security_uri(sources: Sequence[AptSource]) -> str | None:
    """The archive of the host's security updates (its `-security` suite), if it has one."""
    return next(
        (s.uris[0] for s in sources if any(x.endswith("-security") for x in s.suites)), None
    )


ARCHIVE_SCHEMES = ("http://", "https://", "file:/")  # what debootstrap can fetch from


@dataclass(frozen=True)
class Archive:
    """A Debian archive to bootstrap a suite from."""

    uri: str
    keyring: Path | None  # the host's keyring for it, when the entry names a file


def archive_for(suite: str, sources: Sequence[AptSource], codename: str | None) -> Archive:
    """The archive to take `suite` from: an entry that lists it, else the host's own Debian.

    The host's own Debian archive is the enabled `deb` entry that carries the
    host's release codename (not -security or -updates, which serve no other
    suite); a mirror of the Debian archive serves every suite.
    """
    debs = [
        s
        for s in sources
        if s.enabled and "deb" in s.types and s.uris and s.uris[0].startswith(ARCHIVE_SCHEMES)
    ]
    for wanted in (suite, codename):
        for source in debs:
            if wanted and wanted in source.suites:
                keyring = source.signed_by
                path = Path(keyring) if keyring and keyring.startswith("/") else None
                return Archive(source.uris[0].rstrip("/"), path)
    raise StageError(
        f"no Debian archive for {suite} in the host's apt sources (/etc/apt/sources.list, "
        f"/etc/apt/sources.list.d/*.sources): add an entry for the Debian archive that "
        f"serves {suite}, or one for the host's own release"
        + (f" ({codename})" if codename else "")
    )


# --- the network ------------------------------------------------------------

PROBE_TIMEOUT = 5.0  # seconds to open a connection to the archive after a failed fetch


class NetworkError(StageError):
    """A fetch failed because the archive cannot be reached: what is missing needs the network."""


def unreachable(uri: str, timeout: float = PROBE_TIMEOUT) -> str | None:
    """Why the archive at `uri` cannot be reached (name lookup, connection), or None."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None  # a file: archive needs no network
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return None
    except OSError as e:
        return f"{parts.hostname}:{port}: {e.strerror or e}"


def _archive_uri(suite: str | None) -> str | None:
    try:
        return archive_for(suite or "", host_sources(), host_codename()).uri
    except StageError:
        return None


@contextmanager
def fetching(what: str, suite: str | None = None) -> Iterator[None]:
    """Run a fetch from the Debian archive of `suite` (None: the host's own).

    A failure is reported as a NetworkError when the archive cannot be
    reached: apt's own words ("Temporary failure resolving ...", debootstrap's
    "Failed getting release file") do not say that the cache is cold and the
    machine offline, which is what the user needs to know.
    """
    try:
        yield
    except CommandError as e:
        uri = _archive_uri(suite)
        why = unreachable(uri) if uri else None
        if why is None:
            raise
        raise NetworkError(
            f"{what}: the Debian archive {uri} cannot be reached ({why}). zskit's cache "
            f"({cache_dir()}) does not hold this yet, and fetching it needs the network "
            "once: connect this machine (or set http_proxy for apt) and rerun; after that "
            "the cache serves it offline"
        ) from e


def apt_show(
    names: Sequence[str], progress: Progress, options: Sequence[str] = ()
) -> dict[str, str]:
    """Candidate version of each package apt knows (unknown names are left out); `options`
    point apt at another state (foreign.py's, of another architecture)."""
    if not names:
        return {}
    proc = subprocess.run(
        ["apt-cache", *options, "show", "--no-all-versions", *names],
        capture_output=True,
        text=True,
    )
    progress.detail(f"$ apt-cache show --no-all-versions {' '.join(names)}")
    versions: dict[str, str] = {}
    for para in proc.stdout.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in para.splitlines() if ": " in line and line[0] != " "
        )
        if "Package" in fields and "Version" in fields:
            versions[fields["Package"]] = fields["Version"]
    return versions


def host_apt_get(args: Sequence[str], progress: Progress, *, what: str, cwd: Path) -> str:
    """apt-get on the host (downloads only: nothing is installed), as a fetch."""
    # As root, apt drops to its _apt user, which could not write to the cache.
    sandbox = ["-o", "APT::Sandbox::User=root"] if os.geteuid() == 0 else []
    with fetching(what):
        return progress.run(["apt-get", *sandbox, *args], cwd=cwd, what=what, stream=True)


# --- roots ------------------------------------------------------------------


def require_root(why: str) -> None:
    """Fail with what to do when not running as root (debootstrap and chroot need it)."""
    if os.geteuid() != 0:
        raise StageError(
            f"{why} needs root: the kernel's toolchain is a debootstrap'd Debian root entered "
            "with chroot. Run zskit as root, e.g. `sudo -E .venv/bin/zskit run ...` "
            "(or `sudo make ...`)"
        )


def _mounts_under(path: Path) -> list[str]:
    """Mount points at or below path in this namespace (none is expected)."""
    prefix = str(path.resolve())
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return []
    points = [line.split()[1].replace("\\040", " ") for line in lines if len(line.split()) > 1]
    return [p for p in points if p == prefix or p.startswith(prefix + "/")]


def remove_tree(path: Path) -> None:
    """rm -rf, refusing when something is mounted there (it would delete through the mount)."""
    if not path.exists() and not path.is_symlink():
        return
    mounted = _mounts_under(path)
    if mounted:
        raise StageError(
            f"cannot remove {path}: {', '.join(mounted)} mounted there; unmount it (`umount -R "
            f"{mounted[0]}`) and retry"
        )
    shutil.rmtree(path)


@dataclass(frozen=True)
class Root:
    """A debootstrap'd root of one Debian suite; commands run in it through chroot."""

    path: Path
    suite: str

    def host_path(self, inside: str | PurePosixPath) -> Path:
        """Where a path of the root lives on the host."""
        return self.path / str(inside).lstrip("/")

    def inside_path(self, host: Path) -> PurePosixPath:
        """The root's name for a host path under the root."""
        return PurePosixPath("/") / host.relative_to(self.path).as_posix()

    def stamp(self) -> dict[str, object] | None:
        try:
            data = json.loads((self.path / STAMP).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def is_complete(self) -> bool:
        return self.stamp() is not None

    def run(
        self,
        argv: Sequence[str | PurePosixPath],
        progress: Progress,
        *,
        what: str,
        cwd: str = "/",
        binds: Sequence[Path] = (),
        stream: bool = False,
        heartbeat: float | None = None,
    ) -> str:
        """Run a command in the root, with host directories `binds` at their own paths."""
        require_root(what)
        cmd: list[str | Path] = ["unshare", "--mount", "--propagation", "private"]
        cmd += ["sh", "-c", 'eval "$ZSKIT_ENTER_ROOT"', "zskit-enter-root", self.path]
        cmd += [*(b.resolve() for b in binds), "--", *ROOT_ENV]
        # env --chdir: the command's working directory inside the root.
        cmd += ["/usr/bin/env", f"--chdir={cwd}", *(str(a) for a in argv)]
        # Not zskit's KCONFIG_CONFIG: Kbuild would take it for the kernel's .config.
        env = {k: v for k, v in os.environ.items() if k != "KCONFIG_CONFIG"}
        env["ZSKIT_ENTER_ROOT"] = _ENTER
        return progress.run(cmd, env=env, what=what, stream=stream, heartbeat=heartbeat)

    def apt_get(self, args: Sequence[str], progress: Progress, *, what: str, cwd: str = "/") -> str:
        # Downloads into a root-owned directory: apt's _apt sandbox user could not write there.
        with fetching(what, self.suite):
            return self.run(
                ["apt-get", "-q", "-y", "-o", "APT::Sandbox::User=root", *args],
                progress,
                what=what,
                cwd=cwd,
                stream=progress.verbose,
            )

    def package_versions(self, names: Sequence[str], progress: Progress) -> dict[str, str]:
        """Candidate version of each package the root's apt knows (unknown ones left out)."""
        return {
            name: fields["Version"]
            for name, fields in self.package_fields(names, progress).items()
            if "Version" in fields
        }

    def package_fields(self, names: Sequence[str], progress: Progress) -> dict[str, dict[str, str]]:
        """`apt-cache show` of each known package's candidate, as a field dict."""
        found: dict[str, dict[str, str]] = {}
        for name in names:
            try:
                text = self.run(
                    ["apt-cache", "show", "--no-all-versions", name],
                    progress,
                    what=f"looking up {name}",
                )
            except CommandError:
                continue  # apt-cache fails for a name it does not know
            for para in text.split("\n\n"):
                fields = dict(
                    line.split(": ", 1)
                    for line in para.splitlines()
                    if ": " in line and line[0] not in " \t"
                )
                if fields.get("Package") == name:
                    found[name] = fields
        return found

    def search(self, pattern: str, progress: Progress) -> list[str]:
        """Package names matching a regular expression, from the root's apt lists."""
        out = self.run(
            ["apt-cache", "search", "--names-only", pattern], progress, what="searching packages"
        )
        return [line.split(" - ", 1)[0] for line in out.splitlines() if " - " in line]


def ensure_root(
    suite: str,
    cache: Path,
    progress: Progress,
    packages: Callable[[Root], Sequence[str]],
    refresh: bool = False,
    extra: Sequence[str] = (),
) -> Root:
    """The cached root of `suite`, built when missing (or when `refresh` finds new packages).

    `packages(root)` names what to install, asked of the root's own apt
    lists (the kernel's ABI is only known there). With `refresh`, an
    existing root updates its lists first and is rebuilt if they now name
    packages it does not have. `extra` are fixed package names (a kernel
    build's tools) that a complete root gets added when it lacks them.
    """
    require_root(f"a {suite} toolchain root")
    dest = cache / "roots" / suite
    with locked(cache / "roots" / f"{suite}.lock"):
        root = Root(dest, suite)
        if root.is_complete():
            have = (root.stamp() or {}).get("packages")
            have = have if isinstance(have, list) else []
            if missing := [p for p in extra if p not in have]:
                _add_packages(root, missing, have, progress)
            if not refresh:
                return root
            root.apt_get(["update"], progress, what=f"updating {suite}'s apt lists")
            wanted = list(packages(root))
            have = (root.stamp() or {}).get("packages")
            if isinstance(have, list) and set(wanted) <= set(have):
                return root
            progress.say(f"the {suite} archive now has {', '.join(wanted)}: rebuilding the root")
        try:
            return _build_root(suite, dest, progress, packages, extra)
        except CommandError as e:  # a NetworkError already says what to do
            raise StageError(
                f"the {suite} toolchain root could not be built: {e}\nCheck that debootstrap "
                f"knows {suite} (/usr/share/debootstrap/scripts/{suite}) and that the host's apt "
                f"sources name a Debian archive serving {suite}, then rerun; the half-built "
                f"{dest.name}.tmp is started over"
            ) from e


def _add_packages(root: Root, names: Sequence[str], have: Sequence[str], p: Progress) -> None:
    """Install more packages into a complete root; its stamp then names them too."""
    p.say(f"adding {', '.join(names)} to the {root.suite} root")
    try:
        root.apt_get(["install", *names], p, what=f"installing {' '.join(names)}")
    except CommandError:
        # The lists may be too old for the archive's packages by now: refresh them once.
        root.apt_get(["update"], p, what=f"updating {root.suite}'s apt lists")
        root.apt_get(["install", *names], p, what=f"installing {' '.join(names)}")
    root.apt_get(["clean"], p, what="dropping downloaded packages")
    stamp = root.stamp() or {}
    stamp["packages"] = [*have, *names]
    tmp = root.path / (STAMP + ".tmp")
    tmp.write_text(json.dumps(stamp, indent=2) + "\n")
    tmp.replace(root.path / STAMP)


def bootstrap_suite(suite: str) -> str:
    """The suite debootstrap installs for a root of `suite`: a backports suite and
    experimental are not whole systems, but apt sources added to their base (sid for
    experimental), whose packages they extend."""
    return "sid" if suite == "experimental" else suite.removesuffix("-backports")


def _build_root(
    suite: str,
    dest: Path,
    progress: Progress,
    packages: Callable[[Root], Sequence[str]],
    extra: Sequence[str] = (),
) -> Root:
    base = bootstrap_suite(suite)
    # Before any download: an old debootstrap lacks the script of a newer suite.
    if not (DEBOOTSTRAP_SCRIPTS / base).exists():
        raise StageError(
            f"debootstrap knows no suite {base!r} (no {DEBOOTSTRAP_SCRIPTS / base}): "
            f"a newer debootstrap (e.g. from bookworm-backports) is needed for a {suite} "
            "toolchain root; install it and rerun"
        )
    archive = archive_for(base, host_sources(), host_codename())
    tmp = dest.with_name(dest.name + ".tmp")
    remove_tree(tmp)  # what an interrupted build left
    tmp.parent.mkdir(parents=True, exist_ok=True)
    progress.say(f"building a {suite} toolchain root in {dest} (debootstrap, minbase)")
    # In its own mount namespace too: the /proc and /sys debootstrap mounts in the
    # target vanish with it, even when it is killed.
    cmd: list[str | Path] = ["unshare", "--mount", "--propagation", "private"]
    cmd += ["debootstrap", "--variant=minbase", "--components=main"]
    if archive.keyring is not None and archive.keyring.is_file():
        cmd.append(f"--keyring={archive.keyring}")
    cmd += [base, tmp, archive.uri]
    with fetching(f"building the {suite} toolchain root (debootstrap)", base):
        progress.run(cmd, what=f"debootstrap {base}", stream=progress.verbose)
    if suite != base:
        (tmp / EXTRA_SOURCES).write_text(f"deb {archive.uri} {suite} main\n")
    (tmp / APT_CONF).write_text(APT_SETTINGS)
    (tmp / DPKG_CONF[0]).write_text(DPKG_CONF[1])
    root = Root(tmp, suite)
    root.apt_get(["update"], progress, what=f"updating {suite}'s apt lists")
    wanted = [*packages(root), *(p for p in extra if p not in ("make",))]
    progress.say(f"installing {', '.join(wanted)} into the {suite} root")
    root.apt_get(["install", "make", *wanted], progress, what=f"installing {' '.join(wanted)}")
    root.apt_get(["clean"], progress, what="dropping downloaded packages")
    stamp = {"suite": suite, "archive": archive.uri, "packages": ["make", *wanted]}
    (tmp / STAMP).write_text(json.dumps(stamp, indent=2) + "\n")
    os.sync()
    old = dest.with_name(dest.name + ".old")
    remove_tree(old)
    if dest.exists():
        dest.rename(old)
    tmp.rename(dest)
    remove_tree(old)
    return Root(dest, suite)
