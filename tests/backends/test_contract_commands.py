"""Contract: commands, exit codes, output, cwd/env and timeouts behave the same on every backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuferry.backends.base import Backend
from gpuferry.errors import CommandTimeoutError

pytestmark = pytest.mark.timeout(60)


def test_output_and_exit_code(backend: Backend) -> None:
    result = backend.run(["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=30)
    assert result.exit_code == 3
    assert result.output == "out\nerr\n"
    assert not result.ok


def test_success_and_output_without_trailing_newline(backend: Backend) -> None:
    result = backend.run(["printf", "%s", "no newline"], timeout=30)
    assert result.exit_code == 0
    assert result.output == "no newline"


def test_exit_in_command_does_not_end_the_session(backend: Backend) -> None:
    """cgpu's pitfall: `echo hi; exit 3` ends the remote shell. Here it is just a program's exit code."""
    assert backend.run(["bash", "-c", "echo hi; exit 3"], timeout=30).exit_code == 3
    assert backend.run(["exit", "4"], timeout=30).exit_code == 127  # an argv is a program, not shell code
    assert backend.run(["true"], timeout=30).exit_code == 0


def test_missing_program_is_exit_127(backend: Backend) -> None:
    assert backend.run(["gpuferry-no-such-program"], timeout=30).exit_code == 127


def test_cwd_and_env(backend: Backend, remote_dir: Path) -> None:
    sub = remote_dir / "sub dir"
    sub.mkdir()
    result = backend.run(["sh", "-c", 'pwd; printf "%s\\n" "$GPF_VALUE"'], timeout=30, cwd=str(sub),
                         env={"GPF_VALUE": "a 'b' $(c) `d`"})
    assert result.output == f"{sub}\na 'b' $(c) `d`\n"


def test_default_cwd_is_workdir(backend: Backend, remote_dir: Path) -> None:
    assert backend.run(["pwd"], timeout=30).output.strip() == str(remote_dir)


def test_stdin_is_empty(backend: Backend) -> None:
    result = backend.run(["cat"], timeout=30)
    assert result.exit_code == 0 and result.output == ""


def test_binary_and_large_output(backend: Backend) -> None:
    result = backend.run(["python3", "-c", "print('x' * 200000); print('\\u00e9\\u89c6')"], timeout=30)
    assert result.output == "x" * 200000 + "\n\u00e9\u89c6\n"


def test_timeout_raises_and_session_stays_usable(backend: Backend) -> None:
    with pytest.raises(CommandTimeoutError):
        backend.run(["sleep", "30"], timeout=1)
    assert backend.run(["echo", "after"], timeout=30).output == "after\n"


def test_run_checked_raises_on_failure(backend: Backend) -> None:
    from gpuferry.errors import RemoteCommandError

    with pytest.raises(RemoteCommandError):
        backend.run_checked(["false"], timeout=30)


def test_machine_reports(backend: Backend, remote_dir: Path) -> None:
    assert backend.gpus() == []  # no nvidia-smi on the test machine
    assert backend.free_disk(str(remote_dir)) > 0
