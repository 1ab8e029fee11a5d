"""Fixtures for failure-policy tests: a private home and config file, a clip, a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from gpuferry.media.synth import make_clip


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A clean environment: own GPUFERRY_HOME and config file, none of the deployment variables."""
    home = tmp_path / "home"
    home.mkdir()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CGPU_", "UPSCALE", "USE_GPU", "GPUFERRY_"))}
    return {**clean, "GPUFERRY_HOME": str(home), "GPUFERRY_CONFIG": str(tmp_path / "config.toml")}


@pytest.fixture(scope="session")
def small_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("policy-clip") / "clip.mp4"
    make_clip(path, frames=48, fps=24, width=96, height=64)
    return path


Cli = Callable[..., subprocess.CompletedProcess]


@pytest.fixture
def cli(env: dict[str, str]) -> Cli:
    def run(*args: str, extra_env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "gpuferry", *args], capture_output=True, text=True,
                              env={**env, **(extra_env or {})}, timeout=timeout)

    return run
