"""The archive index's pure parts: suites, its sources.list, madison lines, codenames."""

from __future__ import annotations

from pyharness.kernel.archive import (
    Offer,
    codename_of,
    newest_suite,
    parse_madison,
    sources_list,
    suites,
)


def test_suites_start_with_the_hosts_release_and_follow_debians_aliases() -> None:
    assert suites("bookworm") == [
        "bookworm",
        "bookworm-security",
        "bookworm-backports",
        "stable",
        "stable-backports",
        "testing",
        "unstable",
        "experimental",
    ]
    named = suites("bookworm", {"stable": "trixie", "stable-backports": "trixie-backports"})
    assert named[3:5] == ["trixie", "trixie-backports"]
    # An alias naming the host's own release is not indexed twice.
    assert suites("trixie", {"stable": "trixie"}).count("trixie") == 1


def test_security_updates_come_from_the_security_archive() -> None:
    text = sources_list(["bookworm", "bookworm-security"], "http://a/debian", "http://s/sec")
    assert text == "deb http://a/debian bookworm main\ndeb http://s/sec bookworm-security main\n"
    assert "security" not in sources_list(["bookworm-security"], "http://a/debian", None)


def test_madison_lines_name_series_versions_and_suites() -> None:
    text = (
        "linux-source-7.3 | 7.3~rc7-1~exp1 | http://deb.debian.org/debian experimental/main "
        "amd64 Packages\n"
        "linux-source-6.12 | 6.12.117-1~deb12u1 | http://deb.debian.org/debian-security "
        "bookworm-security/main amd64 Packages\n"
        "linux-source-6.1 |  6.1.176-1 | http://deb.debian.org/debian bookworm/main amd64 "
        "Packages\n"
        "linux-source | 6.1.176-1 | http://deb.debian.org/debian bookworm/main amd64 Packages\n"
        "garbage\n"
    )
    assert parse_madison(text) == [
        Offer("7.3", "7.3~rc7-1~exp1", "experimental"),
        Offer("6.12", "6.12.117-1~deb12u1", "bookworm-security"),
        Offer("6.1", "6.1.176-1", "bookworm"),
    ]


def test_a_release_file_names_its_codename() -> None:
    assert codename_of("Origin: Debian\nSuite: stable\nCodename: trixie\n") == "trixie"
    assert codename_of("Suite: stable\n") is None


def test_a_series_comes_from_the_suite_with_its_newest_version() -> None:
    offers = [
        Offer("7.3", "7.3.4-1~bpo13+1", "trixie-backports"),
        Offer("7.3", "7.3~rc7-1~exp1", "experimental"),
        Offer("7.3", "7.3.2-1~bpo13+1", "trixie-backports"),
        Offer("7.4", "7.4~rc1-1~exp1", "experimental"),
        Offer("6.12", "6.12.117-1", "trixie"),
        Offer("6.12", "6.12.95-1~bpo12+1", "bookworm-backports"),
    ]
    assert newest_suite(offers, "7.3") == "trixie-backports"
    assert newest_suite(offers, "7.4") == "experimental"  # only there
    assert newest_suite(offers, "6.12") == "trixie"
    assert newest_suite(offers, "5.10") is None
