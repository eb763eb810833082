"""Shared by every test: the default configuration (Kconfig's defaults, no .config)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyharness.commands import config


@pytest.fixture(scope="session")
def default_config() -> config.Config:
    return config.load(dotconfig=Path("/nonexistent"))


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Never read a developer's .config, never touch the real kernel cache."""
    monkeypatch.setenv("KCONFIG_CONFIG", str(tmp_path / "absent.config"))
    monkeypatch.setenv("ZSKIT_CACHE", str(tmp_path / "cache"))
