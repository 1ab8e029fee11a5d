"""What only the stand-in cgpu has: its runtime folder, its fault switches and its link. What it shares with
the real cgpu 0.1.4 is checked in test_cgpu_conformance.py (on both)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

FAKE = Path(__file__).resolve().parents[1] / "fakes" / "cgpu"


def cgpu(runtime, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **runtime.process_env(), "CGPU_CONFIG_DIR": str(runtime.config), **(extra_env or {})}
    return subprocess.run([str(FAKE), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=30)


def test_runtime_folder_plays_the_root(fresh_cgpu_runtime, tmp_path) -> None:
    source = tmp_path / "clip.bin"
    source.write_bytes(b"12345")
    assert cgpu(fresh_cgpu_runtime, "copy", str(source)).returncode == 0
    assert (fresh_cgpu_runtime.content / "clip.bin").read_bytes() == b"12345"
    assert cgpu(fresh_cgpu_runtime, "run", "pwd").stdout.splitlines()[-1] == str(fresh_cgpu_runtime.runtime)


def test_new_runtime_starts_empty(fresh_cgpu_runtime) -> None:
    (fresh_cgpu_runtime.content / "old").write_text("x")
    result = cgpu(fresh_cgpu_runtime, "run", "--new-runtime", "ls content")
    assert result.returncode == 0 and "old" not in result.stdout


def test_faults_from_environment_and_once(fresh_cgpu_runtime) -> None:
    result = cgpu(fresh_cgpu_runtime, "run", "true", extra_env={"CGPU_FAKE_FAULTS": '{"quota": "no_gpu"}'})
    assert result.returncode == 1
    assert "No eligible GPU accelerators reported by Colab for this account." in result.stderr
    fresh_cgpu_runtime.set_faults(quota="blocked", once=True)
    assert cgpu(fresh_cgpu_runtime, "run", "true").returncode == 1
    assert cgpu(fresh_cgpu_runtime, "run", "true").returncode == 0


def test_unreachable_runtime(fresh_cgpu_runtime) -> None:
    fresh_cgpu_runtime.set_faults(unreachable=True)
    result = cgpu(fresh_cgpu_runtime, "run", "true")
    assert result.returncode == 1 and "api/terminals failed, reason: connect ECONNREFUSED" in result.stderr


def test_link_cut_mid_output_leaves_the_command_running(fresh_cgpu_runtime) -> None:
    fresh_cgpu_runtime.set_faults(disconnect_after_bytes=200)
    marker = fresh_cgpu_runtime.content / "finished"
    result = cgpu(fresh_cgpu_runtime, "run", f"seq 1 200; sleep 0.5; touch {marker}")
    assert result.returncode == 1 and "Command finished without reporting an exit code" in result.stderr
    deadline = time.monotonic() + 20
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marker.exists()  # the remote side never learns that the client went away


def test_unknown_command_and_option(fresh_cgpu_runtime) -> None:
    assert cgpu(fresh_cgpu_runtime, "frobnicate").returncode == 1
    assert "unknown option '--nope'" in cgpu(fresh_cgpu_runtime, "status", "--nope").stderr
