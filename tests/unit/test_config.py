"""Tests for pyharness.config: the repository Kconfig read with kconfiglib."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyharness import paths
from pyharness.commands import cli
from pyharness.commands.config import Config, int_range, load
from pyharness.kmod.own import OwnAllocator
from pyharness.progress import StageError


@pytest.fixture(autouse=True)
def no_user_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Never read a developer's own .config: point KCONFIG_CONFIG at a missing file."""
    monkeypatch.setenv("KCONFIG_CONFIG", str(tmp_path / "absent.config"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "test.config"
    path.write_text(text)
    return path


def test_defaults_from_the_repository_kconfig() -> None:
    cfg = load()
    assert cfg.kernel == "6.1"
    assert cfg.allocator == "own" and cfg.baseline
    assert cfg.own == OwnAllocator()  # the target kernel's geometry
    assert cfg.accel == "auto"
    assert cfg.memory_mb == 512
    assert cfg.cpus == 2
    assert cfg.boot_timeout == 120
    assert cfg.command_timeout == 60
    assert (cfg.workload_ops, cfg.workload_batch, cfg.workload_seed) == (6000, 1000, 1)
    assert isinstance(cfg.cpus, int)


def test_kconfig_is_the_repository_file() -> None:
    assert (paths.REPO / "Kconfig").is_file()
    assert paths.REPO == Path(paths.__file__).resolve().parent.parent


def test_dotconfig_argument_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, "CONFIG_QEMU_CPUS=1\nCONFIG_QEMU_ACCEL_TCG=y\n")
    cfg = load(dotconfig=path)
    assert cfg.cpus == 1
    assert cfg.accel == "tcg"
    # Everything else keeps its default.
    assert cfg.memory_mb == 512
    assert cfg.kernel == "6.1"


def test_kconfig_config_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(
        tmp_path,
        "CONFIG_QEMU_CPUS=1\nCONFIG_QEMU_ACCEL_TCG=y\n"
        "# CONFIG_QEMU_ACCEL_AUTO is not set\nCONFIG_QEMU_MEMORY_MB=1024\n"
        "CONFIG_WORKLOAD_SEED=42\n",
    )
    monkeypatch.setenv("KCONFIG_CONFIG", str(path))
    cfg = load()
    assert (cfg.cpus, cfg.accel, cfg.memory_mb, cfg.workload_seed) == (1, "tcg", 1024, 42)


def test_kvm_choice(tmp_path: Path) -> None:
    cfg = load(dotconfig=write(tmp_path, "CONFIG_QEMU_ACCEL_KVM=y\n"))
    assert cfg.accel == "kvm"


def test_string_option(tmp_path: Path) -> None:
    cfg = load(dotconfig=write(tmp_path, 'CONFIG_KERNEL="6.12"\n'))
    assert cfg.kernel == "6.12"


def test_values_at_range_edges_are_accepted(tmp_path: Path) -> None:
    cfg = load(dotconfig=write(tmp_path, "CONFIG_QEMU_CPUS=8\nCONFIG_QEMU_MEMORY_MB=256\n"))
    assert (cfg.cpus, cfg.memory_mb) == (8, 256)


def test_malformed_value_raises_with_menuconfig_hint(tmp_path: Path) -> None:
    path = write(tmp_path, "CONFIG_QEMU_CPUS=abc\n")
    with pytest.raises(StageError, match="menuconfig") as info:
        load(dotconfig=path)
    assert "QEMU_CPUS" in str(info.value)
    assert str(path) in str(info.value)


def test_out_of_range_value_raises_with_menuconfig_hint(tmp_path: Path) -> None:
    path = write(tmp_path, "CONFIG_QEMU_CPUS=99\n")
    with pytest.raises(StageError, match="menuconfig") as info:
        load(dotconfig=path)
    assert "QEMU_CPUS" in str(info.value)


def test_unparsable_kconfig_raises(tmp_path: Path) -> None:
    bad = tmp_path / "Kconfig"
    bad.write_text("config FOO\n\tbool 'unterminated\n\tdefault y\nendmenu\n")
    with pytest.raises(StageError, match="cannot parse"):
        load(kconfig=bad, dotconfig=tmp_path / "absent")


def test_with_overrides_ignores_none() -> None:
    cfg = load()
    same = cfg.with_overrides(kernel=None, accel=None, workload_ops=None)
    assert same == cfg
    changed = cfg.with_overrides(kernel=None, accel="tcg", workload_seed=9)
    assert changed.accel == "tcg"
    assert changed.workload_seed == 9
    assert changed.kernel == cfg.kernel
    assert cfg.accel == "auto"  # the original is unchanged (frozen)


def test_with_overrides_keeps_falsy_values() -> None:
    # Only None means "not given": 0 is a real seed.
    cfg = load().with_overrides(workload_seed=0)
    assert cfg.workload_seed == 0


def test_with_overrides_rejects_unknown_fields() -> None:
    with pytest.raises(TypeError):
        load().with_overrides(nope=1)


def test_config_is_frozen() -> None:
    cfg = load()
    assert isinstance(cfg, Config)
    with pytest.raises(AttributeError):
        cfg.cpus = 4  # type: ignore[misc]


# Every numeric option whose default is a Kconfig int takes that option's range.
KCONFIG_OPTIONS = [
    ("run", "--ops", "WORKLOAD_OPS"),
    ("run", "--batch", "WORKLOAD_BATCH"),
    ("run", "--churn", "WORKLOAD_CHURN_PERCENT"),
    ("run", "--seed", "WORKLOAD_SEED"),
    ("run", "--memory", "QEMU_MEMORY_MB"),
    ("compare", "--ops", "WORKLOAD_OPS"),
]


@pytest.mark.parametrize(("command", "flag", "symbol"), KCONFIG_OPTIONS)
def test_numeric_options_take_their_kconfig_range(
    command: str, flag: str, symbol: str, capsys: pytest.CaptureFixture[str]
) -> None:
    low, high = int_range(symbol)
    for edge in (low, high):
        cli.parser().parse_args([command, flag, str(edge)])
    for value in (low - 1, high + 1, "x"):
        with pytest.raises(SystemExit):
            cli.parser().parse_args([command, flag, str(value)])
        err = capsys.readouterr().err
        assert f"argument {flag}:" in err, err
        where = "is not an integer" if value == "x" else f"out of range: {low}..{high} ({symbol}"
        assert where in err, err


def test_kconfig_ranges_are_read_not_assumed() -> None:
    assert int_range("WORKLOAD_CHURN_PERCENT") == (0, 100)
    assert int_range("WORKLOAD_BATCH")[0] == 1  # a batch of 0 commands would never end


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--scenario-ops", "0"], "out of range: 1..10000000"),
        (["run", "--scenario-seconds", "0"], "out of range: 1..3600"),
        (["run", "--scenario-repeat", "0"], "out of range: 1..1000"),
        (["matrix", "--jobs", "0"], "out of range: 1..64"),
        (["compare", "--loads", "1"], "out of range: 2..1000"),
        (["compare", "--bench-objects", "0"], "out of range: 1..262144"),
    ],
)
def test_numeric_options_without_kconfig_have_ranges(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        cli.parser().parse_args(args)
    assert message in capsys.readouterr().err
