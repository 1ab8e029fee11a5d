"""Helpers for the folder, plan and drop-folder tests: run the CLI in a given environment."""

from __future__ import annotations

import subprocess
import sys


def gpuferry_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "gpuferry", *args]


def run_gpuferry(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(gpuferry_argv(*args), capture_output=True, text=True, env=env, timeout=timeout)
