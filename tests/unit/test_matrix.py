"""The kernel matrix: entries from the MATRIX_* options and presets, merged KTAP/JUnit/KernelCI
results, failures that stay within their entry.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import kconfiglib
import pytest

from pyharness.commands import cli, config, matrix
from pyharness.kernel import identity
from pyharness.kernel.identity import KernelId
from pyharness.kernel.provision import SOURCES, known_series
from pyharness.kmod import render
from pyharness.paths import REPO
from pyharness.progress import Progress, StageError
from pyharness.report import Case, RunResult, ktap, new_run
from tests.unit.test_tree import fake_tree

DISTRO = [
    "6.1-own-distro",
    "6.1-upstream-distro",
    "6.12-own-distro",
    "6.12-builtin-distro",
    "7.2-own-distro",
    "7.2-builtin-distro",
]
# Debian's kernels of the other machines (kernel/arch.py): 6.1 has zsmalloc as a module,
# 6.12 built in; arm64-16k has no 6.1, i386 no 6.12.
MACHINES = [
    f"{series}-{allocator}-distro-{machine}"
    for machine, serieses in (
        ("arm64", ("6.1", "6.12")),
        ("arm64-16k", ("6.12",)),
        ("ppc64el", ("6.1", "6.12")),
        ("i386", ("6.1",)),
    )
    for series in serieses
    for allocator in ("own", "upstream" if series == "6.1" else "builtin")
]


# Every test here runs isolated (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("isolated")


def load(text: str, tmp_path: Path) -> config.Config:
    path = tmp_path / "test.config"
    path.write_text(text)
    return config.load(dotconfig=path)


def names(cfg: config.Config) -> list[str]:
    return [e.name for e in matrix.entries(cfg)]


def test_defaults_give_every_distro_entry() -> None:
    assert names(config.load()) == DISTRO


@pytest.mark.parametrize("preset", ["default", "ci-matrix"])
def test_presets_with_entries(preset: str) -> None:
    cfg = config.load(dotconfig=REPO / "configs" / f"{preset}_defconfig")
    if preset == "ci-matrix":
        assert names(cfg) == DISTRO + MACHINES
        assert cfg.accel == "tcg"
    else:
        assert names(cfg) == DISTRO


def test_debug_preset_selects_the_source_built_debug_kernels() -> None:
    cfg = config.load(dotconfig=REPO / "configs" / "debug_defconfig")
    assert names(cfg) == [
        f"{k}-{a}-debug" for k in ("6.1", "6.12", "7.2") for a in ("own", "upstream")
    ]


def test_presets_are_valid_for_kconfiglib() -> None:
    for preset in sorted((REPO / "configs").glob("*_defconfig")):
        kconf = kconfiglib.Kconfig(str(REPO / "Kconfig"), warn_to_stderr=False)
        kconf.warn_assign_undef = True
        kconf.load_config(str(preset))
        assert not kconf.warnings, (preset.name, kconf.warnings)


def test_only_the_allocators_a_kernel_supports(tmp_path: Path) -> None:
    # 6.1 has zsmalloc as a module: builtin is not offered there, whatever is selected.
    cfg = load('CONFIG_MATRIX_KERNELS="6.1"\n', tmp_path)
    assert names(cfg) == ["6.1-own-distro", "6.1-upstream-distro"]
    entry = matrix.entries(cfg)[1]
    assert (entry.kernel.series, entry.allocator, entry.kernel.variant) == (
        "6.1",
        "upstream",
        "distro",
    )


def test_no_supported_pair_explains_what_runs_where(tmp_path: Path) -> None:
    cfg = load(
        'CONFIG_MATRIX_KERNELS="6.12 7.2"\n# CONFIG_MATRIX_ALLOCATOR_BUILTIN is not set\n'
        "# CONFIG_MATRIX_ALLOCATOR_OWN is not set\n",
        tmp_path,
    )
    assert matrix.entries(cfg) == []
    with pytest.raises(StageError, match=r"6\.12 runs own; 6\.12 runs builtin; 7\.2 runs own; "):
        matrix.selected(cfg)


def test_nothing_selected_names_the_options(tmp_path: Path) -> None:
    with pytest.raises(StageError, match=r"no kernel is selected \(MATRIX_KERNELS, MATRIX_TREES\)"):
        matrix.selected(load('CONFIG_MATRIX_KERNELS="none"\n', tmp_path))


def test_a_variant_without_kernels_is_named() -> None:
    cfg = dataclasses.replace(config.load(), matrix_variants=("fast",))
    with pytest.raises(
        StageError, match=r"variant fast has no kernels in zskit \(known variants: "
    ):
        matrix.selected(cfg)


def test_kconfig_offers_every_kernel_and_allocator() -> None:
    cfg = config.load()
    # The kernels come from provision's table, not from a list in Kconfig or here.
    assert cfg.matrix_kernels == known_series()
    assert set(cfg.matrix_kernels) == set(SOURCES[identity.DISTRO])
    assert set(cfg.matrix_allocators) == set(render.ALLOCATORS)


def test_kernels_are_a_list_in_its_order(tmp_path: Path) -> None:
    cfg = load('CONFIG_MATRIX_KERNELS="7.2 6.1 7.2"\n', tmp_path)
    assert cfg.matrix_kernels == ("7.2", "6.1")
    assert names(cfg)[0] == "7.2-own-distro"
    with pytest.raises(StageError, match=r"MATRIX_KERNELS='6.1 sid': 'sid' is not a kernel"):
        load('CONFIG_MATRIX_KERNELS="6.1 sid"\n', tmp_path)


def test_an_old_config_with_kernel_booleans_is_read_as_the_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = "# CONFIG_MATRIX_KERNEL_6_12 is not set\nCONFIG_MATRIX_KERNEL_7_2=y\n"
    cfg = load(old, tmp_path)
    assert cfg.matrix_kernels == ("6.1", "7.2")  # 6.1 had its default, y
    assert 'MATRIX_KERNEL_* booleans are MATRIX_KERNELS="6.1 7.2"' in capsys.readouterr().err
    text, _ = config.migrate(old + 'CONFIG_MATRIX_KERNELS="6.12"\n')
    assert text == 'CONFIG_MATRIX_KERNELS="6.12"\n'  # the new option wins
    none = "".join(f"# CONFIG_MATRIX_KERNEL_{k} is not set\n" for k in ("6_1", "6_12", "7_2"))
    assert load(none, tmp_path).matrix_kernels == ()
    assert config.migrate('CONFIG_KERNEL="6.1"\n') == ('CONFIG_KERNEL="6.1"\n', None)


def test_make_olddefconfig_rewrites_an_old_config(tmp_path: Path) -> None:
    dotconfig = tmp_path / "old.config"
    dotconfig.write_text(
        "CONFIG_MATRIX_KERNEL_6_1=y\n# CONFIG_MATRIX_KERNEL_6_12 is not set\n"
        "CONFIG_MATRIX_KERNEL_7_2=y\nCONFIG_WORKLOAD_OPS=3000\n"
    )
    env = {**os.environ, "KCONFIG_CONFIG": str(dotconfig)}
    done = subprocess.run(
        ["make", "-s", "olddefconfig"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    text = dotconfig.read_text()
    assert 'CONFIG_MATRIX_KERNELS="6.1 7.2"' in text and "MATRIX_KERNEL_" not in text
    assert "CONFIG_WORKLOAD_OPS=3000" in text
    cfg = config.load(dotconfig=dotconfig)
    assert (cfg.matrix_kernels, cfg.workload_ops) == (("6.1", "7.2"), 3000)


def test_trees_are_entries_with_their_variants_and_allocators(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = fake_tree(tmp_path / "linux").resolve()
    cfg = load(f'CONFIG_MATRIX_KERNELS="none"\nCONFIG_MATRIX_TREES="{tree}"\n', tmp_path)
    tag = identity.tree_tag(tree)
    assert names(cfg) == [f"6.1-own-minimal-{tag}", f"6.1-upstream-minimal-{tag}"]
    assert matrix.entries(cfg)[0].as_dict()["tree"] == str(tree)
    debug = dataclasses.replace(cfg, matrix_variants=("distro", "debug"))
    assert names(debug) == [f"6.1-own-debug-{tag}", f"6.1-upstream-debug-{tag}"]
    missing = dataclasses.replace(cfg, matrix_trees=(tmp_path / "gone",))
    with pytest.raises(StageError, match=r"matrix tree .*gone: --tree .*gone does not exist"):
        matrix.entries(missing)
    # `zskit matrix --tree DIR` adds one; the list names its entries.
    assert cli.main(["matrix", "--list", "--tree", str(tree)]) == 0
    assert f"6.1-upstream-minimal-{tag}" in capsys.readouterr().out


def test_a_kernel_without_a_source_still_gets_entries() -> None:
    # Its runs fail with "unknown kernel"; the matrix reports them with the rest.
    cfg = dataclasses.replace(config.load(), matrix_kernels=("5.10", "6.1"))
    assert names(cfg) == [
        "5.10-own-distro",
        "5.10-upstream-distro",
        "5.10-builtin-distro",
        "6.1-own-distro",
        "6.1-upstream-distro",
    ]


def test_entry_lookup() -> None:
    # The own allocator runs everywhere; upstream where zsmalloc is a module, builtin
    # where it is built in: every source-built kernel but zswap's has it as a module.
    distro = ["6.1-own-distro", "6.1-upstream-distro", "6.12-own-distro", "6.12-builtin-distro"]
    distro += ["7.2-own-distro", "7.2-builtin-distro"]
    built = [
        f"{k}-{a}-{v}"
        for v in ("minimal", "debug", "kcsan", "nocompaction", "zswap")
        for k in ("6.1", "6.12", "7.2")
        for a in (("own", "builtin") if v == "zswap" else ("own", "upstream"))
    ]
    assert [e.name for e in matrix.known_entries()] == distro + built + MACHINES
    assert matrix.find_entry("6.12-builtin-distro-arm64-16k") == matrix.Entry(
        KernelId("6.12", "distro", arch="arm64-16k"), "builtin"
    )
    assert matrix.find_entry("6.12-builtin-distro") == matrix.Entry(
        KernelId("6.12", "distro"), "builtin"
    )
    assert matrix.find_entry("7.2-upstream-debug") == matrix.Entry(
        KernelId("7.2", "debug"), "upstream"
    )
    with pytest.raises(StageError) as e:
        matrix.find_entry("6.12-upstream-distro")
    assert str(e.value).startswith(
        "unknown entry '6.12-upstream-distro'; known entries: 6.1-own-distro, "
        "6.1-upstream-distro, 6.12-own-distro, 6.12-builtin-distro, 7.2-own-distro"
    )


def test_unknown_entry_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "--entry", "6.1-builtin-distro"]) == 1
    err = capsys.readouterr().err
    assert "unknown entry '6.1-builtin-distro'; known entries: 6.1-own-distro, 6.1-upstream" in err
    assert cli.main(["run", "--entry", "6.1-upstream-distro", "--kernel", "6.12"]) == 1
    assert "drop --kernel/--allocator" in capsys.readouterr().err


def test_list_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["matrix", "--list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [e["name"] for e in listed] == DISTRO
    assert listed[1] == {
        "name": "6.1-upstream-distro",
        "kernel": "6.1",
        "allocator": "upstream",
        "variant": "distro",
        "machine": "x86_64",
        "tree": None,
    }
    assert cli.main(["matrix", "--list", "--config", str(REPO / "configs/debug_defconfig")]) == 0
    assert "7.2-upstream-debug" in capsys.readouterr().out


def synthetic(tmp_path: Path, entry: matrix.Entry, failure: str | None = None) -> RunResult:
    directory = tmp_path / entry.name
    result = RunResult(
        run_id=entry.name,
        kernel=entry.kernel.series,
        allocator=entry.allocator,
        directory=directory,
        variant=entry.kernel.variant,
        cases=[Case("provision", 0.1), Case("boot", 3.0), Case("batch-000", 0.5)],
        timings={"total": 3.6},
        info={"kernel_release": f"{entry.kernel.series}.0-9-amd64", "accel": "tcg"},
    )
    if failure:
        result.cases.append(Case("batch-001", 0.4, failure=failure, kind="divergence"))
    result.write()
    (directory / "console.log").write_text("Linux version ...\n")
    return result


def outcomes(tmp_path: Path) -> list[matrix.Outcome]:
    good = matrix.Entry(KernelId("6.1"), "upstream")
    bad = matrix.Entry(KernelId("7.2"), "builtin")
    failure = "batch 1, line 7: alloc 5 200: kernel ENOMEM, model 0\nsecond line"
    return [
        matrix.Outcome(good, synthetic(tmp_path, good), 4.0),
        matrix.Outcome(bad, synthetic(tmp_path, bad, failure), 5.0),
    ]


def parse_ktap(text: str) -> list[tuple[bool, str, list[tuple[bool, str]], list[str]]]:
    """(ok, name, [(ok, case)], diagnostics) per top-level test; asserts the structure."""
    lines = text.splitlines()
    assert lines[:2] == ["KTAP version 1", f"1..{int(lines[1][3:])}"]
    tests: list[tuple[bool, str, list[tuple[bool, str]], list[str]]] = []
    body: list[str] = []
    for line in lines[2:]:
        top = re.fullmatch(r"(ok|not ok) (\d+) ([^#]+)", line)
        if top is None:
            body.append(line)
            continue
        assert int(top[2]) == len(tests) + 1
        assert body[:2] == ["  KTAP version 1", f"  # Subtest: {top[3]}"]
        plan = int(re.fullmatch(r"  1\.\.(\d+)", body[2])[1])  # type: ignore[index]
        cases = [
            (m[1] == "ok", m[3])
            for m in (re.fullmatch(r"  (ok|not ok) (\d+) (\S+)( # \w+)?", b) for b in body)
            if m
        ]
        assert len(cases) == plan
        assert [int(m[2]) for b in body if (m := re.fullmatch(r"  (not )?ok (\d+) .*", b))] == list(
            range(1, plan + 1)
        )
        diagnostics = [b for b in body[3:] if b.lstrip().startswith("#")]
        tests.append((top[1] == "ok", top[3], cases, diagnostics))
        body = []
    assert len(tests) == int(lines[1][3:])
    assert not body  # nothing after the last result
    return tests


def test_ktap_of_the_matrix(tmp_path: Path) -> None:
    runs = outcomes(tmp_path)
    text = ktap([(o.entry.name, o.result) for o in runs])
    tests = parse_ktap(text)
    assert [(ok, name) for ok, name, _, _ in tests] == [
        (True, "6.1-upstream-distro"),
        (False, "7.2-builtin-distro"),
    ]
    assert sum(ok for _, _, cases, _ in tests for ok, _ in cases) == 6
    assert [c for c in tests[1][2] if not c[0]] == [(False, "batch-001")]
    # The failure is a diagnostic block right before its `not ok` line.
    lines = text.splitlines()
    at = lines.index("  not ok 4 batch-001")
    assert lines[at - 3 : at] == [
        "  # batch-001 failed (divergence):",
        "  # batch 1, line 7: alloc 5 200: kernel ENOMEM, model 0",
        "  # second line",
    ]


def test_a_single_run_writes_ktap(tmp_path: Path) -> None:
    result = synthetic(tmp_path, matrix.Entry(KernelId("6.1"), "upstream"), failure="boom")
    tests = parse_ktap((result.directory / "results.ktap").read_text())
    assert [(ok, name) for ok, name, _, _ in tests] == [(False, "6.1-upstream-distro")]
    loaded = RunResult.load(result.directory)
    assert loaded is not None
    assert (loaded.cases, loaded.timings, loaded.info) == (
        result.cases,
        {"total": 3.6},
        result.info,
    )


def test_a_runs_directory_is_named_after_its_entry(tmp_path: Path) -> None:
    root = tmp_path / "results"
    first = new_run(KernelId("6.12", "debug"), "upstream", root=root)
    second = new_run(KernelId("6.12", "debug"), "upstream", root=root)  # the same second
    assert re.fullmatch(r"\d{8}-\d{6}-6\.12-upstream-debug", first.run_id)
    assert second.run_id == first.run_id + "-2"
    assert (root / "latest").resolve() == second.directory.resolve()
    distro = new_run(KernelId("6.1"), "upstream", root=root)
    assert distro.run_id.endswith("-6.1-upstream-distro")
    assert (root / "latest").resolve() == distro.directory.resolve()
    assert sorted(p.name for p in root.iterdir()) == sorted(
        ["latest", first.run_id, second.run_id, distro.run_id]
    )  # no link left half-made
    # A given directory (matrix, CI shards) is used as is and leaves `latest` alone.
    shard = new_run(KernelId("7.2", "minimal"), "upstream", root=root, directory=tmp_path / "shard")
    assert shard.directory == tmp_path / "shard"
    assert (root / "latest").resolve() == distro.directory.resolve()


def test_the_variant_travels_in_results_json(tmp_path: Path) -> None:
    # CI may name an entry's directory anything; the merge reads the variant from the run.
    entry = matrix.Entry(KernelId("6.12", "debug"), "upstream")
    result = synthetic(tmp_path, entry)
    result.directory.rename(tmp_path / "job-17")
    loaded = RunResult.load(tmp_path / "job-17")
    assert loaded is not None and (loaded.variant, loaded.name) == ("debug", entry.name)
    assert json.loads((tmp_path / "job-17" / "results.json").read_text())["variant"] == "debug"
    assert "variant" not in loaded.info
    assert [o.entry for o in matrix.collect(tmp_path)] == [entry]
    suite = ET.parse(tmp_path / "job-17" / "junit.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("name") == "zskit.6.12-upstream-debug"


def test_kernelci_nodes(tmp_path: Path) -> None:
    runs = outcomes(tmp_path)
    matrix.write_merged(tmp_path, runs)
    nodes = json.loads((tmp_path / "kernelci.json").read_text())
    jobs = [n for n in nodes if n["kind"] == "job"]
    assert [(n["name"], n["path"], n["result"]) for n in jobs] == [
        ("6.1-upstream-distro", ["zskit", "6.1-upstream-distro"], "pass"),
        ("7.2-builtin-distro", ["zskit", "7.2-builtin-distro"], "fail"),
    ]
    assert len(nodes) == 2 + 3 + 4  # a job node per entry, a test node per case
    for n in nodes:
        assert n["state"] == "done" and n["result"] in ("pass", "fail")
        assert n["data"]["platform"] == "qemu-x86_64"
        assert n["data"]["runtime"] == "qemu-tcg"
        assert n["data"]["arch"] == "x86_64"
        assert (tmp_path / n["artifacts"]["console_log"]).is_file()
        assert (tmp_path / n["artifacts"]["results_json"]).is_file()
    assert jobs[0]["data"]["kernel_version"] == "6.1.0-9-amd64"
    assert jobs[1]["data"]["duration"] == 5.0
    assert jobs[1]["data"]["error_code"] == "divergence"
    assert jobs[1]["data"]["error_msg"].startswith("batch 1, line 7")
    failed = [n for n in nodes if n["kind"] == "test" and n["result"] == "fail"]
    assert [n["path"] for n in failed] == [["zskit", "7.2-builtin-distro", "batch-001"]]
    assert failed[0]["group"] == "7.2-builtin-distro"


def test_junit_has_a_suite_per_entry(tmp_path: Path) -> None:
    root = ET.fromstring(matrix.junit(outcomes(tmp_path)))
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["6.1-upstream-distro", "7.2-builtin-distro"]
    assert [s.get("failures") for s in suites] == ["0", "1"]
    assert (root.get("tests"), root.get("failures")) == ("7", "1")


def test_summary_table(tmp_path: Path) -> None:
    text = matrix.summary(matrix.MatrixResult(tmp_path, outcomes(tmp_path), 9.25))
    lines = text.splitlines()
    assert lines[0].split() == ["kernel", "variant", "allocator", "verdict", "time", "failure"]
    assert lines[1].split() == ["6.1", "distro", "upstream", "PASS", "4.0", "s"]
    assert lines[2].split()[:5] == ["7.2", "distro", "builtin", "FAIL", "5.0"]
    assert lines[2].endswith("batch-001 (divergence)")
    assert lines[3] == "2 entries: 1 passed, 1 failed in 9.2 s"


def test_merge_of_separate_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outcomes(tmp_path)  # two entry directories, as CI jobs leave them
    assert cli.main(["matrix", "--merge", str(tmp_path)]) == 1
    assert "2 entries: 1 passed, 1 failed" in capsys.readouterr().out
    tests = parse_ktap((tmp_path / "results.ktap").read_text())
    assert [name for _, name, _, _ in tests] == ["6.1-upstream-distro", "7.2-builtin-distro"]
    assert len(ET.parse(tmp_path / "junit.xml").getroot().findall("testsuite")) == 2


def test_failing_entries_do_not_stop_the_matrix(tmp_path: Path) -> None:
    # Real `zskit run` processes, no QEMU: an unknown kernel fails in provisioning with
    # its own results; an allocator zskit does not know makes zskit exit without any.
    cfg = dataclasses.replace(
        config.load(), matrix_kernels=("5.10",), matrix_allocators=("upstream", "nonesuch")
    )
    result = matrix.run_matrix(cfg, Progress(), root=tmp_path / "results", jobs=2)
    assert not result.passed
    assert [o.entry.name for o in result.outcomes] == [
        "5.10-upstream-distro",
        "5.10-nonesuch-distro",
    ]
    unknown, crashed = (o.result.first_failure for o in result.outcomes)
    assert unknown is not None and unknown.name == "provision"
    assert "unknown kernel '5.10'" in (unknown.failure or "")
    assert crashed is not None and crashed.name == "zskit"
    assert "wrote no results.json" in (crashed.failure or "")
    assert "invalid choice: 'nonesuch'" in (crashed.failure or "")
    for name in ("junit.xml", "results.ktap", "kernelci.json", "summary.txt"):
        assert (result.directory / name).is_file(), name
    assert (tmp_path / "results" / "latest-matrix").resolve() == result.directory.resolve()
    assert [ok for ok, *_ in parse_ktap((result.directory / "results.ktap").read_text())] == [
        False,
        False,
    ]
