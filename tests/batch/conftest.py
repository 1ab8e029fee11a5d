"""Fixtures for folder batches, plans and the drop folder: a private home and config, a CLI runner."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A clean environment (own GPUFERRY_HOME and config, no deployment variables), also for this process."""
    home = tmp_path / "home"
    home.mkdir()
    for key in list(os.environ):
        if key.startswith(("CGPU_", "UPSCALE", "USE_GPU", "GPUFERRY_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("GPUFERRY_HOME", str(home))
    monkeypatch.setenv("GPUFERRY_CONFIG", str(tmp_path / "config.toml"))
    return dict(os.environ)

