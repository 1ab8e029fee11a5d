"""The stand-in cgpu behaves on the outside like cgpu 0.1.4 (commands, flags, messages, exit codes)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

FAKE = Path(__file__).resolve().parents[1] / "fakes" / "cgpu"


def cgpu(runtime, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **runtime.process_env(), **(extra_env or {})}
    return subprocess.run([str(FAKE), "-c", str(runtime.config), *args], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=30)


def test_run_prints_account_then_merged_output(fresh_cgpu_runtime) -> None:
    result = cgpu(fresh_cgpu_runtime, "run", "echo out; echo err >&2; (exit 3)")
    assert result.stdout.splitlines() == ["Authenticated as Test User <test@example.com>", "out", "err"]
    assert result.returncode == 3


def test_exit_in_command_loses_the_sentinel(fresh_cgpu_runtime) -> None:
    result = cgpu(fresh_cgpu_runtime, "run", "echo hi; exit 3")
    assert result.returncode == 1
    assert "hi" in result.stdout
    assert "Command finished without reporting an exit code" in result.stdout


def test_run_works_in_content(fresh_cgpu_runtime) -> None:
    result = cgpu(fresh_cgpu_runtime, "run", "pwd")
    assert result.stdout.splitlines()[-1] == str(fresh_cgpu_runtime.content)


def test_copy_default_destination_and_message(fresh_cgpu_runtime, tmp_path) -> None:
    source = tmp_path / "clip.bin"
    source.write_bytes(b"12345")
    result = cgpu(fresh_cgpu_runtime, "copy", str(source))
    assert result.returncode == 0
    assert "Uploaded: clip.bin \u2192 /content/clip.bin (5 B)" in result.stdout
    assert (fresh_cgpu_runtime.content / "clip.bin").read_bytes() == b"12345"


def test_copy_strips_dotdot_and_needs_parent(fresh_cgpu_runtime, tmp_path) -> None:
    source = tmp_path / "a.bin"
    source.write_bytes(b"a")
    assert cgpu(fresh_cgpu_runtime, "copy", str(source), "../../a2.bin").returncode == 0
    assert (fresh_cgpu_runtime.content / "a2.bin").exists()
    missing = cgpu(fresh_cgpu_runtime, "copy", str(source), "no/dir/a.bin")
    assert missing.returncode == 1 and "Upload failed (500 Internal Server Error)" in missing.stdout
    assert "[Errno 2]" in missing.stdout


def test_copy_refuses_directories_and_missing_sources(fresh_cgpu_runtime, tmp_path) -> None:
    directory = cgpu(fresh_cgpu_runtime, "copy", str(tmp_path))
    assert directory.returncode == 1 and f"Cannot upload {tmp_path}: not a file." in directory.stdout
    missing = cgpu(fresh_cgpu_runtime, "copy", str(tmp_path / "nope"))
    assert missing.returncode == 1 and "ENOENT: no such file or directory, stat" in missing.stdout


def test_status_logout_and_force_login(fresh_cgpu_runtime) -> None:
    session = fresh_cgpu_runtime.config / "state" / "session.json"
    status = cgpu(fresh_cgpu_runtime, "status")
    assert status.returncode == 0 and status.stdout.startswith("Authenticated as Test User")
    assert session.exists()
    assert cgpu(fresh_cgpu_runtime, "logout").returncode == 0
    assert not session.exists()
    assert cgpu(fresh_cgpu_runtime, "--force-login", "status").returncode == 0
    assert session.exists()


def test_new_runtime_starts_empty(fresh_cgpu_runtime) -> None:
    (fresh_cgpu_runtime.content / "old").write_text("x")
    result = cgpu(fresh_cgpu_runtime, "run", "--new-runtime", "ls")
    assert result.returncode == 0 and "old" not in result.stdout


def test_faults_from_environment(fresh_cgpu_runtime) -> None:
    result = cgpu(fresh_cgpu_runtime, "run", "true", extra_env={"CGPU_FAKE_FAULTS": '{"quota": "no_gpu"}'})
    assert result.returncode == 1
    assert "No eligible GPU accelerators reported by Colab for this account." in result.stdout


def test_verbose_and_unknown_command(fresh_cgpu_runtime) -> None:
    assert cgpu(fresh_cgpu_runtime, "run", "-v", "true").returncode == 0
    assert cgpu(fresh_cgpu_runtime, "frobnicate").returncode == 1
    assert subprocess.run([str(FAKE), "--version"], stdout=subprocess.PIPE, text=True).stdout.strip() == "0.1.4"
